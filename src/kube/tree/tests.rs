use super::*;
use crate::progress::{Reporter, Verbosity};

fn quiet() -> Reporter {
    Reporter::with_terminal(Verbosity::Quiet, false)
}

/// A git repository that looks like Kubernetes, with tags v1.0.0 and v1.1.0.
fn fixture() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    for (i, tag) in ["v1.0.0", "v1.1.0"].iter().enumerate() {
        std::fs::write(dir.path().join("go.mod"), "module k8s.io/kubernetes\n").unwrap();
        std::fs::write(dir.path().join("VERSION"), format!("{i}\n")).unwrap();
        commit_and_tag(&repo, tag);
    }
    (dir, repo)
}

/// Commits the whole work tree on HEAD and tags it.
fn commit_and_tag(repo: &Repository, tag: &str) -> git2::Oid {
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = repo.head().ok().map(|h| h.peel_to_commit().unwrap());
    let oid = repo.commit(Some("HEAD"), &sig, &sig, tag, &tree, &parent.iter().collect::<Vec<_>>()).unwrap();
    repo.tag_lightweight(tag, &repo.find_object(oid, None).unwrap(), false).unwrap();
    oid
}

#[test]
fn finds_trees_by_kinds_rule() {
    let (tree, _repo) = fixture();
    let elsewhere = tempfile::tempdir().unwrap();
    assert_eq!(find_root(None, tree.path(), None).unwrap(), Some(tree.path().to_owned()));
    assert_eq!(find_root(None, elsewhere.path(), None).unwrap(), None);
    let gopath = tempfile::tempdir().unwrap();
    let in_gopath = gopath.path().join("src/k8s.io/kubernetes");
    std::fs::create_dir_all(&in_gopath).unwrap();
    std::fs::write(in_gopath.join("go.mod"), "module k8s.io/kubernetes\n").unwrap();
    assert_eq!(find_root(None, elsewhere.path(), Some(gopath.path())).unwrap(), Some(in_gopath));
    let err = find_root(Some(elsewhere.path()), tree.path(), None).unwrap_err();
    assert!(err.to_string().contains("not a Kubernetes tree"), "{err}");
}

fn v(text: &str) -> KubeVersion {
    KubeVersion::parse(text).unwrap()
}

#[tokio::test]
async fn checks_out_a_tag_detached() {
    let (dir, repo) = fixture();
    checkout_version(dir.path(), &v("v1.0.0"), &quiet()).await.unwrap();
    assert!(repo.head_detached().unwrap());
    assert_eq!(std::fs::read_to_string(dir.path().join("VERSION")).unwrap(), "0\n");
    let err = checkout_version(dir.path(), &v("v9.9.9"), &quiet()).await.unwrap_err();
    assert!(format!("{err:#}").contains("v9.9.9"), "{err:#}");
}

#[test]
fn a_cancelled_checkout_stops_before_writing() {
    let (dir, repo) = fixture();
    let head = repo.head().unwrap().target();
    let cancel = Cancel::default();
    cancel.set();
    let err = checkout_tag(dir.path(), &v("v1.0.0"), &cancel).unwrap_err();
    assert!(err.downcast_ref::<Cancelled>().is_some(), "{err:#}");
    assert_eq!(std::fs::read_to_string(dir.path().join("VERSION")).unwrap(), "1\n");
    assert_eq!(repo.head().unwrap().target(), head, "HEAD did not move");
    assert!(uncommitted_changes(&repo).unwrap().is_empty());
}

#[tokio::test]
async fn refuses_a_dirty_tree_and_touches_nothing() {
    let (dir, repo) = fixture();
    std::fs::write(dir.path().join("VERSION"), "my work\n").unwrap();
    std::fs::write(dir.path().join("new-file.go"), "package x\n").unwrap();
    let head = repo.head().unwrap().target();
    let err = checkout_version(dir.path(), &v("v1.0.0"), &quiet()).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("uncommitted changes") && msg.contains("VERSION") && msg.contains("drop -k"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("VERSION")).unwrap(), "my work\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("new-file.go")).unwrap(), "package x\n");
    assert_eq!(repo.head().unwrap().target(), head, "HEAD did not move");
}

