//! `nodeimg images list`: prints `IMAGE<TAB>SOURCE` per image.

use anyhow::Result;

use crate::cli::SourceArgs;
use crate::nodeimage::{self, Outcome, Stop};
use crate::progress::Reporter;
use crate::{config, guard};

pub async fn run(args: SourceArgs, reporter: &Reporter) -> Result<()> {
    let cfg = config::sources(args)?;
    let docker = super::connect(reporter).await?;
    let outcome =
        guard::guarded(&docker, reporter, nodeimage::run(&cfg, Stop::Plan, &docker, reporter)).await?;
    let Outcome::Planned(plan) = outcome else { unreachable!("Stop::Plan ends in a plan") };
    for p in plan {
        println!("{}\t{}", p.image, p.origin);
    }
    Ok(())
}
