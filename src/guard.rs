//! The command-level cleanup guard: whatever a command creates in Docker is removed when it
//! ends, on success, on error, and on SIGINT/SIGTERM, and the user is told what was removed
//! and what was not.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};

use crate::docker::Docker;
use crate::error::Interrupted;
use crate::progress::Reporter;

/// Runs `work`, then removes this process's containers (by label), whatever the outcome. A
/// signal cancels `work` by dropping it, which also removes host-side scratch (temp dirs,
/// part files) and stops child processes; the sweep then removes the containers.
pub async fn guarded<T>(
    docker: &Docker,
    reporter: &Reporter,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let outcome = tokio::select! {
        result = work => Ok(result),
        _ = sigint.recv() => Err(("SIGINT", 130)),
        _ = sigterm.recv() => Err(("SIGTERM", 143)),
    };
    let swept = sweep(docker).await;
    match outcome {
        Ok(result) => {
            match &swept {
                Sweep::Removed(names) if !names.is_empty() => {
                    reporter.detail(format!("removed containers: {}", names.join(", ")))
                }
                Sweep::Removed(_) => {}
                Sweep::Failed(_) => reporter.warn(swept.describe()),
            }
            result
        }
        Err((name, exit_code)) => Err(Interrupted { name, exit_code, cleanup: swept.describe() }.into()),
    }
}

enum Sweep {
    Removed(Vec<String>),
    Failed(String),
}

impl Sweep {
    fn describe(&self) -> String {
        match self {
            Sweep::Removed(names) if names.is_empty() => "no containers were left to remove".into(),
            Sweep::Removed(names) => format!("removed containers {}", names.join(", ")),
            Sweep::Failed(why) => {
                format!("could NOT remove its containers ({why}); `nodeimg clean` removes them")
            }
        }
    }
}

async fn sweep(docker: &Docker) -> Sweep {
    docker.finish_cleanups(Duration::from_secs(30)).await;
    let work = async {
        let mut removed = Vec::new();
        for c in docker.own_containers().await? {
            if c.host_cgroups {
                // Best effort: a node that shared the host's cgroup namespace leaves its pods'
                // cgroups on the host unless they are removed from inside before it goes.
                crate::node::release_host_cgroups(docker, &c.id).await.ok();
            }
            docker.remove_container(&c.id).await?;
            removed.push(c.name);
        }
        anyhow::Ok(removed)
    };
    match tokio::time::timeout(Duration::from_secs(60), work).await {
        Ok(Ok(removed)) => Sweep::Removed(removed),
        Ok(Err(e)) => Sweep::Failed(crate::error::one_line(&e)),
        Err(_) => Sweep::Failed("timed out after 60 s".into()),
    }
}
