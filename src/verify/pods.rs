//! The pods `verify` runs once the nodes are Ready: a pod from the sandbox image (on a
//! worker when there is one), and a `dnsPolicy: Default` pod that resolves a name through
//! the node's resolver, as pods and CoreDNS's upstream do in a kind cluster.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{KUBECTL, kubectl, run, wait};
use crate::docker::Docker;
use crate::node::containerd;

const POD_TEMPLATE: &str = include_str!("../../templates/verify-pod.yaml.hbs");
const DNS_POD_TEMPLATE: &str = include_str!("../../templates/verify-dns-pod.yaml.hbs");

async fn sandbox_image(docker: &Docker, id: &str) -> Result<String> {
    Ok(containerd::read_config(docker, id).await?.sandbox_image()?)
}

/// Applies `pod` until admission takes it: the default service account appears shortly
/// after the API, and pods are refused until then.
async fn create(docker: &Docker, id: &str, pod: String, timeout: Duration) -> Result<()> {
    let cmd: Vec<&str> = KUBECTL.iter().copied().chain(["apply", "-f", "-"]).collect();
    wait(timeout, "the test pod to be accepted", || async {
        let out = docker.exec_with_stdin(id, &cmd, std::io::Cursor::new(pod.clone().into_bytes())).await?;
        Ok(if out.success() { Ok(()) } else { Err(out.last_line().to_owned()) })
    })
    .await
}

async fn phase(docker: &Docker, id: &str, pod: &str) -> Result<String> {
    Ok(kubectl(docker, id, &["get", "pod", pod, "-o", "jsonpath={.status.phase}"])
        .await?
        .stdout
        .trim()
        .to_owned())
}

/// A pod from the sandbox image (in every node image, never pulled), tolerating the
/// control-plane taint; Running means the kubelet, containerd, runc and the CNI all work.
pub async fn run_test_pod(docker: &Docker, id: &str, on: Option<&str>, timeout: Duration) -> Result<()> {
    let image = sandbox_image(docker, id).await?;
    let pod = crate::templates::render(POD_TEMPLATE, &serde_json::json!({ "image": image, "node": on }))?;
    create(docker, id, pod, timeout).await?;
    let on = on.map(|n| format!(" on {n}")).unwrap_or_default();
    wait(timeout, &format!("the test pod ({image}){on} to be Running"), || async {
        let phase = phase(docker, id, "nodeimg-verify").await?;
        Ok(if phase == "Running" { Ok(()) } else { Err(format!("phase {phase}")) })
    })
    .await
}

/// The node's getent run through the node's own dynamic loader, from `/node`: the command
/// of the DNS pod. Absolute symlinks (the loader's) are resolved in the node first.
pub fn getent_command(ldd: &str, resolved: &dyn Fn(&str) -> String, name: &str) -> Option<Vec<String>> {
    let loader = ldd.lines().map(str::trim).find(|l| l.starts_with('/'))?.split_whitespace().next()?;
    let mut dirs: Vec<String> = Vec::new();
    for lib in
        ldd.lines().filter_map(|l| l.split_once("=> ")).filter_map(|(_, r)| r.split_whitespace().next())
    {
        let dir = resolved(lib).rsplit_once('/').map(|(d, _)| format!("/node{d}"))?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Some(vec![
        format!("/node{}", resolved(loader)),
        "--library-path".into(),
        dirs.join(":"),
        "/node/usr/bin/getent".into(),
        "hosts".into(),
        name.to_owned(),
    ])
}

/// From a pod with `dnsPolicy: Default` on `on`, resolves `name` (a node's container name,
/// which only Docker's embedded DNS on the cluster's network knows) and expects `ip`.
pub async fn check_dns(
    docker: &Docker,
    id: &str,
    (on, on_id): (&str, &str),
    name: &str,
    ip: &str,
    timeout: Duration,
) -> Result<()> {
    let ldd = run(docker, on_id, &["ldd", "/usr/bin/getent"]).await?;
    if !ldd.success() {
        bail!("cannot run the DNS check: `ldd /usr/bin/getent` in the node: {}", ldd.last_line());
    }
    let script = "for p in \"$@\"; do readlink -f \"$p\"; done";
    let paths: Vec<String> =
        ldd.stdout.split_whitespace().filter(|w| w.starts_with('/')).map(str::to_owned).collect();
    let mut cmd = vec!["sh", "-c", script, "sh"];
    cmd.extend(paths.iter().map(String::as_str));
    let real = run(docker, on_id, &cmd).await?.stdout;
    let real: Vec<&str> = real.lines().collect();
    let resolved = |p: &str| {
        paths.iter().position(|q| q == p).and_then(|i| real.get(i)).map_or(p.to_owned(), |r| (*r).to_owned())
    };
    let command = getent_command(&ldd.stdout, &resolved, name)
        .context("cannot run the DNS check: no dynamic loader in `ldd /usr/bin/getent`")?;
    let image = sandbox_image(docker, id).await?;
    let vars = serde_json::json!({ "image": image, "node": on, "command": serde_json::to_string(&command)? });
    create(docker, id, crate::templates::render(DNS_POD_TEMPLATE, &vars)?, timeout).await?;
    let done = wait(timeout, &format!("the DNS pod on {on} to finish"), || async {
        let phase = phase(docker, id, "nodeimg-verify-dns").await?;
        Ok(if matches!(phase.as_str(), "Succeeded" | "Failed") {
            Ok(phase)
        } else {
            Err(format!("phase {phase}"))
        })
    })
    .await?;
    let logs = kubectl(docker, id, &["logs", "nodeimg-verify-dns"]).await?;
    let answer = logs.stdout.trim();
    if done != "Succeeded" || answer.split_whitespace().next() != Some(ip) {
        let resolv = run(docker, on_id, &["cat", "/etc/resolv.conf"]).await?.stdout;
        let nameserver = resolv.lines().find(|l| l.starts_with("nameserver")).unwrap_or("no nameserver");
        bail!(
            "a dnsPolicy: Default pod on {on} could not resolve {name} through the node's resolver ({nameserver}): {}",
            if answer.is_empty() { logs.last_line().to_owned() } else { answer.to_owned() }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";

    #[test]
    fn getent_runs_through_the_nodes_loader() {
        let resolved = |p: &str| {
            if p == "/lib64/ld-linux-x86-64.so.2" {
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".to_owned()
            } else {
                p.to_owned()
            }
        };
        let cmd = getent_command(LDD, &resolved, "cp").unwrap();
        assert_eq!(
            cmd,
            [
                "/node/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "--library-path",
                "/node/lib/x86_64-linux-gnu",
                "/node/usr/bin/getent",
                "hosts",
                "cp"
            ]
        );
        assert!(getent_command("not a dynamic executable", &resolved, "cp").is_none());
    }

    #[test]
    fn dns_pod_uses_the_nodes_resolver() {
        let vars = serde_json::json!({ "image": "pause:1", "node": "w1", "command": "[\"/node/x\"]" });
        let pod: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&crate::templates::render(DNS_POD_TEMPLATE, &vars).unwrap()).unwrap();
        assert_eq!(pod["spec"]["dnsPolicy"].as_str(), Some("Default"));
        assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/hostname"].as_str(), Some("w1"));
        assert_eq!(pod["spec"]["containers"][0]["command"][0].as_str(), Some("/node/x"));
    }
}
