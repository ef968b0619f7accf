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
use support::fixtures::{self, ImageArchive, TestImage};
use support::{BUILD_LIMIT, Run, assert_success, docker_cli, output_within, wait_for};

const VERSION: &str = "v1.20.2";
/// `nodeimg verify --nodes 2`: a control plane and a worker that joins it.
const STAGES: [&str; 8] = [
    "boot",
    "kubeadm init",
    "API ready",
    "CNI and storage",
    "kubeadm join",
    "node Ready",
    "DNS",
    "pod Running",
];
/// For preparing the tree and for the build (a full Go build on 2 cores, then --verify).
const REAL_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The tests share one tree: its builds (upstream's make) take turns.
static TREE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The prepared tree (tests/real-kubernetes/prepare.sh, idempotent) and its directory.
fn prepared_tree() -> (String, String) {
    assert_eq!(
        std::env::var("NODEIMG_REAL_KUBERNETES").as_deref(),
        Ok("1"),
        "set NODEIMG_REAL_KUBERNETES=1 to run this test"
    );
    let dir = std::env::var("NODEIMG_REAL_KUBERNETES_DIR")
        .unwrap_or_else(|_| "/var/tmp/nodeimg-kubernetes-v1.20.2".into());
    let mut prepare = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/real-kubernetes/prepare.sh"));
    let prepare = output_within(prepare.arg(&dir), REAL_LIMIT);
    assert_success(&prepare, "tests/real-kubernetes/prepare.sh");
    let tree = String::from_utf8_lossy(&prepare.stdout).lines().last().unwrap().to_owned();
    (dir, tree)
}

#[test]
#[ignore = "builds Kubernetes v1.20.2 from source (minutes); run with NODEIMG_REAL_KUBERNETES=1 and --ignored"]
fn node_image_from_real_kubernetes_v1_20_2() {
    let _tree = TREE.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, tree) = prepared_tree();

    let run = Run::new("real");
    let target = &run.target;
    let base = support::base_image();
    let all: Vec<String> =
        nodeimg::nodeimage::manifests::default_images().map(nodeimg::reference::normalize).collect();
    let kindnetd = all.iter().find(|i| i.contains("kindnetd")).expect("the manifests name kindnetd").clone();
    let runtime = support::block_on(runtime_images(&run, &base, Path::new(&dir), &kindnetd));
    // local-path's images as busybox stand-ins (applied, never waited for); kindnetd's
    // stand-in is in the runtime archive.
    let manifests: Vec<String> = all.into_iter().filter(|i| *i != kindnetd).collect();
    let manifests = ImageArchive::new(&manifests);

    let volumes_before = volumes();
    let started = Instant::now();
    // The control-plane images get the base image as their base: it has glibc and the
    // iptables kube-proxy needs.
    let mut build = run.build_command(&["--kube-root", &tree, "--build-mode", "host"]);
    build
        .args(["--component-base-image", &base, "--verify", "--cni", "bridge"])
        .args(["--image-archive", runtime.path.to_str().unwrap()])
        .args(["--image-archive", manifests.path.to_str().unwrap()]);
    let out = output_within(&mut build, REAL_LIMIT);
    assert_success(&out, "build node-image --verify from Kubernetes v1.20.2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("verified nodeimg-verify:"), "{stderr}");
    // The four control-plane images are built; pause, etcd, CoreDNS and the manifests'
    // three images all come from the archives, none from the host's Docker.
    assert!(
        stderr.contains("images: 4 built, 6 archive\n"),
        "every other image comes from an archive:\n{stderr}"
    );
    eprintln!("real Kubernetes node image built and verified in {:?}", started.elapsed());
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.contains("s  ok") || l.contains("verified"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // `nodeimg verify` on its own, for pipelines: JSON with every stage passed; two nodes,
    // the worker joined with kubeadm join, the image's own CNI manifest applied as kind does
    // (its kindnetd stand-in fails unless kind's templating filled it in), a name resolved
    // through the node's resolver from a dnsPolicy: Default pod, the test pod Running on the
    // worker.
    let out = run.output(&["verify", target, "--cni", "default", "--nodes", "2", "--output", "json"]);
    assert_success(&out, "nodeimg verify --nodes 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("running a test pod on") && l.contains("-worker: Running")),
        "{stderr}"
    );
    assert!(stderr.lines().any(|l| l.contains("waiting for 2 nodes to be Ready: Ready")), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("from a dnsPolicy: Default pod") && l.contains(": resolved")),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("nodeimg verify: {report}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["cni"], "default");
    assert_eq!(report["kubernetes_version"], VERSION);
    let names: Vec<&str> =
        report["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, STAGES);
    assert!(report["stages"].as_array().unwrap().iter().all(|s| s["passed"] == true));
    assert_nothing_left(&run, &volumes_before);

    // The same image through Podman (issue 15): saved from Docker, loaded into a Podman
    // service of the test's own (its store in a temp dir), verified there as kind on Podman
    // would run it.
    {
        let podman = support::podman::Podman::start();
        let archive = run.files.path().join("real-node.tar");
        let archive = archive.to_str().unwrap();
        assert_success(&run.output(&["save", target, "-o", archive]), "nodeimg save");
        let load = output_within(&mut podman.nodeimg(&run, &["load", "--input", archive]), REAL_LIMIT);
        assert_success(&load, "nodeimg load into Podman");
        std::fs::remove_file(archive).unwrap();
        let started = Instant::now();
        // The DNS stage may check nothing through Podman (below): without --allow-skipped
        // that is a failure (exit 1, one line naming the stage), with every other stage passed.
        let verify = ["verify", target, "--cni", "default", "--output", "json"];
        let out = output_within(&mut podman.nodeimg(&run, &verify), REAL_LIMIT);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("engine: Podman"), "{stderr}");
        // Podman's CNI networks resolve container names only with a DNS plugin (netavark's
        // aardvark-dns, CNI's dnsname); without one, the DNS stage must say why it checked
        // nothing rather than pass silently or fail.
        let stages = report["stages"].as_array().unwrap();
        assert!(stages.iter().filter(|s| s["name"] != "DNS").all(|s| s["passed"] == true), "{report}");
        let dns = stages.iter().find(|s| s["name"] == "DNS").unwrap();
        if let Some(why) = dns.get("skipped") {
            assert!(why.as_str().unwrap().contains("does not know the node names"), "{dns}");
            assert_eq!(dns["state"], "skipped", "a skipped stage is not reported as passed: {dns}");
            assert_eq!(dns["passed"], false, "{dns}");
            assert_eq!(report["passed"], false, "{report}");
            assert_eq!(out.status.code(), Some(1), "a skipped stage is no pass: {stderr}");
            let last = stderr.lines().last().unwrap();
            assert!(last.contains("stage DNS was skipped") && last.contains("--allow-skipped"), "{last}");
            eprintln!("through Podman, the DNS stage was skipped, and verify failed: {last}");
        } else {
            assert_success(&out, "nodeimg verify through Podman");
            assert_eq!(report["passed"], true, "{report}");
        }
        eprintln!("verified through Podman in {:?}: {report}", started.elapsed());
    }
    assert_nothing_left(&run, &volumes_before);

    // A variant with a rebuilt kubelet (issue 12's developer loop): the tree's kubelet
    // relinked with another version string by upstream's make, put in with
    // `build node-variant --with-kubelet`, verified as a cluster; its kubelet says the new
    // version. Go's cache makes this a relink, not a rebuild.
    {
        let variant_version = "v1.20.2-nodeimg.variant";
        // The tree is a `git archive` export whose version.sh fixes KUBE_GIT_VERSION; a
        // version file is what upstream's build reads before that.
        let version_file = run.files.path().join("kube-version-defs");
        std::fs::write(
            &version_file,
            format!(
                "KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'\nKUBE_GIT_TREE_STATE='clean'\n\
                 KUBE_GIT_VERSION='{variant_version}'\nKUBE_GIT_MAJOR='1'\nKUBE_GIT_MINOR='20'\n"
            ),
        )
        .unwrap();
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(&tree)
            .args(["all", "WHAT=cmd/kubelet", "KUBE_BUILD_PLATFORMS=linux/amd64"])
            .env("KUBE_GIT_VERSION_FILE", &version_file)
            .env_remove("OUT_DIR");
        let started = Instant::now();
        assert_success(&output_within(&mut make, REAL_LIMIT), "relinking the kubelet with another version");
        let relinked = started.elapsed();
        let kubelet = run.files.path().join("kubelet");
        std::fs::copy(Path::new(&tree).join("_output/local/bin/linux/amd64/kubelet"), &kubelet).unwrap();
        let variant = format!("{target}-variant");
        let _variant = support::RemoveImage(variant.clone());
        let started = Instant::now();
        let args = [
            "build",
            "node-variant",
            "--from-node",
            target,
            "--with-kubelet",
            kubelet.to_str().unwrap(),
            "-i",
            &variant,
        ];
        assert_success(&run.output(&args), "build node-variant --with-kubelet");
        let made = started.elapsed();
        let out = run.output(&["verify", &variant, "--cni", "bridge", "--output", "json"]);
        assert_success(&out, "nodeimg verify of the variant");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["passed"], true, "{report}");
        let version = docker_cli(&["run", "--rm", "--entrypoint", "kubelet", &variant, "--version"]);
        assert_eq!(version.trim(), format!("Kubernetes {variant_version}"));
        eprintln!(
            "kubelet relinked in {relinked:?}, variant made in {made:?}, verified in {}s",
            report["total_seconds"]
        );
    }
    assert_nothing_left(&run, &volumes_before);

    // The same relinked kubelet into a running two-node cluster in place (issue 24), and a
    // broken one rolled back on the first node while the second stays untouched.
    update_a_running_cluster(&run, target, &run.files.path().join("kubelet"), "v1.20.2-nodeimg.variant");
    assert_nothing_left(&run, &volumes_before);

    // A kubelet that exits at once: kubeadm init gives up after the timeout, the check
    // names that stage, and the node goes away all the same.
    let broken = format!("{target}-broken-kubelet");
    let _broken = support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let stand_in = "printf '#!/bin/sh\\necho F0101 00:00:00.000000 1 stand-in.go:1] stand-in kubelet: failing on purpose >&2\\nexit 1\\n' > /usr/bin/kubelet";
        modified_copy(&docker, target, &broken, Vec::new(), stand_in).await
    });
    let started = Instant::now();
    let out = run.output(&["verify", &broken, "--cni", "bridge", "--timeout", "40s"]);
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
    assert_nothing_left(&run, &volumes_before);
    drop(_broken);

    // A pause image that is not one (a busybox stand-in under the sandbox image's name, as a
    // test suite once left in the host's Docker): every pod sandbox exits at once. verify
    // must say so, naming the image and its digest, well before kubeadm's own timeout.
    let stand_in_pause = format!("{target}-broken-pause");
    let _stand_in_pause = support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let archive = fixtures::ImageArchive::new(&["registry.k8s.io/pause:3.9".to_owned()]);
        let tar = std::fs::read(&archive.path).unwrap();
        let swap = "containerd >/dev/null 2>&1 & for i in $(seq 1 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done; \
                    ctr -n k8s.io images rm registry.k8s.io/pause:3.9 >/dev/null; \
                    ctr -n k8s.io images import --no-unpack /tmp/pause.tar && rm /tmp/pause.tar && \
                    pkill -TERM -x containerd; for i in $(seq 1 100); do ps -C containerd -o stat= | grep -qv '^Z' || exit 0; sleep 0.1; done; exit 1";
        modified_copy(&docker, target, &stand_in_pause, vec![("tmp/pause.tar", tar)], swap).await
    });
    let started = Instant::now();
    let out = run.output(&["verify", &stand_in_pause, "--cni", "bridge", "--timeout", "5m"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("every pod sandbox exited") && last.contains("registry.k8s.io/pause:3.9"),
        "the error names the dying sandboxes and their image:\n{stderr}"
    );
    assert!(!last.contains("not in the node"), "the image's digest is named: {last}");
    assert!(
        took < Duration::from_secs(60),
        "caught in under a minute, not after the 5 min timeout: {took:?}"
    );
    eprintln!("the stand-in pause image was caught in {took:?}: {last}");
    assert_nothing_left(&run, &volumes_before);
    drop(_stand_in_pause);

    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let id = docker.create_container(&ContainerSpec::idle(target)).await.unwrap();
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
        docker.remove_image(target).await.unwrap();

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

/// A cluster `verify --keep` left: its nodes (found by kind's label) and network are removed
/// on drop, also when an assertion failed first.
struct KeptCluster(String);

impl Drop for KeptCluster {
    fn drop(&mut self) {
        let name = self.0.clone();
        support::runtime().block_on(async {
            let docker = support::docker("cleanup").await;
            let nodes = docker.list_containers_by(nodeimg::node::LABEL_KIND_CLUSTER, Some(&name)).await;
            for c in nodes.unwrap_or_default() {
                if let Some(root) = &c.host_cgroups {
                    nodeimg::node::release_host_cgroups(&docker, &c.id, root).await.ok();
                }
                docker.remove_container(&c.id).await.ok();
            }
            docker.remove_network(&name).await.ok();
        });
    }
}

/// `kubectl` on a node with kubeadm's admin kubeconfig; its stdout.
fn kubectl(node: &str, args: &[&str]) -> String {
    try_kubectl(node, args).unwrap_or_else(|e| panic!("kubectl {} failed: {e}", args.join(" ")))
}

/// [`kubectl`] that may fail (an object that is not there yet): stdout, or stderr.
fn try_kubectl(node: &str, args: &[&str]) -> Result<String, String> {
    let base = ["exec", node, "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf"];
    let out = output_within(Command::new("docker").args([&base[..], args].concat()), Duration::from_secs(60));
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    }
}

