//! `build node-variant` and `images add`: every input checked before Docker is touched,
//! binaries read as far as their ELF header (their architecture is compared with the node
//! image's in the pipeline, which asks the engine).

use std::path::{Path, PathBuf};

use super::{ConfigError, checked_if, validate_image};
use crate::cli::{ImagesAddArgs, NodeVariantArgs, VariantOptions};
use crate::elf::ElfError;
use crate::nodeimage::ImageSources;
use crate::nodeimage::mirror::Mirror;
use crate::variant::{Binary, VariantConfig};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VariantError {
    #[error("--with-{name} {err}")]
    Binary { name: &'static str, err: ElfError },
    #[error("invalid --with-path {0:?}: expected SRC:DST")]
    PathSpec(String),
    #[error("--with-path {0}: the destination must be an absolute path in the node")]
    RelativeDestination(String),
    #[error("{flag} {path}: no such file or directory")]
    Missing { flag: &'static str, path: String },
    #[error(
        "nothing to change: give --with-kubeadm, --with-kubelet, --with-kubectl, --with-images, --with-image, --with-path or --with-upgrade-artifacts"
    )]
    Nothing,
}

/// `build node-variant`.
pub fn node_variant(args: NodeVariantArgs) -> Result<VariantConfig, ConfigError> {
    from_node(&args.from_node)?;
    validate_image(&args.image)?;
    let binaries = super::with_binaries(&args.with_kubeadm, &args.with_kubelet, &args.with_kubectl)
        .map_err(|(name, err)| VariantError::Binary { name, err })?
        .into_iter()
        .map(|(name, path, arch)| Binary { name, path, arch })
        .collect::<Vec<_>>();
    let paths = args.with_path.iter().map(|spec| with_path(spec)).collect::<Result<Vec<_>, _>>()?;
    let mut images = sources(&args.common, &args.with_image)?;
    for path in &args.with_images {
        exists("--with-images", path)?;
        if path.is_dir() { &mut images.archive_dirs } else { &mut images.archive_files }.push(path.clone());
    }
    if let Some(path) = &args.with_upgrade_artifacts {
        exists("--with-upgrade-artifacts", path)?;
    }
    let nothing = args.with_images.is_empty() && args.with_upgrade_artifacts.is_none();
    if binaries.is_empty() && paths.is_empty() && images.extra.is_empty() && nothing {
        return Err(VariantError::Nothing.into());
    }
    Ok(VariantConfig {
        from: args.from_node,
        image: args.image,
        binaries,
        paths,
        images,
        upgrade: args.with_upgrade_artifacts,
        check: checked_if(args.common.verify, args.common.verify_options)?,
    })
}

/// `images add REF... --to NODE_IMAGE [-i NEW]`: a variant with `--with-image` for each REF.
pub fn images_add(args: ImagesAddArgs) -> Result<VariantConfig, ConfigError> {
    from_node(&args.to)?;
    let image = args.image.unwrap_or_else(|| args.to.clone());
    validate_image(&image)?;
    let mut images = sources(&args.common, &args.images)?;
    for path in &args.image_archives {
        exists("--image-archive", path)?;
        images.archive_files.push(path.clone());
    }
    Ok(VariantConfig {
        from: args.to,
        image,
        binaries: vec![],
        paths: vec![],
        images,
        upgrade: None,
        check: checked_if(args.common.verify, args.common.verify_options)?,
    })
}

/// A name or an image ID.
fn from_node(image: &str) -> Result<(), ConfigError> {
    if crate::reference::is_image_id(image) || crate::reference::is_valid(image) {
        Ok(())
    } else {
        Err(ConfigError::ImageOrId(image.to_owned()))
    }
}

/// The images to add, canonical, with the mirrors and `--offline`; no archive yet.
fn sources(common: &VariantOptions, refs: &[String]) -> Result<ImageSources, ConfigError> {
    let mut extra: Vec<String> = Vec::new();
    for given in refs {
        validate_image(given)
            .map_err(|_| ConfigError::ExtraImage { flag: "--with-image".into(), given: given.clone() })?;
        let name = crate::reference::normalize(given);
        if !extra.contains(&name) {
            extra.push(name);
        }
    }
    let mirrors = common.registry_mirrors.iter().map(|m| Mirror::parse(m)).collect::<Result<Vec<_>, _>>()?;
    Ok(ImageSources { mirrors, extra, offline: common.offline, ..Default::default() })
}

/// `SRC:DST`, SRC on this machine, DST absolute.
fn with_path(spec: &str) -> Result<(PathBuf, String), VariantError> {
    let (src, dst) = spec.rsplit_once(':').ok_or_else(|| VariantError::PathSpec(spec.to_owned()))?;
    if src.is_empty() || dst.is_empty() {
        return Err(VariantError::PathSpec(spec.to_owned()));
    }
    if !dst.starts_with('/') {
        return Err(VariantError::RelativeDestination(spec.to_owned()));
    }
    exists("--with-path", Path::new(src))?;
    Ok((PathBuf::from(src), dst.to_owned()))
}

fn exists(flag: &'static str, path: &Path) -> Result<(), VariantError> {
    if path.exists() { Ok(()) } else { Err(VariantError::Missing { flag, path: path.display().to_string() }) }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{BuildCommand, Cli, Command};

    fn parse(args: &[&str]) -> Result<VariantConfig, ConfigError> {
        let base = ["nodeimg", "build", "node-variant", "--from-node", "kindest/node:v1", "-i", "n:2"];
        let cli = Cli::try_parse_from([&base[..], args].concat()).unwrap();
        let Command::Build(BuildCommand::NodeVariant(args)) = cli.command else { unreachable!() };
        node_variant(*args)
    }

    #[test]
    fn refuses_bad_inputs_before_docker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(parse(&[]).unwrap_err(), VariantError::Nothing.into());
        let relative = format!("{f}:etc/x");
        assert_eq!(
            parse(&["--with-path", &relative]).unwrap_err(),
            VariantError::RelativeDestination(relative.clone()).into()
        );
        assert!(matches!(
            parse(&["--with-path", "/nonexistent/x:/etc/x"]).unwrap_err(),
            ConfigError::Variant(VariantError::Missing { .. })
        ));
        let err = parse(&["--with-kubelet", f]).unwrap_err().to_string();
        assert!(err.starts_with("--with-kubelet ") && err.ends_with("is not an ELF executable"), "{err}");
        assert!(parse(&["--with-image", "Bad:Name"]).is_err());
        assert_eq!(
            parse(&["--timeout", "5m", "--with-path", &format!("{f}:/x")]).unwrap_err(),
            ConfigError::OnlyWith("--timeout", "--verify")
        );
    }

    #[test]
    fn takes_the_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().to_str().unwrap();
        let cfg = parse(&[
            "--with-path",
            &format!("{f}:/opt/x"),
            "--with-images",
            f,
            "--with-image",
            "busybox:1",
            "--offline",
        ])
        .unwrap();
        assert_eq!(cfg.paths, vec![(dir.path().to_owned(), "/opt/x".to_owned())]);
        assert_eq!(cfg.images.archive_dirs, vec![dir.path().to_owned()]);
        assert_eq!(cfg.images.extra, vec!["docker.io/library/busybox:1"]);
        assert!(cfg.images.offline && cfg.check.is_none());
    }
}
