//! `cluster update`: changed binaries and images into a running kind cluster, node by node.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Put changed Kubernetes binaries and images into a running kind cluster in place, one
    /// node at a time, each node rolled back if it does not come back Ready.
    #[command(after_help = UPDATE_HELP)]
    Update(Box<UpdateArgs>),
}

const UPDATE_HELP: &str = "\
Nodes are found by kind's label io.x-k8s.kind.cluster=NAME (Docker or Podman) and updated
control plane first, then workers (one at a time, or all at once with --parallel). On each
node: the new binaries are copied in beside the old ones and renamed into place, the kubelet
is restarted, images are imported into containerd's k8s.io namespace and pinned, static pods
using them are restarted through their manifests and other pods on the node using them are
deleted (their controllers recreate them); then the node must be Ready with the new kubelet
(its lease renewed after the restart) within --timeout. Otherwise that node gets its previous
binaries, manifests and image names back, the update stops there, and the exit code is 1.

Refused before anything is copied: a binary for another architecture than a node's, and a
kubelet newer than the API server (minor version) or older than it by more than the skew
policy allows (--force overrides the version check).

Examples:
  # A kubelet from your branch into the cluster `kind`
  nodeimg cluster update --with-kubelet _output/bin/kubelet

  # Whatever a rebuilt node image changed (kubeadm, kubelet, kubectl), into cluster dev
  nodeimg build node-image --kube-root . --from-node kindest/node:dev -i kindest/node:dev2
  nodeimg cluster update --name dev --from-node kindest/node:dev2

  # A rebuilt control-plane image, from a docker-save tar
  nodeimg cluster update --with-image _output/release-images/amd64/kube-apiserver.tar";

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The kind cluster (kind's --name).
    #[arg(long, value_name = "CLUSTER", default_value = "kind")]
    pub name: String,
    /// The kubelet to run on every node (an ELF binary for the nodes' architecture).
    #[arg(long, value_name = "FILE")]
    pub with_kubelet: Option<std::path::PathBuf>,
    /// Replace kubeadm on every node.
    #[arg(long, value_name = "FILE")]
    pub with_kubeadm: Option<std::path::PathBuf>,
    /// Replace kubectl on every node.
    #[arg(long, value_name = "FILE")]
    pub with_kubectl: Option<std::path::PathBuf>,
    /// An image to import on every node: a docker-save or OCI tar (every image in it), or a
    /// reference in the host's Docker (repeatable).
    #[arg(long, value_name = "TAR|REF")]
    pub with_image: Vec<String>,
    /// Take kubeadm, kubelet and kubectl from this node image wherever they differ from a
    /// node's (e.g. the result of `build node-image --from-node`).
    #[arg(long, value_name = "IMAGE")]
    pub from_node: Option<String>,
    /// Update the workers all at once (after the control plane).
    #[arg(long)]
    pub parallel: bool,
    /// Update even when the kubelet's version breaks the skew policy.
    #[arg(long)]
    pub force: bool,
    /// How long each node may take to come back Ready (e.g. 90s, 5m) [default: 3m].
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}
