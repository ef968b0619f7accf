//! Real Kubernetes: Debian's complete upstream v1.20.2 tree, built in host mode with the
//! host's Go, turned into a node image with `--verify`, checked inside, and verified again
//! with `nodeimg verify` (a real control plane: kubeadm init, node Ready, a pod Running),
//! also with a kubelet that cannot start. Slow (a full Go build), so it
//! is ignored in the normal run and enabled with
//!   NODEIMG_REAL_KUBERNETES=1 cargo test --test real_kubernetes -- --ignored
//! (`NODEIMG_REAL_KUBERNETES_DIR` chooses where the tree is prepared; Go's build cache in
//! ~/.cache/go-build makes later runs much faster).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nodeimg::docker::{ContainerSpec, Docker};
use support::{Cleanup, assert_success, fixtures, wait_for};

const VERSION: &str = "v1.20.2";
/// Marks the images this test makes, so a later run knows them from other fixtures'
/// stand-ins under the same names.
const FIXTURE_LABEL: &str = "io.nodeimg.test.real-kubernetes";
const STAGES: [&str; 5] = ["boot", "kubeadm init", "API ready", "node Ready", "pod Running"];

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
        runtime_images(&docker, &base, Path::new(&dir)).await;
    });

    let volumes_before = volumes();
    let started = Instant::now();
    // The control-plane images get the base image as their base: it has glibc and the
    // iptables kube-proxy needs. The bridge CNI, because the kindnetd here is a stand-in.
    let out = support::nodeimg()
        .args(["build", "node-image", "--kube-root", &tree, "--build-mode", "host"])
        .args(["--component-base-image", &base, "-b", &base, "-i", &target])
        .args(["--verify", "--cni", "bridge"])
        .env("NODEIMG_RUN_ID", &run_id)
        .output()
        .unwrap();
    assert_success(&out, "build node-image --verify from Kubernetes v1.20.2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verified nodeimg-verify:"), "{stderr}");
    eprintln!("real Kubernetes node image built and verified in {:?}", started.elapsed());
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.contains("s  ok") || l.contains("verified"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // `nodeimg verify` on its own, for pipelines: JSON with every stage passed.
    let out = support::nodeimg()
        .args(["verify", &target, "--cni", "bridge", "--output", "json"])
        .env("NODEIMG_RUN_ID", &run_id)
        .output()
        .unwrap();
    assert_success(&out, "nodeimg verify");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("nodeimg verify: {report}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["kubernetes_version"], VERSION);
    let names: Vec<&str> =
        report["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, STAGES);
    assert!(report["stages"].as_array().unwrap().iter().all(|s| s["passed"] == true));
    assert_nothing_left(&run_id, &volumes_before);

    // A kubelet that exits at once: kubeadm init gives up after the timeout, the check
    // names that stage, and the node goes away all the same.
    let broken = format!("{target}-broken-kubelet");
    support::runtime().block_on(async {
        let docker = support::docker(&run_id).await;
        let id = docker.create_container(&ContainerSpec::idle(&target)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        let stand_in = "printf '#!/bin/sh\\necho F0101 00:00:00.000000 1 stand-in.go:1] stand-in kubelet: failing on purpose >&2\\nexit 1\\n' > /usr/bin/kubelet";
        assert!(docker.exec(&id, &["sh", "-c", stand_in]).await.unwrap().success());
        let image = docker.commit(&id, &[]).await.unwrap();
        docker.remove_container(&id).await.unwrap();
        docker.tag_image(&image, &broken).await.unwrap();
    });
    let started = Instant::now();
    let out = support::nodeimg()
        .args(["verify", &broken, "--cni", "bridge", "--timeout", "40s"])
        .env("NODEIMG_RUN_ID", &run_id)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("error: verifying") && last.contains("kubeadm init"), "{stderr}");
    assert!(
        stderr.contains("stand-in kubelet: failing on purpose"),
        "the kubelet journal is shown:\n{stderr}"
    );
    assert!(took < Duration::from_secs(40 * 2 + 120), "gave up in time: {took:?}");
    eprintln!("the broken kubelet was caught in {took:?}");
    assert_nothing_left(&run_id, &volumes_before);
    support::runtime().block_on(async {
        support::docker(&run_id).await.remove_image(&broken).await.unwrap();
    });

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

fn volumes() -> Vec<String> {
    let out = Command::new("docker").args(["volume", "ls", "-q"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// No container of the run, no volume that was not there before, no pod cgroup on the host.
fn assert_nothing_left(run_id: &str, volumes_before: &[String]) {
    support::runtime().block_on(async {
        let left = support::docker(run_id).await.list_containers(Some(run_id)).await.unwrap();
        assert!(left.is_empty(), "containers left: {left:?}");
    });
    let new: Vec<String> = volumes().into_iter().filter(|v| !volumes_before.contains(v)).collect();
    assert!(new.is_empty(), "volumes left: {new:?}");
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join("kubelet/kubepods"))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "pod cgroups left on the host: {cgroups:?}");
}

/// The images kubeadm v1.20.2 runs besides the control plane, made here because no
/// registry serves them: pause compiled from the tree, Debian's etcd, a CoreDNS stand-in
/// that answers its probes. The node's sandbox image is that pause too.
async fn runtime_images(docker: &Docker, base: &str, dir: &Path) {
    let scratch = tempfile::tempdir().unwrap();
    let pause_root = scratch.path().join("pause");
    std::fs::create_dir_all(&pause_root).unwrap();
    std::fs::copy(dir.join("pause/pause"), pause_root.join("pause")).unwrap();
    let stream = nodeimg::archive::tar_stream(move |t| nodeimg::archive::append_rootfs(t, &pause_root));
    let changes = vec!["ENTRYPOINT [\"/pause\"]".to_owned(), format!("LABEL {FIXTURE_LABEL}=pause")];
    let id = docker.import_rootfs(stream, changes).await.unwrap();
    for name in ["k8s.gcr.io/pause:3.2", "registry.k8s.io/pause:3.9"] {
        docker.tag_image(&id, name).await.unwrap();
    }
    let etcd = dir.join("etcd/usr/bin/etcd");
    on_base(
        docker,
        base,
        "k8s.gcr.io/etcd:3.4.13-0",
        "etcd",
        &[(&etcd, "usr/local/bin/etcd")],
        &["ENTRYPOINT []", "CMD [\"etcd\"]"],
    )
    .await;
    let coredns = scratch.path().join("coredns");
    std::fs::write(&coredns, COREDNS_STAND_IN).unwrap();
    on_base(
        docker,
        base,
        "k8s.gcr.io/coredns:1.7.0",
        "coredns",
        &[(&coredns, "coredns"), (Path::new("/bin/busybox"), "bin/busybox")],
        &["ENTRYPOINT [\"/coredns\"]", "CMD []"],
    )
    .await;
}

const COREDNS_STAND_IN: &str = "#!/bin/sh\n# CoreDNS stand-in: answers the liveness and readiness probes, serves no DNS.\n\
mkdir -p /tmp/www && echo OK > /tmp/www/health && echo OK > /tmp/www/ready\n\
/bin/busybox httpd -p 8181 -h /tmp/www\nexec /bin/busybox httpd -f -p 8080 -h /tmp/www\n";

/// `name` as the base image plus `files` (host path, path in the image), unless an image
/// this test made is already there.
async fn on_base(
    docker: &Docker,
    base: &str,
    name: &str,
    kind: &str,
    files: &[(&Path, &str)],
    changes: &[&str],
) {
    let made = docker
        .inspect_image(name)
        .await
        .unwrap()
        .is_some_and(|i| i.labels.get(FIXTURE_LABEL).map(String::as_str) == Some(kind));
    if made {
        return;
    }
    let id = docker.create_container(&ContainerSpec::idle(base)).await.unwrap();
    docker.start_container(&id).await.unwrap();
    let files: Vec<(std::path::PathBuf, String)> =
        files.iter().map(|(p, d)| (p.to_path_buf(), d.to_string())).collect();
    let tar = nodeimg::archive::tar_stream(move |tar| {
        for (path, dest) in &files {
            let mut header = tar::Header::new_gnu();
            header.set_size(std::fs::metadata(path)?.len());
            header.set_mode(0o755);
            tar.append_data(&mut header, dest, std::fs::File::open(path)?)?;
        }
        Ok(())
    });
    docker.upload(&id, "/", tar).await.unwrap();
    let mut changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    changes.push(format!("LABEL {FIXTURE_LABEL}={kind}"));
    let image = docker.commit(&id, &changes).await.unwrap();
    docker.remove_container(&id).await.unwrap();
    docker.tag_image(&image, name).await.unwrap();
}
