//! A kind cluster's nodes as kind finds them: containers labelled
//! `io.x-k8s.kind.cluster=NAME`, their role from `io.x-k8s.kind.role`.

use anyhow::{Result, bail};

use crate::docker::Docker;
use crate::node::{LABEL_KIND_CLUSTER, LABEL_KIND_ROLE};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    /// The container's name, which kind also makes the node's hostname and Kubernetes name.
    pub name: String,
    pub role: String,
}

impl ClusterNode {
    pub fn is_control_plane(&self) -> bool {
        self.role == "control-plane"
    }
}

/// The running nodes of `cluster`, control planes first, then workers, each by name. kind's
/// external load balancer (HA clusters) runs no Kubernetes and is left out.
pub async fn find(docker: &Docker, cluster: &str) -> Result<Vec<ClusterNode>> {
    let found = docker.list_containers_by(LABEL_KIND_CLUSTER, Some(cluster)).await?;
    let mut nodes = Vec::new();
    let mut stopped = Vec::new();
    for c in found {
        let role = c.labels.get(LABEL_KIND_ROLE).cloned().unwrap_or_default();
        if role == "external-load-balancer" {
            continue;
        }
        if c.state != "running" {
            stopped.push(c.name);
            continue;
        }
        nodes.push(ClusterNode { id: c.id, name: c.name, role });
    }
    if !stopped.is_empty() {
        bail!("cluster {cluster}: node(s) {} are not running; start them first", stopped.join(", "));
    }
    if nodes.is_empty() {
        bail!(
            "cluster {cluster}: no node containers (label {LABEL_KIND_CLUSTER}={cluster}) on this engine; `kind get clusters` lists the names"
        );
    }
    sort(&mut nodes);
    if !nodes[0].is_control_plane() {
        bail!("cluster {cluster}: no control-plane node (label {LABEL_KIND_ROLE}=control-plane)");
    }
    Ok(nodes)
}

fn sort(nodes: &mut [ClusterNode]) {
    nodes.sort_by(|a, b| (!a.is_control_plane(), &a.name).cmp(&(!b.is_control_plane(), &b.name)));
}

/// The one architecture of every node (`uname -m` inside it, as Docker names it).
pub async fn architecture(docker: &Docker, nodes: &[ClusterNode]) -> Result<String> {
    let mut arches = Vec::new();
    for n in nodes {
        let out = docker.exec(&n.id, &["uname", "-m"]).await?;
        if !out.success() {
            bail!("node {}: `uname -m` failed: {}", n.name, out.last_line());
        }
        arches.push((n.name.clone(), docker_arch(out.stdout.trim()).to_owned()));
    }
    let first = arches[0].1.clone();
    if let Some((name, other)) = arches.iter().find(|(_, a)| *a != first) {
        bail!("node {name} is {other}, node {} is {first}: one set of binaries cannot fit both", arches[0].0);
    }
    Ok(first)
}

fn docker_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "armv6l" => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str) -> ClusterNode {
        ClusterNode { id: name.into(), name: name.into(), role: role.into() }
    }

    #[test]
    fn control_planes_go_first_then_workers_by_name() {
        let mut nodes = vec![
            node("k-worker2", "worker"),
            node("k-control-plane", "control-plane"),
            node("k-worker", "worker"),
        ];
        sort(&mut nodes);
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["k-control-plane", "k-worker", "k-worker2"]);
        assert_eq!(docker_arch("x86_64"), "amd64");
        assert_eq!(docker_arch("aarch64"), "arm64");
        assert_eq!(docker_arch("s390x"), "s390x");
    }
}
