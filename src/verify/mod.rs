//! `nodeimg verify IMAGE`: boots the node image the way current kind does (its own
//! network, kind's run flags and environment, kind's boot-log wait), brings up a control
//! plane with kubeadm and `--nodes N`-1 workers that join it, applies the image's own CNI
//! and storage manifests as kind would, waits for every node to be Ready, resolves a name
//! through the node's resolver from a pod, runs a pod, and removes everything again
//! (unless `--keep`). Each stage is timed; the first one that fails ends the check.

mod bootstrap;
pub mod cluster;
pub mod cni;
mod diagnose;
pub mod kubeadm;
mod pods;
mod report;
mod sandboxes;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use self::cluster::{Cluster, ClusterNode};
pub use self::cni::Cni;
pub use self::report::{Report, Stage};
use crate::docker::{Docker, ExecOutput};
use crate::kube::KubeVersion;
use crate::node::containerd;
use crate::progress::Reporter;

/// Every kubectl call is bounded: an API server that accepts the connection and never
/// answers must not stall a stage past its timeout.
const KUBECTL: [&str; 3] = ["kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "--request-timeout=20s"];

#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub image: String,
    /// The limit of every wait (boot, control plane, API, node Ready, pod).
    pub timeout: Duration,
    pub cni: Cni,
    /// One control plane plus `nodes - 1` workers.
    pub nodes: usize,
    /// Leave the cluster running (on success and failure alike) for debugging.
    pub keep: bool,
}

/// Verifies `cfg.image`. The report is complete either way (stages passed, the one that
/// failed); the result says whether every stage passed.
pub async fn verify(cfg: &VerifyConfig, docker: &Docker, reporter: &Reporter) -> (Report, Result<()>) {
    let mut report = Report::new(&cfg.image);
    let started = Instant::now();
    let what = if cfg.nodes > 1 { format!("{} nodes", cfg.nodes) } else { "a node".to_owned() };
    let step = reporter.step(format!("booting {what} from {} as kind does", cfg.image));
    let cluster = match cluster::create(docker, &cfg.image, cfg.nodes, cfg.keep, reporter).await {
        Ok(cluster) => cluster,
        Err(err) => {
            step.fail("failed");
            report.failed("boot", started.elapsed());
            return (report, Err(err.context("boot")));
        }
    };
    report.privilege = Some(cluster.privilege());
    let result = stages(cfg, docker, reporter, &cluster, &mut report, step, started).await;
    if result.is_err() {
        diagnose::diagnose(docker, &cluster.control_plane().node.id, reporter).await;
    }
    if cluster.keep {
        reporter.info(cluster::kept_message(&cluster, docker.engine()));
        return (report, result);
    }
    let cleanup = cluster::remove(docker, &cluster).await.context("removing the cluster");
    let result = match (result, cleanup) {
        (Err(err), _) => Err(err),
        (Ok(()), cleanup) => cleanup,
    };
    (report, result)
}

