//! What the update asks the API server, through kubectl on the control-plane node with
//! kubeadm's admin kubeconfig (every kind control plane has both).

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::ClusterNode;
use crate::docker::Docker;
use crate::kube::KubeVersion;

const KUBECTL: [&str; 3] = ["kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "--request-timeout=10s"];

async fn json(docker: &Docker, control_plane: &ClusterNode, args: &[&str]) -> Result<Value> {
    let cmd: Vec<&str> = KUBECTL.iter().copied().chain(args.iter().copied()).chain(["-o", "json"]).collect();
    let out = docker.exec(&control_plane.id, &cmd).await?;
    if !out.success() {
        bail!("`kubectl {}` on {}: {}", args.join(" "), control_plane.name, out.last_line());
    }
    serde_json::from_str(&out.stdout).with_context(|| format!("reading `kubectl {}`", args.join(" ")))
}

/// The API server's version.
pub async fn server_version(docker: &Docker, control_plane: &ClusterNode) -> Result<KubeVersion> {
    let version = json(docker, control_plane, &["version"]).await?;
    let text =
        version["serverVersion"]["gitVersion"].as_str().context("kubectl version names no server version")?;
    Ok(KubeVersion::parse(text)?)
}

/// A node as the API server sees it: Ready, the kubelet's version, and its lease's last
/// renewal (a kubelet that runs renews it every few seconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    pub ready: bool,
    pub kubelet: String,
    pub renewed: String,
}

pub async fn node_state(docker: &Docker, control_plane: &ClusterNode, node: &str) -> Result<NodeState> {
    let status = json(docker, control_plane, &["get", "node", node]).await?;
    let ready = status["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let kubelet = status["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or_default().to_owned();
    let lease = json(docker, control_plane, &["-n", "kube-node-lease", "get", "lease", node]).await?;
    let renewed = lease["spec"]["renewTime"].as_str().unwrap_or_default().to_owned();
    Ok(NodeState { ready, kubelet, renewed })
}

/// A pod on a node that runs one of the changed images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// A static pod's mirror: restarted through its manifest, not by deleting it.
    pub mirror: bool,
    pub ready: bool,
}

/// The pods on `node` with a container of one of `repositories` (`registry/repo`, no tag).
pub async fn pods_using(
    docker: &Docker,
    control_plane: &ClusterNode,
    node: &str,
    repositories: &[String],
) -> Result<Vec<Pod>> {
    let selector = format!("spec.nodeName={node}");
    let list = json(docker, control_plane, &["get", "pods", "-A", "--field-selector", &selector]).await?;
    Ok(using(&list, repositories))
}

fn using(list: &Value, repositories: &[String]) -> Vec<Pod> {
    let name_of =
        |image: &str| crate::reference::ImageRef::parse(image).map(|r| r.name()).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| {
            let containers = pod["spec"]["containers"].as_array().into_iter().flatten();
            containers.filter_map(|c| c["image"].as_str()).any(|i| repositories.contains(&name_of(i)))
        })
        .map(|pod| Pod {
            namespace: pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
            name: pod["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            uid: pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
            mirror: pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
            ready: pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        })
        .collect()
}

/// Deletes a pod without waiting: its controller makes a new one.
pub async fn delete_pod(docker: &Docker, control_plane: &ClusterNode, pod: &Pod) -> Result<()> {
    let cmd: Vec<&str> = KUBECTL
        .iter()
        .copied()
        .chain(["-n", &pod.namespace, "delete", "pod", &pod.name, "--wait=false"])
        .collect();
    let out = docker.exec(&control_plane.id, &cmd).await?;
    if !out.success() {
        bail!("deleting pod {}/{}: {}", pod.namespace, pod.name, out.last_line());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_matched_by_image_name_without_tag() {
        let list = serde_json::json!({"items": [
            {"metadata": {"namespace": "kube-system", "name": "kube-apiserver-k-control-plane", "uid": "u1",
                          "annotations": {"kubernetes.io/config.mirror": "abc"}},
             "spec": {"containers": [{"image": "k8s.gcr.io/kube-apiserver:v1.20.2"}]},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"namespace": "kube-system", "name": "kube-proxy-x", "uid": "u2"},
             "spec": {"containers": [{"image": "k8s.gcr.io/kube-proxy:v1.20.2"}]},
             "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"namespace": "default", "name": "other", "uid": "u3"},
             "spec": {"containers": [{"image": "busybox"}]}}
        ]});
        let repos = vec!["k8s.gcr.io/kube-apiserver".to_owned(), "k8s.gcr.io/kube-proxy".to_owned()];
        let pods = using(&list, &repos);
        assert_eq!(pods.len(), 2);
        assert!(pods[0].mirror && pods[0].ready && pods[0].uid == "u1");
        assert!(!pods[1].mirror && !pods[1].ready);
        assert!(using(&list, &["docker.io/library/busybox".to_owned()])[0].name == "other");
    }
}
