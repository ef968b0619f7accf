//! Artifacts that refer to an image (OCI 1.1 `subject`): an SBOM pushed next to the node
//! image it describes. Reading is `oci-client`'s `pull_referrers`, which asks the referrers
//! API and falls back to the referrers tag schema itself; writing the tag schema, for
//! registries without the API (distribution 2.8, Debian's `docker-registry`), is here.

use std::collections::BTreeMap;

use oci_client::manifest::{self as oci, ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use reqwest::header::HeaderValue;

use super::client::{Client, failed, parse};
use super::{Error, manifest};

/// OCI 1.1's empty descriptor: the config of an artifact that has none.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// How the registry lists an artifact among a subject's referrers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Its referrers API found the artifact's `subject`.
    Api,
    /// No referrers API: nodeimg added the artifact to the index tagged `sha256-<hex>`.
    TagSchema,
}

/// An artifact pushed with [`Client::attach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub digest: String,
    pub listed: Listed,
}

/// One referrer of a subject: the artifact manifest's digest and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    pub digest: String,
    pub artifact_type: Option<String>,
}

impl Client {
    /// Pushes `blob` as an artifact of `artifact_type` whose subject is the manifest
    /// `subject` (a digest) in the repository of `reference`, and makes sure the registry
    /// lists it among the subject's referrers, through its API or the tag schema.
    pub async fn attach(
        &self,
        reference: &str,
        subject: &str,
        artifact_type: &str,
        blob: Vec<u8>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Attached, Error> {
        const ACTION: &str = "attaching an artifact to";
        let target = parse(reference)?;
        let at_subject = target.reference().clone_with_digest(subject.to_owned());
        let oci = self.ready(&target, true).await?;
        let (body, _) = oci
            .pull_manifest_raw(&at_subject, &RegistryAuth::Anonymous, &manifest::ACCEPT)
            .await
            .map_err(|e| failed(ACTION, &target, e))?;
        let subject = OciDescriptor {
            media_type: media_type(&body),
            digest: manifest::digest(&body),
            size: body.len() as i64,
            ..Default::default()
        };
        let layer = OciDescriptor {
            media_type: artifact_type.to_owned(),
            digest: manifest::digest(&blob),
            size: blob.len() as i64,
            ..Default::default()
        };
        let config = OciDescriptor {
            media_type: EMPTY_MEDIA_TYPE.into(),
            digest: manifest::digest(EMPTY),
            size: EMPTY.len() as i64,
            ..Default::default()
        };
        for (bytes, digest) in [(EMPTY.to_vec(), &config.digest), (blob, &layer.digest)] {
            oci.push_blob(target.reference(), bytes, digest).await.map_err(|e| failed(ACTION, &target, e))?;
        }
        let artifact = OciImageManifest {
            schema_version: 2,
            media_type: Some(oci::OCI_IMAGE_MEDIA_TYPE.into()),
            config,
            layers: vec![layer],
            subject: Some(subject.clone()),
            artifact_type: Some(artifact_type.to_owned()),
            annotations: Some(annotations.clone()).filter(|a| !a.is_empty()),
        };
        let bytes = serde_json::to_vec(&artifact).expect("a manifest serializes");
        let digest = manifest::digest(&bytes);
        let size = bytes.len() as i64;
        let at_artifact = target.reference().clone_with_digest(digest.clone());
        oci.push_manifest_raw(&at_artifact, bytes, HeaderValue::from_static(oci::OCI_IMAGE_MEDIA_TYPE))
            .await
            .map_err(|e| failed(ACTION, &target, e))?;

        if self.referrers(reference, &subject.digest).await?.iter().any(|r| r.digest == digest) {
            return Ok(Attached { digest, listed: Listed::Api });
        }
        // The tag schema: the index under `sha256-<hex>` gains the artifact's descriptor.
        let tag = subject.digest.replacen(':', "-", 1);
        let at_tag = target.with_tag(&tag);
        let mut index = match oci
            .pull_manifest_raw(at_tag.reference(), &RegistryAuth::Anonymous, &[manifest::OCI_INDEX])
            .await
        {
            Ok((body, _)) => serde_json::from_slice::<OciImageIndex>(&body).map_err(|e| Error::Protocol {
                action: ACTION,
                reference: at_tag.to_string(),
                problem: format!("the referrers tag holds no image index: {e}"),
            })?,
            Err(e) => match failed(ACTION, &at_tag, e) {
                Error::Status { status: 404, .. } => empty_index(),
                other => return Err(other),
            },
        };
        index.manifests.push(ImageIndexEntry {
            media_type: oci::OCI_IMAGE_MEDIA_TYPE.into(),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            artifact_type: Some(artifact_type.to_owned()),
        });
        let body = serde_json::to_vec(&index).expect("an index serializes");
        oci.push_manifest_raw(at_tag.reference(), body, HeaderValue::from_static(manifest::OCI_INDEX))
            .await
            .map_err(|e| failed("writing the referrers tag of", &at_tag, e))?;
        Ok(Attached { digest, listed: Listed::TagSchema })
    }

    /// The referrers of the manifest `subject` in the repository of `reference`.
    pub async fn referrers(&self, reference: &str, subject: &str) -> Result<Vec<Referrer>, Error> {
        let target = parse(reference)?;
        let oci = self.ready(&target, false).await?;
        let at_subject = target.reference().clone_with_digest(subject.to_owned());
        let index = oci
            .pull_referrers(&at_subject, None)
            .await
            .map_err(|e| failed("listing the referrers of", &target, e))?;
        Ok(index
            .manifests
            .into_iter()
            .map(|m| Referrer { digest: m.digest, artifact_type: m.artifact_type })
            .collect())
    }
}

fn empty_index() -> OciImageIndex {
    OciImageIndex {
        schema_version: 2,
        media_type: Some(manifest::OCI_INDEX.into()),
        manifests: Vec::new(),
        artifact_type: None,
        annotations: None,
    }
}

/// A manifest's `mediaType`, which OCI documents may leave out (an OCI manifest then).
fn media_type(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| oci::OCI_IMAGE_MEDIA_TYPE.into())
}
