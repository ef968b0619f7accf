//! `nodeimg images save -o FILE`: prints the file's path.

use anyhow::Result;

use crate::cli::BundleArgs;
use crate::nodeimage::{self, Outcome, Stop};
use crate::progress::Reporter;
use crate::{config, sweep};

pub async fn run(args: BundleArgs, reporter: &Reporter) -> Result<()> {
    config::output_dir_exists(&args.output)?;
    let cfg = config::plan(args.source)?;
    crate::platform::ensure_runnable(&cfg.arch)?;
    let docker = super::connect(reporter).await?;
    let stop = Stop::Bundle(&args.output);
    let outcome = sweep::guarded(&docker, reporter, nodeimage::run(&cfg, stop, &docker, reporter)).await?;
    let Outcome::Bundled(saved) = outcome else { unreachable!("Stop::Bundle ends in a bundle") };
    reporter.info(format!(
        "{} images ({}), {:.0} MB",
        saved.images.len(),
        saved.summary,
        saved.size as f64 / 1e6
    ));
    println!("{}", args.output.display());
    Ok(())
}
