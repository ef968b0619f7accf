//! `nodeimg build base-image`: prints the image's name.

use anyhow::Result;

use crate::cli::BaseImageArgs;
use crate::progress::Reporter;
use crate::{baseimage, config, sweep};

pub async fn run(args: BaseImageArgs, reporter: &Reporter) -> Result<()> {
    let cfg = config::base_image(args)?;
    crate::platform::ensure_runnable(&cfg.arch)?;
    let docker = super::connect(reporter).await?;
    let built = sweep::guarded(&docker, reporter, baseimage::build(&cfg, &docker, reporter)).await?;
    println!("{}", built.reference);
    Ok(())
}
