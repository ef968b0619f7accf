//! containerd inside a container (the build container, a node): started for the image
//! imports, stopped cleanly before a commit, and its configuration read and edited
//! structurally. Shared by the node-image pipeline and verify.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use toml_edit::DocumentMut;

use crate::docker::Docker;

pub const CONFIG: &str = "/etc/containerd/config.toml";
pub const CERTS_D: &str = "/etc/containerd/certs.d";
const CRI: &str = "io.containerd.grpc.v1.cri";

pub async fn start(docker: &Docker, id: &str) -> Result<()> {
    let out = docker.exec(id, &["sh", "-c", "containerd >/var/log/nodeimg-containerd.log 2>&1 &"]).await?;
    if !out.success() {
        bail!("starting containerd: {}", out.last_line());
    }
    let start = Instant::now();
    loop {
        if docker.exec(id, &["ctr", "version"]).await?.success() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            let log = docker.exec(id, &["tail", "-n", "3", "/var/log/nodeimg-containerd.log"]).await?;
            bail!("containerd did not answer within 30 s: {}", log.last_line());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops containerd with SIGTERM and waits for it, so its database is consistent in the
/// committed image; removes its log.
pub async fn stop(docker: &Docker, id: &str) -> Result<()> {
    // PID 1 of the build container (`sleep`) does not reap, so a stopped containerd stays
    // as a zombie: wait until no live (non-Z) containerd is left.
    let script = "pkill -TERM -x containerd; for i in $(seq 1 100); do \
                  ps -C containerd -o stat= | grep -qv '^Z' || exit 0; sleep 0.1; done; exit 1";
    if !docker.exec(id, &["sh", "-c", script]).await?.success() {
        bail!("containerd did not stop within 10 s");
    }
    docker.exec(id, &["rm", "-f", "/var/log/nodeimg-containerd.log"]).await?;
    Ok(())
}

/// The pause image containerd's CRI plugin uses (`sandbox_image`).
pub fn sandbox_image(config: &str) -> Result<String> {
    let doc: DocumentMut = config.parse().context("parsing the containerd config")?;
    doc.get("plugins")
        .and_then(|p| p.get(CRI))
        .and_then(|c| c.get("sandbox_image"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the containerd config sets no plugins.\"{CRI}\".sandbox_image"))
}

/// Whether runc runs with the systemd cgroup driver (`SystemdCgroup`, default false); the
/// kubelet must use the same driver.
pub fn systemd_cgroup(config: &str) -> Result<bool> {
    let doc: DocumentMut = config.parse().context("parsing the containerd config")?;
    Ok(doc
        .get("plugins")
        .and_then(|p| p.get(CRI))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get("runc"))
        .and_then(|r| r.get("options"))
        .and_then(|o| o.get("SystemdCgroup"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false))
}

/// Sets `SystemdCgroup` of the runc runtime, creating the tables if needed.
pub fn set_systemd_cgroup(config: &str, value: bool) -> Result<String> {
    let mut doc: DocumentMut = config.parse().context("parsing the containerd config")?;
    let options = doc["plugins"][CRI]["containerd"]["runtimes"]["runc"]["options"]
        .or_insert(toml_edit::table())
        .as_table_like_mut()
        .ok_or_else(|| anyhow!("runc options in the containerd config are not a table"))?;
    options.insert("SystemdCgroup", toml_edit::value(value));
    Ok(doc.to_string())
}

/// Points the CRI plugin at `certs.d` (`registry.config_path`). containerd refuses the
/// older `registry.mirrors` table next to it, so a config that has one is refused here.
pub fn set_config_path(config: &str) -> Result<String> {
    let mut doc: DocumentMut = config.parse().context("parsing the containerd config")?;
    let registry = doc["plugins"][CRI]["registry"]
        .or_insert(toml_edit::table())
        .as_table_like_mut()
        .ok_or_else(|| anyhow!("plugins.\"{CRI}\".registry in the containerd config is not a table"))?;
    if registry.contains_key("mirrors") {
        bail!(
            "the base image's containerd config sets registry.mirrors, which containerd refuses next to config_path"
        );
    }
    registry.insert("config_path", toml_edit::value(CERTS_D));
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../../base-image/files/etc/containerd/config.toml");

    #[test]
    fn reads_the_sandbox_image_of_the_base_config() {
        assert_eq!(sandbox_image(BASE).unwrap(), "registry.k8s.io/pause:3.9");
        assert!(sandbox_image("version = 2\n").is_err());
    }

    #[test]
    fn config_path_goes_under_the_cri_registry_table() {
        let patched = set_config_path(BASE).unwrap();
        let doc: DocumentMut = patched.parse().unwrap();
        assert_eq!(doc["plugins"][CRI]["registry"]["config_path"].as_str(), Some(CERTS_D));
        assert_eq!(doc["plugins"][CRI]["sandbox_image"].as_str(), Some("registry.k8s.io/pause:3.9"));
        let old = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"x\"]\n";
        assert!(set_config_path(old).unwrap_err().to_string().contains("registry.mirrors"));
    }

    #[test]
    fn sets_systemd_cgroup_structurally_keeping_the_rest() {
        let on = set_systemd_cgroup(BASE, true).unwrap();
        assert!(!systemd_cgroup(BASE).unwrap());
        assert!(systemd_cgroup(&on).unwrap());
        let doc: DocumentMut = on.parse().unwrap();
        let runc = &doc["plugins"][CRI]["containerd"]["runtimes"]["runc"];
        assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(true));
        assert_eq!(runc["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert!(on.contains("# kubeadm's pause image"), "comments survive");
        let fresh = set_systemd_cgroup("version = 2\n", false).unwrap();
        let doc: DocumentMut = fresh.parse().unwrap();
        assert_eq!(
            doc["plugins"][CRI]["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(false)
        );
    }
}
