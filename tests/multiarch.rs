//! Builds for another architecture than the host's (arm64 on amd64, through qemu's
//! binfmt_misc handler that scripts/setup.sh registers): the base image, one node image per
//! `--arch`, and the refusals (no handler, a preloaded image of the wrong architecture).

mod support;

use nodeimg::docker::{ContainerSpec, Docker};
use support::arches::{TwoArches, copy_out, e_machine, lay_out};
use support::fixtures::{self, ImageArchive, Options, TestImage, VERSION};
use support::{RemoveImage, Run, assert_success};

/// Tags `image` as `nodeimg-test/base:<unique>-<arch>`, removed when dropped.
async fn base_for(docker: &Docker, run: &Run, image: &str, arch: &str) -> TestImage {
    let name = format!("nodeimg-test/base:{}-{arch}", run.unique);
    let id = docker.inspect_image(image).await.unwrap().expect("the base exists").id;
    let guard = TestImage::new(&name, &id);
    docker.tag_image(&id, &name).await.unwrap();
    guard
}

/// `ctr content get DIGEST` in container `id`, as JSON.
async fn blob(docker: &Docker, id: &str, digest: &str) -> serde_json::Value {
    let out = docker.exec(id, &["ctr", "-n", "k8s.io", "content", "get", digest]).await.unwrap();
    assert!(out.success(), "{digest}: {out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{digest} is not JSON ({e}): {}", out.stdout))
}

/// The image config of `name` in the node's containerd (its manifest's `config` blob);
/// `table` is `ctr images ls` output, whose third column is the manifest's digest.
async fn config_of(docker: &Docker, id: &str, table: &str, name: &str) -> serde_json::Value {
    let row = table.lines().find(|l| l.split_whitespace().next() == Some(name)).expect("listed");
    let digest = row.split_whitespace().nth(2).unwrap();
    let manifest = blob(docker, id, digest).await;
    let config = manifest["config"]["digest"].as_str().unwrap_or_else(|| panic!("{name}: {manifest}"));
    blob(docker, id, config).await
}

#[test]
fn arm64_base_image_runs_under_qemu() {
    let base = support::base_image_arm64();
    let run = Run::new("arm64base");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let info = docker.inspect_image(&base).await.unwrap().unwrap();
        assert_eq!(info.architecture, "arm64");
        assert_eq!(info.labels.get("io.nodeimg.base.arch").map(String::as_str), Some("arm64"));
        let amd64 = docker.inspect_image(&support::base_image()).await.unwrap().unwrap();
        assert_ne!(amd64.labels.get("io.nodeimg.base.key"), info.labels.get("io.nodeimg.base.key"));
        let id = docker.create_container(&ContainerSpec::idle(&base)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        let out = docker.exec(&id, &["sh", "-c", "uname -m; containerd --version"]).await.unwrap();
        docker.remove_container(&id).await.unwrap();
        assert!(out.success(), "{out:?}");
        assert!(out.stdout.starts_with("aarch64\n"), "{}", out.stdout);
    });
    run.assert_clean();
}

#[test]
fn one_node_image_per_arch() {
    let (amd64_base, arm64_base) = (support::base_image(), support::base_image_arm64());
    let run = Run::new("multiarch");
    let targets: Vec<String> = ["amd64", "arm64"].iter().map(|a| format!("{}-{a}", run.target)).collect();
    let _remove: Vec<RemoveImage> = targets.iter().cloned().map(RemoveImage).collect();
    let two = TwoArches::serve(&run, &arm64_base);
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let _bases = (
            base_for(&docker, &run, &amd64_base, "amd64").await,
            base_for(&docker, &run, &arm64_base, "arm64").await,
        );
        let base = format!("nodeimg-test/base:{}-{{arch}}", run.unique);
        let started = std::time::Instant::now();
        let mut cmd = run.command(&["build", "node-image", VERSION, "-i", &run.target, "-b", &base]);
        cmd.args(["--arch", "amd64,arm64", "--release-url", &two.server.url, "--image-archive"])
            .arg(&two.archive);
        let out = support::output_within(&mut cmd, support::EMULATED_BUILD_LIMIT);
        assert_success(&out, "build node-image --arch amd64,arm64");
        eprintln!("amd64+arm64 node images built in {:?}", started.elapsed());
        let printed: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(printed, targets);
        run.assert_clean();
        assert!(!docker.image_exists(&run.target).await.unwrap(), "no image under the name as given");

        for (target, arch) in targets.iter().zip(["amd64", "arm64"]) {
            let info = docker.inspect_image(target).await.unwrap().expect("the node image exists");
            assert_eq!(info.architecture, arch, "{target}");
        }
        // The arm64 node: an aarch64 kubelet, and only arm64 images in its containerd.
        let kubelet = run.files.path().join("kubelet");
        copy_out(&run, &targets[1], "/usr/bin/kubelet", &kubelet);
        assert_eq!(e_machine(&std::fs::read(&kubelet).unwrap()), 183, "EM_AARCH64");
        let id = support::with_containerd(&docker, &targets[1]).await;
        let refs = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls", "-q"]).await.unwrap().stdout;
        let names: Vec<&str> =
            refs.lines().filter(|r| !r.contains("@sha256:") && !r.starts_with("sha256:")).collect();
        assert!(names.len() >= fixtures::needed_images().len() + 4, "{refs}");
        let table = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls"]).await.unwrap().stdout;
        for name in names {
            let config = config_of(&docker, &id, &table, name).await;
            assert_eq!(config["architecture"], "arm64", "{name}");
        }
        docker.remove_container(&id).await.unwrap();
    });
}

