//! Real Kubernetes: Debian's complete upstream v1.20.2 tree, built in host mode with the
//! host's Go, turned into a node image, and checked inside. Slow (a full Go build), so it
//! is ignored in the normal run and enabled with
//!   NODEIMG_REAL_KUBERNETES=1 cargo test --test real_kubernetes -- --ignored
//! (`NODEIMG_REAL_KUBERNETES_DIR` chooses where the tree is prepared; Go's build cache in
//! ~/.cache/go-build makes later runs much faster).

mod support;

use std::process::Command;
use std::time::Duration;

use nodeimg::docker::ContainerSpec;
use support::{Cleanup, assert_success, fixtures, wait_for};

const VERSION: &str = "v1.20.2";
const COMPONENT_BASE: &str = "nodeimg-test/component-base:1";
/// What the real kubeadm v1.20.2 lists besides the control plane; no registry serves them
/// here, so the test provides them as local images.
const KUBEADM_EXTRAS: [&str; 3] =
    ["k8s.gcr.io/pause:3.2", "k8s.gcr.io/etcd:3.4.13-0", "k8s.gcr.io/coredns:1.7.0"];

#[test]
#[ignore = "builds Kubernetes v1.20.2 from source (minutes); run with NODEIMG_REAL_KUBERNETES=1 and --ignored"]
fn node_image_from_real_kubernetes_v1_20_2() {
    assert_eq!(
        std::env::var("NODEIMG_REAL_KUBERNETES").as_deref(),
        Ok("1"),
        "set NODEIMG_REAL_KUBERNETES=1 to run this test"
    );
    let dir = std::env::var("NODEIMG_REAL_KUBERNETES_DIR")
        .unwrap_or_else(|_| "/var/tmp/nodeimg-kubernetes-v1.20.2".into());
    let prepare = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/real-kubernetes/prepare.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    assert_success(&prepare, "tests/real-kubernetes/prepare.sh");
    let tree = String::from_utf8_lossy(&prepare.stdout).lines().last().unwrap().to_owned();

    let run_id = support::run_id("real");
    let _cleanup = Cleanup(run_id.clone());
    let target = format!("nodeimg-test/node:{VERSION}-{}", std::process::id());
    let base = support::base_image();
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        fixtures::ensure_host_images(&docker).await;
        let scratch = tempfile::tempdir().unwrap();
        let root = fixtures::busybox_root(scratch.path());
        for image in KUBEADM_EXTRAS.iter().chain([&COMPONENT_BASE]) {
            if !docker.image_exists(image).await.unwrap() {
                let root = root.clone();
                let stream = nodeimg::archive::tar_stream(move |t| nodeimg::archive::append_rootfs(t, &root));
                let id = docker.import_rootfs(stream, Vec::new()).await.unwrap();
                docker.tag_image(&id, image).await.unwrap();
            }
        }
    });

    let started = std::time::Instant::now();
    let out = support::nodeimg()
        .args(["build", "node-image", "--kube-root", &tree, "--build-mode", "host"])
        .args(["--component-base-image", &base, "-b", &base, "-i", &target])
        .env("NODEIMG_RUN_ID", &run_id)
        .output()
        .unwrap();
    assert_success(&out, "build node-image from Kubernetes v1.20.2");
    eprintln!("real Kubernetes node image built in {:?}", started.elapsed());

    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        let id = docker.create_container(&ContainerSpec::idle(&target)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        let run = |cmd: &'static str| {
            let docker = docker.clone();
            let id = id.clone();
            async move { docker.exec(&id, &["sh", "-c", cmd]).await.unwrap().stdout.trim().to_owned() }
        };
        let kubelet = run("kubelet --version").await;
        let kubeadm = run("kubeadm version -o short").await;
        let kind_version = run("cat /kind/version").await;
        let wanted = run("kubeadm config images list --kubernetes-version v1.20.2").await;
        docker.exec(&id, &["sh", "-c", "containerd >/dev/null 2>&1 &"]).await.unwrap();
        wait_for("containerd", Duration::from_secs(30), || async {
            docker.exec(&id, &["ctr", "version"]).await.ok().filter(|o| o.success())
        })
        .await;
        let present = run("ctr -n k8s.io images ls -q").await;
        docker.remove_container(&id).await.unwrap();
        docker.remove_image(&target).await.unwrap();

        assert_eq!(kubelet, format!("Kubernetes {VERSION}"));
        assert_eq!(kubeadm, VERSION);
        assert_eq!(kind_version, VERSION);
        assert_eq!(wanted.lines().count(), 7, "kubeadm lists seven images: {wanted}");
        // kubeadm's pause entry gives way to the sandbox image containerd is configured
        // with (registry.k8s.io/pause:3.9 in the base image), as in kind's build.
        for image in wanted.lines().filter(|i| !i.contains("/pause:")).chain(["registry.k8s.io/pause:3.9"]) {
            assert!(present.lines().any(|l| l == image), "{image} missing from the node:\n{present}");
        }
    });
}
