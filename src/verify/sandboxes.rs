//! Pod sandboxes that die as soon as they start (a "pause" image that is not one: a stand-in
//! that exits, the wrong architecture) reach kubeadm only as a control plane that never comes
//! up, minutes later. Watching containerd's sandboxes names the cause within seconds.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::docker::{Docker, short_id};
use crate::node::containerd;

const SANDBOXES: [&str; 6] =
    ["ctr", "-n", "k8s.io", "containers", "ls", "labels.\"io.cri-containerd.kind\"==sandbox"];
const TASKS: [&str; 5] = ["ctr", "-n", "k8s.io", "tasks", "ls"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub total: usize,
    /// Sandboxes whose task is not running.
    pub dead: usize,
}

impl Count {
    /// Enough sandboxes to tell, and not one of them running.
    fn all_dead(self) -> bool {
        self.total >= 3 && self.dead == self.total
    }
}

/// From `ctr containers ls` (CONTAINER IMAGE RUNTIME) and `ctr tasks ls` (TASK PID STATUS).
pub fn count(containers: &str, tasks: &str) -> Count {
    let status: HashMap<&str, &str> = tasks
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            Some((cols.next()?, cols.nth(1)?))
        })
        .collect();
    let ids: Vec<&str> = containers.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    let dead = ids.iter().filter(|id| status.get(*id) != Some(&"RUNNING")).count();
    Count { total: ids.len(), dead }
}

/// The digest `ctr images ls` (REF TYPE DIGEST ...) gives `image`.
pub fn digest_of(images_ls: &str, image: &str) -> Option<String> {
    images_ls.lines().skip(1).find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next()? == image).then(|| cols.nth(1).map(str::to_owned)).flatten()
    })
}

/// Returns (as an error) once every pod sandbox has died on two checks in a row; never
/// returns otherwise. Meant to race the stage it watches.
pub async fn watch(docker: &Docker, id: &str) -> anyhow::Error {
    let mut strikes = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let Ok(now) = check(docker, id).await else { continue };
        strikes = if now.all_dead() { strikes + 1 } else { 0 };
        if strikes >= 2 {
            return describe(docker, id, now).await;
        }
    }
}

async fn check(docker: &Docker, id: &str) -> Result<Count> {
    let containers = docker.exec(id, &SANDBOXES).await?;
    let tasks = docker.exec(id, &TASKS).await?;
    Ok(count(&containers.stdout, &tasks.stdout))
}

async fn describe(docker: &Docker, id: &str, count: Count) -> anyhow::Error {
    let config = containerd::read_config(docker, id).await;
    let image = match config.and_then(|c| Ok(c.sandbox_image()?)) {
        Ok(image) => image,
        Err(err) => return err.context("every pod sandbox exited as soon as it started"),
    };
    let canonical = crate::reference::normalize(&image);
    let listed = docker.exec(id, &["ctr", "-n", "k8s.io", "images", "ls"]).await.map(|o| o.stdout);
    let digest =
        listed.ok().and_then(|l| digest_of(&l, &canonical)).unwrap_or_else(|| "not in the node".into());
    anyhow!(
        "every pod sandbox exited as soon as it started ({} of {}): the sandbox image {image} ({}) does not run as a pause image (a stand-in? the wrong architecture?)",
        count.dead,
        count.total,
        short_id(&digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINERS: &str = "CONTAINER    IMAGE                        RUNTIME\n\
        aaa    registry.k8s.io/pause:3.9    io.containerd.runc.v2\n\
        bbb    registry.k8s.io/pause:3.9    io.containerd.runc.v2\n\
        ccc    registry.k8s.io/pause:3.9    io.containerd.runc.v2\n";

    #[test]
    fn sandboxes_without_a_running_task_are_dead() {
        let tasks = "TASK    PID     STATUS\naaa     101     STOPPED\nbbb     102     STOPPED\n";
        let c = count(CONTAINERS, tasks);
        assert_eq!(c, Count { total: 3, dead: 3 });
        assert!(c.all_dead());
        let tasks = "TASK    PID     STATUS\naaa     101     RUNNING\nbbb     102     STOPPED\n";
        assert!(!count(CONTAINERS, tasks).all_dead());
        assert!(!count("CONTAINER IMAGE RUNTIME\n", "TASK PID STATUS\n").all_dead(), "no sandboxes yet");
    }

    #[test]
    fn digests_are_read_from_ctr_images_ls() {
        let ls = "REF                         TYPE                                                 DIGEST       SIZE    PLATFORMS   LABELS\n\
                  registry.k8s.io/pause:3.9   application/vnd.docker.distribution.manifest.v2+json sha256:0123456789abcdef 1.2 MiB linux/amd64 io.cri-containerd.pinned=pinned\n";
        assert_eq!(digest_of(ls, "registry.k8s.io/pause:3.9").as_deref(), Some("sha256:0123456789abcdef"));
        assert_eq!(digest_of(ls, "registry.k8s.io/etcd:3.5"), None);
    }
}
