//! The steps of [`super::run`] that work inside the build container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{NodeImageConfig, images, incremental, manifests, sources};
use crate::archive;
use crate::docker::{ContainerGuard, ContainerSpec, Docker};
use crate::kube::Artifacts;
use crate::node::{containerd, files};
use crate::progress::Reporter;

pub async fn binary_items(artifacts: &Artifacts) -> Result<BTreeMap<String, incremental::Item>> {
    let hashed = futures_util::future::try_join_all(artifacts.binaries.iter().map(|path| async move {
        let item =
            incremental::file_item(path).await.with_context(|| format!("reading {}", path.display()))?;
        anyhow::Ok((file_name(path), item))
    }))
    .await?;
    Ok(hashed.into_iter().collect())
}

pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

pub async fn remove_images(docker: &Docker, id: &str, names: &[String], reporter: &Reporter) -> Result<()> {
    let listed = images::ctr(docker, id, &["images", "ls"]).await?;
    let entries: Vec<(&str, &str)> = listed
        .lines()
        .skip(1)
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            Some((*words.first()?, *words.get(2)?))
        })
        .collect();
    let digests: Vec<&str> =
        entries.iter().filter(|(name, _)| names.iter().any(|n| n == name)).map(|(_, d)| *d).collect();
    // The names ctr gives an import besides its tags (`import-…@sha256:…` from --digests, and
    // `sha256:…`) hold the same content: they go too, while other tags of it stay.
    let by_digest = |name: &str| name.starts_with("import-") || name.starts_with("sha256:");
    let doomed: Vec<&str> = entries
        .iter()
        .filter(|(name, digest)| {
            names.iter().any(|n| n == name) || (by_digest(name) && digests.contains(digest))
        })
        .map(|(name, _)| *name)
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    reporter.detail(format!("removing replaced images: {}", doomed.join(", ")));
    let args: Vec<&str> = ["images", "rm", "--sync"].into_iter().chain(doomed).collect();
    images::ctr(docker, id, &args).await.map(|_| ())
}

/// The sizes of the images just imported, as containerd counts them: what a later rebuild
/// that replaces them leaves behind in this layer.
pub async fn record_sizes(
    docker: &Docker,
    id: &str,
    plan: &[sources::Planned],
    items: &mut BTreeMap<String, incremental::Item>,
) -> Result<()> {
    let held = containerd::parse_listing(&images::ctr(docker, id, &["images", "ls"]).await?);
    for planned in plan.iter().filter(|p| p.origin != sources::Origin::Kept) {
        if let (Some(item), Some(h)) =
            (items.get_mut(&planned.image), held.iter().find(|h| h.name == planned.image))
        {
            item.size = h.size;
        }
    }
    Ok(())
}

pub async fn create_build_container(
    docker: &Docker,
    cfg: &NodeImageConfig,
    base: &str,
) -> Result<ContainerGuard> {
    let mut spec = ContainerSpec::idle(base);
    spec.security_opt = vec!["seccomp=unconfined".into()];
    spec.env = cfg.proxy_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if cfg.keep_container {
        spec.labels.insert(crate::docker::LABEL_KEEP.into(), "true".into());
    }
    let id = docker.create_container(&spec).await?;
    // A kept container stays on failure too: that is when it is wanted.
    let container =
        if cfg.keep_container { ContainerGuard::kept(docker, id) } else { ContainerGuard::new(docker, id) };
    docker.start_container(container.id()).await?;
    Ok(container)
}

/// The binaries named in `changed` (of kubeadm, kubelet, kubectl) into /usr/bin, in one
/// streamed tar.
pub async fn add_binaries(
    docker: &Docker,
    id: &str,
    artifacts: &Artifacts,
    changed: &[&str],
    reporter: &Reporter,
) -> Result<()> {
    if changed.is_empty() {
        reporter.detail("kubeadm, kubelet, kubectl: unchanged");
        return Ok(());
    }
    let step = reporter.step(format!("copying {}", changed.join(", ")));
    let binaries: Vec<PathBuf> =
        artifacts.binaries.iter().filter(|p| changed.contains(&file_name(p).as_str())).cloned().collect();
    let tar = archive::tar_stream(move |tar| {
        for path in &binaries {
            let name = path.file_name().unwrap_or_default();
            archive::append_file(tar, path, Path::new(name), 0o755)?;
        }
        Ok(())
    });
    docker.upload(id, "/usr/bin", tar).await?;
    step.finish("done");
    Ok(())
}

pub async fn add_kind_files(docker: &Docker, id: &str, artifacts: &Artifacts) -> Result<()> {
    let mut written = vec![("/kind/version".to_owned(), format!("{}\n", artifacts.version))];
    for (path, content) in manifests::render()? {
        written.push((path.to_owned(), content));
    }
    files::write_all(docker, id, written).await
}

pub async fn required_images(
    docker: &Docker,
    id: &str,
    artifacts: &Artifacts,
    built: &[String],
    extra_images: &[String],
) -> Result<Vec<String>> {
    let version = artifacts.version.to_string();
    let list =
        docker.exec(id, &["kubeadm", "config", "images", "list", "--kubernetes-version", &version]).await?;
    if !list.success() {
        bail!("`kubeadm config images list` failed: {}", list.last_line());
    }
    let sandbox = containerd::read_config(docker, id).await?.sandbox_image()?;
    let extra = manifests::default_images().map(str::to_owned).chain(extra_images.iter().cloned());
    Ok(images::required(&list.stdout, &sandbox, built, extra))
}

/// runc's cgroup driver must be the kubelet's, and kind chooses the kubelet's by version
/// (its kubeadm config: cgroupfs before 1.24, systemd from 1.24, since kind v0.13): a base
/// with the other one (nodeimg's own base says cgroupfs) would leave the pair mismatched.
pub async fn patch_containerd_config(docker: &Docker, id: &str, artifacts: &Artifacts) -> Result<()> {
    let systemd = artifacts.version.at_least(1, 24);
    let mut config = containerd::read_config(docker, id).await?;
    if config.systemd_cgroup()? == systemd {
        return Ok(());
    }
    config.set_systemd_cgroup(systemd)?;
    containerd::write_config(docker, id, &config).await
}
