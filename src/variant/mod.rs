//! `nodeimg build node-variant` and `nodeimg images add`: an existing node image with one
//! thing changed (a binary, a file, more images), without rebuilding it. One pipeline,
//! [`run`]: a build container from the node image, the changes, one commit with the node
//! image's own entrypoint, command, stop signal and labels, and the target tag only on
//! success (after `--verify` when asked). The source image and its tags are never touched.

pub mod upgrade;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::archive;
use crate::docker::{ContainerGuard, ContainerSpec, Docker, ImageInfo, quote, short_id};
use crate::node::{containerd, files};
use crate::nodeimage::incremental::LABEL_INPUTS;
use crate::nodeimage::{ImageSources, archives, check_then_tag, sources};
use crate::progress::Reporter;

/// The ID of the image a variant was made from.
pub const LABEL_VARIANT_OF: &str = "io.nodeimg.variant.of";
/// What makes an image a node image: kind reads it, every build writes it.
pub use crate::nodeimage::contents::KIND_VERSION;

/// A Kubernetes binary for /usr/bin, with the architecture its ELF header names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary {
    /// `kubeadm`, `kubelet` or `kubectl`.
    pub name: &'static str,
    pub path: PathBuf,
    pub arch: &'static str,
}

/// A validated `build node-variant` (or `images add`).
#[derive(Clone, Debug)]
pub struct VariantConfig {
    /// The node image to start from.
    pub from: String,
    /// The variant's name; may be `from` itself (`images add` without `-i`).
    pub image: String,
    pub binaries: Vec<Binary>,
    /// `--with-path SRC:DST`, DST absolute.
    pub paths: Vec<(PathBuf, String)>,
    /// `--with-images` as archives, `--with-image` as extra images, mirrors, `--offline`.
    pub images: ImageSources,
    /// `--with-upgrade-artifacts`: a release tarball or extracted `kubernetes/` directory.
    pub upgrade: Option<PathBuf>,
    pub check: Option<crate::verify::VerifyConfig>,
}

#[derive(Debug)]
pub struct Variant {
    pub reference: String,
    pub id: String,
    pub from_id: String,
    pub version: String,
    pub added: Vec<sources::Planned>,
}

/// The pipeline. Only a fully successful run creates or moves the target tag.
pub async fn run(cfg: &VariantConfig, docker: &Docker, reporter: &Reporter) -> Result<Variant> {
    // 1. The node image's architecture and config, from the engine.
    let source = docker
        .inspect_image(&cfg.from)
        .await?
        .ok_or_else(|| anyhow!("--from-node {}: no such image in the engine", cfg.from))?;
    // 2. Binaries for another architecture are refused before anything is written.
    for b in &cfg.binaries {
        if b.arch != source.architecture {
            bail!(
                "--with-{} {}: an {} binary, but {} is {}",
                b.name,
                b.path.display(),
                b.arch,
                cfg.from,
                source.architecture
            );
        }
    }
    // 3. The images to add and where each comes from, as a build plans them: --offline
    //    fails here, naming every image it cannot find.
    let platform = format!("linux/{}", source.architecture);
    let found = archives::collect(&cfg.images.archive_files, &cfg.images.archive_dirs)?;
    let archives = archives::index_all(&found).context("reading --with-images")?;
    let mut wanted: Vec<String> = archives.iter().flat_map(|a| a.images.keys().cloned()).collect();
    wanted.extend(cfg.images.extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|i| seen.insert(i.clone()));
    //    The upgrade release's images are imported from its tars, as a build's built ones.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let upgrade = match &cfg.upgrade {
        Some(path) => Some(
            upgrade::read(path, &source.architecture, scratch.path(), reporter)
                .await
                .with_context(|| format!("reading --with-upgrade-artifacts {}", path.display()))?,
        ),
        None => None,
    };
    let built = upgrade.as_ref().map(|u| u.images.clone()).unwrap_or_default();
    let plan = sources::plan(docker, &built, &wanted, &archives, &cfg.images, &platform)
        .await
        .context("planning the images to add")?;
    sources::check_offline(&plan)?;
    // 4. The build container, from the node image by ID (its tag may move meanwhile); an
    //    image without /kind/version is no node image, seen before the container starts.
    let container = create_container(docker, &source).await.context("creating the build container")?;
    let id = container.id().to_owned();
    if !docker.path_exists(&id, KIND_VERSION).await? {
        bail!("--from-node {}: not a node image (it has no {KIND_VERSION})", cfg.from);
    }
    docker.start_container(&id).await.context("starting the build container")?;
    let version = files::read(docker, &id, KIND_VERSION).await?.trim().to_owned();
    // 5. kubeadm, kubelet, kubectl into /usr/bin, --with-path, the upgrade binaries.
    let mut copies: Vec<(PathBuf, PathBuf, Option<u32>)> = cfg
        .binaries
        .iter()
        .map(|b| (b.path.clone(), Path::new("usr/bin").join(b.name), Some(0o755)))
        .collect();
    copies.extend(
        cfg.paths.iter().map(|(src, dst)| (src.clone(), PathBuf::from(dst.trim_start_matches('/')), None)),
    );
    for (src, dst) in upgrade.iter().flat_map(|u| &u.binaries) {
        copies.push((src.clone(), dst.clone(), Some(0o755)));
    }
    add_files(docker, &id, copies, reporter).await.context("copying the files in")?;
    // 6. The images, imported and pinned as a build does. containerd runs only for them, so
    //    a variant of a binary leaves containerd's state as it was.
    if !plan.is_empty() {
        let step = reporter.step("starting containerd in the build container");
        containerd::start(docker, &id).await?;
        step.finish("ready");
        let step = reporter.step(format!("importing {} images ({})", plan.len(), sources::summary(&plan)));
        sources::import(docker, &id, &plan, &built, &archives, &platform, reporter)
            .await
            .context("importing the images")?;
        step.finish("pinned");
        containerd::stop(docker, &id).await?;
    }
    // 7. Commit with the node image's own config, check (--verify), and only then tag.
    let step = reporter.step("committing the variant");
    let image_id = docker.commit(&id, &changes(&source)).await.context("committing the variant")?;
    step.finish(short_id(&image_id));
    check_then_tag(docker, &image_id, Some(container), &cfg.image, cfg.check.as_ref(), reporter).await?;
    drop(scratch);
    Ok(Variant { reference: cfg.image.clone(), id: image_id, from_id: source.id, version, added: plan })
}

