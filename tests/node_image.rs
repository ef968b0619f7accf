//! `nodeimg build node-image` end to end, from release fixtures, inspected as a user would.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nodeimg::docker::{ContainerSpec, Docker};
use support::fixtures::{self, Options, VERSION};
use support::{Cleanup, assert_success, wait_for};

struct Run {
    run_id: String,
    target: String,
    tmp: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Run {
    fn new(name: &str) -> Self {
        Run {
            run_id: support::run_id(name),
            target: format!("nodeimg-test/node:{name}-{}", std::process::id()),
            tmp: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// nodeimg with this run's id, scratch dir and download cache.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = support::nodeimg();
        cmd.args(args)
            .env("NODEIMG_RUN_ID", &self.run_id)
            .env("TMPDIR", self.tmp.path())
            .env("NODEIMG_CACHE_DIR", self.cache.path());
        cmd
    }

    fn build(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let base = support::base_image();
        let mut cmd = self.command(&["build", "node-image"]);
        cmd.args(args).args(["-i", &self.target]);
        if !args.contains(&"-b") {
            cmd.args(["-b", &base]);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// No container of the run left, the scratch dir gone.
    async fn assert_clean(&self, docker: &Docker) {
        let left = docker.list_containers(Some(&self.run_id)).await.unwrap();
        assert!(left.is_empty(), "containers left: {left:?}");
        let scratch: Vec<_> =
            std::fs::read_dir(self.tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert!(scratch.is_empty(), "scratch left behind: {scratch:?}");
    }
}

async fn host_ready(run_id: &str) -> Docker {
    let docker = support::docker(run_id).await;
    fixtures::ensure_host_images(&docker).await;
    docker
}

/// Starts containerd in a throwaway container of the node image and returns what a user
/// would check: `ctr images ls` output and the files kind reads.
async fn inspect_node(docker: &Docker, image: &str) -> (String, String) {
    let id = support::with_containerd(docker, image).await;
    let images = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls"]).await.unwrap().stdout;
    let script = "/usr/bin/kubeadm version; /usr/bin/kubelet --version; /usr/bin/kubectl --version; \
                  echo VERSION=$(cat /kind/version); ls /kind/manifests; grep -h 'image:' /kind/manifests/*.yaml";
    let files = docker.exec(&id, &["sh", "-c", script]).await.unwrap().stdout;
    docker.remove_container(&id).await.unwrap();
    (images, files)
}

#[test]
fn node_image_from_a_release_tarball() {
    let run = Run::new("file");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&Options::default());
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let proxy = [("HTTPS_PROXY", "http://proxy.invalid:3128"), ("NO_PROXY", "localhost")];
        let out = run.build(&[release.tarball.to_str().unwrap()], &proxy);
        assert_success(&out, "build node-image from a file");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), run.target);
        run.assert_clean(&docker).await;

        let info = docker.inspect_image(&run.target).await.unwrap().expect("the node image exists");
        assert_eq!(info.entrypoint, vec!["/usr/local/bin/entrypoint", "/sbin/init"]);
        assert_eq!(info.labels.get("io.nodeimg.kubernetes.version").map(String::as_str), Some(VERSION));
        assert!(
            !info.env.iter().any(|e| e.contains("proxy.invalid") || e == "NO_PROXY=localhost"),
            "{:?}",
            info.env
        );
        assert!(info.env.contains(&"HTTPS_PROXY=".to_owned()), "the proxy is blanked: {:?}", info.env);

        let (images, files) = inspect_node(&docker, &run.target).await;
        docker.remove_image(&run.target).await.unwrap();
        for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"] {
            let name = format!("registry.k8s.io/{c}:{VERSION}");
            let line = images
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{images}"));
            assert!(line.contains("io.cri-containerd.pinned=pinned"), "{name} is pinned: {line}");
        }
        for image in fixtures::host_images() {
            let name = nodeimg::reference::normalize(&image);
            assert!(
                images.lines().any(|l| l.starts_with(&format!("{name} ")) && l.contains("pinned")),
                "{name} missing or unpinned:\n{images}"
            );
        }
        assert!(!images.contains("-amd64"), "no arch-suffixed names:\n{images}");
        assert_eq!(
            files.matches(&format!("Kubernetes {VERSION}")).count(),
            2,
            "kubelet and kubectl run:\n{files}"
        );
        assert!(files.contains(&format!("GitVersion:\"{VERSION}\"")), "kubeadm runs:\n{files}");
        assert!(files.contains(&format!("VERSION={VERSION}")), "{files}");
        assert!(files.contains("default-cni.yaml") && files.contains("default-storage.yaml"), "{files}");
        assert!(files.contains("image: docker.io/kindest/kindnetd:"), "{files}");
        assert!(files.contains("image: docker.io/kindest/local-path-provisioner:"), "{files}");
    });
}

