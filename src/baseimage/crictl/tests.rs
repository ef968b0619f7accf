use super::*;
use sha2::{Digest, Sha256};

/// The first bytes of a little-endian ELF file of type `e_type` for `e_machine`, padded.
fn elf(e_type: u16, e_machine: u16) -> Vec<u8> {
    let mut head = b"\x7fELF\x02\x01\x01".to_vec();
    head.resize(16, 0);
    head.extend(e_type.to_le_bytes());
    head.extend(e_machine.to_le_bytes());
    head.resize(64, 0);
    head
}

fn host_elf() -> Vec<u8> {
    let machine = match crate::platform::host_architecture() {
        "amd64" => 62,
        "arm64" => 183,
        "ppc64le" => 21,
        "s390x" => 22,
        _ => 62,
    };
    elf(2, machine)
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn quiet() -> Reporter {
    Reporter::with_terminal(crate::progress::Verbosity::Quiet, false)
}

#[test]
fn versions_come_from_upstreams_file_names() {
    let url = Crictl::release_url("v1.30.0", "amd64");
    assert_eq!(
        url,
        "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.30.0/crictl-v1.30.0-linux-amd64.tar.gz"
    );
    assert_eq!(Crictl::version_in_name(&url).as_deref(), Some("v1.30.0"));
    assert_eq!(
        Crictl::version_in_name("/tmp/crictl-v1.31.0-rc.1-linux-arm64.tar.gz").as_deref(),
        Some("v1.31.0-rc.1")
    );
    assert_eq!(Crictl::version_in_name("/usr/bin/crictl"), None);
    assert_eq!(Crictl::version_in_name("crictl-latest-linux-amd64.tar.gz"), None);
    assert!(is_version("v1.30.0") && !is_version("1.30.0") && !is_version("v1.30 0") && !is_version("v"));
}

#[test]
fn the_tarball_yields_its_crictl_only() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("crictl");
    let archive = tar_gz(&[("README.md", b"not me"), ("./crictl", b"the binary")]);
    assert!(extract_crictl(&archive[..], &dest).unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), b"the binary");

    let elsewhere = tar_gz(&[("bin/crictl", b"nested"), ("crictl.sig", b"x")]);
    assert!(!extract_crictl(&elsewhere[..], &dir.path().join("none")).unwrap());
    assert!(!dir.path().join("none").exists());
    assert!(extract_crictl(&b"not gzip"[..], &dest).is_err());
}

#[test]
fn only_elf_executables_for_this_machine_pass() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        path
    };
    assert!(check_elf(&write("ok", &host_elf()), "ok").is_ok());
    assert!(
        check_elf(
            &write("pie", &{
                let mut e = host_elf();
                e[16] = 3;
                e
            }),
            "pie"
        )
        .is_ok()
    );
    let script = check_elf(&write("script", b"#!/bin/sh\necho crictl\n"), "my-crictl").unwrap_err();
    assert_eq!(script.to_string(), "crictl my-crictl is not an ELF executable");
    let object = {
        let mut e = host_elf();
        e[16] = 1;
        e
    };
    assert!(check_elf(&write("object", &object), "object").is_err(), "a relocatable object");
    assert!(check_elf(&write("short", b"\x7fELF"), "short").is_err());
    let other = if crate::platform::host_architecture() == "s390x" { 62 } else { 22 };
    let err = check_elf(&write("other", &elf(2, other)), "other").unwrap_err().to_string();
    assert!(err.contains("is an ELF executable for"), "{err}");
}

#[tokio::test]
async fn a_file_is_checked_then_unpacked_when_it_is_a_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let binary = host_elf();
    let bare = dir.path().join("crictl");
    std::fs::write(&bare, &binary).unwrap();
    let crictl = Crictl { input: Input::File(bare.clone()), sha256: sha256(&binary), version: None };
    assert_eq!(prepare(&crictl, scratch.path(), &quiet()).await.unwrap(), bare);

    let tarball = tar_gz(&[("crictl", &binary)]);
    let path = dir.path().join("crictl-v1.30.0-linux-amd64.tar.gz");
    std::fs::write(&path, &tarball).unwrap();
    let crictl = Crictl { input: Input::File(path.clone()), sha256: sha256(&tarball), version: None };
    let out = prepare(&crictl, scratch.path(), &quiet()).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), binary);

    let wrong = Crictl { sha256: "0".repeat(64), ..crictl };
    let err = prepare(&wrong, scratch.path(), &quiet()).await.unwrap_err();
    let line = format!("{err:#}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains(&"0".repeat(64)) && line.contains(&sha256(&tarball)), "both digests: {line}");
}

#[test]
fn install_puts_it_in_usr_local_bin_executable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("crictl.bin");
    std::fs::write(&binary, host_elf()).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o600)).unwrap();
    let root = dir.path().join("root");
    install(&binary, &root).unwrap();
    let meta = std::fs::metadata(root.join("usr/local/bin/crictl")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn the_pin_table_has_a_release_per_arch() {
    let table = "# comment\nv1.26.1 amd64 0C1A0F9900C15EE7A55E757BCDC220FACA5DD2E1CFC120459AD1F04F08598127\n\
                 v1.26.1 arm64 short\n";
    let (version, sha) = pinned_in(table, "amd64").unwrap();
    assert_eq!((version.as_str(), &sha[..8]), ("v1.26.1", "0c1a0f99"));
    assert_eq!(pinned_in(table, "arm64"), None, "a malformed pin is no pin");
    assert_eq!(pinned_in(table, "s390x"), None);
    // The repo's own table, as embedded.
    let ours =
        String::from_utf8_lossy(crate::baseimage::assets::get("crictl-releases").contents).into_owned();
    for arch in ["amd64", "arm64"] {
        assert!(pinned_in(&ours, arch).is_some(), "a pinned crictl for {arch}");
    }
}
