use std::collections::HashMap;

use bollard::query_parameters::{
    BuildImageOptions, CreateImageOptions, ListImagesOptions, PushImageOptions, RemoveImageOptions,
    TagImageOptions,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::container::is_not_found;
use super::container::short;
use super::error::{Daemon, Error};
use super::{Docker, LABEL_IMAGE_BUILD, Result};

/// What the pipeline needs to know about an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub size: u64,
    pub architecture: String,
    pub labels: HashMap<String, String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub stop_signal: Option<String>,
    pub layers: usize,
    /// The names the engine holds it under, as it reports them (Podman's are qualified).
    pub names: Vec<String>,
    /// `repo@sha256:…` of each registry it was pushed to or pulled from.
    pub repo_digests: Vec<String>,
}

impl ImageInfo {
    /// The registry digests the engine holds for `repository` (`library/busybox`).
    fn digests_of(&self, repository: &str) -> Vec<String> {
        let of_repo = |d: &&String| {
            d.rsplit_once('@')
                .and_then(|(name, _)| crate::reference::ImageRef::parse(name).ok())
                .is_some_and(|r| r.repository() == repository)
        };
        self.repo_digests
            .iter()
            .filter(of_repo)
            .filter_map(|d| d.rsplit_once('@'))
            .map(|(_, d)| d.to_owned())
            .collect()
    }
}

impl Docker {
    /// `None` when there is no such image. A pinned reference (`name:tag@sha256:…`) is the
    /// image under `name:tag` whose digest is the pinned one: a registry digest the engine
    /// holds for that repository, or the image ID; another digest is refused, naming both.
    pub async fn inspect_image(&self, name: &str) -> Result<Option<ImageInfo>> {
        let pinned = crate::reference::ImageRef::parse(name).ok().filter(|r| r.digest().is_some());
        let Some(pinned) = pinned.filter(|r| r.tag().is_some()) else {
            return self.inspect_as_named(name).await;
        };
        let wanted = pinned.digest().unwrap_or_default();
        let (tagged, _) = name.split_once('@').unwrap_or((name, ""));
        let Some(info) = self.inspect_as_named(tagged).await? else { return Ok(None) };
        let found = info.digests_of(pinned.repository());
        if info.id == wanted || found.iter().any(|d| d == wanted) {
            return Ok(Some(info));
        }
        let found = if found.is_empty() {
            format!("image ID {} and no registry digest", info.id)
        } else {
            found.join(", ")
        };
        Err(Error::DigestMismatch { name: tagged.into(), wanted: wanted.into(), found })
    }

