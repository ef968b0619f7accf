//! A Kubernetes source tree: finding it, cloning it into the cache, checking out a version
//! with git2, and the version upstream's build would stamp. Never loses a user's work: a
//! checkout is refused on a tree with uncommitted changes, and nothing is restored or deleted.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use git2::{FetchOptions, RemoteCallbacks, Repository, StatusOptions};

use super::KubeVersion;
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
/// Refuses a tree with uncommitted changes, before touching anything.
pub fn checkout_version(root: &Path, version: &KubeVersion, reporter: &Reporter) -> Result<()> {
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
    let tag_ref = format!("refs/tags/{version}");
    if repo.find_reference(&tag_ref).is_err() {
        fetch(&repo, &[&format!("+{tag_ref}:{tag_ref}")], reporter)
            .with_context(|| format!("fetching tag {version}"))?;
    }
    let target = repo
        .revparse_single(&format!("{tag_ref}^{{commit}}"))
        .map_err(|_| anyhow!("no tag {version} in {}", root.display()))?;
    repo.checkout_tree(&target, Some(git2::build::CheckoutBuilder::new().safe()))
        .with_context(|| format!("checking out {version}"))?;
    repo.set_head_detached(target.id())?;
    Ok(())
}

/// Clones `url` into `cache` the first time; later runs reuse it and fetch only what is
/// missing. Returns the tree's path.
pub fn ensure_clone(url: &str, cache: &Path, reporter: &Reporter) -> Result<PathBuf> {
    if cache.join(".git").is_dir() {
        let repo = Repository::open(cache)?;
        fetch(&repo, &["+refs/tags/*:refs/tags/*", "+refs/heads/*:refs/remotes/origin/*"], reporter)
            .with_context(|| format!("updating the Kubernetes clone in {}", cache.display()))?;
        return Ok(cache.to_owned());
    }
    std::fs::create_dir_all(cache.parent().unwrap_or(cache))?;
    let step = reporter.step(format!("cloning {url}"));
    // Cloned under a temp name, renamed when complete: an interrupted clone is not reused.
    let partial = cache.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    {
        let mut builder = git2::build::RepoBuilder::new();
        builder.fetch_options(fetch_options(&step));
        builder.clone(url, &partial).with_context(|| format!("cloning {url}"))?;
    }
    std::fs::rename(&partial, cache)?;
    step.finish("done");
    Ok(cache.to_owned())
}

fn fetch(repo: &Repository, refspecs: &[&str], reporter: &Reporter) -> Result<()> {
    let step = reporter.step("fetching from origin");
    let mut remote = repo.find_remote("origin")?;
    {
        let mut opts = fetch_options(&step);
        remote.fetch(refspecs, Some(&mut opts), None)?;
    }
    step.finish("done");
    Ok(())
}

/// A progress line with the objects received.
fn fetch_options(step: &crate::progress::Step) -> FetchOptions<'_> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.transfer_progress(move |p| {
        step.set_message(format!(
            "{}/{} objects, {:.1} MB",
            p.received_objects(),
            p.total_objects(),
            p.received_bytes() as f64 / 1e6
        ));
        true
    });
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks);
    opts
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
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let mut parent: Option<git2::Oid> = None;
        for (i, tag) in ["v1.0.0", "v1.1.0"].iter().enumerate() {
            std::fs::write(dir.path().join("go.mod"), "module k8s.io/kubernetes\n").unwrap();
            std::fs::write(dir.path().join("VERSION"), format!("{i}\n")).unwrap();
            let mut index = repo.index().unwrap();
            index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let parents: Vec<git2::Commit> = parent.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            let oid = repo.commit(Some("HEAD"), &sig, &sig, tag, &tree, &refs).unwrap();
            repo.tag_lightweight(tag, &repo.find_object(oid, None).unwrap(), false).unwrap();
            parent = Some(oid);
        }
        (dir, repo)
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

    #[test]
    fn checks_out_a_tag_detached() {
        let (dir, repo) = fixture();
        checkout_version(dir.path(), &KubeVersion::parse("v1.0.0").unwrap(), &quiet()).unwrap();
        assert!(repo.head_detached().unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("VERSION")).unwrap(), "0\n");
        let err = checkout_version(dir.path(), &KubeVersion::parse("v9.9.9").unwrap(), &quiet()).unwrap_err();
        assert!(format!("{err:#}").contains("v9.9.9"), "{err:#}");
    }

    #[test]
    fn refuses_a_dirty_tree_and_touches_nothing() {
        let (dir, repo) = fixture();
        std::fs::write(dir.path().join("VERSION"), "my work\n").unwrap();
        std::fs::write(dir.path().join("new-file.go"), "package x\n").unwrap();
        let head = repo.head().unwrap().target();
        let err = checkout_version(dir.path(), &KubeVersion::parse("v1.0.0").unwrap(), &quiet()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("uncommitted changes") && msg.contains("VERSION") && msg.contains("drop -k"),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("VERSION")).unwrap(), "my work\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("new-file.go")).unwrap(), "package x\n");
        assert_eq!(repo.head().unwrap().target(), head, "HEAD did not move");
    }

    #[test]
    fn clones_into_the_cache_once_then_fetches_new_tags() {
        let (origin, origin_repo) = fixture();
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join("kubernetes");
        let url = format!("file://{}", origin.path().display());
        ensure_clone(&url, &dest, &quiet()).unwrap();
        assert!(is_kubernetes(&dest));
        let marker = dest.join(".git/nodeimg-marker");
        std::fs::write(&marker, "kept").unwrap();
        // A tag made upstream after the clone arrives with the next run, in the same clone.
        let head = origin_repo.head().unwrap().peel_to_commit().unwrap();
        origin_repo.tag_lightweight("v1.2.0", head.as_object(), false).unwrap();
        ensure_clone(&url, &dest, &quiet()).unwrap();
        assert!(marker.exists(), "the clone was reused, not made again");
        checkout_version(&dest, &KubeVersion::parse("v1.2.0").unwrap(), &quiet()).unwrap();
    }

    #[test]
    fn workspace_status_values() {
        let status =
            "STABLE_BUILD_GIT_COMMIT abc\ngitVersion v1.20.2-dirty\nSTABLE_DOCKER_TAG v1.20.2-dirty\n";
        assert_eq!(workspace_value(status, "gitVersion"), Some("v1.20.2-dirty"));
        assert_eq!(workspace_value(status, "STABLE_DOCKER_REGISTRY"), None);
    }
}
