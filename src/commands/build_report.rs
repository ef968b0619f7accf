//! `build node-image --report`: what went into each node image, read back from the image
//! itself (its containerd's images, its base's labels) and from where Kubernetes came from,
//! so the digests are the ones a user can pin.

use anyhow::{Context, Result, anyhow};

use crate::baseimage::runtime::{LABEL_CNI, LABEL_CONTAINERD, LABEL_RUNC};
use crate::docker::Docker;
use crate::kube::Provenance;
use crate::nodeimage::NodeImage;
use crate::provenance::{
    ArchReport, Base, Kubernetes, KubernetesSource, PreloadedImage, SourceKind, TreeState,
};

/// One architecture's part of the report (not yet pushed).
pub async fn arch_report(docker: &Docker, arch: &str, built: &NodeImage) -> Result<ArchReport> {
    let held = crate::nodeimage::contents::list(docker, &built.id)
        .await
        .context("listing the node image's images")?
        .ok_or_else(|| anyhow!("{} is no longer a node image", built.reference))?;
    let images = held
        .into_iter()
        .map(|h| {
            let origin = built
                .plan
                .iter()
                .find(|p| p.image == h.name)
                .map_or_else(|| "base image".to_owned(), |p| p.origin.to_string());
            PreloadedImage { name: h.name, digest: h.digest, platform: h.platforms, origin }
        })
        .collect();
    Ok(ArchReport {
        arch: arch.to_owned(),
        image: built.reference.clone(),
        image_id: built.id.clone(),
        pushed: None,
        kubernetes: Kubernetes { version: built.version.clone(), source: source(&built.provenance).await? },
        base: base(docker, &built.base, &built.base_id).await?,
        images,
    })
}

async fn source(provenance: &Provenance) -> Result<KubernetesSource> {
    let sha512 = match &provenance.tarball {
        Some(tarball) => Some(
            crate::kube::download::hash_file(tarball)
                .await
                .with_context(|| format!("hashing {}", tarball.display()))?
                .0,
        ),
        None => None,
    };
    Ok(KubernetesSource {
        kind: match provenance.kind {
            "release" => SourceKind::Release,
            "url" => SourceKind::Url,
            "tree" => SourceKind::Tree,
            _ => SourceKind::File,
        },
        url: provenance.url.clone(),
        path: provenance.path.as_ref().map(|p| p.display().to_string()),
        sha512,
        commit: provenance.commit.clone(),
        tree_state: provenance.dirty.map(|d| if d { TreeState::Dirty } else { TreeState::Clean }),
    })
}

async fn base(docker: &Docker, image: &str, id: &str) -> Result<Base> {
    let info = docker.inspect_image(id).await?.ok_or_else(|| anyhow!("base image {image} is gone"))?;
    let label = |key: &str| info.labels.get(key).cloned().unwrap_or_else(|| "unknown".to_owned());
    Ok(Base {
        image: image.to_owned(),
        id: id.to_owned(),
        digest: info.repo_digests.first().and_then(|d| d.split_once('@')).map(|(_, d)| d.to_owned()),
        containerd: label(LABEL_CONTAINERD),
        runc: label(LABEL_RUNC),
        cni_plugins: label(LABEL_CNI),
    })
}

/// `--sbom FILE`: the SPDX document of every architecture's node image, written beside FILE
/// and renamed into place. Created at SOURCE_DATE_EPOCH when set, so that equal inputs can
/// give an equal document.
pub async fn write_sbom(
    engines: &[&Docker],
    architectures: &[ArchReport],
    path: &std::path::Path,
) -> Result<()> {
    let mut images = Vec::new();
    for (docker, report) in engines.iter().zip(architectures) {
        let facts = crate::sbom::read_facts(docker, &report.image_id)
            .await
            .with_context(|| format!("reading {}", report.image))?;
        images.push((report.clone(), facts));
    }
    let created = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => {
            epoch.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?} is not a number"))?
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    let bytes = crate::sbom::to_json(&crate::sbom::document(&images, created));
    let part = crate::part_file::PartFile::new(path);
    std::fs::write(part.path(), bytes)?;
    part.commit()?;
    Ok(())
}
