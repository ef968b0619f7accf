//! The stages of a check after `docker run`, in order; each is timed in the report, and the
//! first that fails ends the check.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cluster::{self, Cluster};
use super::{Cni, Report, VerifyConfig, bootstrap, cni, kubectl, node_facts, pods, run as exec, wait};
use crate::docker::{Docker, ExecOutput};
use crate::progress::{Reporter, Step};

/// What every stage works with.
struct Check<'a> {
    docker: &'a Docker,
    reporter: &'a Reporter,
    cluster: &'a Cluster,
    timeout: Duration,
}

/// The stages; `step` is the boot's progress line, started at `started` with `docker run`.
pub async fn run(
    cfg: &VerifyConfig,
    docker: &Docker,
    reporter: &Reporter,
    cluster: &Cluster,
    report: &mut Report,
    step: Step,
    started: Instant,
) -> Result<()> {
    let c = Check { docker, reporter, cluster, timeout: cfg.timeout };
    let cp = cluster.control_plane();
    // 1. Every node boots as kind waits for it (its boot line, then systemd and containerd).
    booted(&c, report, step, started).await?;
    // 2. kubeadm init on the control plane.
    let facts = node_facts(docker, cp).await.context("reading the node")?;
    let endpoint = format!("{}:6443", facts.ip);
    report.kubernetes_version = Some(facts.version.text.clone());
    let init = bootstrap::init(docker, cp, &facts, c.timeout, reporter);
    c.stage(report, "kubeadm init", format!("kubeadm init (Kubernetes {})", facts.version), "done", init)
        .await?;
    // 3. The API server answers /readyz.
    c.stage(report, "API ready", "waiting for the API server (/readyz)", "ok", api_ready(&c)).await?;
    // 4. The image's CNI and storage manifests, applied as kind does.
    let message = "applying the CNI and storage manifests as kind does";
    let used = c
        .stage(report, "CNI and storage", message, "applied", cni_and_storage(&c, cfg.cni, &endpoint))
        .await?;
    reporter.detail(format!("CNI: {}", if used == Cni::Default { cni::DEFAULT_MANIFEST } else { "bridge" }));
    report.cni = Some(used);
    // 5. The workers join.
    if !cluster.workers().is_empty() {
        let message = format!("kubeadm join ({} workers)", cluster.workers().len());
        c.stage(report, "kubeadm join", message, "joined", join_workers(&c, &endpoint)).await?;
    }
    // 6. Every node is Ready.
    let message = format!("waiting for {} to be Ready", plural(cluster.nodes.len(), "node"));
    c.stage(report, "node Ready", message, "Ready", nodes_ready(&c)).await?;
    // 7. A name resolves from a dnsPolicy: Default pod, on a worker when there is one (kind's
    //    most common multi-node case); skipped, and said so, where the network cannot.
    let on = cluster.workers().first().unwrap_or(cp);
    let message = format!("resolving {} from a dnsPolicy: Default pod on {}", cp.name, on.name);
    let dns =
        pods::check_dns(docker, cp.node.id.as_str(), (&on.name, &on.node.id), &cp.name, &facts.ip, c.timeout);
    let step = reporter.step(message);
    match stage(report, "DNS", Instant::now(), dns).await {
        Ok(None) => step.finish("resolved"),
        Ok(Some(why)) => {
            step.finish(format!("skipped: {why}"));
            report.skipped(why);
        }
        Err(err) => {
            step.fail("failed");
            return Err(err);
        }
    }
    // 8. A test pod runs.
    let target = (cluster.nodes.len() > 1).then_some(on.name.as_str());
    let pod = pods::run_test_pod(docker, cp.node.id.as_str(), target, c.timeout);
    c.stage(report, "pod Running", format!("running a test pod on {}", on.name), "Running", pod).await
}

impl Check<'_> {
    /// Runs `work` as the stage `name`: a progress line saying `message`, ending in `done`.
    async fn stage<T>(
        &self,
        report: &mut Report,
        name: &'static str,
        message: impl Into<String>,
        done: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let step = self.reporter.step(message.into());
        let result = stage(report, name, Instant::now(), work).await;
        close(step, &result, done);
        result
    }
}

