//! `nodeimg verify IMAGE`: boots the node image the way kind does, brings up a single-node
//! control plane with kubeadm, waits for the node to be Ready and a pod to run, and removes
//! everything again. Each stage is timed; the first one that fails ends the check.

pub mod cni;
mod diagnose;
pub mod kubeadm;
mod report;
mod sandboxes;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub use self::cni::Cni;
pub use self::report::{Report, Stage};
use crate::docker::{Docker, ExecOutput};
use crate::kube::KubeVersion;
use crate::node::{self, Node, Privilege};
use crate::node::{containerd, files};
use crate::progress::Reporter;

const KUBEADM_CONFIG: &str = "/kind/kubeadm.conf";
/// Every kubectl call is bounded: an API server that accepts the connection and never
/// answers must not stall a stage past its timeout.
const KUBECTL: [&str; 3] = ["kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "--request-timeout=20s"];
const POD_TEMPLATE: &str = include_str!("../../templates/verify-pod.yaml.hbs");

#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub image: String,
    /// The limit of every wait (boot, control plane, API, node Ready, pod).
    pub timeout: Duration,
    pub cni: Cni,
}

/// Verifies `cfg.image`. The report is complete either way (stages passed, the one that
/// failed); the result says whether every stage passed.
pub async fn verify(cfg: &VerifyConfig, docker: &Docker, reporter: &Reporter) -> (Report, Result<()>) {
    let mut report = Report::new(&cfg.image);
    let started = Instant::now();
    let step = reporter.step(format!("booting a node from {}", cfg.image));
    let node = match node::start(docker, &cfg.image, Some(&node_name()), reporter).await {
        Ok(node) => node,
        Err(err) => {
            step.fail("failed");
            report.failed("boot", started.elapsed());
            return (report, Err(err.context("boot")));
        }
    };
    report.privilege = Some(node.privilege);
    let result = stages(cfg, docker, reporter, &node, &mut report, step, started).await;
    if result.is_err() {
        diagnose::diagnose(docker, &node.id, reporter).await;
    }
    let cleanup = remove_node(docker, &node).await.context("removing the node container");
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
    node: &Node,
    report: &mut Report,
    step: crate::progress::Step,
    started: Instant,
) -> Result<()> {
    let id = node.id.as_str();
    let timeout = cfg.timeout;
    let booted = stage(report, "boot", started, async {
        wait(timeout, "systemd to finish booting", || async {
            let state = run(docker, id, &["systemctl", "is-system-running"]).await?.stdout;
            let state = state.trim().to_owned();
            let containerd = run(docker, id, &["ctr", "version"]).await?.success();
            Ok((matches!(state.as_str(), "running" | "degraded") && containerd)
                .then_some(state.clone())
                .ok_or(format!("systemd {state}, containerd {}", if containerd { "up" } else { "down" })))
        })
        .await
    })
    .await;
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

    let facts = node_facts(docker, node).await.context("reading the node")?;
    report.kubernetes_version = Some(facts.version.text.clone());
    let step = reporter.step(format!("kubeadm init (Kubernetes {})", facts.version));
    let init =
        stage(report, "kubeadm init", Instant::now(), kubeadm_init(docker, id, &facts, timeout, reporter))
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

    let step = reporter.step("installing a CNI and waiting for the node to be Ready");
    let ready = stage(report, "node Ready", Instant::now(), async {
        let used =
            install_cni(docker, id, cfg.cni, &facts.ip, reporter).await.context("installing the CNI")?;
        report_cni(reporter, used);
        wait(timeout, "the node to be Ready", || async {
            let out = kubectl(docker, id, &["get", "node", &facts.name, "-o", READY_JSONPATH]).await?;
            Ok(if out.stdout.trim() == "True" { Ok(used) } else { Err(not_ready(&out)) })
        })
        .await
    })
    .await;
    close(step, &ready, "Ready");
    report.cni = Some(ready?);

    let step = reporter.step("running a test pod");
    let pod = stage(report, "pod Running", Instant::now(), run_test_pod(docker, id, timeout)).await;
    close(step, &pod, "Running");
    pod
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

fn node_name() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("nodeimg-verify-{}-{:x}", std::process::id(), nanos & 0xffff)
}

async fn node_facts(docker: &Docker, node: &Node) -> Result<kubeadm::NodeFacts> {
    let version = run(docker, &node.id, &["cat", "/kind/version"]).await?;
    if !version.success() {
        bail!("the image has no /kind/version: is it a node image?");
    }
    let version = KubeVersion::parse(&version.stdout).context("reading /kind/version")?;
    let config = files::read(docker, &node.id, containerd::CONFIG).await?;
    let systemd_cgroup = containerd::systemd_cgroup(&config)?;
    let network = docker.container_network(&node.id).await?;
    let ip = network.ip.ok_or_else(|| anyhow!("the node container has no IP address"))?;
    let name = run(docker, &node.id, &["hostname"]).await?.stdout.trim().to_owned();
    Ok(kubeadm::NodeFacts { version, name, ip, systemd_cgroup })
}

