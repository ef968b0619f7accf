//! The quick way to an incremental image when only files change (binaries, /kind/version):
//! the layer is written here from exactly those files and loaded on top of the image built
//! on, instead of committing the build container, which on some storage drivers (naive
//! diff: fuse-overlayfs, vfs) walks the whole image to find what changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::archive::image::{layer_archive, write_files_layer};
use crate::docker::{Docker, short_id};
use crate::progress::Reporter;

/// What the layer holds and says.
pub struct Layer {
    /// `(source, path in the image, mode)`.
    pub files: Vec<(PathBuf, String, u32)>,
    /// `(path in the image, content)`.
    pub texts: Vec<(String, String)>,
    /// Labels set on top of the image's own.
    pub labels: Vec<(&'static str, String)>,
    /// For `docker history`.
    pub created_by: String,
}

/// Docker loads a layer onto an image it has; Podman's compatible load wants every layer in
/// the archive, so it gets a commit instead.
pub fn can_append(docker: &Docker) -> bool {
    !docker.engine().is_podman()
}

/// The image `base` plus one layer of `layer`, loaded untagged; returns its ID.
pub async fn append(
    docker: &Docker,
    base: &str,
    layer: Layer,
    scratch: &Path,
    reporter: &Reporter,
) -> Result<String> {
    let step = reporter.step("writing the new layer");
    let mut config = docker.image_config(base).await?;
    let tar = scratch.join("incremental-layer.tar");
    let (files, texts) = (layer.files, layer.texts);
    let written = tokio::task::spawn_blocking(move || write_files_layer(&tar, &files, &texts))
        .await?
        .context("writing the layer")?;
    let lower = config["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .context("the image has no layer list")?
        .push(written.diff_id.clone().into());
    if let Some(history) = config["history"].as_array_mut() {
        history.push(serde_json::json!({ "created": now, "created_by": layer.created_by }));
    }
    config["created"] = now.into();
    let mut labels: BTreeMap<String, String> =
        serde_json::from_value(config["config"]["Labels"].take()).unwrap_or_default();
    labels.extend(layer.labels.into_iter().map(|(k, v)| (k.to_owned(), v)));
    labels.extend(docker.labels().image_map());
    config["config"]["Labels"] = serde_json::to_value(labels)?;
    let (id, archive) = layer_archive(serde_json::to_vec(&config)?, lower, &written);
    let loaded = docker.load_image(archive).await;
    std::fs::remove_file(&written.path).ok();
    let loaded = loaded?;
    if !loaded.iter().any(|l| l.contains(id.trim_start_matches("sha256:"))) {
        bail!("the engine did not load the new layer (it reported {loaded:?})");
    }
    step.finish(short_id(&id));
    Ok(id)
}
