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
    /// The kubelet's cgroup root when the node shares the host's cgroups (restricted): a
    /// name under the host's `/sys/fs/cgroup/<controller>/`.
    pub cgroup_root: Option<String>,
}

/// How kind runs a node beyond its privileges (provision.go): its own network, the
/// cluster and role labels, the node environment, `--restart=on-failure:1`, `--init=false`,
/// the host's `/lib/modules` read-only.
#[derive(Clone, Debug, Default)]
pub struct KindRun {
    pub cluster: String,
    pub role: &'static str,
    pub network: String,
    pub env: Vec<String>,
    /// Left running after the command (`verify --keep`): the guard and sweep pass it by.
    pub keep: bool,
}

pub const LABEL_KIND_CLUSTER: &str = "io.x-k8s.kind.cluster";
pub const LABEL_KIND_ROLE: &str = "io.x-k8s.kind.role";

/// The cgroup root a restricted node's kubelet gets unless told otherwise.
pub const DEFAULT_CGROUP_ROOT: &str = "kubelet";

/// A cgroup root of its own for a node sharing the host's cgroups, so that two such nodes
/// (a control plane and its worker) never manage, or clean up, each other's pods.
pub fn own_cgroup_root(name: &str) -> String {
    format!("kubelet-{name}")
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
            spec.labels.insert(LABEL_HOST_CGROUPS.into(), DEFAULT_CGROUP_ROOT.into());
        }
    }
    spec
}

/// [`node_spec`] plus the rest of kind's `docker run`; a restricted node gets a cgroup root
/// of its own.
pub fn kind_spec(image: &str, name: &str, privilege: Privilege, run: &KindRun) -> ContainerSpec {
    let mut spec = node_spec(image, Some(name), privilege);
    spec.network_mode = Some(run.network.clone());
    spec.restart_on_failure = Some(1);
    spec.init = Some(false);
    if privilege == Privilege::Privileged {
        spec.cgroupns = CgroupNs::Private;
    } else {
        spec.labels.insert(LABEL_HOST_CGROUPS.into(), own_cgroup_root(name));
    }
    // kind mounts it unconditionally; a bind of a missing path would create it on the host.
    if std::path::Path::new("/lib/modules").is_dir() {
        spec.binds.push("/lib/modules:/lib/modules:ro".into());
    }
    spec.env = run.env.clone();
    spec.labels.insert(LABEL_KIND_CLUSTER.into(), run.cluster.clone());
    spec.labels.insert(LABEL_KIND_ROLE.into(), run.role.into());
    if run.keep {
        spec.labels.insert(crate::docker::LABEL_KEEP.into(), "verify --keep".into());
    }
    spec
}

/// Starts a node container: `--privileged` first, the restricted set if the daemon refuses.
pub async fn start(docker: &Docker, image: &str, name: Option<&str>, reporter: &Reporter) -> Result<Node> {
    start_with(docker, image, reporter, |privilege| node_spec(image, name, privilege)).await
}

/// Starts a node the way kind does ([`kind_spec`]).
pub async fn start_as_kind(
    docker: &Docker,
    image: &str,
    name: &str,
    run: &KindRun,
    reporter: &Reporter,
) -> Result<Node> {
    start_with(docker, image, reporter, |privilege| kind_spec(image, name, privilege, run)).await
}

async fn start_with(
    docker: &Docker,
    image: &str,
    reporter: &Reporter,
    spec_for: impl Fn(Privilege) -> ContainerSpec,
) -> Result<Node> {
    let spec = spec_for(Privilege::Privileged);
    let id = docker.create_container(&spec).await?;
    match docker.start_container(&id).await {
        Ok(()) => {
            return Ok(Node { id, privilege: Privilege::Privileged, cgroup_root: None });
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
    let spec = spec_for(Privilege::Restricted);
    let cgroup_root = spec.labels.get(LABEL_HOST_CGROUPS).cloned();
    let id = docker.create_container(&spec).await?;
    if let Err(err) = docker.start_container(&id).await {
        docker.remove_container(&id).await.ok();
        return Err(err).with_context(|| format!("starting a node from {image} without --privileged"));
    }
    Ok(Node { id, privilege: Privilege::Restricted, cgroup_root })
}

/// Stops what runs pods in a node that shares the host's cgroup namespace, then removes the
/// cgroups its kubelet made on the host (`/sys/fs/cgroup/*/<root>`). Run before the node
/// container is removed; a no-op for a node that is not running.
pub async fn release_host_cgroups(docker: &Docker, id: &str, root: &str) -> Result<()> {
    if !docker.container_running(id).await.unwrap_or(false) {
        return Ok(());
    }
    if root.is_empty() || !root.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        anyhow::bail!("refusing to remove cgroup root {root:?}: not a plain name");
    }
    let cmd = ["sh", "-c", CGROUP_CLEANUP, "sh", root];
    let cleanup = docker.exec(id, &cmd);
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
  left=$(find /sys/fs/cgroup/*/"$1" -mindepth 1 -name tasks -exec cat {} + 2>/dev/null | wc -l)
  [ "$left" = 0 ] && break
  sleep 0.2
done
for root in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
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

    fn run() -> KindRun {
        KindRun {
            cluster: "c1".into(),
            role: "worker",
            network: "net1".into(),
            env: vec!["KUBECONFIG=/etc/kubernetes/admin.conf".into()],
            keep: false,
        }
    }

    #[test]
    fn kind_run_flags_are_kinds() {
        let spec = kind_spec("img", "n2", Privilege::Privileged, &run());
        assert_eq!(spec.network_mode.as_deref(), Some("net1"));
        assert_eq!(spec.restart_on_failure, Some(1));
        assert_eq!(spec.init, Some(false));
        assert_eq!(spec.cgroupns, CgroupNs::Private);
        assert_eq!(spec.labels.get(LABEL_KIND_ROLE).map(String::as_str), Some("worker"));
        assert_eq!(spec.labels.get(LABEL_KIND_CLUSTER).map(String::as_str), Some("c1"));
        assert!(spec.env.contains(&"KUBECONFIG=/etc/kubernetes/admin.conf".to_owned()));
        assert!(!spec.labels.contains_key(crate::docker::LABEL_KEEP));
        if std::path::Path::new("/lib/modules").is_dir() {
            assert!(spec.binds.contains(&"/lib/modules:/lib/modules:ro".to_owned()));
        }
    }

    #[test]
    fn restricted_kind_nodes_get_a_cgroup_root_each() {
        let a = kind_spec("img", "n1", Privilege::Restricted, &run());
        let b = kind_spec("img", "n2", Privilege::Restricted, &run());
        assert_eq!(a.labels.get(LABEL_HOST_CGROUPS).map(String::as_str), Some("kubelet-n1"));
        assert_eq!(b.labels.get(LABEL_HOST_CGROUPS).map(String::as_str), Some("kubelet-n2"));
        let kept = kind_spec("img", "n1", Privilege::Restricted, &KindRun { keep: true, ..run() });
        assert!(kept.labels.contains_key(crate::docker::LABEL_KEEP));
    }
}
