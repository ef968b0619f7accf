//! The command line (clap derive), turned into validated configs before anything touches
//! Docker: a bad flag fails here with a one-line error and no side effects.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::baseimage::{BaseImageConfig, Source, default_mirror};
use crate::progress::Verbosity;

const EXAMPLES: &str = "\
Examples:
  # Build the base image offline from Debian packages (needs root and debootstrap)
  sudo nodeimg build base-image

  # Same, from an internal Debian mirror, under a name of your choice
  sudo nodeimg build base-image --mirror http://apt.internal/debian -i registry.internal/kind/base:v1

  # Build base-image/Dockerfile through the Docker Engine (needs debian:bookworm-slim)
  nodeimg build base-image --from dockerfile

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
    /// Build images: the base image (and, later, node images).
    #[command(subcommand)]
    Build(BuildCommand),
    /// Remove containers, untagged images and temporary `nodeimg-verify:*` tags left
    /// behind by killed nodeimg runs.
    #[command(after_help = "\
Everything nodeimg creates carries the label io.nodeimg.build=<run id>. `clean` removes such
containers unless the nodeimg process that made them is still running on this host,
untagged images with that label, and the `nodeimg-verify:*` tags `build --verify` uses
while it checks an image.

Examples:
  nodeimg clean              # leftovers of dead runs
  nodeimg clean --dry-run    # only list them
  nodeimg clean --all        # also containers of runs that look alive, or on other hosts")]
    Clean(CleanArgs),
    /// Inspect the images a node image will hold.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Boot a node image like kind does, bring up a one-node control plane with kubeadm, run
    /// a pod, and remove everything again. Exit code 0 only if every stage passed.
    #[command(after_help = "\
Stages, each timed: boot (systemd and containerd up), kubeadm init, API ready (/readyz),
node Ready (after installing a CNI), pod Running (a pod of the node's pause image).
When the daemon refuses --privileged (\"unable to apply caps\"), the node runs with every
capability but CAP_SYS_RESOURCE and the host's cgroup namespace, and says so.

Examples:
  nodeimg verify kindest/node:v1.30.0
  nodeimg verify kindest/node:v1.30.0 --cni bridge --timeout 10m --output json")]
    Verify(VerifyArgs),
    /// Write an image to a tarball (docker-save format; plain, gzip or zstd by the name) with
    /// a sha256sum file beside it, to carry it to a machine without a registry.
    #[command(after_help = SAVE_EXAMPLES)]
    Save(SaveArgs),
    /// Load a tarball from `save` (or `docker save`, compressed or not) into Docker, after
    /// checking it against FILE.sha256.
    #[command(after_help = SAVE_EXAMPLES)]
    Load(LoadArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The node image to check.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    #[command(flatten)]
    pub options: VerifyOptions,
    /// Print the result as text or as JSON (stages, timings, verdict) on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Pod network: the image's default CNI when all its images are in the node (auto),
    /// that one (default), or a bridge conflist written for the check (bridge) [default: auto].
    #[arg(long, value_enum)]
    pub cni: Option<crate::verify::Cni>,
}

impl VerifyOptions {
    pub fn into_config(self, image: String) -> crate::verify::VerifyConfig {
        crate::verify::VerifyConfig {
            image,
            timeout: self.timeout.unwrap_or(std::time::Duration::from_secs(300)),
            cni: self.cni.unwrap_or(crate::verify::Cni::Auto),
        }
    }

    fn given(&self) -> Option<&'static str> {
        if self.timeout.is_some() {
            Some("--timeout")
        } else if self.cni.is_some() {
            Some("--cni")
        } else {
            None
        }
    }
}

impl VerifyArgs {
    pub fn into_config(self) -> Result<crate::verify::VerifyConfig, ConfigError> {
        validate_image_or_id(&self.image)?;
        Ok(self.options.into_config(self.image))
    }
}

/// `90`, `90s`, `5m`, `1h`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
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

/// An image reference, or an image ID (`sha256:...` or its hex).
fn validate_image_or_id(image: &str) -> Result<(), ConfigError> {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    if hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(());
    }
    validate_image(image)
}

