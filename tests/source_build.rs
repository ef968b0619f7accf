//! `nodeimg build node-image` from a Kubernetes source tree (a fixture repository whose
//! Makefile writes upstream's output layout): -k checkout, clone into the cache and reuse,
//! dirty trees, host mode, and the safety rules around a user's work tree.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::kubetree::{SourceRun, tree};
use support::{assert_success, fixtures};

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
    let run = SourceRun::new("clone");
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
    let run = SourceRun::new("dirty");
    let component_base = format!("nodeimg-test/component-base:{}", run.unique);
    let component_image = support::block_on(async {
        fixtures::busybox_image(&support::docker(&run.run_id).await, &component_base).await
    });
    let root = tree.path().to_str().unwrap();
    // An image the user has under the name upstream gives the apiserver image: a host-mode
    // build must not untag it (nor save it instead of its own).
    let users = "registry.k8s.io/kube-apiserver:v1.30.1-dirty";
    let _untag = support::RemoveImage(users.to_owned());
    let users_id = component_image.id.clone();
    support::block_on(async {
        support::docker(&run.run_id).await.tag_image(&users_id, users).await.unwrap();
    });
    let out =
        run.build(&["--kube-root", root, "--build-mode", "host", "--component-base-image", &component_base]);
    assert_success(&out, "host-mode build of a dirty tree");
    // busybox has no iptables: kube-proxy's image is left as it is, and one line says so.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("note: the kube-proxy base image has no iptables").count(), 1, "{stderr}");
    assert_eq!(run.built_version(), "v1.30.1-dirty");
    support::block_on(async {
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
    let run = SourceRun::new("refuse");
    let out = run.build(&["-k", "v1.30.0", "--kube-root", tree.path().to_str().unwrap()]);
    let line = run.assert_failed(&out, "uncommitted changes");
    assert!(line.contains("CHANGELOG") && line.contains("drop -k"), "{line}");
    assert_eq!(snapshot(tree.path()), before, "every file is byte-identical");
    assert_eq!(git2::Repository::open(tree.path()).unwrap().head().unwrap().target(), head);
}

#[test]
fn unknown_tag_is_named() {
    let tree = tree(false);
    let run = SourceRun::new("notag");
    let out = run.build(&["-k", "v9.9.9", "--kube-root", tree.path().to_str().unwrap()]);
    run.assert_failed(&out, "v9.9.9");
}

#[test]
fn a_directory_that_is_not_kubernetes_is_named() {
    let run = SourceRun::new("notk8s");
    let other = tempfile::tempdir().unwrap();
    let out = run.build(&["--kube-root", other.path().to_str().unwrap()]);
    run.assert_failed(&out, "is not a Kubernetes tree");
}

#[test]
fn a_failing_make_target_shows_the_log() {
    let tree = tree(true);
    let run = SourceRun::new("makefail");
    let out = run.build(&["--kube-root", tree.path().to_str().unwrap(), "--build-mode", "host"]);
    let line = run.assert_failed(&out, "make all failed");
    let log = tree.path().join("_output/nodeimg-build.log");
    assert!(line.contains(log.to_str().unwrap()), "the log path is shown: {line}");
    assert!(line.contains("boom: target all failed on purpose"), "the last lines are shown: {line}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("boom"));
}
