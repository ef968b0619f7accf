//! kind's actions after the nodes boot, in kind's order: `kubeadm init` on the control
//! plane, the default CNI and storage manifests applied from the node's `/kind/manifests`,
//! `kubeadm join` on every worker.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::cluster::ClusterNode;
use super::{KUBECTL, cni, diagnose, kubeadm, run, sandboxes};
use crate::docker::Docker;
use crate::node::files;
use crate::progress::Reporter;

const KUBEADM_CONFIG: &str = "/kind/kubeadm.conf";
pub const STORAGE_MANIFEST: &str = "/kind/manifests/default-storage.yaml";

/// kind runs preflight (ignoring its errors) only where crictl is, which it needs; a
/// container fails some checks (kernel config, swap) that do not matter to a kind node.
async fn preflight_flag(docker: &Docker, id: &str, reporter: &Reporter) -> Result<&'static str> {
    Ok(if run(docker, id, &["sh", "-c", "command -v crictl"]).await?.success() {
        "--ignore-preflight-errors=all"
    } else {
        reporter.info("the image has no crictl: skipping kubeadm's preflight phase, which needs it");
        "--skip-phases=preflight"
    })
}

/// A node that shares the host's cgroups gets a cgroup root of its own (the flag after
/// kubeadm's wins), created in every hierarchy before the kubelet starts.
pub async fn own_cgroup_root(docker: &Docker, node: &ClusterNode) -> Result<()> {
    let Some(root) = &node.node.cgroup_root else { return Ok(()) };
    let script = format!(
        "for d in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do [ -L \"${{d%/}}\" ] || mkdir -p \"$d{root}\" 2>/dev/null; done; \
         echo 'KUBELET_EXTRA_ARGS=--cgroup-root=/{root}' > /etc/default/kubelet"
    );
    let out = run(docker, &node.node.id, &["sh", "-c", &script]).await?;
    if !out.success() {
        bail!("giving the kubelet of {} the cgroup root /{root}: {}", node.name, out.last_line());
    }
    Ok(())
}

pub async fn init(
    docker: &Docker,
    node: &ClusterNode,
    facts: &kubeadm::NodeFacts,
    timeout: Duration,
    reporter: &Reporter,
) -> Result<()> {
    let id = node.node.id.as_str();
    own_cgroup_root(docker, node).await?;
    files::write(docker, id, KUBEADM_CONFIG, kubeadm::render(facts, timeout)?).await?;
    let preflight = preflight_flag(docker, id, reporter).await?;
    let cmd = ["kubeadm", "init", "--config", KUBEADM_CONFIG, "--skip-token-print", preflight];
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

/// `kubeadm join` on a worker, against the control plane's `ip:6443`.
pub async fn join(
    docker: &Docker,
    node: &ClusterNode,
    facts: &kubeadm::NodeFacts,
    endpoint: &str,
    timeout: Duration,
    reporter: &Reporter,
) -> Result<()> {
    let id = node.node.id.as_str();
    own_cgroup_root(docker, node).await?;
    files::write(docker, id, KUBEADM_CONFIG, kubeadm::render_join(facts, endpoint)?).await?;
    let preflight = preflight_flag(docker, id, reporter).await?;
    let cmd = ["kubeadm", "join", "--config", KUBEADM_CONFIG, preflight];
    let limit = timeout + Duration::from_secs(60);
    let out = tokio::time::timeout(limit, run(docker, id, &cmd)).await.map_err(|_| {
        anyhow!(
            "kubeadm join on {} did not finish within {}",
            node.name,
            crate::progress::format_duration(limit)
        )
    })??;
    if !out.success() {
        bail!("kubeadm join on {} failed (exit {}): {}", node.name, out.code, diagnose::kubeadm_error(&out));
    }
    Ok(())
}

/// The default CNI goes in as kind applies it: [`cni::kind_template`] with the pod subnet and
/// `<control-plane-ip>:6443`, refused if a template action is left. The bridge is written
/// to every node, each with its own subnet.
pub async fn install_cni(
    docker: &Docker,
    nodes: &[ClusterNode],
    choice: cni::Cni,
    endpoint: &str,
    reporter: &Reporter,
) -> Result<cni::Cni> {
    let id = nodes.first().map(|n| n.node.id.as_str()).ok_or_else(|| anyhow!("no nodes"))?;
    let manifest = run(docker, id, &["cat", cni::DEFAULT_MANIFEST]).await?;
    let manifest = manifest.success().then_some(manifest.stdout);
    let present = run(docker, id, &["ctr", "-n", "k8s.io", "images", "ls", "-q"]).await?.stdout;
    let present: Vec<String> = present.lines().map(crate::reference::normalize).collect();
    let (used, why) = cni::decide(choice, manifest.as_deref(), &present);
    if let Some(why) = why {
        reporter.info(format!("CNI: bridge, because {why}"));
    }
    match used {
        cni::Cni::Default => {
            let manifest = manifest.ok_or_else(|| anyhow!("the image has no {}", cni::DEFAULT_MANIFEST))?;
            let filled = cni::kind_template(&manifest, kubeadm::POD_SUBNET, endpoint)?;
            apply(docker, id, cni::DEFAULT_MANIFEST, filled).await?;
        }
        _ => {
            for (index, node) in nodes.iter().enumerate() {
                let conflist = cni::bridge_conflist(&kubeadm::node_pod_subnet(index))?;
                files::write(docker, &node.node.id, cni::BRIDGE_CONFLIST, conflist).await?;
            }
        }
    }
    Ok(used)
}

/// kind's `installstorage` action: the node's manifest applied as it is (kind does not
/// template it). An image without one gets kind's built-in manifest from kind; here that
/// is only reported.
pub async fn install_storage(docker: &Docker, id: &str, reporter: &Reporter) -> Result<()> {
    let manifest = run(docker, id, &["cat", STORAGE_MANIFEST]).await?;
    if !manifest.success() {
        reporter.info(format!("the image has no {STORAGE_MANIFEST}: kind would apply its own"));
        return Ok(());
    }
    apply(docker, id, STORAGE_MANIFEST, manifest.stdout).await
}

async fn apply(docker: &Docker, id: &str, path: &str, manifest: String) -> Result<()> {
    if cni::unfilled(&manifest) {
        bail!(
            "{path} would reach the cluster with an unfilled template ({{{{ left after kind's templating; are its marker lines missing?)"
        );
    }
    let cmd: Vec<&str> = KUBECTL.iter().copied().chain(["apply", "-f", "-"]).collect();
    let out = docker
        .exec_with_stdin(id, &cmd, std::io::Cursor::new(manifest.into_bytes()))
        .await
        .with_context(|| format!("applying {path}"))?;
    if !out.success() {
        bail!("kubectl apply -f {path}: {}", out.last_line());
    }
    Ok(())
}
