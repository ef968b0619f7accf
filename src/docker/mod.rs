//! The one place that speaks bollard. Everything else sees plain Rust types, so the pipeline
//! steps stay readable and can be unit-tested against specs rather than a daemon.

mod container;
mod exec;
mod image;
mod labels;

pub use container::{CgroupNs, ContainerNetwork, ContainerSpec, ContainerSummary, short as short_id};
pub use exec::ExecOutput;
pub use image::{ImageInfo, quote, split_reference, split_reference_opt};
pub use labels::{
    LABEL_BUILD, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_VERSION, Labels, hostname as labels_hostname,
};

use bollard::errors::Error as BollardError;

/// The daemon the docker CLI would use: `DOCKER_HOST`, else the default local socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the Docker daemon at {host}: {reason} (is dockerd running? DOCKER_HOST selects another daemon)"
    )]
    Unreachable { host: String, reason: String },
    #[error("{action}: {message}")]
    Api { action: String, message: String },
    #[error("{action}: {message}")]
    Io { action: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a bollard error into one line naming what we were doing.
fn api(action: impl Into<String>) -> impl FnOnce(BollardError) -> Error {
    let action = action.into();
    move |err| Error::Api { action, message: describe(&err) }
}

fn describe(err: &BollardError) -> String {
    match err {
        BollardError::DockerResponseServerError { status_code, message } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        BollardError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

fn is_not_found(err: &BollardError) -> bool {
    matches!(err, BollardError::DockerResponseServerError { status_code: 404, .. })
}

/// A connection to the Docker engine that labels everything it creates.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    host: String,
    labels: Labels,
}

impl Docker {
    /// Connects like the docker CLI, negotiates the API version (engines as old as API 1.41
    /// reject bollard's newer default) and pings, so a dead daemon fails here, early.
    pub async fn connect(labels: Labels) -> Result<Self> {
        let host = docker_host();
        let unreachable = |reason: String| Error::Unreachable { host: host.clone(), reason };
        let client = bollard::Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
        // A daemon that does not answer within 20 s is as good as absent.
        let client = client.with_timeout(std::time::Duration::from_secs(20));
        let client = client.negotiate_version().await.map_err(|e| unreachable(crate::root_cause(&e)))?;
        client.ping().await.map_err(|e| unreachable(crate::root_cause(&e)))?;
        // bollard's default of 2 minutes per request would cut off long but healthy work:
        // loading a multi-GB image, committing a large node, a Dockerfile build. Ctrl-C
        // still ends anything at once.
        let client = client.with_timeout(std::time::Duration::from_secs(3600));
        Ok(Self { client, host, labels })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Removes every container this run created: the cleanup guard's work. Finds them by the
    /// run's label rather than by a list kept in memory, so a container whose create request
    /// was cut short by Ctrl-C is found too.
    pub async fn remove_run_containers(&self) -> Result<Vec<String>> {
        let mine = self.list_containers(Some(&self.labels.run_id)).await?;
        let mut removed = Vec::new();
        for c in mine.into_iter().filter(|c| !c.keep) {
            self.remove_container(&c.id).await?;
            removed.push(c.name);
        }
        Ok(removed)
    }
}
