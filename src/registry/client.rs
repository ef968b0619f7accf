//! The registry HTTP API v2, as much as reading manifests and writing an index needs, with
//! the docker CLI's ways of logging in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use super::Error;
use super::auth::{self, Challenge, Credentials, DockerConfig, Source};
use super::error::registry_message;
use super::manifest::{self, ManifestInfo};
use super::target::{Target, is_digest};

/// Manifests and configs are small; a registry that takes longer is as good as down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for any number of registries; it keeps each host's credentials and token.
pub struct Client {
    http: reqwest::Client,
    config: DockerConfig,
    credentials: tokio::sync::Mutex<HashMap<String, Option<Credentials>>>,
    authorization: Mutex<HashMap<String, HeaderValue>>,
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Transport {
                action: "setting up",
                reference: "the registry client".into(),
                reason: crate::error::root_cause(&e),
            })?;
        Ok(Self { http, config, credentials: Default::default(), authorization: Default::default() })
    }

    /// The credentials for the API host `host`, asked of a helper at most once.
    pub async fn credentials(&self, host: &str) -> Result<Option<Credentials>, Error> {
        let mut known = self.credentials.lock().await;
        if let Some(credentials) = known.get(host) {
            return Ok(credentials.clone());
        }
        let source = self.config.source(host).map_err(|reason| Error::Config {
            path: DockerConfig::path().unwrap_or_default(),
            reason: format!("{host}: {reason}"),
        })?;
        let credentials = match source {
            Source::Stored(credentials) => Some(credentials),
            Source::Helper(helper) => auth::from_helper(&helper, &auth::helper_server(host)).await?,
            Source::Anonymous => None,
        };
        known.insert(host.to_owned(), credentials.clone());
        Ok(credentials)
    }

    /// The single-platform manifest `reference` names, with its platform from the image
    /// configuration. An index is refused: which of its images would be meant?
    pub async fn manifest(&self, reference: &str) -> Result<ManifestInfo, Error> {
        const ACTION: &str = "reading the manifest of";
        let target = parse(reference)?;
        let url = format!("{}/manifests/{}", target.base_url(), target.reference);
        let response = self.send(&target, ACTION, Method::GET, &url, Some(manifest::ACCEPT), None).await?;
        let claimed = header(&response, "docker-content-digest");
        let content_type = header(&response, CONTENT_TYPE.as_str());
        let body = body(&target, ACTION, response).await?;
        let digest = manifest::digest(&body);
        let expected = claimed.or_else(|| is_digest(&target.reference).then(|| target.reference.clone()));
        if let Some(claimed) = expected.filter(|c| *c != digest) {
            return Err(Error::DigestMismatch { reference: target.to_string(), claimed, computed: digest });
        }
        let protocol =
            |problem: String| Error::Protocol { action: ACTION, reference: target.to_string(), problem };
        let media_type = manifest::media_type(content_type.as_deref(), &body)
            .ok_or_else(|| protocol("the manifest has no media type".into()))?;
        if manifest::is_index(&media_type) {
            return Err(Error::IsIndex { reference: target.to_string(), media_type });
        }
        if media_type != manifest::DOCKER_MANIFEST && media_type != manifest::OCI_MANIFEST {
            return Err(protocol(format!("unsupported manifest type {media_type}")));
        }
        let config =
            manifest::config_digest(&body).ok_or_else(|| protocol("the manifest names no config".into()))?;
        let platform = self.config_platform(&target.with_reference(&config)).await?;
        Ok(ManifestInfo { digest, media_type, size: body.len() as u64, platform })
    }

    /// The platform in the configuration blob `config` (a target whose reference is the
    /// blob's digest), checked against that digest.
    async fn config_platform(&self, config: &Target) -> Result<manifest::Platform, Error> {
        const ACTION: &str = "reading the image configuration";
        let url = format!("{}/blobs/{}", config.base_url(), config.reference);
        let response = self.send(config, ACTION, Method::GET, &url, None, None).await?;
        let bytes = body(config, ACTION, response).await?;
        let computed = manifest::digest(&bytes);
        if computed != config.reference {
            return Err(Error::DigestMismatch {
                reference: config.to_string(),
                claimed: config.reference.clone(),
                computed,
            });
        }
        manifest::config_platform(&bytes).ok_or_else(|| Error::Protocol {
            action: ACTION,
            reference: config.to_string(),
            problem: "it names no os and architecture".into(),
        })
    }

    /// Whether the repository of `reference` holds the manifest `digest`.
    pub async fn has_manifest(&self, reference: &str, digest: &str) -> Result<bool, Error> {
        const ACTION: &str = "looking for";
        let target = parse(reference)?.with_reference(digest);
        let url = format!("{}/manifests/{digest}", target.base_url());
        let response =
            self.request(&target, ACTION, Method::HEAD, &url, Some(manifest::ACCEPT), None).await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&target, ACTION, response).await),
        }
    }

    /// Writes an OCI image index of `entries` as `reference` (a tag); returns its digest, the
    /// sha256 of the exact bytes sent. Every entry must already be in the repository: it is
    /// checked first, so a missing image fails before anything is written.
    pub async fn put_index(&self, reference: &str, entries: &[ManifestInfo]) -> Result<String, Error> {
        const ACTION: &str = "writing the index";
        let target = parse(reference)?;
        if entries.is_empty() {
            return Err(Error::Empty { target: target.to_string() });
        }
        for entry in entries {
            if !self.has_manifest(reference, &entry.digest).await? {
                return Err(Error::MissingChild {
                    reference: target.to_string(),
                    platform: entry.platform.to_string(),
                    digest: entry.digest.clone(),
                });
            }
        }
        let bytes = manifest::index_json(entries);
        let digest = manifest::digest(&bytes);
        let url = format!("{}/manifests/{}", target.base_url(), target.reference);
        let body = Some((manifest::OCI_INDEX, bytes));
        let response = self.send(&target, ACTION, Method::PUT, &url, None, body).await?;
        if let Some(claimed) = header(&response, "docker-content-digest").filter(|c| *c != digest) {
            return Err(Error::DigestMismatch { reference: target.to_string(), claimed, computed: digest });
        }
        Ok(digest)
    }

    /// [`Client::request`] that fails on any status but success.
    async fn send(
        &self,
        target: &Target,
        action: &'static str,
        method: Method,
        url: &str,
        accept: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Response, Error> {
        let response = self.request(target, action, method, url, accept, body).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(status_error(target, action, response).await)
        }
    }

    /// One request, logged in: with the host's known authorization, and once more after
    /// answering the registry's challenge if it asks for one.
    async fn request(
        &self,
        target: &Target,
        action: &'static str,
        method: Method,
        url: &str,
        accept: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Response, Error> {
        let mut retried = false;
        loop {
            let mut request = self.http.request(method.clone(), url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some((content_type, bytes)) = &body {
                request = request.header(CONTENT_TYPE, *content_type).body(bytes.clone());
            }
            let known = self.authorization.lock().expect("not poisoned").get(&target.host).cloned();
            if let Some(authorization) = known {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = request.send().await.map_err(|e| transport(target, action, &e))?;
            if response.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(response);
            }
            let challenge =
                header(&response, WWW_AUTHENTICATE.as_str()).and_then(|h| auth::parse_challenge(&h));
            let Some(challenge) = challenge else { return Ok(response) };
            let Some(authorization) = self.answer(target, action, challenge).await? else {
                return Ok(response);
            };
            self.authorization.lock().expect("not poisoned").insert(target.host.clone(), authorization);
            retried = true;
        }
    }

    /// The Authorization header for `challenge`: basic credentials, or a token from the
    /// realm. `None` when there is nothing to answer with (no credentials for Basic).
    async fn answer(
        &self,
        target: &Target,
        action: &'static str,
        challenge: Challenge,
    ) -> Result<Option<HeaderValue>, Error> {
        let credentials = self.credentials(&target.host).await?;
        let (realm, service, scope) = match challenge {
            Challenge::Basic => return Ok(credentials.map(|c| basic(&c))),
            Challenge::Bearer { realm, service, scope } => (realm, service, scope),
        };
        let scope = scope.unwrap_or_else(|| target.push_scope());
        let mut url = reqwest::Url::parse(&realm).map_err(|e| Error::Protocol {
            action,
            reference: target.to_string(),
            problem: format!("the registry's token realm {realm:?} is not a URL: {e}"),
        })?;
        url.query_pairs_mut().append_pair("scope", &scope);
        if let Some(service) = &service {
            url.query_pairs_mut().append_pair("service", service);
        }
        let mut request = self.http.get(url);
        if let Some(credentials) = &credentials {
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        const TOKEN: &str = "getting a token for";
        let response = request.send().await.map_err(|e| transport(target, TOKEN, &e))?;
        if !response.status().is_success() {
            return Err(status_error(target, TOKEN, response).await);
        }
        let bytes = body(target, action, response).await?;
        let token = auth::parse_token(&bytes).ok_or_else(|| Error::Protocol {
            action: TOKEN,
            reference: target.to_string(),
            problem: format!("the token server at {realm} sent no token"),
        })?;
        Ok(HeaderValue::from_str(&format!("Bearer {token}")).ok())
    }
}

fn parse(reference: &str) -> Result<Target, Error> {
    Target::parse(reference).ok_or_else(|| Error::Reference { reference: reference.to_owned() })
}

fn basic(credentials: &Credentials) -> HeaderValue {
    let pair = format!("{}:{}", credentials.username, credentials.password);
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header");
    value.set_sensitive(true);
    value
}

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn transport(target: &Target, action: &'static str, err: &reqwest::Error) -> Error {
    let reason =
        if err.is_timeout() { "no answer in time".to_owned() } else { crate::error::root_cause(err) };
    Error::Transport { action, reference: target.to_string(), reason }
}

async fn body(target: &Target, action: &'static str, response: Response) -> Result<Vec<u8>, Error> {
    Ok(response.bytes().await.map_err(|e| transport(target, action, &e))?.to_vec())
}

async fn status_error(target: &Target, action: &'static str, response: Response) -> Error {
    let status = response.status().as_u16();
    let message = response.bytes().await.ok().and_then(|b| registry_message(&b));
    Error::Status { action, reference: target.to_string(), status, message }
}
