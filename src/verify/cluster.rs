//! The cluster `verify` boots, as current kind creates one: a network of its own (kind's
//! `kind` network), then one control plane and N-1 workers run with kind's flags and
//! environment, each given kind's 30 s to log systemd's boot line.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::future::join_all;

use crate::docker::Docker;
use crate::node::{self, KindRun, Node, Privilege};
use crate::progress::Reporter;

/// kind's boot-log wait (provision.go): the regexp and its limit.
pub const BOOT_LINE: &str = "Reached target .*Multi-User System.*|detected cgroup v1";
pub const BOOT_LIMIT: Duration = Duration::from_secs(30);

/// Variables kind hands every node from its own environment when set.
const PASSED_ENV: [&str; 7] = [
    "KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

pub struct ClusterNode {
    pub node: Node,
    pub name: String,
    pub role: &'static str,
}

pub struct Cluster {
    pub name: String,
    pub nodes: Vec<ClusterNode>,
    pub keep: bool,
}

impl Cluster {
    pub fn control_plane(&self) -> &ClusterNode {
        &self.nodes[0]
    }

    pub fn workers(&self) -> &[ClusterNode] {
        &self.nodes[1..]
    }

    pub fn privilege(&self) -> Privilege {
        self.nodes.first().map_or(Privilege::Privileged, |n| n.node.privilege)
    }
}

/// A name no other run uses; the network and node names derive from it as kind's do.
pub fn cluster_name() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("nodeimg-verify-{}-{:x}", std::process::id(), nanos & 0xffff)
}

/// kind's node names: `<cluster>-control-plane`, `<cluster>-worker`, `<cluster>-worker2`...
pub fn node_names(cluster: &str, nodes: usize) -> Vec<(String, &'static str)> {
    let mut names = vec![(format!("{cluster}-control-plane"), "control-plane")];
    for i in 1..nodes {
        let suffix = if i == 1 { String::new() } else { i.to_string() };
        names.push((format!("{cluster}-worker{suffix}"), "worker"));
    }
    names
}

/// The environment kind sets on a node.
pub fn node_env() -> Vec<String> {
    let mut env = vec!["KUBECONFIG=/etc/kubernetes/admin.conf".to_owned()];
    for name in PASSED_ENV {
        if let Ok(value) = std::env::var(name) {
            env.push(format!("{name}={value}"));
        }
    }
    env
}

/// Creates the network and starts every node. On an error, what was created is removed
/// (unless `keep`) before it is returned. `cluster.nodes` fills as nodes start, so a
/// caller that gets an error has nothing to clean.
pub async fn create(
    docker: &Docker,
    image: &str,
    nodes: usize,
    keep: bool,
    reporter: &Reporter,
) -> Result<Cluster> {
    let name = cluster_name();
    let mut labels = std::collections::HashMap::new();
    if keep {
        labels.insert(crate::docker::LABEL_KEEP.to_owned(), "verify --keep".to_owned());
    }
    docker.create_network(&name, labels).await?;
    let mut cluster = Cluster { name: name.clone(), nodes: Vec::new(), keep };
    let run =
        KindRun { cluster: name.clone(), network: name.clone(), env: node_env(), keep, ..KindRun::default() };
    for (node_name, role) in node_names(&name, nodes) {
        let run = KindRun { role, ..run.clone() };
        match node::start_as_kind(docker, image, &node_name, &run, reporter).await {
            Ok(node) => cluster.nodes.push(ClusterNode { node, name: node_name, role }),
            Err(err) => {
                if !keep {
                    remove(docker, &cluster).await.ok();
                }
                return Err(err);
            }
        }
    }
    Ok(cluster)
}

/// Waits, for every node at once, for kind's boot line in the node's log.
pub async fn wait_for_boot_lines(docker: &Docker, cluster: &Cluster) -> Result<()> {
    let waits = cluster.nodes.iter().map(|n| async move {
        let line = docker.wait_for_log_line(&n.node.id, BOOT_LIMIT, is_boot_line).await?;
        anyhow::Ok((n.name.as_str(), line))
    });
    for result in join_all(waits).await {
        let (name, line) = result?;
        if line.is_none() {
            bail!(
                "node {name} did not log kind's boot line (`{BOOT_LINE}`) within {} s: `kind create cluster` gives up here",
                BOOT_LIMIT.as_secs()
            );
        }
    }
    Ok(())
}

/// kind's regexp `Reached target .*Multi-User System.*|detected cgroup v1`, by hand.
pub fn is_boot_line(line: &str) -> bool {
    line.contains("detected cgroup v1")
        || line.find("Reached target ").is_some_and(|at| line[at..].contains("Multi-User System"))
}

/// Removes every node (releasing the host cgroups of a restricted one from inside first)
/// and then the network. Every node is tried; the first error is returned.
pub async fn remove(docker: &Docker, cluster: &Cluster) -> Result<()> {
    let mut first = None;
    for n in &cluster.nodes {
        let result = remove_node(docker, &n.node).await.with_context(|| format!("removing node {}", n.name));
        if let Err(err) = result {
            first.get_or_insert(err);
        }
    }
    if let Err(err) = docker.remove_network(&cluster.name).await {
        first.get_or_insert(err.into());
    }
    first.map_or(Ok(()), Err)
}

async fn remove_node(docker: &Docker, node: &Node) -> Result<()> {
    let cgroups = match &node.cgroup_root {
        Some(root) => node::release_host_cgroups(docker, &node.id, root).await,
        None => Ok(()),
    };
    // The container goes whatever happened to the cgroups.
    docker.remove_container(&node.id).await?;
    cgroups
}

/// What `--keep` prints: where the cluster is and how to remove it, with the engine's own
/// CLI (`podman`, and kind's Podman provider, when Podman answers). On Podman the nodes'
/// /var are named volumes that `rm -v` leaves: `nodeimg clean` is the one way to say.
pub fn kept_message(cluster: &Cluster, engine: &crate::docker::Engine) -> String {
    let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    let (cluster, cp) = (&cluster.name, names.first().copied().unwrap_or_default());
    let kept = format!("kept cluster {cluster} (nodes {}, network {cluster})", names.join(", "));
    if engine.is_podman() {
        return format!(
            "{kept}; try `podman exec {cp} kubectl get nodes` or `KIND_EXPERIMENTAL_PROVIDER=podman kind export logs --name {cluster}`; remove it (and its volumes) with `nodeimg clean`"
        );
    }
    format!(
        "{kept}; try `docker exec {cp} kubectl get nodes` or `kind export logs --name {cluster}`; remove it with `nodeimg clean` or `docker rm -f -v {} && docker network rm {cluster}`",
        names.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_line_is_kinds_regexp() {
        assert!(is_boot_line("[  OK  ] Reached target Multi-User System."));
        assert!(is_boot_line("[  OK  ] Reached target \u{1b}[0;1;39mMulti-User System\u{1b}[0m."));
        assert!(is_boot_line("systemd 252 running in system mode; detected cgroup v1"));
        assert!(!is_boot_line("[  OK  ] Reached target Basic System."));
        assert!(!is_boot_line("Multi-User System reached"));
    }

    #[test]
    fn node_names_follow_kind() {
        let names: Vec<String> = node_names("c", 3).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["c-control-plane", "c-worker", "c-worker2"]);
        assert_eq!(node_names("c", 1)[0].1, "control-plane");
    }

    #[test]
    fn nodes_get_kinds_kubeconfig_variable() {
        assert!(node_env().contains(&"KUBECONFIG=/etc/kubernetes/admin.conf".to_owned()));
    }
}
