//! The cleanup guard and `nodeimg clean`: containers are removed on Ctrl-C, and a run killed
//! with SIGKILL (no chance to clean up) is cleaned up by `nodeimg clean`.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nodeimg::docker::{ContainerSpec, ContainerSummary, Docker};

/// `nodeimg clean` sees every nodeimg container on the daemon, so these tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts `nodeimg build base-image` (a cache hit, so it goes straight to checking the
/// image in a container) and returns once that container runs.
async fn build_with_container(docker: &Docker, run_id: &str) -> Option<(Child, ContainerSummary)> {
    let mut child = support::nodeimg()
        .args(["build", "base-image"])
        .env("NODEIMG_RUN_ID", run_id)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        // Wait for "running": a create request cut short is rolled back by the daemon itself.
        let found = docker.list_containers(Some(run_id)).await.unwrap();
        if let Some(c) = found.into_iter().find(|c| c.state == "running") {
            return Some((child, c));
        }
        if child.try_wait().unwrap().is_some() {
            return None; // finished before we saw its container; the caller tries again
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().ok();
    child.wait().ok();
    panic!("no container appeared for run {run_id}");
}

async fn caught(docker: &Docker, run_id: &str) -> (Child, ContainerSummary) {
    for _ in 0..10 {
        if let Some(found) = build_with_container(docker, run_id).await {
            return found;
        }
    }
    panic!("never caught the build with its container");
}

#[test]
fn clean_removes_what_a_killed_build_left() {
    let _serial = serial();
    support::base_image();
    let run_id = support::run_id("killed");
    let _cleanup = support::Cleanup(run_id.clone());
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        let (mut child, container) = caught(&docker, &run_id).await;
        child.kill().unwrap(); // SIGKILL: the guard never runs
        child.wait().unwrap();
        assert!(docker.container_exists(&container.id).await.unwrap(), "SIGKILL leaves the container");

        let out = support::nodeimg().arg("clean").output().unwrap();
        support::assert_success(&out, "nodeimg clean");
        assert!(!docker.container_exists(&container.id).await.unwrap(), "clean removed it");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.lines().any(|l| l == container.name), "clean lists {}:\n{listed}", container.name);
    });
}

#[test]
fn clean_keeps_containers_of_live_runs() {
    let _serial = serial();
    let image = support::base_image();
    let run_id = support::run_id("alive");
    let _cleanup = support::Cleanup(run_id.clone());
    support::runtime().block_on(async {
        // Labelled with this (live) test process's pid, as a running build's would be.
        let docker = support::docker(&run_id).await;
        let id = docker.create_container(&ContainerSpec::idle(&image)).await.unwrap();
        let out = support::nodeimg().arg("clean").output().unwrap();
        support::assert_success(&out, "nodeimg clean");
        assert!(docker.container_exists(&id).await.unwrap(), "a live run's container is kept");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("still running"), "{stderr}");

        let out = support::nodeimg().args(["clean", "--all"]).output().unwrap();
        support::assert_success(&out, "nodeimg clean --all");
        assert!(!docker.container_exists(&id).await.unwrap(), "--all removes it too");
    });
}

#[test]
fn ctrl_c_removes_the_build_container() {
    let _serial = serial();
    support::base_image();
    let run_id = support::run_id("sigint");
    let _cleanup = support::Cleanup(run_id.clone());
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        let (mut child, container) = caught(&docker, &run_id).await;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        // It may have finished its check just before the signal landed; either way the
        // container must be gone, and an interrupted run exits 130.
        assert!(status.code() == Some(130) || status.success(), "exit status {status}");
        assert!(!docker.container_exists(&container.id).await.unwrap(), "the guard removed the container");
    });
}

