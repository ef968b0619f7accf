//! `nodeimg build node-image` from a Kubernetes source tree (a fixture repository whose
//! Makefile writes upstream's output layout): -k checkout, clone into the cache and reuse,
//! dirty trees, host mode, and the safety rules around a user's work tree.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{Cleanup, assert_success, fixtures, kubetree};

const COMPONENT_BASE: &str = "nodeimg-test/component-base:1";

/// A fixture tree in a temp dir.
fn tree(fail_target: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let root = fixtures::busybox_root(scratch.path());
    let layer = nodeimg::archive::image::write_layer(&root, &scratch.path().join("layer.tar")).unwrap();
    kubetree::create(dir.path(), fail_target, |tag, dest| fixtures::write_image_tar(&layer, tag, dest));
    dir
}

struct Run {
    run_id: String,
    target: String,
    tmp: tempfile::TempDir,
    cache: tempfile::TempDir,
    /// An empty GOPATH and working directory, so only the flags choose the tree.
    nowhere: tempfile::TempDir,
}

impl Run {
    fn new(name: &str) -> Self {
        Run {
            run_id: support::run_id(name),
            target: format!("nodeimg-test/node:src-{name}-{}", std::process::id()),
            tmp: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            nowhere: tempfile::tempdir().unwrap(),
        }
    }

    fn build(&self, args: &[&str]) -> Output {
        let base = support::base_image();
        support::runtime().block_on(async {
            let docker = support::docker(&self.run_id).await;
            fixtures::ensure_host_images(&docker).await;
            ensure_component_base(&docker).await;
        });
        support::nodeimg()
            .args(["build", "node-image", "-b", &base, "-i", &self.target])
            .args(args)
            .current_dir(self.nowhere.path())
            .env("GOPATH", self.nowhere.path())
            .env("NODEIMG_RUN_ID", &self.run_id)
            .env("TMPDIR", self.tmp.path())
            .env("NODEIMG_CACHE_DIR", self.cache.path())
            .output()
            .unwrap()
    }

    /// The built image's Kubernetes version label; removes the image.
    fn built_version(&self) -> String {
        support::runtime().block_on(async {
            let docker = support::docker(&self.run_id).await;
            let info = docker.inspect_image(&self.target).await.unwrap().expect("the node image exists");
            docker.remove_image(&self.target).await.unwrap();
            assert!(
                docker.list_containers(Some(&self.run_id)).await.unwrap().is_empty(),
                "no container left"
            );
            info.labels["io.nodeimg.kubernetes.version"].clone()
        })
    }

    fn assert_failed(&self, out: &Output, needle: &str) -> String {
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "error names {needle:?}: {}", errors[0]);
        support::runtime().block_on(async {
            let docker = support::docker(&self.run_id).await;
            assert!(
                docker.list_containers(Some(&self.run_id)).await.unwrap().is_empty(),
                "no container left"
            );
            assert!(!docker.image_exists(&self.target).await.unwrap(), "no image under the target tag");
        });
        errors[0].to_owned()
    }
}

async fn ensure_component_base(docker: &nodeimg::docker::Docker) {
    if docker.image_exists(COMPONENT_BASE).await.unwrap() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fixtures::busybox_root(dir.path());
    let stream = nodeimg::archive::tar_stream(move |t| nodeimg::archive::append_rootfs(t, &root));
    let id = docker.import_rootfs(stream, Vec::new()).await.unwrap();
    docker.tag_image(&id, COMPONENT_BASE).await.unwrap();
}

/// Every file of a work tree (outside .git) with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.file_name() == Some(".git".as_ref()) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn k_clones_into_the_cache_checks_out_and_reuses_the_clone() {
    let origin = tree(false);
    let url = format!("file://{}", origin.path().display());
    let run = Run::new("clone");
    let _cleanup = Cleanup(run.run_id.clone());
    let out = run.build(&["-k", "v1.30.0", "--kube-repo", &url]);
    assert_success(&out, "build -k v1.30.0 from a fresh clone");
    assert_eq!(run.built_version(), "v1.30.0", "the older tag was checked out, not HEAD");
    let clone = run.cache.path().join("kubernetes");
    assert!(clone.join("go.mod").is_file(), "cloned into the cache");
    let marker = clone.join(".git/nodeimg-test-marker");
    std::fs::write(&marker, "").unwrap();

    let out = run.build(&["-k", "v1.30.1", "--kube-repo", &url]);
    assert_success(&out, "build -k v1.30.1 reusing the clone");
    assert_eq!(run.built_version(), "v1.30.1");
    assert!(marker.exists(), "the second run reused the clone");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cloning"), "no second clone");
}

