//! Registry mirrors: `--registry-mirror SRC=DEST` (where the build fetches an image) and
//! `--node-registry-mirror SRC=URL` (where clusters made from the node image pull, written as
//! containerd's `certs.d/<SRC>/hosts.toml`).

use anyhow::Result;

use crate::docker::Docker;
use crate::node::{containerd, files};

/// `SRC=DEST`: an image `SRC/path:tag` is fetched as `DEST/path:tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// A registry host, optionally with a path (`docker.io`, `registry.k8s.io/sig-x`).
    pub src: String,
    /// Registry host and optional path prefix, without a scheme (`127.0.0.1:5000/hub`).
    pub dest: String,
    /// DEST was given as http://: the Docker daemon must list it in `insecure-registries`
    /// unless it is a loopback address.
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MirrorError {
    #[error("invalid {flag} {given:?}: expected SRC=DEST, e.g. registry.k8s.io=127.0.0.1:5000")]
    NoEquals { flag: &'static str, given: String },
    #[error("invalid {flag} {given:?}: {what} {value:?} is not a registry host[:port][/path]")]
    Part { flag: &'static str, given: String, what: &'static str, value: String },
    #[error("invalid {flag} {given:?}: URL {value:?} must start with http:// or https://")]
    Url { flag: &'static str, given: String, value: String },
}

fn split<'a>(flag: &'static str, given: &'a str) -> Result<(&'a str, &'a str), MirrorError> {
    given.split_once('=').ok_or_else(|| MirrorError::NoEquals { flag, given: given.to_owned() })
}

/// `host[:port][/path...]` with lowercase path components, no scheme, no trailing slash.
fn valid_location(value: &str) -> bool {
    let mut parts = value.split('/');
    let host = parts.next().unwrap_or("");
    let host_ok = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        && !host.starts_with(['.', '-', ':']);
    host_ok
        && parts.all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

impl Mirror {
    pub fn parse(given: &str) -> Result<Self, MirrorError> {
        const FLAG: &str = "--registry-mirror";
        let (src, dest) = split(FLAG, given)?;
        let part = |what, value: &str| MirrorError::Part {
            flag: FLAG,
            given: given.to_owned(),
            what,
            value: value.to_owned(),
        };
        let src = src.trim_end_matches('/');
        if !valid_location(src) {
            return Err(part("SRC", src));
        }
        let (insecure, bare) = match dest.split_once("://") {
            Some(("http", rest)) => (true, rest),
            Some(("https", rest)) => (false, rest),
            Some(_) => return Err(part("DEST", dest)),
            None => (false, dest),
        };
        let bare = bare.trim_end_matches('/');
        if !valid_location(bare) {
            return Err(part("DEST", dest));
        }
        Ok(Self { src: src.to_owned(), dest: bare.to_owned(), insecure })
    }
}

/// The mirror reference for a canonical image name: the longest matching SRC wins; `None`
/// when no mirror covers the image.
pub fn resolve<'a>(mirrors: &'a [Mirror], canonical: &str) -> Option<(String, &'a Mirror)> {
    mirrors
        .iter()
        .filter(|m| canonical.starts_with(&format!("{}/", m.src)))
        .max_by_key(|m| m.src.len())
        .map(|m| (format!("{}{}", m.dest, &canonical[m.src.len()..]), m))
}

/// `SRC=URL` for the node's containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMirror {
    pub src: String,
    /// Without a trailing slash.
    pub url: String,
}

impl NodeMirror {
    pub fn parse(given: &str) -> Result<Self, MirrorError> {
        const FLAG: &str = "--node-registry-mirror";
        let (src, url) = split(FLAG, given)?;
        // containerd looks hosts up by registry host only.
        if !valid_location(src) || src.contains('/') {
            let value = src.to_owned();
            return Err(MirrorError::Part { flag: FLAG, given: given.to_owned(), what: "SRC", value });
        }
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        if !rest.is_some_and(|r| valid_location(r.trim_end_matches('/'))) {
            return Err(MirrorError::Url { flag: FLAG, given: given.to_owned(), value: url.to_owned() });
        }
        Ok(Self { src: src.to_owned(), url: url.trim_end_matches('/').to_owned() })
    }

    /// The upstream server containerd falls back to.
    fn server(&self) -> String {
        match self.src.as_str() {
            "docker.io" => "https://registry-1.docker.io".to_owned(),
            src => format!("https://{src}"),
        }
    }

    /// containerd appends `/v2` to a host URL unless `override_path` says the path already
    /// is the API root, which a mirror under a path prefix needs.
    fn host(&self) -> (String, bool) {
        let scheme_end = self.url.find("://").map(|i| i + 3).unwrap_or(0);
        match self.url[scheme_end..].split_once('/') {
            Some((host, path)) => (format!("{}{host}/v2/{path}", &self.url[..scheme_end]), true),
            None => (self.url.clone(), false),
        }
    }
}

