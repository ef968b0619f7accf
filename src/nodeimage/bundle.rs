//! `nodeimg images save`: every image a node image needs besides the built ones, in one
//! archive for `--image-archive` on the air-gapped side. The images are gathered into a build
//! container's containerd exactly as a build does, then `ctr export` streams them (an OCI
//! layout with a Docker manifest.json, canonical names) to the file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use super::{Scratch, index_archives, prepare, sources, start_containerd_and_list};
use crate::docker::Docker;
use crate::progress::Reporter;

pub struct Saved {
    pub images: Vec<String>,
    pub size: u64,
    pub summary: String,
}

pub async fn save(
    cfg: &super::NodeImageConfig,
    output: &Path,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Saved> {
    let scratch = Scratch::new(None)?;
    let archives = index_archives(&cfg.images)?;
    let (artifacts, built, id) = prepare(cfg, scratch.path(), docker, reporter).await?;
    let required = start_containerd_and_list(cfg, docker, &id, &artifacts, &built, reporter).await?;
    let platform = format!("linux/{}", cfg.arch);
    // Built images are made from the artifacts on the other side too: leave them out.
    let plan = sources::plan(docker, &[], &required, &archives, &cfg.images, &platform).await?;
    sources::check_offline(&plan)?;
    let summary = sources::summary(&plan);
    let step = reporter.step(format!("gathering {} images ({summary})", plan.len()));
    sources::import(docker, &id, &plan, &[], &archives, &platform, reporter).await?;
    step.finish("done");

    let step = reporter.step(format!("writing {}", output.display()));
    let size = export(docker, &id, &required, &platform, output)
        .await
        .with_context(|| format!("writing {}", output.display()))?;
    step.finish(format!("{:.0} MB", size as f64 / 1e6));
    Ok(Saved { images: required, size, summary })
}

/// Streams `ctr export` into a temp file beside `output`, renamed into place only when
/// complete; the temp file goes away on error and on Ctrl-C (the future is dropped).
async fn export(docker: &Docker, id: &str, images: &[String], platform: &str, output: &Path) -> Result<u64> {
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
