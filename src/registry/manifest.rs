//! Manifests as the registry API carries them: media types, digests of exact bytes, the
//! platform from an image configuration, and the OCI image index nodeimg writes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What a GET for a manifest accepts: single images first, indexes so that a reference to
/// one is recognised (and refused) rather than converted by the registry.
pub const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// The media type of a manifest: the response's Content-Type, else the document's own
/// `mediaType` (for a registry or proxy that serves every manifest as plain JSON).
pub fn media_type(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    if let Some(header) = header {
        return Some(header.to_owned());
    }
    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Doc>(body).ok()?.media_type
}

/// The digest of the configuration blob a single-platform manifest points at.
pub fn config_digest(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Descriptor {
        digest: String,
    }
    #[derive(Deserialize)]
    struct Doc {
        config: Descriptor,
    }
    Some(serde_json::from_slice::<Doc>(body).ok()?.config.digest)
}

/// The platform an image configuration declares.
pub fn config_platform(config: &[u8]) -> Option<Platform> {
    #[derive(Deserialize)]
    struct Config {
        os: String,
        architecture: String,
        variant: Option<String>,
    }
    let config: Config = serde_json::from_slice(config).ok()?;
    Some(Platform { os: config.os, architecture: config.architecture, variant: config.variant })
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u8,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    platform: &'a Platform,
}

/// The OCI image index of `entries`, in their order. Struct fields serialize in declaration
/// order and nothing else varies, so equal entries give equal bytes and an equal digest.
pub fn index_json(entries: &[ManifestInfo]) -> Vec<u8> {
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: entries
            .iter()
            .map(|e| Entry {
                media_type: &e.media_type,
                digest: &e.digest,
                size: e.size,
                platform: &e.platform,
            })
            .collect(),
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
        let expected = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"sha256:{}","size":525,"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"{DOCKER_MANIFEST}","digest":"sha256:{}","size":525,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            "5".repeat(64),
            "5".repeat(64),
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }

    #[test]
    fn digests_are_sha256_of_the_exact_bytes() {
        assert_eq!(digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(digest(b"abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(digest(b"{\"a\":1}"), digest(b"{\"a\": 1}"));
    }

    #[test]
    fn media_types_platforms_and_config_digests_are_read() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:c"}}"#;
        assert_eq!(
            media_type(Some("application/vnd.docker.distribution.manifest.v2+json"), body).as_deref(),
            Some(DOCKER_MANIFEST)
        );
        assert_eq!(media_type(Some("application/json; charset=utf-8"), body).as_deref(), Some(OCI_MANIFEST));
        assert_eq!(media_type(None, b"{}"), None);
        assert_eq!(config_digest(body).as_deref(), Some("sha256:c"));
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_LIST) && !is_index(OCI_MANIFEST));
        let platform =
            config_platform(br#"{"os":"linux","architecture":"arm","variant":"v7","rootfs":{}}"#).unwrap();
        assert_eq!(platform.to_string(), "linux/arm/v7");
        assert_eq!(config_platform(br#"{"os":"linux"}"#), None);
    }
}
