//! `nodeimg build base-image` end to end: a debootstrap build through the real daemon,
//! booted as a node with systemd as PID 1 and a working containerd inside.

mod support;

use std::time::Duration;

use nodeimg::progress::{Reporter, Verbosity};
use support::{BUILD_LIMIT, Run, assert_success, fixtures, output_within, wait_for};

#[test]
fn base_image_has_kinds_configuration_in_one_layer() {
    let image = support::base_image();
    support::runtime().block_on(async {
        let docker = support::docker(&support::run_id("config")).await;
        let info = docker.inspect_image(&image).await.unwrap().expect("the image exists");
        assert_eq!(info.entrypoint, vec!["/usr/local/bin/entrypoint", "/sbin/init"]);
        assert_eq!(info.stop_signal.as_deref(), Some("SIGRTMIN+3"));
        assert!(info.env.contains(&"container=docker".to_owned()), "{:?}", info.env);
        assert_eq!(info.layers, 1, "debootstrap images are a single layer");
        assert_eq!(info.labels.get("io.nodeimg.base.source").map(String::as_str), Some("debootstrap"));
        assert!(info.labels.contains_key("io.nodeimg.build"));
        let key = &info.labels["io.nodeimg.base.key"];
        assert!(image.ends_with(key.as_str()), "{image} is named by its key {key}");
    });
}

#[test]
fn second_build_reuses_the_image() {
    let image = support::base_image();
    let out = output_within(support::nodeimg().args(["build", "base-image"]), BUILD_LIMIT);
    assert_success(&out, "second build");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), image);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("up to date"), "{stderr}");
    assert!(!stderr.contains("debootstrap bookworm"), "no debootstrap on a cache hit: {stderr}");
}

#[test]
fn base_image_boots_as_a_node_with_containerd() {
    let image = support::base_image();
    let run = Run::new("boot");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let reporter = Reporter::with_terminal(Verbosity::Quiet, false);
        let node = nodeimg::node::start(&docker, &image, None, &reporter).await.unwrap();

        let state = wait_for("systemd to finish booting", Duration::from_secs(90), || async {
            let out = docker.exec(&node.id, &["systemctl", "is-system-running"]).await.ok()?;
            let state = out.stdout.trim().to_owned();
            // "offline" until systemd answers, "starting" while it boots.
            let done = ["running", "degraded", "maintenance", "stopping"];
            done.contains(&state.as_str()).then_some(state)
        })
        .await;
        let failed = docker.exec(&node.id, &["systemctl", "--failed", "--no-legend"]).await.unwrap();
        assert!(
            state == "running" || state == "degraded",
            "systemd is {state}; failed units:\n{}",
            failed.stdout
        );
        let pid1 = docker.exec(&node.id, &["cat", "/proc/1/comm"]).await.unwrap();
        assert_eq!(pid1.stdout.trim(), "systemd");
        let containerd = docker.exec(&node.id, &["systemctl", "is-active", "containerd"]).await.unwrap();
        assert_eq!(containerd.stdout.trim(), "active");

        let version = docker.exec(&node.id, &["ctr", "version"]).await.unwrap();
        assert!(version.success() && version.stdout.contains("Server:"), "{version:?}");

        // A small image, made here from busybox and saved by the daemon, imported into the
        // node's containerd through exec stdin as the node-image pipeline will do.
        let tag = format!("nodeimg-test/busybox:{}", run.unique);
        let _image = fixtures::busybox_image(&docker, &tag).await;
        let saved = tokio_util::io::StreamReader::new(docker.save_image(&tag));
        let import = docker
            .exec_with_stdin(&node.id, &["ctr", "-n", "k8s.io", "images", "import", "-"], saved)
            .await
            .unwrap();
        docker.remove_image(&tag).await.unwrap();
        assert!(import.success(), "ctr import failed: {import:?}");
        let images = docker.exec(&node.id, &["ctr", "-n", "k8s.io", "images", "ls", "-q"]).await.unwrap();
        assert!(images.stdout.lines().any(|l| l == format!("docker.io/{tag}")), "{}", images.stdout);

        docker.remove_container(&node.id).await.unwrap();
        assert!(!docker.container_exists(&node.id).await.unwrap(), "the node container is gone");
        run.assert_clean();
    });
}

#[test]
fn dockerfile_build_goes_through_the_engine() {
    // Docker Hub is out of reach here, so the Dockerfile starts from the debootstrapped
    // image (Debian bookworm with apt); apt-get still runs against the real mirror.
    let debian = support::base_image();
    let run = Run::new("dockerfile");
    let target = &run.target;
    let out =
        run.output(&["build", "base-image", "--from", "dockerfile", "--debian-image", &debian, "-i", target]);
    assert_success(&out, "nodeimg build base-image --from dockerfile");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), *target);
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let info = docker.inspect_image(target).await.unwrap().expect("the image exists");
        docker.remove_image(target).await.unwrap();
        assert_eq!(info.entrypoint, vec!["/usr/local/bin/entrypoint", "/sbin/init"]);
        assert_eq!(info.stop_signal.as_deref(), Some("SIGRTMIN+3"));
        assert_eq!(info.labels.get("io.nodeimg.base.source").map(String::as_str), Some("dockerfile"));
        assert_eq!(info.labels.get("io.nodeimg.build"), Some(&run.run_id));
        run.assert_clean();
    });
}
