//! User-defined networks (kind runs its nodes on one, the `kind` network) and following a
//! container's log (kind waits for systemd's boot line there).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{ListNetworksOptions, LogsOptions};
use futures_util::StreamExt;

use super::container::is_not_found;
use super::error::{Daemon, Error};
use super::{Docker, LABEL_BUILD, LABEL_HOST, LABEL_KEEP, LABEL_PID, LABEL_PROCESS, Result};

/// A network found by label.
#[derive(Clone, Debug)]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    pub run_id: String,
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub keep: bool,
    pub process: Option<String>,
}

impl Docker {
    /// A bridge network with masquerading, as kind creates its `kind` network; `labels` are
    /// added to this run's own.
    pub async fn create_network(&self, name: &str, labels: HashMap<String, String>) -> Result<String> {
        let mut all = self.labels.to_map();
        all.extend(labels);
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(
                "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                "true".to_owned(),
            )])),
            labels: Some(all),
            ..NetworkCreateRequest::default()
        };
        let created = self
            .client
            .create_network(request)
            .await
            .map_err(|e| Error::CreateNetwork { name: name.to_owned(), source: Daemon(e) })?;
        Ok(created.id)
    }

    /// Removes a network; one that is already gone is not an error.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        match self.client.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::RemoveNetwork { name: name.to_owned(), source: Daemon(e) }),
        }
    }

    /// Networks created by nodeimg (any run, or the given one).
    pub async fn list_networks(&self, run_id: Option<&str>) -> Result<Vec<NetworkSummary>> {
        let label = match run_id {
            Some(id) => format!("{LABEL_BUILD}={id}"),
            None => LABEL_BUILD.to_owned(),
        };
        let options =
            ListNetworksOptions { filters: Some(HashMap::from([("label".to_owned(), vec![label])])) };
        let found = self
            .client
            .list_networks(Some(options))
            .await
            .map_err(|e| Error::ListNetworks { source: Daemon(e) })?;
        Ok(found
            .into_iter()
            .map(|n| {
                let labels = n.labels.unwrap_or_default();
                NetworkSummary {
                    id: n.id.unwrap_or_default(),
                    name: n.name.unwrap_or_default(),
                    run_id: labels.get(LABEL_BUILD).cloned().unwrap_or_default(),
                    pid: labels.get(LABEL_PID).and_then(|p| p.parse().ok()),
                    host: labels.get(LABEL_HOST).cloned(),
                    keep: labels.contains_key(LABEL_KEEP),
                    process: labels.get(LABEL_PROCESS).cloned(),
                }
            })
            .collect())
    }

    /// The networks this process created and did not mark to keep.
    pub async fn own_networks(&self) -> Result<Vec<NetworkSummary>> {
        let mine = self.list_networks(Some(&self.labels.run_id)).await?;
        Ok(mine
            .into_iter()
            .filter(|n| !n.keep && n.process.as_deref() == Some(&self.labels.process))
            .collect())
    }

    /// Follows the container's log from its start until a line satisfies `matches` (then
    /// that line), the log ends (`None`), or `limit` passes (`None`).
    pub async fn wait_for_log_line(
        &self,
        id: &str,
        limit: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Option<String>> {
        let options = LogsOptions { follow: true, stdout: true, stderr: true, ..LogsOptions::default() };
        let mut logs = self.client.logs(id, Some(options));
        let follow = async {
            let mut partial = String::new();
            while let Some(chunk) = logs.next().await {
                let chunk = chunk.map_err(|e| Error::Logs { id: id.to_owned(), source: Daemon(e) })?;
                partial.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                while let Some(end) = partial.find(['\n', '\r']) {
                    let line: String = partial.drain(..=end).collect();
                    if matches(line.trim()) {
                        return Ok(Some(line.trim().to_owned()));
                    }
                }
            }
            Ok(matches(partial.trim()).then(|| partial.trim().to_owned()))
        };
        match tokio::time::timeout(limit, follow).await {
            Ok(found) => found,
            Err(_) => Ok(None),
        }
    }
}
