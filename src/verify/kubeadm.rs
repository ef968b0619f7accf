//! The kubeadm configuration `nodeimg verify` boots with, rendered from
//! `templates/kubeadm.yaml.hbs`; the API version follows the image's Kubernetes version.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::kube::KubeVersion;

const TEMPLATE: &str = include_str!("../../templates/kubeadm.yaml.hbs");
const JOIN_TEMPLATE: &str = include_str!("../../templates/kubeadm-join.yaml.hbs");
pub const POD_SUBNET: &str = "10.244.0.0/16";
/// The part of [`POD_SUBNET`] the single node hands out (what kube-controller-manager
/// would allocate to the first node).
pub const NODE_POD_SUBNET: &str = "10.244.0.0/24";
const SERVICE_SUBNET: &str = "10.96.0.0/16";

/// What the node told us about itself.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    pub version: KubeVersion,
    pub name: String,
    pub ip: String,
    pub systemd_cgroup: bool,
}

#[derive(Serialize)]
struct Vars<'a> {
    api_version: &'static str,
    kubernetes_version: &'a str,
    node_name: &'a str,
    node_ip: &'a str,
    cri_socket: &'static str,
    cgroup_driver: &'static str,
    pod_subnet: &'static str,
    service_subnet: &'static str,
    control_plane_timeout: String,
}

/// v1beta2 until 1.22 (as kind), v1beta3 from 1.23 on (v1beta2 is gone in 1.26).
pub fn api_version(version: &KubeVersion) -> &'static str {
    if version.at_least(1, 23) { "v1beta3" } else { "v1beta2" }
}

/// The containerd socket as that kubeadm wants it: older ones take a path, newer ones
/// warn unless it is a URL.
fn cri_socket(version: &KubeVersion) -> &'static str {
    if version.at_least(1, 24) {
        "unix:///run/containerd/containerd.sock"
    } else {
        "/run/containerd/containerd.sock"
    }
}

pub fn render(node: &NodeFacts, control_plane_timeout: Duration) -> Result<String> {
    let vars = Vars {
        api_version: api_version(&node.version),
        kubernetes_version: &node.version.text,
        node_name: &node.name,
        node_ip: &node.ip,
        cri_socket: cri_socket(&node.version),
        cgroup_driver: if node.systemd_cgroup { "systemd" } else { "cgroupfs" },
        pod_subnet: POD_SUBNET,
        service_subnet: SERVICE_SUBNET,
        control_plane_timeout: format!("{}s", control_plane_timeout.as_secs().max(1)),
    };
    Ok(crate::templates::render(TEMPLATE, &vars)?)
}

#[derive(Serialize)]
struct JoinVars<'a> {
    api_version: &'static str,
    node_name: &'a str,
    node_ip: &'a str,
    cri_socket: &'static str,
    control_plane_endpoint: &'a str,
}

/// The worker `node` joins the control plane at `control_plane_endpoint` (`ip:6443`).
pub fn render_join(node: &NodeFacts, control_plane_endpoint: &str) -> Result<String> {
    let vars = JoinVars {
        api_version: api_version(&node.version),
        node_name: &node.name,
        node_ip: &node.ip,
        cri_socket: cri_socket(&node.version),
        control_plane_endpoint,
    };
    Ok(crate::templates::render(JOIN_TEMPLATE, &vars)?)
}