#[test]
fn node_image_from_a_release_version_over_http() {
    let run = Run::new("release");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&Options::default());
    let served = tempfile::tempdir().unwrap();
    fixtures::release_tree(&release.tarball, served.path(), true);
    let server = fixtures::HttpServer::serve(served.path());
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let out = run.build(&[VERSION], &[("NODEIMG_RELEASE_URL", &server.url)]);
        assert_success(&out, "build node-image from a release");
        run.assert_clean(&docker).await;
        let info = docker.inspect_image(&run.target).await.unwrap().expect("the node image exists");
        docker.remove_image(&run.target).await.unwrap();
        assert_eq!(
            info.labels.get("io.nodeimg.kubernetes.source").map(String::as_str),
            Some(&*format!("release:{VERSION}"))
        );
        let cached: Vec<_> = walk(run.cache.path());
        assert!(
            cached.iter().any(|p| p.to_string_lossy().ends_with("-kubernetes-server-linux-amd64.tar.gz")),
            "download cached: {cached:?}"
        );
        assert!(
            !cached.iter().any(|p| p.to_string_lossy().contains(".part-")),
            "no partial downloads: {cached:?}"
        );
    });
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

/// A failed build: exit 1, one error line naming `needle`, nothing left, no target tag.
fn assert_failed(run: &Run, out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "error names {needle:?}: {}", errors[0]);
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        run.assert_clean(&docker).await;
        assert!(!docker.image_exists(&run.target).await.unwrap(), "no image under {}", run.target);
    });
}

/// A release whose kubeadm lists an image nobody has.
fn unobtainable() -> Options {
    Options { extra_kubeadm_image: Some("registry.k8s.io/nosuch:v0".into()), ..Default::default() }
}

fn failing_file_build(name: &str, opts: Options, needle: &str) {
    let run = Run::new(name);
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&opts);
    support::runtime().block_on(host_ready(&run.run_id));
    let out = run.build(&[release.tarball.to_str().unwrap()], &[]);
    assert_failed(&run, &out, needle);
    assert!(!release.dir.path().parent().unwrap().join("evil").exists());
}

#[test]
fn truncated_tarball_fails() {
    let run = Run::new("truncated");
    let release = fixtures::server_tarball(&Options::default());
    let bytes = std::fs::read(&release.tarball).unwrap();
    std::fs::write(&release.tarball, &bytes[..bytes.len() / 2]).unwrap();
    let out = run.build(&[release.tarball.to_str().unwrap()], &[]);
    assert_failed(&run, &out, "kubernetes-server-linux-amd64.tar.gz");
}

#[test]
fn tarball_without_kubelet_fails() {
    failing_file_build("nokubelet", Options { omit: vec!["kubelet"], ..Default::default() }, "no kubelet");
}

#[test]
fn tarball_with_a_parent_entry_fails() {
    let hostile = vec![("kubernetes/../../evil".to_owned(), None)];
    failing_file_build("dotdot", Options { hostile, ..Default::default() }, "unsafe entry");
}

#[test]
fn tarball_with_an_escaping_symlink_fails() {
    let hostile =
        vec![("kubernetes/server/bin/escape".to_owned(), Some("../../../../etc/passwd".to_owned()))];
    failing_file_build("symlink", Options { hostile, ..Default::default() }, "points outside");
}

#[test]
fn unparsable_version_fails() {
    let opts = Options { version_file: Some(Some("not-a-version\n".into())), ..Default::default() };
    failing_file_build("badversion", opts, "\"not-a-version\"");
}

#[test]
fn unobtainable_required_image_fails() {
    failing_file_build("noimage", unobtainable(), "registry.k8s.io/nosuch:v0");
}

#[test]
fn missing_base_image_fails() {
    let run = Run::new("nobase");
    let release = fixtures::server_tarball(&Options::default());
    let tarball = release.tarball.to_str().unwrap();
    let args = ["build", "node-image", tarball, "-b", "nodeimg-test/nosuch-base:1", "-i", &run.target];
    let out = run.command(&args).output().unwrap();
    assert_failed(&run, &out, "nodeimg-test/nosuch-base:1");
}

#[test]
fn checksum_mismatch_fails() {
    let run = Run::new("checksum");
    let release = fixtures::server_tarball(&Options::default());
    let served = tempfile::tempdir().unwrap();
    fixtures::release_tree(&release.tarball, served.path(), false);
    let server = fixtures::HttpServer::serve(served.path());
    let out = run.build(&[VERSION], &[("NODEIMG_RELEASE_URL", &server.url)]);
    assert_failed(&run, &out, "checksum mismatch");
    assert!(walk(run.cache.path()).is_empty(), "a mismatching download is not kept");
}

