//! `nodeimg save`, `nodeimg load` and `build node-image --save` end to end, against the real
//! daemon, with small images made on the spot.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::fixtures;
use support::{Cleanup, assert_success};

/// A daemon address nothing listens on: a command that fails there did not need Docker.
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

struct Case {
    run_id: String,
    image: String,
    dir: tempfile::TempDir,
    _remove: Remove,
}

impl Case {
    /// A tiny busybox image under a name of this test's own.
    async fn new(name: &str) -> (Self, String) {
        let run_id = support::run_id(name);
        let image = format!("nodeimg-test/saveload-{}-{name}:v1", std::process::id());
        let case = Case {
            _remove: Remove(run_id.clone(), image.clone()),
            run_id,
            image,
            dir: tempfile::tempdir().unwrap(),
        };
        let docker = support::docker(&case.run_id).await;
        let root = fixtures::busybox_root(case.dir.path());
        let stream = nodeimg::archive::tar_stream(move |t| nodeimg::archive::append_rootfs(t, &root));
        let id = docker.import_rootfs(stream, vec![r#"CMD ["/bin/sh"]"#.into()]).await.unwrap();
        docker.tag_image(&id, &case.image).await.unwrap();
        std::fs::remove_dir_all(case.dir.path().join("busybox-root")).unwrap();
        (case, id)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn nodeimg(&self, args: &[&str]) -> Output {
        support::nodeimg().args(args).env("NODEIMG_RUN_ID", &self.run_id).output().unwrap()
    }

    fn save(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        let out = self.nodeimg(&["save", &self.image, "-o", path.to_str().unwrap()]);
        assert_success(&out, &format!("nodeimg save -o {name}"));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), path.to_str().unwrap());
        path
    }

    fn load(&self, path: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["load", "-i", path.to_str().unwrap()];
        args.extend(extra);
        self.nodeimg(&args)
    }

    async fn image_id(&self) -> Option<String> {
        support::docker(&self.run_id).await.inspect_image(&self.image).await.unwrap().map(|i| i.id)
    }

    async fn remove_image(&self) {
        support::docker(&self.run_id).await.remove_image(&self.image).await.unwrap();
        assert_eq!(self.image_id().await, None);
    }

    /// Files in the case's directory, sorted: nothing half-written may be among them.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The failure as the user sees it: exit 1 and exactly one `error:` line, returned.
fn one_line_error(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what} fails with exit 1:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line:\n{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{what}: the error comes last:\n{stderr}");
    errors[0].to_owned()
}

fn copy_prefix(from: &Path, to: &Path, len: usize) {
    let bytes = std::fs::read(from).unwrap();
    std::fs::write(to, &bytes[..len.min(bytes.len())]).unwrap();
}

#[test]
fn round_trips_keep_the_image_id_for_every_compression() {
    support::runtime().block_on(async {
        let (case, id) = Case::new("roundtrip").await;
        let _cleanup = Cleanup(case.run_id.clone());
        let magic: [(&str, &[u8]); 3] =
            [("node.tar", b""), ("node.tar.gz", &[0x1f, 0x8b]), ("node.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd])];
        for (name, magic) in magic {
            let path = case.save(name);
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(magic), "{name} is compressed by its extension");
            if magic.is_empty() {
                assert!(bytes[257..262] == *b"ustar", "{name} is a plain tar");
            }
            let check = std::process::Command::new("sha256sum")
                .args(["-c", &format!("{name}.sha256")])
                .current_dir(case.dir.path())
                .output()
                .unwrap();
            assert_success(&check, &format!("sha256sum -c {name}.sha256"));
            assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), format!("{name}: OK"));

            case.remove_image().await;
            let out = case.load(&path, &[]);
            assert_success(&out, &format!("nodeimg load -i {name}"));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), case.image);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("warning"), "the checksum was found:\n{stderr}");
            let shown = format!("{} ({})", case.image, nodeimg::docker::short_id(&id));
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
        let (case, _) = Case::new("truncated").await;
        let _cleanup = Cleanup(case.run_id.clone());
        let saved: Vec<PathBuf> =
            ["node.tar", "node.tar.gz", "node.tar.zst"].iter().map(|n| case.save(n)).collect();
        case.remove_image().await;
        for path in &saved {
            let name = path.file_name().unwrap().to_str().unwrap();
            let len = std::fs::metadata(path).unwrap().len() as usize;
            let cut = case.path(&format!("cut-{name}"));
            copy_prefix(path, &cut, len / 2);
            let error = one_line_error(&case.load(&cut, &[]), &format!("loading half of {name}"));
            let prefix = format!("error: loading {}: archive is truncated or corrupt (", cut.display());
            assert!(error.starts_with(&prefix), "{error}");
            assert_eq!(case.image_id().await, None, "nothing was loaded from half of {name}");

            // With the checksum file beside it, the checksum catches it first.
            std::fs::copy(case.path(&format!("{name}.sha256")), case.path(&format!("cut-{name}.sha256")))
                .unwrap();
            let error =
                one_line_error(&case.load(&cut, &[]), &format!("loading half of {name} with its checksum"));
            assert!(
                error.contains("checksum mismatch") && error.contains(&cut.display().to_string()),
                "{error}"
            );
        }
        let empty = case.path("empty.tar");
        std::fs::write(&empty, "").unwrap();
        let error = one_line_error(&case.load(&empty, &["--skip-checksum"]), "loading an empty file");
        assert!(error.contains("empty.tar: archive is truncated or corrupt"), "{error}");
        assert_eq!(case.image_id().await, None);
    });
}

