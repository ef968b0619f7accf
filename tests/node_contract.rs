//! The node side of kind's contract, in a node image built from a release fixture and run
//! the way kind runs it: on a user-defined Docker network of its own (where the node's
//! resolver is Docker's embedded DNS, 127.0.0.11), with the environment kind passes.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use nodeimg::docker::Docker;
use nodeimg::node::{Privilege, node_spec};
use support::fixtures::{self, Options};
use support::{Run, assert_success, docker_cli, wait_for};

/// A Docker network the test created; removed on drop (after the containers on it).
struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["60", "docker", "network", "rm", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A container the test created, with its anonymous volumes; removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["120", "docker", "rm", "-f", "-v", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `sh -c script` in the node; (success, stdout + stderr).
async fn sh(docker: &Docker, id: &str, script: &str) -> (bool, String) {
    let out = docker.exec(id, &["sh", "-c", script]).await.unwrap();
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

/// Runs `image` as kind does on `network`: --privileged, or the restricted set when the daemon
/// refuses it (as `nodeimg::node::start` does), with kind's node environment.
async fn start_node(docker: &Docker, image: &str, name: &str, network: &str) -> (Container, Privilege) {
    for privilege in [Privilege::Privileged, Privilege::Restricted] {
        let mut spec = node_spec(image, Some(name), privilege);
        spec.network_mode = Some(network.to_owned());
        spec.env = vec![
            "container=docker".into(),
            "KIND_DNS_SEARCH=example.test".into(),
            "KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER=native".into(),
        ];
        let id = docker.create_container(&spec).await.unwrap();
        let guard = Container(id.clone());
        match docker.start_container(&id).await {
            Ok(()) => return (guard, privilege),
            Err(err) if err.is_privileged_refused() && privilege == Privilege::Privileged => drop(guard),
            Err(err) => panic!("starting the node: {err:#}"),
        }
    }
    unreachable!("the restricted start either succeeds or panics")
}

#[test]
fn node_on_a_kind_network_honours_kinds_contract() {
    let run = Run::new("contract");
    let release = fixtures::server_tarball(&Options::default());
    let out = run.build(&release.build_args());
    assert_success(&out, "build node-image from a file");

    let network = Network(format!("nodeimg-test-net-{}", run.unique));
    docker_cli(&["network", "create", &network.0]);
    let gateway =
        docker_cli(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", &network.0])
            .trim()
            .to_owned();
    assert!(!gateway.is_empty(), "the network has a gateway");
    let name = format!("nodeimg-test-contract-{}", run.unique);

    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let (node, privilege) = start_node(&docker, &run.target, &name, &network.0).await;
        let id = node.0.clone();
        let booted = wait_for("systemd in the node", Duration::from_secs(90), || async {
            let out = docker.exec(&id, &["systemctl", "is-system-running"]).await.ok()?;
            let state = out.stdout.trim().to_owned();
            (state == "running" || state == "degraded").then_some(state)
        })
        .await;
        let entrypoint_log = docker_cli(&["logs", &id]);
        let context = format!("privilege {privilege:?}, systemd {booted}; node log:\n{entrypoint_log}");

        // Gap 2: the resolver goes through an address pods reach, with kind's search.
        let (_, resolv) = sh(&docker, &id, "cat /etc/resolv.conf").await;
        assert!(!resolv.contains("127.0.0.11"), "127.0.0.11 rewritten:\n{resolv}\n{context}");
        assert!(resolv.lines().any(|l| l.trim() == format!("nameserver {gateway}")), "{resolv}\n{context}");
        assert_eq!(
            resolv.lines().filter(|l| l.starts_with("search")).collect::<Vec<_>>(),
            ["search example.test"]
        );
        let (_, nat) = sh(&docker, &id, "iptables-save -t nat").await;
        assert!(
            nat.lines().any(|l| l == format!("-A PREROUTING -d {gateway}/32 -j DOCKER_OUTPUT")),
            "forwarded DNS goes to Docker's rules:\n{nat}\n{context}"
        );
        for proto in ["udp", "tcp"] {
            assert!(
                nat.lines().any(|l| l.starts_with(&format!("-A DOCKER_OUTPUT -d {gateway}/32 -p {proto}"))
                    && l.contains("--dport 53")
                    && l.contains("-j DNAT --to-destination 127.0.0.11:")),
                "{proto} DNAT to the embedded DNS:\n{nat}"
            );
        }
        // A pod's view: another network namespace, routed through the node, resolving the
        // node's own container name (only Docker's embedded DNS knows it: the namespace's
        // /etc/hosts does not) through the address in the node's resolv.conf.
        let script = format!(
            "set -e
             ip netns add pod
             ip link add nodeimg0 type veth peer name nodeimg1
             ip link set nodeimg1 netns pod
             ip addr add 10.250.0.1/30 dev nodeimg0 && ip link set nodeimg0 up
             ip -n pod addr add 10.250.0.2/30 dev nodeimg1 && ip -n pod link set nodeimg1 up
             ip -n pod link set lo up && ip -n pod route add default via 10.250.0.1
             mkdir -p /etc/netns/pod
             echo 'nameserver {gateway}' > /etc/netns/pod/resolv.conf
             echo '127.0.0.1 localhost' > /etc/netns/pod/hosts
             timeout 20 ip netns exec pod getent hosts {name}"
        );
        let (ok, resolved) = sh(&docker, &id, &script).await;
        let node_ip = docker.container_network(&id).await.unwrap().ip.unwrap_or_default();
        assert!(
            ok && resolved.split_whitespace().next() == Some(node_ip.as_str()),
            "{name} resolves to {node_ip} from a pod's namespace:\n{resolved}\n{context}"
        );

        // KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER reaches containerd's config.
        let (_, config) = sh(&docker, &id, "grep 'snapshotter =' /etc/containerd/config.toml").await;
        assert_eq!(config.trim(), "snapshotter = \"native\"", "{context}");

        // Gap 4: the kubelet gets --cgroup-root=/kubelet from the drop-in, KUBELET_EXTRA_ARGS intact.
        let (_, unit) = sh(&docker, &id, "systemctl cat kubelet").await;
        let exec_start =
            unit.lines().rfind(|l| l.starts_with("ExecStart=/usr/bin/kubelet")).unwrap_or_default();
        assert!(
            exec_start.contains("$KUBELET_CGROUP_ROOT_ARGS") && exec_start.ends_with("$KUBELET_EXTRA_ARGS"),
            "{unit}"
        );
        assert!(unit.contains("Environment=\"KUBELET_CGROUP_ROOT_ARGS=--cgroup-root=/kubelet\""), "{unit}");

        // Gap 1: kind's markers in the default CNI manifest.
        let (_, manifest) = sh(&docker, &id, "cat /kind/manifests/default-cni.yaml").await;
        for marker in ["# would you kindly template this file", "# would you kindly patch this file"] {
            assert!(manifest.lines().any(|l| l == marker), "{marker:?} in default-cni.yaml:\n{manifest}");
        }
        drop(node);
    });
}
