//! The registry-free way to a base image: debootstrap a Debian root filesystem on the host,
//! add `base-image/files`, run `base-image/setup.sh` in a chroot, load it as one layer.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use super::assets;
use super::crictl::{self, Crictl};
use super::rootfs::Rootfs;
use super::runtime::{self, RuntimeLine};
use crate::archive::image::{self, ImageConfig};
use crate::docker::Docker;
use crate::process::{self, Tail};
use crate::progress::Reporter;

pub const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

/// What debootstrap makes: `suite` from `mirror`, for `arch` (Docker's name).
pub struct Target<'a> {
    pub suite: &'a str,
    pub mirror: &'a str,
    pub arch: &'a str,
}

pub async fn build(
    target: &Target<'_>,
    line: RuntimeLine,
    crictl: Option<&Crictl>,
    config: &ImageConfig,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<String> {
    let (suite, mirror) = (target.suite, target.mirror);
    preflight(suite, mirror).await?;
    let scratch = Rootfs::new().context("creating a scratch directory for the root filesystem")?;
    // Before debootstrap: a wrong crictl fails in seconds, not after a minute of packages.
    let crictl_binary = match crictl {
        Some(c) => Some(crictl::prepare(c, scratch.path(), reporter).await.context("getting crictl")?),
        None => None,
    };
    let root = scratch.path().join("rootfs");
    let pinned: Vec<String> = line.pins(runtimes_file()).into_iter().map(|p| p.package).collect();
    run_debootstrap(&scratch, &root, target, &pinned, reporter).await?;
    install_runtime(&scratch, &root, line, mirror, reporter).await?;
    add_files(&root).context("adding base-image/files")?;
    if let (Some(binary), Some(crictl)) = (crictl_binary, crictl) {
        let step = reporter.step("installing crictl");
        crictl::install(&binary, &root).context("installing crictl in the root filesystem")?;
        let version = crictl.version.as_deref().unwrap_or("version unknown");
        step.finish(format!("/{} ({version}, sha256 {})", crictl::INSTALL_PATH, &crictl.sha256[..12]));
    }
    run_setup(&scratch, &root, reporter).await?;
    // What is inside, read from dpkg rather than the pins: the labels say what was installed.
    let mut config = config.clone();
    let installed = installed_versions(&root).await.context("reading the installed runtime versions")?;
    for (key, value) in runtime::labels_from_dpkg(suite, line, &installed) {
        config.labels.insert(key.to_owned(), value);
    }

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
    let (id, archive) = image::image_archive(&config, &layer, &[]);
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
    root: &Path,
    target: &Target<'_>,
    pinned: &[String],
    reporter: &Reporter,
) -> Result<()> {
    let Target { suite, mirror, arch } = *target;
    let step = reporter.step(format!("debootstrap {suite} ({arch}) from {mirror}"));
    // The runtime line's pinned packages come afterwards, from their own suite: installing
    // the base suite's first would only download them twice.
    let packages: Vec<&str> =
        assets::packages().into_iter().filter(|p| !pinned.iter().any(|q| q == p)).collect();
    let include = packages.join(",");
    let mut cmd = tokio::process::Command::new(find_in_path("debootstrap").context("finding debootstrap")?);
    cmd.args(["--variant=minbase", "--components=main"])
        .arg(format!("--arch={}", debian_arch(arch)))
        .arg(format!("--include={include}"))
        .arg(suite)
        .arg(root)
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
    step.finish(format!("{} packages", packages.len()));
    Ok(())
}

fn runtimes_file() -> &'static str {
    std::str::from_utf8(assets::get("runtimes").contents).unwrap_or_default()
}

/// `base-image/install-runtime.sh` in the chroot: the line's pinned packages from their suites.
async fn install_runtime(
    scratch: &Rootfs,
    root: &Path,
    line: RuntimeLine,
    mirror: &str,
    reporter: &Reporter,
) -> Result<()> {
    let pins = line.pins(runtimes_file());
    if pins.is_empty() {
        return Ok(());
    }
    let step = reporter.step(format!("installing runtime {line} (pinned packages)"));
    std::fs::write(root.join("tmp/nodeimg-runtimes"), runtimes_file())?;
    let args = [line.name(), mirror, "/tmp/nodeimg-runtimes"];
    let tail = run_in_chroot(scratch, root, "install-runtime.sh", &args, &step, reporter).await?;
    std::fs::remove_file(root.join("tmp/nodeimg-runtimes")).ok();
    if !tail.status.success() {
        bail!(
            "base-image/install-runtime.sh {line} failed ({}): {}",
            tail.status,
            tail.reason(|l| l.starts_with("E:"))
        );
    }
    let names: Vec<String> = pins
        .iter()
        .filter(|p| runtime::LABELLED_PACKAGES.iter().any(|(q, _)| *q == p.package))
        .map(|p| format!("{} {}", p.package, p.version))
        .collect();
    step.finish(names.join(", "));
    Ok(())
}

/// `Package Version` lines of the packages whose versions become labels, and the os-release.
async fn installed_versions(root: &Path) -> Result<String> {
    let mut cmd = tokio::process::Command::new("chroot");
    cmd.arg(root).args(["sh", "-c", &runtime::installed_script()]).env_clear().env("PATH", CHROOT_PATH);
    let out = cmd.output().await.context("running dpkg-query in the chroot")?;
    if !out.status.success() {
        bail!("dpkg-query failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    let tail = run_in_chroot(scratch, root, "setup.sh", &[], &step, reporter).await?;
    if !tail.status.success() {
        bail!("base-image/setup.sh failed ({}): {}", tail.status, tail.reason(|_| false));
    }
    step.finish("done");
    Ok(())
}

/// Runs `base-image/SCRIPT ARGS` with sh in the chroot, logged; the script is removed after.
async fn run_in_chroot(
    scratch: &Rootfs,
    root: &Path,
    script: &str,
    args: &[&str],
    step: &crate::progress::Step,
    reporter: &Reporter,
) -> Result<Tail> {
    let inside = format!("/tmp/nodeimg-{script}");
    let on_host = root.join(inside.trim_start_matches('/'));
    std::fs::write(&on_host, assets::get(script).contents)?;
    let mut cmd = tokio::process::Command::new("chroot");
    cmd.arg(root)
        .args(["/bin/sh", &inside])
        .args(args)
        .env_clear()
        .env("PATH", CHROOT_PATH)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let tail = run_logged(scratch, cmd, step, reporter).await.context("running chroot")?;
    std::fs::remove_file(&on_host).ok();
    Ok(tail)
}

/// Debian's name of Docker's architecture `arch`: they differ only for ppc64le.
fn debian_arch(arch: &str) -> &str {
    match arch {
        "ppc64le" => "ppc64el",
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
    fn architectures_have_debian_names() {
        assert_eq!(debian_arch("amd64"), "amd64");
        assert_eq!(debian_arch("arm64"), "arm64");
        assert_eq!(debian_arch("ppc64le"), "ppc64el");
        assert_eq!(debian_arch("s390x"), "s390x");
    }
}
