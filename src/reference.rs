//! Image references, the one place nodeimg reads them: `[registry/]name[:tag][@digest]`.
//!
//! The grammar and Docker Hub's normalisation (`busybox` is `docker.io/library/busybox`,
//! `docker.io`/`index.docker.io` are the same registry, `localhost:5000` is a host) come from
//! `oci-spec`'s `distribution::Reference`, the parser `oci-client` uses: it follows
//! distribution's reference grammar (lowercase path components, tags up to 128 characters,
//! `algorithm:hex` digests), so nodeimg and the registries it talks to read a name alike.
//! What is ours is only what Docker's engine adds on top: the API host of Docker Hub and
//! telling the user's "no tag" from `:latest`.

use std::fmt;

use oci_spec::distribution::Reference;

/// Docker Hub's API host; references without a registry name mean it.
pub const HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference. A reference without a tag or digest means `:latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
    /// Whether the user wrote a tag (`x` and `x:latest` name the same image, but only the
    /// second is a pin a user chose).
    tagged: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{given:?} is not an image reference ([registry/]name[:tag][@sha256:digest], lowercase)")]
pub struct InvalidReference {
    pub given: String,
}

impl ImageRef {
    pub fn parse(given: &str) -> Result<Self, InvalidReference> {
        let inner: Reference = given.parse().map_err(|_| InvalidReference { given: given.to_owned() })?;
        let name = given.split_once('@').map_or(given, |(name, _)| name);
        let tagged = name.rsplit_once(':').is_some_and(|(_, tag)| !tag.contains('/'));
        Ok(Self { inner, tagged })
    }

    /// The parsed reference, for the registry client (`oci-client` takes this type).
    pub fn reference(&self) -> &Reference {
        &self.inner
    }

    /// The registry as users name it (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The registry's API host: Docker Hub's is not `docker.io`.
    pub fn api_host(&self) -> &str {
        match self.registry() {
            "docker.io" | "index.docker.io" => HUB_API,
            other => other,
        }
    }

    /// The repository inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag (`latest` when none was written and there is no digest).
    pub fn tag(&self) -> Option<&str> {
        if self.tagged || self.digest().is_none() { Some(self.inner.tag().unwrap_or("latest")) } else { None }
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `registry/repository`, fully qualified, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The same name at `tag`, without a digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            inner: Reference::with_tag(self.registry().into(), self.repository().into(), tag.into()),
            tagged: true,
        }
    }

    /// The name and tag only: what the engine tags and what containerd lists by name.
    pub fn without_digest(&self) -> Self {
        self.with_tag(self.tag().unwrap_or("latest"))
    }
}

/// The canonical form containerd uses: `docker.io/library/busybox:latest`, and
/// `name[:tag]@digest` for pinned references.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = self.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `repo[:tag][@digest]` (a registry port is not a tag) into the name as given and the
/// tag, `latest` when none is written.
pub fn split(reference: &str) -> (&str, &str) {
    let name = reference.split_once('@').map_or(reference, |(name, _)| name);
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    }
}

/// containerd names images fully: `kindest/x:1` is `docker.io/kindest/x:1`. Text that is no
/// reference is returned as it is (callers validated user input before).
pub fn normalize(reference: &str) -> String {
    ImageRef::parse(reference).map_or_else(|_| reference.to_owned(), |r| r.to_string())
}

/// The name an image has in a node's containerd: canonical, and a pinned reference with a tag
/// by its tag (the digest was checked when the image was fetched).
pub fn node_name(reference: &str) -> String {
    match ImageRef::parse(reference) {
        Ok(r) if r.digest().is_some() && r.tag().is_some() => r.without_digest().to_string(),
        _ => normalize(reference),
    }
}

pub fn is_valid(reference: &str) -> bool {
    ImageRef::parse(reference).is_ok()
}

/// A `sha256:` digest in full.
pub fn is_digest(value: &str) -> bool {
    value
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An image ID (`sha256:...` or at least 12 hex digits of it).
pub fn is_image_id(image: &str) -> bool {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn references_split_at_the_tag_not_the_registry_port() {
        assert_eq!(split("nodeimg/base:abc"), ("nodeimg/base", "abc"));
        assert_eq!(split("localhost:5000/base"), ("localhost:5000/base", "latest"));
        assert_eq!(split("localhost:5000/base:v1"), ("localhost:5000/base", "v1"));
        assert_eq!(split("base"), ("base", "latest"));
        assert_eq!(split(&format!("kindest/node:v1.30.0@{D}")), ("kindest/node", "v1.30.0"));
    }

    #[test]
    fn valid_references() {
        for ok in [
            "nodeimg/base:abc",
            "localhost:5000/kind/base:v1",
            "base",
            "registry.k8s.io/pause:3.9",
            "a.b/c",
            &format!("kindest/node:v1.30.0@{D}"),
            &format!("kindest/node@{D}"),
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "Base", "base:", "/base", "base/", "base:-x", "a//b", "x@sha256:abc"] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(is_image_id("sha256:0123456789ab") && is_image_id("0123456789abcdef"));
        assert!(!is_image_id("node:v1"));
    }

    #[test]
    fn canonical_names() {
        assert_eq!(normalize("kindest/kindnetd:v1"), "docker.io/kindest/kindnetd:v1");
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(normalize("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(normalize("index.docker.io/x/y:1"), "docker.io/x/y:1");
        assert_eq!(normalize(&format!("kindest/node:v1@{D}")), format!("docker.io/kindest/node:v1@{D}"));
        assert_eq!(normalize(&format!("kindest/node@{D}")), format!("docker.io/kindest/node@{D}"));
        assert_eq!(node_name(&format!("kindest/node:v1@{D}")), "docker.io/kindest/node:v1");
        assert_eq!(node_name("busybox"), "docker.io/library/busybox:latest");
    }

    #[test]
    fn parts_and_hosts() {
        let r = ImageRef::parse(&format!("kindest/node:v1@{D}")).unwrap();
        assert_eq!(
            (r.api_host(), r.repository(), r.tag(), r.digest()),
            (HUB_API, "kindest/node", Some("v1"), Some(D))
        );
        assert_eq!(r.without_digest().to_string(), "docker.io/kindest/node:v1");
        let r = ImageRef::parse("127.0.0.1:5000/kind/node").unwrap();
        assert_eq!((r.api_host(), r.repository(), r.tag()), ("127.0.0.1:5000", "kind/node", Some("latest")));
        let r = ImageRef::parse(&format!("x@{D}")).unwrap();
        assert_eq!((r.tag(), r.name().as_str()), (None, "docker.io/library/x"));
    }
}
