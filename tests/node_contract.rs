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

/// `sh -c script` in the node; (success, stdout + stderr).
async fn sh(docker: &Docker, id: &str, script: &str) -> (bool, String) {
    let out = docker.exec(id, &["sh", "-c", script]).await.unwrap();
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

/// Runs `image` as kind does on `network`: --privileged, or the restricted set when the daemon
/// refuses it (as `nodeimg::node::start` does), with kind's node environment.
async fn start_node(
    docker: &Docker,
    image: &str,
    name: &str,
    network: &str,
) -> (support::RemoveContainer, Privilege) {
    for privilege in [Privilege::Privileged, Privilege::Restricted] {
        let mut spec = node_spec(image, Some(name), privilege);
        spec.network_mode = Some(network.to_owned());
        spec.env = vec![
            "container=docker".into(),
            "KIND_DNS_SEARCH=example.test".into(),
            "KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER=native".into(),
        ];
        let id = docker.create_container(&spec).await.unwrap();
        let guard = support::RemoveContainer(id.clone());
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

        // Gap 4: the kubelet gets --cgroup-root from the drop-in's env file, KUBELET_EXTRA_ARGS intact.
        let (_, unit) = sh(&docker, &id, "systemctl cat kubelet").await;
        let exec_start =
            unit.lines().rfind(|l| l.starts_with("ExecStart=/usr/bin/kubelet")).unwrap_or_default();
        assert!(
            exec_start.contains("$KUBELET_CGROUP_ROOT_ARGS") && exec_start.ends_with("$KUBELET_EXTRA_ARGS"),
            "{unit}"
        );
        assert!(unit.contains("EnvironmentFile=-/run/nodeimg/kubelet-cgroup-root.env"), "{unit}");
        assert!(!unit.contains("Environment=\"KUBELET_CGROUP_ROOT_ARGS"), "no fixed flag overrides the config: {unit}");
        // The flag only for a kubelet config without cgroupRoot (kind < v0.14); a config's own
        // cgroupRoot (kind >= v0.14, a user's kubeadmConfigPatches) is kept and created.
        let decide = |config: &str| {
            format!(
                "d=$(mktemp -d) && printf '{config}' > $d/config.yaml && \
                 KUBELET_CONFIG=$d/config.yaml KUBELET_CGROUP_ROOT_ENV=$d/env /usr/local/bin/kubelet-cgroup-root && \
                 echo \"env=[$(cat $d/env)]\""
            )
        };
        // A root of the test's own, removed again: a node may share the host's cgroup tree.
        let root = format!("nodeimg-test-{}", std::process::id());
        let (ok, custom) = sh(&docker, &id, &decide(&format!("kind: KubeletConfiguration\\ncgroupRoot: /{root}\\n"))).await;
        let (_, made) = sh(&docker, &id, &format!("ls -d /sys/fs/cgroup/{root} /sys/fs/cgroup/*/{root} 2>/dev/null")).await;
        sh(&docker, &id, &format!("rmdir /sys/fs/cgroup/{root} /sys/fs/cgroup/*/{root} 2>/dev/null")).await;
        assert!(ok && custom.contains("env=[]"), "cgroupRoot: /{root} gets no flag: {custom}");
        assert!(made.contains(&root), "the config's root is created: {made} {custom}");
        let (ok, old) = sh(&docker, &id, &decide("kind: KubeletConfiguration\\ncgroupDriver: cgroupfs\\n")).await;
        assert!(ok && old.contains("env=[KUBELET_CGROUP_ROOT_ARGS=--cgroup-root=/kubelet]"), "no cgroupRoot: /kubelet: {old}");

        // Gap 1: kind's markers in the default CNI manifest.
        let (_, manifest) = sh(&docker, &id, "cat /kind/manifests/default-cni.yaml").await;
        for marker in ["# would you kindly template this file", "# would you kindly patch this file"] {
            assert!(manifest.lines().any(|l| l == marker), "{marker:?} in default-cni.yaml:\n{manifest}");
        }
        drop(node);
    });
}

/// One row of node-image/README.md's contract table: its check and the tests it names.
struct Row {
    check: String,
    proved_by: Vec<(String, String)>,
}

