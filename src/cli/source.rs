//! Where Kubernetes, the base image and the node's images come from: shared by
//! `build node-image`, `images list` and `images save`.

use clap::Args;

#[derive(Debug, Args)]
#[command(next_help_heading = "Image sources")]
pub struct ImageSourceArgs {
    /// Fetch images of SRC (`registry.k8s.io`, `docker.io`, a host[/path]) from DEST
    /// (host[:port][/prefix], optionally http:// or https://); the node keeps the SRC names.
    /// The longest matching SRC wins (repeatable). An http:// DEST other than loopback must
    /// be in the Docker daemon's `insecure-registries`.
    #[arg(long = "registry-mirror", value_name = "SRC=DEST")]
    pub registry_mirrors: Vec<String>,
    /// A docker-save or OCI-layout tar supplying images; an image found there is never pulled
    /// (repeatable).
    #[arg(long = "image-archive", value_name = "FILE")]
    pub image_archives: Vec<std::path::PathBuf>,
    /// A directory whose *.tar files are image archives (repeatable).
    #[arg(long = "images-dir", value_name = "DIR")]
    pub images_dirs: Vec<std::path::PathBuf>,
    /// Preload another image into the node, pinned (repeatable).
    #[arg(long = "extra-image", value_name = "REF")]
    pub extra_images: Vec<String>,
    /// A file listing extra images, one per line (`#` comments).
    #[arg(long = "extra-images-file", value_name = "FILE")]
    pub extra_images_files: Vec<std::path::PathBuf>,
    /// Never pull from upstream registries (configured mirrors are still used); fail naming
    /// every image that is not in an archive, the host's Docker or a mirror.
    #[arg(long)]
    pub offline: bool,
    /// Preload images of another architecture than the node's (warned about, one line each);
    /// otherwise such an image fails the build, naming it.
    #[arg(long)]
    pub allow_foreign_images: bool,
    /// A TOML file with any of: registry_mirrors, node_registry_mirrors, image_archives,
    /// images_dirs, extra_images, extra_images_files (arrays of strings), offline (bool).
    /// Flags add to it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// How Kubernetes is obtained once SOURCE is known: shared by `build node-image`, `images
/// list` and `images save`. SOURCE itself is each command's own (its help differs).
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Read SOURCE as this type instead of detecting it.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub source_type: Option<super::values::SourceType>,
    /// Kubernetes version to check out (a tag) in the source tree; with `--type release`,
    /// the release to fetch.
    #[arg(short, long, value_name = "VERSION")]
    pub kube_version: Option<String>,
    /// The Kubernetes source tree [default: the current directory if it is one, else
    /// $GOPATH/src/k8s.io/kubernetes, else $GOPATH/src/github.com/kubernetes/kubernetes].
    #[arg(long, value_name = "DIR")]
    pub kube_root: Option<std::path::PathBuf>,
    /// Repository to clone into ~/.cache/nodeimg/kubernetes when no tree is found and -k is
    /// given [default: https://github.com/kubernetes/kubernetes].
    #[arg(long, value_name = "URL")]
    pub kube_repo: Option<String>,
    /// How to build a source tree: upstream's dockerized build, or the host's Go.
    #[arg(long, value_enum, default_value_t = super::values::BuildMode::Docker)]
    pub build_mode: super::values::BuildMode,
    /// Base of the control-plane images in host mode [default: the one upstream uses for
    /// that version, from build/common.sh; kube-proxy needs iptables in it, and nodeimg adds
    /// an iptables wrapper if it has none].
    #[arg(long, value_name = "IMAGE")]
    pub component_base_image: Option<String>,
    /// Base URL of Kubernetes releases (dl.k8s.io layout), e.g. an internal mirror.
    #[arg(long, env = "NODEIMG_RELEASE_URL", default_value = "https://dl.k8s.io", value_name = "URL")]
    pub release_url: String,
    /// Do not check downloads against their published checksums.
    #[arg(long = "skip-checksums")]
    pub skip_checksums: bool,
    /// The old spelling of --skip-checksums, read next to `--verify` as its opposite.
    #[arg(long = "no-verify", hide = true)]
    pub no_verify: bool,
}

/// `build node-image`'s SOURCE, base and arches.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Where Kubernetes comes from (see below).
    #[arg(value_name = "SOURCE")]
    pub source: Option<String>,
    /// Base image [default: the base of the newest runtime line that serves the Kubernetes
    /// version, `nodeimg build base-image --runtime 2` from v1.30, `--runtime 1.7` below;
    /// built if absent].
    #[arg(short, long, value_name = "IMAGE")]
    pub base_image: Option<String>,
    /// Build even when the base's containerd cannot serve the Kubernetes version
    /// (containerd 2 below v1.26, containerd 1.x from v1.37).
    #[arg(long)]
    pub skip_compat_check: bool,
    /// Target architecture: amd64, arm64, ppc64le or s390x [default: this machine's]. A
    /// comma list builds one image per arch, named `-i` with `{arch}` filled in, or else
    /// with `-ARCH` after its tag; `-b` then needs `{arch}` too. Another arch than this
    /// machine's needs a binfmt_misc handler (qemu-user-static).
    #[arg(long, value_name = "ARCH[,ARCH...]")]
    pub arch: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub images: ImageSourceArgs,
}

/// `images list` and `images save`: what a build of SOURCE would hold, for one arch; builds
/// nothing, so it never builds a base image either.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Where Kubernetes comes from, as for `build node-image`: a release tarball or its
    /// URL, a version (v1.30.0), ci/latest, or a source tree. `images list` also takes an
    /// existing node image here and lists what it holds.
    #[arg(value_name = "SOURCE")]
    pub source: Option<String>,
    /// Base image to plan on [default: the base `build node-image` would use, which must be
    /// present: `nodeimg build base-image` makes it (debootstrap, as root)].
    #[arg(short, long, value_name = "IMAGE")]
    pub base_image: Option<String>,
    /// Target architecture: amd64, arm64, ppc64le or s390x [default: this machine's].
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub images: ImageSourceArgs,
}