/// `cluster update --with-kubelet` on a two-node cluster of `target` kept by `verify --keep`:
/// every node runs the new kubelet and a pod on the worker keeps running; then a kubelet
/// that exits at once is rolled back on the control plane, and the worker is never touched.
fn update_a_running_cluster(run: &Run, target: &str, kubelet: &Path, version: &str) {
    let out = run.output(&["verify", target, "--nodes", "2", "--keep", "--cni", "bridge"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = stderr.lines().find(|l| l.contains("kept cluster ")).unwrap_or_else(|| panic!("{stderr}"));
    let cluster = kept.split("kept cluster ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let _cluster = KeptCluster(cluster.clone());
    assert_success(&out, "verify --nodes 2 --keep");
    let (plane, worker) = (format!("{cluster}-control-plane"), format!("{cluster}-worker"));
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"keeper"},"spec":{"nodeName":"NODE","containers":[{"name":"pause","image":"registry.k8s.io/pause:3.9","imagePullPolicy":"Never"}]}}"#;
    let manifest = run.files.path().join("keeper.json");
    std::fs::write(&manifest, pod.replace("NODE", &worker)).unwrap();
    // Not /tmp: a node's /tmp is a tmpfs (kind's run flags), which `docker cp` cannot see.
    docker_cli(&["cp", manifest.to_str().unwrap(), &format!("{plane}:/root/keeper.json")]);
    // The admission plugin refuses pods until the controller manager has made the
    // namespace's default service account, which a just-created cluster may not have yet.
    support::block_on(wait_for("the keeper pod to be accepted", Duration::from_secs(90), || async {
        try_kubectl(&plane, &["apply", "-f", "/root/keeper.json"]).map_err(|e| eprintln!("{e}")).ok()
    }));
    let phase = |what: &str| {
        kubectl(&plane, &["get", "pod", "keeper", "-o", &format!("jsonpath={what}")]).trim().to_owned()
    };
    support::block_on(wait_for("the keeper pod to run", Duration::from_secs(120), || async {
        (phase("{.status.phase}") == "Running").then_some(())
    }));
    let uid = phase("{.metadata.uid}");
    let versions = || kubectl(&plane, &["get", "nodes", "-o", "wide", "--no-headers"]);

    let started = Instant::now();
    let kubelet = kubelet.to_str().unwrap();
    let out =
        run.output(&["cluster", "update", "--name", &cluster, "--with-kubelet", kubelet, "--timeout", "3m"]);
    let took = started.elapsed();
    assert_success(&out, "cluster update --with-kubelet");
    let table = String::from_utf8_lossy(&out.stdout);
    for node in [&plane, &worker] {
        assert!(table.contains(&format!("{node}: copy ")), "{table}");
    }
    assert_eq!(table.matches(&format!("kubelet: {VERSION} (sha256 ")).count(), 2, "{table}");
    assert_eq!(table.matches(&format!("-> {version} (sha256 ")).count(), 2, "{table}");
    let wide = versions();
    assert_eq!(wide.lines().filter(|l| l.contains(" Ready ") && l.contains(version)).count(), 2, "{wide}");
    assert_eq!(phase("{.metadata.uid}"), uid, "the pod on the worker is the same pod");
    assert_eq!(phase("{.status.phase}"), "Running");
    assert_eq!(phase("{.status.containerStatuses[0].restartCount}"), "0", "its container kept running");
    eprintln!("cluster update of 2 nodes with a relinked kubelet: {took:?}\n{table}");

    // A kubelet that exits at once: the control plane gets its kubelet back and the update
    // stops there, so the worker keeps the one it had.
    let broken_dir = run.files.path().join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let broken = support::arches::broken_kubelet(&broken_dir, "v1.20.2-broken");
    let sums = |node: &str| docker_cli(&["exec", node, "sha256sum", "/usr/bin/kubelet"]);
    let worker_before = sums(&worker);
    let started = Instant::now();
    let out = run.output(&[
        "cluster",
        "update",
        "--name",
        &cluster,
        "--with-kubelet",
        broken.to_str().unwrap(),
        "--timeout",
        "2m",
    ]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: updating cluster") && last.contains(&format!("node {plane}:")),
        "{stderr}"
    );
    assert!(
        last.contains("failing on purpose")
            && last.contains("rolled back (kubelet restored), the node is Ready again"),
        "{last}"
    );
    assert_eq!(sums(&worker), worker_before, "the worker was not touched");
    let wide = versions();
    assert_eq!(wide.lines().filter(|l| l.contains(" Ready ") && l.contains(version)).count(), 2, "{wide}");
    for node in [&plane, &worker] {
        let left = docker_cli(&["exec", node, "sh", "-c", "ls -a /usr/bin | grep nodeimg || true"]);
        assert_eq!(left.trim(), "", "nothing staged is left on {node}");
    }
    assert_eq!(phase("{.metadata.uid}"), uid);
    assert_eq!(phase("{.status.phase}"), "Running");
    eprintln!("the broken kubelet was rolled back in {took:?}: {last}");

    // Images: a new one is imported and pinned on every node, no pod restarted; a
    // control-plane image that cannot run (a busybox stand-in under the scheduler's name,
    // in a tar, never in the host's Docker) restarts the static pod through its manifest,
    // is not Ready in time, and the node gets the old image and manifest back.
    let digest = |node: &str, name: &str| {
        let out =
            docker_cli(&["exec", node, "ctr", "-n", "k8s.io", "images", "ls", &format!("name=={name}")]);
        out.lines().nth(1).map(|l| l.split_whitespace().nth(2).unwrap().to_owned()).unwrap_or_default()
    };
    let tool = format!("docker.io/nodeimg-test/cluster-tool:{}", run.unique);
    let archive = ImageArchive::new(std::slice::from_ref(&tool));
    let out = run.output(&[
        "cluster",
        "update",
        "--name",
        &cluster,
        "--with-image",
        archive.path.to_str().unwrap(),
    ]);
    assert_success(&out, "cluster update --with-image (a new image)");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.matches("docker.io/nodeimg-test/cluster-tool: - -> ").count(), 2, "{table}");
    for node in [&plane, &worker] {
        let listed =
            docker_cli(&["exec", node, "ctr", "-n", "k8s.io", "images", "ls", &format!("name=={tool}")]);
        assert!(listed.contains("io.cri-containerd.pinned=pinned"), "pinned on {node}: {listed}");
    }
    let scheduler = "k8s.gcr.io/kube-scheduler:v1.20.2";
    let (plane_before, worker_before) = (digest(&plane, scheduler), digest(&worker, scheduler));
    assert!(plane_before.starts_with("sha256:"), "{plane_before}");
    let stand_in = ImageArchive::new(&[scheduler.to_owned()]);
    let started = Instant::now();
    let args = [
        "cluster",
        "update",
        "--name",
        &cluster,
        "--with-image",
        stand_in.path.to_str().unwrap(),
        "--timeout",
        "60s",
    ];
    let out = run.output(&args);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.contains(&format!("node {plane}: waiting for the node: not ready within 1m")), "{last}");
    assert!(last.contains("kube-scheduler"), "names the pod: {last}");
    assert!(last.contains(&format!("rolled back (kube-scheduler.yaml, {scheduler} restored)")), "{last}");
    assert_eq!(digest(&plane, scheduler), plane_before, "the old image is back under its name");
    assert_eq!(digest(&worker, scheduler), worker_before, "the worker was not touched");
    let left = docker_cli(&[
        "exec",
        &plane,
        "sh",
        "-c",
        "grep -c io.nodeimg /etc/kubernetes/manifests/kube-scheduler.yaml; ctr -n k8s.io images ls -q | grep -c nodeimg-previous; true",
    ]);
    assert_eq!(left.split_whitespace().collect::<Vec<_>>(), ["0", "0"], "no annotation, no backup name left");
    let pod = format!("kube-scheduler-{plane}");
    support::block_on(wait_for("the scheduler to be Ready again", Duration::from_secs(180), || async {
        let ready = try_kubectl(
            &plane,
            &[
                "-n",
                "kube-system",
                "get",
                "pod",
                &pod,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        );
        ready.ok().filter(|r| r.trim() == "True").map(|_| ())
    }));
    eprintln!("the stand-in scheduler was rolled back in {took:?}: {last}");

    // The two-command loop: a node image that differs from the cluster in its kubelet (the
    // original, where the cluster runs the relinked one) and one added image; `--from-node`
    // takes exactly those into every node.
    let added = format!("docker.io/nodeimg-test/from-node-tool:{}", run.unique);
    let archive = ImageArchive::new(std::slice::from_ref(&added));
    let source = format!("{target}-from-node");
    let _source = support::RemoveImage(source.clone());
    let args = ["images", "add", &added, "--image-archive", archive.path.to_str().unwrap(), "--to", target];
    assert_success(
        &run.output(&[&args[..], &["-i", &source]].concat()),
        "images add (the source of --from-node)",
    );
    let started = Instant::now();
    let out =
        run.output(&["cluster", "update", "--name", &cluster, "--from-node", &source, "--timeout", "3m"]);
    let took = started.elapsed();
    assert_success(&out, "cluster update --from-node");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.matches(&format!("kubelet: {version} (sha256 ")).count(), 2, "{table}");
    assert_eq!(table.matches(&format!("-> {VERSION} (sha256 ")).count(), 2, "{table}");
    let tool = added.rsplit_once(':').unwrap().0;
    assert_eq!(table.matches(&format!("{tool}: - -> ")).count(), 2, "only the added image: {table}");
    assert!(!table.contains("kube-scheduler") && !table.contains("kubeadm:"), "nothing else: {table}");
    for node in [&plane, &worker] {
        let listed =
            docker_cli(&["exec", node, "ctr", "-n", "k8s.io", "images", "ls", &format!("name=={added}")]);
        assert!(listed.contains("io.cri-containerd.pinned=pinned"), "pinned on {node}: {listed}");
    }
    let wide = versions();
    let back = wide.lines().filter(|l| l.contains(" Ready ") && l.split_whitespace().nth(4) == Some(VERSION));
    assert_eq!(back.count(), 2, "{wide}");
    assert_eq!(phase("{.metadata.uid}"), uid, "the pod on the worker is the same pod");
    eprintln!("cluster update --from-node (kubelet back to {VERSION}, one image added) in {took:?}\n{table}");
}

