//! Volumes for a node's `/var` on Podman. Docker mounts an anonymous volume as the image's
//! directory was (suid, devices allowed); Podman mounts every volume `nosuid,nodev` unless
//! told otherwise, and only a named volume takes options. A node needs both: containerd
//! unpacks images with setuid binaries and device nodes under /var. So on Podman, as kind
//! does there, each anonymous volume of a spec becomes a named volume with this run's labels
//! mounted `suid,exec,dev`, removed with its container (or by `nodeimg clean`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{ListVolumesOptions, RemoveVolumeOptions};

use super::container::is_not_found;
use super::error::{Daemon, Error};
use super::{Docker, LABEL_BUILD, LABEL_HOST, LABEL_PID, LABEL_PROCESS, Result};

/// The names of the volumes nodeimg makes start so; nothing else of the engine's is removed
/// with a container.
const PREFIX: &str = "nodeimg-vol-";

/// A volume found by label.
#[derive(Clone, Debug)]
pub struct VolumeSummary {
    pub name: String,
    pub run_id: String,
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub process: Option<String>,
}

impl Docker {
    /// Named volumes standing in for the anonymous `paths` (Podman); returns the binds that
    /// mount them.
    pub(super) async fn named_volumes(&self, paths: &[String]) -> Result<Vec<String>> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let mut binds = Vec::new();
        for path in paths {
            let name = format!("{PREFIX}{}-{}", self.labels.process, COUNT.fetch_add(1, Ordering::Relaxed));
            let request = VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(self.labels.to_map()),
                ..VolumeCreateRequest::default()
            };
            if let Err(e) = self.client.create_volume(request).await {
                self.remove_volumes(&binds).await;
                return Err(Error::CreateVolume { name, source: Daemon(e) });
            }
            binds.push(format!("{name}:{path}:suid,exec,dev"));
        }
        Ok(binds)
    }

    /// The volumes nodeimg made for the container `id` (none on Docker).
    pub(super) async fn own_volumes_of(&self, id: &str) -> Vec<String> {
        if !self.engine.is_podman() {
            return Vec::new();
        }
        let Ok(info) = self.client.inspect_container(id, None).await else { return Vec::new() };
        info.mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.name)
            .filter(|name| name.starts_with(PREFIX))
            .collect()
    }

    /// Best effort, for the paths where a container is gone anyway: `clean` finds the rest.
    pub(super) async fn remove_volumes(&self, names_or_binds: &[String]) {
        for name in names_or_binds {
            let name = name.split(':').next().unwrap_or_default();
            self.remove_volume(name).await.ok();
        }
    }

    /// Removes a volume; one already gone is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        match self.client.remove_volume(name, None::<RemoveVolumeOptions>).await {
            Err(e) if !is_not_found(&e) => Err(Error::RemoveVolume { name: name.into(), source: Daemon(e) }),
            _ => Ok(()),
        }
    }

    /// Removes a volume unless a container uses it; `Ok(false)` when it is in use.
    pub async fn remove_unused_volume(&self, name: &str) -> Result<bool> {
        match self.client.remove_volume(name, None::<RemoveVolumeOptions>).await {
            Ok(()) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(false),
            Err(e) if is_not_found(&e) => Ok(true),
            Err(e) => Err(Error::RemoveVolume { name: name.into(), source: Daemon(e) }),
        }
    }

    /// Volumes created by nodeimg (any run, or the given one).
    pub async fn list_volumes(&self, run_id: Option<&str>) -> Result<Vec<VolumeSummary>> {
        let label = match run_id {
            Some(id) => format!("{LABEL_BUILD}={id}"),
            None => LABEL_BUILD.to_owned(),
        };
        let options =
            ListVolumesOptions { filters: Some(HashMap::from([("label".to_owned(), vec![label])])) };
        let found = self
            .client
            .list_volumes(Some(options))
            .await
            .map_err(|e| Error::ListVolumes { source: Daemon(e) })?;
        Ok(found
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeSummary {
                run_id: v.labels.get(LABEL_BUILD).cloned().unwrap_or_default(),
                pid: v.labels.get(LABEL_PID).and_then(|p| p.parse().ok()),
                host: v.labels.get(LABEL_HOST).cloned(),
                process: v.labels.get(LABEL_PROCESS).cloned(),
                name: v.name,
            })
            .collect())
    }
}
