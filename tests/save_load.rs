//! `nodeimg save`, `nodeimg load` and `build node-image --save` end to end, against the real
//! daemon, with small images made on the spot.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::fixtures::{self, TestImage};
use support::{COMMAND_LIMIT, Run, assert_one_error_line, assert_success, output_within};

/// A daemon address nothing listens on: a command that fails there did not need Docker.
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

struct Case {
    run: Run,
    image: TestImage,
    /// Only what save writes: nothing half-written may be among it.
    dir: tempfile::TempDir,
}

impl Case {
    /// A tiny busybox image under a name of this test's own.
    async fn new(name: &str) -> Self {
        let run = Run::new(name);
        let docker = support::docker(&run.run_id).await;
        let image =
            fixtures::busybox_image(&docker, &format!("nodeimg-test/saveload-{name}:{}", run.unique)).await;
        Case { run, image, dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn save(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        let out = self.run.output(&["save", &self.image.name, "-o", path.to_str().unwrap()]);
        assert_success(&out, &format!("nodeimg save -o {name}"));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), path.to_str().unwrap());
        path
    }

    fn load(&self, path: &Path, extra: &[&str]) -> Output {
        self.run.output(&[&["load", "--input", path.to_str().unwrap()][..], extra].concat())
    }

    async fn image_id(&self) -> Option<String> {
        let docker = support::docker(&self.run.run_id).await;
        docker.inspect_image(&self.image.name).await.unwrap().map(|i| i.id)
    }

    async fn remove_image(&self) {
        support::docker(&self.run.run_id).await.remove_image(&self.image.name).await.unwrap();
        assert_eq!(self.image_id().await, None);
    }

    /// Files in the case's directory, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// `sha256sum -c NAME.sha256` in `dir`.
fn sha256sum_check(dir: &Path, name: &str) -> Output {
    let mut cmd = Command::new("sha256sum");
    cmd.args(["-c", &format!("{name}.sha256")]).current_dir(dir);
    let out = output_within(&mut cmd, COMMAND_LIMIT);
    assert_success(&out, &format!("sha256sum -c {name}.sha256"));
    out
}

fn copy_prefix(from: &Path, to: &Path, len: usize) {
    let bytes = std::fs::read(from).unwrap();
    std::fs::write(to, &bytes[..len.min(bytes.len())]).unwrap();
}

#[test]
fn round_trips_keep_the_image_id_for_every_compression() {
    support::runtime().block_on(async {
        let case = Case::new("roundtrip").await;
        let id = case.image.id.clone();
        let magic: [(&str, &[u8]); 3] =
            [("node.tar", b""), ("node.tar.gz", &[0x1f, 0x8b]), ("node.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd])];
        for (name, magic) in magic {
            let path = case.save(name);
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(magic), "{name} is compressed by its extension");
            if magic.is_empty() {
                assert!(bytes[257..262] == *b"ustar", "{name} is a plain tar");
            }
            let check = sha256sum_check(case.dir.path(), name);
            assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), format!("{name}: OK"));

            case.remove_image().await;
            let out = case.load(&path, &[]);
            assert_success(&out, &format!("nodeimg load -i {name}"));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), case.image.name);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("warning"), "the checksum was found:\n{stderr}");
            let shown = format!("{} ({})", case.image.name, nodeimg::docker::short_id(&id));
            assert!(stderr.contains(&shown), "the ID is shown:\n{stderr}");
            assert_eq!(case.image_id().await.as_deref(), Some(id.as_str()), "{name} keeps the image ID");
        }
        assert_eq!(
            case.files(),
            [
                "node.tar",
                "node.tar.gz",
                "node.tar.gz.sha256",
                "node.tar.sha256",
                "node.tar.zst",
                "node.tar.zst.sha256"
            ],
            "no part files left"
        );

        // A `docker save` archive has no checksum file: a warning, and it loads.
        std::fs::remove_file(case.path("node.tar.zst.sha256")).unwrap();
        case.remove_image().await;
        let out = case.load(&case.path("node.tar.zst"), &[]);
        assert_success(&out, "nodeimg load without a checksum file");
        let warnings: Vec<_> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("warning:"))
            .map(str::to_owned)
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("node.tar.zst.sha256 not found"), "{warnings:?}");
        assert_eq!(case.image_id().await.as_deref(), Some(id.as_str()));
    });
}