/// A copy of the node image `target` under `name`: `files` added, then `script` run in an
/// idle container of it, committed with the original's entrypoint (the container idles with
/// `sleep`; the copy must boot like the original).
async fn modified_copy(
    docker: &Docker,
    target: &str,
    name: &str,
    files: Vec<(&'static str, Vec<u8>)>,
    script: &str,
) -> TestImage {
    let id = docker.create_container(&ContainerSpec::idle(target)).await.unwrap();
    docker.start_container(&id).await.unwrap();
    if !files.is_empty() {
        let upload = nodeimg::archive::tar_stream(move |t| {
            files.iter().try_for_each(|(path, data)| nodeimg::archive::append_bytes(t, path, 0o644, data))
        });
        docker.upload(&id, "/", upload).await.unwrap();
    }
    let out = docker.exec(&id, &["sh", "-c", script]).await.unwrap();
    assert!(out.success(), "changing the copy {name}: {}", out.last_line());
    let entrypoint = docker.inspect_image(target).await.unwrap().unwrap().entrypoint;
    let changes = [format!("ENTRYPOINT {}", serde_json::to_string(&entrypoint).unwrap())];
    let image = docker.commit(&id, &changes).await.unwrap();
    docker.remove_container(&id).await.unwrap();
    let copy = TestImage::new(name, &image);
    docker.tag_image(&image, &copy.name).await.unwrap();
    copy
}

fn volumes() -> Vec<String> {
    docker_cli(&["volume", "ls", "-q"]).lines().map(str::to_owned).collect()
}

/// No container of the run, no volume that was not there before, no pod cgroup on the host.
fn assert_nothing_left(run: &Run, volumes_before: &[String]) {
    run.assert_clean();
    let new: Vec<String> = volumes().into_iter().filter(|v| !volumes_before.contains(v)).collect();
    assert!(new.is_empty(), "volumes left: {new:?}");
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .filter(|d| d.file_name().to_string_lossy().starts_with("kubelet"))
        .map(|d| d.path().join("kubepods"))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "pod cgroups left on the host: {cgroups:?}");
}

