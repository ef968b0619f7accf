use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CommitContainerOptions, ContainerArchiveInfoOptions, CreateContainerOptions, ListContainersOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures_util::Stream;

use super::error::{Daemon, Error};
use super::{Docker, LABEL_BUILD, LABEL_CONTAINER, LABEL_HOST, LABEL_PID, LABEL_PROCESS, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgroupNs {
    #[default]
    Daemon,
    Private,
    Host,
}

/// What to run, in nodeimg's terms; turned into the Engine API's body in one place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub tty: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub tmpfs: Vec<String>,
    /// Anonymous volumes (container paths).
    pub volumes: Vec<String>,
    /// `host:container[:mode]` bind mounts.
    pub binds: Vec<String>,
    pub cgroupns: CgroupNs,
    pub device_cgroup_rules: Vec<String>,
    pub network_mode: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: HashMap<String, String>,
    /// `--restart=on-failure:N` (kind: 1).
    pub restart_on_failure: Option<i64>,
    /// `--init` / `--init=false`; `None` leaves the daemon's default.
    pub init: Option<bool>,
}

impl ContainerSpec {
    /// A container that idles so the pipeline can exec into it.
    pub fn idle(image: &str) -> Self {
        Self {
            image: image.to_owned(),
            entrypoint: Some(vec!["sleep".into(), "infinity".into()]),
            ..Self::default()
        }
    }

    /// The Engine API body, with this run's labels added to the spec's own.
    pub fn to_body(&self, run_labels: HashMap<String, String>) -> ContainerCreateBody {
        let mut labels = self.labels.clone();
        labels.extend(run_labels);
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let host_config = HostConfig {
            privileged: Some(self.privileged),
            cap_add: list(&self.cap_add),
            cap_drop: list(&self.cap_drop),
            security_opt: list(&self.security_opt),
            tmpfs: (!self.tmpfs.is_empty())
                .then(|| self.tmpfs.iter().map(|p| (p.clone(), String::new())).collect()),
            binds: list(&self.binds),
            cgroupns_mode: match self.cgroupns {
                CgroupNs::Daemon => None,
                CgroupNs::Private => Some(HostConfigCgroupnsModeEnum::PRIVATE),
                CgroupNs::Host => Some(HostConfigCgroupnsModeEnum::HOST),
            },
            device_cgroup_rules: list(&self.device_cgroup_rules),
            network_mode: self.network_mode.clone(),
            restart_policy: self.restart_on_failure.map(|n| RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(n),
            }),
            init: self.init,
            ..HostConfig::default()
        };
        ContainerCreateBody {
            image: Some(super::engine::engine_form(&self.image).to_owned()),
            hostname: self.hostname.clone(),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            env: list(&self.env),
            tty: Some(self.tty),
            volumes: list(&self.volumes),
            stop_signal: self.stop_signal.clone(),
            labels: Some(labels),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        }
    }
}

/// A container found by label.
#[derive(Clone, Debug)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub state: String,
    pub run_id: String,
    pub pid: Option<u32>,
    pub host: Option<String>,
    /// Kept on purpose (`--keep-container`): the cleanup guard leaves it, `clean` does not.
    pub keep: bool,
    /// The process token of the nodeimg process that created it.
    pub process: Option<String>,
    /// A node sharing the host's cgroup namespace: the kubelet's cgroup root there (see
    /// `node::release_host_cgroups`).
    pub host_cgroups: Option<String>,
    /// Every label, for callers that look at another's (kind's role).
    pub labels: HashMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerNetwork {
    /// The container's IPv4 address on its (first) network; none with host networking.
    pub ip: Option<String>,
    /// Whether it shares the host's cgroup namespace (then its cgroups are the host's).
    pub host_cgroupns: bool,
}

