//! Files inside a container (the build container, a node): read with `cat`, written as a
//! streamed tar upload, so nothing depends on a shell or tools in the image.

use anyhow::{Result, bail};

use crate::archive;
use crate::docker::Docker;

/// A text file inside the container.
pub async fn read(docker: &Docker, id: &str, path: &str) -> Result<String> {
    let out = docker.exec(id, &["cat", path]).await?;
    if !out.success() {
        bail!("reading {path}: {}", out.last_line());
    }
    Ok(out.stdout)
}

/// Writes `content` to the absolute `path` in the container (mode 0644), creating its
/// directory.
pub async fn write(docker: &Docker, id: &str, path: &str, content: impl Into<String>) -> Result<()> {
    write_all(docker, id, vec![(path.to_owned(), content.into())]).await
}

/// Writes several files (absolute paths, mode 0644) in one upload.
pub async fn write_all(docker: &Docker, id: &str, files: Vec<(String, String)>) -> Result<()> {
    for (path, _) in &files {
        if !path.starts_with('/') {
            bail!("{path} is not an absolute path");
        }
    }
    let tar = archive::tar_stream(move |tar| {
        for (path, content) in &files {
            archive::append_bytes(tar, path.trim_start_matches('/'), 0o644, content.as_bytes())?;
        }
        Ok(())
    });
    docker.upload(id, "/", tar).await?;
    Ok(())
}
