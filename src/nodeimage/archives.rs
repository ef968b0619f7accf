//! Image archives given with `--image-archive` / `--images-dir`: docker-save tars and OCI
//! layouts, plain or compressed (`.tar.gz`, `.tar.zst`, as `nodeimg save` writes them).
//! Indexed by walking each tar's headers once (seeking over the blobs of a plain tar,
//! streaming through a compressed one) and reading only its `manifest.json` or
//! `index.json`; image data is never held in memory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::archive::Compression;
use crate::reference::normalize;

/// What one archive holds: each image's canonical name, with the manifest digest (OCI) or
/// the config digest (docker-save) when the archive says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub path: PathBuf,
    pub images: BTreeMap<String, Option<String>>,
    /// OCI layout (imported with digest names, then tagged), else docker-save.
    pub oci: bool,
    /// Decompressed on the way into the node (ctr import takes plain tars).
    pub compression: Compression,
}

/// The archives to read: every file given, and every `*.tar`, `*.tar.gz` and `*.tar.zst` in
/// every directory given.
pub fn collect(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for file in files {
        if file.is_dir() {
            bail!(
                "--image-archive {} is a directory (--images-dir reads the archives in it)",
                file.display()
            );
        }
        if !file.is_file() {
            bail!("--image-archive {}: no such file", file.display());
        }
        all.push(file.clone());
    }
    for dir in dirs {
        let entries = std::fs::read_dir(dir).with_context(|| format!("--images-dir {}", dir.display()))?;
        let mut tars: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && crate::archive::Compression::from_name(p).is_some())
            .collect();
        tars.sort();
        all.extend(tars);
    }
    Ok(all)
}

pub fn index_all(paths: &[PathBuf]) -> Result<Vec<Archive>> {
    paths.iter().map(|p| index(p).with_context(|| format!("reading image archive {}", p.display()))).collect()
}

/// Streams through the tar once; stops at the first `manifest.json` naming images, else uses
/// `index.json`.
pub fn index(path: &Path) -> Result<Archive> {
    let compression = compression_of(path)?;
    let file = std::fs::File::open(path)?;
    if compression != Compression::None {
        let reader = crate::archive::reader(std::io::BufReader::new(file))?;
        return index_entries(path, compression, tar::Archive::new(reader).entries()?);
    }
    // Seeking past the layer blobs: indexing a multi-GB archive reads only its headers.
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    index_entries(path, compression, tar.entries_with_seek()?)
}

/// What the archive's first bytes say it is compressed with.
pub fn compression_of(path: &Path) -> Result<Compression> {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)?.read(&mut magic)?;
    Ok(Compression::from_magic(&magic[..n]))
}

