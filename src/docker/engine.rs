//! Which engine answers on the socket: Docker, or Podman through its Docker-compatible API.
//! Told from the version endpoint's components (Podman reports "Podman Engine"), so the few
//! places where the two differ can ask [`Engine::kind`] instead of guessing from errors.

use bollard::models::SystemVersion;

/// The oldest Engine API nodeimg speaks: cgroup namespace modes (`CgroupnsMode`) came with
/// 1.41 (Docker 20.10; Podman 3.x answers 1.40, Podman 4 answers 1.41).
pub const MIN_API: (u32, u32) = (1, 41);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Docker,
    Podman,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Engine {
    pub kind: EngineKind,
    /// The engine's own version (`20.10.24`, `4.3.1`).
    pub version: String,
    /// The Docker Engine API version it speaks (`1.41`).
    pub api_version: String,
    /// The machine's architecture, in Docker's words (`amd64`, `arm64`).
    pub arch: String,
}

impl Engine {
    pub fn from_version(v: &SystemVersion) -> Self {
        let podman = v.components.iter().flatten().find(|c| c.name == "Podman Engine");
        let kind = if podman.is_some() { EngineKind::Podman } else { EngineKind::Docker };
        let version = podman.map(|c| c.version.clone()).or_else(|| v.version.clone()).unwrap_or_default();
        let arch = v.arch.clone().unwrap_or_default();
        Engine { kind, version, api_version: v.api_version.clone().unwrap_or_default(), arch }
    }

    pub fn is_podman(&self) -> bool {
        self.kind == EngineKind::Podman
    }

    /// Whether the engine speaks at least [`MIN_API`]; an unreadable version does not.
    pub fn api_supported(&self) -> bool {
        let mut parts = self.api_version.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= MIN_API,
            _ => false,
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.kind {
            EngineKind::Docker => "Docker",
            EngineKind::Podman => "Podman",
        };
        write!(f, "{name} {} (API {})", self.version, self.api_version)
    }
}

/// The name a user would write for an image name the engine reports: Podman qualifies
/// every name (`docker.io/library/x`, `docker.io/x/y`, `localhost/x/y` for names without a
/// registry); Docker shows them without `docker.io/`.
pub fn familiar(name: &str) -> &str {
    for prefix in ["docker.io/library/", "docker.io/", "localhost/"] {
        if let Some(rest) = name.strip_prefix(prefix)
            && !rest.is_empty()
        {
            return rest;
        }
    }
    name
}

/// The form of a user's reference the engine resolves. Docker looks a pinned reference with a
/// tag (`x:1@sha256:…`) up by its digest alone, which only images pulled by digest have; nodeimg
/// checks the digest itself when it inspects the image ([`super::Docker::inspect_image`]) and then
/// names it by its tag. A reference with a digest and no tag is left to the engine.
pub fn engine_form(reference: &str) -> &str {
    match reference.split_once('@') {
        Some((name, _)) if crate::reference::ImageRef::parse(reference).is_ok_and(|r| r.tag().is_some()) => {
            name
        }
        _ => reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::SystemVersionComponents;

    fn version(components: &[(&str, &str)], api: &str) -> SystemVersion {
        SystemVersion {
            version: Some("20.10.24".into()),
            api_version: Some(api.into()),
            components: Some(
                components
                    .iter()
                    .map(|(name, version)| SystemVersionComponents {
                        name: (*name).into(),
                        version: (*version).into(),
                        details: None,
                    })
                    .collect(),
            ),
            ..SystemVersion::default()
        }
    }

    #[test]
    fn podman_is_told_by_its_component() {
        let podman = Engine::from_version(&version(&[("Podman Engine", "4.3.1"), ("Conmon", "2.1")], "1.41"));
        assert_eq!(podman.kind, EngineKind::Podman);
        assert_eq!(podman.to_string(), "Podman 4.3.1 (API 1.41)");
        let docker = Engine::from_version(&version(&[("Engine", "20.10.24"), ("containerd", "1.6")], "1.41"));
        assert_eq!(docker.kind, EngineKind::Docker);
        assert_eq!(docker.to_string(), "Docker 20.10.24 (API 1.41)");
        assert!(docker.api_supported());
    }

    #[test]
    fn old_or_unreadable_apis_are_not_supported() {
        for api in ["1.40", "1.9", "", "x.y", "1"] {
            assert!(!Engine::from_version(&version(&[], api)).api_supported(), "{api}");
        }
        assert!(Engine::from_version(&version(&[], "1.45")).api_supported());
        assert!(Engine::from_version(&version(&[], "2.0")).api_supported());
    }

    #[test]
    fn pinned_references_reach_the_engine_by_tag() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(engine_form(&format!("kindest/node:v1@{d}")), "kindest/node:v1");
        assert_eq!(engine_form(&format!("kindest/node@{d}")), format!("kindest/node@{d}"));
        assert_eq!(engine_form("localhost:5000/x:1"), "localhost:5000/x:1");
    }

    #[test]
    fn familiar_names_drop_what_podman_adds() {
        assert_eq!(familiar("localhost/nodeimg/base:1"), "nodeimg/base:1");
        assert_eq!(familiar("docker.io/library/debian:bookworm"), "debian:bookworm");
        assert_eq!(familiar("docker.io/kindest/node:v1"), "kindest/node:v1");
        assert_eq!(familiar("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(familiar("localhost:5000/x:1"), "localhost:5000/x:1");
    }
}
