//! `nodeimg build node-image`: prints the image's name; `--save` also writes it to a file,
//! `--push` pushes it with an index and prints the index's pinned name, `--report` writes
//! what went in.

use anyhow::{Context, Result};

use super::build_report;
use crate::cli::NodeImageArgs;
use crate::config::{self, Outputs};
use crate::docker::Docker;
use crate::nodeimage::multiarch::{self, Engines, MultiArch};
use crate::nodeimage::{self, NodeImage};
use crate::progress::Reporter;
use crate::provenance::{BuildReport, Pushed};
use crate::{docker, sweep};

pub async fn run(args: NodeImageArgs, reporter: &Reporter) -> Result<()> {
    let (multi, outputs) = config::node_image(args)?;
    if !multi.cfg.checksums {
        reporter.warn("--skip-checksums: downloads are NOT checked against published checksums");
    }
    // Every arch of this machine's engines before any: a missing handler for the second
    // fails before the first builds.
    for arch in multi.arches.iter().filter(|a| !multi.engines.iter().any(|(e, _)| e == *a)) {
        crate::platform::ensure_runnable(arch)?;
    }
    let engines = connect_engines(&multi, reporter).await?;
    let work = multiarch::build(&multi, &engines, reporter);
    let images = sweep::guarded_all(&engines.all(), reporter, work).await?;
    for built in &images {
        describe(built, reporter);
    }
    // Config refuses --save with several arches.
    if let (Some(target), [built]) = (&outputs.save, images.as_slice()) {
        super::save::save(engines.of(&multi.arches[0]), reporter, &built.reference, target).await?;
    }
    let built: Vec<(String, NodeImage)> = multi.arches.iter().cloned().zip(images).collect();
    let pinned = publish(&engines, &built, &outputs, reporter).await?;
    for (_, image) in &built {
        println!("{}", image.reference);
    }
    if let Some(pinned) = pinned {
        println!("{pinned}");
    }
    Ok(())
}

/// The default engine, and each `--engine`: one line each says which answered. An engine of
/// another architecture than the one it builds runs it under its own qemu; one on this
/// machine's socket is checked for the handler here.
async fn connect_engines(multi: &MultiArch, reporter: &Reporter) -> Result<Engines> {
    let default = super::connect(reporter).await?;
    let mut by_arch = Vec::new();
    for (arch, host) in &multi.engines {
        let docker = Docker::connect_to(host, default.labels().clone())
            .await
            .with_context(|| format!("connecting to the {arch} engine (--engine {arch}={host})"))?;
        let engine = docker.engine();
        reporter.info(format!("engine for {arch}: {engine} on {} at {host}", engine.arch));
        if engine.arch != *arch && host.starts_with("unix://") {
            crate::platform::ensure_runnable(arch)?;
        }
        by_arch.push((arch.clone(), docker));
    }
    Ok(Engines { default, by_arch })
}

fn describe(built: &NodeImage, reporter: &Reporter) {
    let on = built.built_on.as_deref().map(|b| format!(", on {b}")).unwrap_or_default();
    reporter.info(format!(
        "node image {} ({}, {:.0} MB{on}): Kubernetes {}, {} images inside",
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

/// `--push`, `--report` and `--sbom`: the SBOM of what was built; every architecture's image
/// pushed, then the index; the report written once the digests are known. Returns `REF@<index digest>` when pushed.
async fn publish(
    engines: &Engines,
    built: &[(String, NodeImage)],
    outputs: &Outputs,
    reporter: &Reporter,
) -> Result<Option<String>> {
    let mut architectures = Vec::new();
    if outputs.report.is_some() || outputs.sbom.is_some() {
        for (arch, image) in built {
            architectures.push(
                build_report::arch_report(engines.of(arch), arch, image)
                    .await
                    .with_context(|| format!("reporting on {}", image.reference))?,
            );
        }
    }
    if let Some(path) = &outputs.sbom {
        let engines: Vec<&Docker> = built.iter().map(|(arch, _)| engines.of(arch)).collect();
        build_report::write_sbom(&engines, &architectures, path)
            .await
            .with_context(|| format!("writing the SBOM {}", path.display()))?;
        reporter.info(format!("SBOM: {}", path.display()));
    }
    let mut report = outputs.report.as_ref().map(|_| BuildReport { index: None, architectures });
    let mut pinned = None;
    if let Some(target) = &outputs.push {
        let items: Vec<(String, &Docker, String)> = built
            .iter()
            .map(|(arch, image)| (arch.clone(), engines.of(arch), image.reference.clone()))
            .collect();
        let pushed = crate::publish::push_each(&items, target, reporter)
            .await
            .with_context(|| format!("pushing to {target}"))?;
        let index_ref = format!("{}@{}", crate::reference::split(target).0, pushed.index_digest);
        reporter.info(format!("pushed {} architecture(s) and the index {index_ref}", pushed.per_arch.len()));
        if let Some(report) = &mut report {
            report.index = Some(Pushed { reference: target.clone(), digest: pushed.index_digest.clone() });
            for arch in &mut report.architectures {
                if let Some(p) = pushed.per_arch.iter().find(|p| p.arch == arch.arch) {
                    arch.pushed = Some(Pushed { reference: p.reference.clone(), digest: p.digest.clone() });
                }
            }
        }
        if let Some(path) = &outputs.sbom {
            let document =
                std::fs::read(path).with_context(|| format!("reading the SBOM {}", path.display()))?;
            let attached = crate::publish::attach_sbom(&pushed, &document, reporter)
                .await
                .with_context(|| format!("attaching the SBOM {} to {target}", path.display()))?;
            for (subject, done) in attached {
                let how = match done.listed {
                    crate::registry::Listed::Api => "the registry's referrers API lists it".to_owned(),
                    crate::registry::Listed::TagSchema => {
                        format!("listed under the referrers tag {}", subject_tag(&subject))
                    }
                };
                reporter.info(format!("SBOM {} refers to {subject}: {how}", done.digest));
            }
        }
        pinned = Some(index_ref);
    }
    if let (Some(report), Some(path)) = (report, &outputs.report) {
        report.write_json(path).with_context(|| format!("writing the report {}", path.display()))?;
        for line in report.table().lines() {
            reporter.info(line);
        }
        reporter.info(format!("report: {}", path.display()));
    }
    Ok(pinned)
}

/// The referrers tag schema's tag for `repo@sha256:<hex>`: `sha256-<hex>`.
fn subject_tag(subject: &str) -> String {
    subject.rsplit('@').next().unwrap_or(subject).replacen(':', "-", 1)
}
