//! Runtime lines of the base image (`build base-image --runtime`), the base chosen by the
//! Kubernetes version, and the compatibility check before anything is imported.

mod support;

use std::time::Duration;

use nodeimg::baseimage::runtime::{self, ContainerdVersion};
use nodeimg::progress::{Reporter, Verbosity};
use support::fixtures::{self, Options};
use support::{Run, wait_for};

/// The containerd 2 base, under its default name (a shared cache like [`support::base_image`]).
fn base_runtime_2() -> String {
    support::base_image_runtime_2()
}

#[test]
fn runtime_2_labels_say_what_the_binaries_say() {
    let image = base_runtime_2();
    let run = Run::new("rt2-labels");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let info = docker.inspect_image(&image).await.unwrap().expect("the image exists");
        let label = |key: &str| info.labels.get(key).cloned().unwrap_or_else(|| panic!("label {key}"));
        assert_eq!(label(runtime::LABEL_SUITE), "bookworm");
        assert_eq!(label(runtime::LABEL_RUNTIME), "2");
        assert_eq!(label(runtime::LABEL_CRI), "v1");
        assert!(label(runtime::LABEL_CNI).starts_with("1.9.1"), "{}", label(runtime::LABEL_CNI));

        let id = docker.create_container(&nodeimg::docker::ContainerSpec::idle(&image)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        let containerd = docker.exec(&id, &["containerd", "--version"]).await.unwrap();
        let runc = docker.exec(&id, &["runc", "--version"]).await.unwrap();
        let systemd = docker.exec(&id, &["systemctl", "--version"]).await.unwrap();
        docker.remove_container(&id).await.unwrap();
        // Debian's containerd 2 prints the upstream version only ("2.1.9+unknown").
        let printed = ContainerdVersion::from_version_output(&containerd.stdout).expect("a version");
        assert_eq!(Some(printed.clone()), ContainerdVersion::parse(&label(runtime::LABEL_CONTAINERD)));
        assert_eq!((printed.major, printed.minor), (2, 1), "{}", containerd.stdout);
        // runc prints Debian's version as its commit.
        let commit = runc.stdout.lines().find_map(|l| l.strip_prefix("commit: ")).expect("runc's commit");
        assert_eq!(commit.trim(), label(runtime::LABEL_RUNC));
        assert!(systemd.stdout.starts_with("systemd 252"), "bookworm's systemd: {}", systemd.stdout);
        run.assert_clean();
    });
}

#[test]
fn runtime_2_boots_as_a_node_and_runs_a_pod_with_cni() {
    let image = base_runtime_2();
    let run = Run::new("rt2-boot");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let reporter = Reporter::with_terminal(Verbosity::Quiet, false);
        let node = nodeimg::node::start(&docker, &image, None, &reporter).await.unwrap();
        let exec = |cmd: &'static [&'static str]| {
            let (docker, id) = (docker.clone(), node.id.clone());
            async move { docker.exec(&id, cmd).await.unwrap() }
        };
        wait_for("containerd in the node", Duration::from_secs(90), || async {
            let out = docker.exec(&node.id, &["ctr", "version"]).await.ok()?;
            out.success().then_some(())
        })
        .await;
        let version = exec(&["ctr", "version"]).await;
        let server = version.stdout.split("Server:").nth(1).unwrap_or_default().to_owned();
        assert!(server.contains("Version:  2.1."), "containerd 2.1 answers: {}", version.stdout);

        let tag = fixtures::busybox_into_node(&docker, &node.id, &run.unique).await;

        // A pod-like container on a bridge network of the node's CNI plugins. Its cgroup goes
        // under the node's kubelet root, which the run's cleanup removes from the host.
        let conflist = r#"{"cniVersion":"1.0.0","name":"nodeimg-test","plugins":[
            {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
             "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.77.0/24"}]]}},
            {"type":"portmap","capabilities":{"portMappings":true}}]}"#;
        nodeimg::node::files::write(
            &docker,
            &node.id,
            "/etc/cni/net.d/10-test.conflist",
            conflist.to_owned(),
        )
        .await
        .unwrap();
        let root = node.cgroup_root.clone().unwrap_or_else(|| "kubelet".to_owned());
        let cgroup = format!("/{root}/nodeimg-test-{}", run.unique);
        let reference = tag.clone();
        let name = format!("pod-{}", run.unique);
        let cmd = [
            "timeout",
            "60",
            "ctr",
            "-n",
            "k8s.io",
            "run",
            "--rm",
            "--cni",
            "--cgroup",
            &cgroup,
            &reference,
            &name,
            "/bin/busybox",
            "ip",
            "-4",
            "addr",
            "show",
            "eth0",
        ];
        let pod = docker.exec(&node.id, &cmd).await.unwrap();
        assert!(pod.success(), "ctr run --cni failed: {pod:?}");
        assert!(pod.stdout.contains("inet 10.244.77."), "the pod got an address: {}", pod.stdout);

        if let Some(root) = &node.cgroup_root {
            nodeimg::node::release_host_cgroups(&docker, &node.id, root).await.unwrap();
        }
        docker.remove_container(&node.id).await.unwrap();
        run.assert_clean();
    });
}

