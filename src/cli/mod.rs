//! The command line (clap derive) and nothing else: what each flag is called and what its
//! help says. `config` turns these into validated configs before anything touches Docker.

mod build;
mod cluster;
mod commands;
mod source;
mod values;
mod variant;

use clap::{Parser, Subcommand};

pub use build::{BaseImageArgs, BuildCommand, From, NodeImageArgs, Runtime};
pub use cluster::{ClusterCommand, UpdateArgs};
pub use commands::{
    BundleArgs, CleanArgs, DiffArgs, ImagesCommand, LoadArgs, Output, SaveArgs, VerifyArgs, VerifyOptions,
};
pub use source::{ImageSourceArgs, KubeArgs, PlanArgs, SourceArgs};
pub use values::{BuildMode, Cni, SourceType};
pub use variant::{ImagesAddArgs, NodeVariantArgs, VariantOptions};

const EXAMPLES: &str = "\
Examples:
  # Build the base image offline from Debian packages (needs root and debootstrap):
  # containerd 1.7 by default; --runtime 2 for containerd 2 (Kubernetes 1.26 and later)
  sudo nodeimg build base-image
  sudo nodeimg build base-image --runtime 2

  # Same, from an internal Debian mirror, under a name of your choice
  sudo nodeimg build base-image --mirror http://apt.internal/debian -i registry.internal/kind/base:v1

  # With crictl in the node (kind load and kind export logs run it): upstream's release
  # tarball, on disk or at a URL, pinned by the sha256 upstream publishes beside it
  sudo nodeimg build base-image --crictl ./crictl-v1.30.0-linux-amd64.tar.gz --crictl-sha256 HEX

  # Build base-image/Dockerfile through the Docker Engine (needs debian:bookworm-slim);
  # the Dockerfile fetches crictl itself, so it takes a version
  nodeimg build base-image --from dockerfile --crictl-version v1.30.0 --crictl-sha256 HEX

  # Remove containers left behind by a killed nodeimg run
  nodeimg clean

  # Carry an image to a machine without a registry
  nodeimg save kindest/node:v1.30.0 -o node.tar.zst   # then, there:
  nodeimg load -i node.tar.zst";

/// Builds node images for kind (Kubernetes IN Docker): faster, offline-capable, safer.

#[derive(Debug, Parser)]
#[command(name = "nodeimg", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Print only errors and the result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Show every line of build output and each detail of the run.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the base image, or a node image from Kubernetes release artifacts or a source tree.
    #[command(subcommand)]
    Build(BuildCommand),
    /// Change a running kind cluster in place: `cluster update` puts new binaries and images
    /// into its nodes, one at a time.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Remove what killed nodeimg runs left behind: containers, untagged images, temporary
    /// `nodeimg-verify:*` and `nodeimg-tmp/*` tags, partial downloads.
    #[command(after_help = "\
Everything nodeimg creates in Docker carries the label io.nodeimg.build=<run id> and the
process that made it. `clean` removes such containers unless that nodeimg process is still
running on this host, untagged images with that label, the `nodeimg-verify:*` tags
`build --verify` uses while it checks an image, the `nodeimg-tmp/*` tags a host-mode build
uses while it saves the control-plane images, and `*.part-<pid>` downloads of dead
processes in nodeimg's cache.

Examples:
  nodeimg clean              # leftovers of dead runs
  nodeimg clean --dry-run    # only list them
  nodeimg clean --all        # also containers of runs that look alive, or on other hosts")]
    Clean(CleanArgs),
    /// The images a node image will hold: list them, or save them to one archive.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Boot a node image as current kind does, bring up a control plane (and workers) with
    /// kubeadm, check DNS and run a pod, and remove everything again. Exit code 0 only if
    /// every stage passed.
    #[command(after_help = "\
