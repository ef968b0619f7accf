//! `--with-upgrade-artifacts SOURCE`: a second Kubernetes release inside the node, for
//! upgrade tests (kinder's `--with-upgrade-artifacts`): its binaries under
//! `/kind/upgrade/<version>/`, its control-plane images preloaded and pinned.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::kube::{self, FetchOptions, Source, TreeOptions};
use crate::nodeimage::images::{self, BuiltImage};
use crate::progress::Reporter;

/// Where the upgrade binaries go in the node.
pub const DIR: &str = "/kind/upgrade";

pub struct Upgrade {
    pub version: String,
    /// (binary on this machine, path in the node without the leading `/`).
    pub binaries: Vec<(PathBuf, PathBuf)>,
    pub images: Vec<BuiltImage>,
}

/// Reads a release tarball (extracted into `scratch`) or an extracted `kubernetes/` tree, as
/// `build node-image` reads its SOURCE.
pub async fn read(source: &Path, arch: &str, scratch: &Path, reporter: &Reporter) -> Result<Upgrade> {
    let opts = FetchOptions {
        arch: arch.to_owned(),
        // A local file or directory: nothing is downloaded, so nothing to check or reach.
        release_url: String::new(),
        verify: false,
        tree: TreeOptions {
            kube_root: None,
            kube_repo: String::new(),
            version: None,
            mode: kube::build::BuildMode::Docker,
        },
    };
    let artifacts = kube::fetch(&Source::File(source.to_owned()), &opts, scratch, reporter).await?;
    let version = artifacts.version.text.clone();
    let dir = PathBuf::from(DIR.trim_start_matches('/')).join(&version);
    let binaries =
        artifacts.binaries.iter().map(|b| (b.clone(), dir.join(b.file_name().unwrap_or_default()))).collect();
    let images = images::built_images(&artifacts.image_tars, arch).context("reading its image tars")?;
    Ok(Upgrade { version, binaries, images })
}
