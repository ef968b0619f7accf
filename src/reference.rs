//! Image references (`[registry/]name[:tag]`): splitting, checking and the canonical form
//! containerd uses. Pure string work, shared by every pipeline.

/// Splits `repo[:tag]` (a registry port is not a tag) into repository and tag.
pub fn split(reference: &str) -> (&str, &str) {
    let (repo, tag) = split_opt(reference);
    (repo, tag.unwrap_or("latest"))
}

/// Like [`split`], without defaulting the tag.
pub fn split_opt(reference: &str) -> (&str, Option<&str>) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (reference, None),
    }
}

/// containerd names images fully: `kindest/x:1` is `docker.io/kindest/x:1`.
pub fn normalize(reference: &str) -> String {
    let (repo, tag) = split(reference);
    let first = repo.split('/').next().unwrap_or("");
    let has_host = repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_host, repo.contains('/')) {
        (true, _) => format!("{repo}:{tag}"),
        (false, true) => format!("docker.io/{repo}:{tag}"),
        (false, false) => format!("docker.io/library/{repo}:{tag}"),
    }
}

/// A Docker image reference: optional registry host[:port], lowercase path components,
/// optional tag.
pub fn is_valid(reference: &str) -> bool {
    let (name, tag) = split_opt(reference);
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !ok {
            return false;
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c)) {
            return false;
        }
    }
    let component_ok = |p: &&str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    !parts.is_empty() && parts.iter().all(component_ok)
}

/// An image ID (`sha256:...` or at least 12 hex digits of it).
pub fn is_image_id(image: &str) -> bool {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_not_the_registry_port() {
        assert_eq!(split("nodeimg/base:abc"), ("nodeimg/base", "abc"));
        assert_eq!(split("localhost:5000/base"), ("localhost:5000/base", "latest"));
        assert_eq!(split("localhost:5000/base:v1"), ("localhost:5000/base", "v1"));
        assert_eq!(split("base"), ("base", "latest"));
    }

    #[test]
    fn valid_references() {
        for ok in
            ["nodeimg/base:abc", "localhost:5000/kind/base:v1", "base", "registry.k8s.io/pause:3.9", "a.b/c"]
        {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "Base", "base:", "/base", "base/", "base:-x", "a//b"] {
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
    }
}
