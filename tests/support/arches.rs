//! Helpers of the tests that build for several architectures: releases served per arch,
//! files copied out of an image, ELF headers.

use std::path::Path;

use sha2::{Digest, Sha512};

use super::fixtures::VERSION;
use super::{Run, docker_cli};

/// e_machine of an ELF header (little-endian: every arch here but s390x).
pub fn e_machine(header: &[u8]) -> u16 {
    assert_eq!(&header[..4], b"\x7fELF", "an ELF file");
    u16::from_le_bytes([header[18], header[19]])
}

/// `path` of the image's filesystem, copied out of a created (never started) container.
pub fn copy_out(run: &Run, image: &str, path: &str, dest: &Path) {
    let label = format!("{}={}", nodeimg::docker::LABEL_BUILD, run.run_id);
    let id = docker_cli(&["create", "--label", &label, image, "true"]).trim().to_owned();
    docker_cli(&["cp", &format!("{id}:{path}"), dest.to_str().unwrap()]);
    docker_cli(&["rm", &id]);
}

/// `<root>/<version>/kubernetes-server-linux-<arch>.tar.gz` (+ .sha512) for each release.
pub fn lay_out(root: &Path, releases: &[(&str, &Path)]) {
    let dir = root.join(VERSION);
    std::fs::create_dir_all(&dir).unwrap();
    for (arch, tarball) in releases {
        let name = format!("kubernetes-server-linux-{arch}.tar.gz");
        std::fs::copy(tarball, dir.join(&name)).unwrap();
        let sum = hex::encode(Sha512::digest(std::fs::read(dir.join(&name)).unwrap()));
        std::fs::write(dir.join(format!("{name}.sha512")), format!("{sum}  {name}\n")).unwrap();
    }
}
