//! One error variant per Engine API operation. The daemon's answer is kept whole in
//! [`Daemon`] (status code and the bollard error); the few cases callers must tell apart
//! are answered by methods here, the only code that reads the daemon's words.

use bollard::errors::Error as BollardError;

/// What the daemon (or the connection to it) said.
#[derive(Debug)]
pub struct Daemon(pub BollardError);

impl Daemon {
    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match &self.0 {
            BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
            _ => None,
        }
    }

    /// An error reported inside a progress stream (a push, a load).
    pub fn in_stream(message: impl Into<String>) -> Self {
        Daemon(BollardError::DockerStreamError { error: message.into() })
    }

    fn text(&self) -> String {
        match &self.0 {
            BollardError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
            BollardError::DockerStreamError { error } => error.trim().to_owned(),
            other => crate::error::root_cause(other),
        }
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status() {
            Some(code) => write!(f, "{} (HTTP {code})", self.text()),
            None => f.write_str(&self.text()),
        }
    }
}

// The bollard error is the cause; its own sources are already in `text()`.
impl std::error::Error for Daemon {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the Docker daemon at {host}: {reason} (is dockerd running? DOCKER_HOST selects another daemon)"
    )]
    Unreachable { host: String, reason: String },
    #[error(
        "the engine at {host} is {engine}: nodeimg needs Engine API {}.{} or newer (Docker 20.10, Podman 4.0)",
        super::MIN_API.0, super::MIN_API.1
    )]
    ApiTooOld { host: String, engine: super::Engine },
    #[error("creating a container from {image}")]
    CreateContainer { image: String, source: Daemon },
    #[error("starting container {id}")]
    StartContainer { id: String, source: Daemon },
    /// Podman gives every container RLIMIT_NOFILE 1048576 and RLIMIT_NPROC 4194304 unless
    /// configured otherwise; a host that withholds CAP_SYS_RESOURCE refuses to raise them.
    #[error(
        "starting container {id}: Podman cannot raise the container's open-file and process limits to its defaults (the host withholds CAP_SYS_RESOURCE); set `default_ulimits` in the service's containers.conf to the host's limits"
    )]
    PodmanLimits { id: String },
    #[error("removing container {id}")]
    RemoveContainer { id: String, source: Daemon },
    #[error("inspecting container {id}")]
    InspectContainer { id: String, source: Daemon },
    #[error("listing nodeimg containers")]
    ListContainers { source: Daemon },
    #[error("copying files to {path} in container {id}")]
    Upload { id: String, path: String, source: Daemon },
    #[error("looking for {path} in container {id}")]
    StatPath { id: String, path: String, source: Daemon },
    #[error("committing container {id}")]
    Commit { id: String, source: Daemon },
    #[error("inspecting image {name}")]
    InspectImage { name: String, source: Daemon },
    #[error("image {name} is pinned to {wanted}, but the image under that name has {found}")]
    DigestMismatch { name: String, wanted: String, found: String },
    #[error("importing the root filesystem as an image")]
    Import { source: Daemon },
    #[error("loading an image archive")]
    Load { source: Daemon },
    #[error("building the image")]
    Build { source: Daemon },
    #[error("tagging image {id} as {reference}")]
    Tag { id: String, reference: String, source: Daemon },
    #[error("removing image {name}")]
    RemoveImage { name: String, source: Daemon },
    #[error("listing images")]
    ListImages { source: Daemon },
    #[error("saving image {name}")]
    Save { name: String, source: Daemon },
    #[error("pulling {reference}")]
    Pull { reference: String, source: Daemon },
    #[error("pushing {reference}")]
    Push { reference: String, source: Daemon },
    #[error("creating network {name}")]
    CreateNetwork { name: String, source: Daemon },
    #[error("removing network {name}")]
    RemoveNetwork { name: String, source: Daemon },
    #[error("listing nodeimg networks")]
    ListNetworks { source: Daemon },
    #[error("creating volume {name}")]
    CreateVolume { name: String, source: Daemon },
    #[error("removing volume {name}")]
    RemoveVolume { name: String, source: Daemon },
    #[error("listing nodeimg volumes")]
    ListVolumes { source: Daemon },
    #[error("reading the log of container {id}")]
    Logs { id: String, source: Daemon },
    #[error("running `{cmd}` in container {id}")]
    Exec { cmd: String, id: String, source: Daemon },
    #[error("running `{cmd}` in container {id}: {what}")]
    ExecIo { cmd: String, id: String, what: &'static str, source: std::io::Error },
    /// The daemon answered, but not as the API says it should.
    #[error("{action}: {problem}")]
    Protocol { action: String, problem: &'static str },
}

impl Error {
    fn daemon(&self) -> Option<&Daemon> {
        use Error::*;
        match self {
            CreateContainer { source, .. }
            | StartContainer { source, .. }
            | RemoveContainer { source, .. }
            | InspectContainer { source, .. }
            | ListContainers { source }
            | Upload { source, .. }
            | StatPath { source, .. }
            | Commit { source, .. }
            | InspectImage { source, .. }
            | Import { source }
            | Load { source }
            | Build { source }
            | Tag { source, .. }
            | RemoveImage { source, .. }
            | ListImages { source }
            | Save { source, .. }
            | Pull { source, .. }
            | Push { source, .. }
            | CreateNetwork { source, .. }
            | RemoveNetwork { source, .. }
            | ListNetworks { source }
            | CreateVolume { source, .. }
            | RemoveVolume { source, .. }
            | ListVolumes { source }
            | Logs { source, .. }
            | Exec { source, .. } => Some(source),
            Unreachable { .. }
            | ApiTooOld { .. }
            | PodmanLimits { .. }
            | ExecIo { .. }
            | Protocol { .. }
            | DigestMismatch { .. } => None,
        }
    }

    /// The HTTP status the daemon refused the request with.
    pub fn status(&self) -> Option<u16> {
        self.daemon().and_then(Daemon::status)
    }

    /// A daemon that may not grant `--privileged` (CAP_SYS_RESOURCE missing: runc reports
    /// "unable to apply caps" when the container starts).
    pub fn is_privileged_refused(&self) -> bool {
        matches!(self, Error::StartContainer { source, .. } if source.text().contains("unable to apply caps"))
    }

    /// Podman's runtime could not apply the rlimits Podman asked for.
    pub(super) fn is_rlimit_refused(source: &Daemon) -> bool {
        source.text().contains("error setting rlimit")
    }

    /// A load that failed because of the archive (cut short, not a tar, no manifest), not
    /// because of the daemon (a full disk, a missing layer directory of its own).
    pub fn is_bad_archive(&self) -> bool {
        let Error::Load { source } = self else { return false };
        let text = source.text();
        let missing_entry = text.contains("no such file or directory")
            && (text.contains("/manifest.json:")
                || text.contains("/repositories:")
                || text.contains("/json:"));
        missing_entry
            || text.contains("manifest.json")
            || text.contains("unexpected EOF")
            || text.contains("invalid tar header")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> Daemon {
        Daemon(BollardError::DockerResponseServerError { status_code, message: message.into() })
    }

    #[test]
    fn messages_name_the_operation_then_the_daemon() {
        let err =
            Error::CreateContainer { image: "img:1".into(), source: server(404, "No such image: img:1\n") };
        assert_eq!(
            format!("{:#}", anyhow::Error::from(err)),
            "creating a container from img:1: No such image: img:1 (HTTP 404)"
        );
        let err = Error::Push { reference: "r/x:1".into(), source: Daemon::in_stream("denied") };
        assert_eq!(err.status(), None);
        assert_eq!(format!("{:#}", anyhow::Error::from(err)), "pushing r/x:1: denied");
    }

    #[test]
    fn recognises_the_capabilities_refusal_on_start_only() {
        let caps = "OCI runtime create failed: unable to apply caps: operation not permitted";
        let start = Error::StartContainer { id: "c".into(), source: server(500, caps) };
        assert!(start.is_privileged_refused());
        assert_eq!(start.status(), Some(500));
        let create = Error::CreateContainer { image: "i".into(), source: server(500, caps) };
        assert!(!create.is_privileged_refused());
        let other = Error::StartContainer { id: "c".into(), source: server(404, "no such image") };
        assert!(!other.is_privileged_refused());
    }

    #[test]
    fn podmans_refusals_are_recognised() {
        let caps = "runc: runc create failed: unable to start container process: unable to apply caps: operation not permitted: OCI permission denied";
        assert!(Error::StartContainer { id: "c".into(), source: server(500, caps) }.is_privileged_refused());
        let limits = "runc: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 7: operation not permitted: OCI permission denied";
        assert!(Error::is_rlimit_refused(&server(500, limits)));
        assert!(!Error::is_rlimit_refused(&server(500, caps)));
        let line = format!("{:#}", anyhow::Error::from(Error::PodmanLimits { id: "c".into() }));
        assert!(line.contains("default_ulimits") && !line.contains("OCI"), "{line}");
    }

    #[test]
    fn bad_archives_are_told_from_daemon_trouble() {
        let load = |m: &str| Error::Load { source: server(500, m) };
        assert!(load("unexpected EOF").is_bad_archive());
        assert!(load("archive/tar: invalid tar header").is_bad_archive());
        assert!(
            load("open /var/lib/docker/tmp/docker-import-1/repositories: no such file or directory")
                .is_bad_archive()
        );
        assert!(
            load("open /var/lib/docker/tmp/docker-import-2/manifest.json: no such file or directory")
                .is_bad_archive()
        );
        // The daemon's own storage going missing is not the archive's fault.
        assert!(!load("stat /var/lib/docker/overlay2/3f2a/diff: no such file or directory").is_bad_archive());
        assert!(!load("write /var/lib/docker/tmp/x: no space left on device").is_bad_archive());
        assert!(
            !Error::Pull { reference: "x".into(), source: server(500, "unexpected EOF") }.is_bad_archive()
        );
    }
}