#[test]
fn a_damaged_archive_fails_before_docker_sees_it() {
    support::runtime().block_on(async {
        let (case, _) = Case::new("damaged").await;
        let _cleanup = Cleanup(case.run_id.clone());
        let path = case.save("node.tar.gz");
        case.remove_image().await;
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        // The gzip trailer (CRC and length): the tar inside stays intact and complete.
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        // The checksum fails before Docker is reached at all.
        let out = support::nodeimg()
            .args(["load", "-i", path.to_str().unwrap()])
            .env("DOCKER_HOST", NO_DOCKER)
            .output()
            .unwrap();
        let error = one_line_error(&out, "loading a damaged archive");
        assert!(
            error.starts_with(&format!("error: loading {}: checksum mismatch", path.display())),
            "{error}"
        );
        assert!(error.contains("node.tar.gz.sha256"), "{error}");

        // Without the check, the gzip CRC fails it, and Docker must not have loaded the
        // complete tar it received before the trailer.
        let error =
            one_line_error(&case.load(&path, &["--skip-checksum"]), "loading a damaged archive unchecked");
        assert!(error.contains("archive is truncated or corrupt (gzip data:"), "{error}");
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
            let out = support::nodeimg().args(&args).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
            let error = one_line_error(&out, &args.join(" "));
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
    let image = format!("nodeimg-test/saveload-{}-absent:v1", std::process::id());
    let out = support::nodeimg().args(["save", &image, "-o", path.to_str().unwrap()]).output().unwrap();
    let error = one_line_error(&out, "saving an absent image");
    assert_eq!(error, format!("error: saving {image} to {}: no such image {image}", path.display()));
    let out = support::nodeimg().args(["load", "-i", path.to_str().unwrap()]).output().unwrap();
    let error = one_line_error(&out, "loading an absent file");
    assert!(error.starts_with(&format!("error: loading {}: opening", path.display())), "{error}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

/// Ctrl-C during a save of the (large) base image removes the part file.
#[test]
fn an_interrupted_save_removes_its_part_file() {
    let base = support::base_image();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.tar.gz");
    let mut child = support::nodeimg()
        .args(["save", &base, "-o", path.to_str().unwrap()])
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
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn build_node_image_save_writes_a_loadable_archive() {
    let run_id = support::run_id("build-save");
    let _cleanup = Cleanup(run_id.clone());
    let release = fixtures::server_tarball(&fixtures::Options::default());
    let base = support::base_image();
    let target = format!("nodeimg-test/saveload-{}-node:v1", std::process::id());
    let cache = tempfile::tempdir().unwrap();
    let path = release.dir.path().join("node.tar.zst");
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        fixtures::ensure_host_images(&docker).await;
        let out = support::nodeimg()
            .args(["build", "node-image", release.tarball.to_str().unwrap(), "-b", &base, "-i", &target])
            .args(["--save", path.to_str().unwrap()])
            .env("NODEIMG_RUN_ID", &run_id)
            .env("NODEIMG_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        let removed = Remove(run_id.clone(), target.clone());
        assert_success(&out, "build node-image --save");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), target);
        let built = docker.inspect_image(&target).await.unwrap().expect("the node image exists").id;
        let check = std::process::Command::new("sha256sum")
            .args(["-c", "node.tar.zst.sha256"])
            .current_dir(release.dir.path())
            .output()
            .unwrap();
        assert_success(&check, "sha256sum -c node.tar.zst.sha256");

        docker.remove_image(&target).await.unwrap();
        let out = support::nodeimg().args(["load", "-i", path.to_str().unwrap()]).output().unwrap();
        assert_success(&out, "load the saved node image");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), target);
        let loaded = docker.inspect_image(&target).await.unwrap().expect("loaded").id;
        assert_eq!(loaded, built, "the loaded node image is the built one");
        drop(removed);
    });
}

/// Removes an image when dropped, also after a failed assertion.
struct Remove(String, String);

impl Drop for Remove {
    fn drop(&mut self) {
        let (run_id, image) = (self.0.clone(), self.1.clone());
        std::thread::spawn(move || {
            support::runtime().block_on(async { support::docker(&run_id).await.remove_image(&image).await })
        })
        .join()
        .ok();
    }
}
