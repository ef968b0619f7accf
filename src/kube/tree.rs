//! A Kubernetes source tree: finding it, cloning it into the cache, checking out a version
//! with git2, and the version upstream's build would stamp. Never loses a user's work: a
//! checkout is refused on a tree with uncommitted changes, and nothing is restored or deleted.
//! The git work runs off the async runtime and stops when the future awaiting it is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use git2::build::CheckoutBuilder;
use git2::{
    CheckoutNotificationType, FetchOptions, ObjectType, RemoteCallbacks, Repository, StatusOptions,
    TreeWalkMode, TreeWalkResult,
};

use super::KubeVersion;
use crate::process::{Cancel, Cancelled, Progress, off_runtime, off_runtime_with_progress};
use crate::progress::Reporter;

pub const DEFAULT_REPO: &str = "https://github.com/kubernetes/kubernetes";

/// Whether `dir` holds a Kubernetes tree (its go.mod declares `module k8s.io/kubernetes`).
pub fn is_kubernetes(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("go.mod"))
        .map(|m| m.lines().any(|l| l.trim() == "module k8s.io/kubernetes"))
        .unwrap_or(false)
}

/// kind's rule: `--kube-root`, else the current directory if it is Kubernetes, else
/// `$GOPATH/src/k8s.io/kubernetes`, else `$GOPATH/src/github.com/kubernetes/kubernetes`
/// (GOPATH defaulting to ~/go). `None` when no candidate is a Kubernetes tree.
pub fn find_root(kube_root: Option<&Path>, cwd: &Path, gopath: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(root) = kube_root {
        if !root.is_dir() {
            bail!("--kube-root {}: no such directory", root.display());
        }
        if !is_kubernetes(root) {
            bail!(
                "--kube-root {} is not a Kubernetes tree (its go.mod does not declare module k8s.io/kubernetes)",
                root.display()
            );
        }
        return Ok(Some(root.to_owned()));
    }
    let mut candidates = vec![cwd.to_owned()];
    if let Some(gopath) = gopath {
        candidates.push(gopath.join("src/k8s.io/kubernetes"));
        candidates.push(gopath.join("src/github.com/kubernetes/kubernetes"));
    }
    Ok(candidates.into_iter().find(|c| is_kubernetes(c)))
}

pub fn default_gopath() -> Option<PathBuf> {
    std::env::var_os("GOPATH")
        .and_then(|p| std::env::split_paths(&p).next())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join("go")))
}

/// Paths of uncommitted changes: modified, staged, deleted or untracked (ignored files
/// are not changes).
pub fn uncommitted_changes(repo: &Repository) -> Result<Vec<String>> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true).include_ignored(false).recurse_untracked_dirs(false);
    let statuses = repo.statuses(Some(&mut opts))?;
    Ok(statuses.iter().filter_map(|s| s.path().ok().map(str::to_owned)).collect())
}

/// Checks out tag `version` detached, fetching it from `origin` when it is not here yet.
/// Refuses a tree with uncommitted changes, before touching anything. Dropping the future
/// stops a fetch, and a checkout until it starts writing files (see `checkout_tag`).
pub async fn checkout_version(root: &Path, version: &KubeVersion, reporter: &Reporter) -> Result<()> {
    let (r, v) = (root.to_owned(), version.clone());
    if !off_runtime(move |_| clean_tree_has_tag(&r, &v)).await? {
        let tag_ref = format!("refs/tags/{version}");
        fetch_in(root, vec![format!("+{tag_ref}:{tag_ref}")], reporter)
            .await
            .with_context(|| format!("fetching tag {version}"))?;
    }
    let (root, version) = (root.to_owned(), version.clone());
    off_runtime(move |cancel| checkout_tag(&root, &version, cancel)).await
}

/// Whether tag `version` is here; an error for a tree with uncommitted changes.
fn clean_tree_has_tag(root: &Path, version: &KubeVersion) -> Result<bool> {
    let repo =
        Repository::open(root).with_context(|| format!("{} is not a git repository", root.display()))?;
    let changes = uncommitted_changes(&repo)?;
    if !changes.is_empty() {
        let shown: Vec<&str> = changes.iter().take(3).map(String::as_str).collect();
        let more = if changes.len() > 3 { format!(" and {} more", changes.len() - 3) } else { String::new() };
        bail!(
            "{} has uncommitted changes ({}{more}); commit or stash them to build -k {version}, or drop -k to build the tree as it is",
            root.display(),
            shown.join(", ")
        );
    }
    Ok(repo.find_reference(&format!("refs/tags/{version}")).is_ok())
}

