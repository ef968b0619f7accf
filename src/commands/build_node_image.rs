//! `nodeimg build node-image`: prints the image's name; `--save` also writes it to a file.

use anyhow::Result;

use crate::cli::NodeImageArgs;
use crate::nodeimage::{self, Outcome, Stop};
use crate::progress::Reporter;
use crate::{config, docker, guard};

pub async fn run(args: NodeImageArgs, reporter: &Reporter) -> Result<()> {
    let (cfg, save) = config::node_image(args)?;
    if !cfg.checksums {
        reporter.warn("--skip-checksums: downloads are NOT checked against published checksums");
    }
    let docker = super::connect(reporter).await?;
    let outcome =
        guard::guarded(&docker, reporter, nodeimage::run(&cfg, Stop::Image, &docker, reporter)).await?;
    let Outcome::Built(built) = outcome else { unreachable!("Stop::Image ends in an image") };
    reporter.info(format!(
        "node image {} ({}, {:.0} MB): Kubernetes {}, {} images inside",
        built.reference,
        docker::short_id(&built.id),
        built.size as f64 / 1e6,
        built.version,
        built.plan.len()
    ));
    reporter.info(format!("images: {}", nodeimage::sources::summary(&built.plan)));
    for p in &built.plan {
        reporter.detail(format!("  {}  <- {}", p.image, p.origin));
    }
    if let Some(target) = save {
        super::save::save(&docker, reporter, &built.reference, &target).await?;
    }
    println!("{}", built.reference);
    Ok(())
}
