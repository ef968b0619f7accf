//! `oci-client` as much as reading manifests back and writing an index needs: one of its
//! clients per registry host (plain HTTP for the hosts the engine treats as insecure), the
//! docker CLI's credentials, and a login answered once per repository and operation.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError as Oci, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use reqwest::header::HeaderValue;

use super::error::registry_message;
use super::manifest::{self, Kind, ManifestInfo};
use super::{DockerConfig, Error};
use crate::reference::ImageRef;

/// A client for any number of registries; it keeps each host's credentials and tokens.
pub struct Client {
    config: DockerConfig,
    hosts: std::sync::Mutex<HashMap<String, (oci_client::Client, RegistryAuth)>>,
    logged_in: tokio::sync::Mutex<HashSet<(String, String, bool)>>,
}

impl Client {
    /// A client with the docker CLI's credentials (`$DOCKER_CONFIG`, `~/.docker`).
    pub fn new() -> Result<Self, Error> {
        let config = match DockerConfig::path() {
            Some(path) => DockerConfig::load(&path)?,
            None => DockerConfig::default(),
        };
        Self::with_config(config)
    }

    pub fn with_config(config: DockerConfig) -> Result<Self, Error> {
        Ok(Self { config, hosts: Default::default(), logged_in: Default::default() })
    }

    /// The user name and password for the API host `host`, for the engine's push.
    pub fn login(&self, host: &str) -> Result<Option<(String, String)>, Error> {
        Ok(match self.host(host)?.1 {
            RegistryAuth::Basic(user, password) => Some((user, password)),
            _ => None,
        })
    }

    fn host(&self, host: &str) -> Result<(oci_client::Client, RegistryAuth), Error> {
        let mut hosts = self.hosts.lock().expect("not poisoned");
        if let Some(known) = hosts.get(host) {
            return Ok(known.clone());
        }
        let insecure = is_insecure(host, std::env::var("NODEIMG_INSECURE_REGISTRIES").ok().as_deref());
        let config = ClientConfig {
            protocol: if insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            connect_timeout: Some(Duration::from_secs(20)),
            // Manifests and configs are small; a registry that takes longer is as good as down.
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let known = (oci_client::Client::new(config), self.config.auth(host)?);
        hosts.insert(host.to_owned(), known.clone());
        Ok(known)
    }

    /// The client for `target`'s host, logged in for `op` on its repository: a token
    /// server's refusal is an error here, where `oci-client` would go on anonymously.
    pub(super) async fn ready(&self, target: &ImageRef, push: bool) -> Result<oci_client::Client, Error> {
        let (oci, auth) = self.host(target.api_host())?;
        let key = (target.api_host().to_owned(), target.repository().to_owned(), push);
        let mut logged_in = self.logged_in.lock().await;
        if !logged_in.contains(&key) {
            let op = if push { RegistryOperation::Push } else { RegistryOperation::Pull };
            oci.auth(target.reference(), &auth, op)
                .await
                .map_err(|e| failed("getting a token for", target, e))?;
            logged_in.insert(key);
        }
        Ok(oci)
    }

    /// The single-platform manifest `reference` names, with its platform from the image
    /// configuration. An index is refused: which of its images would be meant?
    pub async fn manifest(&self, reference: &str) -> Result<ManifestInfo, Error> {
        let body = self.raw_manifest(reference).await?;
        let digest = manifest::digest(&body);
        let protocol = |problem: String| Error::Protocol {
            action: "reading the manifest of",
            reference: reference.into(),
            problem,
        };
        let (media_type, config) = match manifest::kind(&body) {
            Kind::Image { media_type, config } => (media_type, config),
            Kind::Index { media_type } => {
                return Err(Error::IsIndex { reference: reference.into(), media_type });
            }
            Kind::Other { problem } => return Err(protocol(problem)),
        };
        let mut bytes = Vec::new();
        // oci-client checks the blob against its digest.
        self.blob_to(reference, &config, &mut bytes).await?;
        let platform = manifest::config_platform(&bytes).ok_or_else(|| Error::Protocol {
            action: "reading the image configuration of",
            reference: reference.into(),
            problem: "it names no os and architecture".into(),
        })?;
        Ok(ManifestInfo { digest, media_type, size: body.len() as u64, platform })
    }

    /// The manifest or index `reference` names, as the registry serves it (bytes, checked
    /// against a digest the reference pins).
    pub async fn raw_manifest(&self, reference: &str) -> Result<Vec<u8>, Error> {
        const ACTION: &str = "reading the manifest of";
        let target = parse(reference)?;
        let oci = self.ready(&target, false).await?;
        let (body, _) = oci
            .pull_manifest_raw(target.reference(), &RegistryAuth::Anonymous, &manifest::ACCEPT)
            .await
            .map_err(|e| failed(ACTION, &target, e))?;
        let computed = manifest::digest(&body);
        if let Some(claimed) = target.digest().filter(|d| *d != computed) {
            let claimed = claimed.to_owned();
            return Err(Error::DigestMismatch { reference: reference.into(), claimed, computed });
        }
        Ok(body.to_vec())
    }

    /// Streams the blob `digest` of `reference`'s repository into `out`; `oci-client`
    /// checks the bytes against the digest.
    pub async fn blob_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        reference: &str,
        digest: &str,
        out: W,
    ) -> Result<(), Error> {
        let target = parse(reference)?;
        let oci = self.ready(&target, false).await?;
        oci.pull_blob(target.reference(), digest, out)
            .await
            .map_err(|e| failed("reading a blob of", &target, e))
    }

