//! `nodeimg clean`: remove what killed runs left behind, found by label (containers,
//! networks, volumes, images, temporary tags) or by name (partial downloads); prints what it
//! removed.

use anyhow::Result;

use crate::cli::CleanArgs;

#[cfg(test)]
use crate::docker::ContainerSummary;
use crate::docker::{Docker, LABEL_IMAGE_HOST, LABEL_IMAGE_PID, short_id};
use crate::nodeimage::{TEMP_REPO, VERIFY_REPO};
use crate::progress::Reporter;

#[derive(Clone, Copy, Debug, Default)]
pub struct CleanConfig {
    pub all: bool,
    pub dry_run: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Remove,
    Keep(String),
}

/// A container belongs to a live run when its nodeimg process still exists on this host;
/// containers from other hosts are kept too, since their liveness cannot be told from here.
fn verdict(host: Option<&str>, pid: Option<u32>, this_host: &str, alive: impl Fn(u32) -> bool) -> Verdict {
    match (host, pid) {
        (Some(host), _) if host != this_host => Verdict::Keep(format!("created on host {host}")),
        (_, Some(pid)) if alive(pid) => Verdict::Keep(format!("its nodeimg process {pid} is still running")),
        _ => Verdict::Remove,
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub async fn run(args: CleanArgs, reporter: &Reporter) -> Result<()> {
    let cfg = CleanConfig { all: args.all, dry_run: args.dry_run };
    let docker = super::connect(reporter).await?;
    for name in clean(cfg, &docker, reporter).await? {
        println!("{name}");
    }
    Ok(())
}

/// Returns the names of the containers, IDs of the images, tags and files removed (or, with
/// `dry_run`, that would be).
pub async fn clean(cfg: CleanConfig, docker: &Docker, reporter: &Reporter) -> Result<Vec<String>> {
    let this_host = crate::docker::labels_hostname();
    let mut removed = Vec::new();
    for c in docker.list_containers(None).await? {
        match verdict(c.host.as_deref(), c.pid, &this_host, process_alive) {
            Verdict::Keep(why) if !cfg.all => {
                reporter.info(format!("kept {} (run {}): {why}; --all removes it", c.name, c.run_id));
                continue;
            }
            _ => {}
        }
        if !cfg.dry_run {
            if let Some(root) = &c.host_cgroups {
                crate::node::release_host_cgroups(docker, &c.id, root).await.ok();
            }
            docker.remove_container(&c.id).await?;
        }
        reporter.detail(format!("container {} ({}, run {})", c.name, c.state, c.run_id));
        removed.push(c.name);
    }
    // After the containers: a network with a node still attached cannot go.
    for n in docker.list_networks(None).await? {
        match verdict(n.host.as_deref(), n.pid, &this_host, process_alive) {
            Verdict::Keep(why) if !cfg.all => {
                reporter.info(format!("kept network {} (run {}): {why}; --all removes it", n.name, n.run_id));
                continue;
            }
            _ => {}
        }
        if !cfg.dry_run {
            docker.remove_network(&n.id).await?;
        }
        reporter.detail(format!("network {} (run {})", n.name, n.run_id));
        removed.push(n.name);
    }
    // Podman nodes' /var (named volumes, see docker/volume.rs), once their nodes are gone.
    for v in docker.list_volumes(None).await? {
        if let Verdict::Keep(why) = verdict(v.host.as_deref(), v.pid, &this_host, process_alive)
            && !cfg.all
        {
            reporter.detail(format!("kept volume {} (run {}): {why}", v.name, v.run_id));
            continue;
        }
        if !cfg.dry_run && !docker.remove_unused_volume(&v.name).await? {
            reporter.info(format!("kept volume {}: a container uses it", v.name));
            continue;
        }
        reporter.detail(format!("volume {} (run {})", v.name, v.run_id));
        removed.push(v.name);
    }
    for (id, labels) in docker.list_dangling_images().await? {
        let pid = labels.get(LABEL_IMAGE_PID).and_then(|p| p.parse().ok());
        let host = labels.get(LABEL_IMAGE_HOST).map(String::as_str);
        if let Verdict::Keep(why) = verdict(host, pid, &this_host, process_alive)
            && !cfg.all
        {
            reporter.detail(format!("kept image {}: {why}", short_id(&id)));
            continue;
        }
        if !cfg.dry_run && !docker.remove_unused_image(&id).await? {
            reporter.info(format!("kept image {}: a container uses it", short_id(&id)));
            continue;
        }
        removed.push(id);
    }
    // Temporary tags: of `build --verify` runs killed while checking their image, and of
    // host-mode builds killed while saving a control-plane image.
    let verify_tags = docker.list_tags(VERIFY_REPO, &format!("{VERIFY_REPO}:")).await?;
    let temp_tags = docker.list_tags(&format!("{TEMP_REPO}/*"), &format!("{TEMP_REPO}/")).await?;
    for (tag, labels) in verify_tags.into_iter().chain(temp_tags) {
        let pid = labels.get(LABEL_IMAGE_PID).and_then(|p| p.parse().ok());
        let host = labels.get(LABEL_IMAGE_HOST).map(String::as_str);
        if let Verdict::Keep(why) = verdict(host, pid, &this_host, process_alive)
            && !cfg.all
        {
            reporter.detail(format!("kept image {tag}: {why}"));
            continue;
        }
        if !cfg.dry_run {
            docker.remove_image(&tag).await?;
        }
        removed.push(tag);
    }
    for part in dead_part_files(&crate::kube::download::cache_root().join("downloads"), process_alive) {
        if !cfg.dry_run {
            std::fs::remove_file(&part).ok();
        }
        removed.push(part.display().to_string());
    }
    let verb = if cfg.dry_run { "would remove" } else { "removed" };
    reporter.info(format!("{verb} {} leftover(s)", removed.len()));
    Ok(removed)
}

/// Partial downloads (`*.part-<pid>`) whose process is gone.
fn dead_part_files(dir: &std::path::Path, alive: impl Fn(u32) -> bool) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut dead: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let pid = name.rsplit_once(".part-").and_then(|(_, pid)| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| !alive(pid))
        })
        .collect();
    dead.sort();
    dead
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(pid: Option<u32>, host: Option<&str>) -> ContainerSummary {
        ContainerSummary {
            id: "id".into(),
            name: "n".into(),
            state: "running".into(),
            run_id: "r".into(),
            pid,
            host: host.map(str::to_owned),
            keep: false,
            process: None,
            host_cgroups: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn dead_runs_are_removed_live_ones_kept() {
        let alive = |pid| pid == 10;
        let judge = |c: ContainerSummary| verdict(c.host.as_deref(), c.pid, "me", alive);
        assert_eq!(judge(container(Some(11), Some("me"))), Verdict::Remove);
        assert!(matches!(judge(container(Some(10), Some("me"))), Verdict::Keep(_)));
        assert!(matches!(judge(container(Some(11), Some("other"))), Verdict::Keep(_)));
        assert_eq!(judge(container(None, None)), Verdict::Remove);
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(i32::MAX as u32 - 1));
    }

    #[test]
    fn part_files_of_dead_processes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["k.tar.gz.part-10", "k.tar.gz.part-11", "k.tar.gz", "x.part-abc"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let dead = dead_part_files(dir.path(), |pid| pid == 10);
        assert_eq!(dead, vec![dir.path().join("k.tar.gz.part-11")]);
    }
}
