//! `nodeimg build node-image` (and `images list`, `images save`): Kubernetes artifacts +
//! base image → node image. One pipeline, [`run`], with explicit stop points.

pub mod archives;
mod base;
mod bundle;
mod commit;
pub mod compat;
pub mod components;
pub mod images;
pub mod incremental;
pub mod iptables;
mod layer;
pub mod manifests;
pub mod mirror;
pub mod multiarch;
mod platforms;
mod scratch;
pub mod sources;
mod steps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use bundle::Saved;
pub use commit::{LABEL_KUBE_SOURCE, LABEL_KUBE_VERSION, TEMP_REPO, VERIFY_REPO, check_then_tag};
pub use sources::ImageSources;

use crate::docker::{ContainerGuard, Docker};
use crate::kube::{self, Artifacts, FetchOptions, Source};
use crate::node::containerd;
use crate::progress::Reporter;
use steps::{
    add_binaries, add_kind_files, binary_items, create_build_container, patch_containerd_config,
    record_sizes, remove_images, required_images,
};

/// Proxy settings are handed to the build container and blanked in the result.
pub const PROXY_VARS: [&str; 6] =
    ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"];

#[derive(Clone, Debug)]
pub struct NodeImageConfig {
    pub source: Source,
    pub image: String,
    /// `-b`; none: the default base of the runtime line that serves the Kubernetes version.
    pub base_image: Option<String>,
    /// `--skip-compat-check`: build even on a containerd that cannot serve this Kubernetes.
    pub skip_compat_check: bool,
    pub arch: String,
    pub release_url: String,
    /// Check downloads against their published checksums.
    pub checksums: bool,
    /// Keep the assembled artifacts here; otherwise a temp dir, always removed.
    pub build_dir: Option<PathBuf>,
    pub keep_container: bool,
    /// For source-tree builds.
    pub tree: kube::TreeOptions,
    /// Host-mode builds: the base of the control-plane images (default: upstream's).
    pub component_base_image: Option<String>,
    /// Archives, mirrors, extra images, --offline.
    pub images: ImageSources,
    /// Registry mirrors written into the node for its runtime pulls.
    pub node_mirrors: Vec<mirror::NodeMirror>,
    /// `--verify`: check the image before it gets the target tag.
    pub check: Option<crate::verify::VerifyConfig>,
    /// Proxy settings handed to the build container (and blanked in the result).
    pub proxy_env: Vec<(String, String)>,
    /// `--from-node`, `--full`, or the target tag's image when it can be built on.
    pub from_node: incremental::FromNode,
    /// `--allow-foreign-images`: preload images of another architecture (with a warning).
    pub allow_foreign_images: bool,
}

/// Where [`run`] stops.
pub enum Stop<'a> {
    /// `images list`: after the plan, before any import.
    Plan,
    /// `images save FILE`: after gathering the images (the built ones left out), written to FILE.
    Bundle(&'a Path),
    /// `build node-image`: the whole way, to a tagged image.
    Image,
}

pub enum Outcome {
    Planned(Vec<sources::Planned>),
    Bundled(Saved),
    Built(Box<NodeImage>),
}

#[derive(Debug)]
pub struct NodeImage {
    pub reference: String,
    pub id: String,
    pub size: u64,
    pub version: String,
    /// Every image inside and where it came from.
    pub plan: Vec<sources::Planned>,
    /// The image an incremental build started from.
    pub built_on: Option<String>,
    pub provenance: kube::Provenance,
    /// The base image, as named and its ID.
    pub base: String,
    pub base_id: String,
}

