//! `nodeimg build node-variant`: prints the variant's name.

use anyhow::Result;

use crate::cli::NodeVariantArgs;
use crate::progress::Reporter;
use crate::variant::{self, VariantConfig};
use crate::{config, docker, sweep};

pub async fn run(args: NodeVariantArgs, reporter: &Reporter) -> Result<()> {
    let cfg = config::node_variant(args)?;
    make(cfg, reporter).await
}

/// Runs the variant pipeline under the cleanup guard and reports it; `images add` too.
pub(super) async fn make(cfg: VariantConfig, reporter: &Reporter) -> Result<()> {
    let docker = super::connect(reporter).await?;
    let made = sweep::guarded(&docker, reporter, variant::run(&cfg, &docker, reporter)).await?;
    reporter.info(format!(
        "node image {} ({}): Kubernetes {}, a variant of {} ({})",
        made.reference,
        docker::short_id(&made.id),
        made.version,
        cfg.from,
        docker::short_id(&made.from_id)
    ));
    for p in &made.added {
        reporter.detail(format!("  added {}  <- {}", p.image, p.origin));
    }
    println!("{}", made.reference);
    Ok(())
}
