//! Where each image of a node image comes from, in a fixed order: built tars → image
//! archives → the host's Docker cache → a registry mirror → upstream. The plan is made
//! before anything is imported, so `--offline` fails early, naming every missing image.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt};

use super::archives::Archive;
use super::images::{self, BuiltImage, ctr, pin};
use super::mirror::{self, Mirror};
use crate::docker::{Docker, ImageGuard};
use crate::progress::Reporter;
use crate::reference::normalize;

/// The image-source settings of a build (flags and `--config`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSources {
    pub mirrors: Vec<Mirror>,
    pub archive_files: Vec<PathBuf>,
    pub archive_dirs: Vec<PathBuf>,
    /// Extra images to preload, canonical names.
    pub extra: Vec<String>,
    pub offline: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Built(PathBuf),
    Archive(PathBuf),
    Host,
    Mirror {
        reference: String,
        dest: String,
    },
    Upstream {
        platform: String,
    },
    /// `--offline` and nowhere to be found.
    Missing,
    /// Already in the node image an incremental build starts from, unchanged.
    Kept,
}

impl Origin {
    /// The word the build summary counts by.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Built(_) => "built",
            Origin::Archive(_) => "archive",
            Origin::Host => "host docker",
            Origin::Mirror { .. } => "mirror",
            Origin::Upstream { .. } => "upstream",
            Origin::Missing => "missing",
            Origin::Kept => "kept",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = |p: &PathBuf| p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        match self {
            Origin::Built(tar) => write!(f, "built ({})", file(tar)),
            Origin::Archive(path) => write!(f, "archive ({})", path.display()),
            Origin::Host => write!(f, "host docker"),
            Origin::Mirror { reference, dest } => write!(f, "mirror {dest} ({reference})"),
            Origin::Upstream { platform } => write!(f, "pull ({platform})"),
            Origin::Missing => write!(f, "missing (--offline)"),
            Origin::Kept => write!(f, "kept (unchanged since the image built on)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub image: String,
    pub origin: Origin,
}

/// Decides every image's origin; checks the host's Docker but fetches nothing.
pub async fn plan(
    docker: &Docker,
    built: &[BuiltImage],
    required: &[String],
    archives: &[Archive],
    sources: &ImageSources,
    platform: &str,
) -> Result<Vec<Planned>> {
    let mut plan: Vec<Planned> = built
        .iter()
        .map(|b| Planned { image: normalize(&b.name), origin: Origin::Built(b.tar.clone()) })
        .collect();
    for image in required {
        let origin = if let Some(a) = archives.iter().find(|a| a.images.contains_key(image)) {
            Origin::Archive(a.path.clone())
        } else if host_has(docker, image, platform).await? {
            Origin::Host
        } else if let Some((reference, m)) = mirror::resolve(&sources.mirrors, image) {
            Origin::Mirror { reference, dest: m.dest.clone() }
        } else if sources.offline {
            Origin::Missing
        } else {
            Origin::Upstream { platform: platform.to_owned() }
        };
        plan.push(Planned { image: image.clone(), origin });
    }
    Ok(plan)
}

/// Whether the host's Docker has `image` for the platform's architecture: an image of
/// another architecture under that name (an amd64 cache when building arm64) does not count.
async fn host_has(docker: &Docker, image: &str, platform: &str) -> Result<bool> {
    let arch = platform.rsplit('/').next().unwrap_or(platform);
    Ok(docker.inspect_image(image).await?.is_some_and(|i| i.architecture == arch))
}

/// One line naming every image `--offline` cannot find.
pub fn check_offline(plan: &[Planned]) -> Result<()> {
    let missing: Vec<&str> =
        plan.iter().filter(|p| p.origin == Origin::Missing).map(|p| p.image.as_str()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "--offline: {} image(s) in no --image-archive/--images-dir, not in the host's Docker and under no \
         --registry-mirror: {}",
        missing.len(),
        missing.join(", ")
    )
}

/// `3 built, 2 archive, 1 host docker`: the counts per origin, in the fixed order.
pub fn summary(plan: &[Planned]) -> String {
    let mut counts: BTreeMap<usize, (&str, usize)> = BTreeMap::new();
    for p in plan {
        let rank = ["kept", "built", "archive", "host docker", "mirror", "upstream", "missing"]
            .iter()
            .position(|k| *k == p.origin.kind())
            .unwrap_or(usize::MAX);
        counts.entry(rank).or_insert((p.origin.kind(), 0)).1 += 1;
    }
    counts.values().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
}

/// Imports every planned image into the build container's containerd and pins it. Archives
/// go first, one at a time, so that a built image of the same name, imported after, wins.
pub async fn import(
    docker: &Docker,
    id: &str,
    plan: &[Planned],
    built: &[BuiltImage],
    archives: &[Archive],
    platform: &str,
    reporter: &Reporter,
) -> Result<()> {
    let wanted: HashSet<&str> = plan.iter().map(|p| p.image.as_str()).collect();
    for archive in archives {
        let needed: Vec<&str> = plan
            .iter()
            .filter(|p| p.origin == Origin::Archive(archive.path.clone()))
            .map(|p| p.image.as_str())
            .collect();
        if !needed.is_empty() {
            import_archive(docker, id, archive, &needed, &wanted, reporter)
                .await
                .with_context(|| format!("importing images from {}", archive.path.display()))?;
        }
    }
    let import_built =
        futures_util::stream::iter(built.iter().map(|image| images::import_built(docker, id, image)))
            .buffer_unordered(2)
            .try_collect::<Vec<()>>();
    let others =
        plan.iter().filter(|p| !matches!(p.origin, Origin::Built(_) | Origin::Archive(_) | Origin::Kept));
    // A docker config that cannot be read leaves the daemon's pulls, which read it their own way.
    let client = crate::registry::Client::new()
        .map_err(|e| reporter.detail(format!("images from registries go through Docker: {e}")))
        .ok();
    let client = client.as_ref();
    let import_others =
        futures_util::stream::iter(others.map(|p| obtain(docker, id, client, p, platform, reporter)))
            .buffer_unordered(3)
            .try_collect::<Vec<()>>();
    futures_util::try_join!(import_built, import_others)?;
    Ok(())
}

async fn obtain(
    docker: &Docker,
    id: &str,
    client: Option<&crate::registry::Client>,
    planned: &Planned,
    platform: &str,
    reporter: &Reporter,
) -> Result<()> {
    let image = &planned.image;
    match &planned.origin {
        // Never a pull: the plan saw the image in the host's Docker (and --offline trusts it).
        Origin::Host => {
            images::save_into_node(docker, id, image).await?;
            pin(docker, id, image).await
        }
        Origin::Upstream { .. } => {
            if direct(docker, id, client, image, image, platform, reporter).await {
                return Ok(());
            }
            images::import_from_host(docker, id, image, platform, reporter).await
        }
        Origin::Mirror { reference, dest } => {
            if !docker.image_exists(reference).await?
                && direct(docker, id, client, reference, image, platform, reporter).await
            {
                return Ok(());
            }
            from_mirror(docker, id, image, reference, platform, reporter)
                .await
                .with_context(|| format!("getting {image} from mirror {dest}"))
        }
        Origin::Built(_) | Origin::Archive(_) | Origin::Missing | Origin::Kept => {
            unreachable!("imported elsewhere or refused by check_offline")
        }
    }
}

/// `reference` from its registry straight into the node as `image` (see `fetch`); false,
/// with a line saying why, when that failed and the host's Docker should pull it instead (it
/// may know a CA, a proxy or a mirror of its own configuration).
async fn direct(
    docker: &Docker,
    id: &str,
    client: Option<&crate::registry::Client>,
    reference: &str,
    image: &str,
    platform: &str,
    reporter: &Reporter,
) -> bool {
    let Some(client) = client else { return false };
    let name = crate::reference::node_name(image);
    match super::fetch::import_from_registry(docker, id, client, reference, &name, platform).await {
        Ok(()) => true,
        Err(e) => {
            reporter.info(format!("{reference}: {}; pulling it through Docker", crate::error::one_line(&e)));
            false
        }
    }
}

/// Pulls the mirror's copy through the host's Docker, imports it, and renames it to the
/// canonical name: neither containerd nor the host's Docker keeps the mirror's name (unless
/// the host had it before).
async fn from_mirror(
    docker: &Docker,
    id: &str,
    image: &str,
    reference: &str,
    platform: &str,
    reporter: &Reporter,
) -> Result<()> {
    let pulled = if docker.image_exists(reference).await? {
        None
    } else {
        // Guarded from before the pull: a pull cut short by Ctrl-C may still land.
        let guard = ImageGuard::new(docker, reference);
        // The error already names the mirror's reference ("pulling <ref>: ...").
        images::pull_with_retry(docker, reference, platform, reporter).await?;
        Some(guard)
    };
    let imported = images::save_into_node(docker, id, reference).await;
    if let Some(pulled) = pulled {
        pulled.remove().await?;
    }
    imported?;
    let mirror_name = normalize(reference);
    ctr(docker, id, &["images", "tag", "--force", &mirror_name, &crate::reference::node_name(image)]).await?;
    ctr(docker, id, &["images", "rm", &mirror_name]).await?;
    pin(docker, id, image).await
}

/// `ctr import` of a whole archive; afterwards only the wanted images keep a name (the rest
/// is garbage-collected at once with `--sync`), OCI images are named from their digests.
async fn import_archive(
    docker: &Docker,
    id: &str,
    archive: &Archive,
    needed: &[&str],
    wanted: &HashSet<&str>,
    reporter: &Reporter,
) -> Result<()> {
    let path = archive.path.clone();
    // Docker-save archives name their images; an OCI layout's are found by digest names,
    // dropped again below.
    let digests = archive.oci.then_some("--digests");
    let cmd: Vec<&str> = images::IMPORT.into_iter().chain(digests).collect();
    let compression = archive.compression;
    images::ctr_import(docker, id, &cmd, &path.display().to_string(), || {
        let path = path.clone();
        async move {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            // ctr takes a plain tar: a compressed archive is decompressed on the way in.
            let failure = Default::default();
            let tar = crate::archive::decompressed(
                std::io::BufReader::with_capacity(1 << 20, file),
                compression,
                Default::default(),
                failure,
            );
            anyhow::Ok(tokio_util::io::StreamReader::new(tar))
        }
    })
    .await?;
    let listed = ctr(docker, id, &["images", "ls", "-q"]).await?;
    let names: HashSet<&str> = listed.lines().map(str::trim).collect();
    let mut drop: Vec<String> = Vec::new();
    for (name, digest) in &archive.images {
        let by_digest = digest.as_ref().and_then(|d| {
            names.iter().find(|n| n.starts_with("import-") && n.ends_with(&format!("@{d}"))).copied()
        });
        if needed.contains(&name.as_str()) && !names.contains(name.as_str()) {
            let from = by_digest.ok_or_else(|| anyhow!("{name} was not imported"))?;
            ctr(docker, id, &["images", "tag", "--force", from, name]).await?;
        }
        drop.extend(by_digest.map(str::to_owned));
        if !wanted.contains(name.as_str()) && names.contains(name.as_str()) {
            drop.push(name.clone());
        }
    }
    let unneeded: Vec<&String> = drop.iter().filter(|n| !n.starts_with("import-")).collect();
    if !unneeded.is_empty() {
        reporter.info(format!(
            "removed {} unneeded image(s) of {} from the node: {}",
            unneeded.len(),
            archive.path.display(),
            unneeded.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    drop.sort();
    drop.dedup();
    if !drop.is_empty() {
        let args: Vec<&str> =
            ["images", "rm", "--sync"].into_iter().chain(drop.iter().map(String::as_str)).collect();
        ctr(docker, id, &args).await?;
    }
    for name in needed {
        pin(docker, id, name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(image: &str, origin: Origin) -> Planned {
        Planned { image: image.into(), origin }
    }

    #[test]
    fn offline_names_every_missing_image_on_one_line() {
        let plan = [
            planned("registry.k8s.io/etcd:3", Origin::Missing),
            planned("registry.k8s.io/pause:3", Origin::Host),
            planned("docker.io/kindest/kindnetd:v1", Origin::Missing),
        ];
        let err = check_offline(&plan).unwrap_err().to_string();
        assert!(!err.contains('\n'));
        assert!(
            err.contains("2 image(s)")
                && err.ends_with("registry.k8s.io/etcd:3, docker.io/kindest/kindnetd:v1"),
            "{err}"
        );
        assert!(check_offline(&plan[1..2]).is_ok());
    }

    #[test]
    fn summary_counts_in_source_order() {
        let plan = [
            planned("a", Origin::Upstream { platform: "linux/amd64".into() }),
            planned("b", Origin::Host),
            planned("c", Origin::Built("x/kube-proxy.tar".into())),
            planned("d", Origin::Host),
            planned("e", Origin::Mirror { reference: "m/e".into(), dest: "m".into() }),
        ];
        assert_eq!(summary(&plan), "1 built, 2 host docker, 1 mirror, 1 upstream");
        assert_eq!(plan[0].origin.to_string(), "pull (linux/amd64)");
        assert_eq!(plan[2].origin.to_string(), "built (kube-proxy.tar)");
        assert_eq!(plan[4].origin.to_string(), "mirror m (m/e)");
    }
}
