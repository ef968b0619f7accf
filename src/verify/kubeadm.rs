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
    /// The host runs cgroup v1 (the node has no `/sys/fs/cgroup/cgroup.controllers`).
    pub cgroup_v1: bool,
}

#[derive(Serialize)]
struct Vars<'a> {
    api_version: &'static str,
    v1beta4: bool,
    allow_cgroup_v1: bool,
    kubernetes_version: &'a str,
    node_name: &'a str,
    node_ip: &'a str,
    cri_socket: &'static str,
    cgroup_driver: &'static str,
    pod_subnet: &'static str,
    service_subnet: &'static str,
    control_plane_timeout: String,
}

/// As kind: v1beta2 until 1.22, v1beta3 from 1.23 (v1beta2 is gone in 1.26), v1beta4 from
/// 1.36.
pub fn api_version(version: &KubeVersion) -> &'static str {
    if version.at_least(1, 36) {
        "v1beta4"
    } else if version.at_least(1, 23) {
        "v1beta3"
    } else {
        "v1beta2"
    }
}

/// The kubelet fails on cgroup v1 by default from 1.35 on (`failCgroupV1`); kind nodes on
/// such a host tell it not to.
fn allow_cgroup_v1(node: &NodeFacts) -> bool {
    node.cgroup_v1 && node.version.at_least(1, 35)
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
        v1beta4: api_version(&node.version) == "v1beta4",
        allow_cgroup_v1: allow_cgroup_v1(node),
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
    v1beta4: bool,
    node_name: &'a str,
    node_ip: &'a str,
    cri_socket: &'static str,
    control_plane_endpoint: &'a str,
}

/// The worker `node` joins the control plane at `control_plane_endpoint` (`ip:6443`).
pub fn render_join(node: &NodeFacts, control_plane_endpoint: &str) -> Result<String> {
    let vars = JoinVars {
        api_version: api_version(&node.version),
        v1beta4: api_version(&node.version) == "v1beta4",
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
            cgroup_v1: false,
        }
    }

    /// `{name, value}` list entries (v1beta4's extra arguments) as pairs.
    fn arg_list(value: &serde_yaml_ng::Value) -> Vec<(&str, &str)> {
        let list = value.as_sequence().unwrap_or_else(|| panic!("a list: {value:?}"));
        list.iter().map(|a| (a["name"].as_str().unwrap(), a["value"].as_str().unwrap())).collect()
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
        assert_eq!(docs[0]["apiServer"]["timeoutForControlPlane"].as_str(), Some("60s"));
        assert_eq!(
            docs[0]["controllerManager"]["extraArgs"]["enable-hostpath-provisioner"].as_str(),
            Some("true")
        );
        assert_eq!(docs[1]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"].as_str(), Some("172.17.0.5"));
        assert!(docs[1].get("timeouts").is_none());
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
    fn api_version_switches_at_1_23_and_1_36() {
        let cases = [
            ("v1.22.17", "v1beta2"),
            ("v1.23.0", "v1beta3"),
            ("v1.31.0-alpha.1", "v1beta3"),
            ("v1.35.4", "v1beta3"),
            ("v1.36.0-alpha.0", "v1beta4"),
            ("v1.37.1", "v1beta4"),
        ];
        for (v, api) in cases {
            assert_eq!(api_version(&KubeVersion::parse(v).unwrap()), api, "{v}");
        }
    }

    #[test]
    fn kubernetes_1_36_gets_v1beta4_shapes() {
        let text = render(&facts("v1.36.0", true), Duration::from_secs(240)).unwrap();
        let docs = documents(&text);
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
        assert_eq!(docs[0]["kind"].as_str(), Some("ClusterConfiguration"));
        assert!(docs[0]["apiServer"].get("timeoutForControlPlane").is_none(), "moved in v1beta4");
        assert_eq!(docs[0]["apiServer"]["certSANs"][2].as_str(), Some("172.17.0.5"));
        assert_eq!(
            arg_list(&docs[0]["controllerManager"]["extraArgs"]),
            [("enable-hostpath-provisioner", "true")]
        );
        assert_eq!(docs[1]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
        assert_eq!(docs[1]["kind"].as_str(), Some("InitConfiguration"));
        assert_eq!(docs[1]["timeouts"]["controlPlaneComponentHealthCheck"].as_str(), Some("240s"));
        let registration = &docs[1]["nodeRegistration"];
        assert_eq!(
            arg_list(&registration["kubeletExtraArgs"]),
            [("node-ip", "172.17.0.5"), ("node-labels", "")]
        );
        assert_eq!(registration["criSocket"].as_str(), Some("unix:///run/containerd/containerd.sock"));
        assert_eq!(docs[1]["bootstrapTokens"][0]["token"].as_str(), Some("abcdef.0123456789abcdef"));
        assert_eq!(docs[2]["cgroupDriver"].as_str(), Some("systemd"));
        assert!(docs[2].get("failCgroupV1").is_none(), "a cgroup v2 host");

        let worker = NodeFacts { name: "w1".into(), ip: "172.18.0.3".into(), ..facts("v1.36.0", true) };
        let join = documents(&render_join(&worker, "172.18.0.2:6443").unwrap());
        assert_eq!(join[0]["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
        assert_eq!(join[0]["kind"].as_str(), Some("JoinConfiguration"));
        let registration = &join[0]["nodeRegistration"];
        assert_eq!(
            arg_list(&registration["kubeletExtraArgs"]),
            [("node-ip", "172.18.0.3"), ("node-labels", "")]
        );
        assert_eq!(
            join[0]["discovery"]["bootstrapToken"]["apiServerEndpoint"].as_str(),
            Some("172.18.0.2:6443")
        );
    }

    #[test]
    fn cgroup_v1_hosts_keep_the_kubelet_from_1_35() {
        let fail_cgroup_v1 = |version, cgroup_v1| {
            let node = NodeFacts { cgroup_v1, ..facts(version, false) };
            let docs = documents(&render(&node, Duration::from_secs(60)).unwrap());
            assert_eq!(docs[2]["kind"].as_str(), Some("KubeletConfiguration"));
            docs[2].get("failCgroupV1").map(|v| v.as_bool().unwrap())
        };
        assert_eq!(fail_cgroup_v1("v1.35.0", true), Some(false));
        assert_eq!(fail_cgroup_v1("v1.36.1", true), Some(false));
        assert_eq!(fail_cgroup_v1("v1.34.3", true), None, "the kubelet allows cgroup v1 by default");
        assert_eq!(fail_cgroup_v1("v1.35.0", false), None, "a cgroup v2 host");
        assert_eq!(fail_cgroup_v1("v1.20.2", true), None);
    }
}
