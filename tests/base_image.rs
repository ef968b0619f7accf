//! `nodeimg build base-image` end to end: a debootstrap build through the real daemon,
//! booted as a node with systemd as PID 1 and a working containerd inside.

mod support;

use std::time::Duration;

use nodeimg::progress::{Reporter, Verbosity};
use sha2::{Digest, Sha256};
use support::{BUILD_LIMIT, Run, assert_success, docker_cli, fixtures, output_within, wait_for};

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
        assert!(!info.labels["io.nodeimg.image.build"].is_empty(), "the image names the run that made it");
        assert_eq!(info.labels["io.nodeimg.build"], "", "a container label, blank on images");
        let key = &info.labels["io.nodeimg.base.key"];
        assert!(image.ends_with(key.as_str()), "{image} is named by its key {key}");
        // The label says what the node itself reports (trixie's base-files comes with glibc).
        let said = support::docker_cli(&[
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            &image,
            "-c",
            ". /etc/os-release; echo $PRETTY_NAME",
        ]);
        let label = info.labels.get("io.nodeimg.base.os-release").map(String::as_str);
        assert_eq!(label, Some(said.trim()), "the os-release label is what /etc/os-release says");
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
    assert!(stderr.contains("no crictl: kind load reloads images every time"), "the note: {stderr}");
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
        let name = fixtures::busybox_into_node(&docker, &node.id, &run.unique).await;
        let images = docker.exec(&node.id, &["ctr", "-n", "k8s.io", "images", "ls", "-q"]).await.unwrap();
        assert!(images.stdout.lines().any(|l| l == name), "{}", images.stdout);

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
        assert_eq!(info.labels.get("io.nodeimg.image.build"), Some(&run.run_id));
        run.assert_clean();
    });
}

/// A stand-in crictl: busybox-static, a small ELF executable, in the test's files.
fn fake_crictl(run: &Run) -> (std::path::PathBuf, String) {
    let path = run.files.path().join("crictl");
    std::fs::copy("/bin/busybox", &path).expect("busybox-static is installed (scripts/setup.sh)");
    let sha = sha256_of(&path);
    (path, sha)
}

/// Upstream's release layout: a tar.gz holding `crictl` (the run's [`fake_crictl`]) at
/// `tarball`; its sha256.
fn release_tarball(run: &Run, tarball: &std::path::Path) -> String {
    std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
    let tar = output_within(
        std::process::Command::new("tar")
            .arg("-czf")
            .arg(tarball)
            .arg("-C")
            .arg(run.files.path())
            .arg("crictl"),
        support::COMMAND_LIMIT,
    );
    assert_success(&tar, "tar -czf");
    sha256_of(tarball)
}

fn sha256_of(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// What the image holds at /usr/local/bin/crictl and /etc/crictl.yaml, read in a `--rm`
/// container: `<sha256> <mode>` then the config.
fn crictl_in(image: &str) -> String {
    let script = "set -e; sha256sum /usr/local/bin/crictl | cut -d' ' -f1; \
                  stat -c %a /usr/local/bin/crictl; cat /etc/crictl.yaml";
    docker_cli(&["run", "--rm", "--entrypoint", "/bin/sh", image, "-c", script])
}

fn assert_crictl_image(image: &str, run: &Run, binary_sha: &str, label_sha: &str, version: Option<&str>) {
    let inside = crictl_in(image);
    let mut lines = inside.lines();
    assert_eq!(lines.next(), Some(binary_sha), "{inside}");
    assert_eq!(lines.next(), Some("755"), "{inside}");
    assert!(inside.contains("runtime-endpoint: unix:///run/containerd/containerd.sock"), "{inside}");
    assert!(inside.contains("image-endpoint: unix:///run/containerd/containerd.sock"), "{inside}");
    let info = support::block_on(async {
        support::docker(&run.run_id).await.inspect_image(image).await.unwrap().expect("the image exists")
    });
    assert_eq!(info.labels.get("io.nodeimg.crictl.sha256").map(String::as_str), Some(label_sha));
    assert_eq!(info.labels.get("io.nodeimg.crictl.version").map(String::as_str), version);
    assert_eq!(info.layers, 1, "crictl is in the one layer");
    run.assert_clean();
}

/// The tests' shared base with `--crictl /bin/busybox` (a file): crictl where kind runs it,
/// its config, its label, and a tag of its own.
#[test]
fn base_image_with_crictl_has_it_and_its_config() {
    let image = support::base_image_with_crictl();
    let run = Run::new("crictl-file");
    let sha = sha256_of(std::path::Path::new("/bin/busybox"));
    assert_crictl_image(&image, &run, &sha, &sha, None);
    assert_ne!(image, support::base_image(), "with and without crictl are different tags");
}

#[test]
fn crictl_from_a_release_tarball_url_is_unpacked() {
    let run = Run::new("crictl-url");
    let (crictl, binary_sha) = fake_crictl(&run);
    let served = tempfile::tempdir().unwrap();
    let name = "crictl-v1.30.0-linux-amd64.tar.gz";
    let tarball_sha = release_tarball(&run, &served.path().join(name));
    let server = fixtures::HttpServer::serve(served.path());
    let url = format!("{}/{name}", server.url);
    let out = run.output(&[
        "build",
        "base-image",
        "-i",
        &run.target,
        "--crictl",
        &url,
        "--crictl-sha256",
        &tarball_sha,
    ]);
    assert_success(&out, "build base-image --crictl URL");
    drop(crictl);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("installing crictl: /usr/local/bin/crictl (v1.30.0"), "{stderr}");
    assert!(!stderr.contains("no crictl"), "{stderr}");
    assert_crictl_image(&run.target, &run, &binary_sha, &tarball_sha, Some("v1.30.0"));
}

