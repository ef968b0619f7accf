//! The cleanup guard and `nodeimg clean`: containers are removed on Ctrl-C, and a run killed
//! with SIGKILL (no chance to clean up) is cleaned up by `nodeimg clean`.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nodeimg::docker::{ContainerSpec, ContainerSummary, Docker};
use support::fixtures::{self, TestImage};
use support::{BUILD_LIMIT, COMMAND_LIMIT, Run, assert_success, output_within, wait_within};

/// `nodeimg clean ARGS` (every nodeimg container and image on the daemon), which must succeed.
fn clean(args: &[&str]) -> std::process::Output {
    let out = output_within(support::nodeimg().arg("clean").args(args), COMMAND_LIMIT);
    assert_success(&out, &format!("nodeimg clean {}", args.join(" ")));
    out
}

/// `nodeimg clean` sees every nodeimg container on the daemon, so these tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts `nodeimg build base-image` (a cache hit, so it goes straight to checking the
/// image in a container) and returns once that container runs.
async fn build_with_container(docker: &Docker, run: &Run) -> Option<(Child, ContainerSummary)> {
    let mut child =
        run.command(&["build", "base-image"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        // Wait for "running": a create request cut short is rolled back by the daemon itself.
        let found = docker.list_containers(Some(&run.run_id)).await.unwrap();
        if let Some(c) = found.into_iter().find(|c| c.state == "running") {
            return Some((child, c));
        }
        if child.try_wait().unwrap().is_some() {
            return None; // finished before we saw its container; the caller tries again
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    support::stop(&mut child);
    panic!("no container appeared for run {}", run.run_id);
}

async fn caught(docker: &Docker, run: &Run) -> (Child, ContainerSummary) {
    for _ in 0..10 {
        if let Some(found) = build_with_container(docker, run).await {
            return found;
        }
    }
    panic!("never caught the build with its container");
}

#[test]
fn clean_removes_what_a_killed_build_left() {
    let _serial = serial();
    support::base_image();
    let run = Run::new("killed");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let (mut child, container) = caught(&docker, &run).await;
        child.kill().unwrap(); // SIGKILL: the guard never runs
        wait_within(child, "nodeimg build base-image after SIGKILL", COMMAND_LIMIT);
        assert!(docker.container_exists(&container.id).await.unwrap(), "SIGKILL leaves the container");

        let out = clean(&[]);
        assert!(!docker.container_exists(&container.id).await.unwrap(), "clean removed it");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.lines().any(|l| l == container.name), "clean lists {}:\n{listed}", container.name);
    });
}

#[test]
fn clean_keeps_containers_of_live_runs() {
    let _serial = serial();
    let image = support::base_image();
    let run = Run::new("alive");
    support::runtime().block_on(async {
        // Labelled with this (live) test process's pid, as a running build's would be.
        let docker = support::docker(&run.run_id).await;
        let id = docker.create_container(&ContainerSpec::idle(&image)).await.unwrap();
        let out = clean(&[]);
        assert!(docker.container_exists(&id).await.unwrap(), "a live run's container is kept");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("still running"), "{stderr}");

        // --all would take it too; asked with --dry-run, because a real `clean --all` here
        // would also remove the containers of whatever else runs on this daemon.
        let out = clean(&["--all", "--dry-run"]);
        let name = docker.list_containers(Some(&run.run_id)).await.unwrap().remove(0).name;
        assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == name), "--all selects {name}");
        assert!(docker.container_exists(&id).await.unwrap(), "--dry-run removes nothing");
        docker.remove_container(&id).await.unwrap();
    });
}

#[test]
fn ctrl_c_removes_the_build_container() {
    let _serial = serial();
    support::base_image();
    let run = Run::new("sigint");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let (child, container) = caught(&docker, &run).await;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = wait_within(child, "nodeimg build base-image after SIGINT", BUILD_LIMIT).status;
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
    let run = Run::new("sigint-debootstrap");
    let scratch = run.tmp.path();
    let mut child = run
        .command(&["build", "base-image", "--rebuild", "-i", &run.target])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until debootstrap is writing into the scratch root filesystem.
    let start = Instant::now();
    loop {
        let busy = std::fs::read_dir(scratch)
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
    let out = wait_within(child, "nodeimg build base-image after SIGINT", BUILD_LIMIT);
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().last().unwrap_or("").contains("interrupted by SIGINT"), "{stderr}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(scratch.to_str().unwrap()), "mounts left below the scratch dir");
    run.assert_clean();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        assert!(!docker.image_exists(&run.target).await.unwrap(), "no image under the target tag");
    });
}

#[test]
fn clean_removes_the_temporary_tag_of_a_killed_verify() {
    let _serial = serial();
    let run = Run::new("verifytag");
    support::runtime().block_on(async {
        // An image as `build --verify` leaves it when killed mid-check: labelled by a run
        // whose process is gone, tagged only nodeimg-verify:<id>-<pid>.
        let dead = nodeimg::docker::Labels { pid: i32::MAX as u32 - 1, ..support::labels(&run.run_id) };
        let docker = Docker::connect(dead).await.unwrap();
        // Imported under a name of its own (removed at the end), then given the temporary tag.
        let own = format!("nodeimg-test/verifytag:{}", run.unique);
        let image = fixtures::busybox_image(&docker, &own).await;
        let tag = format!("nodeimg-verify:{}-{}", nodeimg::docker::short_id(&image.id), i32::MAX - 1);
        let _tag = TestImage::new(&tag, &image.id);
        docker.tag_image(&image.id, &tag).await.unwrap();
        docker.remove_image(&own).await.unwrap();

        let out = clean(&["--dry-run"]);
        assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == tag), "listed");
        assert!(docker.inspect_image(&tag).await.unwrap().is_some(), "--dry-run keeps it");
        let out = clean(&[]);
        assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == tag), "reported");
        assert!(docker.inspect_image(&image.id).await.unwrap().is_none(), "the image went with its only tag");
    });
}

