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
    guarded_all(&[docker], reporter, work).await
}

/// [`guarded`] for work on several engines (`--engine ARCH=HOST`): each is swept.
pub async fn guarded_all<T>(
    dockers: &[&Docker],
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
    let mut swept = Sweep { removed: Vec::new(), failed: Vec::new() };
    for docker in dockers {
        let one = sweep(docker).await;
        swept.removed.extend(one.removed);
        swept.failed.extend(one.failed);
    }
    match outcome {
        Ok(result) => {
            if !swept.failed.is_empty() {
                reporter.warn(swept.describe());
            } else if !swept.removed.is_empty() {
                reporter.detail(swept.describe());
            }
            result
        }
        Err((name, exit_code)) => Err(Interrupted { name, exit_code, cleanup: swept.describe() }.into()),
    }
}

/// What the cleanup removed, and what it could not.
struct Sweep {
    removed: Vec<String>,
    failed: Vec<String>,
}

impl Sweep {
    fn describe(&self) -> String {
        let removed = if self.removed.is_empty() {
            "there was nothing to remove".to_owned()
        } else {
            format!("removed {}", self.removed.join(", "))
        };
        if self.failed.is_empty() {
            removed
        } else {
            format!("{removed}; could NOT remove {} (`nodeimg clean` will)", self.failed.join(", "))
        }
    }
}

async fn sweep(docker: &Docker) -> Sweep {
    let (mut removed, mut failed) = docker.finish_cleanups(Duration::from_secs(30)).await;
    let work = async {
        let mut swept = Vec::new();
        for c in docker.own_containers().await? {
            if let Some(root) = &c.host_cgroups {
                // Best effort: a node that shared the host's cgroup namespace leaves its pods'
                // cgroups on the host unless they are removed from inside before it goes.
                crate::node::release_host_cgroups(docker, &c.id, root).await.ok();
            }
            docker.remove_container(&c.id).await?;
            swept.push(format!("container {}", c.name));
        }
        for n in docker.own_networks().await? {
            docker.remove_network(&n.id).await?;
            swept.push(format!("network {}", n.name));
        }
        // Images this process committed that ended up with no tag (a check cut short while
        // its node still used the image) are unfinished work.
        let process = &docker.labels().process;
        for (id, labels) in docker.list_dangling_images().await? {
            if labels.get(crate::docker::LABEL_IMAGE_PROCESS) == Some(process)
                && docker.remove_unused_image(&id).await?
            {
                swept.push(format!("image {}", crate::docker::short_id(&id)));
            }
        }
        anyhow::Ok(swept)
    };
    match tokio::time::timeout(Duration::from_secs(60), work).await {
        Ok(Ok(swept)) => removed.extend(swept),
        Ok(Err(e)) => failed.push(format!("containers or images ({})", crate::error::one_line(&e))),
        Err(_) => failed.push("containers or images (timed out after 60 s)".into()),
    }
    Sweep { removed, failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_what_was_and_was_not_removed() {
        let sweep =
            Sweep { removed: vec!["container a".into(), "image nodeimg-verify:x".into()], failed: vec![] };
        assert_eq!(sweep.describe(), "removed container a, image nodeimg-verify:x");
        let sweep = Sweep { removed: vec![], failed: vec!["containers (timed out after 60 s)".into()] };
        assert_eq!(
            sweep.describe(),
            "there was nothing to remove; could NOT remove containers (timed out after 60 s) (`nodeimg clean` will)"
        );
    }
}