/// The `## kind's node contract` table: the Check column (third) and every
/// `tests/FILE.rs::name` in Proved by (fourth).
fn contract_rows(readme: &str) -> Vec<Row> {
    let table = readme.split("## kind's node contract").nth(1).expect("the contract section");
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "four cells: {line}");
            let check = cells[2].trim_matches('`').to_owned();
            let proved_by = cells[3]
                .split('`')
                .skip(1)
                .step_by(2)
                .filter_map(|t| t.strip_prefix("tests/"))
                .filter_map(|t| t.split_once(".rs::"))
                .map(|(file, name)| (format!("tests/{file}.rs"), name.to_owned()))
                .collect();
            Row { check, proved_by }
        })
        .collect()
}

/// What a check asks of the image: a shell test inside it, or a look at its config.
fn check_script(check: &str) -> Option<String> {
    let (kind, rest) = check.split_once(' ')?;
    Some(match kind {
        "file" => format!("test -f '{rest}'"),
        "exec" => format!("test -f '{rest}' && test -x '{rest}'"),
        "lines" => {
            let (path, n) = rest.rsplit_once(' ')?;
            format!(
                "test \"$(wc -l < '{path}')\" = {n} && test \"$(tail -c1 '{path}' | od -An -c | tr -d ' ')\" = '\\n'"
            )
        }
        "grep" => {
            let (path, text) = rest.split_once(' ')?;
            format!("grep -qF -- '{text}' '{path}'")
        }
        "unit" => format!("test -e '/etc/systemd/system/multi-user.target.wants/{rest}'"),
        _ => return None,
    })
}

#[test]
fn readme_contract_holds_in_a_built_image() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/node-image/README.md")).unwrap();
    let rows = contract_rows(&readme);
    assert!(rows.len() >= 20, "the contract table has its rows: {}", rows.len());
    // Every test a row names exists.
    for row in &rows {
        for (file, name) in &row.proved_by {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap_or_default();
            assert!(text.contains(&format!("fn {name}()")), "{file} has no test {name} (row: {})", row.check);
        }
    }

    let run = Run::new("readme");
    let release = fixtures::server_tarball(&Options::default());
    let base = support::base_image_with_crictl();
    assert_success(&run.build(&[&release.build_args()[..], &["-b", &base]].concat()), "build node-image");
    let failures = support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let info = docker.inspect_image(&run.target).await.unwrap().unwrap();
        let id = docker.create_container(&nodeimg::docker::ContainerSpec::idle(&run.target)).await.unwrap();
        let _node = support::RemoveContainer(id.clone());
        docker.start_container(&id).await.unwrap();
        let mut failures = Vec::new();
        for row in rows.iter().filter(|r| r.check != "-") {
            let (kind, rest) = row.check.split_once(' ').unwrap_or((&row.check, ""));
            let holds = match kind {
                "entrypoint" => info.entrypoint.iter().any(|e| e == rest),
                "env" => info.env.iter().any(|e| e == rest),
                "stopsignal" => info.stop_signal.as_deref() == Some(rest),
                _ => {
                    let script =
                        check_script(&row.check).unwrap_or_else(|| panic!("unknown check {:?}", row.check));
                    sh(&docker, &id, &script).await.0
                }
            };
            if !holds {
                failures.push(row.check.clone());
            }
        }
        failures
    });
    assert!(failures.is_empty(), "contract rows that do not hold in {}: {failures:#?}", run.target);
}

#[test]
fn contract_checks_fail_on_what_is_not_there() {
    // The checks themselves must be able to fail, or the test above proves nothing.
    let rows = contract_rows(
        "## kind's node contract\n\n| a | b | Check | Proved by |\n|---|---|---|---|\n| x | y | `file /nope` | `tests/none.rs::missing` |\n",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].proved_by, [("tests/none.rs".to_owned(), "missing".to_owned())]);
    let run = std::process::Command::new("sh")
        .args(["-c", &check_script(&rows[0].check).unwrap()])
        .status()
        .unwrap();
    assert!(!run.success());
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two");
    std::fs::write(&two, "a\nb\n").unwrap();
    let one = check_script(&format!("lines {} 1", two.display())).unwrap();
    assert!(!std::process::Command::new("sh").args(["-c", &one]).status().unwrap().success());
    let grep = check_script(&format!("grep {} b", two.display())).unwrap();
    assert!(std::process::Command::new("sh").args(["-c", &grep]).status().unwrap().success());
}