#[test]
fn images_list_names_every_image_and_its_source() {
    let run = Run::new("list");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&unobtainable());
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let base = support::base_image();
        let out = run
            .command(&["images", "list", release.tarball.to_str().unwrap(), "-b", &base])
            .output()
            .unwrap();
        assert_success(&out, "images list");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<(&str, &str)> =
            stdout.lines().map(|l| l.split_once('\t').expect("IMAGE<TAB>SOURCE")).collect();
        let from = |image: &str| lines.iter().find(|(i, _)| *i == image).map(|(_, f)| *f);
        assert_eq!(
            from(&format!("registry.k8s.io/kube-apiserver:{VERSION}")),
            Some("built (kube-apiserver.tar)"),
            "{stdout}"
        );
        for image in fixtures::host_images() {
            let name = nodeimg::reference::normalize(&image);
            assert_eq!(from(&name), Some("host docker"), "{name}: {stdout}");
        }
        assert_eq!(from("registry.k8s.io/nosuch:v0"), Some("pull (linux/amd64)"), "{stdout}");
        assert_eq!(lines.len(), 4 + fixtures::host_images().len() + 1, "{stdout}");
        run.assert_clean(&docker).await;
    });
}

#[test]
fn failed_build_leaves_an_existing_tag_alone() {
    let run = Run::new("keeptag");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&unobtainable());
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let base = support::base_image();
        let before = docker.inspect_image(&base).await.unwrap().unwrap().id;
        docker.tag_image(&before, &run.target).await.unwrap();
        // Fails late: after the built images were imported, at the unobtainable one.
        let out = run.build(&[release.tarball.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let after = docker.inspect_image(&run.target).await.unwrap().map(|i| i.id);
        docker.remove_image(&run.target).await.unwrap();
        assert_eq!(after, Some(before), "the previous image keeps the tag");
        run.assert_clean(&docker).await;
    });
}

#[test]
fn ctrl_c_mid_build_removes_container_and_scratch() {
    let run = Run::new("sigint");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&Options::default());
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let base = support::base_image();
        let tarball = release.tarball.to_str().unwrap();
        let child = run
            .command(&["build", "node-image", tarball, "-b", &base, "-i", &run.target])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the build container to run", Duration::from_secs(60), || async {
            let found = docker.list_containers(Some(&run.run_id)).await.unwrap();
            found.into_iter().find(|c| c.state == "running")
        })
        .await;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
        assert_eq!(status.status.code(), Some(130), "{}", String::from_utf8_lossy(&status.stderr));
        run.assert_clean(&docker).await;
        assert!(!docker.image_exists(&run.target).await.unwrap(), "no image under the target tag");
    });
}

/// Builds from `source` served over HTTP and returns the image's source label.
fn build_served(name: &str, lay_out: fn(&Path, &Path), source: impl Fn(&str) -> String) -> String {
    let run = Run::new(name);
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&Options::default());
    let served = tempfile::tempdir().unwrap();
    lay_out(&release.tarball, served.path());
    let server = fixtures::HttpServer::serve(served.path());
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let out = run.build(&[&source(&server.url), "--release-url", &server.url], &[]);
        assert_success(&out, &format!("build node-image from {name}"));
        run.assert_clean(&docker).await;
        let info = docker.inspect_image(&run.target).await.unwrap().expect("the node image exists");
        docker.remove_image(&run.target).await.unwrap();
        assert_eq!(info.labels.get("io.nodeimg.kubernetes.version").map(String::as_str), Some(VERSION));
        info.labels["io.nodeimg.kubernetes.source"].clone()
    })
}

#[test]
fn node_image_from_a_url() {
    let label = build_served(
        "url",
        |tarball, root| fixtures::release_tree(tarball, root, true),
        |url| format!("{url}/{VERSION}/kubernetes-server-linux-amd64.tar.gz"),
    );
    assert!(label.starts_with("http://127.0.0.1:") && label.ends_with(".tar.gz"), "{label}");
}

#[test]
fn node_image_from_a_ci_marker() {
    let label = build_served("ci", fixtures::ci_tree, |_| "ci/latest".to_owned());
    assert_eq!(label, "ci/latest");
}