fn index_entries<'a, R: Read + 'a>(
    path: &Path,
    compression: Compression,
    entries: tar::Entries<'a, R>,
) -> Result<Archive> {
    let mut oci_index = None;
    let mut cursor = crate::archive::Cursor::default();
    for entry in entries {
        let mut entry = cursor.next(entry).with_context(|| match compression {
            Compression::None => "not a readable tar archive".to_owned(),
            c => format!("not a readable {} tar archive", c.name()),
        })?;
        let name = entry.path().map_err(|e| cursor.at(&e))?.into_owned();
        let name = name.strip_prefix("./").unwrap_or(&name).to_owned();
        if name != Path::new("manifest.json") && name != Path::new("index.json") {
            continue;
        }
        let mut text = String::new();
        entry.by_ref().take(16 << 20).read_to_string(&mut text).map_err(|e| cursor.at(&e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", name.display()))?;
        if name == Path::new("manifest.json") {
            let images = docker_save_names(&json);
            if !images.is_empty() {
                return Ok(Archive { path: path.to_owned(), images, oci: false, compression });
            }
        } else {
            oci_index = Some(json);
        }
    }
    match oci_index {
        Some(index) => {
            Ok(Archive { path: path.to_owned(), images: oci_names(&index), oci: true, compression })
        }
        None => bail!("neither a docker-save archive (manifest.json) nor an OCI layout (index.json)"),
    }
}

fn docker_save_names(manifest: &serde_json::Value) -> BTreeMap<String, Option<String>> {
    let mut names = BTreeMap::new();
    for entry in manifest.as_array().into_iter().flatten() {
        let config = entry["Config"].as_str().and_then(super::images::config_digest);
        for tag in entry["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
            names.insert(normalize(tag), config.clone());
        }
    }
    names
}

/// Names from the annotations containerd and Docker write; a bare `ref.name` (a tag without
/// a repository) names nothing usable and is skipped.
fn oci_names(index: &serde_json::Value) -> BTreeMap<String, Option<String>> {
    let mut names = BTreeMap::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let annotations = &m["annotations"];
        let name = annotations["io.containerd.image.name"].as_str().or_else(|| {
            annotations["org.opencontainers.image.ref.name"].as_str().filter(|r| r.contains(['/', ':']))
        });
        if let Some(name) = name {
            names.insert(normalize(name), m["digest"].as_str().map(str::to_owned));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        let path = dir.join(format!("a{}.tar", files.len()));
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, content) in files {
            crate::archive::append_bytes(&mut builder, name, 0o644, content.as_bytes()).unwrap();
        }
        builder.finish().unwrap();
        path
    }

    #[test]
    fn docker_save_archives_name_their_tags_canonically() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = r#"[{"Config":"c","RepoTags":["etcd:3.5","registry.k8s.io/pause:3.9"],"Layers":[]},
                           {"Config":"d","RepoTags":["kindest/kindnetd:v1"],"Layers":[]}]"#;
        let tar = tar_with(dir.path(), &[("blobs/x", "data"), ("manifest.json", manifest)]);
        let archive = index(&tar).unwrap();
        assert!(!archive.oci);
        let names: Vec<_> = archive.images.keys().cloned().collect();
        assert_eq!(
            names,
            ["docker.io/kindest/kindnetd:v1", "docker.io/library/etcd:3.5", "registry.k8s.io/pause:3.9"]
        );
    }

    #[test]
    fn oci_layouts_name_images_by_annotation() {
        let dir = tempfile::tempdir().unwrap();
        let index_json = r#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:aa","annotations":{"io.containerd.image.name":"docker.io/library/busybox:1"}},
            {"digest":"sha256:bb","annotations":{"org.opencontainers.image.ref.name":"quay.io/x/y:2"}},
            {"digest":"sha256:cc","annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#;
        let tar = tar_with(dir.path(), &[("oci-layout", "{}"), ("index.json", index_json)]);
        let archive = index(&tar).unwrap();
        assert!(archive.oci);
        assert_eq!(archive.images.get("docker.io/library/busybox:1"), Some(&Some("sha256:aa".to_owned())));
        assert_eq!(archive.images.get("quay.io/x/y:2"), Some(&Some("sha256:bb".to_owned())));
        assert_eq!(archive.images.len(), 2);
    }

    #[test]
    fn other_tars_are_refused_and_dirs_list_their_archives() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(dir.path(), &[("hello.txt", "hi")]);
        assert!(index(&tar).unwrap_err().to_string().contains("neither a docker-save"));
        let gz = dir.path().join("x.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(format!("{:#}", index(&gz).unwrap_err()).contains("gzip"), "a broken gzip says so");
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(collect(&[], &[dir.path().to_owned()]).unwrap(), vec![tar, gz]);
        let err = collect(&[dir.path().join("nosuch.tar")], &[]).unwrap_err().to_string();
        assert!(err.contains("nosuch.tar"), "{err}");
        let err = collect(&[dir.path().to_owned()], &[]).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    /// `nodeimg save` and `images save` write .tar.gz/.tar.zst; `--image-archive` reads them.
    #[test]
    fn compressed_archives_are_indexed_by_streaming() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let manifest = r#"[{"Config":"c","RepoTags":["registry.k8s.io/pause:3.9"],"Layers":[]}]"#;
        let tar =
            std::fs::read(tar_with(dir.path(), &[("blobs/x", "data"), ("manifest.json", manifest)])).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let cases = [
            ("b.tar.gz", gz.finish().unwrap(), Compression::Gzip),
            ("b.tar.zst", zstd::encode_all(&tar[..], 3).unwrap(), Compression::Zstd),
        ];
        for (name, bytes, compression) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let archive = index(&path).unwrap();
            assert_eq!(archive.compression, compression);
            assert!(archive.images.contains_key("registry.k8s.io/pause:3.9"), "{name}");
        }
    }
}
