//! `--push`: each architecture's local image pushed by the engine that holds it (the
//! engine has the layers and the user's login), then read back and tied together with an
//! image index under the target's tag by the registry client, which the engine cannot do.

use crate::docker::Docker;
use crate::progress::Reporter;
use crate::registry::{self, Client, ManifestInfo};

/// What went wrong pushing: a registry's answer, or the local side of one architecture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error("{reference} is not a valid image reference")]
    Reference { reference: String },
    #[error("the {arch} image {image}")]
    Local { arch: String, image: String, source: Box<crate::docker::Error> },
    #[error("the {arch} image {image} is not in the local image store")]
    NoLocalImage { arch: String, image: String },
    /// The engine's own words (`denied: …`) are the reason; the docker error's `pushing
    /// <ref>` would repeat the reference.
    #[error("pushing the {arch} image to {reference}: {reason}")]
    Push { arch: String, reference: String, reason: String },
    #[error(
        "the {arch} image cannot be pushed as {reference}: that name is taken by another local image ({other})"
    )]
    TagTaken { arch: String, reference: String, other: String },
}

/// One architecture's image as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    pub arch: String,
    /// `<target-repo>:<target-tag>-<arch>`.
    pub reference: String,
    /// The manifest digest the registry holds under `reference`.
    pub digest: String,
    /// The local tag made for the push is still there: it is the image's only name (removing
    /// it would remove the image), or removing it failed.
    pub kept_tag: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushResult {
    pub per_arch: Vec<PushedImage>,
    /// The target as given (`repo:tag`).
    pub index: String,
    pub index_digest: String,
}

/// Pushes each `(arch, local image)` of `items` as `<target>-<arch>` and then writes the
/// index of them all as `target`, with the docker CLI's credentials. The first failure ends
/// it: no index is written, and the local images stay.
pub async fn push_all(
    docker: &Docker,
    items: &[(String, String)],
    target: &str,
    reporter: &Reporter,
) -> Result<PushResult, Error> {
    push_all_with(&Client::new()?, docker, items, target, reporter).await
}

/// [`push_all`] with a client of the caller's.
pub async fn push_all_with(
    client: &Client,
    docker: &Docker,
    items: &[(String, String)],
    target: &str,
    reporter: &Reporter,
) -> Result<PushResult, Error> {
    let items: Vec<(String, &Docker, String)> =
        items.iter().map(|(arch, image)| (arch.clone(), docker, image.clone())).collect();
    push_each_with(client, &items, target, reporter).await
}

/// [`push_all`] for images on engines of their own (`(arch, engine, local image)`): each is
/// pushed by the engine that holds it.
pub async fn push_each(
    items: &[(String, &Docker, String)],
    target: &str,
    reporter: &Reporter,
) -> Result<PushResult, Error> {
    push_each_with(&Client::new()?, items, target, reporter).await
}

async fn push_each_with(
    client: &Client,
    items: &[(String, &Docker, String)],
    target: &str,
    reporter: &Reporter,
) -> Result<PushResult, Error> {
    let parsed = crate::reference::ImageRef::parse(target).ok().filter(|t| t.digest().is_none());
    let Some(parsed) = parsed else { return Err(Error::Reference { reference: target.to_owned() }) };
    if items.is_empty() {
        return Err(registry::Error::Empty { target: target.to_owned() }.into());
    }
    let (repo, tag) = crate::reference::split(target);
    let login = client.login(parsed.api_host())?;
    let login = login.as_ref().map(|(user, password)| (user.as_str(), password.as_str()));
    let mut pushed = Vec::new();
    let mut entries = Vec::new();
    for (arch, docker, image) in items {
        let reference = format!("{repo}:{tag}-{arch}");
        let step = reporter.step(format!("pushing the {arch} image to {reference}"));
        match push_one(client, docker, reporter, (arch, image.as_str()), &reference, login).await {
            Ok((info, kept_tag)) => {
                step.finish(&info.digest);
                if info.platform.architecture != *arch {
                    reporter.warn(format!(
                        "{reference} was pushed for {arch} but is an image for {}; the index lists it as such",
                        info.platform
                    ));
                }
                pushed.push(PushedImage {
                    arch: arch.clone(),
                    reference,
                    digest: info.digest.clone(),
                    kept_tag,
                });
                entries.push(info);
            }
            Err(e) => {
                step.fail("failed");
                return Err(e);
            }
        }
    }
    let step = reporter.step(format!("writing the index {target}"));
    match client.put_index(target, &entries).await.map_err(Error::from) {
        Ok(index_digest) => {
            step.finish(&index_digest);
            Ok(PushResult { per_arch: pushed, index: target.to_owned(), index_digest })
        }
        Err(e) => {
            step.fail("failed");
            Err(e)
        }
    }
}