async fn create_container(docker: &Docker, source: &ImageInfo) -> Result<ContainerGuard> {
    let mut spec = ContainerSpec::idle(&source.id);
    // The engine takes no STOPSIGNAL among a commit's changes: the container carries the
    // node image's into the commit (systemd's SIGRTMIN+3 for kind).
    spec.stop_signal = source.stop_signal.clone();
    // As the build container: containerd runs in it for the imports.
    spec.security_opt = vec!["seccomp=unconfined".into()];
    let id = docker.create_container(&spec).await?;
    Ok(ContainerGuard::new(docker, id))
}

/// Every file in one streamed tar, unpacked at `/`: (source, path in the node without the
/// leading `/`, mode; `None` keeps the source's). A directory goes in whole.
async fn add_files(
    docker: &Docker,
    id: &str,
    copies: Vec<(PathBuf, PathBuf, Option<u32>)>,
    reporter: &Reporter,
) -> Result<()> {
    if copies.is_empty() {
        return Ok(());
    }
    let step = reporter.step(format!("copying {} file(s) in", copies.len()));
    let tar = archive::tar_stream(move |tar| {
        for (src, dst, mode) in &copies {
            if src.is_dir() {
                tar.follow_symlinks(false);
                tar.append_dir_all(dst, src)?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mode = match mode {
                    Some(m) => *m,
                    None => std::fs::metadata(src)?.permissions().mode() & 0o7777,
                };
                archive::append_file(tar, src, dst, mode)?;
            }
        }
        Ok(())
    });
    docker.upload(id, "/", tar).await?;
    step.finish("done");
    Ok(())
}

/// The node image's own entrypoint, command and labels (the build container idles under
/// another entrypoint; the stop signal comes with the container), and where the variant came from. The run's labels are
/// added by the commit and replace the source's.
fn changes(source: &ImageInfo) -> Vec<String> {
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let mut changes = vec![format!("ENTRYPOINT {}", json(&source.entrypoint))];
    // After ENTRYPOINT, which resets the command.
    if !source.cmd.is_empty() {
        changes.push(format!("CMD {}", json(&source.cmd)));
    }
    // The record of what a build put in no longer describes the variant: a later build must
    // not take a changed file for the recorded one.
    let mut labels: Vec<(&String, &String)> =
        source.labels.iter().filter(|(k, _)| k.as_str() != LABEL_INPUTS).collect();
    labels.sort();
    changes.extend(labels.into_iter().map(|(k, v)| format!("LABEL {k}={}", quote(v))));
    changes.push(format!("LABEL {LABEL_VARIANT_OF}={}", quote(&source.id)));
    if source.labels.contains_key(LABEL_INPUTS) {
        changes.push(format!("LABEL {LABEL_INPUTS}=\"\""));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_the_node_images_config() {
        let source = ImageInfo {
            id: "sha256:abc".into(),
            entrypoint: vec!["/usr/local/bin/entrypoint".into(), "/sbin/init".into()],
            stop_signal: Some("SIGRTMIN+3".into()),
            labels: [
                ("io.nodeimg.kubernetes.version".to_owned(), "v1.30.0".to_owned()),
                (LABEL_INPUTS.to_owned(), r#"{"version":"v1.30.0"}"#.to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            changes(&source),
            vec![
                r#"ENTRYPOINT ["/usr/local/bin/entrypoint","/sbin/init"]"#,
                r#"LABEL io.nodeimg.kubernetes.version="v1.30.0""#,
                r#"LABEL io.nodeimg.variant.of="sha256:abc""#,
                r#"LABEL io.nodeimg.inputs="""#,
            ]
        );
    }
}
