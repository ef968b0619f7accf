//! The kube-proxy image nodeimg makes in host mode gets an iptables wrapper, as upstream's
//! does (iptables-wrapper in distroless-iptables / debian-iptables): kube-proxy must write its
//! rules with the backend (legacy or nft) the node chose, or they split across both. A base
//! with iptables gets `templates/iptables-wrapper.sh`, which decides on its first call as the
//! node's entrypoint does (see the script).

use std::collections::HashSet;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::archive;
use crate::docker::Docker;
use crate::progress::Reporter;

pub(super) const WRAPPER: &str = include_str!("../../templates/iptables-wrapper.sh");

/// The commands kube-proxy runs (`iptables`, `ip6tables` and their -save and -restore), each
/// a link to the wrapper until its first call.
pub const WRAPPED: [&str; 6] =
    ["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"];

/// Where iptables lives, in the order looked at: Debian's (/usr/sbin; /sbin links there in a
/// merged /usr), then older layouts.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The wrapper needs a shell to run.
const SHELL: &str = "/bin/sh";

/// What to do with a base image, decided from which files it has.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// The base has a wrapper of its own (upstream's bases ship `iptables-wrapper`).
    Keep,
    /// Both backends in `sbin`: install the wrapper there.
    Install { sbin: &'static str },
    /// Nothing to wrap, or no shell to run the wrapper: left as it is, with this note.
    Note(&'static str),
}

/// Every path [`plan`] asks about.
pub fn probes() -> Vec<String> {
    let mut paths: Vec<String> = SBIN_DIRS
        .iter()
        .flat_map(|d| ["iptables-wrapper", "iptables-legacy", "iptables-nft"].map(|f| format!("{d}/{f}")))
        .collect();
    paths.push(SHELL.to_owned());
    paths
}

/// Decides from the paths of [`probes`] that exist in the base.
pub fn plan(present: &HashSet<String>) -> Plan {
    let has = |dir: &str, file: &str| present.contains(&format!("{dir}/{file}"));
    if SBIN_DIRS.iter().any(|d| has(d, "iptables-wrapper")) {
        return Plan::Keep;
    }
    let Some(sbin) = SBIN_DIRS.into_iter().find(|d| has(d, "iptables-legacy") && has(d, "iptables-nft"))
    else {
        return Plan::Note(
            "the kube-proxy base image has no iptables with both backends (iptables-legacy and iptables-nft beside each other): left as it is",
        );
    };
    if !present.contains(SHELL) {
        return Plan::Note(
            "the kube-proxy base image has iptables but no /bin/sh for nodeimg's iptables wrapper: kube-proxy uses the base's default backend",
        );
    }
    Plan::Install { sbin }
}

#[derive(Serialize)]
struct Vars<'a> {
    sbin: &'a str,
}

