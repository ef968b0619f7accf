//! Building Kubernetes from a source tree with upstream's own build (`make`), its output
//! streamed to a log file, then collected as [`Artifacts`].

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use std::io::Write;

use super::{Artifacts, KubeVersion, release};
use crate::process;
use crate::progress::Reporter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildMode {
    /// Upstream's dockerized build (`make quick-release-images`), as kind does.
    Docker,
    /// The host's Go (`make all`), offline; nodeimg makes the control-plane images.
    Host,
}

pub const HOST_WHAT: [&str; 7] = [
    "cmd/kubeadm",
    "cmd/kubelet",
    "cmd/kubectl",
    "cmd/kube-apiserver",
    "cmd/kube-controller-manager",
    "cmd/kube-scheduler",
    "cmd/kube-proxy",
];

/// One command of a build: `make -C <root> <target> <vars…>`, or a script of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildCommand {
    /// `None` for make, else a script relative to the tree (`build/run.sh`).
    pub script: Option<&'static str>,
    pub args: Vec<String>,
}

impl BuildCommand {
    fn title(&self) -> String {
        let target = self.args.iter().find(|a| !a.contains('=')).map(String::as_str).unwrap_or("");
        match self.script {
            Some(script) => format!("{script} {target}"),
            None => format!("make {target}"),
        }
    }
}

/// The commands of a build. The user's `KUBE_*` and `GOFLAGS` settings reach make through
/// the environment, which is passed on unchanged.
pub fn make_commands(mode: BuildMode, version: &KubeVersion, arch: &str) -> Vec<BuildCommand> {
    let platform = format!("KUBE_BUILD_PLATFORMS=linux/{arch}");
    let make = |args: Vec<String>| BuildCommand { script: None, args };
    match mode {
        BuildMode::Host => vec![make(vec!["all".into(), format!("WHAT={}", HOST_WHAT.join(" ")), platform])],
        BuildMode::Docker => {
            let mut cmds = vec![make(vec![
                "quick-release-images".into(),
                "KUBE_EXTRA_WHAT=cmd/kubeadm cmd/kubectl cmd/kubelet".into(),
                "KUBE_VERBOSE=0".into(),
                "KUBE_BUILD_HYPERKUBE=n".into(),
                "KUBE_BUILD_CONFORMANCE=n".into(),
                platform.clone(),
            ])];
            // Before v1.21, quick-release-images did not build KUBE_EXTRA_WHAT.
            if !version.at_least(1, 21) {
                cmds.push(BuildCommand {
                    script: Some("build/run.sh"),
                    args: vec![
                        "make".into(),
                        "all".into(),
                        "WHAT=cmd/kubeadm cmd/kubectl cmd/kubelet".into(),
                        platform,
                    ],
                });
            }
            cmds
        }
    }
}

/// Runs the build, its output going to `log` (and, with `-v`, to the terminal); the
/// spinner shows the current make target and the last line. A failure ends with the last
/// 20 lines of the log and its path. Each command runs in a process group of its own,
/// killed whole when it fails or when this future is dropped.
pub async fn run(
    root: &Path,
    mode: BuildMode,
    version: &KubeVersion,
    arch: &str,
    log: &Path,
    reporter: &Reporter,
) -> Result<()> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut log_file = std::io::BufWriter::new(file);
    for command in make_commands(mode, version, arch) {
        let step = reporter.step(command.title());
        let mut cmd = match command.script {
            Some(script) => tokio::process::Command::new(root.join(script)),
            None => {
                let mut make = tokio::process::Command::new("make");
                make.arg("-C").arg(root);
                make
            }
        };
        cmd.args(&command.args)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Dropped on failure or Ctrl-C: make's whole tree goes with it, not only make.
        let mut group =
            process::GroupChild::spawn(&mut cmd).with_context(|| format!("starting {}", command.title()))?;
        let mut stage = String::new();
        let tail = process::follow(group.child(), |line| {
            writeln!(log_file, "{line}")?;
            reporter.detail(line);
            // Upstream's build announces each stage as `+++ [date] Building go targets ...`.
            if let Some((_, s)) = line.strip_prefix("+++ [").and_then(|l| l.split_once("] ")) {
                stage = s.to_owned();
            }
            step.set_message(if stage.is_empty() { line.to_owned() } else { format!("{stage} | {line}") });
            Ok(())
        })
        .await?;
        log_file.flush()?;
        if !tail.status.success() {
            bail!(
                "{} failed ({}); log: {}; last lines: {}",
                command.title(),
                tail.status,
                log.display(),
                tail.joined()
            );
        }
        step.finish("done");
    }
    Ok(())
}

