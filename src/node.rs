//! Running a node container the way kind does, for checks and verification.

use anyhow::{Context, Result};

use crate::docker::{CgroupNs, ContainerSpec, Docker, Error};
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
        }
    }
    spec
}

fn privileged_refused(err: &Error) -> bool {
    err.to_string().contains("unable to apply caps")
}

/// Starts a node container: `--privileged` first, the restricted set if the daemon refuses.
pub async fn start(docker: &Docker, image: &str, name: Option<&str>, reporter: &Reporter) -> Result<Node> {
    let spec = node_spec(image, name, Privilege::Privileged);
    let id = docker.create_container(&spec).await?;
    match docker.start_container(&id).await {
        Ok(()) => {
            return Ok(Node { id, privilege: Privilege::Privileged });
        }
        Err(err) if privileged_refused(&err) => {
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
    }

    #[test]
    fn recognises_the_capabilities_refusal() {
        let err = Error::Api {
            action: "starting".into(),
            message: "OCI runtime create failed: unable to apply caps: operation not permitted".into(),
        };
        assert!(privileged_refused(&err));
        let other = Error::Api { action: "starting".into(), message: "no such image".into() };
        assert!(!privileged_refused(&other));
    }
}
