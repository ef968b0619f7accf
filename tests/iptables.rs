//! The kube-proxy image nodeimg makes in host mode, from a base with iptables (the test base
//! image), gets an iptables wrapper that picks the backend the node picks: run in containers
//! of their own network namespace (NET_ADMIN, no --privileged), the wrapper and the node's
//! entrypoint (`select_iptables`) decide alike on the same evidence.

mod support;

use std::future::Future;
use std::time::Duration;

use nodeimg::docker::{ContainerSpec, Docker};
use nodeimg::nodeimage::{components, iptables};
use nodeimg::progress::{Reporter, Verbosity};
use support::{Cleanup, RemoveImage};

/// Any one Docker call of the test.
const CALL_LIMIT: Duration = Duration::from_secs(120);

async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in {CALL_LIMIT:?}"))
}

const SH: &[&str] = &["sh", "-ec"];
/// As the entrypoint runs.
const BASH: &[&str] = &["bash", "-euo", "pipefail", "-c"];

/// Runs `script` with `shell` in a fresh container of `image` (own network namespace, NET_ADMIN);
/// its stdout. The container is removed here, and by the run's [`Cleanup`] on failure.
async fn run_in(docker: &Docker, image: &str, shell: &[&str], script: &str) -> String {
    let spec = ContainerSpec { cap_add: vec!["NET_ADMIN".into()], ..ContainerSpec::idle(image) };
    let id = within("create", docker.create_container(&spec)).await.unwrap();
    within("start", docker.start_container(&id)).await.unwrap();
    let out = within(script, docker.exec(&id, &[shell, &[script]].concat())).await.unwrap();
    within("remove", docker.remove_container(&id)).await.unwrap();
    assert!(out.success(), "`{script}` failed ({}):\n{}{}", out.code, out.stdout, out.stderr);
    out.stdout
}

/// Setups of a fresh network namespace, and the backend both sides must then pick.
const CASES: [(&str, &str); 4] = [
    ("iptables-nft -t mangle -N KUBE-IPTABLES-HINT", "nf_tables"),
    // The kubelet's chain outweighs any count of rules.
    (
        "iptables-legacy -t mangle -N KUBE-IPTABLES-HINT; iptables-nft -A INPUT -j ACCEPT; iptables-nft -A OUTPUT -j ACCEPT",
        "legacy",
    ),
    ("iptables-nft -A INPUT -j ACCEPT", "nf_tables"),
    ("true", "legacy"),
];

#[test]
fn kube_proxy_image_follows_the_nodes_iptables_backend() {
    let base = support::base_image();
    let run_id = support::run_id("iptables");
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("kube-proxy");
    std::fs::write(&binary, "#!/bin/sh\n").unwrap();
    support::block_on(async {
        let docker = support::docker(&run_id).await;
        let reporter = Reporter::with_terminal(Verbosity::Quiet, false);
        // Untagged: no name a real build would use ever exists. Removed after its containers
        // (guards drop in reverse order).
        let image = within(
            "make the image",
            components::make_image(&docker, &base, &binary, "kube-proxy", &reporter),
        )
        .await
        .unwrap();
        let _image = RemoveImage(image.clone());
        let _containers = Cleanup(run_id.clone());

        let listed = iptables::WRAPPED.join(" ");
        let links =
            run_in(&docker, &image, SH, &format!("for c in {listed}; do readlink /usr/sbin/$c; done")).await;
        assert_eq!(
            links.lines().collect::<Vec<_>>(),
            ["iptables-wrapper"; 6],
            "every command links to the wrapper"
        );

        // The brief's two cases, as kube-proxy meets them: a first call that lists, then -V.
        let nft = run_in(
            &docker,
            &image,
            SH,
            "iptables-nft -t mangle -N KUBE-IPTABLES-HINT; iptables -w -L -n >/dev/null; iptables -V; readlink /usr/sbin/ip6tables-save",
        )
        .await;
        assert!(nft.contains("nf_tables"), "nft hint: {nft}");
        assert!(nft.contains("ip6tables-nft-save"), "every link was repointed: {nft}");
        let legacy =
            run_in(&docker, &image, SH, "iptables-legacy -t mangle -N KUBE-IPTABLES-HINT; iptables -V").await;
        assert!(legacy.contains("legacy"), "legacy hint: {legacy}");

        // The node's own choice on the same evidence: select_iptables from the entrypoint.
        let node_choice = "eval \"$(sed -n '/^select_iptables() {/,/^}/p' /usr/local/bin/entrypoint)\"; \
                           log() { echo \"$*\" >&2; }; select_iptables; iptables -V";
        for (setup, expected) in CASES {
            let proxy = run_in(&docker, &image, SH, &format!("{setup}; iptables -V")).await;
            let node = run_in(&docker, &base, BASH, &format!("{setup}; {node_choice}")).await;
            assert!(proxy.contains(expected), "kube-proxy after `{setup}`: {proxy}");
            assert!(node.contains(expected), "node after `{setup}`: {node}");
        }
    });
}
