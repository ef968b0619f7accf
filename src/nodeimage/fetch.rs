//! Registry images straight into the node's containerd, as the registry serves them: the
//! layers stay compressed (gzip or zstd blobs, as in a node that pulled them), and the image
//! keeps the registry's digest, its index where the registry has one (only the build's
//! platform's blobs come along). No Docker daemon, no `docker save` (which would hand over
//! uncompressed layers under a digest of its own).
//!
//! The blobs go to a scratch directory first, a few at a time and checked against their
//! digests (by `oci-client`), and from there as one OCI layout into `ctr images import`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::manifest::{OciImageIndex, OciImageManifest, OciManifest};

use super::images::{ctr_import, pin};
use crate::docker::Docker;
use crate::registry::{self, Client};

/// Blobs fetched at the same time for one image.
const BLOBS_AT_ONCE: usize = 4;

/// Fetches `reference` for `platform` (`linux/arm64`, `linux/arm/v7`) and imports it into
/// the containerd of container `id` as `name`, pinned.
pub async fn import_from_registry(
    docker: &Docker,
    id: &str,
    client: &Client,
    reference: &str,
    name: &str,
    platform: &str,
) -> Result<()> {
    let scratch = tempfile::Builder::new().prefix("nodeimg-fetch-").tempdir()?;
    let layout = scratch.path();
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let top = client.raw_manifest(reference).await?;
    let top_digest = registry::digest(&top);
    let (top_type, manifest) = match serde_json::from_slice::<OciManifest>(&top) {
        Ok(OciManifest::ImageIndex(index)) => {
            let media_type = index.media_type.clone().unwrap_or_else(|| registry::OCI_INDEX.into());
            let child =
                choose(&index, platform).ok_or_else(|| anyhow!("{reference} has no image for {platform}"))?;
            let child_ref = format!("{}@{child}", without_digest(reference));
            let bytes = client.raw_manifest(&child_ref).await?;
            std::fs::write(blobs.join(hex(&child)), &bytes)?;
            (media_type, bytes)
        }
        Ok(OciManifest::Image(image)) => {
            let media_type =
                image.media_type.clone().unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.into());
            (media_type, top.clone())
        }
        Err(e) => bail!("{reference}: the registry's manifest is unreadable: {e}"),
    };
    std::fs::write(blobs.join(hex(&top_digest)), &top)?;
    let image: OciImageManifest =
        serde_json::from_slice(&manifest).with_context(|| format!("{reference}: reading its manifest"))?;
    let wanted: Vec<String> =
        std::iter::once(&image.config).chain(&image.layers).map(|d| d.digest.clone()).collect();
    futures_util::stream::iter(
        wanted.into_iter().map(|digest| fetch_blob(client, reference, digest, &blobs)),
    )
    .buffer_unordered(BLOBS_AT_ONCE)
    .try_collect::<Vec<()>>()
    .await?;
    write_index(layout, &top_type, &top_digest, top.len(), name)?;
    let import = ["ctr", "-n", "k8s.io", "images", "import", "--platform", platform, "--no-unpack"];
    let dir = layout.to_owned();
    ctr_import(docker, id, &import, reference, || {
        let dir = dir.clone();
        async move { Ok(tokio_util::io::StreamReader::new(layout_tar(dir))) }
    })
    .await?;
    pin(docker, id, name).await
}

/// The index entry for `platform`: os and architecture must match, and the variant where
/// `platform` names one.
fn choose(index: &OciImageIndex, platform: &str) -> Option<String> {
    let mut parts = platform.split('/');
    let (os, arch, variant) = (parts.next()?, parts.next()?, parts.next());
    index
        .manifests
        .iter()
        .find(|m| {
            m.platform.as_ref().is_some_and(|p| {
                p.os.to_string() == os
                    && p.architecture.to_string() == arch
                    && variant.is_none_or(|v| p.variant.as_deref() == Some(v))
            })
        })
        .map(|m| m.digest.clone())
}

async fn fetch_blob(client: &Client, reference: &str, digest: String, blobs: &Path) -> Result<()> {
    let path = blobs.join(hex(&digest));
    if path.exists() {
        return Ok(());
    }
    let part = path.with_extension("part");
    let file = tokio::fs::File::create(&part).await?;
    let mut out = tokio::io::BufWriter::with_capacity(128 << 10, file);
    client.blob_to(reference, &digest, &mut out).await?;
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    std::fs::rename(&part, &path)?;
    Ok(())
}

/// `index.json` and `oci-layout`: one image, named as containerd names what it imports.
fn write_index(layout: &Path, media_type: &str, digest: &str, size: usize, name: &str) -> Result<()> {
    let tag = crate::reference::ImageRef::parse(name)?.tag().unwrap_or("latest").to_owned();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// The layout directory as a tar stream, blobs streamed from their files.
fn layout_tar(dir: PathBuf) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    crate::archive::tar_stream(move |tar| {
        for name in ["oci-layout", "index.json"] {
            crate::archive::append_file(tar, &dir.join(name), Path::new(name), 0o644)?;
        }
        let mut blobs: Vec<PathBuf> = std::fs::read_dir(dir.join("blobs/sha256"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        blobs.sort();
        for blob in blobs {
            let name = Path::new("blobs/sha256").join(blob.file_name().unwrap_or_default());
            crate::archive::append_file(tar, &blob, &name, 0o644)?;
        }
        Ok(())
    })
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn without_digest(reference: &str) -> &str {
    reference.split_once('@').map_or(reference, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platforms_entry_is_chosen() {
        let index: OciImageIndex = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:a", "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:b", "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:c", "size": 1,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            ]
        }))
        .unwrap();
        assert_eq!(choose(&index, "linux/amd64").as_deref(), Some("sha256:a"));
        assert_eq!(choose(&index, "linux/arm64").as_deref(), Some("sha256:b"), "any variant");
        assert_eq!(choose(&index, "linux/arm/v7").as_deref(), Some("sha256:c"));
        assert_eq!(choose(&index, "linux/arm/v6"), None);
        assert_eq!(choose(&index, "linux/s390x"), None);
    }
}