#[test]
fn a_missing_binfmt_handler_is_refused_before_anything_runs() {
    let run = Run::new("nobinfmt");
    let foreign = if nodeimg::platform::host_architecture() == "arm64" { "amd64" } else { "arm64" };
    // A base that does not exist: the check comes before anything looks for it.
    let mut cmd = run.build_command(&["v1.30.0", "--arch", foreign, "-b", "nodeimg-test/nobase:1"]);
    cmd.env(nodeimg::platform::BINFMT_DIR_ENV, "/nonexistent");
    let out = support::output_within(&mut cmd, support::COMMAND_LIMIT);
    let line = run.assert_failed(&out, "binfmt_misc");
    assert!(line.contains(&format!("building {foreign} on this")), "{line}");
    let mut base = run.command(&["build", "base-image", "--arch", foreign]);
    base.env(nodeimg::platform::BINFMT_DIR_ENV, "/nonexistent");
    let out = support::output_within(&mut base, support::COMMAND_LIMIT);
    run.assert_failed(&out, "mount -t binfmt_misc");
}

#[test]
fn a_preloaded_image_of_another_arch_is_refused_unless_allowed() {
    let run = Run::new("foreign");
    let release = fixtures::server_tarball(&Options::default());
    let foreign = format!("nodeimg-test/foreign:{}", run.unique);
    let dir = tempfile::tempdir().unwrap();
    let layer = nodeimg::archive::image::write_layer(
        &fixtures::busybox_root(dir.path()),
        &dir.path().join("layer.tar"),
    )
    .unwrap();
    let path = dir.path().join("foreign.tar");
    fixtures::write_images_tar_for(&layer, std::slice::from_ref(&foreign), "arm64", &path);
    let archive = ImageArchive::at(path, dir);
    let mut args = release.build_args().to_vec();
    args.extend(["--image-archive", archive.path.to_str().unwrap(), "--extra-image", &foreign]);

    let out = run.build(&args);
    let line = run.assert_failed(&out, &format!("docker.io/{foreign} is linux/arm64"));
    assert!(line.contains("architecture amd64") && line.contains("--allow-foreign-images"), "{line}");

    args.push("--allow-foreign-images");
    let out = run.build(&args);
    assert_success(&out, "build node-image --allow-foreign-images");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned: Vec<&str> = stderr.lines().filter(|l| l.contains("--allow-foreign-images")).collect();
    assert_eq!(warned.len(), 1, "one warning line per foreign image:\n{stderr}");
    assert!(warned[0].contains(&foreign) && warned[0].contains("linux/arm64"), "{}", warned[0]);
    run.assert_clean();
}

#[test]
fn a_failing_arch_tags_nothing() {
    let run = Run::new("archfail");
    let targets: Vec<String> = ["amd64", "arm64"].iter().map(|a| format!("{}-{a}", run.target)).collect();
    let _remove: Vec<RemoveImage> = targets.iter().cloned().map(RemoveImage).collect();
    // amd64 builds; arm64's release is not served, so it fails after amd64 is committed.
    let amd64 = fixtures::server_tarball(&Options::default());
    let served = tempfile::tempdir().unwrap();
    lay_out(served.path(), &[("amd64", &amd64.tarball)]);
    let server = fixtures::HttpServer::serve(served.path());
    let base = support::base_image();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let _base = base_for(&docker, &run, &base, "amd64").await;
        let template = format!("nodeimg-test/base:{}-{{arch}}", run.unique);
        let mut cmd = run.command(&["build", "node-image", VERSION, "-i", &run.target, "-b", &template]);
        cmd.args(["--arch", "amd64,arm64", "--release-url", &server.url]).args(amd64.image_args());
        let out = support::output_within(&mut cmd, support::BUILD_LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("✓ committing the node image"), "amd64 got as far as its commit:\n{stderr}");
        run.assert_failed(&out, "for arm64; no image of this run was tagged");
        for target in &targets {
            assert!(!docker.image_exists(target).await.unwrap(), "no image under {target}");
        }
        assert_eq!(run.labelled_images(), "", "the amd64 image made on the way is gone");
    });
}
