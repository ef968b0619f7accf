//! `nodeimg build node-image` (and `images list`, `images save`): Kubernetes artifacts +
//! base image → node image. One pipeline, [`run`], with explicit stop points.

pub mod archives;
mod base;
mod bundle;
mod commit;
pub mod compat;
pub mod components;
pub mod images;
pub mod iptables;
pub mod manifests;
pub mod mirror;
pub mod multiarch;
mod platforms;
mod scratch;
pub mod sources;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use bundle::Saved;
pub use commit::{LABEL_KUBE_SOURCE, LABEL_KUBE_VERSION, TEMP_REPO, VERIFY_REPO, check_then_tag};
pub use sources::ImageSources;

use crate::archive;
use crate::docker::{ContainerGuard, ContainerSpec, Docker};
use crate::kube::{self, Artifacts, FetchOptions, Source};
use crate::node::{containerd, files};
use crate::progress::Reporter;

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
    Built(NodeImage),
}

#[derive(Debug)]
pub struct NodeImage {
    pub reference: String,
    pub id: String,
    pub size: u64,
    pub version: String,
    /// Every image inside and where it came from.
    pub plan: Vec<sources::Planned>,
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
    // 3. The built control-plane images: upstream's tars, or made here for a host-mode build.
    let mut built =
        images::built_images(&artifacts.image_tars, &cfg.arch).context("reading the built image tars")?;
    if let Some(binaries) = &artifacts.components {
        built.extend(
            components::make_images(
                docker,
                binaries,
                cfg.component_base_image.as_deref(),
                scratch.path(),
                reporter,
            )
            .await
            .context("making the control-plane images")?,
        );
    }
    // 4. The build container, from the base image (chosen by the Kubernetes version unless
    //    given), whose containerd must serve that version: checked before any import.
    let version = &artifacts.version;
    let base =
        base::resolve(docker, cfg.base_image.as_deref(), version, &cfg.arch, cfg.images.offline, reporter)
            .await?;
    let container =
        create_build_container(docker, cfg, &base).await.context("creating the build container")?;
    let id = container.id().to_owned();
    compat::check(docker, &base, &id, version, cfg.skip_compat_check, reporter).await?;
    // 5. kubeadm, kubelet, kubectl into /usr/bin.
    add_binaries(docker, &id, &artifacts, reporter).await.context("copying the Kubernetes binaries")?;
    // 6. Every image the cluster needs, and where each will come from.
    let required = required_images(docker, &id, &artifacts, &built, &cfg.images.extra)
        .await
        .context("listing the required images")?;
    // Built images are made from the artifacts on the other side too: a bundle leaves them out.
    let to_import: &[images::BuiltImage] = if matches!(stop, Stop::Bundle(_)) { &[] } else { &built };
    let plan = sources::plan(docker, to_import, &required, &archives, &cfg.images, &platform).await?;
    if let Stop::Plan = stop {
        container.remove().await.context("removing the build container")?;
        return Ok(Outcome::Planned(plan));
    }
    sources::check_offline(&plan)?;
    // 7. Import and pin every image into the build container's containerd.
    let step = reporter.step("starting containerd in the build container");
    containerd::start(docker, &id).await?;
    step.finish("ready");
    let step = reporter.step(format!("importing {} images ({})", plan.len(), sources::summary(&plan)));
    sources::import(docker, &id, &plan, to_import, &archives, &platform, reporter).await?;
    step.finish("pinned");
    platforms::check(docker, &id, &plan, &cfg.arch, cfg.allow_foreign_images, reporter).await?;
    if let Stop::Bundle(output) = stop {
        let saved =
            bundle::export(docker, &id, &required, &platform, output, sources::summary(&plan), reporter)
                .await
                .with_context(|| format!("writing {}", output.display()))?;
        container.remove().await.context("removing the build container")?;
        return Ok(Outcome::Bundled(saved));
    }
    // 8. kind's files and the containerd configuration.
    add_kind_files(docker, &id, &artifacts).await.context("writing /kind/version and /kind/manifests")?;
    patch_containerd_config(docker, &id, &artifacts).await.context("adjusting the containerd config")?;
    if !cfg.node_mirrors.is_empty() {
        mirror::add_node_mirrors(docker, &id, &cfg.node_mirrors)
            .await
            .context("writing the node's registry mirrors")?;
    }
    // 9. Commit, check (--verify), and only then tag.
    containerd::stop(docker, &id).await?;
    let image_id = commit::commit(docker, &id, cfg, &artifacts, reporter).await?;
    let container = if cfg.keep_container {
        container.keep();
        None
    } else {
        Some(container)
    };
    commit::check_then_tag(docker, &image_id, container, &cfg.image, cfg.check.as_ref(), reporter).await?;
    let size = docker.inspect_image(&image_id).await?.map(|i| i.size).unwrap_or_default();
    Ok(Outcome::Built(NodeImage {
        reference: cfg.image.clone(),
        id: image_id,
        size,
        version: artifacts.version.text,
        plan,
    }))
}

fn fetch_options(cfg: &NodeImageConfig) -> FetchOptions {
    FetchOptions {
        arch: cfg.arch.clone(),
        release_url: cfg.release_url.clone(),
        verify: cfg.checksums,
        tree: cfg.tree.clone(),
    }
}

async fn create_build_container(
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

/// kubeadm, kubelet and kubectl into /usr/bin, in one streamed tar.
async fn add_binaries(docker: &Docker, id: &str, artifacts: &Artifacts, reporter: &Reporter) -> Result<()> {
    let step = reporter.step("copying kubeadm, kubelet, kubectl");
    let binaries = artifacts.binaries.clone();
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

async fn add_kind_files(docker: &Docker, id: &str, artifacts: &Artifacts) -> Result<()> {
    let mut written = vec![("/kind/version".to_owned(), format!("{}\n", artifacts.version))];
    for (path, content) in manifests::render()? {
        written.push((path.to_owned(), content));
    }
    files::write_all(docker, id, written).await
}

async fn required_images(
    docker: &Docker,
    id: &str,
    artifacts: &Artifacts,
    built: &[images::BuiltImage],
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
async fn patch_containerd_config(docker: &Docker, id: &str, artifacts: &Artifacts) -> Result<()> {
    let systemd = artifacts.version.at_least(1, 24);
    let mut config = containerd::read_config(docker, id).await?;
    if config.systemd_cgroup()? == systemd {
        return Ok(());
    }
    config.set_systemd_cgroup(systemd)?;
    containerd::write_config(docker, id, &config).await
}
