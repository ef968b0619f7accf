//! `nodeimg cluster update`: new Kubernetes binaries and images into a running kind
//! cluster's nodes, in place, one node at a time, each node rolled back if it does not come
//! back Ready. kind itself has no way to do this: the alternative is deleting and
//! re-creating the cluster, which takes minutes and loses its state.

mod kubectl;
mod manifests;
mod node;
mod nodes;
mod skew;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::docker::{ContainerGuard, ContainerSpec, Docker};
use crate::nodeimage::{ImageSources, archives, sources};
use crate::progress::Reporter;

pub use node::{Change, NodeReport};
pub use nodes::ClusterNode;
pub use skew::check as check_skew;

/// The binaries `cluster update` can replace, and where kind's nodes have them.
pub const BINARIES: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];

/// A validated `cluster update`.
#[derive(Clone, Debug)]
pub struct UpdateConfig {
    pub cluster: String,
    /// `(name, file, the architecture its ELF header names)`.
    pub binaries: Vec<(&'static str, PathBuf, &'static str)>,
    /// `--with-image`: tars as archives, references as extra images.
    pub images: ImageSources,
    pub from_node: Option<String>,
    pub parallel: bool,
    pub force: bool,
    /// Per node: how long it may take to come back Ready.
    pub timeout: Duration,
}