#[test]
fn dirty_tree_without_k_builds_as_it_is_in_host_mode() {
    let tree = tree(false);
    std::fs::write(tree.path().join("CHANGELOG"), "my unfinished work\n").unwrap();
    let run = Run::new("dirty");
    let _cleanup = Cleanup(run.run_id.clone());
    let root = tree.path().to_str().unwrap();
    // An image the user has under the name upstream gives the apiserver image: a host-mode
    // build must not untag it (nor save it instead of its own).
    let users = "registry.k8s.io/kube-apiserver:v1.30.1-dirty";
    let _untag = Untag(users);
    let users_id = support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        ensure_component_base(&docker).await;
        let id = docker.inspect_image(COMPONENT_BASE).await.unwrap().unwrap().id;
        docker.tag_image(&id, users).await.unwrap();
        id
    });
    let out =
        run.build(&["--kube-root", root, "--build-mode", "host", "--component-base-image", COMPONENT_BASE]);
    assert_success(&out, "host-mode build of a dirty tree");
    assert_eq!(run.built_version(), "v1.30.1-dirty");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let now = docker.inspect_image(users).await.unwrap().map(|i| i.id);
        assert_eq!(now.as_deref(), Some(users_id.as_str()), "the user's {users} was untagged or replaced");
        let temp = docker.list_tags("nodeimg-tmp/*", "nodeimg-tmp/").await.unwrap();
        assert!(temp.is_empty(), "temporary component tags left: {temp:?}");
    });
    assert_eq!(std::fs::read_to_string(tree.path().join("CHANGELOG")).unwrap(), "my unfinished work\n");
    assert!(tree.path().join("_output/nodeimg-build.log").is_file(), "the build log is kept in _output");
}

#[test]
fn k_on_a_dirty_tree_is_refused_and_nothing_changes() {
    let tree = tree(false);
    std::fs::write(tree.path().join("CHANGELOG"), "my unfinished work\n").unwrap();
    std::fs::write(tree.path().join("new.go"), "package main\n").unwrap();
    let before = snapshot(tree.path());
    let head = git2::Repository::open(tree.path()).unwrap().head().unwrap().target();
    let run = Run::new("refuse");
    let out = run.build(&["-k", "v1.30.0", "--kube-root", tree.path().to_str().unwrap()]);
    let line = run.assert_failed(&out, "uncommitted changes");
    assert!(line.contains("CHANGELOG") && line.contains("drop -k"), "{line}");
    assert_eq!(snapshot(tree.path()), before, "every file is byte-identical");
    assert_eq!(git2::Repository::open(tree.path()).unwrap().head().unwrap().target(), head);
}

#[test]
fn unknown_tag_is_named() {
    let tree = tree(false);
    let run = Run::new("notag");
    let out = run.build(&["-k", "v9.9.9", "--kube-root", tree.path().to_str().unwrap()]);
    run.assert_failed(&out, "v9.9.9");
}

#[test]
fn a_directory_that_is_not_kubernetes_is_named() {
    let run = Run::new("notk8s");
    let other = tempfile::tempdir().unwrap();
    let out = run.build(&["--kube-root", other.path().to_str().unwrap()]);
    run.assert_failed(&out, "is not a Kubernetes tree");
}

#[test]
fn a_failing_make_target_shows_the_log() {
    let tree = tree(true);
    let run = Run::new("makefail");
    let out = run.build(&["--kube-root", tree.path().to_str().unwrap(), "--build-mode", "host"]);
    let line = run.assert_failed(&out, "make all failed");
    let log = tree.path().join("_output/nodeimg-build.log");
    assert!(line.contains(log.to_str().unwrap()), "the log path is shown: {line}");
    assert!(line.contains("boom: target all failed on purpose"), "the last lines are shown: {line}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("boom"));
}

/// Removes a tag the test put on an existing image, also when an assertion failed first.
struct Untag(&'static str);

impl Drop for Untag {
    fn drop(&mut self) {
        let tag = self.0;
        std::thread::spawn(move || {
            support::runtime().block_on(async {
                let docker = support::docker("untag").await;
                docker.remove_image(tag).await.ok();
            })
        })
        .join()
        .ok();
    }
}
