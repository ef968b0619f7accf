//! `base-image/` as embedded at compile time (see build.rs).

use sha2::{Digest, Sha256};

pub struct EmbeddedFile {
    /// Relative to `base-image/`, e.g. `files/usr/local/bin/entrypoint`.
    pub path: &'static str,
    pub mode: u32,
    pub contents: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/base_image_files.rs"));

pub fn get(path: &str) -> &'static EmbeddedFile {
    FILES.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("base-image/{path} is embedded"))
}

/// The files copied into the image, with their path in the image.
pub fn image_files() -> impl Iterator<Item = (&'static str, &'static EmbeddedFile)> {
    FILES.iter().filter_map(|f| f.path.strip_prefix("files/").map(|p| (p, f)))
}

/// The Debian packages the image installs (`base-image/packages`).
pub fn packages() -> Vec<&'static str> {
    std::str::from_utf8(get("packages").contents)
        .expect("base-image/packages is UTF-8")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// A hash of everything in `base-image/`: paths, modes and contents.
pub fn content_hash() -> String {
    let mut hash = Sha256::new();
    for f in FILES {
        hash.update(f.path.as_bytes());
        hash.update([0]);
        hash.update(f.mode.to_be_bytes());
        hash.update((f.contents.len() as u64).to_be_bytes());
        hash.update(f.contents);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entrypoint_is_embedded_executable() {
        let entry = get("files/usr/local/bin/entrypoint");
        assert_eq!(entry.mode, 0o755);
        assert!(entry.contents.starts_with(b"#!/bin/bash"));
        assert_eq!(get("files/etc/containerd/config.toml").mode, 0o644);
        assert!(image_files().any(|(p, _)| p == "etc/systemd/system/kubelet.service"));
    }

    #[test]
    fn packages_cover_what_a_node_needs() {
        let pkgs = packages();
        for needed in
            ["systemd", "containerd", "runc", "containernetworking-plugins", "iptables", "conntrack"]
        {
            assert!(pkgs.contains(&needed), "{needed} missing from base-image/packages");
        }
        assert!(pkgs.iter().all(|p| !p.contains(' ') && !p.starts_with('#')));
    }

    #[test]
    fn content_hash_is_stable_hex() {
        assert_eq!(content_hash(), content_hash());
        assert_eq!(content_hash().len(), 64);
    }
}
