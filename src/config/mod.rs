//! Command-line arguments and the `--config` file, turned into validated configs for the
//! pipelines. Every check that needs no daemon happens here, so a bad flag fails with one
//! line before anything touches Docker.

mod cluster;
mod crictl;
pub mod file;
mod node_image;
mod variant;

use std::path::Path;

use crate::baseimage::{BaseImageConfig, DEFAULT_SUITE, RuntimeLine, Source, default_mirror};
use crate::cli::{BaseImageArgs, DiffArgs, From, Runtime, SaveArgs, VerifyArgs, VerifyOptions};
use crate::transfer::SaveTarget;

pub use cluster::{ClusterError, cluster_update};
pub use node_image::{Outputs, node_image, plan};
pub use variant::{VariantError, images_add, node_variant};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid --nodes {0}: expected 1 to 10 (one control plane plus workers)")]
    Nodes(usize),
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
    #[error(
        "--verify with --no-verify: --no-verify is the old spelling of --skip-checksums, not the opposite of --verify; write --skip-checksums"
    )]
    VerifyNoVerify,
    #[error("invalid SOURCE")]
    Source(#[from] crate::kube::SourceError),
    #[error("invalid --release-url {0:?}: expected an http:// or https:// URL")]
    ReleaseUrl(String),
    #[error("unsupported --arch {0:?}: expected amd64, arm64, ppc64le or s390x")]
    Arch(String),
    #[error(
        "-b {0} is one image for {1} architectures: name one per arch with {{arch}} (e.g. -b my/base:{{arch}}), or leave -b out"
    )]
    BaseForArches(String, usize),
    #[error(
        "--from-node {0} is one image for {1} architectures: name one per arch with {{arch}}, or leave --from-node out"
    )]
    FromNodeForArches(String, usize),
    #[error(
        "SOURCE is one architecture's release, --arch {0} wants several: give a version (v1.30.0), a CI marker or a source tree"
    )]
    SourceForArches(String),
    #[error("--save writes one image, --arch {0} makes several: save each with `nodeimg save`")]
    SaveArches(String),
    #[error("invalid --engine {given:?}: {why}")]
    Engine { given: String, why: String },
    #[error("cannot save to {0:?}: the name must end in .tar, .tar.gz or .tar.zst")]
    ArchiveName(String),
    #[error(transparent)]
    RegistryMirror(#[from] crate::nodeimage::mirror::MirrorError),
    #[error("invalid image {0:?}: expected a name ([registry/]name[:tag] in lowercase) or an image ID")]
    ImageOrId(String),
    #[error("{0}")]
    File(String),
    #[error("invalid {flag} {given:?}: expected [registry/]name[:tag] in lowercase")]
    ExtraImage { flag: String, given: String },
    #[error(transparent)]
    Crictl(#[from] crictl::CrictlConfigError),
    #[error(transparent)]
    Variant(#[from] variant::VariantError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// `build base-image`.
pub fn base_image(args: BaseImageArgs) -> Result<BaseImageConfig, ConfigError> {
    if let Some(image) = &args.image {
        validate_image(image)?;
    }
    let crictl = crictl::crictl(&args)?;
    let source = match args.from {
        From::Debootstrap => {
            if args.debian_image.is_some() {
                return Err(ConfigError::NotFor("--debian-image", "dockerfile"));
            }
            let suite = args.suite.unwrap_or_else(|| DEFAULT_SUITE.to_owned());
            validate_suite(&suite)?;
            let mirror = match args.mirror {
                Some(m) => validate_mirror(&m)?,
                None => default_mirror(),
            };
            Source::Debootstrap { suite, mirror }
        }
        From::Dockerfile => {
            if args.suite.is_some() {
                return Err(ConfigError::NotFor("--suite", "debootstrap"));
            }
            if args.mirror.is_some() {
                return Err(ConfigError::NotFor("--mirror", "debootstrap"));
            }
            let debian_image = args.debian_image.unwrap_or_else(|| "debian:bookworm-slim".to_owned());
            validate_image(&debian_image)?;
            Source::Dockerfile { debian_image }
        }
    };
    let runtime = match args.runtime {
        Runtime::V1_6 => RuntimeLine::V1_6,
        Runtime::V1_7 => RuntimeLine::V1_7,
        Runtime::V2 => RuntimeLine::V2,
    };
    let arch = validate_arch(args.arch)?;
    let crictl_default = crictl.is_none();
    Ok(BaseImageConfig {
        source,
        image: args.image,
        rebuild: args.rebuild,
        crictl,
        crictl_default,
        runtime,
        arch,
    })
}

/// `diff`: both names must be image references or IDs; `--json` is `--output json`.
pub fn diff(args: DiffArgs) -> Result<(String, String, bool), ConfigError> {
    for image in [&args.a, &args.b] {
        if !crate::reference::is_image_id(image) && !crate::reference::is_valid(image) {
            return Err(ConfigError::ImageOrId(image.to_string()));
        }
    }
    Ok((args.a, args.b, args.json || args.output == crate::cli::Output::Json))
}

/// `verify IMAGE`.
pub fn verify(args: VerifyArgs) -> Result<crate::verify::VerifyConfig, ConfigError> {
    if !crate::reference::is_image_id(&args.image) && !crate::reference::is_valid(&args.image) {
        return Err(ConfigError::ImageOrId(args.image));
    }
    let mut cfg = verify_options(args.options, args.image)?;
    cfg.keep = args.keep;
    Ok(cfg)
}

/// `--verify` and the options that tune it (which alone are refused): what
/// `build node-image` and `build node-variant` check before tagging.
fn checked_if(
    verify: bool,
    options: VerifyOptions,
) -> Result<Option<crate::verify::VerifyConfig>, ConfigError> {
    let given = if options.timeout.is_some() {
        Some("--timeout")
    } else if options.cni.is_some() {
        Some("--cni")
    } else if options.nodes.is_some() {
        Some("--nodes")
    } else if options.allow_skipped {
        Some("--allow-skipped")
    } else {
        None
    };
    if let (false, Some(flag)) = (verify, given) {
        return Err(ConfigError::OnlyWith(flag, "--verify"));
    }
    if verify { Ok(Some(verify_options(options, String::new())?)) } else { Ok(None) }
}

fn verify_options(options: VerifyOptions, image: String) -> Result<crate::verify::VerifyConfig, ConfigError> {
    let nodes = options.nodes.unwrap_or(1);
    if !(1..=10).contains(&nodes) {
        return Err(ConfigError::Nodes(nodes));
    }
    Ok(crate::verify::VerifyConfig {
        image,
        timeout: options.timeout.unwrap_or(std::time::Duration::from_secs(300)),
        cni: options.cni.map_or(crate::verify::Cni::Auto, cni),
        nodes,
        keep: false,
        allow_skipped: options.allow_skipped,
    })
}

/// `save IMAGE -o FILE`: where it writes, checked before Docker is touched.
pub fn save_target(args: &SaveArgs) -> Result<SaveTarget, ConfigError> {
    archive_target(&args.output)
}

/// A `.tar`, `.tar.gz` or `.tar.zst` to write, in a directory that exists.
pub fn archive_target(path: &Path) -> Result<SaveTarget, ConfigError> {
    let compression = crate::transfer::Compression::from_name(path)
        .ok_or_else(|| ConfigError::ArchiveName(path.display().to_string()))?;
    output_dir_exists(path)?;
    Ok(SaveTarget { path: path.to_owned(), compression })
}

/// Fails early, before a long build, when a file could not be written where asked.
pub fn output_dir_exists(path: &Path) -> Result<(), ConfigError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if dir.is_dir() { Ok(()) } else { Err(ConfigError::NoDirectory(path.display().to_string())) }
}

/// One of the architectures kind's node images exist for; none: the host's.
fn validate_arch(given: Option<String>) -> Result<String, ConfigError> {
    let arch = given.unwrap_or_else(|| crate::platform::host_architecture().to_owned());
    if !ARCHES.contains(&arch.as_str()) {
        return Err(ConfigError::Arch(arch));
    }
    Ok(arch)
}

pub const ARCHES: [&str; 4] = ["amd64", "arm64", "ppc64le", "s390x"];

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

fn cni(value: crate::cli::Cni) -> crate::verify::Cni {
    match value {
        crate::cli::Cni::Auto => crate::verify::Cni::Auto,
        crate::cli::Cni::Default => crate::verify::Cni::Default,
        crate::cli::Cni::Bridge => crate::verify::Cni::Bridge,
    }
}

fn source_type(value: crate::cli::SourceType) -> crate::kube::SourceType {
    use crate::cli::SourceType as Arg;
    use crate::kube::SourceType;
    match value {
        Arg::File => SourceType::File,
        Arg::Url => SourceType::Url,
        Arg::Release => SourceType::Release,
        Arg::Ci => SourceType::Ci,
        Arg::Source => SourceType::Source,
    }
}

fn build_mode(value: crate::cli::BuildMode) -> crate::kube::build::BuildMode {
    match value {
        crate::cli::BuildMode::Docker => crate::kube::build::BuildMode::Docker,
        crate::cli::BuildMode::Host => crate::kube::build::BuildMode::Host,
    }
}

fn validate_image(reference: &str) -> Result<(), ConfigError> {
    if crate::reference::is_valid(reference) { Ok(()) } else { Err(ConfigError::Image(reference.to_owned())) }
}

/// `--with-kubeadm`, `--with-kubelet`, `--with-kubectl` as `(name, file, the architecture its
/// ELF header names)`, the first unreadable or non-ELF one as `(name, why)`.
type GivenBinaries = Vec<(&'static str, std::path::PathBuf, &'static str)>;

fn with_binaries(
    kubeadm: &Option<std::path::PathBuf>,
    kubelet: &Option<std::path::PathBuf>,
    kubectl: &Option<std::path::PathBuf>,
) -> Result<GivenBinaries, (&'static str, crate::elf::ElfError)> {
    let mut binaries = Vec::new();
    for (name, path) in [("kubeadm", kubeadm), ("kubelet", kubelet), ("kubectl", kubectl)] {
        if let Some(path) = path {
            binaries.push((name, path.clone(), crate::elf::architecture(path).map_err(|e| (name, e))?));
        }
    }
    Ok(binaries)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{BuildCommand, Cli, Command};

    fn parse(args: &[&str]) -> Result<BaseImageConfig, ConfigError> {
        let cli = Cli::try_parse_from([&["nodeimg", "build", "base-image"], args].concat()).unwrap();
        let Command::Build(BuildCommand::BaseImage(args)) = cli.command else { unreachable!() };
        base_image(args)
    }

    #[test]
    fn defaults_to_debootstrap_of_bookworm() {
        let cfg = parse(&["--mirror", "http://mirror.example/debian/"]).unwrap();
        assert_eq!(
            cfg.source,
            Source::Debootstrap { suite: "bookworm".into(), mirror: "http://mirror.example/debian".into() }
        );
        assert_eq!(cfg.image, None);
        assert_eq!(cfg.runtime, RuntimeLine::V1_7, "containerd 1.7 is the default line");
        assert_eq!(parse(&["--runtime", "2"]).unwrap().runtime, RuntimeLine::V2);
        assert_eq!(parse(&["--runtime", "1.6"]).unwrap().runtime, RuntimeLine::V1_6);
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
    fn save_targets_are_checked_with_the_flags() {
        let cli = Cli::try_parse_from(["nodeimg", "save", "node:v1", "-o", "/tmp/node.tar.zst"]).unwrap();
        let Command::Save(args) = cli.command else { unreachable!() };
        assert_eq!(save_target(&args).unwrap().compression, crate::transfer::Compression::Zstd);
        let cli = Cli::try_parse_from(["nodeimg", "build", "node-image", "--save", "node.zip"]).unwrap();
        let Command::Build(BuildCommand::NodeImage(args)) = cli.command else { unreachable!() };
        assert_eq!(node_image(*args).err(), Some(ConfigError::ArchiveName("node.zip".into())));
        assert!(Cli::try_parse_from(["nodeimg", "load"]).is_err(), "-i is required");
        let err = archive_target(Path::new("node.tar.bz2")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cannot save to "node.tar.bz2": the name must end in .tar, .tar.gz or .tar.zst"#
        );
    }

    #[test]
    fn the_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert!(archive_target(&dir.path().join("node.tar")).is_ok());
        assert!(archive_target(Path::new("node.tar")).is_ok(), "the current directory");
        let missing = dir.path().join("nope/node.tar");
        assert_eq!(
            archive_target(&missing).unwrap_err(),
            ConfigError::NoDirectory(missing.display().to_string())
        );
        assert!(output_dir_exists(&missing).is_err());
    }

    #[test]
    fn verify_takes_names_and_ids() {
        let parse = |image: &str| {
            let cli = Cli::try_parse_from(["nodeimg", "verify", image]).unwrap();
            let Command::Verify(args) = cli.command else { unreachable!() };
            verify(args)
        };
        assert!(parse("kindest/node:v1.30.0").is_ok());
        assert!(parse("sha256:0123456789abcdef").is_ok());
        assert_eq!(parse("Bad Image").unwrap_err(), ConfigError::ImageOrId("Bad Image".into()));
    }
}