/// The images kubeadm v1.20.2 runs besides the control plane, made here because no
/// registry serves them: pause compiled from the tree, Debian's etcd, a CoreDNS stand-in
/// that answers its probes; the node's sandbox image is that pause too. Made in the host's
/// Docker under names of the run's own, saved, and removed again: the archive names them as
/// kubeadm does, the host's Docker never has them under those names.
async fn runtime_images(run: &Run, base: &str, dir: &Path, kindnetd_name: &str) -> ImageArchive {
    let docker = support::docker(&run.run_id).await;
    let scratch = tempfile::tempdir().unwrap();
    let own = |what: &str| format!("nodeimg-test/real-{what}:{}", run.unique);
    let pause_root = scratch.path().join("pause");
    std::fs::create_dir_all(&pause_root).unwrap();
    std::fs::copy(dir.join("pause/pause"), pause_root.join("pause")).unwrap();
    let changes = vec!["ENTRYPOINT [\"/pause\"]".to_owned()];
    let pause = fixtures::rootfs_image(&docker, &own("pause"), &pause_root, changes).await;
    let etcd_binary = dir.join("etcd/usr/bin/etcd");
    let files = [(etcd_binary.as_path(), "usr/local/bin/etcd")];
    let etcd = on_base(&docker, base, &own("etcd"), &files, &["ENTRYPOINT []", "CMD [\"etcd\"]"]).await;
    let coredns_script = scratch.path().join("coredns");
    std::fs::write(&coredns_script, COREDNS_STAND_IN).unwrap();
    let files = [(coredns_script.as_path(), "coredns"), (Path::new("/bin/busybox"), "bin/busybox")];
    let coredns =
        on_base(&docker, base, &own("coredns"), &files, &["ENTRYPOINT [\"/coredns\"]", "CMD []"]).await;

    let stand_in =
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/real-kubernetes/kindnetd-stand-in.sh"));
    let files = [(stand_in, "kindnetd")];
    let kindnetd =
        on_base(&docker, base, &own("kindnetd"), &files, &["ENTRYPOINT [\"/kindnetd\"]", "CMD []"]).await;

    let saved = scratch.path().join("saved.tar");
    let mut save = Command::new("docker");
    let names = [&pause.name, &etcd.name, &coredns.name, &kindnetd.name];
    save.args(["save", "-o", saved.to_str().unwrap()]).args(names);
    assert_success(&output_within(&mut save, BUILD_LIMIT), "docker save");
    let archive = ImageArchive::at(scratch.path().join("runtime-images.tar"), scratch);
    let names = [
        (pause.name.as_str(), &["k8s.gcr.io/pause:3.2", "registry.k8s.io/pause:3.9"][..]),
        (etcd.name.as_str(), &["k8s.gcr.io/etcd:3.4.13-0"][..]),
        (coredns.name.as_str(), &["k8s.gcr.io/coredns:1.7.0"][..]),
        (kindnetd.name.as_str(), &[kindnetd_name][..]),
    ];
    rename(&saved, &archive.path, &names);
    std::fs::remove_file(&saved).unwrap();
    archive
}

