//! `--config FILE`: image-source settings kept in a TOML file, so an air-gapped site writes
//! its mirrors once. Flags add to what the file says. Relative paths are relative to the
//! file.
//!
//! ```toml
//! registry_mirrors = ["registry.k8s.io=registry.internal:5000/k8s", "docker.io=registry.internal:5000/hub"]
//! node_registry_mirrors = ["docker.io=https://registry.internal:5000/hub"]
//! image_archives = ["bundle.tar"]
//! images_dirs = ["images"]
//! extra_images = ["docker.io/library/busybox:1.36"]
//! extra_images_files = ["extra-images.txt"]
//! offline = true
//! ```

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub registry_mirrors: Vec<String>,
    pub node_registry_mirrors: Vec<String>,
    pub image_archives: Vec<PathBuf>,
    pub images_dirs: Vec<PathBuf>,
    pub extra_images: Vec<String>,
    pub extra_images_files: Vec<PathBuf>,
    pub offline: bool,
}

const KEYS: [&str; 7] = [
    "registry_mirrors",
    "node_registry_mirrors",
    "image_archives",
    "images_dirs",
    "extra_images",
    "extra_images_files",
    "offline",
];

/// Reads the file; the error is one line naming the file and the key.
pub fn read(path: &Path) -> Result<FileConfig, String> {
    let at = |msg: String| format!("--config {}: {msg}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| at(e.message().to_owned()))?;
    if let Some((key, _)) = doc.iter().find(|(k, _)| !KEYS.contains(k)) {
        return Err(at(format!("unknown key {key:?} (known: {})", KEYS.join(", "))));
    }
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match doc.get(key) {
            None => Ok(Vec::new()),
            Some(item) => item
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| at(format!("{key} must be an array of strings"))),
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let paths = |key: &str| -> Result<Vec<PathBuf>, String> {
        Ok(strings(key)?.into_iter().map(|p| base.join(p)).collect())
    };
    let offline = match doc.get("offline") {
        None => false,
        Some(Item::Value(v)) if v.as_bool().is_some() => v.as_bool().unwrap_or_default(),
        Some(_) => return Err(at("offline must be true or false".into())),
    };
    Ok(FileConfig {
        registry_mirrors: strings("registry_mirrors")?,
        node_registry_mirrors: strings("node_registry_mirrors")?,
        image_archives: paths("image_archives")?,
        images_dirs: paths("images_dirs")?,
        extra_images: strings("extra_images")?,
        extra_images_files: paths("extra_images_files")?,
        offline,
    })
}

/// An images file: one reference per line; blank lines and `#` comments are skipped.
pub fn read_images_file(path: &Path) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--extra-images-file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key_with_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodeimg.toml");
        std::fs::write(
            &path,
            "registry_mirrors = [\"docker.io=m:5000/hub\"]\nimage_archives = [\"b.tar\"]\n\
             images_dirs = [\"/abs\"]\nextra_images = [\"busybox:1\"]\noffline = true\n",
        )
        .unwrap();
        let cfg = read(&path).unwrap();
        assert_eq!(cfg.registry_mirrors, vec!["docker.io=m:5000/hub"]);
        assert_eq!(cfg.image_archives, vec![dir.path().join("b.tar")]);
        assert_eq!(cfg.images_dirs, vec![PathBuf::from("/abs")]);
        assert_eq!(cfg.extra_images, vec!["busybox:1"]);
        assert!(cfg.offline && cfg.node_registry_mirrors.is_empty());
    }

    #[test]
    fn refuses_unknown_keys_wrong_types_and_bad_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for (text, needle) in [
            ("registry_mirror = []\n", "unknown key \"registry_mirror\""),
            ("registry_mirrors = \"a=b\"\n", "registry_mirrors must be an array of strings"),
            ("offline = \"yes\"\n", "offline must be true or false"),
            ("offline = \n", "c.toml"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read(&path).unwrap_err();
            assert!(err.contains(needle) && !err.contains('\n'), "{text:?}: {err}");
        }
    }

    #[test]
    fn images_files_skip_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.txt");
        std::fs::write(&path, "# preload\nbusybox:1.36\n\n  quay.io/x/y:2  # why\n").unwrap();
        assert_eq!(read_images_file(&path).unwrap(), vec!["busybox:1.36", "quay.io/x/y:2"]);
    }
}