async fn kubeadm_init(
    docker: &Docker,
    id: &str,
    facts: &kubeadm::NodeFacts,
    timeout: Duration,
    reporter: &Reporter,
) -> Result<()> {
    files::write(docker, id, KUBEADM_CONFIG, kubeadm::render(facts, timeout)?).await?;
    let mut cmd = vec!["kubeadm", "init", "--config", KUBEADM_CONFIG, "--skip-token-print"];
    if run(docker, id, &["sh", "-c", "command -v crictl"]).await?.success() {
        // The checks still run and are reported; a container fails some of them (kernel
        // config, swap) that do not matter to a kind node.
        cmd.push("--ignore-preflight-errors=all");
    } else {
        reporter.info("the image has no crictl: skipping kubeadm's preflight phase, which needs it");
        cmd.push("--skip-phases=preflight");
    }
    // kubeadm waits for the control plane with the configured timeout; this bounds the rest.
    let limit = timeout * 2 + Duration::from_secs(60);
    let init = tokio::time::timeout(limit, run(docker, id, &cmd));
    // A pause image that exits shows in kubeadm only as a control plane that never comes up.
    let out = tokio::select! {
        out = init => out.map_err(|_| {
            anyhow!("kubeadm init did not finish within {}", crate::progress::format_duration(limit))
        })??,
        dead = sandboxes::watch(docker, id) => return Err(dead),
    };
    for line in out.stdout.lines() {
        reporter.detail(format!("kubeadm: {line}"));
    }
    if !out.success() {
        bail!("kubeadm init failed (exit {}): {}", out.code, diagnose::kubeadm_error(&out));
    }
    Ok(())
}

/// The default CNI goes in as kind applies it: [`cni::kind_template`] with the pod subnet and
/// `<node-ip>:6443`, refused if a template action is left.
async fn install_cni(
    docker: &Docker,
    id: &str,
    choice: Cni,
    node_ip: &str,
    reporter: &Reporter,
) -> Result<Cni> {
    let manifest = run(docker, id, &["cat", cni::DEFAULT_MANIFEST]).await?;
    let manifest = manifest.success().then_some(manifest.stdout);
    let present = run(docker, id, &["ctr", "-n", "k8s.io", "images", "ls", "-q"]).await?.stdout;
    let present: Vec<String> = present.lines().map(crate::reference::normalize).collect();
    let (used, why) = cni::decide(choice, manifest.as_deref(), &present);
    if let Some(why) = why {
        reporter.info(format!("CNI: bridge, because {why}"));
    }
    match used {
        Cni::Default => {
            let manifest = manifest.ok_or_else(|| anyhow!("the image has no {}", cni::DEFAULT_MANIFEST))?;
            let filled = cni::kind_template(&manifest, kubeadm::POD_SUBNET, &format!("{node_ip}:6443"))?;
            if cni::unfilled(&filled) {
                bail!(
                    "{} would reach the cluster with an unfilled template ({{{{ left after kind's templating; are its marker lines missing?)",
                    cni::DEFAULT_MANIFEST
                );
            }
            let cmd: Vec<&str> = KUBECTL.iter().copied().chain(["apply", "-f", "-"]).collect();
            let out = docker.exec_with_stdin(id, &cmd, std::io::Cursor::new(filled.into_bytes())).await?;
            if !out.success() {
                bail!("kubectl apply -f {}: {}", cni::DEFAULT_MANIFEST, out.last_line());
            }
        }
        _ => {
            files::write(docker, id, cni::BRIDGE_CONFLIST, cni::bridge_conflist(kubeadm::NODE_POD_SUBNET)?)
                .await?
        }
    }
    Ok(used)
}

/// A pod from the sandbox image (in every node image, never pulled), tolerating the
/// control-plane taint; Running means the kubelet, containerd, runc and the CNI all work.
async fn run_test_pod(docker: &Docker, id: &str, timeout: Duration) -> Result<()> {
    let config = files::read(docker, id, containerd::CONFIG).await?;
    let image = containerd::sandbox_image(&config)?;
    let pod = crate::templates::render(POD_TEMPLATE, &serde_json::json!({ "image": image }))?;
    let cmd: Vec<&str> = KUBECTL.iter().copied().chain(["apply", "-f", "-"]).collect();
    // The default service account appears shortly after the API; admission refuses pods
    // until then.
    wait(timeout, "the test pod to be accepted", || async {
        let out = docker.exec_with_stdin(id, &cmd, std::io::Cursor::new(pod.clone().into_bytes())).await?;
        Ok(if out.success() { Ok(()) } else { Err(out.last_line().to_owned()) })
    })
    .await?;
    wait(timeout, &format!("the test pod ({image}) to be Running"), || async {
        let out =
            kubectl(docker, id, &["get", "pod", "nodeimg-verify", "-o", "jsonpath={.status.phase}"]).await?;
        Ok(if out.stdout.trim() == "Running" { Ok(()) } else { Err(format!("phase {}", out.stdout.trim())) })
    })
    .await
}

/// Removes the node container with its /var volume. A node that shared the host's cgroup
/// namespace leaves its pods' cgroups under the host's /sys/fs/cgroup/*/kubelet: those are
/// released from inside first.
async fn remove_node(docker: &Docker, node: &Node) -> Result<()> {
    let host_cgroups = node.privilege == Privilege::Restricted
        || docker.container_network(&node.id).await.map(|n| n.host_cgroupns).unwrap_or(false);
    let cgroups = if host_cgroups { node::release_host_cgroups(docker, &node.id).await } else { Ok(()) };
    // The container goes whatever happened to the cgroups.
    docker.remove_container(&node.id).await?;
    cgroups
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