/// The pipeline. Only a fully successful build creates or moves the target tag.
pub async fn run(
    cfg: &NodeImageConfig,
    stop: Stop<'_>,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Outcome> {
    let platform = format!("linux/{}", cfg.arch);
    // 1. Image archives: their indexes are read before any container exists, so a bad one
    //    fails first.
    let archives =
        archives::index_all(&archives::collect(&cfg.images.archive_files, &cfg.images.archive_dirs)?)
            .context("reading the image archives")?;
    // 2. Kubernetes: download, extract or build.
    let scratch = scratch::Scratch::new(match stop {
        Stop::Image => cfg.build_dir.as_deref(),
        _ => None,
    })?;
    let artifacts = kube::fetch(&cfg.source, &fetch_options(cfg), scratch.path(), reporter)
        .await
        .context("getting the Kubernetes artifacts")?;
    // 3. The base image (chosen by the Kubernetes version unless given), and the node image
    //    an incremental rebuild starts from, when there is one that can take another layer.
    let version = &artifacts.version;
    let base =
        base::resolve(docker, cfg.base_image.as_deref(), version, &cfg.arch, cfg.images.offline, reporter)
            .await?;
    let base_id = docker.inspect_image(&base).await?.map(|i| i.id).unwrap_or_default();
    let previous = match stop {
        Stop::Image => {
            incremental::choose(docker, &cfg.from_node, &cfg.image, &expected(cfg, &base_id), reporter)
                .await
                .context("looking at the image to build on")?
        }
        _ => None,
    };
    let old = previous.as_ref().map(|p| p.inputs.clone()).unwrap_or_default();
    // 4. The built control-plane images: upstream's tars, or made here for a host-mode build
    //    (not again when unchanged since the image built on).
    let mut built =
        images::built_images(&artifacts.image_tars, &cfg.arch).context("reading the built image tars")?;
    let mut kept_built = Vec::new();
    if let Some(binaries) = &artifacts.components {
        let base = cfg.component_base_image.as_deref();
        let (made, kept) =
            components::make_images(docker, binaries, base, &old.images, scratch.path(), reporter)
                .await
                .context("making the control-plane images")?;
        built.extend(made);
        kept_built = kept;
    }
    // 5. The build container, from the base image or the image built on; its containerd
    //    must serve this Kubernetes: checked before any import.
    let from = previous.as_ref().map_or(base.as_str(), |p| p.id.as_str());
    let container =
        create_build_container(docker, cfg, from).await.context("creating the build container")?;
    let id = container.id().to_owned();
    compat::check(docker, &base, &id, version, cfg.skip_compat_check, reporter).await?;
    // 6. kubeadm, kubelet, kubectl: those that changed. A rebuild puts in only kubeadm now
    //    (it lists the images); the others go in with the rest of the change (step 9).
    let binaries = binary_items(&artifacts).await.context("reading the Kubernetes binaries")?;
    let changed_binaries: Vec<String> =
        incremental::changed(&old.binaries, &binaries).into_iter().map(str::to_owned).collect();
    let changed: Vec<&str> = changed_binaries.iter().map(String::as_str).collect();
    let (now, later): (Vec<&str>, Vec<&str>) =
        changed.iter().partition(|b| previous.is_none() || **b == "kubeadm");
    add_binaries(docker, &id, &artifacts, &now, reporter).await.context("copying the Kubernetes binaries")?;
    // 7. Every image the cluster needs, and where each will come from.
    let built_names: Vec<String> =
        built.iter().map(|b| b.name.clone()).chain(kept_built.iter().map(|(n, _)| n.clone())).collect();
    let required = required_images(docker, &id, &artifacts, &built_names, &cfg.images.extra)
        .await
        .context("listing the required images")?;
    // Built images are made from the artifacts on the other side too: a bundle leaves them out.
    let to_import: &[images::BuiltImage] = if matches!(stop, Stop::Bundle(_)) { &[] } else { &built };
    let mut plan = sources::plan(docker, to_import, &required, &archives, &cfg.images, &platform).await?;
    if let Stop::Plan = stop {
        container.remove().await.context("removing the build container")?;
        return Ok(Outcome::Planned(plan));
    }
    sources::check_offline(&plan)?;
    let mut items = incremental::identify(docker, &mut plan, &kept_built, to_import, &archives, &old.images)
        .await
        .context("comparing the images with the image built on")?;
    let replaced = incremental::replaced(&old.images, &items);
    let fetched = plan.iter().filter(|p| p.origin != sources::Origin::Kept).count();
    let base = (base, base_id);
    if let Some(previous) = &previous
        && fetched == 0
        && replaced.is_empty()
    {
        // Nothing changed: the image built on gets the tag (after --verify), no layer added.
        if changed_binaries.is_empty() && old.version == version.text {
            reporter.info(format!("unchanged since {}: no new layer", previous.reference));
            let (id, built_on) = (previous.id.clone(), Some(previous.reference.clone()));
            return finish(docker, cfg, id, Some(container), artifacts, plan, base, built_on, reporter).await;
        }
        // Only files changed: their layer is written here and loaded on the image built on.
        if layer::can_append(docker) && same_cgroup_driver(&old.version, version) {
            let inputs = inputs(cfg, version, &base.1, binaries, items);
            let record = commit::Record::next(Some(previous), inputs, &old, &replaced, &changed);
            let layer = layer::Layer {
                files: artifacts
                    .binaries
                    .iter()
                    .filter(|p| changed.contains(&steps::file_name(p).as_str()))
                    .map(|p| (p.clone(), format!("/usr/bin/{}", steps::file_name(p)), 0o755))
                    .collect(),
                texts: vec![("/kind/version".to_owned(), format!("{}\n", artifacts.version))],
                labels: commit::labels(cfg, &artifacts, &record),
                created_by: format!("nodeimg build node-image: {}", changed_binaries.join(", ")),
            };
            let container = if cfg.keep_container {
                Some(container)
            } else {
                container.remove().await.context("removing the build container")?;
                None
            };
            let image_id = layer::append(docker, &previous.id, layer, scratch.path(), reporter).await?;
            let built_on = Some(previous.reference.clone());
            return finish(docker, cfg, image_id, container, artifacts, plan, base, built_on, reporter).await;
        }
    }
    // 8. Import and pin what is new into the build container's containerd, after removing
    //    what it replaces (so the image does not grow with every rebuild).
    if fetched > 0 || !replaced.is_empty() {
        let importing: Vec<images::BuiltImage> = to_import
            .iter()
            .filter(|b| plan.iter().any(|p| p.origin == sources::Origin::Built(b.tar.clone())))
            .cloned()
            .collect();
        let step = reporter.step("starting containerd in the build container");
        containerd::start(docker, &id).await?;
        step.finish("ready");
        if !replaced.is_empty() {
            remove_images(docker, &id, &replaced, reporter).await.context("removing replaced images")?;
        }
        let step = reporter.step(format!("importing {fetched} images ({})", sources::summary(&plan)));
        sources::import(docker, &id, &plan, &importing, &archives, &platform, reporter).await?;
        step.finish("pinned");
        platforms::check(docker, &id, &plan, &cfg.arch, cfg.allow_foreign_images, reporter).await?;
        record_sizes(docker, &id, &plan, &mut items).await?;
        if let Stop::Bundle(output) = stop {
            let saved =
                bundle::export(docker, &id, &required, &platform, output, sources::summary(&plan), reporter)
                    .await
                    .with_context(|| format!("writing {}", output.display()))?;
            container.remove().await.context("removing the build container")?;
            return Ok(Outcome::Bundled(saved));
        }
        containerd::stop(docker, &id).await?;
    }
    // 9. The other binaries of a rebuild, kind's files and the containerd configuration.
    add_binaries(docker, &id, &artifacts, &later, reporter)
        .await
        .context("copying the Kubernetes binaries")?;
    add_kind_files(docker, &id, &artifacts).await.context("writing /kind/version and /kind/manifests")?;
    patch_containerd_config(docker, &id, &artifacts).await.context("adjusting the containerd config")?;
    if !cfg.node_mirrors.is_empty() && previous.is_none() {
        mirror::add_node_mirrors(docker, &id, &cfg.node_mirrors)
            .await
            .context("writing the node's registry mirrors")?;
    }
    // 10. Commit (recording what went in), check (--verify), and only then tag.
    let inputs = inputs(cfg, version, &base.1, binaries, items);
    let record = commit::Record::next(previous.as_ref(), inputs, &old, &replaced, &changed);
    let image_id = commit::commit(docker, &id, cfg, &artifacts, &record, reporter).await?;
    let built_on = previous.map(|p| p.reference);
    finish(docker, cfg, image_id, Some(container), artifacts, plan, base, built_on, reporter).await
}

