//! `build node-image --arch amd64,arm64`: one node image per architecture, each made by the
//! single-arch pipeline ([`super::run`]) in turn. With more than one, every image is built
//! under a temporary name first and the real names move only once all of them are built: a
//! run that fails for one arch leaves every tag where it was.

use anyhow::{Context, Result};

use super::{NodeImage, NodeImageConfig, Outcome, Stop, TEMP_REPO};
use crate::docker::{Docker, ImageGuard};
use crate::progress::Reporter;

/// Stands for the architecture in `-i` and `-b`.
pub const ARCH_PLACEHOLDER: &str = "{arch}";

/// A build for one or more architectures.
#[derive(Clone, Debug)]
pub struct MultiArch {
    /// What every arch shares; `arch`, `image` and `base_image` are set per arch.
    pub cfg: NodeImageConfig,
    pub arches: Vec<String>,
    /// `-i` as given (may hold `{arch}`).
    pub image: String,
    /// `-b` as given (may hold `{arch}`).
    pub base_image: Option<String>,
    /// `--engine ARCH=DOCKER_HOST`: arches built on an engine of their own.
    pub engines: Vec<(String, String)>,
}

impl MultiArch {
    /// The node image's name for `arch`: `-i` with `{arch}` filled in; else, with more than
    /// one arch, `-<arch>` after its tag (`kindest/node:v1.30.0-arm64`); else `-i` itself.
    pub fn image_for(&self, arch: &str) -> String {
        name_for(&self.image, arch, self.arches.len() > 1)
    }

    /// `-b`, `--image-archive`, `--images-dir` and `--from-node` may name one per arch with
    /// `{arch}`. With several arches the target is a temporary name: the automatic
    /// incremental choice looks at the arch's real name instead.
    pub fn config_for(&self, arch: &str) -> NodeImageConfig {
        let mut cfg = NodeImageConfig {
            arch: arch.to_owned(),
            image: self.image_for(arch),
            base_image: self.base_image.as_ref().map(|b| b.replace(ARCH_PLACEHOLDER, arch)),
            ..self.cfg.clone()
        };
        let fill = |p: &mut std::path::PathBuf| {
            if let Some(text) = p.to_str().filter(|t| t.contains(ARCH_PLACEHOLDER)) {
                *p = text.replace(ARCH_PLACEHOLDER, arch).into();
            }
        };
        cfg.images.archive_files.iter_mut().for_each(fill);
        cfg.images.archive_dirs.iter_mut().for_each(fill);
        match &mut cfg.from_node {
            super::incremental::FromNode::Image(image) => *image = image.replace(ARCH_PLACEHOLDER, arch),
            from @ super::incremental::FromNode::Auto if self.arches.len() > 1 => {
                *from = super::incremental::FromNode::AutoOn(cfg.image.clone());
            }
            _ => {}
        }
        cfg
    }
}

pub fn name_for(image: &str, arch: &str, many: bool) -> String {
    if image.contains(ARCH_PLACEHOLDER) {
        return image.replace(ARCH_PLACEHOLDER, arch);
    }
    if !many {
        return image.to_owned();
    }
    let (repo, tag) = crate::reference::split(image);
    format!("{repo}:{tag}-{arch}")
}

/// The engine each arch is built on: its own (`--engine`) or the default one.
pub struct Engines {
    pub default: Docker,
    pub by_arch: Vec<(String, Docker)>,
}

impl Engines {
    pub fn of(&self, arch: &str) -> &Docker {
        self.by_arch.iter().find(|(a, _)| a == arch).map_or(&self.default, |(_, d)| d)
    }

    pub fn all(&self) -> Vec<&Docker> {
        std::iter::once(&self.default).chain(self.by_arch.iter().map(|(_, d)| d)).collect()
    }
}

/// Builds every arch (in order on one engine, at the same time when arches have engines of
/// their own); the images under their final names, in the order of `--arch`.
pub async fn build(multi: &MultiArch, engines: &Engines, reporter: &Reporter) -> Result<Vec<NodeImage>> {
    if let [arch] = multi.arches.as_slice() {
        let docker = engines.of(arch);
        return Ok(vec![built(super::run(&multi.config_for(arch), Stop::Image, docker, reporter).await?)]);
    }
    // Temporary names of this process (`nodeimg clean` removes those of runs that died);
    // dropping a guard removes the name, and the image with it while no other name holds it.
    let mut staged = Vec::new();
    if engines.by_arch.is_empty() {
        for (n, arch) in multi.arches.iter().enumerate() {
            staged.push(stage(multi, engines, n, arch, reporter).await?);
        }
    } else {
        // A failed arch's error; the others' guards remove what they staged.
        let all = futures_util::future::join_all(
            multi.arches.iter().enumerate().map(|(n, a)| stage(multi, engines, n, a, reporter)),
        )
        .await;
        staged = all.into_iter().collect::<Result<Vec<_>>>()?;
    }
    for (image, _, docker) in &staged {
        docker.tag_image(&image.id, &image.reference).await?;
    }
    let mut images = Vec::new();
    for (image, guard, _) in staged {
        // The final name holds the image now: this only untags.
        if let Err(err) = guard.remove().await {
            reporter.warn(format!("could not remove a temporary tag of {}: {err}", image.reference));
        }
        images.push(image);
    }
    Ok(images)
}

/// One arch built under a temporary name, guarded; with the engine that holds it.
async fn stage<'a>(
    multi: &MultiArch,
    engines: &'a Engines,
    n: usize,
    arch: &str,
    reporter: &Reporter,
) -> Result<(NodeImage, ImageGuard, &'a Docker)> {
    let docker = engines.of(arch);
    let mut cfg = multi.config_for(arch);
    let target = std::mem::replace(&mut cfg.image, temp_name(docker, arch));
    reporter.info(format!("building {target} ({arch}, {} of {})", n + 1, multi.arches.len()));
    let guard = ImageGuard::new(docker, &cfg.image);
    let image = built(
        super::run(&cfg, Stop::Image, docker, reporter)
            .await
            .with_context(|| format!("building {target} for {arch}; no image of this run was tagged"))?,
    );
    Ok((NodeImage { reference: target, ..image }, guard, docker))
}

fn temp_name(docker: &Docker, arch: &str) -> String {
    format!("{TEMP_REPO}/node:{}-{arch}", docker.labels().process)
}

fn built(outcome: Outcome) -> NodeImage {
    match outcome {
        Outcome::Built(image) => *image,
        _ => unreachable!("Stop::Image ends in an image"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_template_or_get_a_tag_suffix() {
        assert_eq!(name_for("kindest/node:v1.30.0", "arm64", true), "kindest/node:v1.30.0-arm64");
        assert_eq!(name_for("kindest/node:v1.30.0", "arm64", false), "kindest/node:v1.30.0");
        assert_eq!(name_for("kindest/node", "amd64", true), "kindest/node:latest-amd64");
        assert_eq!(name_for("localhost:5000/node:v1", "arm64", true), "localhost:5000/node:v1-arm64");
        assert_eq!(name_for("me/node-{arch}:v1", "s390x", true), "me/node-s390x:v1");
        assert_eq!(name_for("me/node:v1-{arch}", "arm64", false), "me/node:v1-arm64");
    }
}
