//! `nodeimg images list`: for a build SOURCE, prints `IMAGE<TAB>SOURCE` per image the build
//! would hold; for an existing node image, `IMAGE<TAB>DIGEST<TAB>pinned|unpinned` per image
//! its containerd holds.

use anyhow::Result;

use crate::cli::PlanArgs;
use crate::config::ConfigError;
use crate::kube::SourceError;
use crate::nodeimage::{self, Outcome, Stop};
use crate::progress::Reporter;
use crate::{config, reference, sweep};

pub async fn run(args: PlanArgs, reporter: &Reporter) -> Result<()> {
    let given = args.source.clone().filter(|_| args.kube.source_type.is_none());
    let cfg = match config::plan(args) {
        Ok(cfg) => cfg,
        // Neither a path, a URL, a version nor a tree: perhaps a node image of the engine.
        Err(err @ ConfigError::Source(SourceError::Unknown(_))) => {
            let Some(image) = given.filter(|g| reference::is_valid(g) || reference::is_image_id(g)) else {
                return Err(err.into());
            };
            return list_node_image(&image, err, reporter).await;
        }
        Err(err) => return Err(err.into()),
    };
    crate::platform::ensure_runnable(&cfg.arch)?;
    let docker = super::connect(reporter).await?;
    let outcome =
        sweep::guarded(&docker, reporter, nodeimage::run(&cfg, Stop::Plan, &docker, reporter)).await?;
    let Outcome::Planned(plan) = outcome else { unreachable!("Stop::Plan ends in a plan") };
    for p in plan {
        println!("{}\t{}", p.image, p.origin);
    }
    Ok(())
}

/// What the node image holds; `not_a_source` is the error when it is no node image either.
async fn list_node_image(image: &str, not_a_source: ConfigError, reporter: &Reporter) -> Result<()> {
    let docker = super::connect(reporter).await?;
    let Some(held) = sweep::guarded(&docker, reporter, nodeimage::contents::list(&docker, image)).await?
    else {
        return Err(anyhow::Error::from(not_a_source)
            .context(format!("{image} is neither a build SOURCE nor a local node image")));
    };
    for h in held {
        println!("{}\t{}\t{}", h.name, h.digest, if h.pinned { "pinned" } else { "unpinned" });
    }
    Ok(())
}
