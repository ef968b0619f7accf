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
mod sandboxes;
mod stages;
mod summary;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use self::cluster::ClusterNode;
pub use self::cni::Cni;
pub use self::summary::{Report, Stage};
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
    /// `--allow-skipped`: a stage that could check nothing here does not fail the check.
    pub allow_skipped: bool,
}

/// Verifies `cfg.image`. The report is complete either way (stages passed, the one that
/// failed); the result says whether every stage passed.
pub async fn verify(cfg: &VerifyConfig, docker: &Docker, reporter: &Reporter) -> (Report, Result<()>) {
    let mut report = Report::new(&cfg.image);
    report.allow_skipped = cfg.allow_skipped;
    // A pinned reference is checked before anything starts: the engine would run the image
    // under its tag whatever its digest.
    if cfg.image.contains('@') {
        match docker.inspect_image(&cfg.image).await {
            Ok(Some(_)) => {}
            Ok(None) => return (report, Err(anyhow!("no such image {}", cfg.image))),
            Err(err) => return (report, Err(err.into())),
        }
    }
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
    let result =
        stages::run(cfg, docker, reporter, &cluster, &mut report, step, started).await.and_then(|()| {
            match report.refused_skip() {
                Some((name, why)) => Err(anyhow::anyhow!(
                    "stage {name} was skipped ({why}); --allow-skipped accepts a skipped stage"
                )),
                None => Ok(()),
            }
        });
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
