//! Where a reference lives in the registry API: which host to ask, over which scheme, and the
//! repository path and tag or digest to put in the URL.

use std::fmt;
use std::net::IpAddr;

use crate::reference::ImageRef;
pub use crate::reference::is_digest;

/// A reference resolved for the registry API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The API host (`127.0.0.1:5000`, `registry-1.docker.io`).
    pub host: String,
    /// The repository path inside the registry (`library/busybox`).
    pub repo: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

impl Target {
    /// `[host/]repo[:tag][@digest]`; a digest wins over a tag, no tag means `latest`.
    pub fn parse(reference: &str) -> Option<Self> {
        let parsed = ImageRef::parse(reference).ok()?;
        let reference = parsed.digest().or(parsed.tag()).unwrap_or("latest").to_owned();
        Some(Self { host: parsed.api_host().to_owned(), repo: parsed.repository().to_owned(), reference })
    }

    /// The same repository at another tag or digest.
    pub fn with_reference(&self, reference: &str) -> Self {
        Self { reference: reference.to_owned(), ..self.clone() }
    }

    /// The base URL of the API, `http://` for registries Docker treats as insecure.
    pub fn base_url(&self) -> String {
        let scheme = if is_insecure(&self.host, insecure_list().as_deref()) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.host, self.repo)
    }

    /// The scope a token for pushing to this repository needs.
    pub fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repo)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if is_digest(&self.reference) { '@' } else { ':' };
        write!(f, "{}/{}{sep}{}", self.host, self.repo, self.reference)
    }
}

fn insecure_list() -> Option<String> {
    std::env::var("NODEIMG_INSECURE_REGISTRIES").ok()
}

/// Loopback registries are insecure for the Docker engine (plain HTTP) without any
/// configuration, so they must be for nodeimg too, or a push that the engine made over HTTP
/// could not be read back. `extra` (comma-separated) adds hosts, with or without port.
pub fn is_insecure(host: &str, extra: Option<&str>) -> bool {
    let bare = host_without_port(host);
    let loopback = bare == "localhost"
        || bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || extra.unwrap_or("").split(',').map(str::trim).any(|h| !h.is_empty() && (h == host || h == bare))
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host);
    }
    host.split_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::HUB_API;

    #[test]
    fn references_resolve_to_api_hosts_and_paths() {
        let t = Target::parse("127.0.0.1:5000/kind/node:v1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.repo.as_str(), t.reference.as_str()),
            ("127.0.0.1:5000", "kind/node", "v1")
        );
        let t = Target::parse("busybox").unwrap();
        assert_eq!(
            (t.host.as_str(), t.repo.as_str(), t.reference.as_str()),
            (HUB_API, "library/busybox", "latest")
        );
        let t = Target::parse("docker.io/kindest/node:v1").unwrap();
        assert_eq!((t.host.as_str(), t.repo.as_str()), (HUB_API, "kindest/node"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let t = Target::parse(&format!("localhost:5000/x:v1@{digest}")).unwrap();
        assert_eq!(t.reference, digest);
        assert_eq!(t.to_string(), format!("localhost:5000/x@{digest}"));
        assert!(Target::parse("x@sha256:abc").is_none());
        assert!(Target::parse("Bad/Name").is_none());
    }

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
}