    async fn inspect_as_named(&self, name: &str) -> Result<Option<ImageInfo>> {
        match self.client.inspect_image(name).await {
            Ok(img) => {
                let config = img.config.unwrap_or_default();
                Ok(Some(ImageInfo {
                    id: img.id.unwrap_or_default(),
                    size: img.size.unwrap_or_default().max(0) as u64,
                    architecture: img.architecture.unwrap_or_default(),
                    labels: config.labels.unwrap_or_default(),
                    entrypoint: config.entrypoint.unwrap_or_default(),
                    cmd: config.cmd.unwrap_or_default(),
                    env: config.env.unwrap_or_default(),
                    stop_signal: config.stop_signal,
                    layers: img.root_fs.and_then(|r| r.layers).map(|l| l.len()).unwrap_or_default(),
                    names: img.repo_tags.unwrap_or_default(),
                    repo_digests: img.repo_digests.unwrap_or_default(),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(Error::InspectImage { name: name.into(), source: Daemon(e) }),
        }
    }

    /// The image's configuration document as `docker load` takes it: architecture, os,
    /// config, rootfs and, when the engine's history accounts for every layer, history.
    pub async fn image_config(&self, id: &str) -> Result<serde_json::Value> {
        let inspect_err = |e| Error::InspectImage { name: id.into(), source: Daemon(e) };
        let img = self.client.inspect_image(id).await.map_err(inspect_err)?;
        let diff_ids = img.root_fs.as_ref().and_then(|r| r.layers.clone()).unwrap_or_default();
        let rows = self.client.image_history(id).await.map_err(inspect_err)?;
        // Newest first; one row per history entry. Only when there is a row per layer (no
        // empty-layer entries to tell apart) can they stand for the layers.
        let history: Vec<serde_json::Value> = if rows.len() == diff_ids.len() {
            rows.iter()
                .rev()
                .map(|r| {
                    let created =
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.created.max(0) as u64);
                    serde_json::json!({
                        "created": humantime::format_rfc3339_seconds(created).to_string(),
                        "created_by": r.created_by,
                        "comment": r.comment,
                    })
                })
                .collect()
        } else {
            (0..diff_ids.len())
                .map(|i| serde_json::json!({ "created_by": format!("layer {}", i + 1) }))
                .collect()
        };
        let config = serde_json::to_value(img.config.unwrap_or_default()).map_err(|e| Error::Protocol {
            action: format!("reading the configuration of image {}", short(id)),
            problem: if e.is_data() { "its configuration does not serialize" } else { "serializing" },
        })?;
        let mut doc = serde_json::json!({
            "architecture": img.architecture.unwrap_or_default(),
            "os": img.os.unwrap_or_else(|| "linux".into()),
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if let Some(variant) = img.variant {
            doc["variant"] = variant.into();
        }
        Ok(doc)
    }

    pub async fn image_exists(&self, name: &str) -> Result<bool> {
        Ok(self.inspect_image(name).await?.is_some())
    }

    /// Imports a root filesystem tar stream as a single-layer, untagged image (`docker import`)
    /// with Dockerfile-style `changes`; returns its ID. This run's labels are added.
    pub async fn import_rootfs<S>(&self, rootfs: S, mut changes: Vec<String>) -> Result<String>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        changes.extend(self.label_changes());
        let options = CreateImageOptions { from_src: Some("-".into()), changes, ..Default::default() };
        let mut stream =
            self.client.create_image(Some(options), Some(bollard::body_try_stream(rootfs)), None);
        let mut id = None;
        while let Some(info) = stream.next().await {
            let info = info.map_err(|e| Error::Import { source: Daemon(e) })?;
            if let Some(status) = info.status.filter(|s| s.starts_with("sha256:")) {
                id = Some(status);
            }
        }
        id.ok_or_else(|| Error::Protocol {
            action: "importing the root filesystem as an image".into(),
            problem: "the daemon returned no image ID",
        })
    }

    /// Loads a docker-save archive stream (`docker load`); returns what the daemon reports
    /// loading (image IDs and tags, as a user would write them).
    pub async fn load_image<S>(&self, archive: S) -> Result<Vec<String>>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let options = bollard::query_parameters::ImportImageOptions { quiet: true, ..Default::default() };
        let mut stream = self.client.import_image_stream(options, archive, None);
        let mut loaded = Vec::new();
        while let Some(info) = stream.next().await {
            let info = info.map_err(|e| Error::Load { source: Daemon(e) })?;
            if let Some(message) = info.error_detail.and_then(|e| e.message) {
                return Err(Error::Load { source: Daemon::in_stream(message) });
            }
            for line in info.stream.iter().flat_map(|s| s.lines()) {
                if let Some((_, what)) = line.split_once(": ").filter(|(k, _)| k.starts_with("Loaded image"))
                {
                    loaded.extend(self.loaded_names(what));
                }
            }
        }
        Ok(loaded)
    }

    /// The names in one "Loaded image: …" line. Docker writes a line per name; Podman one
    /// line for all, joined by commas, and qualified (`localhost/x` for a name without a
    /// registry, which Podman finds again by `x`).
    fn loaded_names(&self, what: &str) -> Vec<String> {
        what.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| if self.engine.is_podman() { super::familiar(n) } else { n }.to_owned())
            .collect()
    }

    /// Builds a Dockerfile from a build-context tar stream; returns the untagged image's ID.
    /// Every line of build output goes to `on_line`; an error anywhere in the stream fails.
    /// `platform` (`linux/arm64`; empty: the daemon's) is the FROM images' and the result's.
    pub async fn build_image<S>(
        &self,
        context: S,
        platform: &str,
        build_args: HashMap<String, String>,
        labels: HashMap<String, String>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let mut all_labels = self.labels.image_map();
        all_labels.extend(labels);
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            rm: true,
            forcerm: true,
            buildargs: Some(build_args),
            labels: Some(all_labels),
            platform: platform.to_owned(),
            ..Default::default()
        };
        let mut stream = self.client.build_image(options, None, Some(bollard::body_try_stream(context)));
        let mut id = None;
        while let Some(info) = stream.next().await {
            let info = info.map_err(|e| Error::Build { source: Daemon(e) })?;
            if let Some(image) = info.aux {
                id = image.id.or(id);
            }
            for line in info.stream.iter().chain(info.status.iter()).flat_map(|s| s.lines()) {
                if !line.trim().is_empty() {
                    on_line(line.trim_end());
                }
            }
        }
        id.ok_or_else(|| Error::Protocol {
            action: "building the image".into(),
            problem: "the build produced no image",
        })
    }

    /// Points `reference` (`repo[:tag]`) at the image `id`.
    pub async fn tag_image(&self, id: &str, reference: &str) -> Result<()> {
        let (repo, tag) = crate::reference::split(reference);
        let options = TagImageOptions { repo: Some(repo.into()), tag: Some(tag.into()) };
        self.client.tag_image(id, Some(options)).await.map_err(|e| Error::Tag {
            id: short(id).into(),
            reference: reference.into(),
            source: Daemon(e),
        })
    }

    /// Removes an image; one already gone is fine.
    pub async fn remove_image(&self, name: &str) -> Result<()> {
        let options = RemoveImageOptions { force: true, ..Default::default() };
        match self.client.remove_image(name, Some(options), None).await {
            Err(e) if !is_not_found(&e) => Err(Error::RemoveImage { name: name.into(), source: Daemon(e) }),
            _ => Ok(()),
        }
    }

    /// Untagged images that nodeimg created (leftovers of failed or killed builds), with
    /// their labels.
    pub async fn list_dangling_images(&self) -> Result<Vec<(String, HashMap<String, String>)>> {
        let options = ListImagesOptions {
            filters: Some(HashMap::from([
                ("dangling".to_owned(), vec!["true".to_owned()]),
                ("label".to_owned(), vec![LABEL_IMAGE_BUILD.to_owned()]),
            ])),
            ..Default::default()
        };
        let images = self
            .client
            .list_images(Some(options))
            .await
            .map_err(|e| Error::ListImages { source: Daemon(e) })?;
        Ok(images.into_iter().map(|i| (i.id, i.labels)).collect())
    }

    /// Tags that start with `prefix` (`nodeimg-verify:`, `nodeimg-tmp/`) on images nodeimg
    /// created, with the images' labels. `pattern` is the daemon-side reference filter; the
    /// prefix is compared with the name as a user writes it (Podman reports
    /// `docker.io/nodeimg-verify:…`), the tag returned as the engine reports it.
    pub async fn list_tags(
        &self,
        pattern: &str,
        prefix: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let options = ListImagesOptions {
            filters: Some(HashMap::from([
                ("reference".to_owned(), vec![pattern.to_owned()]),
                ("label".to_owned(), vec![LABEL_IMAGE_BUILD.to_owned()]),
            ])),
            ..Default::default()
        };
        let images = self
            .client
            .list_images(Some(options))
            .await
            .map_err(|e| Error::ListImages { source: Daemon(e) })?;
        Ok(images
            .into_iter()
            .flat_map(|i| {
                let labels = i.labels;
                i.repo_tags
                    .into_iter()
                    .filter(|t| super::familiar(t).starts_with(prefix))
                    .map(move |t| (t, labels.clone()))
            })
            .collect())
    }

    /// Removes an image unless a container uses it; `Ok(false)` when it is in use.
    pub async fn remove_unused_image(&self, id: &str) -> Result<bool> {
        let options = RemoveImageOptions { force: false, ..Default::default() };
        match self.client.remove_image(id, Some(options), None).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(false),
            Err(e) if is_not_found(&e) => Ok(true),
            Err(e) => Err(Error::RemoveImage { name: short(id).into(), source: Daemon(e) }),
        }
    }

