//! One node's update, as one transaction: stage, swap, restart, wait; on any failure after
//! staging the node gets its previous binaries, manifests and image names back and is
//! restarted, so no node is left half-updated.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::kubectl::{self, NodeState, Pod};
use super::manifests::{self, Changed};
use super::{ClusterNode, Parts};
use crate::docker::{Docker, quote};
use crate::nodeimage::{images, sources};
use crate::progress::Reporter;

const MANIFESTS: &str = "/etc/kubernetes/manifests";
/// Beside the manifests, not in their directory: the kubelet would run a copy there.
const MANIFEST_BACKUP: &str = "/etc/kubernetes/.nodeimg-previous";
/// A kubelet that systemd restarted this often since ours started is not coming up.
const RESTARTS: u64 = 3;
const KUBELET_ERROR: &str =
    "journalctl -u kubelet -n 200 --no-pager -o cat 2>/dev/null | grep -E '^[EF][0-9]{4} ' | tail -n 1";

pub struct Context<'a> {
    pub docker: &'a Docker,
    pub reporter: &'a Reporter,
    pub control_plane: &'a ClusterNode,
    pub timeout: Duration,
    pub parts: &'a Parts,
}

/// One thing that changed on a node: `kubelet v1.20.2 (sha256 1a2b…) → v1.20.3 (…)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub what: String,
    pub old: String,
    pub new: String,
}