fn checkout_tag(root: &Path, version: &KubeVersion, cancel: &Cancel) -> Result<()> {
    let repo = Repository::open(root)?;
    let target = repo
        .revparse_single(&format!("refs/tags/{version}^{{commit}}"))
        .map_err(|_| anyhow!("no tag {version} in {}", root.display()))?;
    // libgit2 announces every file it will update before it writes any: the last point
    // where a checkout can stop. Once writing, it finishes, so that the user's tree is
    // never left half on one version (tags of one release differ in a few files).
    let stopped = std::cell::Cell::new(false);
    let mut checkout = CheckoutBuilder::new();
    checkout.safe().notify_on(CheckoutNotificationType::UPDATED).notify(|_, _, _, _, _| {
        stopped.set(cancel.is_set());
        !stopped.get()
    });
    repo.checkout_tree(&target, Some(&mut checkout)).with_context(|| format!("checking out {version}"))?;
    // git2 reports a checkout its callback stopped as a success, and HEAD must not move
    // then. `stopped`, not the flag: a flag set once the files are written must not leave
    // HEAD behind them.
    if stopped.get() {
        return Err(Cancelled.into());
    }
    repo.set_head_detached(target.id())?;
    Ok(())
}

/// Every branch and tag: what a clone has, and what updating the cached clone fetches.
const ALL_REFS: [&str; 2] = ["+refs/tags/*:refs/tags/*", "+refs/heads/*:refs/remotes/origin/*"];

/// Clones `url` into `cache` the first time, its work tree at `version` (empty without
/// one); later runs reuse it and fetch only what is missing. Returns the tree's path.
/// Dropping the future stops the clone, and a clone that did not complete is removed.
pub async fn ensure_clone(
    url: &str,
    cache: &Path,
    version: Option<&KubeVersion>,
    reporter: &Reporter,
) -> Result<PathBuf> {
    if cache.join(".git").is_dir() {
        fetch_in(cache, ALL_REFS.map(String::from).to_vec(), reporter)
            .await
            .with_context(|| format!("updating the Kubernetes clone in {}", cache.display()))?;
        return Ok(cache.to_owned());
    }
    std::fs::create_dir_all(cache.parent().unwrap_or(cache))?;
    let step = reporter.step(format!("cloning {url}"));
    let (source, dest, version) = (url.to_owned(), cache.to_owned(), version.cloned());
    off_runtime_with_progress(&step, move |cancel, progress| {
        clone(&source, &dest, version.as_ref(), progress, cancel)
    })
    .await
    .with_context(|| format!("cloning {url}"))?;
    step.finish("done");
    Ok(cache.to_owned())
}

