//! Every preloaded image must run on the node: an amd64 pause image in an arm64 node only
//! fails when a cluster starts its first pod (EKS-A checks this by hand). Read after the
//! import from the node's own containerd, so every origin (built tars, archives, the host's
//! cache, mirrors, upstream) is judged the same way, by what containerd will run.

use anyhow::Result;

use super::images::ctr;
use super::sources::Planned;
use crate::docker::Docker;
use crate::progress::Reporter;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error(
        "{} not for the node's architecture {arch}: {}; --allow-foreign-images keeps {}",
        if .foreign.len() == 1 { "a preloaded image is" } else { "preloaded images are" },
        list(.foreign),
        if .foreign.len() == 1 { "it" } else { "them" }
    )]
    Foreign { arch: String, foreign: Vec<Foreign> },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Foreign {
    pub image: String,
    /// What containerd reads from the image (`linux/amd64`, or several for an index).
    pub platforms: String,
}

fn list(foreign: &[Foreign]) -> String {
    foreign.iter().map(|f| format!("{} is {}", f.image, f.platforms)).collect::<Vec<_>>().join(", ")
}

/// Fails naming each planned image none of whose platforms is `arch`; with `allow`, warns
/// one line per such image instead.
pub async fn check(
    docker: &Docker,
    id: &str,
    plan: &[Planned],
    arch: &str,
    allow: bool,
    reporter: &Reporter,
) -> Result<()> {
    let listed = ctr(docker, id, &["images", "ls"]).await?;
    let foreign = foreign(&listed, plan.iter().map(|p| p.image.as_str()), arch);
    if foreign.is_empty() {
        return Ok(());
    }
    if !allow {
        return Err(PlatformError::Foreign { arch: arch.to_owned(), foreign }.into());
    }
    for f in foreign {
        reporter
            .warn(format!("{} is {}, not the node's {arch} (--allow-foreign-images)", f.image, f.platforms));
    }
    Ok(())
}

/// The images of `wanted` whose platforms in `ctr images ls` output leave out `arch`. A
/// multi-platform index passes when it holds `arch` (imported with `--all-platforms`).
fn foreign<'a>(listed: &str, wanted: impl Iterator<Item = &'a str>, arch: &str) -> Vec<Foreign> {
    let platforms: std::collections::HashMap<&str, &str> = listed.lines().skip(1).filter_map(row).collect();
    wanted
        .filter_map(|image| {
            let found = platforms.get(image).copied().unwrap_or("");
            let fits = found.split(',').any(|p| p.split('/').nth(1) == Some(arch));
            (!fits).then(|| Foreign {
                image: image.to_owned(),
                platforms: if found.is_empty() { "of no known platform".into() } else { found.to_owned() },
            })
        })
        .collect()
}

/// (REF, PLATFORMS) of a row of `ctr images ls`: REF TYPE DIGEST SIZE PLATFORMS LABELS, where
/// SIZE is two words ("1.2 MiB") and PLATFORMS may be empty; labels hold `=`, platforms `/`.
fn row(line: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let reference = *words.first()?;
    let platforms = words
        .iter()
        .skip(3)
        .find(|w| {
            !w.contains('=')
                && w.split(',').all(|p| p.starts_with("linux/") || p.contains('/') && !p.contains(':'))
        })
        .copied()
        .unwrap_or("");
    Some((reference, platforms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `ctr -n k8s.io images ls` prints it (containerd 1.7), trimmed to the columns' widths.
    const LISTED: &str = "\
REF                                            TYPE                                                 DIGEST                                                                  SIZE     PLATFORMS                          LABELS
registry.k8s.io/pause:3.9                      application/vnd.docker.distribution.manifest.v2+json sha256:1111111111111111111111111111111111111111111111111111111111111111 2.1 MiB  linux/arm64                        io.cri-containerd.pinned=pinned
registry.k8s.io/etcd:3.5.12-0                  application/vnd.docker.distribution.manifest.v2+json sha256:2222222222222222222222222222222222222222222222222222222222222222 2.1 MiB  linux/amd64                        io.cri-containerd.pinned=pinned
docker.io/library/busybox:1.36                 application/vnd.oci.image.index.v1+json              sha256:3333333333333333333333333333333333333333333333333333333333333333 4.0 MiB  linux/amd64,linux/arm64/v8         io.cri-containerd.pinned=pinned
registry.k8s.io/odd:1                          application/vnd.docker.distribution.manifest.v2+json sha256:4444444444444444444444444444444444444444444444444444444444444444 1.0 KiB                                     -
";

    #[test]
    fn foreign_images_are_named_with_their_platforms() {
        let wanted =
            ["registry.k8s.io/pause:3.9", "registry.k8s.io/etcd:3.5.12-0", "docker.io/library/busybox:1.36"];
        let found = foreign(LISTED, wanted.into_iter(), "arm64");
        assert_eq!(
            found,
            vec![Foreign { image: "registry.k8s.io/etcd:3.5.12-0".into(), platforms: "linux/amd64".into() }]
        );
        let amd64 = foreign(LISTED, wanted.into_iter(), "amd64");
        assert_eq!(amd64.len(), 1);
        assert_eq!(amd64[0].image, "registry.k8s.io/pause:3.9");
    }

    #[test]
    fn an_image_of_no_known_platform_or_not_listed_is_foreign() {
        let found =
            foreign(LISTED, ["registry.k8s.io/odd:1", "registry.k8s.io/absent:1"].into_iter(), "amd64");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].platforms, "of no known platform");
    }

    #[test]
    fn the_error_is_one_line_naming_images_and_architectures() {
        let err = PlatformError::Foreign {
            arch: "arm64".into(),
            foreign: vec![Foreign {
                image: "registry.k8s.io/etcd:3.5.12-0".into(),
                platforms: "linux/amd64".into(),
            }],
        };
        assert_eq!(
            err.to_string(),
            "a preloaded image is not for the node's architecture arm64: registry.k8s.io/etcd:3.5.12-0 is linux/amd64; --allow-foreign-images keeps it"
        );
    }
}
