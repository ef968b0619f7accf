//! Bad input ends with one clear line naming the problem, a non-zero exit, and nothing left
//! in Docker.

mod support;

use std::process::Output;

use support::{COMMAND_LIMIT, Run, assert_one_error_line, output_within};

/// `nodeimg ARGS` of a new run, with `envs`: a small command, bounded by [`COMMAND_LIMIT`].
fn nodeimg(name: &str, args: &[&str], envs: &[(&str, &str)]) -> (Run, Output) {
    let run = Run::new(name);
    let out = output_within(run.command(args).envs(envs.iter().copied()), COMMAND_LIMIT);
    (run, out)
}

#[test]
fn unknown_suite_is_named() {
    let (run, out) = nodeimg("suite", &["build", "base-image", "--suite", "nosuch"], &[]);
    let line = run.assert_failed(&out, "\"nosuch\"");
    assert!(line.contains("not found on mirror"), "{line}");
}

#[test]
fn unreachable_mirror_is_named() {
    // --rebuild: a cached image from the same inputs is reused without asking any mirror.
    let (run, out) =
        nodeimg("mirror", &["build", "base-image", "--mirror", "http://127.0.0.1:9/", "--rebuild"], &[]);
    let line = run.assert_failed(&out, "http://127.0.0.1:9");
    assert!(line.contains("unreachable"), "{line}");
}

#[test]
fn unreachable_daemon_is_named() {
    let dead = [("DOCKER_HOST", "unix:///nonexistent")];
    let (run, out) = nodeimg("daemon", &["build", "base-image"], &dead);
    let line = run.assert_failed(&out, "unix:///nonexistent");
    assert!(line.contains("cannot reach the Docker daemon"), "{line}");
}

#[test]
fn invalid_flags_fail_before_touching_docker() {
    // A dead daemon proves validation comes first: the error is about the flag, not Docker.
    let dead = [("DOCKER_HOST", "unix:///nonexistent")];
    let (_, out) = nodeimg("flags", &["build", "base-image", "-i", "Not/Valid"], &dead);
    assert_one_error_line(&out, "\"Not/Valid\"");
    let (_, out) =
        nodeimg("flags", &["build", "base-image", "--from", "dockerfile", "--suite", "trixie"], &dead);
    assert_one_error_line(&out, "--suite");
}

/// Damaged tarballs: the error is one printable line naming the file, with no byte of the
/// input in it (the tar crate quotes a bad header's bytes in its own messages).
#[test]
fn corrupt_tarballs_fail_in_one_printable_line() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    };
    let noise = random(64 * 1024);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &random(64 * 1024)).unwrap();
    let gzip_of_noise = gz.finish().unwrap();
    let tar_of = |name: &[u8]| {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(4);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend(b"data");
        tar.resize(512 * 4, 0);
        tar
    };
    let non_utf8_name = tar_of(b"kubernetes/\xff\xfe\x1b[31m");
    let mut bad_checksum = tar_of(b"kubernetes/server/bin/kubeadm");
    bad_checksum[148..156].copy_from_slice(b"0000017\0");
    let corpus: [(&str, &[u8]); 4] = [
        ("random-bytes", &noise),
        ("gzip-of-random", &gzip_of_noise),
        ("non-utf8-name", &non_utf8_name),
        ("bad-checksum", &bad_checksum),
    ];
    // The same bytes as an --image-archive beside a good release: read by another reader.
    let release = support::fixtures::server_tarball(&Default::default());
    for (name, bytes) in corpus {
        let run = Run::new("corrupt-images");
        let file = run.files.path().join(format!("{name}-images.tar"));
        std::fs::write(&file, bytes).unwrap();
        let file_name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let args = [&release.build_args()[..], &["--image-archive", file.to_str().unwrap()]].concat();
        let line = run.assert_failed(&run.build(&args), &file_name);
        assert!(
            line.chars().all(|c| !c.is_control() && c != char::REPLACEMENT_CHARACTER),
            "{name} as --image-archive: the error line is printable: {line:?}"
        );
        assert!(!line.contains("\\u{") && !line.contains("\\x"), "{name}: no escaped input bytes: {line}");
        eprintln!("{name} as --image-archive: {line}");
    }
    for (name, bytes) in corpus {
        let run = Run::new("corrupt");
        let file = run.files.path().join(format!("{name}-kubernetes-server-linux-amd64.tar.gz"));
        std::fs::write(&file, bytes).unwrap();
        let file_name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let line = run.assert_failed(&run.build(&[file.to_str().unwrap()]), &file_name);
        assert!(
            line.chars().all(|c| !c.is_control() && c != char::REPLACEMENT_CHARACTER),
            "{name}: the error line is printable: {line:?}"
        );
        assert!(!line.contains("\\u{") && !line.contains("\\x"), "{name}: no escaped input bytes: {line}");
        eprintln!("{name}: {line}");
    }
}
