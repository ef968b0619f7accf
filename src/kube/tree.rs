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
use crate::blocking::{self, Cancel, Cancelled, Progress};
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
    if !blocking::run(move |_| clean_tree_has_tag(&r, &v)).await? {
        // A shallow clone (ours, of one tag) stays shallow: the next tag comes alone too.
        let depth = Repository::open(root)?.is_shallow().then_some(1);
        fetch_in(root, vec![tag_refspec(version)], depth, reporter)
            .await
            .with_context(|| format!("fetching tag {version}"))?;
    }
    let (root, version) = (root.to_owned(), version.clone());
    blocking::run(move |cancel| checkout_tag(&root, &version, cancel)).await
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

/// Every branch and tag: what a clone without a version (or of a local remote) has, and what
/// updating such a clone fetches.
const ALL_REFS: [&str; 2] = ["+refs/tags/*:refs/tags/*", "+refs/heads/*:refs/remotes/origin/*"];

fn tag_refspec(version: &KubeVersion) -> String {
    format!("+refs/tags/{version}:refs/tags/{version}")
}

/// The depth of a clone of one tag: 1 over the network (Kubernetes' whole history is ~2 GB,
/// one tag's tree ~0.1 GB), none for a local remote, whose objects are copied and which
/// libgit2's local transport cannot fetch shallow.
fn one_tag_depth(url: &str) -> Option<i32> {
    ["https://", "http://", "ssh://", "git://"].iter().any(|p| url.starts_with(p)).then_some(1)
}

/// What a fetch received, for its step's last words.
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    pub objects: usize,
    pub bytes: usize,
}

impl std::fmt::Display for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} objects, {:.1} MB received", self.objects, self.bytes as f64 / 1e6)
    }
}

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
        let shallow = Repository::open(cache)?.is_shallow();
        let (refspecs, depth) = match version {
            Some(v) if shallow => (vec![tag_refspec(v)], Some(1)),
            _ => (ALL_REFS.map(String::from).to_vec(), None),
        };
        fetch_in(cache, refspecs, depth, reporter)
            .await
            .with_context(|| format!("updating the Kubernetes clone in {}", cache.display()))?;
        return Ok(cache.to_owned());
    }
    std::fs::create_dir_all(cache.parent().unwrap_or(cache))?;
    let step = reporter.step(format!("cloning {url}"));
    let (source, dest, version) = (url.to_owned(), cache.to_owned(), version.cloned());
    let received = blocking::run_with_progress(&step, move |cancel, progress| {
        clone(&source, &dest, version.as_ref(), progress, cancel)
    })
    .await
    .with_context(|| format!("cloning {url}"))?;
    step.finish(format!("done: {received}"));
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
) -> Result<Received> {
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    match clone_into(url, &partial, version, progress, cancel) {
        Ok(received) => {
            std::fs::rename(&partial, dest)?;
            Ok(received)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

/// A clone as an init and a fetch, then `version` written into the empty work tree: no
/// default branch is checked out only to be replaced by the tag. With a version and a network
/// remote only that tag is fetched, one commit deep; else every branch and tag.
fn clone_into(
    url: &str,
    dest: &Path,
    version: Option<&KubeVersion>,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<Received> {
    let repo = Repository::init(dest)?;
    repo.remote("origin", url)?;
    let received = match (version, one_tag_depth(url)) {
        (Some(v), Some(depth)) => fetch(&repo, &[tag_refspec(v)], Some(depth), progress, cancel)?,
        _ => fetch(&repo, &ALL_REFS, None, progress, cancel)?,
    };
    // Without the tag, the clone is still worth keeping; checkout_version says what is missing.
    let Some(commit) = version.and_then(|v| repo.revparse_single(&format!("refs/tags/{v}^{{commit}}")).ok())
    else {
        return Ok(received);
    };
    checkout_in_batches(&repo, &commit.peel_to_tree()?, progress, cancel)?;
    repo.set_head_detached(commit.id())?;
    Ok(received)
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
async fn fetch_in(root: &Path, refspecs: Vec<String>, depth: Option<i32>, reporter: &Reporter) -> Result<()> {
    let step = reporter.step("fetching from origin");
    let root = root.to_owned();
    let received = blocking::run_with_progress(&step, move |cancel, progress| {
        fetch(&Repository::open(root)?, &refspecs, depth, progress, cancel)
    })
    .await?;
    step.finish(format!("done: {received}"));
    Ok(())
}

/// Fetches from `origin`, showing the objects received; git2's callbacks abort once
/// `cancel` is set.
fn fetch(
    repo: &Repository,
    refspecs: &[impl AsRef<str>],
    depth: Option<i32>,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<Received> {
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
    // libgit2 reads the proxy from git's config (http.proxy) and HTTPS_PROXY/HTTP_PROXY,
    // and honours NO_PROXY; TLS goes through OpenSSL with the system CA store (SSL_CERT_FILE
    // and SSL_CERT_DIR apply).
    let mut proxy = git2::ProxyOptions::new();
    proxy.auto();
    opts.proxy_options(proxy);
    if let Some(depth) = depth {
        opts.depth(depth);
    }
    let refspecs: Vec<&str> = refspecs.iter().map(AsRef::as_ref).collect();
    let mut remote = repo.find_remote("origin")?;
    remote.fetch(&refspecs, Some(&mut opts), None).map_err(|e| cancel.explain(e))?;
    let stats = remote.stats();
    Ok(Received { objects: stats.received_objects(), bytes: stats.received_bytes() })
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
mod tests;
