//! The registry-free way to a base image: debootstrap a Debian root filesystem on the host,
//! add `base-image/files`, run `base-image/setup.sh` in a chroot, load it as one layer.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use super::assets;
use super::crictl::{self, Crictl};
use super::rootfs::Rootfs;
use crate::archive::image::{self, ImageConfig};
use crate::docker::Docker;
use crate::process::{self, Tail};
use crate::progress::Reporter;

pub const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

pub async fn build(
    suite: &str,
    mirror: &str,
    crictl: Option<&Crictl>,
    config: &ImageConfig,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<String> {
    preflight(suite, mirror).await?;
    let scratch = Rootfs::new().context("creating a scratch directory for the root filesystem")?;
    // Before debootstrap: a wrong crictl fails in seconds, not after a minute of packages.
    let crictl_binary = match crictl {
        Some(c) => Some(crictl::prepare(c, scratch.path(), reporter).await.context("getting crictl")?),
        None => None,
    };
    let root = scratch.path().join("rootfs");
    run_debootstrap(&scratch, &root, suite, mirror, reporter).await?;
    add_files(&root).context("adding base-image/files")?;
    if let (Some(binary), Some(crictl)) = (crictl_binary, crictl) {
        let step = reporter.step("installing crictl");
        crictl::install(&binary, &root).context("installing crictl in the root filesystem")?;
        let version = crictl.version.as_deref().unwrap_or("version unknown");
        step.finish(format!("/{} ({version}, sha256 {})", crictl::INSTALL_PATH, &crictl.sha256[..12]));
    }
    run_setup(&scratch, &root, reporter).await?;

    let step = reporter.step("writing the image layer");
    let layer_path = scratch.path().join("layer.tar");
    let layer = tokio::task::spawn_blocking(move || image::write_layer(&root, &layer_path))
        .await?
        .context("writing the root filesystem as a layer")?;
    let layer_size = std::fs::metadata(&layer.path).map(|m| m.len()).unwrap_or_default();
    step.finish(format!("{:.0} MB", layer_size as f64 / 1e6));

    // One `docker load` carries the layer and the whole configuration; `docker import`
    // cannot set STOPSIGNAL on engines before API 1.44.
    let step = reporter.step("loading the image into Docker");
    let (id, archive) = image::image_archive(config, &layer, &[]);
    docker.load_image(archive).await?;
    step.finish(crate::docker::short_id(&id));
    Ok(id)
}

/// Fails early, with the cause, on what would otherwise fail minutes into debootstrap.
async fn preflight(suite: &str, mirror: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("debootstrap needs root: run nodeimg as root (sudo), or use --from dockerfile");
    }
    if find_in_path("debootstrap").is_none() {
        bail!("debootstrap is not installed (apt-get install debootstrap), or use --from dockerfile");
    }
    let release = format!("{mirror}/dists/{suite}/Release");
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let response = client.get(&release).send().await.map_err(|e| {
        anyhow::anyhow!("Debian mirror {mirror} is unreachable: {}", crate::error::root_cause(&e))
    })?;
    match response.status() {
        s if s.is_success() => Ok(()),
        reqwest::StatusCode::NOT_FOUND => {
            bail!("Debian suite {suite:?} not found on mirror {mirror} (no dists/{suite}/Release)")
        }
        s => bail!("Debian mirror {mirror} answered {s} for {release}"),
    }
}

fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

async fn run_debootstrap(
    scratch: &Rootfs,
    target: &Path,
    suite: &str,
    mirror: &str,
    reporter: &Reporter,
) -> Result<()> {
    let step = reporter.step(format!("debootstrap {suite} from {mirror}"));
    let include = assets::packages().join(",");
    let mut cmd = tokio::process::Command::new(find_in_path("debootstrap").context("finding debootstrap")?);
    cmd.args(["--variant=minbase", "--components=main"])
        .arg(format!("--arch={}", debian_arch()))
        .arg(format!("--include={include}"))
        .arg(suite)
        .arg(target)
        .arg(mirror)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let tail = run_logged(scratch, cmd, &step, reporter).await.context("running debootstrap")?;
    if !tail.status.success() {
        bail!("debootstrap failed ({}): {}", tail.status, tail.reason(|l| l.starts_with("E:")));
    }
    step.finish(format!("{} packages", assets::packages().len()));
    Ok(())
}

