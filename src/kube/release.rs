//! The Kubernetes server release layout (`kubernetes-server-linux-<arch>.tar.gz`, or that
//! tarball already extracted): which files a node image needs from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Artifacts, KubeVersion};
use crate::archive;

/// Binaries installed into the node's /usr/bin.
pub const BINARIES: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];
/// Control-plane images built with the release, as docker-save tars.
pub const IMAGES: [&str; 4] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"];

/// Where a file of the release goes in the scratch directory, and its mode.
fn wanted(path: &Path) -> Option<(PathBuf, u32)> {
    let rel = path.strip_prefix("kubernetes").ok()?;
    if rel == Path::new("version") {
        return Some(("version".into(), 0o644));
    }
    let name = rel.strip_prefix("server/bin").ok()?.to_str()?;
    if BINARIES.contains(&name) {
        return Some((PathBuf::from("bin").join(name), 0o755));
    }
    let image = name.strip_suffix(".tar").or_else(|| name.strip_suffix(".docker_tag"))?;
    IMAGES.contains(&image).then(|| (PathBuf::from("images").join(name), 0o644))
}

/// Extracts what a node image needs from a server tarball (gzip or plain tar) into `dest`,
/// refusing hostile entries, and reads the version.
pub fn from_tarball(tarball: &Path, dest: &Path, cancel: &crate::blocking::Cancel) -> Result<Artifacts> {
    let file = std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut reader = std::io::BufReader::new(cancel.reader(file));
    let gzipped = std::io::BufRead::fill_buf(&mut reader)?.starts_with(&[0x1f, 0x8b]);
    let result = if gzipped {
        archive::extract_selected(flate2::read::GzDecoder::new(reader), dest, wanted)
    } else {
        archive::extract_selected(reader, dest, wanted)
    };
    match result {
        Err(archive::ExtractError::Read(e)) => {
            let what = archive::plain_words(&e);
            bail!("reading {}: truncated or not a Kubernetes server tarball ({what})", tarball.display())
        }
        Err(err @ archive::ExtractError::Corrupt { .. }) => {
            bail!("reading {}: truncated or not a Kubernetes server tarball: {err}", tarball.display())
        }
        // A full disk or an unwritable build dir is the machine's problem, not the tarball's.
        Err(err @ archive::ExtractError::Write { .. }) => {
            return Err(err).with_context(|| format!("extracting {}", tarball.display()));
        }
        other => other.with_context(|| format!("reading {}", tarball.display()))?,
    };
    collect(dest).with_context(|| format!("in {}", tarball.display()))
}

/// Uses an extracted release directory (`kubernetes/` or the directory holding it) as it is.
pub fn from_directory(dir: &Path) -> Result<Artifacts> {
    let root = if dir.join("kubernetes/server").is_dir() { dir.join("kubernetes") } else { dir.to_owned() };
    let mut artifacts = Artifacts {
        binaries: BINARIES.iter().map(|b| root.join("server/bin").join(b)).collect(),
        image_tars: IMAGES.iter().map(|i| root.join("server/bin").join(format!("{i}.tar"))).collect(),
        version: KubeVersion::parse("v0.0.0").expect("literal"),
        components: None,
        provenance: Default::default(),
    };
    artifacts.version =
        read_version(&root.join("version"), &root.join("server/bin/kube-apiserver.docker_tag"))
            .with_context(|| format!("in {}", dir.display()))?;
    check_present(&artifacts).with_context(|| format!("in {}", dir.display()))?;
    Ok(artifacts)
}

fn collect(dest: &Path) -> Result<Artifacts> {
    let artifacts = Artifacts {
        binaries: BINARIES.iter().map(|b| dest.join("bin").join(b)).collect(),
        image_tars: IMAGES.iter().map(|i| dest.join("images").join(format!("{i}.tar"))).collect(),
        version: read_version(&dest.join("version"), &dest.join("images/kube-apiserver.docker_tag"))?,
        components: None,
        provenance: Default::default(),
    };
    check_present(&artifacts)?;
    Ok(artifacts)
}

fn check_present(artifacts: &Artifacts) -> Result<()> {
    for path in artifacts.binaries.iter().chain(&artifacts.image_tars) {
        if !path.is_file() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            bail!("the release has no {name} (expected kubernetes/server/bin/{name})");
        }
    }
    Ok(())
}

/// `kubernetes/version`, else the apiserver image's docker tag (releases before 1.31).
fn read_version(version_file: &Path, docker_tag: &Path) -> Result<KubeVersion> {
    let (source, text) = match std::fs::read_to_string(version_file) {
        Ok(text) => ("kubernetes/version", text),
        Err(_) => match std::fs::read_to_string(docker_tag) {
            Ok(text) => ("kube-apiserver.docker_tag", text),
            Err(_) => {
                bail!("the release has neither kubernetes/version nor server/bin/kube-apiserver.docker_tag")
            }
        },
    };
    KubeVersion::parse(&text).with_context(|| format!("reading the version from {source}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_binaries_images_and_version() {
        assert_eq!(wanted(Path::new("kubernetes/server/bin/kubelet")), Some(("bin/kubelet".into(), 0o755)));
        assert_eq!(
            wanted(Path::new("kubernetes/server/bin/kube-proxy.tar")),
            Some(("images/kube-proxy.tar".into(), 0o644))
        );
        assert_eq!(wanted(Path::new("kubernetes/version")), Some(("version".into(), 0o644)));
        assert_eq!(wanted(Path::new("kubernetes/server/bin/kube-apiserver")), None);
        assert_eq!(wanted(Path::new("kubernetes/server/bin/mounter")), None);
        assert_eq!(wanted(Path::new("other/server/bin/kubelet")), None);
    }

    #[test]
    fn version_falls_back_to_the_docker_tag() {
        let dir = tempfile::tempdir().unwrap();
        let tag = dir.path().join("tag");
        std::fs::write(&tag, "v1.30.2\n").unwrap();
        assert_eq!(read_version(&dir.path().join("none"), &tag).unwrap().text, "v1.30.2");
        std::fs::write(dir.path().join("version"), "garbage").unwrap();
        let err = read_version(&dir.path().join("version"), &tag).unwrap_err();
        assert!(format!("{err:#}").contains("\"garbage\""), "{err:#}");
    }
}