#[test]
fn ctrl_c_during_debootstrap_leaves_no_scratch_or_mounts() {
    let _serial = serial();
    support::base_image();
    let scratch = tempfile::tempdir().unwrap();
    let run_id = support::run_id("sigint-debootstrap");
    let mut child = support::nodeimg()
        .args(["build", "base-image", "--rebuild", "-i", "nodeimg-test/interrupted:never"])
        .env("NODEIMG_RUN_ID", &run_id)
        .env("TMPDIR", scratch.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until debootstrap is writing into the scratch root filesystem.
    let start = Instant::now();
    loop {
        let busy = std::fs::read_dir(scratch.path())
            .unwrap()
            .flatten()
            .any(|e| e.path().join("rootfs/debootstrap").exists());
        if busy {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "debootstrap never started");
        assert!(child.try_wait().unwrap().is_none(), "nodeimg ended before debootstrap started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().last().unwrap_or("").contains("interrupted by SIGINT"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(scratch.path().to_str().unwrap()), "mounts left below the scratch dir");
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        assert!(
            !docker.image_exists("nodeimg-test/interrupted:never").await.unwrap(),
            "no image under the target tag"
        );
    });
}

#[test]
fn clean_removes_the_temporary_tag_of_a_killed_verify() {
    let _serial = serial();
    let run_id = support::run_id("verifytag");
    let _cleanup = support::Cleanup(run_id.clone());
    support::runtime().block_on(async {
        // An image as `build --verify` leaves it when killed mid-check: labelled by a run
        // whose process is gone, tagged only nodeimg-verify:<id>-<pid>.
        let dead = nodeimg::docker::Labels { pid: i32::MAX as u32 - 1, ..support::labels(&run_id) };
        let docker = Docker::connect(dead).await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let root = support::fixtures::busybox_root(scratch.path());
        let stream = nodeimg::archive::tar_stream(move |t| nodeimg::archive::append_rootfs(t, &root));
        let id = docker.import_rootfs(stream, Vec::new()).await.unwrap();
        let tag = format!("nodeimg-verify:{}-{}", nodeimg::docker::short_id(&id), i32::MAX - 1);
        docker.tag_image(&id, &tag).await.unwrap();

        let out = support::nodeimg().args(["clean", "--dry-run"]).output().unwrap();
        support::assert_success(&out, "nodeimg clean --dry-run");
        assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == tag), "listed");
        assert!(docker.inspect_image(&tag).await.unwrap().is_some(), "--dry-run keeps it");
        let out = support::nodeimg().arg("clean").output().unwrap();
        support::assert_success(&out, "nodeimg clean");
        assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == tag), "reported");
        assert!(docker.inspect_image(&id).await.unwrap().is_none(), "the image went with its only tag");
    });
}

#[test]
fn ctrl_c_during_build_verify_removes_the_node_and_clean_the_rest() {
    let _serial = serial();
    let base = support::base_image();
    let run_id = support::run_id("verifysigint");
    let _cleanup = support::Cleanup(run_id.clone());
    let release = support::fixtures::server_tarball(&support::fixtures::Options::default());
    let target = format!("nodeimg-test/node:verifysigint-{}", std::process::id());
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        support::fixtures::ensure_host_images(&docker).await;
        let child = support::nodeimg()
            .args(["build", "node-image", release.tarball.to_str().unwrap(), "-b", &base, "-i", &target])
            .args(["--verify", "--timeout", "60s"])
            .env("NODEIMG_RUN_ID", &run_id)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signalled while the check's node boots (the stand-in kubeadm fails right after).
        support::wait_for("the verify node to run", Duration::from_secs(180), || async {
            let found = docker.list_containers(Some(&run_id)).await.unwrap();
            found.into_iter().find(|c| c.name.starts_with("nodeimg-verify-") && c.state == "running")
        })
        .await;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
        let left = docker.list_containers(Some(&run_id)).await.unwrap();
        assert!(left.is_empty(), "the guard removed the node and the build container: {left:?}");
        assert!(!docker.image_exists(&target).await.unwrap(), "nothing under the target tag");

        // What a killed check cannot remove itself, `nodeimg clean` does: the image under its
        // temporary tag.
        let tags = docker.list_tags("nodeimg-verify", "nodeimg-verify:").await.unwrap();
        let ours: Vec<_> = tags
            .iter()
            .filter(|(_, labels)| labels.get(nodeimg::docker::LABEL_BUILD) == Some(&run_id))
            .map(|(tag, _)| tag.clone())
            .collect();
        assert_eq!(ours.len(), 1, "the interrupted check leaves its temporary tag: {tags:?}");
        let out = support::nodeimg().arg("clean").output().unwrap();
        support::assert_success(&out, "nodeimg clean");
        let images = std::process::Command::new("docker")
            .args(["images", "-q", "--filter", &format!("label={}={run_id}", nodeimg::docker::LABEL_BUILD)])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&images.stdout).trim(), "", "no image of the run is left");
        assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == ours[0]), "clean names it");
    });
}

/// Two processes sharing `NODEIMG_RUN_ID` (as a CI job may): one's cleanup must not remove
/// the other's containers. The test process plays the other one, with a container of its own
/// under the same run id; the nodeimg process fails and sweeps.
#[test]
fn a_shared_run_id_does_not_share_cleanup() {
    let _serial = serial();
    let image = support::base_image();
    let run_id = support::run_id("shared");
    let _cleanup = support::Cleanup(run_id.clone());
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        let mine = docker.create_container(&ContainerSpec::idle(&image)).await.unwrap();
        docker.start_container(&mine).await.unwrap();
        let out = support::nodeimg()
            .args(["verify", "nodeimg-test/no-such-node:1", "--timeout", "30s"])
            .env("NODEIMG_RUN_ID", &run_id)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            docker.container_exists(&mine).await.unwrap(),
            "another process's cleanup removed this process's container"
        );
    });
}