/// The bridge conflist's subnet for node `index` (0 is the control plane): one /24 each,
/// as kube-controller-manager would hand them out, so no two nodes give out one address.
pub fn node_pod_subnet(index: usize) -> String {
    format!("10.244.{index}.0/24")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(version: &str, systemd: bool) -> NodeFacts {
        NodeFacts {
            version: KubeVersion::parse(version).unwrap(),
            name: "nodeimg-verify-1".into(),
            ip: "172.17.0.5".into(),
            systemd_cgroup: systemd,
        }
    }

    /// The documents of a rendered config, as YAML values.
    fn documents(text: &str) -> Vec<serde_yaml_ng::Value> {
        text.split("\n---\n").map(|d| serde_yaml_ng::from_str(d).unwrap()).collect()
    }

    #[test]
    fn kubernetes_1_20_gets_v1beta2_and_a_socket_path() {
        let text = render(&facts("v1.20.2", false), Duration::from_secs(240)).unwrap();
        let docs = documents(&text);
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta2"));
        assert_eq!(docs[0]["kind"].as_str(), Some("ClusterConfiguration"));
        assert_eq!(docs[0]["kubernetesVersion"].as_str(), Some("v1.20.2"));
        assert_eq!(docs[0]["apiServer"]["timeoutForControlPlane"].as_str(), Some("240s"));
        assert_eq!(docs[1]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta2"));
        assert_eq!(docs[1]["localAPIEndpoint"]["advertiseAddress"].as_str(), Some("172.17.0.5"));
        assert_eq!(
            docs[1]["nodeRegistration"]["criSocket"].as_str(),
            Some("/run/containerd/containerd.sock")
        );
        assert_eq!(docs[1]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"].as_str(), Some("172.17.0.5"));
        assert_eq!(docs[2]["kind"].as_str(), Some("KubeletConfiguration"));
        assert_eq!(docs[2]["cgroupDriver"].as_str(), Some("cgroupfs"));
        assert_eq!(docs[2]["cgroupRoot"].as_str(), Some("/kubelet"));
        assert_eq!(docs[2]["failSwapOn"].as_bool(), Some(false));
        assert_eq!(docs[2]["evictionHard"]["nodefs.available"].as_str(), Some("0%"));
        assert_eq!(docs[3]["kind"].as_str(), Some("KubeProxyConfiguration"));
        assert_eq!(docs[3]["conntrack"]["maxPerCore"].as_i64(), Some(0));
    }

    #[test]
    fn newer_kubernetes_gets_v1beta3_and_a_socket_url() {
        let text = render(&facts("v1.30.0", true), Duration::from_secs(60)).unwrap();
        let docs = documents(&text);
        assert_eq!(docs[0]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta3"));
        assert_eq!(docs[1]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta3"));
        assert_eq!(
            docs[1]["nodeRegistration"]["criSocket"].as_str(),
            Some("unix:///run/containerd/containerd.sock")
        );
        assert_eq!(docs[2]["cgroupDriver"].as_str(), Some("systemd"));
    }

    #[test]
    fn workers_join_with_the_init_token() {
        let init = documents(&render(&facts("v1.20.2", false), Duration::from_secs(60)).unwrap());
        let worker = NodeFacts { name: "w1".into(), ip: "172.18.0.3".into(), ..facts("v1.20.2", false) };
        let join = documents(&render_join(&worker, "172.18.0.2:6443").unwrap());
        assert_eq!(join[0]["kind"].as_str(), Some("JoinConfiguration"));
        assert_eq!(join[0]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta2"));
        let token = &join[0]["discovery"]["bootstrapToken"];
        assert_eq!(token["token"], init[1]["bootstrapTokens"][0]["token"]);
        assert_eq!(token["apiServerEndpoint"].as_str(), Some("172.18.0.2:6443"));
        assert_eq!(token["unsafeSkipCAVerification"].as_bool(), Some(true));
        assert_eq!(join[0]["nodeRegistration"]["name"].as_str(), Some("w1"));
        assert_eq!(join[0]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"].as_str(), Some("172.18.0.3"));
        assert_eq!(node_pod_subnet(0), NODE_POD_SUBNET);
        assert_ne!(node_pod_subnet(1), node_pod_subnet(2));
    }

    #[test]
    fn api_version_switches_at_1_23() {
        for (v, api) in [("v1.22.17", "v1beta2"), ("v1.23.0", "v1beta3"), ("v1.31.0-alpha.1", "v1beta3")] {
            assert_eq!(api_version(&KubeVersion::parse(v).unwrap()), api, "{v}");
        }
    }
}