/// `/etc/containerd/certs.d/<SRC>/hosts.toml`, rendered from templates/hosts.toml.hbs.
pub fn hosts_toml(mirror: &NodeMirror) -> Result<(String, String)> {
    let (host, override_path) = mirror.host();
    let vars = serde_json::json!({
        "server": mirror.server(),
        "host": host,
        "override_path": override_path,
    });
    let text = crate::templates::render(include_str!("../../templates/hosts.toml.hbs"), &vars)?;
    Ok((format!("{}/{}/hosts.toml", containerd::CERTS_D, mirror.src), text))
}

/// Writes `certs.d/<SRC>/hosts.toml` for every mirror and sets `config_path`.
pub async fn add_node_mirrors(docker: &Docker, id: &str, mirrors: &[NodeMirror]) -> Result<()> {
    let mut config = containerd::read_config(docker, id).await?;
    config.set_registry_config_path(containerd::CERTS_D)?;
    let mut written = vec![(containerd::CONFIG.to_owned(), config.to_string())];
    for mirror in mirrors {
        written.push(hosts_toml(mirror)?);
    }
    files::write_all(docker, id, written).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mirrors_with_scheme_and_prefix() {
        let m = Mirror::parse("registry.k8s.io=127.0.0.1:5000").unwrap();
        assert_eq!(
            (m.src.as_str(), m.dest.as_str(), m.insecure),
            ("registry.k8s.io", "127.0.0.1:5000", false)
        );
        let m = Mirror::parse("docker.io=http://mirror.internal:5000/hub/").unwrap();
        assert_eq!((m.dest.as_str(), m.insecure), ("mirror.internal:5000/hub", true));
        assert!(matches!(Mirror::parse("docker.io"), Err(MirrorError::NoEquals { .. })));
        assert!(matches!(Mirror::parse("=x:5000"), Err(MirrorError::Part { what: "SRC", .. })));
        assert!(matches!(Mirror::parse("docker.io=ftp://x"), Err(MirrorError::Part { what: "DEST", .. })));
        assert!(matches!(Mirror::parse("docker.io=x/Up"), Err(MirrorError::Part { what: "DEST", .. })));
        let err = Mirror::parse("registry.k8s.io").unwrap_err().to_string();
        assert!(err.contains("--registry-mirror \"registry.k8s.io\"") && err.contains("SRC=DEST"), "{err}");
    }

    #[test]
    fn the_longest_source_prefix_wins() {
        let mirrors = [
            Mirror::parse("docker.io=m:5000/hub").unwrap(),
            Mirror::parse("docker.io/kindest=kind.internal").unwrap(),
            Mirror::parse("registry.k8s.io=m:5000").unwrap(),
        ];
        let r = |c| resolve(&mirrors, c).map(|(r, _)| r);
        assert_eq!(r("docker.io/library/busybox:1").as_deref(), Some("m:5000/hub/library/busybox:1"));
        assert_eq!(r("docker.io/kindest/kindnetd:v1").as_deref(), Some("kind.internal/kindnetd:v1"));
        assert_eq!(r("registry.k8s.io/coredns/coredns:v1").as_deref(), Some("m:5000/coredns/coredns:v1"));
        assert_eq!(r("registry.k8s.io.evil/x:1"), None, "only whole path components match");
        assert_eq!(r("quay.io/x:1"), None);
    }

    #[test]
    fn node_mirrors_render_hosts_toml() {
        let m = NodeMirror::parse("registry.k8s.io=http://127.0.0.1:5000/").unwrap();
        let (path, text) = hosts_toml(&m).unwrap();
        assert_eq!(path, "/etc/containerd/certs.d/registry.k8s.io/hosts.toml");
        let doc: toml_edit::DocumentMut = text.parse().expect("valid TOML");
        assert_eq!(doc["server"].as_str(), Some("https://registry.k8s.io"));
        let host = &doc["host"]["http://127.0.0.1:5000"];
        let caps: Vec<_> = host["capabilities"].as_array().unwrap().iter().map(|v| v.as_str()).collect();
        assert_eq!(caps, vec![Some("pull"), Some("resolve")]);
        assert!(host.get("override_path").is_none());

        let hub = NodeMirror::parse("docker.io=https://harbor.internal/proxy").unwrap();
        let doc: toml_edit::DocumentMut = hosts_toml(&hub).unwrap().1.parse().unwrap();
        assert_eq!(doc["server"].as_str(), Some("https://registry-1.docker.io"));
        assert_eq!(doc["host"]["https://harbor.internal/v2/proxy"]["override_path"].as_bool(), Some(true));

        assert!(NodeMirror::parse("docker.io=127.0.0.1:5000").is_err(), "a URL needs a scheme");
        assert!(NodeMirror::parse("docker.io/x=http://m").is_err(), "SRC is a host");
    }
}
