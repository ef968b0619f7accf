//! What `diff` compares of one node image, read from idle containers of it (never booted):
//! the SBOM's facts (packages, Kubernetes binaries), its containerd's images, and the files
//! kind and the node's services read.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::docker::{ContainerGuard, ContainerSpec, Docker};
use crate::nodeimage::contents::{self, KIND_VERSION};

/// The files of a node that kind or its services read: kind's own, containerd's config and
/// the kubelet's unit and drop-ins.
const FILES: &str = "/kind /etc/containerd /etc/systemd/system/kubelet.service \
    /etc/systemd/system/kubelet.service.d /etc/default/kubelet /etc/crictl.yaml";

/// Files larger than this are compared by sha256 only.
const TEXT_LIMIT: u64 = 256 * 1024;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub image: String,
    pub id: String,
    /// `/kind/version`.
    pub kubernetes: String,
    /// kubeadm, kubelet, kubectl → sha256.
    pub binaries: BTreeMap<String, String>,
    /// Debian package → `version (arch)`.
    pub packages: BTreeMap<String, String>,
    /// Image name in the node's containerd → manifest digest.
    pub images: BTreeMap<String, String>,
    pub files: BTreeMap<String, File>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct File {
    pub sha256: String,
    /// The content when it is small UTF-8 text, for a line diff.
    #[serde(skip)]
    pub text: Option<String>,
}

pub async fn read(docker: &Docker, image: &str) -> Result<Snapshot> {
    let info = docker.inspect_image(image).await?.ok_or_else(|| anyhow!("{image} is not a local image"))?;
    let held = contents::list(docker, &info.id)
        .await
        .context("listing its containerd's images")?
        .ok_or_else(|| anyhow!("{image} is not a node image (it has no {KIND_VERSION})"))?;
    let facts = crate::sbom::read_facts(docker, &info.id).await?;
    let container =
        ContainerGuard::new(docker, docker.create_container(&ContainerSpec::idle(&info.id)).await?);
    let id = container.id().to_owned();
    docker.start_container(&id).await?;
    let kubernetes = crate::node::files::read(docker, &id, KIND_VERSION).await?.trim().to_owned();
    let list =
        |command: &str| format!("find {FILES} -type f -print0 2>/dev/null | sort -z | xargs -0r {command}");
    let sums = docker.exec(&id, &["sh", "-c", &list("sha256sum")]).await?;
    let sizes = docker.exec(&id, &["sh", "-c", &list("stat -c '%s %n'")]).await?;
    if sums.stdout.trim().is_empty() {
        bail!("listing the node's files: {}", sums.last_line());
    }
    let sizes: BTreeMap<&str, u64> = sizes
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(size, path)| Some((path, size.parse().ok()?))))
        .collect();
    let mut files = BTreeMap::new();
    for (sha256, path) in sums.stdout.lines().filter_map(|l| l.split_once("  ")) {
        let text = match sizes.get(path) {
            Some(size) if *size <= TEXT_LIMIT => {
                crate::node::files::read(docker, &id, path).await.ok().filter(|t| !t.contains('\0'))
            }
            _ => None,
        };
        files.insert(path.to_owned(), File { sha256: sha256.to_owned(), text });
    }
    container.remove().await?;
    Ok(Snapshot {
        image: image.to_owned(),
        id: info.id,
        kubernetes,
        binaries: facts.binaries.into_iter().collect(),
        packages: facts
            .packages
            .into_iter()
            .map(|d| (d.name, format!("{} ({})", d.version, d.arch)))
            .collect(),
        images: held.into_iter().map(|h| (h.name, h.digest)).collect(),
        files,
    })
}
