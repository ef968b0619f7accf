//! `nodeimg build node-image` (and `images list`, `images save`): Kubernetes artifacts +
//! base image → node image. One pipeline, [`run`] (in `pipeline.rs`), with explicit stop points.

pub mod archives;
mod base;
mod bundle;
mod commit;
pub mod compat;
pub mod components;
pub mod contents;
mod fetch;
pub mod images;
pub mod incremental;
pub mod iptables;
mod layer;
pub mod manifests;
pub mod mirror;
pub mod multiarch;
mod pipeline;
mod platforms;
mod scratch;
pub mod sources;
mod steps;

use std::path::{Path, PathBuf};

pub use bundle::{Saved, export_to};
pub use commit::{LABEL_KUBE_SOURCE, LABEL_KUBE_VERSION, TEMP_REPO, VERIFY_REPO, check_then_tag};
pub use sources::ImageSources;

pub use pipeline::run;

use crate::docker::{ContainerGuard, Docker};
use crate::kube::{self, Artifacts, FetchOptions, Source};
use crate::progress::Reporter;
use anyhow::Result;
use std::collections::BTreeMap;

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
    /// `images list` / `images save`: nothing is built, not even a missing default base.
    pub plan_only: bool,
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

/// What shapes the node besides its binaries and images: a change means a full build.
fn settings(cfg: &NodeImageConfig) -> String {
    use sha2::Digest;
    let proxies: Vec<&str> = cfg.proxy_env.iter().map(|(k, _)| k.as_str()).collect();
    let text = format!("{:?}\n{:?}", cfg.node_mirrors, proxies);
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(text.as_bytes())))
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

/// Tags the image as the target (after `--verify`) and says what was built.
#[allow(clippy::too_many_arguments)]
async fn finish(
    cfg: &NodeImageConfig,
    image_id: String,
    container: Option<ContainerGuard>,
    artifacts: Artifacts,
    plan: Vec<sources::Planned>,
    (base, base_id): (String, String),
    built_on: Option<String>,
    docker: &Docker,
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

fn fetch_options(cfg: &NodeImageConfig) -> FetchOptions {
    FetchOptions {
        arch: cfg.arch.clone(),
        release_url: cfg.release_url.clone(),
        verify: cfg.checksums,
        tree: cfg.tree.clone(),
    }
}