#[test]
fn kubernetes_before_1_26_is_refused_on_containerd_2() {
    let run = Run::new("compat-old");
    let release = fixtures::server_tarball(&Options { version: Some("v1.20.2"), ..Default::default() });
    let out = run.build(&[&release.build_args()[..], &["-b", &base_runtime_2()]].concat());
    let line = run.assert_failed(&out, "v1.20.2");
    eprintln!("{line}");
    assert!(line.contains("containerd 2.1.9") && line.contains("--runtime 1.7"), "{line}");
}

#[test]
fn kubernetes_1_37_is_refused_on_containerd_1_7() {
    let run = Run::new("compat-new");
    let release = fixtures::server_tarball(&Options { version: Some("v1.37.0"), ..Default::default() });
    let out = run.build(&[&release.build_args()[..], &["-b", &support::base_image()]].concat());
    let line = run.assert_failed(&out, "v1.37.0");
    eprintln!("{line}");
    assert!(line.contains("containerd 1.7.24") && line.contains("--runtime 2"), "{line}");
}

#[test]
fn skip_compat_check_builds_anyway() {
    let run = Run::new("compat-skip");
    let release = fixtures::server_tarball(&Options { version: Some("v1.37.0"), ..Default::default() });
    let out = run.build(&[&release.build_args()[..], &["--skip-compat-check"]].concat());
    support::assert_success(&out, "build with --skip-compat-check");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--skip-compat-check"));
}

#[test]
fn without_b_the_base_follows_the_kubernetes_version() {
    let base = base_runtime_2();
    let run = Run::new("autobase");
    let release = fixtures::server_tarball(&Options { version: Some("v1.31.0"), ..Default::default() });
    // No -b: the build command adds the tests' 1.7 base only when none is given, so run it bare.
    let mut cmd = run.command(&["build", "node-image", "-i", &run.target]);
    cmd.args(release.build_args());
    let out = support::output_within(&mut cmd, support::BUILD_LIMIT);
    support::assert_success(&out, "build without -b");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("base: containerd 2.1.9 (runtime 2) for Kubernetes v1.31.0"), "{stderr}");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let node = docker.inspect_image(&run.target).await.unwrap().expect("the node image");
        let base = docker.inspect_image(&base).await.unwrap().expect("the base");
        assert_eq!(node.labels.get(runtime::LABEL_CONTAINERD), base.labels.get(runtime::LABEL_CONTAINERD));
    });
}

#[test]
fn runtime_1_6_keeps_bookworms_containerd() {
    let image = support::build_base(&["--runtime", "1.6"]);
    let run = Run::new("rt16");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let labels = docker.inspect_image(&image).await.unwrap().expect("the image exists").labels;
        assert_eq!(labels.get(runtime::LABEL_RUNTIME).map(String::as_str), Some("1.6"));
        let containerd = labels.get(runtime::LABEL_CONTAINERD).expect("containerd's label");
        assert!(containerd.starts_with("1.6.20"), "bookworm's containerd: {containerd}");
        assert_eq!(labels.get(runtime::LABEL_CRI).map(String::as_str), Some("v1,v1alpha2"));
    });
}

#[test]
fn dockerfile_build_takes_the_runtime_line() {
    // Docker Hub is out of reach here: the Dockerfile starts from the 1.7 base (bookworm with
    // apt), and apt still fetches the pinned packages from the real mirror.
    let debian = support::base_image();
    let run = Run::new("rt-dockerfile");
    let target = &run.target;
    let args = ["build", "base-image", "--from", "dockerfile", "--runtime", "2", "--debian-image", &debian];
    let out = run.output(&[&args[..], &["-i", target]].concat());
    support::assert_success(&out, "nodeimg build base-image --from dockerfile --runtime 2");
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let labels = docker.inspect_image(target).await.unwrap().expect("the image exists").labels;
        docker.remove_image(target).await.unwrap();
        assert_eq!(labels.get(runtime::LABEL_RUNTIME).map(String::as_str), Some("2"));
        let containerd = labels.get(runtime::LABEL_CONTAINERD).expect("containerd's label");
        assert!(containerd.starts_with("2.1.9"), "sid's containerd: {containerd}");
        assert_eq!(labels.get(runtime::LABEL_CRI).map(String::as_str), Some("v1"));
        run.assert_clean();
    });
    assert!(run.labelled_images().is_empty(), "the unlabelled intermediate image is gone");
}