const SAVE_EXAMPLES: &str = "\
Examples:
  nodeimg save kindest/node:v1.30.0 -o node.tar.zst   # writes node.tar.zst and node.tar.zst.sha256
  nodeimg load -i node.tar.zst                        # checks node.tar.zst.sha256, then loads
  nodeimg build node-image v1.30.0 -i kindest/node:v1.30.0 --save node.tar.gz";

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
    #[arg(short, long, value_name = "FILE")]
    pub input: std::path::PathBuf,
    /// Do not check FILE against FILE.sha256.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Print every image the node image will contain and where each will come from, one
    /// per line (`IMAGE<TAB>SOURCE`), without building anything. Use it to pre-seed a mirror.
    #[command(after_help = "\
Examples:
  nodeimg images list v1.30.0
  nodeimg images list ./kubernetes-server-linux-amd64.tar.gz -b nodeimg/base:abc | cut -f1")]
    List(Box<SourceArgs>),
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
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The archive to write (docker-save and OCI layout at once).
    #[arg(short, long, value_name = "FILE")]
    pub output: std::path::PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Build the base image every node image starts from (systemd, containerd, runc, CNI).
    #[command(after_help = EXAMPLES)]
    BaseImage(BaseImageArgs),
    /// Build a kind node image from Kubernetes release artifacts.
    #[command(after_help = NODE_EXAMPLES)]
    NodeImage(Box<NodeImageArgs>),
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
    /// it; a failed check leaves the tag where it was. (`--no-verify` is unrelated: it skips
    /// download checksums.)
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub verify_options: VerifyOptions,
    /// Also save the image to FILE (.tar, .tar.gz or .tar.zst), as `nodeimg save` does.
    #[arg(long, value_name = "FILE")]
    pub save: Option<std::path::PathBuf>,
    // Last: its image-source flags open a help section of their own.
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Where the images a node image holds come from. Order for every image: built tars →
/// archives → the host's Docker cache → mirror → upstream.
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
    /// A TOML file with any of: registry_mirrors, node_registry_mirrors, image_archives,
    /// images_dirs, extra_images, extra_images_files (arrays of strings), offline (bool).
    /// Flags add to it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// Where Kubernetes and the base image come from: shared by `build node-image` and
/// `images list`.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Where Kubernetes comes from (see below).
    #[arg(value_name = "SOURCE")]
    pub source: Option<String>,
    /// Base image [default: the image `nodeimg build base-image` makes with its defaults].
    #[arg(short, long, value_name = "IMAGE")]
    pub base_image: Option<String>,
    /// Target architecture [default: this machine's].
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Read SOURCE as this type instead of detecting it.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub source_type: Option<crate::kube::SourceType>,
    /// Kubernetes version to check out (a tag) in the source tree; with `--type release`,
    /// the release to fetch.
    #[arg(short, long, value_name = "VERSION")]
    pub kube_version: Option<String>,
    /// The Kubernetes source tree [default: the current directory if it is one, else
    /// $GOPATH/src/k8s.io/kubernetes, else $GOPATH/src/github.com/kubernetes/kubernetes].
    #[arg(long, value_name = "DIR")]
    pub kube_root: Option<std::path::PathBuf>,
    /// Repository to clone into ~/.cache/nodeimg/kubernetes when no tree is found and -k is given.
    #[arg(long, value_name = "URL", default_value = crate::kube::tree::DEFAULT_REPO)]
    pub kube_repo: String,
    /// How to build a source tree: upstream's dockerized build, or the host's Go.
    #[arg(long, value_enum, default_value_t = crate::kube::build::BuildMode::Docker)]
    pub build_mode: crate::kube::build::BuildMode,
    /// Base of the control-plane images in host mode [default: the one upstream uses for
    /// that version, from build/common.sh; kube-proxy needs iptables in it].
    #[arg(long, value_name = "IMAGE")]
    pub component_base_image: Option<String>,
    /// Base URL of Kubernetes releases (dl.k8s.io layout), e.g. an internal mirror.
    #[arg(long, env = "NODEIMG_RELEASE_URL", default_value = "https://dl.k8s.io", value_name = "URL")]
    pub release_url: String,
    /// Do not check downloads against their published checksums.
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub images: ImageSourceArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum From {
    /// debootstrap a Debian root filesystem on this machine and import it: no image registry
    /// needed, only a Debian mirror. Needs root.
    Debootstrap,
    /// Build base-image/Dockerfile through the Docker Engine API (pulls --debian-image).
    Dockerfile,
}

