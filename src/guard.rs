//! The cleanup guard: whatever a command creates in Docker is removed when it ends, on
//! success, on error, and on SIGINT/SIGTERM.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};

use crate::docker::Docker;
use crate::progress::Reporter;

#[derive(Debug, thiserror::Error)]
#[error("interrupted by {name}; the run's containers were removed")]
pub struct Interrupted {
    pub name: &'static str,
    pub exit_code: u8,
}

/// Runs `work`, then removes the run's containers (by label), whatever the outcome. A
/// signal cancels `work` (dropping it, which also kills and removes host-side scratch).
pub async fn guarded<T>(
    docker: &Docker,
    reporter: &Reporter,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let outcome = tokio::select! {
        result = work => result,
        _ = sigint.recv() => Err(Interrupted { name: "SIGINT", exit_code: 130 }.into()),
        _ = sigterm.recv() => Err(Interrupted { name: "SIGTERM", exit_code: 143 }.into()),
    };
    match tokio::time::timeout(Duration::from_secs(60), docker.remove_run_containers()).await {
        Ok(Ok(removed)) if !removed.is_empty() => {
            reporter.detail(format!("removed containers: {}", removed.join(", ")))
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => reporter.warn(format!("{e}; `nodeimg clean` removes leftovers")),
        Err(_) => reporter.warn("removing containers timed out; `nodeimg clean` removes leftovers"),
    }
    outcome
}
