//! `build base-image` and `build node-image`.

use clap::{Args, Subcommand, ValueEnum};

use super::SourceArgs;
use super::commands::VerifyOptions;

#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Build the base image every node image starts from (systemd, containerd, runc, CNI).
    #[command(after_help = super::EXAMPLES)]
    BaseImage(BaseImageArgs),
    /// Build a kind node image from Kubernetes release artifacts or a source tree.
    #[command(after_help = NODE_EXAMPLES)]
    NodeImage(Box<NodeImageArgs>),
    /// A node image with a binary, a file or images changed, without rebuilding it
    /// (kinder's `build node-image-variant`).
    #[command(after_help = super::variant::VARIANT_EXAMPLES)]
    NodeVariant(Box<super::NodeVariantArgs>),
}

const NODE_EXAMPLES: &str = "\
SOURCE is detected like kind does: a path (tarball or extracted kubernetes/ directory), an
http(s) URL, a release version (v1.30.0) or a CI marker (ci/latest, ci/latest-1.36).

Examples:
  # From a release tarball on disk
  nodeimg build node-image ./kubernetes-server-linux-amd64.tar.gz -i kindest/node:v1.30.0

  # From a release, through an internal mirror of dl.k8s.io
  NODEIMG_RELEASE_URL=http://files.internal/k8s nodeimg build node-image v1.30.0 -i node:v1.30.0

  # Keep the extracted artifacts and the build container for debugging
  nodeimg build node-image v1.30.0 -d ./build --keep-container

  # Your tree, again after an edit: only what changed goes in, as one layer (--full: all)
  nodeimg build node-image --kube-root ~/go/src/k8s.io/kubernetes --build-mode host -i kindest/node:dev

  # Release: amd64 and arm64, pushed with an OCI index, and a report of what went in
  nodeimg build node-image v1.30.0 --arch amd64,arm64 -i kindest/node:v1.30.0 \\
    --push registry.example.com/kindest/node:v1.30.0 --report node.json

  # Also write it to a tarball for machines without a registry (`nodeimg load -i` there)
  nodeimg build node-image v1.30.0 -i kindest/node:v1.30.0 --save node.tar.zst

  # Air-gapped: Kubernetes from an internal file server, images from an internal registry,
  # and clusters made from the image pull through that registry too
  nodeimg build node-image v1.30.0 --release-url http://files.internal/k8s \\
    --registry-mirror registry.k8s.io=registry.internal:5000/k8s \\
    --registry-mirror docker.io=registry.internal:5000/hub \\
    --node-registry-mirror registry.k8s.io=https://registry.internal:5000/k8s \\
    --extra-image docker.io/library/busybox:1.36 --offline -i kindest/node:v1.30.0";