impl Docker {
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let options = CreateContainerOptions { name: spec.name.clone(), ..Default::default() };
        let mut body = spec.to_body(self.labels.container_map());
        // Podman mounts anonymous volumes nosuid,nodev: see volume.rs.
        let mut named = Vec::new();
        if self.engine.is_podman() && !spec.volumes.is_empty() {
            named = self.named_volumes(&spec.volumes).await?;
            body.volumes = None;
            if let Some(host) = body.host_config.as_mut() {
                host.binds.get_or_insert_with(Vec::new).extend(named.iter().cloned());
            }
        }
        match self.client.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(e) => {
                self.remove_volumes(&named).await;
                Err(Error::CreateContainer { image: spec.image.clone(), source: Daemon(e) })
            }
        }
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        self.client.start_container(id, None).await.map_err(|e| {
            let source = Daemon(e);
            if self.engine.is_podman() && Error::is_rlimit_refused(&source) {
                Error::PodmanLimits { id: short(id).into() }
            } else {
                Error::StartContainer { id: short(id).into(), source }
            }
        })
    }

    /// Force-removes a container and its anonymous volumes (on Podman, the named volumes
    /// nodeimg made for it); one already gone is fine. When
    /// a removal is already under way (a guard's and the sweep's met), waits until it is
    /// gone, so "removed" is true when this returns.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        let volumes = self.own_volumes_of(id).await;
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => {
                self.remove_volumes(&volumes).await;
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if removal_in_progress(&e) => {
                for _ in 0..300 {
                    if !self.container_exists(id).await? {
                        return Ok(());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(Error::RemoveContainer { id: short(id).into(), source: Daemon(e) })
            }
            Err(e) => Err(Error::RemoveContainer { id: short(id).into(), source: Daemon(e) }),
        }
    }

    pub async fn container_exists(&self, id: &str) -> Result<bool> {
        match self.client.inspect_container(id, None).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(inspect_err(id, e)),
        }
    }

    pub async fn container_running(&self, id: &str) -> Result<bool> {
        let info = self.client.inspect_container(id, None).await.map_err(|e| inspect_err(id, e))?;
        Ok(info.state.and_then(|s| s.running).unwrap_or(false))
    }

    /// Where a running container is reachable and which cgroup namespace it got.
    pub async fn container_network(&self, id: &str) -> Result<ContainerNetwork> {
        let info = self.client.inspect_container(id, None).await.map_err(|e| inspect_err(id, e))?;
        let settings = info.network_settings.unwrap_or_default();
        let ip = settings
            .networks
            .unwrap_or_default()
            .into_values()
            .filter_map(|n| n.ip_address)
            .find(|ip| !ip.is_empty());
        let host_cgroupns = info
            .host_config
            .and_then(|h| h.cgroupns_mode)
            .is_some_and(|m| m == HostConfigCgroupnsModeEnum::HOST);
        Ok(ContainerNetwork { ip, host_cgroupns })
    }

    /// Containers created by nodeimg (any run, or the given one), running or not.
    pub async fn list_containers(&self, run_id: Option<&str>) -> Result<Vec<ContainerSummary>> {
        self.list_containers_by(LABEL_CONTAINER, run_id).await
    }

    /// Containers with a non-blank `key` (equal to `value` if given). The Dockerfile builder's
    /// intermediate containers carry the image labels of the build, so they are found by
    /// the image's run label.
    pub async fn list_containers_by(&self, key: &str, value: Option<&str>) -> Result<Vec<ContainerSummary>> {
        let label = match value {
            Some(v) => format!("{key}={v}"),
            None => key.to_owned(),
        };
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![label])])),
            ..Default::default()
        };
        let found = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::ListContainers { source: Daemon(e) })?;
        Ok(found
            .into_iter()
            // A blank one came from an image: a container nodeimg did not create.
            .filter(|c| c.labels.as_ref().and_then(|l| l.get(key)).is_some_and(|v| !v.is_empty()))
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                ContainerSummary {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.first().cloned())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_owned(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    run_id: labels.get(LABEL_BUILD).cloned().unwrap_or_default(),
                    pid: labels.get(LABEL_PID).and_then(|p| p.parse().ok()),
                    host: labels.get(LABEL_HOST).cloned(),
                    keep: labels.contains_key(super::LABEL_KEEP),
                    process: labels.get(LABEL_PROCESS).cloned(),
                    host_cgroups: labels.get(super::LABEL_HOST_CGROUPS).map(|root| {
                        // Nodes labelled before roots were per node say "true".
                        if root == "true" { "kubelet".to_owned() } else { root.clone() }
                    }),
                    labels: labels.clone(),
                }
            })
            .collect())
    }

    /// Extracts a tar stream at `path` inside the container. The stream is sent as it is
    /// produced; nothing is buffered whole.
    pub async fn upload<S>(&self, id: &str, path: &str, tar: S) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let options = UploadToContainerOptions { path: path.to_owned(), ..Default::default() };
        self.client
            .upload_to_container(id, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(|e| Error::Upload { id: short(id).into(), path: path.into(), source: Daemon(e) })
    }

    /// Whether `path` exists in the container's filesystem (a created container will do: the
    /// image need not have a shell to look with). A symlink counts as there.
    pub async fn path_exists(&self, id: &str, path: &str) -> Result<bool> {
        let options = ContainerArchiveInfoOptions { path: path.to_owned() };
        match self.client.get_container_archive_info(id, Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(Error::StatPath { id: short(id).into(), path: path.into(), source: Daemon(e) }),
        }
    }

    /// Commits the container as an untagged image with Dockerfile-style `changes` and this
    /// run's labels (replacing those the image inherited, so `clean` judges it by this run);
    /// returns the image ID. Tagging is a separate step so a failed build never holds the tag.
    pub async fn commit(&self, id: &str, changes: &[String]) -> Result<String> {
        let options = CommitContainerOptions {
            container: Some(id.to_owned()),
            pause: false,
            changes: Some(changes.iter().cloned().chain(self.label_changes()).collect::<Vec<_>>().join("\n")),
            ..Default::default()
        };
        let committed = self
            .client
            .commit_container(options, bollard::models::ContainerConfig::default())
            .await
            .map_err(|e| Error::Commit { id: short(id).into(), source: Daemon(e) })?;
        if committed.id.is_empty() {
            return Err(Error::Protocol {
                action: format!("committing container {}", short(id)),
                problem: "the daemon returned no image ID",
            });
        }
        Ok(committed.id)
    }
}