#[derive(Clone, Debug, Default)]
pub struct NodeReport {
    pub node: String,
    pub changes: Vec<Change>,
    /// Each stage and how long it took.
    pub stages: Vec<(&'static str, Duration)>,
}

/// What was done to the node so far, for the rollback.
#[derive(Default)]
struct Done {
    staged: Vec<&'static str>,
    swapped: Vec<&'static str>,
    /// `(name in containerd, backup name)` of images that had an old version.
    image_backups: Vec<(String, String)>,
    manifests: Vec<String>,
    kubelet: bool,
}

pub async fn update(ctx: &Context<'_>, node: &ClusterNode) -> Result<NodeReport> {
    let mut report = NodeReport { node: node.name.clone(), ..Default::default() };
    let mut done = Done::default();
    let step = ctx.reporter.step(format!("updating {}", node.name));
    match stages(ctx, node, &mut report, &mut done).await {
        Ok(()) => {
            cleanup(ctx.docker, node, &done).await;
            step.finish(summary(&report));
            Ok(report)
        }
        Err((stage, err)) => {
            step.fail(stage);
            let rolled = rollback(ctx, node, &done).await;
            let rolled = match rolled {
                Ok(what) => what,
                Err(e) => format!("rolling back failed too: {}", crate::error::one_line(&e)),
            };
            Err(anyhow!("node {}: {stage}: {}; {rolled}", node.name, crate::error::one_line(&err)))
        }
    }
}

fn summary(report: &NodeReport) -> String {
    if report.changes.is_empty() {
        return "unchanged".into();
    }
    report.changes.iter().map(|c| format!("{} {} -> {}", c.what, c.old, c.new)).collect::<Vec<_>>().join(", ")
}

async fn stages(
    ctx: &Context<'_>,
    node: &ClusterNode,
    report: &mut NodeReport,
    done: &mut Done,
) -> Result<(), (&'static str, anyhow::Error)> {
    let docker = ctx.docker;
    let timed = |started: Instant| started.elapsed();
    // 1. Copy the binaries that differ in beside the old ones.
    let started = Instant::now();
    let staged =
        stage(docker, node, &ctx.parts.binaries, done).await.map_err(|e| ("copying the binaries in", e))?;
    report.changes.extend(staged);
    report.stages.push(("copy", timed(started)));
    // 2. Import the images, keeping the old ones under a backup name.
    let started = Instant::now();
    let changed = import(ctx, node, done).await.map_err(|e| ("importing the images", e))?;
    if !ctx.parts.plan.is_empty() {
        report.stages.push(("import", timed(started)));
    }
    report.changes.extend(changed.iter().map(|c| Change {
        what: c.name.clone(),
        old: c.old.as_deref().map_or("-", short).into(),
        new: short(&c.digest).into(),
    }));
    if done.staged.is_empty() && changed.is_empty() {
        return Ok(());
    }
    // 3. Rename the binaries into place and restart what uses them.
    let started = Instant::now();
    let before = kubectl::node_state(docker, ctx.control_plane, &node.name)
        .await
        .map_err(|e| ("reading the node", e))?;
    let restarts = restarts(docker, node).await.map_err(|e| ("reading the kubelet's unit", e))?;
    swap(docker, node, done).await.map_err(|e| ("renaming the binaries into place", e))?;
    let names: Vec<String> = changed.iter().map(|c| c.name.clone()).collect();
    let old_pods = if names.is_empty() {
        Vec::new()
    } else {
        kubectl::pods_using(docker, ctx.control_plane, &node.name, &names)
            .await
            .map_err(|e| ("listing pods", e))?
    };
    if done.staged.contains(&"kubelet") {
        done.kubelet = true;
        run(docker, node, "systemctl restart kubelet").await.map_err(|e| ("restarting the kubelet", e))?;
    }
    restart_pods(ctx, node, &changed, &old_pods, done).await.map_err(|e| ("restarting pods", e))?;
    report.stages.push(("restart", timed(started)));
    // 4. Ready again, with the new kubelet running, and the restarted pods too.
    let started = Instant::now();
    let kubelet = report.changes.iter().find(|c| c.what == "kubelet").map(|c| version_of(&c.new));
    let want = Want { kubelet, before, restarts, old_pods, names };
    wait(ctx, node, &want).await.map_err(|e| ("waiting for the node", e))?;
    report.stages.push(("ready", timed(started)));
    Ok(())
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// `v1.20.3 (sha256 1a2b…)` → `v1.20.3`.
fn version_of(change: &str) -> String {
    change.split_whitespace().next().unwrap_or_default().to_owned()
}

async fn run(docker: &Docker, node: &ClusterNode, script: &str) -> Result<String> {
    let out = docker.exec(&node.id, &["sh", "-c", script]).await?;
    if !out.success() {
        bail!("{}", out.last_line());
    }
    Ok(out.stdout)
}

/// The version a binary at `path` in the node reports.
async fn version(docker: &Docker, node: &ClusterNode, name: &str, path: &str) -> Result<String> {
    let script = match name {
        "kubelet" => format!("{} --version", quote(path)),
        "kubeadm" => format!("{} version -o short", quote(path)),
        _ => format!("{} version --client -o json", quote(path)),
    };
    let out =
        run(docker, node, &script).await.with_context(|| format!("`{name} --version` in {}", node.name))?;
    Ok(match name {
        "kubelet" => out.trim().trim_start_matches("Kubernetes ").to_owned(),
        "kubeadm" => out.trim().to_owned(),
        _ => serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["clientVersion"]["gitVersion"].as_str().map(str::to_owned))
            .unwrap_or_default(),
    })
}

async fn upload(docker: &Docker, node: &ClusterNode, file: &Path, dest: &str) -> Result<()> {
    let (file, dest) = (file.to_owned(), PathBuf::from(dest.trim_start_matches('/')));
    let tar = crate::archive::tar_stream(move |tar| crate::archive::append_file(tar, &file, &dest, 0o755));
    Ok(docker.upload(&node.id, "/", tar).await?)
}

/// The version the binary `file` of this machine reports when run in `node`; for the skew
/// check before anything changes.
pub async fn staged_version(
    docker: &Docker,
    node: &ClusterNode,
    name: &str,
    file: &Path,
) -> Result<crate::kube::KubeVersion> {
    let path = format!("/usr/bin/.{name}.nodeimg-check");
    upload(docker, node, file, &path)
        .await
        .with_context(|| format!("copying {} to {}", file.display(), node.name))?;
    let found = version(docker, node, name, &path).await;
    run(docker, node, &format!("rm -f {}", quote(&path))).await.ok();
    let found = found.with_context(|| format!("--with-{name} {}", file.display()))?;
    crate::kube::KubeVersion::parse(&found)
        .map_err(|e| anyhow!("--with-{name} {}: its version {e}", file.display()))
}

async fn stage(
    docker: &Docker,
    node: &ClusterNode,
    binaries: &[(&'static str, PathBuf)],
    done: &mut Done,
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for (name, file) in binaries {
        let path = format!("/usr/bin/{name}");
        let local =
            crate::archive::sha256_file(file).with_context(|| format!("reading {}", file.display()))?;
        let current = run(docker, node, &format!("sha256sum {path}")).await?;
        let current = current.split_whitespace().next().unwrap_or_default().to_owned();
        if current == local {
            continue;
        }
        let old = version(docker, node, name, &path).await?;
        let new_path = format!("/usr/bin/.{name}.nodeimg-new");
        upload(docker, node, file, &new_path).await?;
        done.staged.push(name);
        let new = version(docker, node, name, &new_path).await?;
        changes.push(Change {
            what: (*name).to_owned(),
            old: format!("{old} (sha256 {})", short(&current)),
            new: format!("{new} (sha256 {})", short(&local)),
        });
    }
    Ok(changes)
}

async fn swap(docker: &Docker, node: &ClusterNode, done: &mut Done) -> Result<()> {
    for name in done.staged.clone() {
        run(docker, node, &format!("ln -f /usr/bin/{name} /usr/bin/.{name}.nodeimg-previous && mv -f /usr/bin/.{name}.nodeimg-new /usr/bin/{name}"))
            .await
            .with_context(|| format!("/usr/bin/{name}"))?;
        done.swapped.push(name);
    }
    Ok(())
}

/// The digest containerd names `name` by, if it has it.
async fn digest_of(docker: &Docker, node: &ClusterNode, name: &str) -> Result<Option<String>> {
    let out = images::ctr(docker, &node.id, &["images", "ls", &format!("name=={name}")]).await?;
    Ok(out.lines().nth(1).and_then(|l| l.split_whitespace().nth(2)).map(str::to_owned))
}

async fn import(ctx: &Context<'_>, node: &ClusterNode, done: &mut Done) -> Result<Vec<Changed>> {
    let parts = ctx.parts;
    if parts.plan.is_empty() {
        return Ok(Vec::new());
    }
    let mut old = Vec::new();
    for planned in &parts.plan {
        let name = crate::reference::node_name(&planned.image);
        let digest = digest_of(ctx.docker, node, &name).await?;
        if digest.is_some() {
            let backup = format!("{name}-nodeimg-previous");
            images::ctr(ctx.docker, &node.id, &["images", "tag", "--force", &name, &backup]).await?;
            done.image_backups.push((name.clone(), backup));
        }
        old.push((name, digest));
    }
    sources::import(ctx.docker, &node.id, &parts.plan, &[], &parts.archives, &parts.platform, ctx.reporter)
        .await?;
    let mut changed = Vec::new();
    for (name, before) in old {
        let now = digest_of(ctx.docker, node, &name)
            .await?
            .with_context(|| format!("{name} is not in containerd after the import"))?;
        if before.as_deref() != Some(now.as_str()) {
            let parsed = crate::reference::ImageRef::parse(&name)?;
            changed.push(Changed { name: parsed.name(), reference: name, digest: now, old: before });
        }
    }
    Ok(changed)
}

async fn restart_pods(
    ctx: &Context<'_>,
    node: &ClusterNode,
    changed: &[Changed],
    pods: &[Pod],
    done: &mut Done,
) -> Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let docker = ctx.docker;
    let listing = run(docker, node, &format!("ls {MANIFESTS} 2>/dev/null || true")).await?;
    for file in listing.lines().filter(|f| f.ends_with(".yaml") || f.ends_with(".yml")) {
        let path = format!("{MANIFESTS}/{file}");
        let text = crate::node::files::read(docker, &node.id, &path).await?;
        let Some(new) = manifests::rewrite(&text, changed) else { continue };
        run(docker, node, &format!("mkdir -p {MANIFEST_BACKUP} && cp -p {path} {MANIFEST_BACKUP}/{file}"))
            .await?;
        done.manifests.push(file.to_owned());
        let staged = format!("/etc/kubernetes/.nodeimg-new-{file}");
        crate::node::files::write(docker, &node.id, &staged, new).await?;
        run(docker, node, &format!("chmod 600 {staged} && mv -f {staged} {path}")).await?;
    }
    for pod in pods.iter().filter(|p| !p.mirror) {
        kubectl::delete_pod(docker, ctx.control_plane, pod).await?;
    }
    Ok(())
}

async fn restarts(docker: &Docker, node: &ClusterNode) -> Result<u64> {
    let out = run(docker, node, "systemctl show kubelet -p NRestarts --value").await?;
    Ok(out.trim().parse().unwrap_or(0))
}

struct Want {
    kubelet: Option<String>,
    before: NodeState,
    restarts: u64,
    old_pods: Vec<Pod>,
    names: Vec<String>,
}

/// Until the node is Ready with the new kubelet (its lease renewed since the restart) and
/// every pod on it that uses a changed image is a new one and Ready; a kubelet that keeps
/// exiting fails at once, with its last words.
async fn wait(ctx: &Context<'_>, node: &ClusterNode, want: &Want) -> Result<()> {
    let deadline = Instant::now() + ctx.timeout;
    loop {
        if want.kubelet.is_some() && restarts(ctx.docker, node).await? >= want.restarts + RESTARTS {
            // The kubelet's own last error (klog's `E0101`/`F0101` lines), not systemd's.
            let journal = run(ctx.docker, node, KUBELET_ERROR).await.unwrap_or_default();
            bail!("the new kubelet exited {RESTARTS} times since the restart: {}", journal.trim());
        }
        let last = match ready(ctx, node, want).await {
            Ok(None) => return Ok(()),
            Ok(Some(why)) => why,
            Err(e) => crate::error::one_line(&e),
        };
        if Instant::now() >= deadline {
            bail!("not ready within {}: {last}", humantime::format_duration(ctx.timeout));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `None` when everything is back; else what is still missing.
async fn ready(ctx: &Context<'_>, node: &ClusterNode, want: &Want) -> Result<Option<String>> {
    let state = kubectl::node_state(ctx.docker, ctx.control_plane, &node.name).await?;
    if let Some(kubelet) = &want.kubelet {
        if state.kubelet != *kubelet {
            return Ok(Some(format!("the node reports kubelet {}, not {kubelet}", state.kubelet)));
        }
        if state.renewed == want.before.renewed {
            return Ok(Some("the kubelet has not renewed its lease since the restart".into()));
        }
    }
    if !state.ready {
        return Ok(Some("the node is not Ready".into()));
    }
    if want.names.is_empty() {
        return Ok(None);
    }
    let pods = kubectl::pods_using(ctx.docker, ctx.control_plane, &node.name, &want.names).await?;
    let old: Vec<&str> = want.old_pods.iter().map(|p| p.uid.as_str()).collect();
    if let Some(p) = pods.iter().find(|p| old.contains(&p.uid.as_str())) {
        return Ok(Some(format!("pod {}/{} has not been replaced yet", p.namespace, p.name)));
    }
    if let Some(p) = pods.iter().find(|p| !p.ready) {
        return Ok(Some(format!("pod {}/{} is not Ready", p.namespace, p.name)));
    }
    if pods.len() < want.old_pods.len() {
        return Ok(Some(format!("{} of {} pods are back", pods.len(), want.old_pods.len())));
    }
    Ok(None)
}

/// Puts back what `done` says changed, restarts the kubelet and waits for the node once
/// more; returns what it did, for the error line.
async fn rollback(ctx: &Context<'_>, node: &ClusterNode, done: &Done) -> Result<String> {
    let docker = ctx.docker;
    for name in &done.swapped {
        run(docker, node, &format!("mv -f /usr/bin/.{name}.nodeimg-previous /usr/bin/{name}")).await?;
    }
    for name in &done.staged {
        run(docker, node, &format!("rm -f /usr/bin/.{name}.nodeimg-new")).await?;
    }
    for (name, backup) in &done.image_backups {
        images::ctr(docker, &node.id, &["images", "tag", "--force", backup, name]).await?;
        images::ctr(docker, &node.id, &["images", "rm", backup]).await?;
    }
    for file in &done.manifests {
        run(docker, node, &format!("mv -f {MANIFEST_BACKUP}/{file} {MANIFESTS}/{file}")).await?;
    }
    if done.swapped.is_empty() && done.manifests.is_empty() && done.image_backups.is_empty() {
        return Ok("nothing on the node had changed".into());
    }
    if done.kubelet {
        run(docker, node, "systemctl restart kubelet").await?;
    }
    let what: Vec<&str> = done
        .swapped
        .iter()
        .copied()
        .chain(done.manifests.iter().map(String::as_str))
        .chain(done.image_backups.iter().map(|(name, _)| name.as_str()))
        .collect();
    let state = async {
        let deadline = Instant::now() + ctx.timeout;
        while Instant::now() < deadline {
            if kubectl::node_state(docker, ctx.control_plane, &node.name).await.is_ok_and(|s| s.ready) {
                return "Ready again";
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        "not Ready yet"
    }
    .await;
    Ok(format!("rolled back ({} restored), the node is {state}", what.join(", ")))
}

/// After a success: the previous binaries, manifests and image names go.
async fn cleanup(docker: &Docker, node: &ClusterNode, done: &Done) {
    for name in &done.swapped {
        run(docker, node, &format!("rm -f /usr/bin/.{name}.nodeimg-previous")).await.ok();
    }
    for (_, backup) in &done.image_backups {
        images::ctr(docker, &node.id, &["images", "rm", backup]).await.ok();
    }
    if !done.manifests.is_empty() {
        run(docker, node, &format!("rm -rf {MANIFEST_BACKUP}")).await.ok();
    }
}