#[test]
fn truncated_archives_fail_with_one_line_and_load_nothing() {
    support::runtime().block_on(async {
        let case = Case::new("truncated").await;
        let saved: Vec<PathBuf> =
            ["node.tar", "node.tar.gz", "node.tar.zst"].iter().map(|n| case.save(n)).collect();
        case.remove_image().await;
        for path in &saved {
            let name = path.file_name().unwrap().to_str().unwrap();
            let len = std::fs::metadata(path).unwrap().len() as usize;
            let cut = case.path(&format!("cut-{name}"));
            copy_prefix(path, &cut, len / 2);
            let error = assert_one_error_line(&case.load(&cut, &[]), &cut.display().to_string());
            let prefix = format!("error: loading {}: archive is truncated or corrupt (", cut.display());
            assert!(error.starts_with(&prefix), "{error}");
            assert_eq!(case.image_id().await, None, "nothing was loaded from half of {name}");

            // With the checksum file beside it, the checksum catches it first.
            std::fs::copy(case.path(&format!("{name}.sha256")), case.path(&format!("cut-{name}.sha256")))
                .unwrap();
            let error = assert_one_error_line(&case.load(&cut, &[]), "checksum mismatch");
            assert!(error.contains(&cut.display().to_string()), "{error}");
        }
        let empty = case.path("empty.tar");
        std::fs::write(&empty, "").unwrap();
        let error = assert_one_error_line(&case.load(&empty, &["--skip-checksums"]), "empty.tar");
        assert!(error.contains("empty.tar: archive is truncated or corrupt"), "{error}");
        assert_eq!(case.image_id().await, None);
    });
}

#[test]
fn a_damaged_archive_fails_before_docker_sees_it() {
    support::runtime().block_on(async {
        let case = Case::new("damaged").await;
        let path = case.save("node.tar.gz");
        case.remove_image().await;
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        // The gzip trailer (CRC and length): the tar inside stays intact and complete.
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        // The checksum fails before Docker is reached at all.
        let mut load = support::nodeimg();
        load.args(["load", "--input", path.to_str().unwrap()]).env("DOCKER_HOST", NO_DOCKER);
        let error = assert_one_error_line(&output_within(&mut load, COMMAND_LIMIT), "node.tar.gz.sha256");
        assert!(
            error.starts_with(&format!("error: loading {}: checksum mismatch", path.display())),
            "{error}"
        );

        // Without the check, the gzip CRC fails it, and Docker must not have loaded the
        // complete tar it received before the trailer.
        let out = case.load(&path, &["--skip-checksums"]);
        assert_one_error_line(&out, "archive is truncated or corrupt (gzip data:");
        assert_eq!(case.image_id().await, None, "nothing was loaded");
    });
}

#[test]
fn bad_names_fail_before_docker() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["node.tgz", "node.tar.xz", "node"] {
        let path = dir.path().join(name);
        for args in [
            vec!["save", "nodeimg-test/any:v1", "-o", path.to_str().unwrap()],
            vec!["build", "node-image", "v1.30.0", "--save", path.to_str().unwrap()],
        ] {
            let mut cmd = support::nodeimg();
            let out = output_within(cmd.args(&args).env("DOCKER_HOST", NO_DOCKER), COMMAND_LIMIT);
            let error = assert_one_error_line(&out, name);
            assert_eq!(
                error,
                format!(
                    "error: cannot save to {:?}: the name must end in .tar, .tar.gz or .tar.zst",
                    path.display().to_string()
                )
            );
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

#[test]
fn a_failed_save_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.tar.gz");
    let run = Run::new("absent");
    let image = format!("nodeimg-test/saveload-absent:{}", run.unique);
    let out = run.output(&["save", &image, "-o", path.to_str().unwrap()]);
    let error = assert_one_error_line(&out, &image);
    assert_eq!(error, format!("error: saving {image} to {}: no such image {image}", path.display()));
    let out = run.output(&["load", "--input", path.to_str().unwrap()]);
    let error = assert_one_error_line(&out, path.to_str().unwrap());
    assert!(error.starts_with(&format!("error: loading {}: opening", path.display())), "{error}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

/// Ctrl-C during a save of the (large) base image removes the part file.
#[test]
fn an_interrupted_save_removes_its_part_file() {
    let base = support::base_image();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.tar.gz");
    let run = Run::new("interrupted");
    let mut child = run
        .command(&["save", &base, "-o", path.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let part = dir.path().join(format!("base.tar.gz.part-{}", child.id()));
    let start = std::time::Instant::now();
    while !part.exists() || std::fs::metadata(&part).unwrap().len() == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "the save never started writing");
        assert!(child.try_wait().unwrap().is_none(), "the save ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = support::wait_within(child, "nodeimg save after SIGINT", COMMAND_LIMIT);
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn build_node_image_save_writes_a_loadable_archive() {
    let run = Run::new("build-save");
    let release = fixtures::server_tarball(&fixtures::Options::default());
    let path = release.dir.path().join("node.tar.zst");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let out = run.build(&[&release.build_args()[..], &["--save", path.to_str().unwrap()]].concat());
        assert_success(&out, "build node-image --save");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), run.target);
        let built = docker.inspect_image(&run.target).await.unwrap().expect("the node image exists").id;
        sha256sum_check(release.dir.path(), "node.tar.zst");

        docker.remove_image(&run.target).await.unwrap();
        let out = run.output(&["load", "--input", path.to_str().unwrap()]);
        assert_success(&out, "load the saved node image");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), run.target);
        let loaded = docker.inspect_image(&run.target).await.unwrap().expect("loaded").id;
        assert_eq!(loaded, built, "the loaded node image is the built one");
        run.assert_clean();
    });
}
