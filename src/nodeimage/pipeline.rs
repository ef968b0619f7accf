//! The node-image pipeline. [`run`] takes the steps every stop shares ([`prepare`]: inputs,
//! base, build container, kubeadm, the plan), then ends as a plan, a bundle, a full build or
//! an incremental build: each one function of numbered steps over the shared step functions.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::steps::{
    add_binaries, add_kind_files, binary_items, create_build_container, patch_containerd_config,
    record_sizes, remove_images, required_images,
};
use super::{
    NodeImageConfig, Outcome, Stop, archives, base, bundle, commit, compat, components, expected,
    fetch_options, finish, images, incremental, inputs, layer, mirror, platforms, scratch, sources, steps,
};
use crate::docker::{ContainerGuard, Docker};
use crate::kube::{self, Artifacts};
use crate::node::containerd;
use crate::progress::Reporter;

type Items = BTreeMap<String, incremental::Item>;

/// What the shared steps found, for the steps after them.
struct Prepared {
    archives: Vec<archives::Archive>,
    scratch: scratch::Scratch,
    artifacts: Artifacts,
    /// The base image as named, and its ID.
    base: (String, String),
    /// The node image an incremental build starts from, and what it recorded.
    previous: Option<incremental::Previous>,
    old: incremental::Inputs,
    /// The built control-plane images to import (none for a bundle), and those kept as they
    /// are in the image built on.
    built: Vec<images::BuiltImage>,
    kept_built: Vec<(String, incremental::Item)>,
    container: ContainerGuard,
    binaries: Items,
    /// The binaries that changed (every one for a full build), and those of them still to copy.
    changed: Vec<String>,
    later: Vec<String>,
    required: Vec<String>,
    plan: Vec<sources::Planned>,
}

/// The pipeline. Only a fully successful build creates or moves the target tag.
pub async fn run(
    cfg: &NodeImageConfig,
    stop: Stop<'_>,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Outcome> {
    let mut p = prepare(cfg, &stop, docker, reporter).await?;
    match stop {
        Stop::Plan => {
            p.container.remove().await.context("removing the build container")?;
            Ok(Outcome::Planned(p.plan))
        }
        Stop::Bundle(output) => bundle(cfg, p, output, docker, reporter).await,
        Stop::Image => match p.previous.take() {
            Some(previous) => incremental(cfg, p, previous, docker, reporter).await,
            None => full(cfg, p, docker, reporter).await,
        },
    }
}

/// The steps every stop shares.
async fn prepare(
    cfg: &NodeImageConfig,
    stop: &Stop<'_>,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Prepared> {
    // 1. Image archives: their indexes are read before any container exists, so a bad one
    //    fails first.
    let archives =
        archives::index_all(&archives::collect(&cfg.images.archive_files, &cfg.images.archive_dirs)?)
            .context("reading the image archives")?;
    // 2. Kubernetes: download, extract or build.
    let scratch = scratch::Scratch::new(cfg.build_dir.as_deref().filter(|_| matches!(stop, Stop::Image)))?;
    let artifacts = kube::fetch(&cfg.source, &fetch_options(cfg), scratch.path(), reporter)
        .await
        .context("getting the Kubernetes artifacts")?;
    // 3. The base image (chosen by the Kubernetes version unless given), and the node image
    //    an incremental rebuild starts from, when there is one that can take another layer.
    let version = &artifacts.version;
    let (base, base_id, previous) = bases(cfg, stop, version, docker, reporter).await?;
    let old = previous.as_ref().map(|p| p.inputs.clone()).unwrap_or_default();
    // 4. The built control-plane images: upstream's tars, or made here for a host-mode build
    //    (not again when unchanged since the image built on).
    let (built, kept_built) = built_images(cfg, &artifacts, &old, scratch.path(), docker, reporter).await?;
    // 5. The build container, from the base image or the image built on; its containerd
    //    must serve this Kubernetes: checked before any import.
    let from = previous.as_ref().map_or(base.as_str(), |p| p.id.as_str());
    let container =
        create_build_container(docker, cfg, from).await.context("creating the build container")?;
    compat::check(docker, &base, container.id(), version, cfg.skip_compat_check, reporter).await?;
    // 6. kubeadm, kubelet, kubectl: those that changed. A rebuild puts in only kubeadm now
    //    (it lists the images); the others go in with the rest of the change.
    let (binaries, changed, later) =
        first_binaries(docker, container.id(), &artifacts, &old, previous.is_some(), reporter).await?;
    // 7. Every image the cluster needs, and where each will come from. Built images are made
    //    from the artifacts on the other side too: a bundle leaves them out.
    let built_names: Vec<String> =
        built.iter().map(|b| b.name.clone()).chain(kept_built.iter().map(|(n, _)| n.clone())).collect();
    let required = required_images(docker, container.id(), &artifacts, &built_names, &cfg.images.extra)
        .await
        .context("listing the required images")?;
    let built = if matches!(stop, Stop::Bundle(_)) { Vec::new() } else { built };
    let platform = format!("linux/{}", cfg.arch);
    let plan = sources::plan(docker, &built, &required, &archives, &cfg.images, &platform).await?;
    let base = (base, base_id);
    Ok(Prepared {
        archives,
        scratch,
        artifacts,
        base,
        previous,
        old,
        built,
        kept_built,
        container,
        binaries,
        changed,
        later,
        required,
        plan,
    })
}