#[test]
fn ctrl_c_during_build_verify_removes_the_node_and_clean_the_rest() {
    let _serial = serial();
    let run = Run::new("verifysigint");
    let release = fixtures::server_tarball(&fixtures::Options::default());
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let args = [&release.build_args()[..], &["--verify", "--timeout", "60s"]].concat();
        let child = run.build_command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        // Signalled while the check's node boots (the stand-in kubeadm fails right after).
        support::wait_for("the verify node to run", Duration::from_secs(180), || async {
            let found = docker.list_containers(Some(&run.run_id)).await.unwrap();
            found.into_iter().find(|c| c.name.starts_with("nodeimg-verify-") && c.state == "running")
        })
        .await;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let what = "nodeimg build node-image --verify after SIGINT";
        let out = tokio::task::spawn_blocking(move || wait_within(child, what, BUILD_LIMIT)).await.unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
        let left = docker.list_containers(Some(&run.run_id)).await.unwrap();
        assert!(left.is_empty(), "the guard removed the node and the build container: {left:?}");
        assert!(!docker.image_exists(&run.target).await.unwrap(), "nothing under the target tag");

        // The check's temporary tag, and with it the unchecked image, go too: an interrupted
        // run leaves nothing for `nodeimg clean`.
        let tags = docker.list_tags("nodeimg-verify", "nodeimg-verify:").await.unwrap();
        let ours: Vec<_> = tags
            .iter()
            .filter(|(_, labels)| labels.get(nodeimg::docker::LABEL_IMAGE_BUILD) == Some(&run.run_id))
            .map(|(tag, _)| tag.clone())
            .collect();
        let _tags: Vec<_> = ours.iter().map(|t| support::RemoveImage(t.clone())).collect();
        assert!(ours.is_empty(), "the interrupted check left its temporary tag: {ours:?}");
        assert_eq!(run.labelled_images(), "", "no image of the run is left");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("interrupted by SIGINT") && last.contains("removed"),
            "says what it removed: {last}"
        );
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
        let mut cmd = support::nodeimg();
        cmd.args(["verify", "nodeimg-test/no-such-node:1", "--timeout", "30s"])
            .env("NODEIMG_RUN_ID", &run_id);
        let out =
            tokio::task::spawn_blocking(move || support::output_within(&mut cmd, support::COMMAND_LIMIT))
                .await
                .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            docker.container_exists(&mine).await.unwrap(),
            "another process's cleanup removed this process's container"
        );
    });
}

/// A kind node runs the node image with kind's labels and inherits the image's labels: `clean`
/// (and `--all`) must not take it, nor a run's guard with the same run id. `clean --all` is
/// asked with `--dry-run` (the same selection, nothing removed): for real it would also take
/// the containers of whatever else runs on this daemon.
#[test]
fn clean_leaves_kind_nodes_of_a_node_image_running() {
    let _serial = serial();
    let run = Run::new("kindnode");
    let release = fixtures::server_tarball(&fixtures::Options::default());
    let out = run.build(&release.build_args());
    assert_success(&out, "build node-image");
    let image =
        support::docker_cli(&["image", "inspect", "--format", "{{json .Config.Labels}}", &run.target]);
    let labels: std::collections::HashMap<String, String> = serde_json::from_str(image.trim()).unwrap();
    for key in ["io.nodeimg.container", "io.nodeimg.build", "io.nodeimg.pid", "io.nodeimg.process"] {
        assert_eq!(labels.get(key).map(String::as_str), Some(""), "{key} is blank on the image: {labels:?}");
    }
    assert_eq!(labels.get("io.nodeimg.image.build"), Some(&run.run_id), "the image says which run built it");

    let name = format!("k1-control-plane-{}", run.unique);
    let _node = support::RemoveContainer(name.clone());
    support::docker_cli(&[
        "run",
        "-d",
        "--name",
        &name,
        "--hostname",
        &name,
        "--label",
        "io.x-k8s.kind.cluster=k1",
        "--label",
        "io.x-k8s.kind.role=control-plane",
        "--entrypoint",
        "sleep",
        &run.target,
        "600",
    ]);
    let running =
        || support::docker_cli(&["inspect", "--format", "{{.State.Running}}", &name]).trim() == "true";
    for args in [&["--dry-run"][..], &["--all", "--dry-run"], &[]] {
        let out = clean(args);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(!listed.lines().any(|l| l == name), "clean {args:?} lists the kind node:\n{listed}");
        assert!(running(), "clean {args:?} left the kind node running");
    }
    // Nor does a later run with the same run id (a CI job id) take it in its cleanup.
    drop(support::Cleanup(run.run_id.clone()));
    assert!(running(), "a run's guard left the kind node running");
}
