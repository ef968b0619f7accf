//! Manifests as the registry API carries them, in `oci-client`'s types (which are
//! `oci-spec`'s): media types, digests of exact bytes, the platform of an image
//! configuration, and the OCI image index nodeimg writes.

use oci_client::manifest::{self as oci, ImageIndexEntry, OciImageIndex};
use sha2::{Digest, Sha256};

use oci::{IMAGE_MANIFEST_LIST_MEDIA_TYPE as DOCKER_LIST, OCI_IMAGE_MEDIA_TYPE as OCI_MANIFEST};
pub use oci::{IMAGE_MANIFEST_MEDIA_TYPE as DOCKER_MANIFEST, OCI_IMAGE_INDEX_MEDIA_TYPE as OCI_INDEX};

/// What a GET for a manifest accepts: single images first, indexes so that a reference to
/// one is recognised (and refused) rather than converted by the registry.
pub const ACCEPT: [&str; 4] = [DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX];

/// An image's platform as an index entry names it (`linux/arm/v7`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// One single-platform manifest in a repository: what an index entry needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    /// `sha256:…` of the manifest's bytes.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub platform: Platform,
}

/// `sha256:<hex>` of `bytes`: a content digest as registries compute it.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a manifest document is, by its `mediaType` (or, for OCI documents that leave it
/// out, by its shape), and the digest of the config blob of a single image.
pub enum Kind {
    Image { media_type: String, config: String },
    Index { media_type: String },
    Other { problem: String },
}

pub fn kind(body: &[u8]) -> Kind {
    match serde_json::from_slice::<oci::OciManifest>(body) {
        Ok(oci::OciManifest::ImageIndex(index)) => {
            Kind::Index { media_type: index.media_type.unwrap_or_else(|| OCI_INDEX.into()) }
        }
        Ok(oci::OciManifest::Image(image)) => {
            let media_type = image.media_type.unwrap_or_else(|| OCI_MANIFEST.into());
            if [DOCKER_MANIFEST, OCI_MANIFEST].contains(&media_type.as_str()) {
                Kind::Image { media_type, config: image.config.digest }
            } else if [DOCKER_LIST, OCI_INDEX].contains(&media_type.as_str()) {
                Kind::Index { media_type }
            } else {
                Kind::Other { problem: format!("unsupported manifest type {media_type}") }
            }
        }
        Err(e) => Kind::Other { problem: format!("the manifest is unreadable: {e}") },
    }
}

/// The platform an image configuration declares.
pub fn config_platform(config: &[u8]) -> Option<Platform> {
    let platform: oci::Platform = serde_json::from_slice(config).ok()?;
    Some(Platform {
        os: platform.os.to_string(),
        architecture: platform.architecture.to_string(),
        variant: platform.variant,
    })
}

/// The OCI image index of `entries`, in their order. Fields serialize in declaration order
/// and nothing else varies, so equal entries give equal bytes and an equal digest.
pub fn index_json(entries: &[ManifestInfo]) -> Vec<u8> {
    let manifests = entries
        .iter()
        .map(|e| ImageIndexEntry {
            media_type: e.media_type.clone(),
            digest: e.digest.clone(),
            size: e.size as i64,
            platform: Some(oci::Platform {
                architecture: e.platform.architecture.as_str().into(),
                os: e.platform.os.as_str().into(),
                os_version: None,
                os_features: None,
                variant: e.platform.variant.clone(),
                features: None,
            }),
            annotations: None,
            artifact_type: None,
        })
        .collect();
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.into()),
        manifests,
        artifact_type: None,
        annotations: None,
    };
    serde_json::to_vec(&index).expect("JSON of strings and numbers")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>) -> ManifestInfo {
        ManifestInfo {
            digest: format!("sha256:{}", arch.len().to_string().repeat(64)),
            media_type: DOCKER_MANIFEST.into(),
            size: 525,
            platform: Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            },
        }
    }

    #[test]
    fn the_index_is_oci_and_deterministic() {
        let entries = [entry("amd64", None), entry("arm64", Some("v8"))];
        let bytes = index_json(&entries);
        assert_eq!(bytes, index_json(&entries));
        let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], OCI_INDEX);
        assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(index["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(index["manifests"][1]["size"], 525);
        assert_eq!(index["manifests"][1]["mediaType"], DOCKER_MANIFEST);
        assert!(index["manifests"][0]["platform"].get("variant").is_none());
    }

    #[test]
    fn digests_are_sha256_of_the_exact_bytes() {
        assert_eq!(digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(digest(b"abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(digest(b"{\"a\":1}"), digest(b"{\"a\": 1}"));
    }

    #[test]
    fn media_types_platforms_and_config_digests_are_read() {
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","size":1,"digest":"sha256:c"},"layers":[]}"#;
        assert!(
            matches!(kind(oci), Kind::Image { media_type, config } if media_type == OCI_MANIFEST && config == "sha256:c")
        );
        let list = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[]}}"#);
        assert!(matches!(kind(list.as_bytes()), Kind::Index { media_type } if media_type == DOCKER_LIST));
        assert!(matches!(kind(b"{}"), Kind::Other { .. }));
        let platform =
            config_platform(br#"{"os":"linux","architecture":"arm","variant":"v7","rootfs":{}}"#).unwrap();
        assert_eq!(platform.to_string(), "linux/arm/v7");
        assert_eq!(
            config_platform(br#"{"architecture":"riscv64","os":"linux"}"#).unwrap().to_string(),
            "linux/riscv64"
        );
        assert_eq!(config_platform(br#"{"os":"linux"}"#), None);
    }
}
