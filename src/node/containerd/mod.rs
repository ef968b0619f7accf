//! containerd inside a container (the build container, a node): started for the image
//! imports, stopped cleanly before a commit, and its configuration read and edited
//! structurally in either config version ([`Config`]). Shared by the node-image pipeline and verify.

use std::time::{Duration, Instant};

mod config;
mod listing;

use anyhow::{Context, Result, bail};

pub use config::{Config, ConfigError, ConfigVersion, Setting, dotted};
pub use listing::{Held, parse_listing, parse_size};

use super::files;
use crate::docker::Docker;

pub const CONFIG: &str = "/etc/containerd/config.toml";
pub const CERTS_D: &str = "/etc/containerd/certs.d";

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

/// The node's containerd config (`/etc/containerd/config.toml`), parsed.
pub async fn read_config(docker: &Docker, id: &str) -> Result<Config> {
    let text = files::read(docker, id, CONFIG).await?;
    Ok(Config::parse(CONFIG, &text)?)
}

pub async fn write_config(docker: &Docker, id: &str, config: &Config) -> Result<()> {
    files::write(docker, id, CONFIG, config.to_string()).await.with_context(|| format!("writing {CONFIG}"))
}

#[cfg(test)]
mod tests;