#[tokio::test]
async fn clones_into_the_cache_once_then_fetches_new_tags() {
    let (origin, origin_repo) = fixture();
    let cache = tempfile::tempdir().unwrap();
    let dest = cache.path().join("kubernetes");
    let url = format!("file://{}", origin.path().display());
    ensure_clone(&url, &dest, Some(&v("v1.0.0")), &quiet()).await.unwrap();
    assert!(is_kubernetes(&dest));
    assert_eq!(std::fs::read_to_string(dest.join("VERSION")).unwrap(), "0\n", "the tag is checked out");
    assert!(!cache.path().join("kubernetes.partial").exists());
    let marker = dest.join(".git/nodeimg-marker");
    std::fs::write(&marker, "kept").unwrap();
    // A tag made upstream after the clone arrives with the next run, in the same clone.
    let head = origin_repo.head().unwrap().peel_to_commit().unwrap();
    origin_repo.tag_lightweight("v1.2.0", head.as_object(), false).unwrap();
    ensure_clone(&url, &dest, Some(&v("v1.2.0")), &quiet()).await.unwrap();
    assert!(marker.exists(), "the clone was reused, not made again");
    checkout_version(&dest, &v("v1.2.0"), &quiet()).await.unwrap();
}

#[test]
fn a_new_clone_is_written_in_batches_and_is_clean() {
    use std::os::unix::fs::PermissionsExt;
    let (origin, origin_repo) = fixture();
    // More files than a batch, in directories, with an executable and a symlink.
    let last = origin.path().join(format!("pkg/d{}/f{}.go", CHECKOUT_BATCH % 7, CHECKOUT_BATCH));
    for i in 0..=CHECKOUT_BATCH {
        let file = origin.path().join(format!("pkg/d{}/f{i}.go", i % 7));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, format!("package d // {i}\n")).unwrap();
    }
    std::fs::write(origin.path().join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(origin.path().join("run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("run.sh", origin.path().join("run")).unwrap();
    let oid = commit_and_tag(&origin_repo, "v1.3.0");

    let cache = tempfile::tempdir().unwrap();
    let dest = cache.path().join("kubernetes");
    let url = format!("file://{}", origin.path().display());
    clone(&url, &dest, Some(&v("v1.3.0")), &Progress::new(String::new()), &Cancel::default()).unwrap();
    let clone = Repository::open(&dest).unwrap();
    assert_eq!(uncommitted_changes(&clone).unwrap(), Vec::<String>::new());
    assert_eq!(clone.head().unwrap().target(), Some(oid));
    assert!(dest.join(last.strip_prefix(origin.path()).unwrap()).is_file(), "the last batch is there");
    assert_eq!(dest.join("run.sh").metadata().unwrap().permissions().mode() & 0o111, 0o111);
    assert_eq!(std::fs::read_link(dest.join("run")).unwrap(), Path::new("run.sh"));
    // Later runs find the tag already there and in place.
    checkout_tag(&dest, &v("v1.3.0"), &Cancel::default()).unwrap();
}

#[test]
fn a_cancelled_clone_leaves_nothing() {
    let (origin, _repo) = fixture();
    let cache = tempfile::tempdir().unwrap();
    let dest = cache.path().join("kubernetes");
    let url = format!("file://{}", origin.path().display());
    let cancel = Cancel::default();
    cancel.set();
    let err = clone(&url, &dest, Some(&v("v1.0.0")), &Progress::new(String::new()), &cancel).unwrap_err();
    assert!(err.downcast_ref::<Cancelled>().is_some(), "{err:#}");
    assert!(!dest.exists() && !cache.path().join("kubernetes.partial").exists());
}

#[test]
fn workspace_status_values() {
    let status = "STABLE_BUILD_GIT_COMMIT abc\ngitVersion v1.20.2-dirty\nSTABLE_DOCKER_TAG v1.20.2-dirty\n";
    assert_eq!(workspace_value(status, "gitVersion"), Some("v1.20.2-dirty"));
    assert_eq!(workspace_value(status, "STABLE_DOCKER_REGISTRY"), None);
}