/// Clones under a temp name, renamed when complete: an interrupted clone is not reused.
/// One that failed or was cancelled is removed here; one whose process was killed, by the
/// next run.
fn clone(
    url: &str,
    dest: &Path,
    version: Option<&KubeVersion>,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<()> {
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    if let Err(e) = clone_into(url, &partial, version, progress, cancel) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    Ok(std::fs::rename(&partial, dest)?)
}

/// A clone as an init and a fetch of every branch and tag, then `version` written into the
/// empty work tree: no default branch is checked out only to be replaced by the tag.
fn clone_into(
    url: &str,
    dest: &Path,
    version: Option<&KubeVersion>,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<()> {
    let repo = Repository::init(dest)?;
    repo.remote("origin", url)?;
    fetch(&repo, &ALL_REFS, progress, cancel)?;
    // Without the tag, the clone is still worth keeping; checkout_version says what is missing.
    let Some(commit) = version.and_then(|v| repo.revparse_single(&format!("refs/tags/{v}^{{commit}}")).ok())
    else {
        return Ok(());
    };
    checkout_in_batches(&repo, &commit.peel_to_tree()?, progress, cancel)?;
    repo.set_head_detached(commit.id())?;
    Ok(())
}

/// Files per libgit2 call when filling a new clone's work tree. libgit2 cannot stop a
/// checkout once it writes files, and writing Kubernetes takes long on a slow disk; in
/// batches, a Ctrl-C waits for one batch at most.
const CHECKOUT_BATCH: usize = 1000;

/// Writes `tree` into the empty work tree of a clone of ours, checking `cancel` between
/// batches. Forced: nothing of the user's is there, and a cancelled clone is removed whole.
fn checkout_in_batches(
    repo: &Repository,
    tree: &git2::Tree,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<()> {
    let mut paths: Vec<Vec<u8>> = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() != Some(ObjectType::Tree) {
            paths.push([dir.as_bytes(), entry.name_bytes()].concat());
        }
        TreeWalkResult::Ok
    })?;
    for (i, batch) in paths.chunks(CHECKOUT_BATCH).enumerate() {
        cancel.check()?;
        progress.send_replace(format!("checking out: {}/{} files", i * CHECKOUT_BATCH, paths.len()));
        let mut checkout = CheckoutBuilder::new();
        checkout.force().disable_pathspec_match(true);
        for path in batch {
            checkout.path(path.as_slice());
        }
        repo.checkout_tree(tree.as_object(), Some(&mut checkout))?;
    }
    Ok(())
}

/// Fetches `refspecs` from `origin` into the repository at `root`, as a step.
async fn fetch_in(root: &Path, refspecs: Vec<String>, reporter: &Reporter) -> Result<()> {
    let step = reporter.step("fetching from origin");
    let root = root.to_owned();
    off_runtime_with_progress(&step, move |cancel, progress| {
        fetch(&Repository::open(root)?, &refspecs, progress, cancel)
    })
    .await?;
    step.finish("done");
    Ok(())
}

/// Fetches from `origin`, showing the objects received; git2's callbacks abort once
/// `cancel` is set.
fn fetch(
    repo: &Repository,
    refspecs: &[impl AsRef<str>],
    progress: &Progress,
    cancel: &Cancel,
) -> Result<()> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.transfer_progress(|p| {
        progress.send_replace(format!(
            "{}/{} objects, {:.1} MB",
            p.received_objects(),
            p.total_objects(),
            p.received_bytes() as f64 / 1e6
        ));
        !cancel.is_set()
    });
    // Before the first object, the server counts and compresses (minutes for Kubernetes)
    // and says so on the sideband: a point to stop as well.
    callbacks.sideband_progress(|_| !cancel.is_set());
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks);
    let refspecs: Vec<&str> = refspecs.iter().map(AsRef::as_ref).collect();
    repo.find_remote("origin")?.fetch(&refspecs, Some(&mut opts), None).map_err(|e| cancel.explain(e))
}

/// What upstream's build stamps, from `hack/print-workspace-status.sh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceStatus {
    /// `gitVersion` (ends in `-dirty` for a modified tree).
    pub version: KubeVersion,
    /// `STABLE_DOCKER_REGISTRY`, where the control-plane images are named.
    pub registry: String,
    /// `STABLE_DOCKER_TAG`, their tag.
    pub docker_tag: String,
}

pub fn workspace_status(root: &Path) -> Result<WorkspaceStatus> {
    let script = root.join("hack/print-workspace-status.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        );
    }
    let status = String::from_utf8_lossy(&out.stdout);
    let raw = workspace_value(&status, "gitVersion")
        .ok_or_else(|| anyhow!("{} printed no gitVersion", script.display()))?;
    let version = KubeVersion::parse(raw).with_context(|| format!("gitVersion from {}", script.display()))?;
    Ok(WorkspaceStatus {
        registry: workspace_value(&status, "STABLE_DOCKER_REGISTRY").unwrap_or("registry.k8s.io").to_owned(),
        docker_tag: workspace_value(&status, "STABLE_DOCKER_TAG")
            .map(str::to_owned)
            .unwrap_or_else(|| version.tag()),
        version,
    })
}

/// A value from print-workspace-status output (`KEY value` lines; `STABLE_`/`gitVersion`).
pub fn workspace_value<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')).map(str::trim)
}

#[cfg(test)]
mod tests {
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
        let oid =
            repo.commit(Some("HEAD"), &sig, &sig, tag, &tree, &parent.iter().collect::<Vec<_>>()).unwrap();
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
        let status =
            "STABLE_BUILD_GIT_COMMIT abc\ngitVersion v1.20.2-dirty\nSTABLE_DOCKER_TAG v1.20.2-dirty\n";
        assert_eq!(workspace_value(status, "gitVersion"), Some("v1.20.2-dirty"));
        assert_eq!(workspace_value(status, "STABLE_DOCKER_REGISTRY"), None);
    }
}
