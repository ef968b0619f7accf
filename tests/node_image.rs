//! `nodeimg build node-image` end to end, from release fixtures, inspected as a user would.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nodeimg::docker::{ContainerSpec, Docker};
use support::fixtures::{self, Options, TestImage, VERSION};
use support::{BUILD_LIMIT, COMMAND_LIMIT, Run, assert_success, output_within, wait_for};

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
    let release = fixtures::server_tarball(&Options::default());
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let proxy = [("HTTPS_PROXY", "http://proxy.invalid:3128"), ("NO_PROXY", "localhost")];
        let out = output_within(run.build_command(&release.build_args()).envs(proxy), BUILD_LIMIT);
        assert_success(&out, "build node-image from a file");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), run.target);
        let summary = format!("images: 4 built, {} archive", fixtures::needed_images().len());
        assert!(String::from_utf8_lossy(&out.stderr).contains(&summary), "{summary}");
        run.assert_clean();

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
        // Only the images' own names, and the `sha256:<image ID>` references containerd's CRI
        // plugin keeps for images it has seen (what crictl and kind load look images up by);
        // no `import-<date>@sha256:…` names.
        let names: Vec<&str> = images.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
        assert!(!names.iter().any(|n| n.starts_with("import-")), "extra names in the node: {names:?}");
        let own: Vec<&&str> = names.iter().filter(|n| !n.starts_with("sha256:")).collect();
        assert_eq!(own.len(), 4 + fixtures::needed_images().len(), "one name per image: {names:?}");
        for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"] {
            let name = format!("registry.k8s.io/{c}:{VERSION}");
            let line = images
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{images}"));
            assert!(line.contains("io.cri-containerd.pinned=pinned"), "{name} is pinned: {line}");
        }
        for name in fixtures::needed_images() {
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
    let release = fixtures::server_tarball(&Options::default());
    let server = release.serve(|tarball, root| fixtures::release_tree(tarball, root, true));
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let out = build_version(&run, &release, &server);
        assert_success(&out, "build node-image from a release");
        run.assert_clean();
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

/// Builds [`VERSION`] with `NODEIMG_RELEASE_URL` pointing at `server`.
fn build_version(run: &Run, release: &fixtures::Release, server: &fixtures::HttpServer) -> Output {
    let mut cmd = run.build_command(&[&[VERSION][..], &release.image_args()].concat());
    output_within(cmd.env("NODEIMG_RELEASE_URL", &server.url), BUILD_LIMIT)
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

/// A release whose kubeadm lists an image nobody has.
fn unobtainable() -> Options {
    Options { extra_kubeadm_image: Some("registry.k8s.io/nosuch:v0".into()), ..Default::default() }
}

fn failing_file_build(name: &str, opts: Options, needle: &str) {
    let run = Run::new(name);
    let release = fixtures::server_tarball(&opts);
    let out = run.build(&release.build_args());
    run.assert_failed(&out, needle);
    assert!(!release.dir.path().parent().unwrap().join("evil").exists());
}

#[test]
fn truncated_tarball_fails() {
    let run = Run::new("truncated");
    let release = fixtures::server_tarball(&Options::default());
    let bytes = std::fs::read(&release.tarball).unwrap();
    std::fs::write(&release.tarball, &bytes[..bytes.len() / 2]).unwrap();
    let out = run.build(&release.build_args());
    run.assert_failed(&out, "kubernetes-server-linux-amd64.tar.gz");
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
    let nosuch = format!("nodeimg-test/nosuch-base:{}", run.unique);
    let out = run.build(&[&release.build_args()[..], &["-b", &nosuch]].concat());
    run.assert_failed(&out, &nosuch);
}

#[test]
fn checksum_mismatch_fails() {
    let run = Run::new("checksum");
    let release = fixtures::server_tarball(&Options::default());
    let server = release.serve(|tarball, root| fixtures::release_tree(tarball, root, false));
    let out = build_version(&run, &release, &server);
    run.assert_failed(&out, "checksum mismatch");
    assert!(walk(run.cache.path()).is_empty(), "a mismatching download is not kept");
}

#[test]
fn images_list_names_every_image_and_its_source() {
    let run = Run::new("list");
    let release = fixtures::server_tarball(&unobtainable());
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        // Only the host's Docker has it, under a name of this run's own.
        let host_only = format!("docker.io/nodeimg-test/hostonly:{}", run.unique);
        let _host_only = fixtures::busybox_image(&docker, &host_only).await;
        let base = support::base_image();
        let args = ["images", "list", "-b", &base, "--extra-image", &host_only];
        let out = run.output(&[&args[..], &release.build_args()].concat());
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
        let archive = format!("archive ({})", release.images.display());
        for name in fixtures::needed_images() {
            assert_eq!(from(&name), Some(archive.as_str()), "{name}: {stdout}");
        }
        assert_eq!(from(&host_only), Some("host docker"), "{stdout}");
        assert_eq!(from("registry.k8s.io/nosuch:v0"), Some("pull (linux/amd64)"), "{stdout}");
        assert_eq!(lines.len(), 4 + fixtures::needed_images().len() + 2, "{stdout}");
        run.assert_clean();
    });
}

