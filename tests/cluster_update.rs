//! `nodeimg cluster update` refusals, on containers labelled as kind labels its nodes: every
//! check runs before a node is touched. The update itself (a rebuilt kubelet into a
//! two-node cluster, a broken one rolled back) is in tests/real_kubernetes.rs.

mod support;

use nodeimg::node::{LABEL_KIND_CLUSTER, LABEL_KIND_ROLE};
use support::{RemoveContainer, Run, docker_cli};

/// A running container of the base image that kind's labels make a node of `cluster`.
fn node(cluster: &str, role: &str) -> (RemoveContainer, String) {
    let name = format!("{cluster}-{role}");
    let id = docker_cli(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{LABEL_KIND_CLUSTER}={cluster}"),
        "--label",
        &format!("{LABEL_KIND_ROLE}={role}"),
        "--entrypoint",
        "sleep",
        &support::base_image(),
        "600",
    ]);
    (RemoveContainer(name), id.trim().to_owned())
}

#[test]
fn a_cluster_is_found_by_kinds_labels_and_checked_before_anything_is_copied() {
    let run = Run::new("cluster-update");
    let cluster = format!("nodeimg-test-{}", run.unique);
    let kubelet = run.files.path().join("kubelet");
    std::fs::copy("/bin/busybox", &kubelet).unwrap();
    let kubelet = kubelet.to_str().unwrap();

    let update = |args: &[&str]| run.output(&[&["cluster", "update", "--name", &cluster][..], args].concat());
    let out = update(&["--with-kubelet", kubelet]);
    let line = run.assert_failed(&out, "no node containers");
    assert!(line.contains(&cluster) && line.contains(LABEL_KIND_CLUSTER), "{line}");

    // Workers only: there is no API server to update against.
    let worker = node(&cluster, "worker");
    let line = run.assert_failed(&update(&["--with-kubelet", kubelet]), "no control-plane node");
    assert!(line.contains(&cluster), "{line}");

    // A kubelet for another architecture is refused, naming both.
    let plane = node(&cluster, "control-plane");
    let arm = run.files.path().join("kubelet-arm64");
    support::arches::arm64_header(&arm);
    let line = run.assert_failed(&update(&["--with-kubelet", arm.to_str().unwrap()]), "an arm64 binary");
    assert!(
        line.contains("--with-kubelet") && line.contains(&format!("cluster {cluster} is amd64")),
        "{line}"
    );

    // A binary that is no kubelet says so.
    let line = run.assert_failed(&update(&["--with-kubelet", kubelet]), "--version");
    assert!(line.contains(kubelet), "{line}");
    // A kubelet of the right architecture but no API server to ask: the skew check fails
    // before anything on a node changed.
    let stand_in = support::arches::broken_kubelet(run.files.path(), "v1.30.0");
    let stand_in = stand_in.to_str().unwrap();
    let line = run.assert_failed(&update(&["--with-kubelet", stand_in]), "asking the API server");
    assert!(line.contains("kubectl"), "{line}");
    for (_, id) in [&worker, &plane] {
        let left = docker_cli(&["exec", id, "sh", "-c", "ls -a /usr/bin | grep nodeimg || true"]);
        assert_eq!(left.trim(), "", "nothing staged is left in the node");
    }

    // A stopped node is named, not skipped.
    docker_cli(&["stop", "-t", "0", &worker.1]);
    let line = run.assert_failed(&update(&["--with-kubelet", kubelet]), "not running");
    assert!(line.contains(&format!("{cluster}-worker")), "{line}");

    // Flags are checked before the engine is asked anything.
    let line = run.assert_failed(
        &run.output(&["cluster", "update", "--name", "Bad_Name", "--with-kubelet", kubelet]),
        "--name",
    );
    assert!(line.contains("Bad_Name"), "{line}");
    let line = run.assert_failed(&update(&[]), "nothing to update");
    assert!(line.contains("--with-kubelet"), "{line}");
    drop((worker, plane));
    run.assert_clean();
}
