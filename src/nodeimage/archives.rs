//! Image archives given with `--image-archive` / `--images-dir`: docker-save tars and OCI
//! layouts. Indexed by walking each tar's headers once (seeking over the blobs) and reading
//! only its `manifest.json` or `index.json`; image data is never read or held in memory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::reference::normalize;

/// What one archive holds: each image's canonical name, with the manifest digest when the
/// archive (OCI) says it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archive {
    pub path: PathBuf,
    pub images: BTreeMap<String, Option<String>>,
    /// OCI layout (imported with digest names, then tagged), else docker-save.
    pub oci: bool,
}

/// The archives to read: every file given, and every `*.tar` in every directory given.
pub fn collect(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for file in files {
        if file.is_dir() {
            bail!("--image-archive {} is a directory (--images-dir reads its *.tar files)", file.display());
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
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "tar"))
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
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    match crate::transfer::Compression::from_magic(&magic[..n]) {
        crate::transfer::Compression::Gzip => {
            bail!("gzip-compressed; give the uncompressed tar (`gunzip` it)")
        }
        crate::transfer::Compression::Zstd => {
            bail!("zstd-compressed; give the uncompressed tar (`unzstd` it)")
        }
        crate::transfer::Compression::None => {}
    }
    let file = std::fs::File::open(path)?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let mut oci_index = None;
    // Seeking past the layer blobs: indexing a multi-GB archive reads only its headers.
    for entry in tar.entries_with_seek()? {
        let mut entry = entry.context("not a readable tar archive")?;
        let name = entry.path()?.into_owned();
        let name = name.strip_prefix("./").unwrap_or(&name).to_owned();
        if name != Path::new("manifest.json") && name != Path::new("index.json") {
            continue;
        }
        let mut text = String::new();
        entry.by_ref().take(16 << 20).read_to_string(&mut text)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", name.display()))?;
        if name == Path::new("manifest.json") {
            let images = docker_save_names(&json);
            if !images.is_empty() {
                return Ok(Archive { path: path.to_owned(), images, oci: false });
            }
        } else {
            oci_index = Some(json);
        }
    }
    match oci_index {
        Some(index) => Ok(Archive { path: path.to_owned(), images: oci_names(&index), oci: true }),
        None => bail!("neither a docker-save archive (manifest.json) nor an OCI layout (index.json)"),
    }
}

fn docker_save_names(manifest: &serde_json::Value) -> BTreeMap<String, Option<String>> {
    let entries = manifest.as_array().into_iter().flatten();
    let tags = entries.flat_map(|e| e["RepoTags"].as_array().into_iter().flatten());
    tags.filter_map(|t| t.as_str()).map(|t| (normalize(t), None)).collect()
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
    fn other_tars_are_refused_and_dirs_list_their_tars() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(dir.path(), &[("hello.txt", "hi")]);
        assert!(index(&tar).unwrap_err().to_string().contains("neither a docker-save"));
        let gz = dir.path().join("x.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(index(&gz).unwrap_err().to_string().contains("gzip-compressed"));
        let zst = dir.path().join("bundle.tar.zst");
        std::fs::write(&zst, [0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap();
        assert!(index(&zst).unwrap_err().to_string().contains("zstd-compressed"));
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(collect(&[], &[dir.path().to_owned()]).unwrap(), vec![tar]);
        let err = collect(&[dir.path().join("nosuch.tar")], &[]).unwrap_err().to_string();
        assert!(err.contains("nosuch.tar"), "{err}");
        let err = collect(&[dir.path().to_owned()], &[]).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }
}