fn inspect_err(id: &str, e: bollard::errors::Error) -> Error {
    Error::InspectContainer { id: short(id).into(), source: Daemon(e) }
}

fn removal_in_progress(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
        if message.contains("already in progress"))
}

pub(super) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

pub fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_run_labels_and_host_settings() {
        let spec = ContainerSpec {
            image: "img:1".into(),
            privileged: true,
            tmpfs: vec!["/run".into()],
            volumes: vec!["/var".into()],
            cgroupns: CgroupNs::Host,
            labels: HashMap::from([("mine".to_owned(), "yes".to_owned())]),
            ..ContainerSpec::idle("img:1")
        };
        let body = spec.to_body(HashMap::from([(LABEL_BUILD.to_owned(), "run-7".to_owned())]));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_BUILD], "run-7");
        assert_eq!(labels["mine"], "yes");
        assert_eq!(body.entrypoint.unwrap(), vec!["sleep", "infinity"]);
        assert_eq!(body.volumes.unwrap(), vec!["/var"]);
        let host = body.host_config.unwrap();
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.tmpfs.unwrap()["/run"], "");
        assert_eq!(host.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::HOST));
        assert_eq!(host.cap_add, None, "empty lists are left to the daemon's defaults");
    }

    #[test]
    fn short_ids_drop_the_digest_prefix() {
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }
}
