//! The images a node image holds: the control-plane images built with Kubernetes (from
//! their tars) and every other image the cluster needs (through the host's Docker daemon).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::docker::Docker;
use crate::progress::Reporter;
use crate::reference::normalize;

/// No `--digests`: a docker-save archive names its images, and the extra
/// `import-<date>@sha256:…` names would stay in the node image (kind's pulled images have none).
pub const IMPORT: [&str; 7] = ["ctr", "-n", "k8s.io", "images", "import", "--all-platforms", "--no-unpack"];

/// A docker-save tar built with Kubernetes, and the names it is stored under in the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub tar: std::path::PathBuf,
    /// As in the tar (`registry.k8s.io/kube-apiserver-amd64:v1.30.0`).
    pub original: String,
    /// Without the architecture suffix (`registry.k8s.io/kube-apiserver:v1.30.0`).
    pub name: String,
    /// What an incremental rebuild compares: the image's config digest (its ID) for a tar,
    /// the digest of what it is made of for an image made here.
    pub digest: String,
}

/// The tags in a docker-save tar (`manifest.json`, else the legacy `repositories` file).
pub fn repo_tags(tar: &Path) -> Result<Vec<String>> {
    Ok(save_manifest(tar)?.0)
}

/// The tags and the config digest (`sha256:…`, the image ID) of a docker-save tar.
pub fn save_manifest(tar: &Path) -> Result<(Vec<String>, Option<String>)> {
    let file = std::fs::File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut from_repositories = Vec::new();
    let mut cursor = crate::archive::Cursor::default();
    for entry in archive.entries().map_err(|e| cursor.at(&e))? {
        let mut entry = cursor.next(entry)?;
        let path = entry.path().map_err(|e| cursor.at(&e))?.into_owned();
        let mut read_json = || -> Result<serde_json::Value> {
            let mut text = String::new();
            entry.by_ref().take(1 << 20).read_to_string(&mut text).map_err(|e| cursor.at(&e))?;
            Ok(serde_json::from_str(&text)?)
        };
        if path == Path::new("manifest.json") {
            let manifest = read_json()?;
            let tags = manifest[0]["RepoTags"].as_array().cloned().unwrap_or_default();
            let tags: Vec<String> = tags.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect();
            if !tags.is_empty() {
                return Ok((tags, manifest[0]["Config"].as_str().and_then(config_digest)));
            }
        } else if path == Path::new("repositories") {
            let repos = read_json()?;
            for (repo, tags) in repos.as_object().into_iter().flatten() {
                for tag in tags.as_object().into_iter().flat_map(|t| t.keys()) {
                    from_repositories.push(format!("{repo}:{tag}"));
                }
            }
        }
    }
    if from_repositories.is_empty() {
        bail!("{} names no image (no RepoTags in manifest.json, no repositories file)", tar.display());
    }
    Ok((from_repositories, None))
}

/// `<hex>.json` (docker save before 25) or `blobs/sha256/<hex>` → `sha256:<hex>`.
pub fn config_digest(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let hex = name.strip_suffix(".json").unwrap_or(name);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// `…/kube-apiserver-amd64:v1.30.0` → `…/kube-apiserver:v1.30.0`.
pub fn without_arch(reference: &str, arch: &str) -> String {
    let (repo, tag) = crate::reference::split(reference);
    let repo = repo.strip_suffix(&format!("-{arch}")).unwrap_or(repo);
    format!("{repo}:{tag}")
}

/// The built images, named as the node will know them.
pub fn built_images(tars: &[std::path::PathBuf], arch: &str) -> Result<Vec<BuiltImage>> {
    tars.iter()
        .map(|tar| {
            let (mut tags, config) = save_manifest(tar)?;
            let original = tags.remove(0);
            // Without a config digest the tar's own bytes stand for the image.
            let digest = match config {
                Some(d) => d,
                None => format!(
                    "sha256:{}",
                    crate::archive::sha256_file(tar).with_context(|| format!("reading {}", tar.display()))?
                ),
            };
            Ok(BuiltImage { tar: tar.clone(), name: without_arch(&original, arch), original, digest })
        })
        .collect()
}

/// What the cluster needs besides the built images: kubeadm's list without its pause
/// entry, the sandbox image containerd is configured with, and the manifests' images.
pub fn required(
    kubeadm_list: &str,
    sandbox: &str,
    built: &[String],
    extra: impl Iterator<Item = String>,
) -> Vec<String> {
    let built: Vec<String> = built.iter().map(|b| normalize(b)).collect();
    let mut images: Vec<String> = kubeadm_list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("/pause:"))
        .map(normalize)
        .chain(std::iter::once(normalize(sandbox)))
        .chain(extra.map(|e| normalize(&e)))
        .filter(|i| !built.contains(i))
        .collect();
    let mut seen = std::collections::HashSet::new();
    images.retain(|i| seen.insert(i.clone()));
    images
}

/// Streams a built image tar from the host into the node's containerd, stores it under its
/// name without the architecture suffix, and pins it.
pub async fn import_built(docker: &Docker, id: &str, image: &BuiltImage) -> Result<()> {
    let what = image.tar.display().to_string();
    ctr_import(docker, id, &IMPORT, &what, || async {
        tokio::fs::File::open(&image.tar).await.with_context(|| format!("opening {}", image.tar.display()))
    })
    .await?;
    let (original, name) = (normalize(&image.original), normalize(&image.name));
    if original != name {
        ctr(docker, id, &["images", "tag", "--force", &original, &name]).await?;
        // Drop the arch-suffixed name and its digest references.
        let (old_repo, _) = crate::reference::split(&original);
        let listed = ctr(docker, id, &["images", "ls", "-q"]).await?;
        let stale: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with(&format!("{old_repo}:")) || l.starts_with(&format!("{old_repo}@")))
            .collect();
        if !stale.is_empty() {
            ctr(docker, id, &[&["images", "rm"], &stale[..]].concat()).await?;
        }
    }
    pin(docker, id, &name).await
}

