//! Kubernetes versions: `v1.30.0`, `v1.31.0-alpha.1.123+abcdef`, as semantic versions.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeVersion {
    /// As Kubernetes writes it, with the leading `v`.
    pub text: String,
    pub semver: semver::Version,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes version (expected vMAJOR.MINOR.PATCH, e.g. v1.30.0)")]
pub struct BadVersion(pub String);

impl KubeVersion {
    /// Parses `v1.30.0` style versions; docker tags write `+` as `_`, which is undone.
    pub fn parse(raw: &str) -> Result<Self, BadVersion> {
        let text = raw.trim().replace('_', "+");
        let bare = text.strip_prefix('v').ok_or_else(|| BadVersion(raw.trim().to_owned()))?;
        let semver = semver::Version::parse(bare).map_err(|_| BadVersion(raw.trim().to_owned()))?;
        Ok(Self { text, semver })
    }

    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.semver.major, self.semver.minor) >= (major, minor)
    }

    /// The form used in image tags (`+` is not allowed there).
    pub fn tag(&self) -> String {
        self.text.replace('+', "_")
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_ci_versions() {
        let v = KubeVersion::parse("v1.30.0\n").unwrap();
        assert_eq!(v.text, "v1.30.0");
        assert!(v.at_least(1, 24) && !v.at_least(1, 31));
        let ci = KubeVersion::parse("v1.36.0-alpha.1.123_abcdef").unwrap();
        assert_eq!(ci.text, "v1.36.0-alpha.1.123+abcdef");
        assert_eq!(ci.tag(), "v1.36.0-alpha.1.123_abcdef");
    }

    #[test]
    fn rejects_what_is_not_a_version() {
        for bad in ["1.30.0", "vX", "v1.30", "", "latest"] {
            assert!(KubeVersion::parse(bad).is_err(), "{bad}");
        }
    }
}