/// The docker-save archive with each image's names replaced (RepoTags in manifest.json;
/// the legacy `repositories` file, which names them too, is left out).
fn rename(from: &Path, to: &Path, names: &[(&str, &[&str])]) {
    fixtures::copy_tar(from, to, &["repositories"], "manifest.json", |manifest| {
        for image in manifest.as_array_mut().unwrap() {
            let tag = image["RepoTags"][0].as_str().unwrap().to_owned();
            let (_, real) = names.iter().find(|(own, _)| *own == tag).expect("an image of ours");
            image["RepoTags"] = serde_json::json!(real);
        }
    });
}

const COREDNS_STAND_IN: &str = "#!/bin/sh\n# CoreDNS stand-in: answers the liveness and readiness probes, serves no DNS.\n\
mkdir -p /tmp/www && echo OK > /tmp/www/health && echo OK > /tmp/www/ready\n\
/bin/busybox httpd -p 8181 -h /tmp/www\nexec /bin/busybox httpd -f -p 8080 -h /tmp/www\n";

/// The base image plus `files` (host path, path in the image), tagged `name` (the run's own).
async fn on_base(
    docker: &Docker,
    base: &str,
    name: &str,
    files: &[(&Path, &str)],
    changes: &[&str],
) -> TestImage {
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
    let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    let image = docker.commit(&id, &changes).await.unwrap();
    docker.remove_container(&id).await.unwrap();
    let made = TestImage::new(name, &image);
    docker.tag_image(&image, name).await.unwrap();
    made
}