/// Gets `reference` through the host's Docker daemon (the local image if there is one, else
/// a pull for `platform`, retried with backoff) and streams `docker save` into the node.
pub async fn import_from_host(
    docker: &Docker,
    id: &str,
    reference: &str,
    platform: &str,
    reporter: &Reporter,
) -> Result<()> {
    if !docker.image_exists(reference).await? {
        pull_with_retry(docker, reference, platform, reporter)
            .await
            .map_err(|e| anyhow!("cannot obtain image {reference}: {e}"))?;
    }
    save_into_node(docker, id, reference).await?;
    pin(docker, id, &normalize(reference)).await
}

/// Streams `docker save <reference>` into the node's containerd.
pub async fn save_into_node(docker: &Docker, id: &str, reference: &str) -> Result<()> {
    ctr_import(docker, id, &IMPORT, reference, || async {
        Ok(tokio_util::io::StreamReader::new(docker.save_image(reference)))
    })
    .await
}

/// Pulls through the host's Docker daemon, three attempts with backoff.
pub async fn pull_with_retry(
    docker: &Docker,
    reference: &str,
    platform: &str,
    reporter: &Reporter,
) -> Result<(), crate::docker::Error> {
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match docker.pull(reference, platform, &mut |_| {}).await {
            Err(e) if attempt < 3 => {
                reporter.detail(format!("pulling {reference} failed ({e}); retrying in {delay:?}"));
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Streams what `open` gives into `ctr images import`. Imports run side by side, and two
/// imports of the same content can race for a name or blob: the loser fails with "already
/// exists" and is fed again once the winner is done.
pub async fn ctr_import<R, F, Fut>(
    docker: &Docker,
    id: &str,
    import: &[&str],
    what: &str,
    open: F,
) -> Result<()>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<R>>,
{
    let cmd = [import, &["-"]].concat();
    for attempt in 1..=4u32 {
        let out = docker.exec_with_stdin(id, &cmd, open().await?).await?;
        if out.success() {
            return Ok(());
        }
        if attempt == 4 || !out.last_line().contains("already exists") {
            bail!("ctr import of {what} failed: {}", out.last_line());
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
    }
    unreachable!("the last attempt returns")
}

/// Keeps the kubelet's image garbage collection away from an image.
pub async fn pin(docker: &Docker, id: &str, name: &str) -> Result<()> {
    let name = crate::reference::node_name(name);
    ctr(docker, id, &["images", "label", &name, "io.cri-containerd.pinned=pinned"]).await.map(|_| ())
}

/// Runs `ctr -n k8s.io ...` and returns its stdout, failing on a non-zero exit.
pub async fn ctr(docker: &Docker, id: &str, args: &[&str]) -> Result<String> {
    let cmd: Vec<&str> = ["ctr", "-n", "k8s.io"].into_iter().chain(args.iter().copied()).collect();
    let out = docker.exec(id, &cmd).await?;
    if !out.success() {
        bail!("`{}` failed: {}", cmd.join(" "), out.last_line());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_suffix_is_removed_from_the_repository_only() {
        assert_eq!(
            without_arch("registry.k8s.io/kube-apiserver-amd64:v1.30.0", "amd64"),
            "registry.k8s.io/kube-apiserver:v1.30.0"
        );
        assert_eq!(
            without_arch("registry.k8s.io/kube-proxy:v1.30.0", "amd64"),
            "registry.k8s.io/kube-proxy:v1.30.0"
        );
        assert_eq!(
            without_arch("localhost:5000/x-arm64:v1-amd64", "amd64"),
            "localhost:5000/x-arm64:v1-amd64"
        );
    }

    #[test]
    fn required_images_drop_kubeadms_pause_and_the_built_ones() {
        let kubeadm = "registry.k8s.io/kube-apiserver:v1.30.0\nregistry.k8s.io/pause:3.9\nregistry.k8s.io/etcd:3.5.12-0\n\nregistry.k8s.io/coredns/coredns:v1.11.1\n";
        let built = ["registry.k8s.io/kube-apiserver:v1.30.0".to_owned()];
        let required = required(
            kubeadm,
            "registry.k8s.io/pause:3.10",
            &built,
            ["kindest/kindnetd:v1".to_owned()].into_iter(),
        );
        assert_eq!(
            required,
            vec![
                "registry.k8s.io/etcd:3.5.12-0",
                "registry.k8s.io/coredns/coredns:v1.11.1",
                "registry.k8s.io/pause:3.10",
                "docker.io/kindest/kindnetd:v1"
            ]
        );
    }

    #[test]
    fn repo_tags_come_from_the_save_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("img.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["registry.k8s.io/kube-proxy-amd64:v1.30.0"],"Layers":[]}]"#;
        crate::archive::append_bytes(&mut builder, "manifest.json", 0o644, manifest).unwrap();
        builder.finish().unwrap();
        drop(builder);
        assert_eq!(repo_tags(&tar_path).unwrap(), vec!["registry.k8s.io/kube-proxy-amd64:v1.30.0"]);
        assert_eq!(save_manifest(&tar_path).unwrap().1, None, "c.json is no digest");
        let hex = "ab".repeat(32);
        assert_eq!(config_digest(&format!("{hex}.json")), Some(format!("sha256:{hex}")));
        assert_eq!(config_digest(&format!("blobs/sha256/{hex}")), Some(format!("sha256:{hex}")));
    }
}