/// Copies the binaries that changed, or only kubeadm of them on a rebuild; returns every
/// binary's item, the changed ones and those still to copy.
async fn first_binaries(
    docker: &Docker,
    id: &str,
    artifacts: &Artifacts,
    old: &incremental::Inputs,
    rebuild: bool,
    reporter: &Reporter,
) -> Result<(Items, Vec<String>, Vec<String>)> {
    let binaries = binary_items(artifacts).await.context("reading the Kubernetes binaries")?;
    let changed: Vec<String> =
        incremental::changed(&old.binaries, &binaries).into_iter().map(str::to_owned).collect();
    let (now, later): (Vec<String>, Vec<String>) =
        changed.iter().cloned().partition(|b| !rebuild || b == "kubeadm");
    add_binaries(docker, id, artifacts, &names(&now), reporter)
        .await
        .context("copying the Kubernetes binaries")?;
    Ok((binaries, changed, later))
}

/// The base image and ID, and the image an incremental build starts from (builds only).
async fn bases(
    cfg: &NodeImageConfig,
    stop: &Stop<'_>,
    version: &kube::KubeVersion,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<(String, String, Option<incremental::Previous>)> {
    let base = base::resolve(docker, cfg, version, reporter).await.context("choosing the base image")?;
    let base_id = docker.inspect_image(&base).await?.map(|i| i.id).unwrap_or_default();
    let previous = match stop {
        Stop::Image => {
            incremental::choose(docker, &cfg.from_node, &cfg.image, &expected(cfg, &base_id), reporter)
                .await
                .context("looking at the image to build on")?
        }
        _ => None,
    };
    Ok((base, base_id, previous))
}

/// `images save`: every image but the built ones, exported from the build container.
async fn bundle(
    cfg: &NodeImageConfig,
    mut p: Prepared,
    output: &Path,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Outcome> {
    // 1. Nothing missing under --offline; what each image is.
    sources::check_offline(&p.plan)?;
    let mut items = identify(docker, &mut p).await?;
    // 2. Every image into the build container's containerd.
    import(cfg, &p, &[], &mut items, docker, reporter).await?;
    // 3. Written to OUTPUT, docker-save and OCI layout at once.
    let platform = format!("linux/{}", cfg.arch);
    let summary = sources::summary(&p.plan);
    let saved = bundle::export(docker, p.container.id(), &p.required, &platform, output, summary, reporter)
        .await
        .with_context(|| format!("writing {}", output.display()))?;
    p.container.remove().await.context("removing the build container")?;
    Ok(Outcome::Bundled(saved))
}

/// A build from the base image.
async fn full(
    cfg: &NodeImageConfig,
    mut p: Prepared,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Outcome> {
    // 1. Nothing missing under --offline; what each image is, for the next build's record.
    sources::check_offline(&p.plan)?;
    let mut items = identify(docker, &mut p).await?;
    // 2. Every image into the build container's containerd, pinned.
    import(cfg, &p, &[], &mut items, docker, reporter).await?;
    containerd::stop(docker, p.container.id()).await?;
    // 3. kind's files and configs; commit, check (--verify), and only then tag.
    commit_and_tag(cfg, p, None, items, &[], docker, reporter).await
}

/// A build on an earlier node image: only what changed goes in.
async fn incremental(
    cfg: &NodeImageConfig,
    mut p: Prepared,
    previous: incremental::Previous,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Outcome> {
    // 1. Nothing missing under --offline; what changed since the image built on.
    sources::check_offline(&p.plan)?;
    let mut items = identify(docker, &mut p).await.context("comparing the images with the image built on")?;
    let replaced = incremental::replaced(&p.old.images, &items);
    let no_images = replaced.is_empty() && p.plan.iter().all(|i| i.origin == sources::Origin::Kept);
    // 2. Nothing changed: the image built on gets the tag (after --verify), no layer added.
    if no_images && p.changed.is_empty() && p.old.version == p.artifacts.version.text {
        reporter.info(format!("unchanged since {}: no new layer", previous.reference));
        let (id, built_on) = (previous.id.clone(), Some(previous.reference));
        return finish(cfg, id, Some(p.container), p.artifacts, p.plan, p.base, built_on, docker, reporter)
            .await;
    }
    // 3. Only files changed: their layer is written here and loaded on the image built on.
    if no_images && layer::can_append(docker) && same_cgroup_driver(&p.old.version, &p.artifacts.version) {
        return files_layer(cfg, p, previous, items, docker, reporter).await;
    }
    // 4. The new images in, after removing what they replace (so the image does not grow
    //    with every rebuild).
    if !no_images {
        import(cfg, &p, &replaced, &mut items, docker, reporter).await?;
        containerd::stop(docker, p.container.id()).await?;
    }
    // 5. The other binaries, kind's files and configs; commit, check, and only then tag.
    commit_and_tag(cfg, p, Some(previous), items, &replaced, docker, reporter).await
}

/// Host-mode builds make the control-plane images here, the others read upstream's tars.
async fn built_images(
    cfg: &NodeImageConfig,
    artifacts: &Artifacts,
    old: &incremental::Inputs,
    scratch: &Path,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<(Vec<images::BuiltImage>, Vec<(String, incremental::Item)>)> {
    let mut built =
        images::built_images(&artifacts.image_tars, &cfg.arch).context("reading the built image tars")?;
    let Some(binaries) = &artifacts.components else { return Ok((built, Vec::new())) };
    let base = cfg.component_base_image.as_deref();
    let (made, kept) = components::make_images(docker, binaries, base, &old.images, scratch, reporter)
        .await
        .context("making the control-plane images")?;
    built.extend(made);
    Ok((built, kept))
}

/// What each planned image is (an incremental build marks the unchanged ones kept).
async fn identify(docker: &Docker, p: &mut Prepared) -> Result<Items> {
    incremental::identify(docker, &mut p.plan, &p.kept_built, &p.built, &p.archives, &p.old.images).await
}

/// Starts the build container's containerd (left running), removes `replaced`, imports and
/// pins what the plan fetches, checks their platforms and records their sizes.
async fn import(
    cfg: &NodeImageConfig,
    p: &Prepared,
    replaced: &[String],
    items: &mut Items,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<()> {
    let (id, plan) = (p.container.id(), &p.plan);
    let importing: Vec<images::BuiltImage> = p
        .built
        .iter()
        .filter(|b| plan.iter().any(|i| i.origin == sources::Origin::Built(b.tar.clone())))
        .cloned()
        .collect();
    let step = reporter.step("starting containerd in the build container");
    containerd::start(docker, id).await?;
    step.finish("ready");
    if !replaced.is_empty() {
        remove_images(docker, id, replaced, reporter).await.context("removing replaced images")?;
    }
    let fetched = plan.iter().filter(|i| i.origin != sources::Origin::Kept).count();
    let step = reporter.step(format!("importing {fetched} images ({})", sources::summary(plan)));
    let platform = format!("linux/{}", cfg.arch);
    sources::import(docker, id, plan, &importing, &p.archives, &platform, reporter).await?;
    step.finish("pinned");
    platforms::check(docker, id, plan, &cfg.arch, cfg.allow_foreign_images, reporter).await?;
    record_sizes(docker, id, plan, items).await
}

/// The rest of the binaries, kind's files, the containerd configuration and the node's
/// registry mirrors; then the commit (recording what went in) and [`finish`].
async fn commit_and_tag(
    cfg: &NodeImageConfig,
    p: Prepared,
    previous: Option<incremental::Previous>,
    items: Items,
    replaced: &[String],
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Outcome> {
    let id = p.container.id().to_owned();
    add_binaries(docker, &id, &p.artifacts, &names(&p.later), reporter)
        .await
        .context("copying the Kubernetes binaries")?;
    add_kind_files(docker, &id, &p.artifacts).await.context("writing /kind/version and /kind/manifests")?;
    patch_containerd_config(docker, &id, &p.artifacts).await.context("adjusting the containerd config")?;
    if !cfg.node_mirrors.is_empty() && previous.is_none() {
        mirror::add_node_mirrors(docker, &id, &cfg.node_mirrors)
            .await
            .context("writing the node's registry mirrors")?;
    }
    let inputs = inputs(cfg, &p.artifacts.version, &p.base.1, p.binaries, items);
    let record = commit::Record::next(previous.as_ref(), inputs, &p.old, replaced, &names(&p.changed));
    let image_id = commit::commit(docker, &id, cfg, &p.artifacts, &record, reporter).await?;
    let built_on = previous.map(|p| p.reference);
    finish(cfg, image_id, Some(p.container), p.artifacts, p.plan, p.base, built_on, docker, reporter).await
}

/// An incremental build where only files changed: one layer, loaded on the image built on.
async fn files_layer(
    cfg: &NodeImageConfig,
    p: Prepared,
    previous: incremental::Previous,
    items: Items,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Outcome> {
    let changed = names(&p.changed);
    let inputs = inputs(cfg, &p.artifacts.version, &p.base.1, p.binaries, items);
    let record = commit::Record::next(Some(&previous), inputs, &p.old, &[], &changed);
    let layer = layer::Layer {
        files: p
            .artifacts
            .binaries
            .iter()
            .filter(|b| changed.contains(&steps::file_name(b).as_str()))
            .map(|b| (b.clone(), format!("/usr/bin/{}", steps::file_name(b)), 0o755))
            .collect(),
        texts: vec![("/kind/version".to_owned(), format!("{}\n", p.artifacts.version))],
        labels: commit::labels(cfg, &p.artifacts, &record),
        created_by: format!("nodeimg build node-image: {}", p.changed.join(", ")),
    };
    let container = if cfg.keep_container {
        Some(p.container)
    } else {
        p.container.remove().await.context("removing the build container")?;
        None
    };
    let image_id = layer::append(docker, &previous.id, layer, p.scratch.path(), reporter).await?;
    let built_on = Some(previous.reference);
    finish(cfg, image_id, container, p.artifacts, p.plan, p.base, built_on, docker, reporter).await
}

fn names(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

/// kind picks the kubelet's cgroup driver by version (systemd from 1.24) and the build sets
/// runc's to match: a version across that line needs the config patched, in a container.
fn same_cgroup_driver(old: &str, new: &kube::KubeVersion) -> bool {
    kube::KubeVersion::parse(old).is_ok_and(|old| old.at_least(1, 24) == new.at_least(1, 24))
}