/// Another architecture from the real tree (issue 13): upstream's make cross-compiles
/// kubeadm for arm64 (pure Go, no cross C compiler); in the arm64 base image, under qemu, it
/// says its version and lists its release's images; then it goes into an arm64 node image
/// (a fixture release's, as tests/multiarch.rs builds it) with `build node-variant`, whose
/// architecture check it passes, and runs there.
#[test]
#[ignore = "cross-compiles kubeadm v1.20.2 for arm64 (minutes); run with NODEIMG_REAL_KUBERNETES=1 and --ignored"]
fn kubeadm_from_real_kubernetes_for_arm64() {
    let _tree = TREE.lock().unwrap_or_else(|e| e.into_inner());
    let (_, tree) = prepared_tree();
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&tree)
        .args(["all", "WHAT=cmd/kubeadm", "KUBE_BUILD_PLATFORMS=linux/arm64"])
        .env_remove("OUT_DIR");
    let started = Instant::now();
    assert_success(&output_within(&mut make, REAL_LIMIT), "cross-compiling kubeadm for arm64");
    let compiled = started.elapsed();
    let kubeadm = Path::new(&tree).join("_output/local/bin/linux/arm64/kubeadm");
    let header = std::fs::read(&kubeadm).unwrap();
    assert_eq!(support::arches::e_machine(&header[..64]), 183, "EM_AARCH64");
    let arm64_base = support::base_image_arm64();
    let kubeadm_in = |image: &str, entrypoint: &str, mount: bool, args: &[&str]| {
        let volume = format!("{}:/kubeadm:ro", kubeadm.display());
        let mut cli = vec!["run", "--rm", "--entrypoint", entrypoint];
        if mount {
            cli.extend(["-v", &volume]);
        }
        cli.push(image);
        docker_cli(&[&cli[..], args].concat())
    };
    let started = Instant::now();
    assert_eq!(kubeadm_in(&arm64_base, "/kubeadm", true, &["version", "-o", "short"]).trim(), VERSION);
    let images = kubeadm_in(
        &arm64_base,
        "/kubeadm",
        true,
        &["config", "images", "list", "--kubernetes-version", VERSION],
    );
    for image in ["kube-apiserver:v1.20.2", "kube-proxy:v1.20.2", "etcd:3.4.13-0", "coredns:1.7.0"] {
        assert!(images.lines().any(|l| l.ends_with(image)), "{image} in:\n{images}");
    }
    let ran = started.elapsed();

    let run = Run::new("real-arm64");
    let two = support::arches::TwoArches::serve(&run, &arm64_base);
    let node = format!("{}-arm64", run.target);
    let variant = format!("{}-arm64-kubeadm", run.target);
    let (_node, _variant) = (support::RemoveImage(node.clone()), support::RemoveImage(variant.clone()));
    let archive = two.archive.to_str().unwrap();
    let build = [
        "build",
        "node-image",
        fixtures::VERSION,
        "--arch",
        "arm64",
        "-i",
        &node,
        "-b",
        &arm64_base,
        "--release-url",
        &two.server.url,
        "--image-archive",
        archive,
    ];
    assert_success(
        &output_within(&mut run.command(&build), support::EMULATED_BUILD_LIMIT),
        "an arm64 node image",
    );
    let with = [
        "build",
        "node-variant",
        "--from-node",
        &node,
        "--with-kubeadm",
        kubeadm.to_str().unwrap(),
        "-i",
        &variant,
    ];
    assert_success(&run.output(&with), "build node-variant --with-kubeadm (arm64)");
    assert_eq!(kubeadm_in(&variant, "kubeadm", false, &["version", "-o", "short"]).trim(), VERSION);
    run.assert_clean();
    eprintln!(
        "kubeadm cross-compiled for arm64 in {compiled:?}, ran under qemu in {ran:?}, in an arm64 node image in {:?}",
        started.elapsed()
    );
}