/// Runs a command, showing its output line by line (beside the spinner, or in full with
/// `--verbose`) and keeping the last lines for the error message. The process group is
/// killed if this future is dropped (Ctrl-C).
async fn run_logged(
    scratch: &Rootfs,
    mut cmd: tokio::process::Command,
    step: &crate::progress::Step,
    reporter: &Reporter,
) -> Result<Tail> {
    let mut child = cmd.spawn()?;
    let mut group = scratch.track(&child);
    let tail = process::follow(&mut child, |line| {
        reporter.detail(line);
        step.set_message(line.to_owned());
        Ok(())
    })
    .await?;
    group.finished();
    Ok(tail)
}

fn add_files(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (rel, file) in assets::image_files() {
        let dest = root.join(rel);
        std::fs::create_dir_all(dest.parent().expect("files have a parent"))?;
        // A package may have installed a symlink here; replace it, never write through it.
        if dest.symlink_metadata().is_ok() {
            std::fs::remove_file(&dest)?;
        }
        std::fs::write(&dest, file.contents)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(file.mode))?;
    }
    Ok(())
}

async fn run_setup(scratch: &Rootfs, root: &Path, reporter: &Reporter) -> Result<()> {
    let step = reporter.step("running base-image/setup.sh in the root filesystem");
    let script = root.join("tmp/nodeimg-setup.sh");
    std::fs::write(&script, assets::get("setup.sh").contents)?;
    let mut cmd = tokio::process::Command::new("chroot");
    cmd.arg(root)
        .args(["/bin/sh", "/tmp/nodeimg-setup.sh"])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let tail = run_logged(scratch, cmd, &step, reporter).await.context("running chroot")?;
    std::fs::remove_file(&script).ok();
    if !tail.status.success() {
        bail!("base-image/setup.sh failed ({}): {}", tail.status, tail.reason(|_| false));
    }
    step.finish("done");
    Ok(())
}

fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        other => other,
    }
}

/// The Debian mirror apt uses on this machine, else deb.debian.org.
pub fn default_mirror() -> String {
    let mut sources = String::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "sources")) {
            sources += &std::fs::read_to_string(file).unwrap_or_default();
            sources += "\n\n";
        }
    }
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_from_apt_sources(&sources, &list).unwrap_or_else(|| FALLBACK_MIRROR.to_owned())
}

/// The first Debian archive (a URI ending in `/debian`) in deb822 `.sources` text or
/// one-line `sources.list` text; security and third-party archives are passed over.
pub fn mirror_from_apt_sources(deb822: &str, list: &str) -> Option<String> {
    let from_deb822 = deb822.split("\n\n").flat_map(|stanza| {
        let is_deb =
            stanza.lines().any(|l| l.starts_with("Types:") && l.split_whitespace().any(|t| t == "deb"));
        let uris = stanza.lines().find_map(|l| l.strip_prefix("URIs:")).unwrap_or("");
        uris.split_whitespace().filter(move |_| is_deb).map(str::to_owned).collect::<Vec<_>>()
    });
    let from_list = list.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("deb")).then_some(())?;
        words.find(|w| !w.starts_with('[') && !w.ends_with(']')).map(str::to_owned)
    });
    from_deb822
        .chain(from_list)
        .map(|uri| uri.trim_end_matches('/').to_owned())
        .find(|uri| uri.ends_with("/debian") && uri.starts_with("http"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_comes_from_deb822_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n\
                      Types: deb deb-src\nURIs: http://mirror.internal/debian/\nSuites: bookworm\n";
        assert_eq!(mirror_from_apt_sources(deb822, ""), Some("http://mirror.internal/debian".into()));
    }

    #[test]
    fn mirror_comes_from_sources_list_and_skips_third_party_archives() {
        let list = "deb https://packages.cloud.google.com/apt cloud-sdk main\n\
                    # deb http://commented.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main\n";
        assert_eq!(mirror_from_apt_sources("", list), Some("http://ftp.de.debian.org/debian".into()));
        assert_eq!(mirror_from_apt_sources("Types: deb-src\nURIs: http://x/debian\n", ""), None);
    }

    #[test]
    fn host_architecture_has_a_debian_name() {
        assert!(!debian_arch().is_empty());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(debian_arch(), "amd64");
        }
    }
}