async fn booted(c: &Check<'_>, report: &mut Report, step: Step, started: Instant) -> Result<()> {
    let state = stage(report, "boot", started, boot(c.docker, c.cluster, c.timeout)).await;
    let state = match state {
        Ok(state) => {
            step.finish(format!("systemd {state}"));
            state
        }
        Err(err) => {
            step.fail("failed");
            return Err(err);
        }
    };
    if state == "degraded" {
        let id = c.cluster.control_plane().node.id.as_str();
        let failed = exec(c.docker, id, &["systemctl", "--failed", "--no-legend", "--plain"]).await?.stdout;
        let units = failed.split_whitespace().step_by(5).collect::<Vec<_>>().join(" ");
        c.reporter.detail(format!("failed units: {units}"));
    }
    Ok(())
}

/// kind's boot-log wait on every node, then systemd and containerd up in each.
async fn boot(docker: &Docker, cluster: &Cluster, timeout: Duration) -> Result<String> {
    cluster::wait_for_boot_lines(docker, cluster).await?;
    let mut states = Vec::new();
    for node in &cluster.nodes {
        let id = node.node.id.as_str();
        let state = wait(timeout, &format!("systemd in {} to finish booting", node.name), || async {
            let state = exec(docker, id, &["systemctl", "is-system-running"]).await?.stdout;
            let state = state.trim().to_owned();
            let containerd = exec(docker, id, &["ctr", "version"]).await?.success();
            Ok((matches!(state.as_str(), "running" | "degraded") && containerd)
                .then_some(state.clone())
                .ok_or(format!("systemd {state}, containerd {}", if containerd { "up" } else { "down" })))
        })
        .await?;
        states.push(state);
    }
    Ok(if states.iter().any(|s| s == "degraded") { "degraded".into() } else { "running".into() })
}

async fn api_ready(c: &Check<'_>) -> Result<()> {
    let id = c.cluster.control_plane().node.id.as_str();
    wait(c.timeout, "the API server's /readyz", || async {
        let out = kubectl(c.docker, id, &["get", "--raw", "/readyz"]).await?;
        Ok(if out.stdout.trim() == "ok" { Ok(()) } else { Err(out.last_line().to_owned()) })
    })
    .await
}

async fn cni_and_storage(c: &Check<'_>, wanted: Cni, endpoint: &str) -> Result<Cni> {
    let used = bootstrap::install_cni(c.docker, &c.cluster.nodes, wanted, endpoint, c.reporter)
        .await
        .context("installing the CNI")?;
    let id = c.cluster.control_plane().node.id.as_str();
    bootstrap::install_storage(c.docker, id, c.reporter).await.context("installing the storage")?;
    Ok(used)
}

async fn join_workers(c: &Check<'_>, endpoint: &str) -> Result<()> {
    for worker in c.cluster.workers() {
        let facts = node_facts(c.docker, worker).await.with_context(|| format!("reading {}", worker.name))?;
        bootstrap::join(c.docker, worker, &facts, endpoint, c.timeout, c.reporter).await?;
    }
    Ok(())
}

const READY_JSONPATH: &str = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";

async fn nodes_ready(c: &Check<'_>) -> Result<()> {
    let id = c.cluster.control_plane().node.id.as_str();
    for node in &c.cluster.nodes {
        wait(c.timeout, &format!("node {} to be Ready", node.name), || async {
            let out = kubectl(c.docker, id, &["get", "node", &node.name, "-o", READY_JSONPATH]).await?;
            Ok(if out.stdout.trim() == "True" { Ok(()) } else { Err(not_ready(&out)) })
        })
        .await?;
    }
    Ok(())
}

fn not_ready(out: &ExecOutput) -> String {
    if out.success() { format!("Ready={}", out.stdout.trim()) } else { out.last_line().to_owned() }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("the {what}") } else { format!("{n} {what}s") }
}

fn close<T>(step: Step, result: &Result<T>, outcome: &str) {
    match result {
        Ok(_) => step.finish(outcome),
        Err(_) => step.fail("failed"),
    }
}

/// Runs `work` as the stage `name` of the report, started at `started`.
async fn stage<T>(
    report: &mut Report,
    name: &'static str,
    started: Instant,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    match work.await {
        Ok(value) => {
            report.passed(name, started.elapsed());
            Ok(value)
        }
        Err(err) => {
            report.failed(name, started.elapsed());
            Err(err.context(name))
        }
    }
}