/// The SPDX document's artifact type, as SPDX and the OCI referrers of SBOM tools name it.
pub const SPDX_JSON: &str = "application/spdx+json";

/// Attaches the SBOM `document` to each manifest of `pushed` (the index and every
/// architecture's image, since a consumer may hold either digest) as an OCI artifact whose
/// subject it is. Returns `(subject reference, attached)` per manifest.
pub async fn attach_sbom(
    pushed: &PushResult,
    document: &[u8],
    reporter: &Reporter,
) -> Result<Vec<(String, registry::Attached)>, Error> {
    let client = Client::new()?;
    let (repo, _) = crate::reference::split(&pushed.index);
    let subjects = std::iter::once(&pushed.index_digest).chain(pushed.per_arch.iter().map(|p| &p.digest));
    let annotations: std::collections::BTreeMap<String, String> =
        [("org.opencontainers.image.title".to_owned(), "sbom.spdx.json".to_owned())].into_iter().collect();
    let mut attached = Vec::new();
    for subject in subjects {
        let reference = format!("{repo}@{subject}");
        let step = reporter.step(format!("attaching the SBOM to {reference}"));
        match client.attach(&pushed.index, subject, SPDX_JSON, document.to_vec(), annotations.clone()).await {
            Ok(done) => {
                step.finish(&done.digest);
                attached.push((reference, done));
            }
            Err(e) => {
                step.fail("failed");
                return Err(e.into());
            }
        }
    }
    Ok(attached)
}

/// Tags `image` as `reference` unless it already is, pushes it and reads its manifest back.
/// A tag this made is removed again, unless it is the image's only name: removing an
/// image's last name removes the image. Returns whether such a tag was kept.
async fn push_one(
    client: &Client,
    docker: &Docker,
    reporter: &Reporter,
    (arch, image): (&str, &str),
    reference: &str,
    login: Option<(&str, &str)>,
) -> Result<(ManifestInfo, bool), Error> {
    let local =
        |source| Error::Local { arch: arch.to_owned(), image: image.to_owned(), source: Box::new(source) };
    let info = docker.inspect_image(image).await.map_err(local)?;
    let info = info.ok_or_else(|| Error::NoLocalImage { arch: arch.to_owned(), image: image.to_owned() })?;
    let created = match docker.inspect_image(reference).await.map_err(local)? {
        Some(existing) if existing.id == info.id => false,
        Some(existing) => {
            return Err(Error::TagTaken {
                arch: arch.to_owned(),
                reference: reference.to_owned(),
                other: crate::docker::short_id(&existing.id).to_owned(),
            });
        }
        None => {
            docker.tag_image(&info.id, reference).await.map_err(local)?;
            true
        }
    };
    let result = push_and_read(client, docker, arch, reference, login).await;
    let mut kept = false;
    if created {
        if !has_other_name(&info.names, reference) {
            reporter.info(format!("kept the local tag {reference}: it is the image's only name"));
            kept = true;
        } else if let Err(e) = docker.remove_image(reference).await {
            // A leftover tag is no reason to fail a push that worked.
            reporter.warn(format!("the local tag {reference} stays: {e}"));
            kept = true;
        }
    }
    Ok((result?, kept))
}

async fn push_and_read(
    client: &Client,
    docker: &Docker,
    arch: &str,
    reference: &str,
    login: Option<(&str, &str)>,
) -> Result<ManifestInfo, Error> {
    docker.push_as(reference, login).await.map_err(|e| Error::Push {
        arch: arch.to_owned(),
        reference: reference.to_owned(),
        reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
    })?;
    Ok(client.manifest(reference).await?)
}

/// Whether `names` (the image's tags before the push) hold a name besides `reference`:
/// removing a tag that is an image's last name removes the image.
fn has_other_name(names: &[String], reference: &str) -> bool {
    let ours = crate::reference::normalize(reference);
    names.iter().filter(|n| !n.starts_with("<none>")).any(|n| crate::reference::normalize(n) != ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_removable_only_when_the_image_keeps_another_name() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(has_other_name(&names(&["kind/node:amd64"]), "127.0.0.1:5000/kind/node:v1-amd64"));
        assert!(!has_other_name(&names(&[]), "127.0.0.1:5000/kind/node:v1-amd64"));
        assert!(!has_other_name(&names(&["<none>:<none>"]), "r/x:v1-amd64"));
        // The engine reports familiar names; the reference may be written in full.
        assert!(!has_other_name(&names(&["kindest/node:v1-amd64"]), "docker.io/kindest/node:v1-amd64"));
    }
}