#[test]
fn failed_build_leaves_an_existing_tag_alone() {
    let run = Run::new("keeptag");
    let release = fixtures::server_tarball(&unobtainable());
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let base = support::base_image();
        let before = docker.inspect_image(&base).await.unwrap().unwrap().id;
        docker.tag_image(&before, &run.target).await.unwrap();
        // Fails late: after the built images were imported, at the unobtainable one.
        let out = run.build(&release.build_args());
        support::assert_one_error_line(&out, "registry.k8s.io/nosuch:v0");
        let after = docker.inspect_image(&run.target).await.unwrap().map(|i| i.id);
        docker.remove_image(&run.target).await.unwrap();
        assert_eq!(after, Some(before), "the previous image keeps the tag");
        run.assert_clean();
    });
}

#[test]
fn ctrl_c_mid_build_removes_container_and_scratch() {
    let run = Run::new("sigint");
    let release = fixtures::server_tarball(&Options::default());
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let child = run
            .build_command(&release.build_args())
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
        let what = "nodeimg build node-image after SIGINT";
        let out = tokio::task::spawn_blocking(move || support::wait_within(child, what, BUILD_LIMIT));
        let out = out.await.unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
        run.assert_clean();
        assert!(!docker.image_exists(&run.target).await.unwrap(), "no image under the target tag");
    });
}

/// Builds from `source` served over HTTP and returns the image's source label.
fn build_served(name: &str, lay_out: fn(&Path, &Path), source: impl Fn(&str) -> String) -> String {
    let run = Run::new(name);
    let release = fixtures::server_tarball(&Options::default());
    let server = release.serve(lay_out);
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let source = source(&server.url);
        let out = run.build(&[&[&source, "--release-url", &server.url][..], &release.image_args()].concat());
        assert_success(&out, &format!("build node-image from {name}"));
        run.assert_clean();
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
    let release = fixtures::server_tarball(&Options::default());
    let build_dir = tempfile::tempdir().unwrap();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let dir = build_dir.path().to_str().unwrap();
        let out = run.build(&[&release.build_args()[..], &["-d", dir, "--keep-container"]].concat());
        assert_success(&out, "build with -d and --keep-container");
        docker.remove_image(&run.target).await.unwrap();
        for kept in ["kubernetes/bin/kubeadm", "kubernetes/images/kube-proxy.tar", "kubernetes/version"] {
            assert!(build_dir.path().join(kept).is_file(), "{kept} kept in the build dir");
        }
        let left = docker.list_containers(Some(&run.run_id)).await.unwrap();
        assert_eq!(left.len(), 1, "the build container is kept: {left:?}");
        assert!(left[0].keep);
        let out = output_within(support::nodeimg().arg("clean"), COMMAND_LIMIT);
        assert_success(&out, "clean");
        assert!(!docker.container_exists(&left[0].id).await.unwrap(), "clean removes a kept container");
    });
}