/// The stages after `docker run`; `step` is the boot's progress line.
async fn stages(
    cfg: &VerifyConfig,
    docker: &Docker,
    reporter: &Reporter,
    cluster: &Cluster,
    report: &mut Report,
    step: crate::progress::Step,
    started: Instant,
) -> Result<()> {
    let timeout = cfg.timeout;
    let cp = cluster.control_plane();
    let id = cp.node.id.as_str();
    let booted = stage(report, "boot", started, boot(docker, cluster, timeout)).await;
    let booted = match booted {
        Ok(state) => {
            step.finish(format!("systemd {state}"));
            state
        }
        Err(err) => {
            step.fail("failed");
            return Err(err);
        }
    };
    if booted == "degraded" {
        let failed = run(docker, id, &["systemctl", "--failed", "--no-legend", "--plain"]).await?.stdout;
        reporter.detail(format!(
            "failed units: {}",
            failed.split_whitespace().step_by(5).collect::<Vec<_>>().join(" ")
        ));
    }

    let facts = node_facts(docker, cp).await.context("reading the node")?;
    let endpoint = format!("{}:6443", facts.ip);
    report.kubernetes_version = Some(facts.version.text.clone());
    let step = reporter.step(format!("kubeadm init (Kubernetes {})", facts.version));
    let init =
        stage(report, "kubeadm init", Instant::now(), bootstrap::init(docker, cp, &facts, timeout, reporter))
            .await;
    close(step, &init, "done");
    init?;

    let step = reporter.step("waiting for the API server (/readyz)");
    let ready = stage(report, "API ready", Instant::now(), async {
        wait(timeout, "the API server's /readyz", || async {
            let out = kubectl(docker, id, &["get", "--raw", "/readyz"]).await?;
            Ok(if out.stdout.trim() == "ok" { Ok(()) } else { Err(out.last_line().to_owned()) })
        })
        .await
    })
    .await;
    close(step, &ready, "ok");
    ready?;

    let step = reporter.step("applying the CNI and storage manifests as kind does");
    let used = stage(report, "CNI and storage", Instant::now(), async {
        let used = bootstrap::install_cni(docker, &cluster.nodes, cfg.cni, &endpoint, reporter)
            .await
            .context("installing the CNI")?;
        bootstrap::install_storage(docker, id, reporter).await.context("installing the storage")?;
        Ok(used)
    })
    .await;
    close(step, &used, "applied");
    let used = used?;
    report_cni(reporter, used);
    report.cni = Some(used);

    if !cluster.workers().is_empty() {
        let step = reporter.step(format!("kubeadm join ({} workers)", cluster.workers().len()));
        let joined = stage(report, "kubeadm join", Instant::now(), async {
            for worker in cluster.workers() {
                let facts =
                    node_facts(docker, worker).await.with_context(|| format!("reading {}", worker.name))?;
                bootstrap::join(docker, worker, &facts, &endpoint, timeout, reporter).await?;
            }
            Ok(())
        })
        .await;
        close(step, &joined, "joined");
        joined?;
    }

    let step = reporter.step(format!("waiting for {} to be Ready", plural(cluster.nodes.len(), "node")));
    let ready = stage(report, "node Ready", Instant::now(), async {
        for node in &cluster.nodes {
            wait(timeout, &format!("node {} to be Ready", node.name), || async {
                let out = kubectl(docker, id, &["get", "node", &node.name, "-o", READY_JSONPATH]).await?;
                Ok(if out.stdout.trim() == "True" { Ok(()) } else { Err(not_ready(&out)) })
            })
            .await?;
        }
        Ok(())
    })
    .await;
    close(step, &ready, "Ready");
    ready?;

    // Pods land on a worker when there is one: kind's most common multi-node case.
    let on = cluster.workers().first().unwrap_or(cp);
    let step = reporter.step(format!("resolving {} from a dnsPolicy: Default pod on {}", cp.name, on.name));
    let dns = stage(
        report,
        "DNS",
        Instant::now(),
        pods::check_dns(docker, id, (&on.name, &on.node.id), &cp.name, &facts.ip, timeout),
    )
    .await;
    close(step, &dns, "resolved");
    dns?;

    let step = reporter.step(format!("running a test pod on {}", on.name));
    let target = (cluster.nodes.len() > 1).then_some(on.name.as_str());
    let pod =
        stage(report, "pod Running", Instant::now(), pods::run_test_pod(docker, id, target, timeout)).await;
    close(step, &pod, "Running");
    pod
}