#[derive(Debug, Args)]
pub struct BaseImageArgs {
    /// How to build the image.
    #[arg(long, value_enum, default_value_t = From::Debootstrap)]
    pub from: From,
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

impl Cli {
    pub fn verbosity(&self) -> Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid Debian suite {0:?}: use a name like bookworm or trixie")]
    Suite(String),
    #[error("invalid mirror {0:?}: expected an http:// or https:// URL")]
    Mirror(String),
    #[error("invalid image name {0:?}: expected [registry/]name[:tag] in lowercase")]
    Image(String),
    #[error("{0} applies only to --from {1}")]
    NotFor(&'static str, &'static str),
    #[error("cannot write {0:?}: its directory does not exist")]
    NoDirectory(String),
    #[error("{0} applies only with {1}")]
    OnlyWith(&'static str, &'static str),
    #[error("invalid SOURCE")]
    Source(#[from] crate::kube::SourceError),
    #[error("invalid --release-url {0:?}: expected an http:// or https:// URL")]
    ReleaseUrl(String),
    #[error("unsupported --arch {0:?}: expected amd64, arm64, ppc64le or s390x")]
    Arch(String),
    #[error("cannot save to {0:?}: the name must end in .tar, .tar.gz or .tar.zst")]
    ArchiveName(String),
    #[error(transparent)]
    RegistryMirror(#[from] crate::nodeimage::mirror::MirrorError),
    #[error("{0}")]
    File(String),
    #[error("invalid {flag} {given:?}: expected [registry/]name[:tag] in lowercase")]
    ExtraImage { flag: String, given: String },
}

impl NodeImageArgs {
    pub fn into_config(self) -> Result<crate::nodeimage::NodeImageConfig, ConfigError> {
        validate_image(&self.image)?;
        let mut cfg = self.source.into_config()?;
        cfg.image = self.image;
        cfg.build_dir = self.build_dir;
        cfg.keep_container = self.keep_container;
        for given in &self.node_registry_mirrors {
            cfg.node_mirrors.push(crate::nodeimage::mirror::NodeMirror::parse(given)?);
        }
        if let (false, Some(flag)) = (self.verify, self.verify_options.given()) {
            return Err(ConfigError::OnlyWith(flag, "--verify"));
        }
        cfg.check = self.verify.then(|| self.verify_options.into_config(String::new()));
        Ok(cfg)
    }
}

impl NodeImageArgs {
    /// Where `--save` writes, checked with the other flags.
    pub fn save_target(&self) -> Result<Option<crate::transfer::SaveTarget>, ConfigError> {
        self.save.as_deref().map(crate::transfer::SaveTarget::parse).transpose()
    }
}

impl SaveArgs {
    pub fn target(&self) -> Result<crate::transfer::SaveTarget, ConfigError> {
        crate::transfer::SaveTarget::parse(&self.output)
    }
}

impl SourceArgs {
    /// A node-image config without a target (for `images list`).
    pub fn into_config(self) -> Result<crate::nodeimage::NodeImageConfig, ConfigError> {
        let base_image = match self.base_image {
            Some(b) => {
                validate_image(&b)?;
                b
            }
            None => crate::baseimage::default_base_image(),
        };
        let arch = self.arch.unwrap_or_else(|| crate::imagearchive::host_architecture().to_owned());
        if !["amd64", "arm64", "ppc64le", "s390x"].contains(&arch.as_str()) {
            return Err(ConfigError::Arch(arch));
        }
        let release_url = validate_mirror(&self.release_url)
            .map_err(|_| ConfigError::ReleaseUrl(self.release_url.clone()))?;
        let source =
            crate::kube::detect(self.source.as_deref(), self.source_type, self.kube_version.as_deref())?;
        if let Some(base) = &self.component_base_image {
            validate_image(base)?;
        }
        let version = match (&source, &self.kube_version) {
            (crate::kube::Source::Tree(_), Some(v)) => {
                Some(crate::kube::KubeVersion::parse(v).map_err(crate::kube::SourceError::from)?)
            }
            _ => None,
        };
        let (images, node_mirrors) = self.images.into_sources()?;
        let tree = crate::kube::TreeOptions {
            kube_root: self.kube_root,
            kube_repo: self.kube_repo,
            version,
            mode: self.build_mode,
            component_base_image: self.component_base_image,
        };
        Ok(crate::nodeimage::NodeImageConfig {
            source,
            image: String::new(),
            base_image,
            arch,
            release_url,
            verify: !self.no_verify,
            build_dir: None,
            keep_container: false,
            check: None,
            tree,
            images,
            node_mirrors,
        })
    }
}

impl ImageSourceArgs {
    /// The config file first, then the flags on top; every entry validated.
    fn into_sources(
        self,
    ) -> Result<(crate::nodeimage::ImageSources, Vec<crate::nodeimage::mirror::NodeMirror>), ConfigError>
    {
        use crate::nodeimage::mirror::{Mirror, NodeMirror};
        let file = match &self.config {
            Some(path) => crate::configfile::read(path).map_err(ConfigError::File)?,
            None => crate::configfile::FileConfig::default(),
        };
        // An entry of the file is reported as the file's, not as a flag the user never typed.
        let in_file = |key: &str, err: crate::nodeimage::mirror::MirrorError| {
            let path = self.config.as_deref().unwrap_or(std::path::Path::new("")).display();
            ConfigError::File(format!("--config {path}: {key}: {err}"))
        };
        let mut mirrors = file
            .registry_mirrors
            .iter()
            .map(|m| Mirror::parse(m).map_err(|e| in_file("registry_mirrors", e)))
            .collect::<Result<Vec<_>, _>>()?;
        for m in &self.registry_mirrors {
            mirrors.push(Mirror::parse(m)?);
        }
        let node_mirrors = file
            .node_registry_mirrors
            .iter()
            .map(|m| NodeMirror::parse(m).map_err(|e| in_file("node_registry_mirrors", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut extra: Vec<(String, String)> = Vec::new();
        for file in file.extra_images_files.iter().chain(&self.extra_images_files) {
            let flag = format!("--extra-images-file {}", file.display());
            let listed = crate::configfile::read_images_file(file).map_err(ConfigError::File)?;
            extra.extend(listed.into_iter().map(|i| (flag.clone(), i)));
        }
        let flags = file.extra_images.into_iter().chain(self.extra_images);
        extra.extend(flags.map(|i| ("--extra-image".to_owned(), i)));
        let mut canonical = Vec::new();
        for (flag, given) in extra {
            validate_image(&given).map_err(|_| ConfigError::ExtraImage { flag, given: given.clone() })?;
            let name = crate::nodeimage::images::normalize(&given);
            if !canonical.contains(&name) {
                canonical.push(name);
            }
        }
        let sources = crate::nodeimage::ImageSources {
            mirrors,
            archive_files: file.image_archives.into_iter().chain(self.image_archives).collect(),
            archive_dirs: file.images_dirs.into_iter().chain(self.images_dirs).collect(),
            extra: canonical,
            offline: file.offline || self.offline,
        };
        Ok((sources, node_mirrors))
    }
}

impl BaseImageArgs {
    pub fn into_config(self) -> Result<BaseImageConfig, ConfigError> {
        if let Some(image) = &self.image {
            validate_image(image)?;
        }
        let source = match self.from {
            From::Debootstrap => {
                if self.debian_image.is_some() {
                    return Err(ConfigError::NotFor("--debian-image", "dockerfile"));
                }
                let suite = self.suite.unwrap_or_else(|| "bookworm".to_owned());
                validate_suite(&suite)?;
                let mirror = match self.mirror {
                    Some(m) => validate_mirror(&m)?,
                    None => default_mirror(),
                };
                Source::Debootstrap { suite, mirror }
            }
            From::Dockerfile => {
                if self.suite.is_some() {
                    return Err(ConfigError::NotFor("--suite", "debootstrap"));
                }
                if self.mirror.is_some() {
                    return Err(ConfigError::NotFor("--mirror", "debootstrap"));
                }
                let debian_image = self.debian_image.unwrap_or_else(|| "debian:bookworm-slim".to_owned());
                validate_image(&debian_image)?;
                Source::Dockerfile { debian_image }
            }
        };
        Ok(BaseImageConfig { source, image: self.image, rebuild: self.rebuild })
    }
}

fn validate_suite(suite: &str) -> Result<(), ConfigError> {
    let ok = suite.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && suite.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok { Ok(()) } else { Err(ConfigError::Suite(suite.to_owned())) }
}

/// Returns the mirror without a trailing slash.
fn validate_mirror(mirror: &str) -> Result<String, ConfigError> {
    let rest = mirror.strip_prefix("http://").or_else(|| mirror.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') && !mirror.contains(char::is_whitespace) => {
            Ok(mirror.trim_end_matches('/').to_owned())
        }
        _ => Err(ConfigError::Mirror(mirror.to_owned())),
    }
}

/// A Docker image reference: optional registry host[:port], lowercase path components,
/// optional tag.
pub fn validate_image(reference: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Image(reference.to_owned());
    let (name, tag) = crate::docker::split_reference_opt(reference);
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !ok {
            return Err(bad());
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c)) {
            return Err(bad());
        }
    }
    let component_ok = |p: &&str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if parts.is_empty() || !parts.iter().all(component_ok) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<BaseImageConfig, ConfigError> {
        let cli = Cli::try_parse_from([&["nodeimg", "build", "base-image"], args].concat()).unwrap();
        let Command::Build(BuildCommand::BaseImage(args)) = cli.command else { unreachable!() };
        args.into_config()
    }

    #[test]
    fn defaults_to_debootstrap_of_bookworm() {
        let cfg = parse(&["--mirror", "http://mirror.example/debian/"]).unwrap();
        assert_eq!(
            cfg.source,
            Source::Debootstrap { suite: "bookworm".into(), mirror: "http://mirror.example/debian".into() }
        );
        assert_eq!(cfg.image, None);
    }

    #[test]
    fn rejects_bad_suites_mirrors_and_images() {
        assert_eq!(parse(&["--suite", "Bad Suite"]), Err(ConfigError::Suite("Bad Suite".into())));
        assert_eq!(parse(&["--mirror", "ftp://x/"]), Err(ConfigError::Mirror("ftp://x/".into())));
        assert_eq!(parse(&["--mirror", "http://"]), Err(ConfigError::Mirror("http://".into())));
        assert_eq!(parse(&["-i", "Upper/Case"]), Err(ConfigError::Image("Upper/Case".into())));
        assert_eq!(parse(&["-i", "name:bad tag"]), Err(ConfigError::Image("name:bad tag".into())));
    }

    #[test]
    fn source_specific_flags_are_refused_for_the_other_source() {
        assert_eq!(
            parse(&["--from", "dockerfile", "--suite", "trixie"]),
            Err(ConfigError::NotFor("--suite", "debootstrap"))
        );
        assert_eq!(
            parse(&["--debian-image", "debian:12"]),
            Err(ConfigError::NotFor("--debian-image", "dockerfile"))
        );
        let cfg = parse(&["--from", "dockerfile"]).unwrap();
        assert_eq!(cfg.source, Source::Dockerfile { debian_image: "debian:bookworm-slim".into() });
    }

    #[test]
    fn image_references() {
        for ok in
            ["nodeimg/base:abc", "localhost:5000/kind/base:v1", "base", "registry.k8s.io/pause:3.9", "a.b/c"]
        {
            assert_eq!(validate_image(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Base", "base:", "/base", "base/", "base:-x", "a//b"] {
            assert!(validate_image(bad).is_err(), "{bad}");
        }
    }

    fn node(args: &[&str]) -> Result<crate::nodeimage::NodeImageConfig, ConfigError> {
        let cli =
            Cli::try_parse_from([&["nodeimg", "build", "node-image", "v1.30.0"], args].concat()).unwrap();
        let Command::Build(BuildCommand::NodeImage(args)) = cli.command else { unreachable!() };
        (*args).into_config()
    }

    #[test]
    fn image_source_flags_add_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("nodeimg.toml");
        std::fs::write(
            &config,
            "registry_mirrors = [\"docker.io=m:5000/hub\"]\nextra_images = [\"busybox:1\"]\n",
        )
        .unwrap();
        let list = dir.path().join("extra.txt");
        std::fs::write(&list, "quay.io/x/y:2\n").unwrap();
        let cfg = node(&[
            "--config",
            config.to_str().unwrap(),
            "--registry-mirror",
            "registry.k8s.io=http://127.0.0.1:5000",
            "--extra-image",
            "docker.io/library/busybox:1",
            "--extra-images-file",
            list.to_str().unwrap(),
            "--node-registry-mirror",
            "docker.io=http://127.0.0.1:5000",
            "--offline",
        ])
        .unwrap();
        let srcs: Vec<_> = cfg.images.mirrors.iter().map(|m| m.src.as_str()).collect();
        assert_eq!(srcs, ["docker.io", "registry.k8s.io"]);
        assert_eq!(cfg.images.extra, ["quay.io/x/y:2", "docker.io/library/busybox:1"], "deduplicated");
        assert!(cfg.images.offline);
        assert_eq!(cfg.node_mirrors.len(), 1);
    }

    #[test]
    fn bad_image_source_flags_fail_naming_the_input() {
        let err = node(&["--registry-mirror", "registry.k8s.io"]).unwrap_err().to_string();
        assert!(err.contains("--registry-mirror \"registry.k8s.io\"") && err.contains("SRC=DEST"), "{err}");
        let err = node(&["--extra-image", "Bad:tag"]).unwrap_err().to_string();
        assert!(err.contains("--extra-image \"Bad:tag\""), "{err}");
        let err = node(&["--config", "/nonexistent/nodeimg.toml"]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/nodeimg.toml"), "{err}");
        let err = node(&["--node-registry-mirror", "docker.io=mirror:5000"]).unwrap_err().to_string();
        assert!(err.contains("--node-registry-mirror") && err.contains("http://"), "{err}");
    }

    #[test]
    fn bad_config_file_entries_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("nodeimg.toml");
        std::fs::write(&config, "registry_mirrors = [\"registry.k8s.io\"]\n").unwrap();
        let err = node(&["--config", config.to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("--config {}: registry_mirrors: ", config.display())), "{err}");
        std::fs::write(&config, "node_registry_mirrors = [\"docker.io=mirror:5000\"]\n").unwrap();
        let err = node(&["--config", config.to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("node_registry_mirrors: ") && err.contains("nodeimg.toml"), "{err}");
    }

    #[test]
    fn quiet_and_verbose_conflict() {
        assert!(Cli::try_parse_from(["nodeimg", "-q", "-v", "clean"]).is_err());
        let cli = Cli::try_parse_from(["nodeimg", "-v", "clean"]).unwrap();
        assert_eq!(cli.verbosity(), Verbosity::Verbose);
    }

    #[test]
    fn save_targets_are_checked_with_the_flags() {
        let cli = Cli::try_parse_from(["nodeimg", "save", "node:v1", "-o", "/tmp/node.tar.zst"]).unwrap();
        let Command::Save(args) = cli.command else { unreachable!() };
        assert_eq!(args.target().unwrap().compression, crate::transfer::Compression::Zstd);
        let cli = Cli::try_parse_from(["nodeimg", "build", "node-image", "--save", "node.zip"]).unwrap();
        let Command::Build(BuildCommand::NodeImage(args)) = cli.command else { unreachable!() };
        assert_eq!(args.save_target(), Err(ConfigError::ArchiveName("node.zip".into())));
        assert!(Cli::try_parse_from(["nodeimg", "load"]).is_err(), "-i is required");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn verify_flags_need_verify_on_build() {
        let parse = |args: &[&str]| {
            let cli =
                Cli::try_parse_from([&["nodeimg", "build", "node-image", "v1.30.0"], args].concat()).unwrap();
            let Command::Build(BuildCommand::NodeImage(args)) = cli.command else { unreachable!() };
            args.into_config()
        };
        assert_eq!(parse(&["--timeout", "90s"]).unwrap_err(), ConfigError::OnlyWith("--timeout", "--verify"));
        assert_eq!(parse(&["--cni", "bridge"]).unwrap_err(), ConfigError::OnlyWith("--cni", "--verify"));
        assert!(parse(&[]).unwrap().check.is_none());
        let check = parse(&["--verify", "--timeout", "90s", "--cni", "bridge"]).unwrap().check.unwrap();
        assert_eq!(check.timeout, std::time::Duration::from_secs(90));
        assert_eq!(check.cni, crate::verify::Cni::Bridge);
        let check = parse(&["--verify"]).unwrap().check.unwrap();
        assert_eq!((check.timeout.as_secs(), check.cni), (300, crate::verify::Cni::Auto));
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

    #[test]
    fn help_has_examples() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("build")
            .unwrap()
            .find_subcommand_mut("base-image")
            .unwrap()
            .render_long_help();
        assert!(help.to_string().contains("Examples:"));
    }
}
