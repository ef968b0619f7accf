//! Credentials as the docker CLI keeps them (config.json, credential helpers) and the
//! registry's authentication challenges (`WWW-Authenticate`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::Error;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

// Never print a secret, not even in a debug dump of an error.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// The parts of `~/.docker/config.json` that say how to log in.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Where the credentials for a host are to be found.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    Stored(Credentials),
    /// `docker-credential-<name>`.
    Helper(String),
    Anonymous,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as the docker CLI reads it.
    pub fn path() -> Option<PathBuf> {
        match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(dir) => Some(PathBuf::from(dir).join("config.json")),
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
        }
    }

    /// The config at `path`; a missing file is an empty config (anonymous access).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::Config { path: path.to_owned(), reason };
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes).map_err(bad),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// How to log in to `host` (an API host such as `registry-1.docker.io`). A helper named
    /// for the host wins over stored credentials, which win over the default store, as in
    /// the docker CLI.
    pub fn source(&self, host: &str) -> Result<Source, String> {
        let keys = config_keys(host);
        if let Some(helper) = keys.iter().find_map(|k| self.cred_helpers.get(k)) {
            return Ok(Source::Helper(helper.clone()));
        }
        let entry = self.auths.iter().find(|(k, _)| keys.contains(&config_key(k))).map(|(_, v)| v);
        if let Some(entry) = entry {
            if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                return decode_auth(auth).map(Source::Stored);
            }
            if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
                let credentials = Credentials { username: username.clone(), password: password.clone() };
                return Ok(Source::Stored(credentials));
            }
        }
        Ok(self.creds_store.clone().filter(|s| !s.is_empty()).map_or(Source::Anonymous, Source::Helper))
    }
}

/// The names the docker CLI files a registry's credentials under: Docker Hub's historical
/// URL for Docker Hub, the bare host for the rest.
fn config_keys(host: &str) -> Vec<String> {
    if host == "registry-1.docker.io" || host == "docker.io" || host == "index.docker.io" {
        vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()]
    } else {
        vec![host.to_owned()]
    }
}

/// An `auths` key without scheme and path (`https://host/v1/` → `host`), except Docker
/// Hub's, which the CLI keeps whole.
fn config_key(key: &str) -> String {
    if key == "https://index.docker.io/v1/" {
        return key.to_owned();
    }
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// `base64(user:password)`.
pub fn decode_auth(auth: &str) -> Result<Credentials, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("the stored auth is not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "the stored auth is not UTF-8".to_owned())?;
    let (username, password) =
        text.split_once(':').ok_or_else(|| "the stored auth is not user:password".to_owned())?;
    Ok(Credentials { username: username.to_owned(), password: password.to_owned() })
}

/// Runs `docker-credential-<helper> get` for `server`. A helper that is not installed, or
/// knows no credentials for the server, means anonymous access, as for the docker CLI.
pub async fn from_helper(helper: &str, server: &str) -> Result<Option<Credentials>, Error> {
    use tokio::io::AsyncWriteExt;
    let program = format!("docker-credential-{helper}");
    let failed =
        |reason: String| Error::Helper { helper: program.clone(), server: server.to_owned(), reason };
    let child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e.to_string())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).await.map_err(|e| failed(e.to_string()))?;
    }
    // A helper waiting for a desktop keyring to unlock would otherwise hang the push.
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| failed("no answer within 30 s".into()))?
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        // Helpers say "credentials not found in native keychain" for an unknown server.
        let text =
            String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        if text.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(failed(text.trim().to_owned()));
    }
    parse_helper_output(&output.stdout).map(Some).map_err(failed)
}

/// The helper protocol's answer: `{"ServerURL": …, "Username": …, "Secret": …}`.
pub fn parse_helper_output(stdout: &[u8]) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(stdout).map_err(|e| format!("unreadable answer: {e}"))?;
    Ok(Credentials { username: answer.username, password: answer.secret })
}

/// The server name a credential helper files `host` under.
pub fn helper_server(host: &str) -> String {
    config_keys(host).swap_remove(0)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`; parameter values may be
/// quoted and hold commas (`scope="repository:x:pull,push"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
        }
        _ => None,
    }
}

fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return params;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.push((key.trim().to_owned(), value));
    }
}

/// The token in a token server's answer (`token`, or OAuth's `access_token`).
pub fn parse_token(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    answer.token.or(answer.access_token).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_keep_quoted_commas() {
        let header = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:kind/node:pull,push""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:kind/node:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=https://a/t, service=s"#),
            Some(Challenge::Bearer { realm: "https://a/t".into(), service: Some("s".into()), scope: None })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn stored_credentials_come_from_base64_or_plain_fields() {
        let config = DockerConfig::parse(
            br#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "https://reg.example/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "plain.example:5000": {"username": "p", "password": "q"},
                "empty.example": {}
            }, "credHelpers": {"gcr.io": "gcloud"}}"#,
        )
        .unwrap();
        let stored =
            |u: &str, p: &str| Ok(Source::Stored(Credentials { username: u.into(), password: p.into() }));
        assert_eq!(config.source("registry-1.docker.io"), stored("hub", "secret"));
        // A colon in the password stays in the password.
        assert_eq!(config.source("reg.example"), stored("user", "pa:ss"));
        assert_eq!(config.source("plain.example:5000"), stored("p", "q"));
        assert_eq!(config.source("empty.example"), Ok(Source::Anonymous));
        assert_eq!(config.source("gcr.io"), Ok(Source::Helper("gcloud".into())));
        assert_eq!(config.source("other.example"), Ok(Source::Anonymous));
    }

    #[test]
    fn the_default_store_serves_hosts_without_entries() {
        let config =
            DockerConfig::parse(br#"{"credsStore": "desktop", "auths": {"a.example": {}}}"#).unwrap();
        assert_eq!(config.source("b.example"), Ok(Source::Helper("desktop".into())));
        assert_eq!(config.source("a.example"), Ok(Source::Helper("desktop".into())));
        assert!(DockerConfig::parse(br#"{"auths": {"x": {"auth": "%%%"}}}"#).unwrap().source("x").is_err());
        assert!(DockerConfig::parse(b"{").is_err());
    }

    #[test]
    fn helper_and_token_answers() {
        let creds = parse_helper_output(br#"{"ServerURL":"s","Username":"u","Secret":"p"}"#).unwrap();
        assert_eq!(creds, Credentials { username: "u".into(), password: "p".into() });
        assert_eq!(format!("{creds:?}"), "Credentials(u, ***)");
        assert_eq!(parse_token(br#"{"token":"t1"}"#).as_deref(), Some("t1"));
        assert_eq!(parse_token(br#"{"access_token":"t2"}"#).as_deref(), Some("t2"));
        assert_eq!(parse_token(br#"{"token":""}"#), None);
        assert_eq!(helper_server("registry-1.docker.io"), "https://index.docker.io/v1/");
        assert_eq!(helper_server("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[tokio::test]
    async fn a_missing_helper_means_anonymous() {
        assert_eq!(from_helper("nodeimg-test-no-such-helper", "x.example").await.unwrap(), None);
    }
}