/// Upstream's output directory: `_output`, or `OUT_DIR` when set (its Makefile honours it).
pub fn output_dir(root: &Path) -> PathBuf {
    output_dir_for(root, std::env::var_os("OUT_DIR"))
}

fn output_dir_for(root: &Path, out_dir: Option<std::ffi::OsString>) -> PathBuf {
    out_dir.filter(|d| !d.is_empty()).map(|d| root.join(d)).unwrap_or_else(|| root.join("_output"))
}

/// Where the binaries and image tars of a finished build are.
pub fn outputs(root: &Path, mode: BuildMode, arch: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    outputs_in(&output_dir(root), mode, arch)
}

fn outputs_in(out: &Path, mode: BuildMode, arch: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let bin_dir = match mode {
        BuildMode::Docker => out.join(format!("dockerized/bin/linux/{arch}")),
        BuildMode::Host => out.join(format!("local/bin/linux/{arch}")),
    };
    let binaries = release::BINARIES.iter().map(|b| bin_dir.join(b)).collect();
    let images = match mode {
        BuildMode::Docker => {
            release::IMAGES.iter().map(|i| out.join(format!("release-images/{arch}/{i}.tar"))).collect()
        }
        BuildMode::Host => release::IMAGES.iter().map(|i| bin_dir.join(i)).collect(),
    };
    (binaries, images)
}

/// Artifacts of a docker-mode build (binaries and image tars from upstream's build).
pub fn docker_artifacts(root: &Path, arch: &str, version: KubeVersion) -> Result<Artifacts> {
    let (binaries, image_tars) = outputs(root, BuildMode::Docker, arch);
    for path in binaries.iter().chain(&image_tars) {
        if !path.is_file() {
            bail!("the build did not produce {}", path.display());
        }
    }
    Ok(Artifacts { binaries, image_tars, version, components: None, provenance: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_mode_adds_build_run_sh_before_1_21() {
        let old = make_commands(BuildMode::Docker, &KubeVersion::parse("v1.20.2").unwrap(), "amd64");
        assert_eq!(old.len(), 2);
        assert_eq!(old[1].script, Some("build/run.sh"));
        assert!(old[1].args.contains(&"WHAT=cmd/kubeadm cmd/kubectl cmd/kubelet".to_owned()));
        let new = make_commands(BuildMode::Docker, &KubeVersion::parse("v1.30.0").unwrap(), "arm64");
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].args[0], "quick-release-images");
        assert!(new[0].args.contains(&"KUBE_BUILD_PLATFORMS=linux/arm64".to_owned()));
        assert_eq!(new[0].title(), "make quick-release-images");
    }

    #[test]
    fn host_mode_builds_all_seven_commands() {
        let cmds = make_commands(BuildMode::Host, &KubeVersion::parse("v1.30.0").unwrap(), "amd64");
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].args[1], format!("WHAT={}", HOST_WHAT.join(" ")));
        let (bins, images) = outputs_in(&output_dir_for(Path::new("/k"), None), BuildMode::Host, "amd64");
        assert_eq!(bins[0], Path::new("/k/_output/local/bin/linux/amd64/kubeadm"));
        assert_eq!(images[3], Path::new("/k/_output/local/bin/linux/amd64/kube-proxy"));
        assert_eq!(output_dir_for(Path::new("/k"), Some("out".into())), Path::new("/k/out"));
        assert_eq!(output_dir_for(Path::new("/k"), Some("/abs".into())), Path::new("/abs"));
    }
}