/// kind's boot-log wait on every node, then systemd and containerd up in each.
async fn boot(docker: &Docker, cluster: &Cluster, timeout: Duration) -> Result<String> {
    cluster::wait_for_boot_lines(docker, cluster).await?;
    let mut states = Vec::new();
    for node in &cluster.nodes {
        let id = node.node.id.as_str();
        let state = wait(timeout, &format!("systemd in {} to finish booting", node.name), || async {
            let state = run(docker, id, &["systemctl", "is-system-running"]).await?.stdout;
            let state = state.trim().to_owned();
            let containerd = run(docker, id, &["ctr", "version"]).await?.success();
            Ok((matches!(state.as_str(), "running" | "degraded") && containerd)
                .then_some(state.clone())
                .ok_or(format!("systemd {state}, containerd {}", if containerd { "up" } else { "down" })))
        })
        .await?;
        states.push(state);
    }
    Ok(if states.iter().any(|s| s == "degraded") { "degraded".into() } else { "running".into() })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("the {what}") } else { format!("{n} {what}s") }
}

fn close<T>(step: crate::progress::Step, result: &Result<T>, outcome: &str) {
    match result {
        Ok(_) => step.finish(outcome),
        Err(_) => step.fail("failed"),
    }
}

const READY_JSONPATH: &str = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";

fn not_ready(out: &ExecOutput) -> String {
    if out.success() { format!("Ready={}", out.stdout.trim()) } else { out.last_line().to_owned() }
}

fn report_cni(reporter: &Reporter, used: Cni) {
    reporter.detail(format!("CNI: {}", if used == Cni::Default { cni::DEFAULT_MANIFEST } else { "bridge" }));
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

/// Polls `check` every half second until it answers `Ok(value)`; `Err(state)` is the
/// latest state, quoted when the wait times out. A check that itself hangs (an exec that
/// never returns) is cut off at the deadline too.
async fn wait<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let start = Instant::now();
    loop {
        let remaining = timeout.saturating_sub(start.elapsed()).max(Duration::from_secs(1));
        let last = match tokio::time::timeout(remaining, check()).await {
            Ok(answer) => match answer? {
                Ok(value) => return Ok(value),
                Err(state) => state,
            },
            Err(_) => {
                format!("a check did not answer within {}", crate::progress::format_duration(remaining))
            }
        };
        if start.elapsed() > timeout {
            bail!(
                "timed out after {} waiting for {what} (last: {last})",
                crate::progress::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(docker: &Docker, id: &str, cmd: &[&str]) -> Result<ExecOutput> {
    Ok(docker.exec(id, cmd).await?)
}

async fn kubectl(docker: &Docker, id: &str, args: &[&str]) -> Result<ExecOutput> {
    let cmd: Vec<&str> = KUBECTL.iter().copied().chain(args.iter().copied()).collect();
    run(docker, id, &cmd).await
}

async fn node_facts(docker: &Docker, node: &ClusterNode) -> Result<kubeadm::NodeFacts> {
    let id = node.node.id.as_str();
    let version = run(docker, id, &["cat", "/kind/version"]).await?;
    if !version.success() {
        bail!("the image has no /kind/version: is it a node image?");
    }
    let version = KubeVersion::parse(&version.stdout).context("reading /kind/version")?;
    let systemd_cgroup = containerd::read_config(docker, id).await?.systemd_cgroup()?;
    // The node sees the host's cgroup version: cgroup v2 has cgroup.controllers at the root.
    let cgroup_v1 = !run(docker, id, &["test", "-e", "/sys/fs/cgroup/cgroup.controllers"]).await?.success();
    let network = docker.container_network(id).await?;
    let ip = network.ip.ok_or_else(|| anyhow!("the node container has no IP address"))?;
    Ok(kubeadm::NodeFacts { version, name: node.name.clone(), ip, systemd_cgroup, cgroup_v1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_that_hangs_is_cut_off_at_the_timeout() {
        let started = Instant::now();
        let err = wait::<(), _, _>(Duration::from_secs(1), "a stuck exec", std::future::pending)
            .await
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
        assert!(err.contains("timed out after") && err.contains("did not answer"), "{err}");
    }

    #[test]
    fn kubectl_calls_carry_a_request_timeout() {
        assert!(KUBECTL.iter().any(|a| a.starts_with("--request-timeout=")));
    }
}