fn inputs(
    cfg: &NodeImageConfig,
    version: &kube::KubeVersion,
    base_id: &str,
    binaries: BTreeMap<String, incremental::Item>,
    images: BTreeMap<String, incremental::Item>,
) -> incremental::Inputs {
    incremental::Inputs {
        version: version.text.clone(),
        arch: cfg.arch.clone(),
        base: base_id.to_owned(),
        settings: settings(cfg),
        binaries,
        images,
    }
}

/// kind picks the kubelet's cgroup driver by version (systemd from 1.24) and the build sets
/// runc's to match: a version across that line needs the config patched, in a container.
fn same_cgroup_driver(old: &str, new: &kube::KubeVersion) -> bool {
    kube::KubeVersion::parse(old).is_ok_and(|old| old.at_least(1, 24) == new.at_least(1, 24))
}

/// Tags the image as the target (after `--verify`) and says what was built.
#[allow(clippy::too_many_arguments)]
async fn finish(
    docker: &Docker,
    cfg: &NodeImageConfig,
    image_id: String,
    container: Option<ContainerGuard>,
    artifacts: Artifacts,
    plan: Vec<sources::Planned>,
    (base, base_id): (String, String),
    built_on: Option<String>,
    reporter: &Reporter,
) -> Result<Outcome> {
    let container = match container {
        Some(container) if cfg.keep_container => {
            container.keep();
            None
        }
        other => other,
    };
    commit::check_then_tag(docker, &image_id, container, &cfg.image, cfg.check.as_ref(), reporter).await?;
    let size = docker.inspect_image(&image_id).await?.map(|i| i.size).unwrap_or_default();
    Ok(Outcome::Built(Box::new(NodeImage {
        reference: cfg.image.clone(),
        id: image_id,
        size,
        version: artifacts.version.text,
        plan,
        built_on,
        provenance: artifacts.provenance,
        base,
        base_id,
    })))
}

fn expected<'a>(cfg: &'a NodeImageConfig, base_id: &'a str) -> incremental::Expected<'a> {
    incremental::Expected {
        source_label: commit::source_label(&cfg.source),
        arch: &cfg.arch,
        base_id,
        settings: settings(cfg),
    }
}

/// What shapes the node besides its binaries and images: a change means a full build.
fn settings(cfg: &NodeImageConfig) -> String {
    use sha2::Digest;
    let proxies: Vec<&str> = cfg.proxy_env.iter().map(|(k, _)| k.as_str()).collect();
    let text = format!("{:?}\n{:?}", cfg.node_mirrors, proxies);
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(text.as_bytes())))
}

fn fetch_options(cfg: &NodeImageConfig) -> FetchOptions {
    FetchOptions {
        arch: cfg.arch.clone(),
        release_url: cfg.release_url.clone(),
        verify: cfg.checksums,
        tree: cfg.tree.clone(),
    }
}
