//! `build node-image`, `images list` and `images save`: where Kubernetes, the base image and
//! the node's images come from, from flags and the `--config` file.

use super::{ConfigError, archive_target, checked_if, file, validate_arch, validate_image, validate_mirror};
use crate::cli::{ImageSourceArgs, KubeArgs, NodeImageArgs, PlanArgs, SourceArgs};
use crate::kube::{self, KubeVersion, SourceError};
use crate::nodeimage::incremental::FromNode;
use crate::nodeimage::mirror::{Mirror, MirrorError, NodeMirror};
use crate::nodeimage::multiarch::{self, MultiArch};
use crate::nodeimage::{ImageSources, NodeImageConfig, PROXY_VARS};
use crate::transfer::SaveTarget;

/// Where a built node image goes besides its tag.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// `--save FILE`.
    pub save: Option<SaveTarget>,
    /// `--push REF`.
    pub push: Option<String>,
    /// `--report FILE`.
    pub report: Option<std::path::PathBuf>,
    /// `--sbom FILE`.
    pub sbom: Option<std::path::PathBuf>,
}

/// `build node-image`, and where `--save`, `--push` and `--report` go (checked with the
/// other flags).
pub fn node_image(mut args: NodeImageArgs) -> Result<(MultiArch, Outputs), ConfigError> {
    if args.verify && args.source.kube.no_verify {
        return Err(ConfigError::VerifyNoVerify);
    }
    let arches = arches(args.source.arch.take())?;
    for arch in &arches {
        validate_image(&multiarch::name_for(&args.image, arch, arches.len() > 1))?;
    }
    let base_image = args.source.base_image.take();
    if let Some(base) = &base_image {
        if arches.len() > 1 && !base.contains(multiarch::ARCH_PLACEHOLDER) {
            return Err(ConfigError::BaseForArches(base.clone(), arches.len()));
        }
        for arch in &arches {
            validate_image(&base.replace(multiarch::ARCH_PLACEHOLDER, arch))?;
        }
    }
    let save = args.save.as_deref().map(archive_target).transpose()?;
    if save.is_some() && arches.len() > 1 {
        return Err(ConfigError::SaveArches(arches.join(",")));
    }
    if let Some(push) = &args.push {
        validate_image(push)?;
    }
    for file in args.report.iter().chain(&args.sbom) {
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(ConfigError::NoDirectory(file.display().to_string()));
        }
    }
    let outputs = Outputs { save, push: args.push, report: args.report, sbom: args.sbom };
    let mut cfg = sources(args.source)?;
    if arches.len() > 1
        && let kube::Source::File(_) | kube::Source::Url(_) = &cfg.source
    {
        return Err(ConfigError::SourceForArches(arches.join(",")));
    }
    cfg.image = args.image.clone();
    cfg.build_dir = args.build_dir;
    cfg.keep_container = args.keep_container;
    for given in &args.node_registry_mirrors {
        cfg.node_mirrors.push(NodeMirror::parse(given)?);
    }
    cfg.check = checked_if(args.verify, args.verify_options)?;
    cfg.from_node = match (args.from_node, args.full) {
        (_, true) => FromNode::Full,
        (Some(image), false) => {
            if arches.len() > 1 && !image.contains(multiarch::ARCH_PLACEHOLDER) {
                return Err(ConfigError::FromNodeForArches(image, arches.len()));
            }
            for arch in &arches {
                validate_image(&image.replace(multiarch::ARCH_PLACEHOLDER, arch))?;
            }
            FromNode::Image(image)
        }
        (None, false) => FromNode::Auto,
    };
    let engines = engines(&args.engines, &arches)?;
    Ok((MultiArch { cfg, arches, image: args.image, base_image, engines }, outputs))
}

/// `--engine ARCH=DOCKER_HOST`: an arch being built, once, on a socket or TCP engine.
fn engines(given: &[String], arches: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut engines: Vec<(String, String)> = Vec::new();
    for text in given {
        let err = |why: String| ConfigError::Engine { given: text.clone(), why };
        let (arch, host) = text.split_once('=').ok_or_else(|| err("expected ARCH=DOCKER_HOST".into()))?;
        if !arches.iter().any(|a| a == arch) {
            return Err(err(format!("{arch} is not among --arch {}", arches.join(","))));
        }
        if engines.iter().any(|(a, _)| a == arch) {
            return Err(err(format!("a second engine for {arch}")));
        }
        if host.starts_with("ssh://") {
            return Err(err(
                "ssh is not spoken here; forward the engine's socket (ssh -nNT -L /tmp/e.sock:/var/run/docker.sock HOST) and pass unix:///tmp/e.sock".into(),
            ));
        }
        if !["unix://", "tcp://", "http://", "https://"].iter().any(|s| host.starts_with(s)) {
            return Err(err("DOCKER_HOST must start with unix://, tcp://, http:// or https://".into()));
        }
        engines.push((arch.to_owned(), host.to_owned()));
    }
    Ok(engines)
}

/// `--arch a,b,...`: each one checked, none twice; none given: the host's.
fn arches(given: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(given) = given else { return Ok(vec![validate_arch(None)?]) };
    let mut arches = Vec::new();
    for arch in given.split(',').map(str::trim) {
        let arch = validate_arch(Some(arch.to_owned()))?;
        if arches.contains(&arch) {
            return Err(ConfigError::Arch(format!("{given} ({arch} twice)")));
        }
        arches.push(arch);
    }
    Ok(arches)
}