#[derive(Debug, Args)]
pub struct NodeImageArgs {
    /// Name of the node image.
    #[arg(short, long, default_value = "kindest/node:latest", value_name = "NAME[:TAG]")]
    pub image: String,
    /// Keep the extracted artifacts in DIR (otherwise a temp dir, always removed).
    #[arg(short = 'd', long, value_name = "DIR")]
    pub build_dir: Option<std::path::PathBuf>,
    /// Leave the build container in place for debugging (`nodeimg clean` removes it).
    #[arg(long)]
    pub keep_container: bool,
    /// Make clusters from this image pull images of registry SRC through URL: writes
    /// /etc/containerd/certs.d/SRC/hosts.toml and containerd's config_path (repeatable).
    #[arg(long = "node-registry-mirror", value_name = "SRC=URL", help_heading = "Image sources")]
    pub node_registry_mirrors: Vec<String>,
    /// Boot the image and bring up a control plane (see `nodeimg verify`) before tagging
    /// it; a failed check leaves the tag where it was.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub verify_options: VerifyOptions,
    /// Also save the image to FILE (.tar, .tar.gz or .tar.zst), as `nodeimg save` does.
    #[arg(long, value_name = "FILE")]
    pub save: Option<std::path::PathBuf>,
    /// Build incrementally on IMAGE (a node image nodeimg built): only the binaries and
    /// images that changed go in, as one new layer. Without it, a build of the same source
    /// builds on the image its target tag holds.
    #[arg(long, value_name = "IMAGE", conflicts_with = "full")]
    pub from_node: Option<String>,
    /// Build from the base image, never on an earlier node image.
    #[arg(long)]
    pub full: bool,
    /// Push the image to REF's registry (as REF-<arch>) and an OCI image index of every
    /// architecture built as REF; prints REF@<index digest>. Credentials: the docker CLI's.
    #[arg(long, value_name = "REF", help_heading = "Release")]
    pub push: Option<String>,
    /// Build ARCH's image on the Docker engine at DOCKER_HOST (unix:///… or tcp://…; for
    /// ssh, forward the socket: `ssh -nNT -L /tmp/arm64.sock:/var/run/docker.sock host`),
    /// natively and at the same time as the other arches (repeatable).
    #[arg(long = "engine", value_name = "ARCH=DOCKER_HOST", help_heading = "Release")]
    pub engines: Vec<String>,
    /// Write a JSON report of what went in (Kubernetes source, base, every preloaded image
    /// with its digest and platform, pushed digests) to FILE, and a table to stderr.
    #[arg(long, value_name = "FILE", help_heading = "Release")]
    pub report: Option<std::path::PathBuf>,
    /// Write an SPDX 2.3 JSON bill of materials of the node image(s) to FILE: every Debian
    /// package of the base, the Kubernetes binaries (version, sha256, source), crictl, and
    /// every image in the node's containerd, each contained by the node image. Its `created`
    /// time is SOURCE_DATE_EPOCH when set.
    #[arg(long, value_name = "FILE", help_heading = "Release")]
    pub sbom: Option<std::path::PathBuf>,
    // Last: its image-source flags open a help section of their own.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Where the images a node image holds come from. Order for every image: built tars →
/// archives → the host's Docker cache → mirror → upstream.

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum From {
    /// debootstrap a Debian root filesystem on this machine and import it: no image registry
    /// needed, only a Debian mirror. Needs root.
    Debootstrap,
    /// Build base-image/Dockerfile through the Docker Engine API (pulls --debian-image).
    Dockerfile,
}

/// containerd, runc and CNI plugins of the base image (`base-image/runtimes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// Debian bookworm's containerd 1.6.20 (end of life; CRI v1 and v1alpha2).
    #[value(name = "1.6")]
    V1_6,
    /// containerd 1.7.24 and runc 1.1.15 from trixie: CRI v1 and v1alpha2, Kubernetes 1.18-1.36.
    #[value(name = "1.7")]
    V1_7,
    /// containerd 2.1.9, runc 1.3.6, CNI plugins 1.9.1 from sid: CRI v1, Kubernetes 1.26+.
    #[value(name = "2")]
    V2,
}

#[derive(Debug, Args)]
pub struct BaseImageArgs {
    /// How to build the image.
    #[arg(long, value_enum, default_value_t = From::Debootstrap)]
    pub from: From,
    /// Runtime line: containerd, runc and CNI plugins, pinned in base-image/runtimes.
    #[arg(long, value_enum, default_value = "1.7")]
    pub runtime: Runtime,
    /// Target architecture (amd64, arm64, ppc64le, s390x) [default: this machine's]; another
    /// runs through a binfmt_misc handler (qemu-user-static).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Debian suite to debootstrap [default: bookworm].
    #[arg(long, value_name = "SUITE")]
    pub suite: Option<String>,
    /// Debian mirror for debootstrap [default: the Debian mirror in apt's sources, else
    /// http://deb.debian.org/debian].
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Name of the resulting image [default: nodeimg/base:<hash of its inputs>].
    #[arg(short, long, value_name = "NAME[:TAG]")]
    pub image: Option<String>,
    /// Debian image the Dockerfile starts from (with --from dockerfile).
    #[arg(long, value_name = "IMAGE")]
    pub debian_image: Option<String>,
    /// Build even when an image from the same inputs already exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Install this crictl at /usr/local/bin/crictl (`kind load` and `kind export logs` run
    /// it): a file, or an http(s) URL of upstream's crictl-VERSION-linux-ARCH.tar.gz or of a
    /// bare binary. With --from debootstrap; needs --crictl-sha256.
    #[arg(long, value_name = "FILE|URL", help_heading = "crictl")]
    pub crictl: Option<String>,
    /// Install upstream's crictl release VERSION (e.g. v1.30.0) from GitHub: fetched by the
    /// Dockerfile with --from dockerfile, by nodeimg otherwise. Needs --crictl-sha256.
    #[arg(long, value_name = "VERSION", help_heading = "crictl")]
    pub crictl_version: Option<String>,
    /// sha256 of what --crictl names (the .tar.gz or the binary) or of upstream's
    /// crictl-VERSION-linux-ARCH.tar.gz for --crictl-version; a mismatch fails the build.
    #[arg(long, value_name = "HEX", help_heading = "crictl")]
    pub crictl_sha256: Option<String>,
}