#[test]
fn build_dir_and_keep_container_keep_what_they_say() {
    let run = Run::new("keep");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&Options::default());
    let build_dir = tempfile::tempdir().unwrap();
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let dir = build_dir.path().to_str().unwrap();
        let out = run.build(&[release.tarball.to_str().unwrap(), "-d", dir, "--keep-container"], &[]);
        assert_success(&out, "build with -d and --keep-container");
        docker.remove_image(&run.target).await.unwrap();
        for kept in ["kubernetes/bin/kubeadm", "kubernetes/images/kube-proxy.tar", "kubernetes/version"] {
            assert!(build_dir.path().join(kept).is_file(), "{kept} kept in the build dir");
        }
        let left = docker.list_containers(Some(&run.run_id)).await.unwrap();
        assert_eq!(left.len(), 1, "the build container is kept: {left:?}");
        assert!(left[0].keep);
        let out = support::nodeimg().args(["clean"]).output().unwrap();
        assert_success(&out, "clean");
        assert!(!docker.container_exists(&left[0].id).await.unwrap(), "clean removes a kept container");
    });
}

#[test]
fn kubernetes_before_1_24_gets_cgroupfs_in_containerd() {
    let run = Run::new("v123");
    let _cleanup = Cleanup(run.run_id.clone());
    let old = Options { version: Some("v1.23.17"), ..Default::default() };
    let release = fixtures::server_tarball(&old);
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        // A base whose containerd uses the systemd driver, as kind's does for 1.24+.
        let base = support::base_image();
        let id = docker.create_container(&ContainerSpec::idle(&base)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        let sed = "sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml";
        assert!(docker.exec(&id, &["sh", "-c", sed]).await.unwrap().success());
        // Tagged, so `nodeimg clean` in a parallel test does not take it for a leftover.
        let systemd_base = format!("nodeimg-test/systemd-base:{}", std::process::id());
        docker.tag_image(&docker.commit(&id, &[]).await.unwrap(), &systemd_base).await.unwrap();
        docker.remove_container(&id).await.unwrap();

        let out = run.build(&[release.tarball.to_str().unwrap(), "-b", &systemd_base], &[]);
        assert_success(&out, "build v1.23 node image");
        let node = docker.create_container(&ContainerSpec::idle(&run.target)).await.unwrap();
        docker.start_container(&node).await.unwrap();
        let config = docker.exec(&node, &["cat", "/etc/containerd/config.toml"]).await.unwrap().stdout;
        let version = docker.exec(&node, &["cat", "/kind/version"]).await.unwrap().stdout;
        docker.remove_container(&node).await.unwrap();
        docker.remove_image(&run.target).await.unwrap();
        docker.remove_image(&systemd_base).await.unwrap();
        assert_eq!(version.trim(), "v1.23.17");
        assert!(config.contains("SystemdCgroup = false"), "{config}");
        assert!(!config.contains("SystemdCgroup = true"), "{config}");
    });
}

#[test]
fn build_with_a_failing_verify_keeps_the_previous_tag() {
    let run = Run::new("verifyfail");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&Options::default());
    support::runtime().block_on(async {
        let docker = host_ready(&run.run_id).await;
        let base = support::base_image();
        let before = docker.inspect_image(&base).await.unwrap().unwrap().id;
        docker.tag_image(&before, &run.target).await.unwrap();
        // The release's kubeadm is a stand-in that cannot `init`: the node boots, then the
        // check fails at its second stage.
        let saved = tempfile::tempdir().unwrap();
        let archive = saved.path().join("node.tar");
        let out = run.build(
            &[
                release.tarball.to_str().unwrap(),
                "--verify",
                "--timeout",
                "60s",
                "--save",
                archive.to_str().unwrap(),
            ],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap();
        assert!(last.starts_with("error: ") && last.contains("verifying the node image"), "{stderr}");
        assert!(last.contains("kubeadm init") && last.contains("unsupported: init"), "{last}");
        assert!(stderr.lines().any(|l| l.contains("boot") && l.ends_with("ok")), "boot passed:\n{stderr}");
        assert!(stderr.lines().any(|l| l.contains("kubeadm init") && l.ends_with("FAILED")), "{stderr}");

        let after = docker.inspect_image(&run.target).await.unwrap().map(|i| i.id);
        docker.remove_image(&run.target).await.unwrap();
        assert_eq!(after, Some(before), "the previous image keeps the tag");
        let written: Vec<_> = std::fs::read_dir(saved.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert!(written.is_empty(), "--save wrote nothing for a rejected image: {written:?}");
        // Neither the rejected image nor its temporary tag is left: no image of this run.
        let images = std::process::Command::new("docker")
            .args([
                "images",
                "-q",
                "--filter",
                &format!("label={}={}", nodeimg::docker::LABEL_BUILD, run.run_id),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&images.stdout).trim(), "", "images of the run left behind");
        run.assert_clean(&docker).await;
    });
}
