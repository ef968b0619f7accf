//! `nodeimg save IMAGE -o FILE`: prints the file's path.

use anyhow::{Context, Result};

use crate::cli::SaveArgs;
use crate::docker::Docker;
use crate::progress::Reporter;
use crate::transfer::SaveTarget;
use crate::{config, sweep, transfer};

pub async fn run(args: SaveArgs, reporter: &Reporter) -> Result<()> {
    let target = config::save_target(&args)?;
    let docker = super::connect(reporter).await?;
    save(&docker, reporter, &args.image, &target).await?;
    println!("{}", target.path.display());
    Ok(())
}

/// Also `build node-image --save`.
pub async fn save(docker: &Docker, reporter: &Reporter, image: &str, target: &SaveTarget) -> Result<()> {
    sweep::guarded(docker, reporter, transfer::save(docker, image, target, reporter))
        .await
        .with_context(|| format!("saving {image} to {}", target.path.display()))?;
    Ok(())
}
