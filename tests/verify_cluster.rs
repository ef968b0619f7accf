//! `nodeimg verify` runs nodes as current kind does, in a cluster of its own: a network,
//! kind's run flags and labels, kind's boot-log wait, `--nodes`, and `--keep` (the cluster
//! stays, `nodeimg clean` removes it). The node image is built from a release fixture whose
//! kubeadm cannot `init`, so the check ends there; the real control plane and workers are
//! in tests/real_kubernetes.rs.

mod support;

use nodeimg::node::{LABEL_KIND_CLUSTER, LABEL_KIND_ROLE};
use support::fixtures;
use support::{Run, assert_success, docker_cli};

#[test]
fn verify_keeps_a_kind_style_cluster_and_clean_removes_it() {
    let run = Run::new("keep");
    let release = fixtures::server_tarball(&fixtures::Options::default());
    assert_success(&run.build(&release.build_args()), "build node image");

    let out = run.output(&["verify", &run.target, "--nodes", "2", "--keep", "--timeout", "30s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.contains("kubeadm init") && last.contains("unsupported: init"), "{stderr}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.lines().any(|l| l.contains("boot") && l.ends_with("ok")),
        "both nodes booted:\n{report}\n{stderr}"
    );
    assert!(stderr.contains("booting 2 nodes"), "{stderr}");
    let kept = stderr.lines().find(|l| l.contains("kept cluster ")).unwrap_or_else(|| panic!("{stderr}"));
    let cluster = kept.split("kept cluster ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(kept.contains("nodeimg clean"), "says how to remove it: {kept}");

    // kind's view of the cluster: nodes by its labels, on the cluster's own network.
    let nodes = docker_cli(&["ps", "-q", "--filter", &format!("label={LABEL_KIND_CLUSTER}={cluster}")]);
    assert_eq!(nodes.lines().count(), 2, "two nodes kept running:\n{stderr}");
    let format = format!(
        "{{{{.Name}}}} {{{{index .Config.Labels \"{LABEL_KIND_ROLE}\"}}}} {{{{.HostConfig.RestartPolicy.Name}}}}:{{{{.HostConfig.RestartPolicy.MaximumRetryCount}}}} init={{{{.HostConfig.Init}}}} {{{{.HostConfig.NetworkMode}}}} {{{{json .Config.Env}}}} {{{{json .HostConfig.Binds}}}}"
    );
    let inspect =
        docker_cli(&[&["inspect", "--format", &format][..], &nodes.lines().collect::<Vec<_>>()].concat());
    assert!(inspect.contains(&format!("/{cluster}-control-plane control-plane")), "{inspect}");
    assert!(inspect.contains(&format!("/{cluster}-worker worker")), "{inspect}");
    for node in inspect.lines() {
        assert!(node.contains(" on-failure:1 init=false "), "kind's restart policy and no init: {node}");
        assert!(node.contains(&format!(" {cluster} ")), "on the cluster's network: {node}");
        assert!(node.contains("KUBECONFIG=/etc/kubernetes/admin.conf"), "kind's environment: {node}");
        if std::path::Path::new("/lib/modules").is_dir() {
            assert!(node.contains("/lib/modules:/lib/modules:ro"), "{node}");
        }
    }
    // The node's resolver is Docker's embedded DNS made reachable for pods (not 127.0.0.11).
    let first = nodes.lines().next().unwrap();
    let resolv = docker_cli(&["exec", first, "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver") && !resolv.contains("127.0.0.11"), "{resolv}");
    assert_eq!(
        docker_cli(&["network", "ls", "-q", "--filter", &format!("name=^{cluster}$")]).lines().count(),
        1
    );

    let out = run.output(&["clean"]);
    assert_success(&out, "nodeimg clean");
    let removed = String::from_utf8_lossy(&out.stdout);
    assert!(removed.contains(&format!("{cluster}-worker")) && removed.contains(&cluster), "{removed}");
    assert_eq!(docker_cli(&["network", "ls", "-q", "--filter", &format!("name=^{cluster}$")]), "");
    run.assert_clean();
}

#[test]
fn verify_refuses_a_node_count_out_of_range() {
    let run = Run::new("nodes");
    let out = run.output(&["verify", "nodeimg-test/none:1", "--nodes", "0"]);
    let line = support::assert_one_error_line(&out, "--nodes 0");
    assert!(line.contains("1 to 10"), "{line}");
    run.assert_clean();
}
