//! `verify`, `save`, `load`, `images`, `clean`.

use clap::{Args, Subcommand, ValueEnum};

use super::PlanArgs;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The node image to check.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    #[command(flatten)]
    pub options: VerifyOptions,
    /// Leave the cluster (nodes and network) running, on success and on failure, for
    /// debugging; prints how to reach and remove it (`nodeimg clean` removes it too).
    #[arg(long)]
    pub keep: bool,
    /// Print the result as text or as JSON (stages, timings, verdict) on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first node image (name or ID).
    #[arg(value_name = "IMAGE_A")]
    pub a: String,
    /// The second node image (name or ID).
    #[arg(value_name = "IMAGE_B")]
    pub b: String,
    /// Print the differences as text or as JSON on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    /// Same as `--output json`.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// How a node image is checked; shared by `verify` and `build node-image --verify`.

#[derive(Debug, Args)]
pub struct VerifyOptions {
    /// Limit of every wait: boot, control plane, API, node Ready, pod (e.g. 90s, 5m)
    /// [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Pod network: the image's default CNI when all its images are in the node (auto),
    /// that one (default), or a bridge conflist written for the check (bridge) [default: auto].
    #[arg(long, value_enum)]
    pub cni: Option<super::values::Cni>,
    /// Nodes in the cluster: one control plane plus N-1 workers that join it with
    /// `kubeadm join`, as kind's multi-node clusters (1 to 10) [default: 1].
    #[arg(long, value_name = "N")]
    pub nodes: Option<usize>,
    /// Accept a stage that could check nothing on this host (DNS where the engine's network
    /// does not resolve node names): reported as skipped, not failed.
    #[arg(long)]
    pub allow_skipped: bool,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The image to save (name[:tag], so the archive carries the tag).
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The tarball to write: FILE.tar, FILE.tar.gz or FILE.tar.zst.
    #[arg(short, long, value_name = "FILE")]
    pub output: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The tarball to load; its compression is read from its first bytes.
    #[arg(long, value_name = "FILE", required_unless_present = "input_short")]
    pub input: Option<std::path::PathBuf>,
    /// The old spelling of --input: `-i` is --image in every other command.
    #[arg(short = 'i', value_name = "FILE", hide = true, conflicts_with = "input")]
    pub input_short: Option<std::path::PathBuf>,
    /// Do not check FILE against FILE.sha256.
    #[arg(long = "skip-checksums")]
    pub skip_checksums: bool,
    /// Old spellings of --skip-checksums.
    #[arg(long = "skip-checksum", hide = true)]
    pub skip_checksum: bool,
    #[arg(long = "no-verify", hide = true)]
    pub no_verify: bool,
}

impl LoadArgs {
    pub fn file(&self) -> &std::path::Path {
        self.input.as_deref().or(self.input_short.as_deref()).expect("clap requires one")
    }

    pub fn skips_checksums(&self) -> bool {
        self.skip_checksums || self.skip_checksum || self.no_verify
    }
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Print every image the node image will contain and where each will come from, one
    /// per line (`IMAGE<TAB>SOURCE`). Given an existing node image instead, print what its
    /// containerd holds (`IMAGE<TAB>DIGEST<TAB>pinned|unpinned`). Gets Kubernetes as a build does (a download, or `make`
    /// on a source tree) and asks its kubeadm, but imports and commits nothing. Use it to
    /// pre-seed a mirror.
    #[command(after_help = "\
Examples:
  nodeimg images list v1.30.0
  nodeimg images list kindest/node:v1.30.0     # what an existing node image holds
  nodeimg images list ./kubernetes-server-linux-amd64.tar.gz -b nodeimg/base:abc | cut -f1")]
    List(Box<PlanArgs>),
    /// Write every image a node image needs (except those built from the Kubernetes
    /// artifacts) to one archive, for `--image-archive` on the air-gapped side. Images are
    /// obtained like a build does (archives, host cache, mirrors, pulls).
    #[command(after_help = "\
Examples:
  # On a connected machine: everything v1.30.0 needs, plus an extra image
  nodeimg images save v1.30.0 --extra-image docker.io/library/busybox:1.36 -o bundle.tar

  # On the air-gapped machine
  nodeimg build node-image v1.30.0 --offline --image-archive bundle.tar -i kindest/node:v1.30.0")]
    Save(Box<BundleArgs>),
    /// Preload more images into an existing node image, pinned, from the same sources as
    /// `build node-image --extra-image`: `build node-variant --with-image` for each REF.
    #[command(after_help = "\
Examples:
  # Move kindest/node:v1.30.0 to an image that also holds nginx (only on success)
  nodeimg images add docker.io/library/nginx:1.27 --to kindest/node:v1.30.0

  # Into a new image, from an archive, without network pulls
  nodeimg images add my/app:dev --to kindest/node:v1.30.0 -i kindest/node:app \\
    --image-archive app.tar --offline")]
    Add(Box<super::ImagesAddArgs>),
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The archive to write (docker-save and OCI layout at once).
    #[arg(short, long, value_name = "FILE")]
    pub output: std::path::PathBuf,
    #[command(flatten)]
    pub source: PlanArgs,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Also remove containers whose nodeimg process still runs, or that another host created.
    #[arg(long)]
    pub all: bool,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}