The nodes run as kind runs them: on a network of their own (like kind's `kind` network),
--restart=on-failure:1, --init=false, /lib/modules read-only, kind's labels and node
environment; each must log kind's boot line (Reached target Multi-User System) within 30 s.

Stages, each timed: boot (kind's boot line, then systemd and containerd up), kubeadm init,
API ready (/readyz), CNI and storage (/kind/manifests/default-cni.yaml templated as kind
does, default-storage.yaml; or a bridge conflist), kubeadm join (with --nodes > 1), node
Ready (every node), DNS (a dnsPolicy: Default pod resolves a node's name through the node's
resolver), pod Running (a pod of the node's pause image, on a worker if there is one).
When the daemon refuses --privileged (\"unable to apply caps\"), the nodes run with every
capability but CAP_SYS_RESOURCE and the host's cgroup namespace, and say so.

Examples:
  nodeimg verify kindest/node:v1.30.0
  nodeimg verify kindest/node:v1.30.0 --nodes 2 --keep
  nodeimg verify kindest/node:v1.30.0 --cni bridge --timeout 10m --output json")]
    Verify(VerifyArgs),
    /// What differs between two local node images, part by part: Kubernetes binaries
    /// (sha256), Debian packages, images in containerd, kind's files and the node's config
    /// files (with their changed lines). Exit code 0 whether or not they differ.
    #[command(after_help = "\
Read from idle containers of each image (never booted). Layers, history and creation
times are not compared: they differ whenever anything does, and say nothing of why.

Examples:
  nodeimg diff kindest/node:v1.30.0 kindest/node:dev
  nodeimg diff kindest/node:v1.30.0 kindest/node:dev --output json")]
    Diff(DiffArgs),
    /// Write an image to a tarball (docker-save format; plain, gzip or zstd by the name) with
    /// a sha256sum file beside it, to carry it to a machine without a registry.
    #[command(after_help = SAVE_EXAMPLES)]
    Save(SaveArgs),
    /// Load a tarball from `save` (or `docker save`, compressed or not) into Docker, after
    /// checking it against FILE.sha256 (`--skip-checksum` skips that).
    #[command(after_help = SAVE_EXAMPLES)]
    Load(LoadArgs),
}

const SAVE_EXAMPLES: &str = "\
Examples:
  nodeimg save kindest/node:v1.30.0 -o node.tar.zst   # writes node.tar.zst and node.tar.zst.sha256
  nodeimg load -i node.tar.zst                        # checks node.tar.zst.sha256, then loads
  nodeimg build node-image v1.30.0 -i kindest/node:v1.30.0 --save node.tar.gz";

impl Cli {
    /// One line per old spelling used: they still work, and say what to write instead.
    pub fn deprecations(&self) -> Vec<&'static str> {
        let source = match &self.command {
            Command::Build(BuildCommand::NodeImage(args)) => Some(&args.source.kube),
            Command::Images(ImagesCommand::List(args)) => Some(&args.kube),
            Command::Images(ImagesCommand::Save(args)) => Some(&args.source.kube),
            _ => None,
        };
        let mut lines = Vec::new();
        if source.is_some_and(|s| s.no_verify) {
            lines.push("--no-verify is deprecated: it means --skip-checksums (write that)");
        }
        if let Command::Load(load) = &self.command {
            if load.input_short.is_some() {
                lines.push(
                    "load -i is deprecated: -i means --image in every other command; write --input FILE",
                );
            }
            if load.skip_checksum || load.no_verify {
                lines.push("load --skip-checksum and --no-verify are deprecated: write --skip-checksums");
            }
        }
        lines
    }
}

/// `90`, `90s`, `5m`, `1h`.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 5m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?} is not a duration (e.g. 90s, 5m)")),
    };
    if secs == 0 {
        return Err("the timeout must be more than 0".into());
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_and_verbose_conflict() {
        assert!(Cli::try_parse_from(["nodeimg", "-q", "-v", "clean"]).is_err());
        let cli = Cli::try_parse_from(["nodeimg", "-v", "clean"]).unwrap();
        assert!(cli.verbose && !cli.quiet);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(std::time::Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    fn long_help(path: &[&str]) -> String {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap();
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn help_has_examples() {
        assert!(long_help(&["build", "base-image"]).contains("Examples:"));
    }

    /// Help that promised what the tool does not do (or no longer does) misled users.
    #[test]
    fn help_says_what_the_commands_do() {
        let build = long_help(&["build"]);
        assert!(!build.contains("later"), "{build}");
        assert!(long_help(&["build", "node-image"]).contains("or a source tree"));
        let node = long_help(&["build", "node-image"]);
        assert!(!node.contains("not available yet"), "--type source works");
        assert!(node.contains("--skip-checksums") && !node.contains("--no-verify"), "{node}");
        let list = long_help(&["images", "list"]);
        for promise in ["ARCH[,ARCH...]", "Build even when", "(see below)", "comma list"] {
            assert!(!list.contains(promise), "images list does not offer {promise:?}: {list}");
        }
        assert!(list.contains("an existing node image"), "{list}");
        assert!(!list.contains("without building anything") && list.contains("make"), "{list}");
        let load = long_help(&["load"]);
        assert!(load.contains("--skip-checksums") && load.contains("--input"), "{load}");
        assert!(!load.contains("--no-verify") && !load.contains("-i,"), "{load}");
    }

    #[test]
    fn old_spellings_still_parse_and_say_so() {
        let cli = Cli::try_parse_from(["nodeimg", "load", "-i", "x.tar", "--no-verify"]).unwrap();
        assert_eq!(cli.deprecations().len(), 2, "{:?}", cli.deprecations());
        let Command::Load(args) = &cli.command else { unreachable!() };
        assert!(args.skips_checksums());
        assert_eq!(args.file(), std::path::Path::new("x.tar"));
        let cli = Cli::try_parse_from(["nodeimg", "load", "--input", "x.tar", "--skip-checksums"]).unwrap();
        assert!(cli.deprecations().is_empty());
        assert!(Cli::try_parse_from(["nodeimg", "load", "-i", "a.tar", "--input", "b.tar"]).is_err());
        assert!(Cli::try_parse_from(["nodeimg", "load"]).is_err(), "a file is required");
        let cli = Cli::try_parse_from(["nodeimg", "build", "node-image", "v1.30.0", "--no-verify"]).unwrap();
        assert_eq!(
            cli.deprecations(),
            vec!["--no-verify is deprecated: it means --skip-checksums (write that)"]
        );
    }
}
