//! The docker CLI's credentials (`config.json`, `credsStore`, `credHelpers`), read by the
//! `docker_credential` crate, turned into what `oci-client` sends.

use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError as Why, DockerCredential};
use oci_client::secrets::RegistryAuth;

use super::Error;

/// A docker CLI config: its bytes, kept as read so every lookup sees one state of it.
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    bytes: Option<Vec<u8>>,
    path: PathBuf,
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
            Ok(bytes) => Ok(Self { path: path.to_owned(), ..Self::parse(&bytes).map_err(bad)? }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// A config of these bytes; refused unless they are a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
            .map_err(|e| e.to_string())?;
        Ok(Self { bytes: Some(bytes.to_vec()), path: PathBuf::new() })
    }

    /// How to log in to the API host `host`. No entry, a helper that is not installed or
    /// that knows nothing of the host all mean anonymous access, as for the docker CLI.
    pub fn auth(&self, host: &str) -> Result<RegistryAuth, Error> {
        let Some(bytes) = &self.bytes else { return Ok(RegistryAuth::Anonymous) };
        let server = helper_server(host);
        match docker_credential::get_credential_from_reader(bytes.as_slice(), &server) {
            Ok(DockerCredential::UsernamePassword(user, password)) => Ok(RegistryAuth::Basic(user, password)),
            Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
            Err(Why::NoCredentialConfigured | Why::HelperCommunicationError) => Ok(RegistryAuth::Anonymous),
            Err(Why::HelperFailure { stdout, stderr, .. })
                if (stdout.clone() + &stderr).to_ascii_lowercase().contains("not found") =>
            {
                Ok(RegistryAuth::Anonymous)
            }
            Err(Why::HelperFailure { helper, stdout, stderr }) => Err(Error::Helper {
                helper,
                server,
                reason: format!("{stdout} {stderr}").split_whitespace().collect::<Vec<_>>().join(" "),
            }),
            Err(other) => {
                Err(Error::Config { path: self.path.clone(), reason: format!("{host}: {}", other) })
            }
        }
    }
}

/// The server name the docker CLI files `host` under: Docker Hub's historical URL for
/// Docker Hub, the bare host for the rest.
pub fn helper_server(host: &str) -> String {
    match host {
        "registry-1.docker.io" | "docker.io" | "index.docker.io" => "https://index.docker.io/v1/".into(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> RegistryAuth {
        RegistryAuth::Basic(u.into(), p.into())
    }

    #[test]
    fn stored_credentials_come_from_base64_or_plain_fields() {
        let config = DockerConfig::parse(
            br#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "https://reg.example/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "plain.example:5000": {"username": "p", "password": "q"},
                "empty.example": {}
            }, "credHelpers": {"nodeimg.example": "nodeimg-test-no-such-helper"}}"#,
        )
        .unwrap();
        assert_eq!(config.auth("registry-1.docker.io").unwrap(), basic("hub", "secret"));
        // A colon in the password stays in the password.
        assert_eq!(config.auth("reg.example").unwrap(), basic("user", "pa:ss"));
        assert_eq!(config.auth("plain.example:5000").unwrap(), basic("p", "q"));
        assert_eq!(config.auth("empty.example").unwrap(), RegistryAuth::Anonymous);
        // A helper that is not installed means anonymous, as for the docker CLI.
        assert_eq!(config.auth("nodeimg.example").unwrap(), RegistryAuth::Anonymous);
        assert_eq!(config.auth("other.example").unwrap(), RegistryAuth::Anonymous);
        assert_eq!(DockerConfig::default().auth("x").unwrap(), RegistryAuth::Anonymous);
    }

    #[test]
    fn bad_configs_are_refused_in_words() {
        let err =
            DockerConfig::parse(br#"{"auths": {"x": {"auth": "%%%"}}}"#).unwrap().auth("x").unwrap_err();
        assert!(err.to_string().contains("x: Unable to decode credential"), "{err}");
        assert!(DockerConfig::parse(b"{").is_err());
        assert_eq!(helper_server("registry-1.docker.io"), "https://index.docker.io/v1/");
        assert_eq!(helper_server("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