    /// Whether the repository of `reference` holds the manifest `digest`.
    pub async fn has_manifest(&self, reference: &str, digest: &str) -> Result<bool, Error> {
        let target = parse(reference)?;
        let oci = self.ready(&target, false).await?;
        let by_digest = target.reference().clone_with_digest(digest.to_owned());
        match oci.fetch_manifest_digest(&by_digest, &RegistryAuth::Anonymous).await {
            Ok(_) => Ok(true),
            Err(e) => match failed("looking for", &target, e) {
                Error::Status { status: 404, .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Writes an OCI image index of `entries` as `reference` (a tag); returns its digest, the
    /// sha256 of the exact bytes sent. Every entry must already be in the repository: it is
    /// checked first, so a missing image fails before anything is written.
    pub async fn put_index(&self, reference: &str, entries: &[ManifestInfo]) -> Result<String, Error> {
        let target = parse(reference)?;
        if entries.is_empty() {
            return Err(Error::Empty { target: reference.into() });
        }
        for entry in entries {
            if !self.has_manifest(reference, &entry.digest).await? {
                return Err(Error::MissingChild {
                    reference: reference.into(),
                    platform: entry.platform.to_string(),
                    digest: entry.digest.clone(),
                });
            }
        }
        let bytes = manifest::index_json(entries);
        let digest = manifest::digest(&bytes);
        let oci = self.ready(&target, true).await?;
        let content_type = HeaderValue::from_static(manifest::OCI_INDEX);
        let location = oci
            .push_manifest_raw(target.reference(), bytes, content_type)
            .await
            .map_err(|e| failed("writing the index", &target, e))?;
        // The registry names what it stored by digest: it must be the digest of what was sent.
        let stored = location.rsplit('/').next().filter(|last| crate::reference::is_digest(last));
        if let Some(claimed) = stored.filter(|s| *s != digest) {
            return Err(Error::DigestMismatch {
                reference: reference.into(),
                claimed: claimed.into(),
                computed: digest,
            });
        }
        Ok(digest)
    }
}

pub(super) fn parse(reference: &str) -> Result<ImageRef, Error> {
    ImageRef::parse(reference).map_err(|_| Error::Reference { reference: reference.to_owned() })
}

/// `oci-client`'s error as one of ours, with the status and the registry's own words.
pub(super) fn failed(action: &'static str, target: &ImageRef, err: Oci) -> Error {
    let reference = target.to_string();
    let status = |status: u16, message: Option<String>| Error::Status {
        action,
        reference: reference.clone(),
        status,
        message,
    };
    match err {
        Oci::ServerError { code, message, .. } => status(code, registry_message(message.as_bytes())),
        Oci::UnauthorizedError { .. } => status(401, None),
        Oci::ImageManifestNotFoundError(_) => status(404, None),
        Oci::RegistryError { envelope, .. } => match envelope.errors.into_iter().next() {
            Some(first) => {
                let words = Some(first.message.split_whitespace().collect::<Vec<_>>().join(" "));
                status(status_of(&first.code), words.filter(|w| !w.is_empty()))
            }
            None => status(400, None),
        },
        Oci::AuthenticationFailure(body) => {
            let reason =
                registry_message(body.as_bytes()).unwrap_or_else(|| "the token server refused".into());
            Error::Token { reference, reason }
        }
        Oci::RequestError(e) => {
            let reason =
                if e.is_timeout() { "no answer in time".to_owned() } else { crate::error::root_cause(&e) };
            Error::Transport { action, reference, reason }
        }
        other => Error::Protocol { action, reference, problem: other.to_string() },
    }
}

/// The HTTP status the distribution spec gives each error code.
fn status_of(code: &OciErrorCode) -> u16 {
    match code {
        OciErrorCode::Unauthorized => 401,
        OciErrorCode::Denied => 403,
        OciErrorCode::BlobUnknown
        | OciErrorCode::ManifestUnknown
        | OciErrorCode::NameUnknown
        | OciErrorCode::NotFound => 404,
        OciErrorCode::Unsupported => 405,
        OciErrorCode::Toomanyrequests => 429,
        _ => 400,
    }
}

/// Loopback registries are insecure for the Docker engine (plain HTTP) without any
/// configuration, so they must be for nodeimg too, or a push that the engine made over HTTP
/// could not be read back. `extra` (comma-separated) adds hosts, with or without port.
pub fn is_insecure(host: &str, extra: Option<&str>) -> bool {
    let bare = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1])
    } else {
        host.split_once(':').map_or(host, |(h, _)| h)
    };
    let ip = bare.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    bare == "localhost"
        || ip.is_ok_and(|ip| ip.is_loopback())
        || extra.unwrap_or("").split(',').map(str::trim).any(|h| !h.is_empty() && (h == host || h == bare))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_are_plain_http() {
        for host in ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "localhost", "[::1]:5000", "[::1]"] {
            assert!(is_insecure(host, None), "{host}");
        }
        assert!(!is_insecure("registry.example:5000", None));
        assert!(is_insecure("registry.example:5000", Some("other, registry.example")));
        assert!(is_insecure("registry.example:5000", Some("registry.example:5000")));
        assert!(!is_insecure("registry.example:5000", Some("registry.example:6000")));
    }

    #[test]
    fn error_codes_keep_their_statuses() {
        assert_eq!(status_of(&OciErrorCode::ManifestUnknown), 404);
        assert_eq!(status_of(&OciErrorCode::Denied), 403);
        assert_eq!(status_of(&OciErrorCode::Other("X".into())), 400);
    }
}
