//! Writing single-layer images in the docker-save format (`docker load` input), so an image
//! with a full configuration (entrypoint, stop signal, env, labels) is created in one API
//! call, with no builder and no registry.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::archive;

/// The parts of an image configuration nodeimg sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Docker's name for the architecture (amd64, arm64, ...).
    pub architecture: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Shown by `docker history`.
    pub created_by: String,
}

/// A layer tar on disk and the sha256 of its bytes (the image's diff ID).
pub struct Layer {
    pub path: PathBuf,
    pub diff_id: String,
}

/// Writes the tree at `root` as a layer tar at `dest`, hashing it on the way.
pub fn write_layer(root: &Path, dest: &Path) -> io::Result<Layer> {
    let mut writer = HashingWriter { inner: BufWriter::new(File::create(dest)?), hash: Sha256::new() };
    let mut builder = tar::Builder::new(&mut writer);
    archive::append_rootfs(&mut builder, root)?;
    builder.into_inner()?;
    writer.inner.flush()?;
    Ok(Layer { path: dest.to_owned(), diff_id: format!("sha256:{}", hex::encode(writer.hash.finalize())) })
}

/// Writes a layer of the given files (`(source, path in the image, mode)`) and texts
/// (`(path, content)`, mode 0644) at `dest`, hashing it on the way. Parent directories are
/// written as root-owned 0755 entries, as they are in a node image.
pub fn write_files_layer(
    dest: &Path,
    files: &[(PathBuf, String, u32)],
    texts: &[(String, String)],
) -> io::Result<Layer> {
    let mut writer = HashingWriter { inner: BufWriter::new(File::create(dest)?), hash: Sha256::new() };
    let mut builder = tar::Builder::new(&mut writer);
    let paths = files.iter().map(|(_, p, _)| p).chain(texts.iter().map(|(p, _)| p));
    let mut dirs: Vec<String> = paths
        .flat_map(|p| {
            let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            (1..parts.len()).map(move |n| format!("{}/", parts[..n].join("/")))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder.append_data(&mut header, dir, io::empty())?;
    }
    for (source, path, mode) in files {
        archive::append_file(&mut builder, source, Path::new(path.trim_start_matches('/')), *mode)?;
    }
    for (path, content) in texts {
        archive::append_bytes(&mut builder, path.trim_start_matches('/'), 0o644, content.as_bytes())?;
    }
    builder.into_inner()?;
    writer.inner.flush()?;
    Ok(Layer { path: dest.to_owned(), diff_id: format!("sha256:{}", hex::encode(writer.hash.finalize())) })
}

/// The docker-save archive of an image whose configuration is `config` and whose last layer
/// is `layer`: the `lower` layers under it are named in the manifest but not carried, since
/// `docker load` takes a layer it already has from its store (it is an image the engine
/// holds plus one layer). Returns the image ID with the stream.
pub fn layer_archive(
    config: Vec<u8>,
    lower: usize,
    layer: &Layer,
) -> (String, impl Stream<Item = io::Result<Bytes>> + Send + 'static) {
    archive_of(config, lower, layer, &[])
}

fn archive_of(
    config: Vec<u8>,
    lower: usize,
    layer: &Layer,
    tags: &[String],
) -> (String, impl Stream<Item = io::Result<Bytes>> + Send + 'static) {
    let config_hex = hex::encode(Sha256::digest(&config));
    let layer_dir = layer.diff_id.trim_start_matches("sha256:").to_owned();
    let mut layers: Vec<String> = (0..lower).map(|i| format!("lower-{i}/layer.tar")).collect();
    layers.push(format!("{layer_dir}/layer.tar"));
    let manifest = serde_json::to_vec(&json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { json!(tags) },
        "Layers": layers,
    }]))
    .expect("JSON of strings");
    let layer_path = layer.path.clone();
    let config_name = format!("{config_hex}.json");
    let stream = archive::tar_stream(move |tar| {
        archive::append_bytes(tar, &config_name, 0o644, &config)?;
        let mut file = File::open(&layer_path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&file.metadata()?);
        header.set_mode(0o644);
        tar.append_data(&mut header, format!("{layer_dir}/layer.tar"), &mut file)?;
        archive::append_bytes(tar, "manifest.json", 0o644, &manifest)
    });
    (format!("sha256:{config_hex}"), stream)
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The image configuration JSON; its sha256 is the image ID.
pub fn config_json(config: &ImageConfig, diff_id: &str, created: &str) -> Vec<u8> {
    let mut container_config = serde_json::Map::new();
    let mut put = |key: &str, value: serde_json::Value| {
        container_config.insert(key.to_owned(), value);
    };
    if !config.env.is_empty() {
        put("Env", json!(config.env));
    }
    if !config.entrypoint.is_empty() {
        put("Entrypoint", json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        put("Cmd", json!(config.cmd));
    }
    if let Some(signal) = &config.stop_signal {
        put("StopSignal", json!(signal));
    }
    if !config.labels.is_empty() {
        put("Labels", json!(config.labels));
    }
    let doc = json!({
        "architecture": config.architecture,
        "os": "linux",
        "created": created,
        "config": container_config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": config.created_by }],
    });
    serde_json::to_vec(&doc).expect("JSON of strings")
}

/// The docker-save archive of a one-layer image, streamed; the layer is read from disk as
/// the consumer pulls. `tags` may be empty (the image stays untagged). Returns the image ID
/// with the stream.
pub fn image_archive(
    config: &ImageConfig,
    layer: &Layer,
    tags: &[String],
) -> (String, impl Stream<Item = io::Result<Bytes>> + Send + 'static) {
    let config_bytes = config_json(
        config,
        &layer.diff_id,
        &humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    );
    archive_of(config_bytes, 0, layer, tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[test]
    fn config_carries_what_import_changes_cannot() {
        let config = ImageConfig {
            architecture: "amd64".into(),
            entrypoint: vec!["/init".into()],
            stop_signal: Some("SIGRTMIN+3".into()),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            ..Default::default()
        };
        let doc: serde_json::Value = serde_json::from_slice(&config_json(&config, "sha256:00", "t")).unwrap();
        assert_eq!(doc["config"]["StopSignal"], "SIGRTMIN+3");
        assert_eq!(doc["config"]["Entrypoint"][0], "/init");
        assert_eq!(doc["config"]["Labels"]["a"], "b");
        assert_eq!(doc["rootfs"]["diff_ids"][0], "sha256:00");
        assert!(doc["config"].get("Cmd").is_none());
    }

    #[tokio::test]
    async fn archive_holds_a_layer_whose_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), b"node\n").unwrap();
        let layer = write_layer(&root, &dir.path().join("layer.tar")).unwrap();
        let on_disk = std::fs::read(&layer.path).unwrap();
        assert_eq!(layer.diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&on_disk))));

        let (id, stream) = image_archive(&ImageConfig::default(), &layer, &[]);
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        let tar = chunks.concat();
        let mut names = Vec::new();
        let mut config_hash = String::new();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name.ends_with(".json") && name != "manifest.json" {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
                config_hash = hex::encode(Sha256::digest(&body));
            }
            names.push(name);
        }
        assert_eq!(id, format!("sha256:{config_hash}"));
        assert!(names.contains(&"manifest.json".to_owned()));
        assert!(names.iter().any(|n| n.ends_with("/layer.tar")));
    }
}
