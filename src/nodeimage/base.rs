//! The base image of a node image: the one given with `-b` (pulled if absent), or the
//! default base of the runtime line that serves the Kubernetes version (built if absent).

use anyhow::{Context, Result, bail};

use super::compat;
use crate::baseimage::runtime::{ContainerdVersion, LABEL_CONTAINERD};
use crate::baseimage::{self, RuntimeLine};
use crate::docker::Docker;
use crate::kube::KubeVersion;
use crate::progress::Reporter;

/// The base to build on, present in Docker when this returns: `-b` (pulled if absent), or
/// the automatic one (built if absent, except for a plan, which builds nothing).
pub async fn resolve(
    docker: &Docker,
    cfg: &super::NodeImageConfig,
    kube: &KubeVersion,
    reporter: &Reporter,
) -> Result<String> {
    match cfg.base_image.as_deref() {
        Some(base) => {
            ensure_given(docker, base, &cfg.arch, cfg.images.offline, reporter).await?;
            Ok(base.to_owned())
        }
        None => automatic(docker, kube, &cfg.arch, !cfg.plan_only, cfg.images.offline, reporter).await,
    }
}

/// The newest runtime line that serves `kube`, for `arch`, under the name `nodeimg build
/// base-image --runtime LINE --arch ARCH` gives it; built here when absent (and `build`), as
/// that command would.
async fn automatic(
    docker: &Docker,
    kube: &KubeVersion,
    arch: &str,
    build: bool,
    offline: bool,
    reporter: &Reporter,
) -> Result<String> {
    let line = RuntimeLine::for_kubernetes(kube);
    let fetch = build && !offline;
    let cfg = baseimage::default_config(line, arch);
    let cfg = baseimage::with_default_crictl(&cfg, docker, fetch, reporter).await?;
    let target = cfg.target();
    let existing = docker.inspect_image(&target).await?;
    let labels = match existing {
        Some(image) if image.labels.get(baseimage::LABEL_KEY) == Some(&cfg.key()) => image.labels,
        _ if !build => bail!(
            "the base image for Kubernetes {kube} ({target}) is not here, and `images list`/`images save` build nothing: \
             pass -b IMAGE, or make it with `nodeimg build base-image --runtime {line} --arch {arch}` \
             (debootstrap, as root)"
        ),
        _ => {
            reporter.info(format!("base image {target} (runtime {line}) is not here: building it"));
            let built = baseimage::build(&cfg, docker, reporter)
                .await
                .with_context(|| format!("building the base image of runtime {line} ({target})"))?;
            docker.inspect_image(&built.id).await?.map(|i| i.labels).unwrap_or_default()
        }
    };
    let containerd = labels.get(LABEL_CONTAINERD).and_then(|v| ContainerdVersion::parse(v));
    reporter.info(compat::choice_line(containerd.as_ref(), line, kube));
    Ok(target)
}

async fn ensure_given(
    docker: &Docker,
    base: &str,
    arch: &str,
    offline: bool,
    reporter: &Reporter,
) -> Result<()> {
    if docker.image_exists(base).await? {
        return Ok(());
    }
    if offline {
        bail!("base image {base} is not here and --offline forbids pulling it");
    }
    let step = reporter.step(format!("pulling base image {base}"));
    docker.pull(base, &format!("linux/{arch}"), &mut |s| step.set_message(s.to_owned())).await.with_context(
        || {
            format!(
                "base image {base} is not here and cannot be pulled (`nodeimg build base-image` builds one)"
            )
        },
    )?;
    step.finish("pulled");
    Ok(())
}
