//! `build node-variant` and `images add`: an existing node image with one thing changed.

use clap::Args;

use super::commands::VerifyOptions;

pub(super) const VARIANT_EXAMPLES: &str = "\
The variant is made from a container of the node image (never booted), committed as one
more layer with the node image's own entrypoint, command, stop signal and labels, plus
io.nodeimg.variant.of=<the node image's ID>. The node image and its tags are untouched; NEW
is tagged only when everything succeeded (and --verify passed).

Examples:
  # A node image with a kubelet built from your branch
  nodeimg build node-variant --from-node kindest/node:v1.30.0 -i kindest/node:dev \\
    --with-kubelet _output/bin/kubelet

  # Add images (an archive, and one through the host cache, mirrors or a pull) and a file
  nodeimg build node-variant --from-node kindest/node:v1.30.0 -i kindest/node:extra \\
    --with-images ./images.tar --with-image docker.io/library/nginx:1.27 \\
    --with-path ./audit-policy.yaml:/etc/kubernetes/audit-policy.yaml";

#[derive(Debug, Args)]
pub struct NodeVariantArgs {
    /// The node image to start from.
    #[arg(long, value_name = "IMAGE")]
    pub from_node: String,
    /// Name of the variant.
    #[arg(short, long, value_name = "NAME[:TAG]")]
    pub image: String,
    /// Replace /usr/bin/kubeadm (an ELF binary for the node image's architecture).
    #[arg(long, value_name = "FILE")]
    pub with_kubeadm: Option<std::path::PathBuf>,
    /// Replace /usr/bin/kubelet.
    #[arg(long, value_name = "FILE")]
    pub with_kubelet: Option<std::path::PathBuf>,
    /// Replace /usr/bin/kubectl.
    #[arg(long, value_name = "FILE")]
    pub with_kubectl: Option<std::path::PathBuf>,
    /// Import every image of a docker-save or OCI tar, or of every *.tar in DIR, into the
    /// node's containerd, pinned (repeatable).
    #[arg(long, value_name = "TAR|DIR")]
    pub with_images: Vec<std::path::PathBuf>,
    /// Preload an image, pinned: from the host's Docker, a --registry-mirror, or a pull, as
    /// `build node-image --extra-image` (repeatable).
    #[arg(long, value_name = "REF")]
    pub with_image: Vec<String>,
    /// Copy a file or directory of this machine to DST (absolute) in the node (repeatable).
    #[arg(long, value_name = "SRC:DST")]
    pub with_path: Vec<String>,
    /// A second Kubernetes release, for upgrade tests: a release tarball or an extracted
    /// kubernetes/ directory (with kubernetes/server/bin). Its kubeadm, kubelet and kubectl go
    /// to /kind/upgrade/<version>/, its control-plane images into containerd, pinned.
    #[arg(long, value_name = "SOURCE")]
    pub with_upgrade_artifacts: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: VariantOptions,
}

/// What `build node-variant` and `images add` share.
#[derive(Debug, Args)]
pub struct VariantOptions {
    /// Fetch images of SRC from DEST, as `build node-image --registry-mirror` (repeatable).
    #[arg(long = "registry-mirror", value_name = "SRC=DEST")]
    pub registry_mirrors: Vec<String>,
    /// Never pull from upstream registries; fail naming every image that is in no archive,
    /// not in the host's Docker and under no mirror.
    #[arg(long)]
    pub offline: bool,
    /// Boot the result and bring up a control plane (see `nodeimg verify`) before tagging
    /// it; a failed check leaves the tag where it was.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub verify_options: VerifyOptions,
}

#[derive(Debug, Args)]
pub struct ImagesAddArgs {
    /// The images to preload (name[:tag]).
    #[arg(value_name = "REF", required = true)]
    pub images: Vec<String>,
    /// The node image to add them to.
    #[arg(long, value_name = "NODE_IMAGE")]
    pub to: String,
    /// Name of the result [default: NODE_IMAGE itself, whose tag moves only on success].
    #[arg(short, long, value_name = "NAME[:TAG]")]
    pub image: Option<String>,
    /// A docker-save or OCI tar to take images from before the host's Docker (repeatable).
    #[arg(long = "image-archive", value_name = "FILE")]
    pub image_archives: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub common: VariantOptions,
}