#[test]
fn bad_crictl_inputs_fail_in_one_line_and_leave_nothing() {
    let run = Run::new("crictl-bad");
    let (crictl, sha) = fake_crictl(&run);
    let crictl = crictl.to_str().unwrap();
    let wrong = "0".repeat(64);
    let base = ["build", "base-image", "-i", &run.target];
    let attempt = |extra: &[&str]| run.output(&[&base[..], extra].concat());

    let line =
        run.assert_failed(&attempt(&["--crictl", crictl, "--crictl-sha256", &wrong]), "sha256 mismatch");
    assert!(
        line.contains(crictl) && line.contains(&wrong) && line.contains(&sha),
        "names both digests: {line}"
    );

    let script = run.files.path().join("not-elf");
    std::fs::write(&script, "#!/bin/sh\necho crictl\n").unwrap();
    let script_sha = sha256_of(&script);
    let not_elf = script.to_str().unwrap();
    let line =
        run.assert_failed(&attempt(&["--crictl", not_elf, "--crictl-sha256", &script_sha]), "not an ELF");
    assert!(line.contains(not_elf), "{line}");

    let missing = run.files.path().join("missing");
    let missing = missing.to_str().unwrap();
    run.assert_failed(&attempt(&["--crictl", missing, "--crictl-sha256", &sha]), "no such file");
    run.assert_failed(&attempt(&["--crictl", crictl]), "needs --crictl-sha256");

    // A URL with the wrong sha256: the download is refused and not kept in the cache.
    let server = fixtures::HttpServer::serve(run.files.path());
    let url = format!("{}/crictl", server.url);
    let line =
        run.assert_failed(&attempt(&["--crictl", &url, "--crictl-sha256", &wrong]), "checksum mismatch");
    assert!(line.contains(&url) && line.contains(&sha), "{line}");
    let cached: Vec<_> = walk(run.cache.path());
    assert!(cached.is_empty(), "nothing cached: {cached:?}");
    assert_eq!(run.labelled_images(), "", "no image of the run");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] }).collect()
}

/// No crictl flag: the pinned release (here from a loopback mirror of upstream's layout, with
/// a pin table of the test's own, since upstream's bytes are not on this machine) is fetched
/// and installed; a download that does not match its pin fails; an unreachable release
/// server leaves the base without crictl and says so.
#[test]
fn default_crictl_is_the_pinned_release_when_it_can_be_fetched() {
    let run = Run::new("crictl-default");
    let (crictl, binary_sha) = fake_crictl(&run);
    let served = tempfile::tempdir().unwrap();
    let arch = nodeimg::platform::host_architecture();
    let tarball = served.path().join(format!("v1.26.1/crictl-v1.26.1-linux-{arch}.tar.gz"));
    let tarball_sha = release_tarball(&run, &tarball);
    drop(crictl);
    let server = fixtures::HttpServer::serve(served.path());
    let table = run.files.path().join("crictl-releases");
    let pin =
        |sha: &str| std::fs::write(&table, format!("# the test's pins\nv1.26.1 {arch} {sha}\n")).unwrap();
    let with_env = |cmd: &mut std::process::Command, base: &str| {
        cmd.env("NODEIMG_CRICTL_RELEASE_BASE", base).env("NODEIMG_CRICTL_RELEASES", &table);
        output_within(cmd, BUILD_LIMIT)
    };

    pin(&"0".repeat(64));
    let out = with_env(&mut run.command(&["build", "base-image", "-i", &run.target]), &server.url);
    let line = run.assert_failed(&out, "checksum mismatch");
    assert!(line.contains(&tarball_sha) && line.contains("crictl-v1.26.1"), "{line}");

    pin(&tarball_sha);
    let out = with_env(&mut run.command(&["build", "base-image", "-i", &run.target]), &server.url);
    assert_success(&out, "build base-image with the default crictl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no crictl"), "{stderr}");
    assert_crictl_image(&run.target, &run, &binary_sha, &tarball_sha, Some("v1.26.1"));

    // Offline: the shared base without crictl (a cache hit), with the note.
    let out = with_env(&mut run.command(&["build", "base-image"]), "http://127.0.0.1:9");
    assert_success(&out, "build base-image with the release server down");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), support::base_image());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("crictl v1.26.1 cannot be fetched"), "{stderr}");
    assert!(stderr.contains("no crictl: kind load reloads images every time"), "{stderr}");
}