/// The wrapper for `sbin`, with the six links to it: `(path, contents or link target)`.
fn files(sbin: &str) -> Result<(String, Vec<(String, &'static str)>)> {
    let script =
        crate::templates::render(WRAPPER, &Vars { sbin }).context("rendering the iptables wrapper")?;
    let dir = sbin.trim_start_matches('/');
    let links = WRAPPED.iter().map(|c| (format!("{dir}/{c}"), "iptables-wrapper")).collect();
    Ok((script, links))
}

/// Looks at the created (not started) kube-proxy container `id` and installs the wrapper if
/// [`plan`] says so.
pub async fn prepare(docker: &Docker, id: &str, reporter: &Reporter) -> Result<()> {
    let mut present = HashSet::new();
    for path in probes() {
        if docker.path_exists(id, &path).await.with_context(|| format!("looking for {path} in the base"))? {
            present.insert(path);
        }
    }
    match plan(&present) {
        Plan::Keep => reporter.detail("kube-proxy: the base image has its own iptables-wrapper"),
        Plan::Note(note) => reporter.info(format!("note: {note}")),
        Plan::Install { sbin } => {
            let (script, links) = files(sbin)?;
            let wrapper = format!("{}/iptables-wrapper", sbin.trim_start_matches('/'));
            let tar = archive::tar_stream(move |t| {
                archive::append_bytes(t, &wrapper, 0o755, script.as_bytes())?;
                links.iter().try_for_each(|(path, target)| archive::append_symlink(t, path, target))
            });
            docker.upload(id, "/", tar).await.context("installing the iptables wrapper")?;
            reporter.detail(format!("kube-proxy: iptables wrapper installed in {sbin}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(paths: &[&str]) -> HashSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn installs_where_both_backends_are_and_a_shell_runs_it() {
        let debian = present(&["/usr/sbin/iptables-legacy", "/usr/sbin/iptables-nft", "/bin/sh"]);
        assert_eq!(plan(&debian), Plan::Install { sbin: "/usr/sbin" });
        let old = present(&["/sbin/iptables-legacy", "/sbin/iptables-nft", "/bin/sh"]);
        assert_eq!(plan(&old), Plan::Install { sbin: "/sbin" });
        // Both backends must be in one place: the wrapper runs <family>-<mode> beside itself.
        let split = present(&["/usr/sbin/iptables-legacy", "/sbin/iptables-nft", "/bin/sh"]);
        assert!(matches!(plan(&split), Plan::Note(_)));
    }

    #[test]
    fn upstreams_own_wrapper_is_left_alone() {
        let upstream =
            present(&["/usr/sbin/iptables-wrapper", "/usr/sbin/iptables-legacy", "/usr/sbin/iptables-nft"]);
        assert_eq!(plan(&upstream), Plan::Keep);
        assert_eq!(plan(&present(&["/sbin/iptables-wrapper", "/bin/sh"])), Plan::Keep);
    }

    #[test]
    fn no_iptables_or_no_shell_gets_a_note() {
        let Plan::Note(note) = plan(&present(&["/bin/sh"])) else { panic!("a base without iptables") };
        assert!(note.contains("no iptables"), "{note}");
        let legacy_only = present(&["/usr/sbin/iptables-legacy", "/bin/sh"]);
        assert!(matches!(plan(&legacy_only), Plan::Note(_)));
        let Plan::Note(note) = plan(&present(&["/usr/sbin/iptables-legacy", "/usr/sbin/iptables-nft"]))
        else {
            panic!("a base without a shell")
        };
        assert!(note.contains("/bin/sh"), "{note}");
    }

    #[test]
    fn probes_cover_every_path_the_plan_reads() {
        let all: HashSet<String> = probes().into_iter().collect();
        assert_eq!(plan(&all), Plan::Keep);
        let without_wrappers = all.into_iter().filter(|p| !p.ends_with("iptables-wrapper")).collect();
        assert_eq!(plan(&without_wrappers), Plan::Install { sbin: "/usr/sbin" });
    }

    #[test]
    fn every_command_kube_proxy_runs_links_to_the_wrapper() {
        let (script, links) = files("/usr/sbin").unwrap();
        let paths: Vec<&str> = links.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "usr/sbin/iptables",
                "usr/sbin/iptables-save",
                "usr/sbin/iptables-restore",
                "usr/sbin/ip6tables",
                "usr/sbin/ip6tables-save",
                "usr/sbin/ip6tables-restore"
            ]
        );
        assert!(links.iter().all(|(_, target)| *target == "iptables-wrapper"));
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("sbin='/usr/sbin'"), "the directory is filled in");
        assert!(!script.contains("{{"), "nothing left unrendered");
    }

    #[test]
    fn the_wrapper_looks_for_the_chains_the_node_looks_for() {
        // Both sides must decide on the same evidence (see select_iptables in the entrypoint).
        let entrypoint = include_str!("../../base-image/files/usr/local/bin/entrypoint");
        for chain in ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"] {
            assert!(WRAPPER.contains(&format!(":{chain} ")), "wrapper: {chain}");
            assert!(entrypoint.contains(chain), "entrypoint: {chain}");
        }
        assert!(WRAPPER.contains("save nft -t mangle") && entrypoint.contains("iptables-nft-save -t mangle"));
        assert!(WRAPPER.contains(r#"if [ "$nft" -gt "$legacy" ]; then mode=nft"#));
        assert!(entrypoint.contains("if ((nft > legacy)); then mode=nft"));
    }
}
