//! `nodeimg images list NODE_IMAGE`: what an existing node image's containerd holds, read
//! from an idle container of it (containerd started there, never the node booted).

use anyhow::{Context, Result};

use super::KIND_VERSION;
use crate::docker::{ContainerSpec, Docker};
use crate::node::containerd;
use crate::nodeimage::images::ctr;

/// One image in the node's containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    pub digest: String,
    /// Labelled `io.cri-containerd.pinned=pinned`: the kubelet's garbage collection keeps it.
    pub pinned: bool,
}

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
    Ok(Some(parse(&listed)))
}

/// `ctr images ls`: REF TYPE DIGEST SIZE (two words) PLATFORMS LABELS. Names made of a
/// digest only (`sha256:…`, ctr's `import-…@sha256:…`) are left out: they name the same
/// images again.
pub fn parse(listing: &str) -> Vec<Held> {
    listing
        .lines()
        .skip(1)
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (name, digest, labels) = (words.first()?, words.get(2)?, words.last()?);
            if name.starts_with("sha256:") || name.starts_with("import-") {
                return None;
            }
            Some(Held {
                name: (*name).to_owned(),
                digest: (*digest).to_owned(),
                pinned: labels.split(',').any(|l| l == "io.cri-containerd.pinned=pinned"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ctrs_listing() {
        let listing = "\
REF                               TYPE                                                 DIGEST                                                                  SIZE      PLATFORMS   LABELS
docker.io/library/busybox:1       application/vnd.docker.distribution.manifest.v2+json sha256:aaa 1.2 MiB   linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned
import-2024-01-01@sha256:bbb      application/vnd.oci.image.manifest.v1+json           sha256:bbb 3.0 KiB   linux/amd64 -
registry.k8s.io/pause:3.9         application/vnd.oci.image.manifest.v1+json           sha256:ccc 300.0 KiB linux/amd64 -
";
        assert_eq!(
            parse(listing),
            vec![
                Held {
                    name: "docker.io/library/busybox:1".into(),
                    digest: "sha256:aaa".into(),
                    pinned: true
                },
                Held { name: "registry.k8s.io/pause:3.9".into(), digest: "sha256:ccc".into(), pinned: false },
            ]
        );
    }
}
