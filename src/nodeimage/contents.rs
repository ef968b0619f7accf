//! `nodeimg images list NODE_IMAGE`: what an existing node image's containerd holds, read
//! from an idle container of it (containerd started there, never the node booted).

use anyhow::{Context, Result};

use super::images::ctr;
use crate::docker::{ContainerSpec, Docker};
use crate::node::containerd::{self, Held, parse_listing};

/// What marks a node image: kind reads the Kubernetes version from it.
pub const KIND_VERSION: &str = "/kind/version";

/// What the node image `image` holds; `None` when `image` is not a local image holding
/// /kind/version (so the caller can take it as something else).
pub async fn list(docker: &Docker, image: &str) -> Result<Option<Vec<Held>>> {
    if !docker.image_exists(image).await? {
        return Ok(None);
    }
    let mut spec = ContainerSpec::idle(image);
    spec.security_opt = vec!["seccomp=unconfined".into()];
    let container = crate::docker::ContainerGuard::new(docker, docker.create_container(&spec).await?);
    let id = container.id().to_owned();
    if !docker.path_exists(&id, KIND_VERSION).await? {
        container.remove().await?;
        return Ok(None);
    }
    docker.start_container(&id).await?;
    containerd::start(docker, &id).await.context("starting containerd in a container of the image")?;
    let listed = ctr(docker, &id, &["images", "ls"]).await?;
    container.remove().await.context("removing the container")?;
    Ok(Some(parse_listing(&listed)))
}
