//! `cluster update`: the binaries read as far as their ELF header and each `--with-image`
//! told apart as a file or a reference, before Docker is touched.

use std::time::Duration;

use crate::cli::UpdateArgs;
use crate::cluster::UpdateConfig;
use crate::elf::ElfError;
use crate::nodeimage::ImageSources;

/// How long a node may take to come back Ready when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("invalid --name {0:?}: a kind cluster name is lowercase letters, digits, '-' and '.'")]
    Name(String),
    #[error("--with-{name} {err}")]
    Binary { name: &'static str, err: ElfError },
    #[error("--with-image {0:?}: no such file, and not an image reference ([registry/]name[:tag])")]
    Image(String),
    #[error(
        "nothing to update: give --with-kubelet, --with-kubeadm, --with-kubectl, --with-image or --from-node"
    )]
    Nothing,
    #[error("invalid --from-node {0:?}: expected [registry/]name[:tag] or an image ID")]
    FromNode(String),
}

pub fn cluster_update(args: UpdateArgs) -> Result<UpdateConfig, ClusterError> {
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if args.name.is_empty() || !args.name.chars().all(valid) {
        return Err(ClusterError::Name(args.name));
    }
    let binaries = super::with_binaries(&args.with_kubeadm, &args.with_kubelet, &args.with_kubectl)
        .map_err(|(name, err)| ClusterError::Binary { name, err })?;
    let mut images = ImageSources::default();
    for given in &args.with_image {
        let path = std::path::Path::new(given);
        if path.is_file() {
            images.archive_files.push(path.to_owned());
        } else if crate::reference::is_valid(given) && !given.contains("..") {
            images.extra.push(crate::reference::normalize(given));
        } else {
            return Err(ClusterError::Image(given.clone()));
        }
    }
    if let Some(image) = &args.from_node
        && !crate::reference::is_image_id(image)
        && !crate::reference::is_valid(image)
    {
        return Err(ClusterError::FromNode(image.clone()));
    }
    if binaries.is_empty() && args.with_image.is_empty() && args.from_node.is_none() {
        return Err(ClusterError::Nothing);
    }
    Ok(UpdateConfig {
        cluster: args.name,
        binaries,
        images,
        from_node: args.from_node,
        parallel: args.parallel,
        force: args.force,
        timeout: args.timeout.unwrap_or(DEFAULT_TIMEOUT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> UpdateArgs {
        UpdateArgs {
            name: "kind".into(),
            with_kubelet: None,
            with_kubeadm: None,
            with_kubectl: None,
            with_image: vec![],
            from_node: None,
            parallel: false,
            force: false,
            timeout: None,
        }
    }

    #[test]
    fn bad_inputs_are_named_in_one_line() {
        assert_eq!(cluster_update(args()).unwrap_err(), ClusterError::Nothing);
        let bad = UpdateArgs { name: "Kind_1".into(), ..args() };
        assert_eq!(cluster_update(bad).unwrap_err(), ClusterError::Name("Kind_1".into()));
        let missing = UpdateArgs { with_kubelet: Some("/nonexistent/kubelet".into()), ..args() };
        let err = cluster_update(missing).unwrap_err().to_string();
        assert_eq!(err, "--with-kubelet /nonexistent/kubelet: no such file");
        let not_elf = UpdateArgs { with_kubeadm: Some("Cargo.toml".into()), ..args() };
        assert!(cluster_update(not_elf).unwrap_err().to_string().contains("not an ELF"));
        let image = UpdateArgs { with_image: vec!["./no/such.tar".into()], ..args() };
        assert!(matches!(cluster_update(image).unwrap_err(), ClusterError::Image(_)));
    }

    #[test]
    fn images_are_files_or_references() {
        let cfg = cluster_update(UpdateArgs {
            with_image: vec!["Cargo.toml".into(), "busybox:1".into()],
            ..args()
        })
        .unwrap();
        assert_eq!(cfg.images.archive_files, [std::path::PathBuf::from("Cargo.toml")]);
        assert_eq!(cfg.images.extra, ["docker.io/library/busybox:1"]);
        assert_eq!(cfg.timeout, DEFAULT_TIMEOUT);
    }
}
