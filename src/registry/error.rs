use std::path::PathBuf;

/// What went wrong talking to a registry. Each message names the reference with its
/// registry host (`127.0.0.1:5000/kind/node:v1`), so one line tells where it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{reference} is not a valid image reference")]
    Reference { reference: String },
    #[error("reading registry credentials from {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{helper} get for {server}: {reason}")]
    Helper { helper: String, server: String, reason: String },
    /// The registry answered with an error status; `message` is its own words, if any.
    #[error("{action} {reference}: HTTP {status}{}{}", reason(*status), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status { action: &'static str, reference: String, status: u16, message: Option<String> },
    /// The token server refused the login; `reason` is its own words.
    #[error("getting a token for {reference}: {reason}")]
    Token { reference: String, reason: String },
    /// No answer, or the connection broke.
    #[error("{action} {reference}: {reason}")]
    Transport { action: &'static str, reference: String, reason: String },
    #[error("{action} {reference}: {problem}")]
    Protocol { action: &'static str, reference: String, problem: String },
    #[error("{reference} is an image index ({media_type}); a single-platform image is needed")]
    IsIndex { reference: String, media_type: String },
    #[error("{reference}: the registry says the manifest is {claimed}, its bytes are {computed}")]
    DigestMismatch { reference: String, claimed: String, computed: String },
    #[error("writing the index {reference}: its {platform} manifest {digest} is not in the repository")]
    MissingChild { reference: String, platform: String, digest: String },
    #[error("nothing to push to {target}")]
    Empty { target: String },
}

/// ` Unauthorized` for 401: a HEAD request's refusal has no body to explain it.
fn reason(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
    reason.map(|r| format!(" {r}")).unwrap_or_default()
}

/// The first error message of a registry error body (`{"errors":[{"code","message"}]}`),
/// on one line.
pub fn registry_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let first = body.errors.into_iter().next()?;
    let text = first.message.filter(|m| !m.trim().is_empty()).or(first.code)?;
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_carry_the_registrys_message_on_one_line() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access\nto the resource is denied"},{"code":"X"}]}"#;
        let err = Error::Status {
            action: "writing the index",
            reference: "127.0.0.1:5000/kind/node:v1".into(),
            status: 403,
            message: registry_message(body),
        };
        assert_eq!(
            err.to_string(),
            "writing the index 127.0.0.1:5000/kind/node:v1: HTTP 403 Forbidden: requested access to the resource is denied"
        );
        assert_eq!(
            registry_message(br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).as_deref(),
            Some("UNAUTHORIZED")
        );
        assert_eq!(registry_message(b"<html>502</html>"), None);
        let bare = Error::Status { action: "reading", reference: "r".into(), status: 500, message: None };
        assert_eq!(bare.to_string(), "reading r: HTTP 500 Internal Server Error");
    }
}