    /// The name to save `name` (inspected as `info`) under, so that the archive loads into
    /// Docker as `name`, and a temporary tag to remove after the save. Podman holds an image
    /// loaded without a registry as `localhost/x` and writes that into archives, which Docker
    /// would load as `localhost/x`; saved under `docker.io/…` (Docker's reading of `x`), it
    /// loads as `x` into either engine. Only when that name is free or already this image's.
    pub async fn portable_name(&self, name: &str, info: &ImageInfo) -> Result<(String, Option<String>)> {
        let short = super::familiar(name);
        let local = format!("localhost/{short}");
        if !self.engine.is_podman() || name.starts_with("localhost/") || !info.names.contains(&local) {
            return Ok((name.to_owned(), None));
        }
        let qualified = crate::reference::normalize(short);
        if info.names.contains(&qualified) {
            return Ok((qualified, None));
        }
        if self.image_exists(&qualified).await? {
            return Ok((name.to_owned(), None));
        }
        self.tag_image(&info.id, &qualified).await?;
        Ok((qualified.clone(), Some(qualified)))
    }

    /// `docker save` as a byte stream (a docker-archive tar), read as the consumer pulls it.
    pub fn save_image(&self, name: &str) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let name = super::engine::engine_form(name).to_owned();
        self.client
            .export_image(&name)
            .map_err(move |e| std::io::Error::other(Error::Save { name: name.clone(), source: Daemon(e) }))
    }

    /// Pulls `reference` for `platform` (e.g. `linux/amd64`), reading the progress stream to
    /// its end; `on_status` sees each status line.
    pub async fn pull(
        &self,
        reference: &str,
        platform: &str,
        on_status: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        // A pinned reference with a tag is pulled by its digest, then given its tag.
        let tagged = super::engine::engine_form(reference);
        let by_digest = match reference.split_once('@') {
            Some((name, digest)) if tagged != reference => {
                format!("{}@{digest}", crate::reference::split(name).0)
            }
            _ => reference.to_owned(),
        };
        self.pull_exactly(&by_digest, platform, on_status).await?;
        if tagged != reference {
            self.tag_image(&by_digest, tagged).await?;
        }
        Ok(())
    }

    async fn pull_exactly(
        &self,
        reference: &str,
        platform: &str,
        on_status: &mut (dyn FnMut(&str) + Send),
    ) -> Result<()> {
        let options = CreateImageOptions {
            from_image: Some(reference.to_owned()),
            platform: platform.to_owned(),
            ..Default::default()
        };
        let mut stream = self.client.create_image(Some(options), None, None);
        while let Some(info) = stream.next().await {
            let info = info.map_err(|e| Error::Pull { reference: reference.into(), source: Daemon(e) })?;
            if let Some(status) = info.status {
                on_status(&status);
            }
        }
        Ok(())
    }

    /// Pushes `reference` to its registry, reading the progress stream to its end; an error
    /// reported inside the stream fails the push.
    pub async fn push(&self, reference: &str) -> Result<()> {
        self.push_as(reference, None).await
    }

    /// [`Docker::push`] logged in as `(username, password)`: the engine does not read the
    /// client's credential store, the client hands it the credentials with each push.
    pub async fn push_as(&self, reference: &str, login: Option<(&str, &str)>) -> Result<()> {
        let (repo, tag) = crate::reference::split(reference);
        let options = PushImageOptions { tag: Some(tag.to_owned()), ..Default::default() };
        // The engine wants an X-Registry-Auth header even for a registry without auth.
        let credentials = Some(match login {
            Some((username, password)) => bollard::auth::DockerCredentials {
                username: Some(username.to_owned()),
                password: Some(password.to_owned()),
                ..Default::default()
            },
            None => bollard::auth::DockerCredentials::default(),
        });
        let mut stream = self.client.push_image(repo, Some(options), credentials);
        while let Some(info) = stream.next().await {
            let info = info.map_err(|e| Error::Push { reference: reference.into(), source: Daemon(e) })?;
            if let Some(error) = info.error_detail.and_then(|e| e.message) {
                return Err(Error::Push { reference: reference.into(), source: Daemon::in_stream(error) });
            }
        }
        Ok(())
    }

    pub(super) fn label_changes(&self) -> Vec<String> {
        let mut labels: Vec<_> = self.labels.image_map().into_iter().collect();
        labels.sort();
        labels.into_iter().map(|(k, v)| format!("LABEL {k}={}", quote(&v))).collect()
    }
}

/// Quotes a value for a Dockerfile instruction such as LABEL or ENV.
pub fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