/// What one run changes on every node.
pub struct Parts {
    pub binaries: Vec<(&'static str, PathBuf)>,
    pub plan: Vec<sources::Planned>,
    pub archives: Vec<archives::Archive>,
    pub platform: String,
}

/// The pipeline. Every check runs before the first node is touched; a node that fails is
/// rolled back and ends the run, with the nodes before it updated and the rest untouched.
pub async fn update(cfg: &UpdateConfig, docker: &Docker, reporter: &Reporter) -> Result<Vec<NodeReport>> {
    // 1. The cluster's nodes by kind's labels, control plane first; all one architecture.
    let nodes = nodes::find(docker, &cfg.cluster).await?;
    let arch = nodes::architecture(docker, &nodes).await?;
    reporter.info(format!(
        "cluster {}: {} ({arch})",
        cfg.cluster,
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    // 2. Binaries of the nodes' architecture only, from the flags or the node image.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut binaries: Vec<(&'static str, PathBuf)> = Vec::new();
    for (name, path, binary_arch) in &cfg.binaries {
        if *binary_arch != arch {
            bail!(
                "--with-{name} {}: an {binary_arch} binary, but cluster {} is {arch}",
                path.display(),
                cfg.cluster
            );
        }
        binaries.push((name, path.clone()));
    }
    let mut archive_files = cfg.images.archive_files.clone();
    if let Some(image) = &cfg.from_node {
        let taken = from_node(docker, image, &arch, &binaries, &nodes[0], scratch.path(), reporter)
            .await
            .with_context(|| format!("--from-node {image}"))?;
        binaries.extend(taken.binaries);
        archive_files.extend(taken.images);
    }
    // 3. The images and where each comes from, as `images add` plans them.
    let platform = format!("linux/{arch}");
    let found = archives::collect(&archive_files, &[])?;
    let archives = archives::index_all(&found).context("reading --with-image")?;
    let mut wanted: Vec<String> = archives.iter().flat_map(|a| a.images.keys().cloned()).collect();
    wanted.extend(cfg.images.extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|i| seen.insert(i.clone()));
    let plan = sources::plan(docker, &[], &wanted, &archives, &cfg.images, &platform)
        .await
        .context("planning the images")?;
    let parts = Parts { binaries, plan, archives, platform };
    // 4. The kubelet against the API server's version (the skew policy), unless --force.
    let control_plane = &nodes[0];
    let new_kubelet = match parts.binaries.iter().find(|(n, _)| *n == "kubelet") {
        Some((_, path)) => Some(node::staged_version(docker, control_plane, "kubelet", path).await?),
        None => None,
    };
    if let Some(kubelet) = &new_kubelet {
        let server = kubectl::server_version(docker, control_plane).await.context("asking the API server")?;
        match (skew::check(kubelet, &server), cfg.force) {
            (Err(why), false) => bail!("--with-kubelet {kubelet}: {why} (--force updates anyway)"),
            (Err(why), true) => reporter.warn(format!("--force: {why}")),
            (Ok(()), _) => {}
        }
    }
    // 5. Node by node: control planes one at a time, then the workers (at once with
    //    --parallel). The first failure, rolled back on its node, ends the run.
    let ctx = node::Context { docker, reporter, control_plane, timeout: cfg.timeout, parts: &parts };
    let (planes, workers): (Vec<_>, Vec<_>) = nodes.iter().partition(|n| n.is_control_plane());
    let mut reports = Vec::new();
    for n in planes {
        reports.push(node::update(&ctx, n).await?);
    }
    if cfg.parallel {
        let results = futures_util::future::join_all(workers.iter().map(|n| node::update(&ctx, n))).await;
        for result in results {
            reports.push(result?);
        }
    } else {
        for n in workers {
            reports.push(node::update(&ctx, n).await?);
        }
    }
    drop(scratch);
    Ok(reports)
}

/// What `--from-node` takes from a node image.
struct Taken {
    binaries: Vec<(&'static str, PathBuf)>,
    /// One archive of the images whose digest differs from the control plane's (or that it
    /// does not have), exported by the node image's own containerd.
    images: Option<PathBuf>,
}

/// The binaries of node image `image` (the nodes' sha256 is compared node by node when
/// they are staged; ones given by flag win) and its images that differ from the control
/// plane's, copied out into `dir`.
async fn from_node(
    docker: &Docker,
    image: &str,
    arch: &str,
    given: &[(&'static str, PathBuf)],
    control_plane: &ClusterNode,
    dir: &std::path::Path,
    reporter: &Reporter,
) -> Result<Taken> {
    let info =
        docker.inspect_image(image).await?.with_context(|| "no such image in the engine".to_owned())?;
    if info.architecture != arch {
        bail!("an {} image, but the cluster is {arch}", info.architecture);
    }
    let started = Instant::now();
    let mut spec = ContainerSpec::idle(&info.id);
    spec.security_opt = vec!["seccomp=unconfined".into()];
    let container = ContainerGuard::new(docker, docker.create_container(&spec).await?);
    let id = container.id().to_owned();
    docker.start_container(&id).await?;
    let mut binaries = Vec::new();
    for name in BINARIES.into_iter().filter(|b| !given.iter().any(|(g, _)| g == b)) {
        let path = dir.join(name);
        let mut file = tokio::fs::File::create(&path).await?;
        let out = docker.exec_stdout_to(&id, &["cat", &format!("/usr/bin/{name}")], &mut file).await?;
        if !out.success() {
            bail!("reading /usr/bin/{name}: {}", out.last_line());
        }
        binaries.push((name, path));
    }
    let images = changed_images(docker, &id, arch, control_plane, dir).await?;
    container.remove().await?;
    reporter.detail(format!(
        "read {} binaries and {} changed image(s) of {image} in {:.1?}",
        binaries.len(),
        images.1,
        started.elapsed()
    ));
    Ok(Taken { binaries, images: images.0 })
}

/// The images of the node image in container `id` whose digest is not the control plane's,
/// exported by its containerd into one archive in `dir`; and how many.
async fn changed_images(
    docker: &Docker,
    id: &str,
    arch: &str,
    control_plane: &ClusterNode,
    dir: &std::path::Path,
) -> Result<(Option<PathBuf>, usize)> {
    use crate::node::containerd::{self, parse_listing};
    use crate::nodeimage::images::ctr;
    containerd::start(docker, id).await.context("starting containerd in a container of the image")?;
    let theirs = parse_listing(&ctr(docker, id, &["images", "ls"]).await?);
    let ours = parse_listing(&ctr(docker, &control_plane.id, &["images", "ls"]).await?);
    let names: Vec<&str> = theirs
        .iter()
        .filter(|t| !ours.iter().any(|o| o.name == t.name && o.digest == t.digest))
        .map(|t| t.name.as_str())
        .collect();
    if names.is_empty() {
        return Ok((None, 0));
    }
    let path = dir.join("from-node-images.tar");
    let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
    crate::nodeimage::export_to(docker, id, &names, &format!("linux/{arch}"), &path)
        .await
        .context("exporting the changed images")?;
    Ok((Some(path), names.len()))
}
