//! Node containers and what runs inside them: starting one the way kind does (for checks
//! and verification), the files and the containerd in a container. Shared by the
//! node-image pipeline, verify and the base-image check.

pub mod containerd;
pub mod files;

use anyhow::{Context, Result};

use crate::docker::{CgroupNs, ContainerSpec, Docker, LABEL_HOST_CGROUPS};
use crate::progress::Reporter;

/// How the node container got the privileges systemd and the kubelet need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// `--privileged`, as kind runs nodes.
    Privileged,
    /// Every capability but CAP_SYS_RESOURCE, for daemons that refuse `--privileged`
    /// ("unable to apply caps"), with the host's cgroup tree mounted read-write.
    Restricted,
}

pub struct Node {
    pub id: String,
    pub privilege: Privilege,
}

/// kind's `docker run` for a node: privileged, tmpfs /run and /tmp, an anonymous /var
/// volume (containerd's snapshots cannot live on the image's overlay), stop signal for
/// systemd, a TTY.
pub fn node_spec(image: &str, name: Option<&str>, privilege: Privilege) -> ContainerSpec {
    let mut spec = ContainerSpec {
        image: image.to_owned(),
        name: name.map(str::to_owned),
        hostname: name.map(str::to_owned),
        tty: true,
        tmpfs: vec!["/tmp".into(), "/run".into()],
        volumes: vec!["/var".into()],
        security_opt: vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()],
        stop_signal: Some("SIGRTMIN+3".into()),
        ..ContainerSpec::default()
    };
    match privilege {
        Privilege::Privileged => spec.privileged = true,
        Privilege::Restricted => {
            spec.cap_add = vec!["ALL".into()];
            spec.cap_drop = vec!["SYS_RESOURCE".into()];
            spec.cgroupns = CgroupNs::Host;
            spec.binds = vec!["/sys/fs/cgroup:/sys/fs/cgroup:rw".into()];
            spec.device_cgroup_rules = vec!["a *:* rwm".into()];
            spec.labels.insert(LABEL_HOST_CGROUPS.into(), "true".into());
        }
    }
    spec
}

/// Starts a node container: `--privileged` first, the restricted set if the daemon refuses.
pub async fn start(docker: &Docker, image: &str, name: Option<&str>, reporter: &Reporter) -> Result<Node> {
    let spec = node_spec(image, name, Privilege::Privileged);
    let id = docker.create_container(&spec).await?;
    match docker.start_container(&id).await {
        Ok(()) => {
            return Ok(Node { id, privilege: Privilege::Privileged });
        }
        Err(err) if err.is_privileged_refused() => {
            docker.remove_container(&id).await?;
            reporter.info("the daemon refused --privileged (unable to apply caps); running the node with all capabilities but CAP_SYS_RESOURCE");
        }
        Err(err) => {
            docker.remove_container(&id).await?;
            return Err(err).with_context(|| format!("starting a node from {image}"));
        }
    }
    let spec = node_spec(image, name, Privilege::Restricted);
    let id = docker.create_container(&spec).await?;
    docker
        .start_container(&id)
        .await
        .with_context(|| format!("starting a node from {image} without --privileged"))?;
    Ok(Node { id, privilege: Privilege::Restricted })
}

/// Stops what runs pods in a node that shares the host's cgroup namespace, then removes the
/// cgroups its kubelet made on the host (`/sys/fs/cgroup/*/kubelet`). Run before the node
/// container is removed; a no-op for a node that is not running.
pub async fn release_host_cgroups(docker: &Docker, id: &str) -> Result<()> {
    if !docker.container_running(id).await.unwrap_or(false) {
        return Ok(());
    }
    let cleanup = docker.exec(id, &["sh", "-c", CGROUP_CLEANUP]);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cleanup)
        .await
        .map_err(|_| anyhow::anyhow!("removing the pods' cgroups timed out after 30 s"))??;
    if !out.success() {
        anyhow::bail!("removing the pods' cgroups: {}", out.last_line());
    }
    Ok(())
}

/// Stops what runs pods, kills every pod process, then removes the cgroup trees the kubelet
/// made (depth first; a cgroup still in use by another node is left alone).
const CGROUP_CLEANUP: &str = r#"
systemctl stop kubelet >/dev/null 2>&1
for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
for i in $(seq 1 50); do
  left=$(find /sys/fs/cgroup/*/kubelet -mindepth 1 -name tasks -exec cat {} + 2>/dev/null | wc -l)
  [ "$left" = 0 ] && break
  sleep 0.2
done
for root in /sys/fs/cgroup/*/kubelet /sys/fs/cgroup/kubelet; do
  [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
done
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_node_is_like_kinds() {
        let spec = node_spec("img", Some("n1"), Privilege::Privileged);
        assert!(spec.privileged);
        assert_eq!(spec.hostname.as_deref(), Some("n1"));
        assert_eq!(spec.stop_signal.as_deref(), Some("SIGRTMIN+3"));
        assert!(spec.tmpfs.contains(&"/run".to_owned()) && spec.volumes == vec!["/var"]);
        assert!(spec.cap_add.is_empty());
    }

    #[test]
    fn restricted_node_drops_only_sys_resource() {
        let spec = node_spec("img", None, Privilege::Restricted);
        assert!(!spec.privileged);
        assert_eq!(spec.cap_add, vec!["ALL"]);
        assert_eq!(spec.cap_drop, vec!["SYS_RESOURCE"]);
        assert_eq!(spec.cgroupns, CgroupNs::Host);
        assert_eq!(spec.binds, vec!["/sys/fs/cgroup:/sys/fs/cgroup:rw"]);
        assert!(spec.labels.contains_key(LABEL_HOST_CGROUPS), "the sweep must release its cgroups");
    }
}
