//! `nodeimg build node-image`: prints the image's name; `--save` also writes it to a file.

use anyhow::Result;

use crate::cli::NodeImageArgs;
use crate::nodeimage::{self, NodeImage, multiarch};
use crate::progress::Reporter;
use crate::{config, docker, guard};

pub async fn run(args: NodeImageArgs, reporter: &Reporter) -> Result<()> {
    let (multi, save) = config::node_image(args)?;
    if !multi.cfg.checksums {
        reporter.warn("--skip-checksums: downloads are NOT checked against published checksums");
    }
    // Every arch before any: a missing handler for the second fails before the first builds.
    for arch in &multi.arches {
        crate::platform::ensure_runnable(arch)?;
    }
    let docker = super::connect(reporter).await?;
    let images = guard::guarded(&docker, reporter, multiarch::build(&multi, &docker, reporter)).await?;
    for built in &images {
        report(built, reporter);
    }
    if let (Some(target), [built]) = (save, images.as_slice()) {
        super::save::save(&docker, reporter, &built.reference, &target).await?;
    }
    for built in &images {
        println!("{}", built.reference);
    }
    Ok(())
}

fn report(built: &NodeImage, reporter: &Reporter) {
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
}