#[test]
fn kubernetes_1_24_and_later_get_the_systemd_driver_in_containerd() {
    // kind configures the kubelet with cgroupDriver: systemd from 1.24 on; the tests' base
    // says cgroupfs, so the build must switch runc to systemd or kind's kubelet and
    // containerd disagree.
    let run = Run::new("v130cg");
    let release = fixtures::server_tarball(&Options::default());
    assert_success(&run.build(&release.build_args()), "build v1.30 node image");
    let config = support::docker_cli(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &run.target,
        "/etc/containerd/config.toml",
    ]);
    assert!(config.contains("SystemdCgroup = true"), "{config}");
    assert!(!config.contains("SystemdCgroup = false"), "{config}");
    let base = support::docker_cli(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &support::base_image(),
        "/etc/containerd/config.toml",
    ]);
    assert!(
        base.contains("SystemdCgroup = false"),
        "the base says cgroupfs, so the build changed it:\n{base}"
    );
}

#[test]
fn kubernetes_before_1_24_gets_cgroupfs_in_containerd() {
    let run = Run::new("v123");
    let old = Options { version: Some("v1.23.17"), ..Default::default() };
    let release = fixtures::server_tarball(&old);
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        // A base whose containerd uses the systemd driver, as kind's does for 1.24+.
        let base = support::base_image();
        let id = docker.create_container(&ContainerSpec::idle(&base)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        let sed = "sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml";
        assert!(docker.exec(&id, &["sh", "-c", sed]).await.unwrap().success());
        // Tagged, so `nodeimg clean` in a parallel test does not take it for a leftover.
        let systemd_base = format!("nodeimg-test/systemd-base:{}", run.unique);
        let committed = docker.commit(&id, &[]).await.unwrap();
        let _systemd_base = TestImage::new(&systemd_base, &committed);
        docker.tag_image(&committed, &systemd_base).await.unwrap();
        docker.remove_container(&id).await.unwrap();

        let out = run.build(&[&release.build_args()[..], &["-b", &systemd_base]].concat());
        assert_success(&out, "build v1.23 node image");
        let node = docker.create_container(&ContainerSpec::idle(&run.target)).await.unwrap();
        docker.start_container(&node).await.unwrap();
        let config = docker.exec(&node, &["cat", "/etc/containerd/config.toml"]).await.unwrap().stdout;
        let version = docker.exec(&node, &["cat", "/kind/version"]).await.unwrap().stdout;
        docker.remove_container(&node).await.unwrap();
        docker.remove_image(&run.target).await.unwrap();
        assert_eq!(version.trim(), "v1.23.17");
        assert!(config.contains("SystemdCgroup = false"), "{config}");
        assert!(!config.contains("SystemdCgroup = true"), "{config}");
    });
}

#[test]
fn build_with_a_failing_verify_keeps_the_previous_tag() {
    let run = Run::new("verifyfail");
    let release = fixtures::server_tarball(&Options::default());
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let base = support::base_image();
        let before = docker.inspect_image(&base).await.unwrap().unwrap().id;
        docker.tag_image(&before, &run.target).await.unwrap();
        // The release's kubeadm is a stand-in that cannot `init`: the node boots, then the
        // check fails at its second stage.
        let saved = tempfile::tempdir().unwrap();
        let archive = saved.path().join("node.tar");
        let verify = ["--verify", "--timeout", "60s", "--save", archive.to_str().unwrap()];
        let out = run.build(&[&release.build_args()[..], &verify].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = support::assert_one_error_line(&out, "verifying the node image");
        assert!(last.contains("kubeadm init") && last.contains("unsupported: init"), "{last}");
        assert!(stderr.lines().any(|l| l.contains("boot") && l.ends_with("ok")), "boot passed:\n{stderr}");
        assert!(stderr.lines().any(|l| l.contains("kubeadm init") && l.ends_with("FAILED")), "{stderr}");

        let after = docker.inspect_image(&run.target).await.unwrap().map(|i| i.id);
        docker.remove_image(&run.target).await.unwrap();
        assert_eq!(after, Some(before), "the previous image keeps the tag");
        let written: Vec<_> = std::fs::read_dir(saved.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert!(written.is_empty(), "--save wrote nothing for a rejected image: {written:?}");
        // Neither the rejected image nor its temporary tag is left: no image of this run.
        assert_eq!(run.labelled_images(), "", "images of the run left behind");
        run.assert_clean();
    });
}
