//! nodeimg through Podman's Docker-compatible API (`DOCKER_HOST=unix:///…/podman.sock`),
//! against a rootful `podman system service` of each test's own ([`support::podman`]).

mod support;

use std::time::Instant;

use nodeimg::docker::Docker;
use support::fixtures::{self, Options, VERSION};
use support::podman::{OldPodman, Podman};
use support::{BUILD_LIMIT, COMMAND_LIMIT, Run, assert_one_error_line, assert_success, output_within};

/// The tests' Docker-built base image, carried into Podman with `nodeimg save` and `load`:
/// building one through Podman (`build base-image`, debootstrap) costs minutes and a Debian
/// mirror; the shared one is usually built already, and the carry exercises save and load.
fn base_into(podman: &Podman, run: &Run) -> String {
    let base = support::base_image();
    let archive = run.files.path().join("base.tar");
    let out = run.output(&["save", &base, "-o", archive.to_str().unwrap()]);
    assert_success(&out, "nodeimg save (base image, from Docker)");
    let out =
        output_within(&mut podman.nodeimg(run, &["load", "--input", archive.to_str().unwrap()]), BUILD_LIMIT);
    assert_success(&out, "nodeimg load (base image, into Podman)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The checksum pass comes first; the engine line is the first once Podman is asked.
    let engine = stderr.lines().find(|l| l.contains("engine: ")).unwrap_or_default();
    assert!(
        engine.contains("engine: Podman 4.") && engine.ends_with(&format!("at {}", podman.host)),
        "a line names the engine: {stderr}"
    );
    let loaded = String::from_utf8_lossy(&out.stdout);
    assert_eq!(loaded.trim(), base, "printed as written, not as Podman's localhost/…");
    std::fs::remove_file(&archive).unwrap();
    base
}

/// The names in a docker-save archive's manifest.
fn archive_tags(path: &std::path::Path) -> Vec<String> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let entry = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"));
    let manifest: serde_json::Value = serde_json::from_reader(entry.expect("a manifest.json")).unwrap();
    manifest[0]["RepoTags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

#[test]
fn node_image_through_podman_round_trips_into_docker() {
    let podman = Podman::start();
    let run = Run::new("podman");
    let release = fixtures::server_tarball(&Options::default());
    let base = base_into(&podman, &run);

    // Loaded without a registry, Podman holds it as localhost/…; saved from Podman it still
    // carries the name Docker loads as the base's own (Podman's temporary tag gone again).
    let archive = run.files.path().join("base-from-podman.tar");
    let out = output_within(
        &mut podman.nodeimg(&run, &["save", &base, "-o", archive.to_str().unwrap()]),
        BUILD_LIMIT,
    );
    assert_success(&out, "nodeimg save (base image, from Podman)");
    assert_eq!(archive_tags(&archive), vec![format!("docker.io/{base}")]);
    std::fs::remove_file(&archive).unwrap();
    let names = podman.cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(names.trim(), format!("localhost/{base}"));

    // images list and images save: the plan and the bundle, through Podman.
    let [tarball, flag, archive] = release.build_args();
    let list = ["images", "list", tarball, "-b", &base, flag, archive];
    let out = output_within(&mut podman.nodeimg(&run, &list), BUILD_LIMIT);
    assert_success(&out, "images list through Podman");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 4 + fixtures::needed_images().len(), "{listed}");
    assert!(listed.contains(&format!("registry.k8s.io/kube-apiserver:{VERSION}\tbuilt")), "{listed}");
    let bundle = run.files.path().join("bundle.tar");
    let save = ["images", "save", tarball, "-b", &base, flag, archive, "-o", bundle.to_str().unwrap()];
    let out = output_within(&mut podman.nodeimg(&run, &save), BUILD_LIMIT);
    assert_success(&out, "images save through Podman");
    assert!(std::fs::metadata(&bundle).unwrap().len() > 0);
    std::fs::remove_file(&bundle).unwrap();
    run.assert_clean();

    let start = Instant::now();
    let mut build = podman.nodeimg(&run, &["build", "node-image", "-i", &run.target, "-b", &base]);
    let out = output_within(build.args(release.build_args()), BUILD_LIMIT);
    assert_success(&out, "build node-image through Podman");
    let through_podman = start.elapsed();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), run.target);
    run.assert_clean();
    // The same build through Docker, for comparison (a name of its own, removed on drop).
    let in_docker = fixtures::TestImage::new(&format!("{}-docker", run.target), "");
    let start = Instant::now();
    let mut build = run.command(&["build", "node-image", "-i", &in_docker.name, "-b", &base]);
    assert_success(
        &output_within(build.args(release.build_args()), BUILD_LIMIT),
        "the same build through Docker",
    );
    eprintln!("build node-image: through Podman {through_podman:?}, through Docker {:?}", start.elapsed());
    drop(in_docker);

    // In Podman's store (qualified the Podman way), with every image pinned inside.
    let listed = podman.cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let (repo, tag) = run.target.split_once(':').unwrap();
    assert!(listed.lines().any(|l| l.ends_with(&format!("/{repo}:{tag}"))), "{listed}");
    let (info, images) = support::block_on(async {
        let docker = Docker::connect_to(&podman.host, support::labels(&run.run_id)).await.unwrap();
        assert!(docker.engine().is_podman());
        let info = docker.inspect_image(&run.target).await.unwrap().expect("the node image is in Podman");
        (info, pinned_images(&docker, &run.target).await)
    });
    assert_eq!(info.labels.get("io.nodeimg.kubernetes.version").map(String::as_str), Some(VERSION));
    assert_eq!(info.entrypoint, vec!["/usr/local/bin/entrypoint", "/sbin/init"]);
    assert_all_pinned(&images);

    // Saved from Podman, loaded into Docker: the same image under the same name.
    let archive = run.files.path().join("node.tar.zst");
    let out = output_within(
        &mut podman.nodeimg(&run, &["save", &run.target, "-o", archive.to_str().unwrap()]),
        BUILD_LIMIT,
    );
    assert_success(&out, "nodeimg save through Podman");
    let out = run.output(&["load", "--input", archive.to_str().unwrap()]);
    assert_success(&out, "nodeimg load into Docker");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        run.target,
        "loaded under the name it was built with"
    );
    let (in_docker, images) = support::block_on(async {
        let docker = support::docker(&run.run_id).await;
        let info = docker.inspect_image(&run.target).await.unwrap().expect("the node image is in Docker");
        (info, pinned_images(&docker, &run.target).await)
    });
    assert_eq!(in_docker.id, info.id, "same image config, same ID");
    assert_eq!(in_docker.labels, info.labels);
    assert_eq!(in_docker.entrypoint, info.entrypoint);
    assert_all_pinned(&images);

    // verify as kind runs clusters on Podman: nodes boot (systemd, kind's boot line), then
    // the fixture's kubeadm refuses `init`; the kept cluster is Podman's, and clean removes it.
    let mut verify =
        podman.nodeimg(&run, &["verify", &run.target, "--nodes", "2", "--keep", "--timeout", "60s"]);
    let out = output_within(&mut verify, BUILD_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.contains("kubeadm init") && last.contains("unsupported: init"), "{stderr}");
    let kept = stderr.lines().find(|l| l.contains("kept cluster ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(kept.contains("`podman exec ") && kept.contains("`nodeimg clean`"), "Podman's CLI: {kept}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.lines().any(|l| l.contains("boot") && l.ends_with("ok")),
        "nodes booted:\n{report}\n{stderr}"
    );
    let running = podman.cli(&[
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=io.nodeimg.build={}", run.run_id),
    ]);
    assert_eq!(running.lines().count(), 2, "two nodes kept:\n{running}");
    for node in running.lines() {
        // kind's /var on Podman: a named volume mounted suid,dev (containerd unpacks there).
        let var = podman.cli(&["exec", node, "sh", "-c", "grep ' /var ' /proc/self/mountinfo"]);
        assert!(!var.contains("nosuid") && !var.contains("nodev") && var.contains("nodeimg-vol-"), "{var}");
    }
    let out = output_within(&mut podman.nodeimg(&run, &["clean"]), COMMAND_LIMIT);
    assert_success(&out, "nodeimg clean through Podman");
    let removed = String::from_utf8_lossy(&out.stdout);
    for node in running.lines() {
        assert!(removed.contains(node), "{node} removed:\n{removed}");
    }
    let left = podman.cli(&["ps", "--all", "--quiet"]);
    assert_eq!(left.trim(), "", "no container left in Podman");
    let networks = podman.cli(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(networks.trim(), "podman", "only Podman's own network left");
    assert_eq!(podman.cli(&["volume", "ls", "--quiet"]).trim(), "", "the nodes' volumes went with them");

    // The temporary tag of a killed `build --verify`, as Podman's CLI names it
    // (`localhost/nodeimg-verify:…`): clean finds it by label and removes the tag only.
    let temp = format!("nodeimg-verify:podman-{}", run.unique);
    podman.cli(&["tag", &run.target, &temp]);
    let out = output_within(&mut podman.nodeimg(&run, &["clean"]), COMMAND_LIMIT);
    assert_success(&out, "nodeimg clean through Podman (temporary tag)");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&temp), "{temp} removed");
    let listed = podman.cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!listed.contains(&temp), "{listed}");
    assert!(listed.lines().any(|l| l.ends_with(&format!("/{}", run.target))), "the image stays: {listed}");
}

/// `ctr images ls` in a throwaway node container of `image`.
async fn pinned_images(docker: &Docker, image: &str) -> String {
    let id = support::with_containerd(docker, image).await;
    let images = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls"]).await.unwrap().stdout;
    // Exit codes come through as they are (nodeimg judges every step by them).
    let failed = docker.exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"]).await.unwrap();
    assert_eq!((failed.code, failed.stdout.as_str(), failed.stderr.as_str()), (3, "out\n", "err\n"));
    docker.remove_container(&id).await.unwrap();
    images
}

fn assert_all_pinned(images: &str) {
    let built = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
        .map(|c| format!("registry.k8s.io/{c}:{VERSION}"));
    for name in built.into_iter().chain(fixtures::needed_images()) {
        assert!(
            images
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("io.cri-containerd.pinned=pinned")),
            "{name} missing or unpinned:\n{images}"
        );
    }
}

#[test]
fn base_image_through_podman() {
    let podman = Podman::start();
    let run = Run::new("podman-base");
    let name = format!("nodeimg-test/base-podman:{}", run.unique);
    let start = Instant::now();
    let out = output_within(&mut podman.nodeimg(&run, &["build", "base-image", "-i", &name]), BUILD_LIMIT);
    assert_success(&out, "build base-image through Podman");
    eprintln!("base image through Podman: {:?}", start.elapsed());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    let config = podman.cli(&[
        "image",
        "inspect",
        &name,
        "--format",
        "{{json .Config.Entrypoint}} {{.Config.StopSignal}}",
    ]);
    assert_eq!(config.trim(), r#"["/usr/local/bin/entrypoint","/sbin/init"] SIGRTMIN+3"#);
    // Found again by its name: a second build is a cache hit.
    let out = output_within(&mut podman.nodeimg(&run, &["build", "base-image", "-i", &name]), COMMAND_LIMIT);
    assert_success(&out, "build base-image through Podman, again");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("debootstrap"), "cached");
    run.assert_clean();
}

#[test]
fn a_missing_socket_is_one_error_line() {
    let run = Run::new("podman-gone");
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}", dir.path().join("podman.sock").display());
    let mut cmd = run.command(&["images", "list", VERSION]);
    let out = output_within(cmd.env("DOCKER_HOST", &host), COMMAND_LIMIT);
    let line = assert_one_error_line(&out, &host);
    assert!(line.contains("cannot reach"), "{line}");
}

#[test]
fn an_engine_with_an_old_api_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("old.sock");
    let _server = OldPodman::serve(&socket);
    let run = Run::new("podman-old");
    let host = format!("unix://{}", socket.display());
    let mut cmd = run.command(&["clean"]);
    let out = output_within(cmd.env("DOCKER_HOST", &host), COMMAND_LIMIT);
    let line = assert_one_error_line(&out, &host);
    assert!(line.contains("Podman 3.4.4 (API 1.40)") && line.contains("needs Engine API 1.41"), "{line}");
}

/// Where the host withholds CAP_SYS_RESOURCE (this sandbox), Podman's default rlimits cannot
/// be applied: one line naming the step and the fix, not the runtime's words. Elsewhere
/// there is nothing to refuse, and the test says so.
#[test]
fn podmans_default_limits_refused_is_one_error_line() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    // Bit 24: CAP_SYS_RESOURCE.
    if u64::from_str_radix(caps, 16).unwrap() & (1 << 24) != 0 {
        eprintln!("skipped: this host grants CAP_SYS_RESOURCE, so Podman's default limits apply");
        return;
    }
    let podman = Podman::start_with(false);
    let run = Run::new("podman-limits");
    let release = fixtures::server_tarball(&Options::default());
    let base = base_into(&podman, &run);
    let mut build = podman.nodeimg(&run, &["build", "node-image", "-i", &run.target, "-b", &base]);
    let out = output_within(build.args(release.build_args()), BUILD_LIMIT);
    let line = assert_one_error_line(&out, "creating the build container");
    assert!(line.contains("Podman cannot raise") && line.contains("default_ulimits"), "{line}");
    assert!(!line.contains("OCI"), "not the runtime's words: {line}");
    assert_eq!(podman.cli(&["ps", "--all", "--quiet"]).trim(), "", "no container left");
    assert_eq!(podman.cli(&["volume", "ls", "--quiet"]).trim(), "", "no volume left");
}
