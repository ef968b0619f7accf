//! The base image's runtime and the Kubernetes version must fit, checked before anything is
//! imported: a kubelet that cannot talk to containerd's CRI fails only when a cluster boots,
//! far from the build that caused it.

use anyhow::{Context, Result};

use crate::baseimage::RuntimeLine;
use crate::baseimage::runtime::{ContainerdVersion, LABEL_CONTAINERD};
use crate::docker::Docker;
use crate::kube::KubeVersion;
use crate::progress::Reporter;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Incompatible {
    #[error(
        "Kubernetes {kube} cannot run on containerd {containerd}: containerd 2 serves only CRI v1, \
         which Kubernetes before v1.26 does not speak; use a containerd 1.7 base \
         (`nodeimg build base-image --runtime 1.7`, or leave out -b), or pass --skip-compat-check"
    )]
    TooOldForContainerd2 { kube: String, containerd: String },
    #[error(
        "Kubernetes {kube} cannot run on containerd {containerd}: Kubernetes v1.37 and later need \
         containerd 2; use a containerd 2 base (`nodeimg build base-image --runtime 2`, or leave \
         out -b), or pass --skip-compat-check"
    )]
    NeedsContainerd2 { kube: String, containerd: String },
}

/// The compatibility matrix: Kubernetes before 1.26 needs CRI v1alpha2 (gone in containerd
/// 2.0); Kubernetes 1.37 drops containerd 1.x.
pub fn verdict(kube: &KubeVersion, containerd: &ContainerdVersion) -> Result<(), Incompatible> {
    let (k, c) = (kube.to_string(), containerd.to_string());
    if containerd.major >= 2 && !kube.at_least(1, 26) {
        return Err(Incompatible::TooOldForContainerd2 { kube: k, containerd: c });
    }
    if containerd.major < 2 && kube.at_least(1, 37) {
        return Err(Incompatible::NeedsContainerd2 { kube: k, containerd: c });
    }
    Ok(())
}

/// The base's containerd: from its label (a base nodeimg built), else `containerd --version`
/// in the running build container.
pub async fn containerd_version(docker: &Docker, base: &str, container: &str) -> Result<ContainerdVersion> {
    let label = docker.inspect_image(base).await?.and_then(|i| i.labels.get(LABEL_CONTAINERD).cloned());
    if let Some(version) = label.as_deref().and_then(ContainerdVersion::parse) {
        return Ok(version);
    }
    let out = docker.exec(container, &["containerd", "--version"]).await?;
    if !out.success() {
        anyhow::bail!("`containerd --version` failed in the base image {base}: {}", out.last_line());
    }
    ContainerdVersion::from_version_output(&out.stdout)
        .with_context(|| format!("cannot read a version from `containerd --version`: {}", out.stdout.trim()))
}

/// The check, or its skipping, in one line.
pub async fn check(
    docker: &Docker,
    base: &str,
    container: &str,
    kube: &KubeVersion,
    skip: bool,
    reporter: &Reporter,
) -> Result<()> {
    if skip {
        reporter.warn("--skip-compat-check: the base's containerd is not checked against Kubernetes");
        return Ok(());
    }
    let containerd = containerd_version(docker, base, container)
        .await
        .with_context(|| format!("reading the containerd version of the base image {base}"))?;
    verdict(kube, &containerd)?;
    reporter
        .detail(format!("containerd {containerd} (runtime {}) serves Kubernetes {kube}", containerd.line()));
    Ok(())
}

/// The line for the automatic base choice: "base: containerd 2.1.9 (runtime 2) for Kubernetes v1.31.0".
pub fn choice_line(containerd: Option<&ContainerdVersion>, line: RuntimeLine, kube: &KubeVersion) -> String {
    let containerd = containerd.map_or_else(|| format!("containerd {line}"), |c| format!("containerd {c}"));
    format!("base: {containerd} (runtime {line}) for Kubernetes {kube}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube(v: &str) -> KubeVersion {
        KubeVersion::parse(v).unwrap()
    }

    fn containerd(v: &str) -> ContainerdVersion {
        ContainerdVersion::parse(v).unwrap()
    }

    #[test]
    fn the_matrix() {
        let two = containerd("2.1.9+ds1-5");
        let seven = containerd("1.7.24~ds1-6+deb13u1");
        let six = containerd("1.6.20~ds1-1+deb12u3");
        for (k, c, ok) in [
            ("v1.20.2", &two, false),
            ("v1.25.16", &two, false),
            ("v1.26.0", &two, true),
            ("v1.37.0-alpha.0", &two, true),
            ("v1.20.2", &seven, true),
            ("v1.36.5", &seven, true),
            ("v1.37.0", &seven, false),
            ("v1.37.0", &six, false),
            ("v1.18.0", &six, true),
        ] {
            assert_eq!(verdict(&kube(k), c).is_ok(), ok, "Kubernetes {k} on containerd {c}");
        }
    }

    #[test]
    fn refusals_name_both_versions_and_the_fix_in_one_line() {
        let err = verdict(&kube("v1.20.2"), &containerd("2.1.9")).unwrap_err().to_string();
        assert!(err.contains("v1.20.2") && err.contains("2.1.9") && err.contains("--runtime 1.7"), "{err}");
        let err = verdict(&kube("v1.37.0"), &containerd("1.7.24")).unwrap_err().to_string();
        assert!(err.contains("v1.37.0") && err.contains("1.7.24") && err.contains("--runtime 2"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn the_choice_line() {
        let line = choice_line(Some(&containerd("2.1.9+ds1-5")), RuntimeLine::V2, &kube("v1.31.0"));
        assert_eq!(line, "base: containerd 2.1.9 (runtime 2) for Kubernetes v1.31.0");
    }
}
