//! Helpers of the tests that build for several architectures: releases served per arch,
//! files copied out of an image, ELF headers.

use std::path::Path;

use sha2::{Digest, Sha512};

use super::fixtures::VERSION;
use super::{RemoveImage, Run, docker_cli};

/// e_machine of an ELF header (little-endian: every arch here but s390x).
pub fn e_machine(header: &[u8]) -> u16 {
    assert_eq!(&header[..4], b"\x7fELF", "an ELF file");
    u16::from_le_bytes([header[18], header[19]])
}

/// `path` of the image's filesystem, copied out of a created (never started) container.
pub fn copy_out(run: &Run, image: &str, path: &str, dest: &Path) {
    let label = format!("{}={}", nodeimg::docker::LABEL_CONTAINER, run.run_id);
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

/// An amd64 and an arm64 fixture release served over HTTP as a release URL lays them out,
/// and an archive of the needed images per arch at `<run files>/<arch>/images.tar` (found
/// through `{arch}` in `--image-archive`). The arm64 release's kubelet and kubectl are a real
/// aarch64 executable: `arm64_base`'s /usr/bin/true.
pub struct TwoArches {
    pub server: super::fixtures::HttpServer,
    /// `--image-archive` with `{arch}`.
    pub archive: std::path::PathBuf,
    pub releases: [super::fixtures::Release; 2],
    _served: tempfile::TempDir,
}

impl TwoArches {
    pub fn serve(run: &Run, arm64_base: &str) -> Self {
        use super::fixtures::{Options, server_tarball};
        let arm_true = run.files.path().join("true");
        copy_out(run, arm64_base, "/usr/bin/true", &arm_true);
        let amd64 = server_tarball(&Options::default());
        let arm64 =
            server_tarball(&Options { arch: Some("arm64"), binary: Some(arm_true), ..Default::default() });
        for (arch, release) in [("amd64", &amd64), ("arm64", &arm64)] {
            std::fs::create_dir_all(run.files.path().join(arch)).unwrap();
            std::fs::copy(&release.images, run.files.path().join(arch).join("images.tar")).unwrap();
        }
        let served = tempfile::tempdir().unwrap();
        lay_out(served.path(), &[("amd64", &amd64.tarball), ("arm64", &arm64.tarball)]);
        let server = super::fixtures::HttpServer::serve(served.path());
        TwoArches {
            server,
            archive: run.files.path().join("{arch}/images.tar"),
            releases: [amd64, arm64],
            _served: served,
        }
    }
}

/// A kubelet stand-in for this machine's architecture, compiled here (gcc, static): it
/// answers `--version` with `Kubernetes VERSION` and otherwise writes a kubelet-style fatal
/// line and exits 1 at once, as a broken kubelet does under systemd.
pub fn broken_kubelet(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let source = dir.join("broken-kubelet.c");
    let binary = dir.join("kubelet");
    std::fs::write(
        &source,
        format!(
            "#include <stdio.h>\n#include <string.h>\nint main(int c, char **v) {{\n\
             if (c > 1 && strcmp(v[1], \"--version\") == 0) {{ puts(\"Kubernetes {version}\"); return 0; }}\n\
             fputs(\"F0101 00:00:00.000000 1 stand-in.go:1] broken kubelet: failing on purpose\\n\", stderr);\n\
             return 1; }}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    binary
}

/// A file with an aarch64 ELF header (e_machine 183) and nothing else: enough for an
/// architecture check, never run.
pub fn arm64_header(path: &std::path::Path) -> &std::path::Path {
    let mut header = b"\x7fELF\x02\x01\x01".to_vec();
    header.resize(18, 0);
    header.extend([183, 0]);
    header.resize(64, 0);
    std::fs::write(path, header).unwrap();
    path
}

/// Loads a busybox image whose config says `linux/<arch>`, tagged `name` if any; its removal (by
/// ID, with every name the test gave it) is the returned guard's. The run's label makes
/// the ID the run's own.
pub async fn arch_image(
    docker: &nodeimg::docker::Docker,
    run: &Run,
    arch: &str,
    name: Option<&str>,
) -> RemoveImage {
    let root = super::fixtures::busybox_root(&run.files.path().join(arch));
    let layer =
        nodeimg::archive::image::write_layer(&root, &run.files.path().join(format!("{arch}.tar"))).unwrap();
    let config = nodeimg::archive::image::ImageConfig {
        architecture: arch.into(),
        cmd: vec!["/bin/sh".into()],
        labels: [("io.nodeimg.test.run".to_owned(), run.unique.clone())].into(),
        ..Default::default()
    };
    let tags: Vec<String> = name.iter().map(|n| n.to_string()).collect();
    let (id, stream) = nodeimg::archive::image::image_archive(&config, &layer, &tags);
    let guard = RemoveImage(id);
    docker.load_image(stream).await.unwrap();
    let name = name.unwrap_or(&guard.0);
    assert!(docker.image_exists(name).await.unwrap(), "{name} was loaded");
    guard
}
