//! The one place that speaks bollard. Everything else sees plain Rust types and a typed
//! error per operation, so the pipeline steps stay readable, can be unit-tested against
//! specs rather than a daemon, and never match on the daemon's words.

mod container;
mod engine;
mod error;
mod exec;
mod guard;
mod image;
mod labels;
mod network;
mod volume;

pub use container::{CgroupNs, ContainerNetwork, ContainerSpec, ContainerSummary, short as short_id};
pub use engine::{Engine, EngineKind, MIN_API, familiar};
pub use error::{Daemon, Error};
pub use exec::ExecOutput;
pub use guard::{ContainerGuard, ImageGuard};
pub use image::{ImageInfo, quote};
pub use labels::{
    LABEL_BUILD, LABEL_CONTAINER, LABEL_HOST, LABEL_HOST_CGROUPS, LABEL_IMAGE_BUILD, LABEL_IMAGE_HOST,
    LABEL_IMAGE_PID, LABEL_IMAGE_PROCESS, LABEL_KEEP, LABEL_PID, LABEL_PROCESS, LABEL_VERSION, Labels,
    hostname as labels_hostname,
};
pub use network::NetworkSummary;
pub use volume::VolumeSummary;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The daemon the docker CLI would use: `DOCKER_HOST`, else the default local socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// A connection to the Docker engine that labels everything it creates.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    host: String,
    engine: Engine,
    labels: Labels,
    /// Removals that guards started when dropped, for the command-level guard to wait for.
    cleanups: guard::Cleanups,
}

impl Docker {
    /// Connects like the docker CLI (`DOCKER_HOST`, else the default socket).
    pub async fn connect(labels: Labels) -> Result<Self> {
        Self::connect_to(&docker_host(), labels).await
    }

    /// Connects to `host` (`unix:///…`, `tcp://…`), negotiates the API version (engines as
    /// old as API 1.41 reject bollard's newer default) and asks which engine answers, so a
    /// dead daemon, or one too old for nodeimg, fails here, early.
    pub async fn connect_to(host: &str, labels: Labels) -> Result<Self> {
        let unreachable = |reason: String| Error::Unreachable { host: host.to_owned(), reason };
        let client = bollard::Docker::connect_with_host(host).map_err(|e| unreachable(e.to_string()))?;
        // A daemon that does not answer within 20 s is as good as absent.
        let client = client.with_timeout(std::time::Duration::from_secs(20));
        let client =
            client.negotiate_version().await.map_err(|e| unreachable(crate::error::root_cause(&e)))?;
        let version = client.version().await.map_err(|e| unreachable(crate::error::root_cause(&e)))?;
        let engine = Engine::from_version(&version);
        if !engine.api_supported() {
            return Err(Error::ApiTooOld { host: host.to_owned(), engine });
        }
        // bollard's default of 2 minutes per request would cut off long but healthy work:
        // loading a multi-GB image, committing a large node, a Dockerfile build. Ctrl-C
        // still ends anything at once.
        let client = client.with_timeout(std::time::Duration::from_secs(3600));
        Ok(Self { client, host: host.to_owned(), engine, labels, cleanups: Default::default() })
    }

    /// Which engine answers, and its versions.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The containers this process created, found by the process's own label rather than by
    /// a list kept in memory (a container whose create request was cut short by Ctrl-C is
    /// found too). Another process sharing the run id (`NODEIMG_RUN_ID`) keeps its own;
    /// containers kept on purpose (`--keep-container`) are left out.
    pub async fn own_containers(&self) -> Result<Vec<ContainerSummary>> {
        let mine = self.list_containers(Some(&self.labels.run_id)).await?;
        Ok(mine
            .into_iter()
            .filter(|c| !c.keep && c.process.as_deref() == Some(&self.labels.process))
            .collect())
    }

    /// Removes every container of this connection's run id, whichever process made it (for
    /// tests and tools that own the whole run).
    pub async fn remove_run_containers(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for c in self.list_containers(Some(&self.labels.run_id)).await? {
            self.remove_container(&c.id).await?;
            removed.push(c.name);
        }
        Ok(removed)
    }
}