/// `build node-image`'s sources, before the target and outputs are added.
fn sources(args: SourceArgs) -> Result<NodeImageConfig, ConfigError> {
    let mut cfg = sources_of(args.source, args.base_image, args.arch, args.kube, args.images)?;
    cfg.skip_compat_check = args.skip_compat_check;
    Ok(cfg)
}

/// A node-image config without a target (for `images list` and `images save`).
pub fn plan(args: PlanArgs) -> Result<NodeImageConfig, ConfigError> {
    let mut cfg = sources_of(args.source, args.base_image, args.arch, args.kube, args.images)?;
    cfg.plan_only = true;
    Ok(cfg)
}

fn sources_of(
    given: Option<String>,
    base_image: Option<String>,
    arch: Option<String>,
    kube: KubeArgs,
    images: ImageSourceArgs,
) -> Result<NodeImageConfig, ConfigError> {
    if let Some(base) = &base_image {
        validate_image(base)?;
    }
    let arch = validate_arch(arch)?;
    let release_url =
        validate_mirror(&kube.release_url).map_err(|_| ConfigError::ReleaseUrl(kube.release_url.clone()))?;
    let forced = kube.source_type.map(super::source_type);
    let source = kube::detect(given.as_deref(), forced, kube.kube_version.as_deref())?;
    if let Some(base) = &kube.component_base_image {
        validate_image(base)?;
    }
    let version = match (&source, &kube.kube_version) {
        (kube::Source::Tree(_), Some(v)) => Some(KubeVersion::parse(v).map_err(SourceError::from)?),
        _ => None,
    };
    let allow_foreign_images = images.allow_foreign_images;
    let (images, node_mirrors) = image_sources(images)?;
    Ok(NodeImageConfig {
        source,
        image: String::new(),
        base_image,
        skip_compat_check: false,
        arch,
        release_url,
        checksums: !(kube.skip_checksums || kube.no_verify),
        build_dir: None,
        keep_container: false,
        check: None,
        tree: kube::TreeOptions {
            kube_root: kube.kube_root,
            kube_repo: kube.kube_repo.unwrap_or_else(|| kube::tree::DEFAULT_REPO.to_owned()),
            version,
            mode: super::build_mode(kube.build_mode),
        },
        component_base_image: kube.component_base_image,
        images,
        node_mirrors,
        proxy_env: proxy_env(|k| std::env::var(k).ok()),
        from_node: FromNode::Full,
        allow_foreign_images,
        plan_only: false,
    })
}

/// The proxy settings the build container gets, read once here rather than deep in the
/// pipeline (whose tests then need no process-wide environment).
fn proxy_env(get: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    PROXY_VARS.iter().filter_map(|k| get(k).filter(|v| !v.is_empty()).map(|v| (k.to_string(), v))).collect()
}

/// The config file first, then the flags on top; every entry validated.
fn image_sources(args: ImageSourceArgs) -> Result<(ImageSources, Vec<NodeMirror>), ConfigError> {
    let from_file = match &args.config {
        Some(path) => file::read(path).map_err(ConfigError::File)?,
        None => file::FileConfig::default(),
    };
    // An entry of the file is reported as the file's, not as a flag the user never typed.
    let in_file = |key: &str, err: MirrorError| {
        let path = args.config.as_deref().unwrap_or(std::path::Path::new("")).display();
        ConfigError::File(format!("--config {path}: {key}: {err}"))
    };
    let mut mirrors = from_file
        .registry_mirrors
        .iter()
        .map(|m| Mirror::parse(m).map_err(|e| in_file("registry_mirrors", e)))
        .collect::<Result<Vec<_>, _>>()?;
    for m in &args.registry_mirrors {
        mirrors.push(Mirror::parse(m)?);
    }
    let node_mirrors = from_file
        .node_registry_mirrors
        .iter()
        .map(|m| NodeMirror::parse(m).map_err(|e| in_file("node_registry_mirrors", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extra: Vec<(String, String)> = Vec::new();
    for list in from_file.extra_images_files.iter().chain(&args.extra_images_files) {
        let flag = format!("--extra-images-file {}", list.display());
        let listed = file::read_images_file(list).map_err(ConfigError::File)?;
        extra.extend(listed.into_iter().map(|i| (flag.clone(), i)));
    }
    let flags = from_file.extra_images.into_iter().chain(args.extra_images);
    extra.extend(flags.map(|i| ("--extra-image".to_owned(), i)));
    let mut canonical = Vec::new();
    for (flag, given) in extra {
        validate_image(&given).map_err(|_| ConfigError::ExtraImage { flag, given: given.clone() })?;
        let name = crate::reference::normalize(&given);
        if !canonical.contains(&name) {
            canonical.push(name);
        }
    }
    let sources = ImageSources {
        mirrors,
        archive_files: from_file.image_archives.into_iter().chain(args.image_archives).collect(),
        archive_dirs: from_file.images_dirs.into_iter().chain(args.images_dirs).collect(),
        extra: canonical,
        offline: from_file.offline || args.offline,
    };
    Ok((sources, node_mirrors))
}

#[cfg(test)]
mod tests;
