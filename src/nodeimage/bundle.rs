//! `nodeimg images save`: every image a node image needs besides the built ones, in one
//! archive for `--image-archive` on the air-gapped side. The pipeline gathers them into a
//! build container's containerd exactly as a build does; `ctr export` streams them from there
//! (an OCI layout with a Docker manifest.json, canonical names) to the file.

use std::path::Path;

use anyhow::{Result, bail};
use tokio::io::AsyncWriteExt;

use crate::docker::Docker;
use crate::progress::Reporter;

pub struct Saved {
    pub images: Vec<String>,
    pub size: u64,
    pub summary: String,
}

/// Writes the images gathered in the build container to `output`.
pub async fn export(
    docker: &Docker,
    id: &str,
    images: &[String],
    platform: &str,
    output: &Path,
    summary: String,
    reporter: &Reporter,
) -> Result<Saved> {
    let step = reporter.step(format!("writing {}", output.display()));
    let size = export_to(docker, id, images, platform, output).await?;
    step.finish(format!("{:.0} MB", size as f64 / 1e6));
    Ok(Saved { images: images.to_vec(), size, summary })
}

/// Streams `ctr export` of `images` (in container `id`, containerd running) into a temp
/// file beside `output`, renamed into place only when complete; the temp file goes away on
/// error and on Ctrl-C (the future is dropped). Returns the size.
pub async fn export_to(
    docker: &Docker,
    id: &str,
    images: &[String],
    platform: &str,
    output: &Path,
) -> Result<u64> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let part = tempfile::Builder::new().prefix(".nodeimg-save-").suffix(".part").tempfile_in(dir)?;
    let mut file = tokio::fs::File::from_std(part.reopen()?);
    let cmd: Vec<&str> = ["ctr", "-n", "k8s.io", "images", "export", "--platform", platform, "-"]
        .into_iter()
        .chain(images.iter().map(String::as_str))
        .collect();
    let out = docker.exec_stdout_to(id, &cmd, &mut file).await?;
    if !out.success() {
        bail!("`ctr images export` failed: {}", out.last_line());
    }
    file.flush().await?;
    file.sync_all().await?;
    // tempfile creates 0600; a bundle is meant to be copied around and read by others.
    tokio::fs::set_permissions(part.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).await?;
    let size = file.metadata().await?.len();
    part.persist(output)?;
    Ok(size)
}
