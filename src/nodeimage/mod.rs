//! `nodeimg build node-image`: Kubernetes artifacts + base image → node image.

pub mod archives;
pub mod bundle;
pub mod containerd;
pub mod images;
pub mod manifests;
pub mod mirror;
pub mod sources;

pub use sources::ImageSources;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::archive;
use crate::docker::{ContainerSpec, Docker, quote};
use crate::kube::{self, Artifacts, FetchOptions, Source};
use crate::progress::Reporter;

pub const LABEL_KUBE_VERSION: &str = "io.nodeimg.kubernetes.version";
pub const LABEL_KUBE_SOURCE: &str = "io.nodeimg.kubernetes.source";
/// Proxy settings are handed to the build container and blanked in the result.
pub const PROXY_VARS: [&str; 6] =
    ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"];

#[derive(Clone, Debug)]
pub struct NodeImageConfig {
    pub source: Source,
    pub image: String,
    pub base_image: String,
    pub arch: String,
    pub release_url: String,
    pub verify: bool,
    /// Keep the assembled artifacts here; otherwise a temp dir, always removed.
    pub build_dir: Option<PathBuf>,
    pub keep_container: bool,
    /// For source-tree builds.
    pub tree: kube::TreeOptions,
    /// Archives, mirrors, extra images, --offline.
    pub images: ImageSources,
    /// Registry mirrors written into the node for its runtime pulls.
    pub node_mirrors: Vec<mirror::NodeMirror>,
    /// `--verify`: check the image before it gets the target tag.
    pub check: Option<crate::verify::VerifyConfig>,
}

#[derive(Debug)]
pub struct NodeImage {
    pub reference: String,
    pub id: String,
    pub size: u64,
    pub version: String,
    pub images: Vec<String>,
    /// Where each image came from.
    pub plan: Vec<sources::Planned>,
}

/// The pipeline. Only a fully successful run creates or moves the target tag.
pub async fn build(cfg: &NodeImageConfig, docker: &Docker, reporter: &Reporter) -> Result<NodeImage> {
    let scratch = Scratch::new(cfg.build_dir.as_deref())?;
    let archives = index_archives(&cfg.images)?;
    let (artifacts, built, id) = prepare(cfg, scratch.path(), docker, reporter).await?;
    add_kind_files(docker, &id, &artifacts).await.context("writing /kind/version and /kind/manifests")?;
    let required = start_containerd_and_list(cfg, docker, &id, &artifacts, &built, reporter).await?;
    let platform = format!("linux/{}", cfg.arch);
    let plan = sources::plan(docker, &built, &required, &archives, &cfg.images, &platform).await?;
    sources::check_offline(&plan)?;
    let step = reporter.step(format!("importing {} images ({})", plan.len(), sources::summary(&plan)));
    sources::import(docker, &id, &plan, &built, &archives, &platform, reporter).await?;
    step.finish("pinned");

    patch_containerd_config(docker, &id, &artifacts).await.context("adjusting the containerd config")?;
    if !cfg.node_mirrors.is_empty() {
        containerd::add_node_mirrors(docker, &id, &cfg.node_mirrors)
            .await
            .context("writing the node's registry mirrors")?;
    }
    containerd::stop(docker, &id).await?;
    let step = reporter.step("committing the node image");
    let image_id = docker.commit(&id, &commit_changes(cfg, &artifacts, docker.labels())).await?;
    step.finish(crate::docker::short_id(&image_id));
    match &cfg.check {
        Some(check) => verify_then_tag(check, &image_id, &id, cfg, docker, reporter).await?,
        None => docker.tag_image(&image_id, &cfg.image).await?,
    }

    let size = docker.inspect_image(&image_id).await?.map(|i| i.size).unwrap_or_default();
    Ok(NodeImage {
        reference: cfg.image.clone(),
        id: image_id,
        size,
        version: artifacts.version.text,
        images: plan.iter().map(|p| p.image.clone()).collect(),
        plan,
    })
}

/// Where `build --verify` keeps an image while checking it; `nodeimg clean` removes the
/// tags of runs that died.
pub const VERIFY_REPO: &str = "nodeimg-verify";

/// `--verify`: the committed image is checked under a temporary tag (kind and the
/// kubelet want names, not IDs); only a passing image gets the target tag. An image that
/// does not pass is removed, and the target tag stays where it was.
async fn verify_then_tag(
    check: &crate::verify::VerifyConfig,
    image_id: &str,
    build_container: &str,
    cfg: &NodeImageConfig,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<()> {
    let temp = format!("{VERIFY_REPO}:{}-{}", crate::docker::short_id(image_id), std::process::id());
    let checked = async {
        if !cfg.keep_container {
            // Its job is done; the check's node needs the memory more.
            docker.remove_container(build_container).await.context("removing the build container")?;
        }
        docker.tag_image(image_id, &temp).await?;
        let check = crate::verify::VerifyConfig { image: temp.clone(), ..check.clone() };
        let (mut report, result) = crate::verify::verify(&check, docker, reporter).await;
        report.finish(result.as_ref().err().map(crate::one_line));
        for line in report.to_text().lines() {
            reporter.info(line);
        }
        result.context("verifying the node image")?;
        docker.tag_image(image_id, &cfg.image).await?;
        anyhow::Ok(())
    }
    .await;
    // With the target tag in place this only untags.
    let untagged = docker.remove_image(&temp).await;
    match checked {
        Ok(()) => {
            if let Err(err) = untagged {
                reporter.warn(format!("could not remove the temporary tag {temp}: {err}"));
            }
            Ok(())
        }
        Err(err) => {
            docker.remove_unused_image(image_id).await.ok();
            Err(err)
        }
    }
}

/// The first steps, shared with `images list`: artifacts, their built images, and a
/// build container with the Kubernetes binaries in it.
async fn prepare(
    cfg: &NodeImageConfig,
    scratch: &std::path::Path,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<(Artifacts, Vec<images::BuiltImage>, String)> {
    let opts = FetchOptions {
        arch: cfg.arch.clone(),
        release_url: cfg.release_url.clone(),
        verify: cfg.verify,
        tree: cfg.tree.clone(),
    };
    let artifacts = kube::fetch(&cfg.source, &opts, scratch, docker, reporter)
        .await
        .context("getting the Kubernetes artifacts")?;
    let built =
        images::built_images(&artifacts.image_tars, &cfg.arch).context("reading the built image tars")?;
    ensure_base_image(docker, &cfg.base_image, &cfg.arch, cfg.images.offline, reporter).await?;
    let id = create_build_container(docker, cfg).await.context("creating the build container")?;
    add_binaries(docker, &id, &artifacts, reporter).await.context("copying the Kubernetes binaries")?;
    Ok((artifacts, built, id))
}

/// Every image the node image will hold, with where it will come from; builds nothing.
pub async fn plan(
    cfg: &NodeImageConfig,
    docker: &Docker,
    reporter: &Reporter,
) -> Result<Vec<sources::Planned>> {
    let scratch = Scratch::new(None)?;
    let archives = index_archives(&cfg.images)?;
    let (artifacts, built, id) = prepare(cfg, scratch.path(), docker, reporter).await?;
    let required = required_images(docker, &id, &artifacts, &built, &cfg.images.extra)
        .await
        .context("listing the required images")?;
    let platform = format!("linux/{}", cfg.arch);
    sources::plan(docker, &built, &required, &archives, &cfg.images, &platform).await
}

/// Starts containerd in the build container (for the imports) and lists every image the
/// node needs besides the built ones.
async fn start_containerd_and_list(
    cfg: &NodeImageConfig,
    docker: &Docker,
    id: &str,
    artifacts: &Artifacts,
    built: &[images::BuiltImage],
    reporter: &Reporter,
) -> Result<Vec<String>> {
    let step = reporter.step("starting containerd in the build container");
    containerd::start(docker, id).await?;
    step.finish("ready");
    required_images(docker, id, artifacts, built, &cfg.images.extra)
        .await
        .context("listing the required images")
}

/// Reads the archives' indexes before any container exists: a bad archive fails first.
fn index_archives(sources: &ImageSources) -> Result<Vec<archives::Archive>> {
    archives::index_all(&archives::collect(&sources.archive_files, &sources.archive_dirs)?)
}

async fn ensure_base_image(
    docker: &Docker,
    base: &str,
    arch: &str,
    offline: bool,
    reporter: &Reporter,
) -> Result<()> {
    if docker.image_exists(base).await? {
        return Ok(());
    }
    if offline {
        bail!("base image {base} is not here and --offline forbids pulling it");
    }
    let step = reporter.step(format!("pulling base image {base}"));
    docker.pull(base, &format!("linux/{arch}"), &mut |s| step.set_message(s.to_owned())).await.with_context(
        || {
            format!(
                "base image {base} is not here and cannot be pulled (`nodeimg build base-image` builds one)"
            )
        },
    )?;
    step.finish("pulled");
    Ok(())
}

async fn create_build_container(docker: &Docker, cfg: &NodeImageConfig) -> Result<String> {
    let mut spec = ContainerSpec::idle(&cfg.base_image);
    spec.security_opt = vec!["seccomp=unconfined".into()];
    spec.env = proxy_env().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if cfg.keep_container {
        spec.labels.insert(crate::docker::LABEL_KEEP.into(), "true".into());
    }
    let id = docker.create_container(&spec).await?;
    docker.start_container(&id).await?;
    Ok(id)
}

fn proxy_env() -> Vec<(&'static str, String)> {
    PROXY_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()).map(|v| (*k, v)))
        .collect()
}

/// kubeadm, kubelet and kubectl into /usr/bin, in one streamed tar.
async fn add_binaries(docker: &Docker, id: &str, artifacts: &Artifacts, reporter: &Reporter) -> Result<()> {
    let step = reporter.step("copying kubeadm, kubelet, kubectl");
    let binaries = artifacts.binaries.clone();
    let tar = archive::tar_stream(move |tar| {
        for path in &binaries {
            let mut file = std::fs::File::open(path)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(file.metadata()?.len());
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            let name = path.file_name().expect("binaries have names");
            tar.append_data(&mut header, name, &mut file)?;
        }
        Ok(())
    });
    docker.upload(id, "/usr/bin", tar).await?;
    step.finish("done");
    Ok(())
}

async fn add_kind_files(docker: &Docker, id: &str, artifacts: &Artifacts) -> Result<()> {
    let mut files = vec![("kind/version".to_owned(), format!("{}\n", artifacts.version))];
    for (path, content) in manifests::render()? {
        files.push((path.trim_start_matches('/').to_owned(), content));
    }
    let tar = archive::tar_stream(move |tar| {
        for (path, content) in &files {
            archive::append_bytes(tar, path, 0o644, content.as_bytes())?;
        }
        Ok(())
    });
    docker.upload(id, "/", tar).await?;
    Ok(())
}

async fn required_images(
    docker: &Docker,
    id: &str,
    artifacts: &Artifacts,
    built: &[images::BuiltImage],
    extra_images: &[String],
) -> Result<Vec<String>> {
    let version = artifacts.version.to_string();
    let list =
        docker.exec(id, &["kubeadm", "config", "images", "list", "--kubernetes-version", &version]).await?;
    if !list.success() {
        bail!("`kubeadm config images list` failed: {}", list.last_line());
    }
    let config = read_file(docker, id, containerd::CONFIG).await?;
    let sandbox = containerd::sandbox_image(&config)?;
    let extra = manifests::default_images().map(str::to_owned).chain(extra_images.iter().cloned());
    Ok(images::required(&list.stdout, &sandbox, built, extra))
}

/// Kubernetes before 1.24 expects the cgroupfs driver; set runc's SystemdCgroup to match.
async fn patch_containerd_config(docker: &Docker, id: &str, artifacts: &Artifacts) -> Result<()> {
    if artifacts.version.at_least(1, 24) {
        return Ok(());
    }
    let config = read_file(docker, id, containerd::CONFIG).await?;
    let patched = containerd::set_systemd_cgroup(&config, false)?;
    let tar =
        archive::tar_stream(move |tar| archive::append_bytes(tar, "config.toml", 0o644, patched.as_bytes()));
    docker.upload(id, "/etc/containerd", tar).await?;
    Ok(())
}

/// A text file inside a container (the build container, a node).
pub(crate) async fn read_file(docker: &Docker, id: &str, path: &str) -> Result<String> {
    let out = docker.exec(id, &["cat", path]).await?;
    if !out.success() {
        bail!("reading {path}: {}", out.last_line());
    }
    Ok(out.stdout)
}

fn commit_changes(
    cfg: &NodeImageConfig,
    artifacts: &Artifacts,
    run_labels: &crate::docker::Labels,
) -> Vec<String> {
    let entrypoint = serde_json::to_string(&crate::baseimage::ENTRYPOINT).expect("strings");
    let mut changes = vec![format!("ENTRYPOINT {entrypoint}")];
    changes.extend(proxy_env().into_iter().map(|(k, _)| format!("ENV {k}=\"\"")));
    let mut labels: Vec<(String, String)> = run_labels.to_map().into_iter().collect();
    labels.push((LABEL_KUBE_VERSION.into(), artifacts.version.text.clone()));
    labels.push((LABEL_KUBE_SOURCE.into(), source_label(&cfg.source)));
    labels.sort();
    changes.extend(labels.into_iter().map(|(k, v)| format!("LABEL {k}={}", quote(&v))));
    changes
}

fn source_label(source: &Source) -> String {
    match source {
        Source::File(p) => format!("file:{}", p.display()),
        Source::Url(u) => u.clone(),
        Source::Release(v) => format!("release:{v}"),
        Source::Ci(m) => m.clone(),
        Source::Tree(p) => {
            format!("source:{}", p.as_ref().map(|p| p.display().to_string()).unwrap_or_default())
        }
    }
}

/// The build directory: the user's (kept), or a temp dir removed on every exit path.
enum Scratch {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Scratch {
    fn new(dir: Option<&std::path::Path>) -> Result<Self> {
        Ok(match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating build dir {}", dir.display()))?;
                Scratch::Kept(dir.to_owned())
            }
            None => Scratch::Temp(tempfile::Builder::new().prefix("nodeimg-build-").tempdir()?),
        })
    }

    fn path(&self) -> &std::path::Path {
        match self {
            Scratch::Kept(p) => p,
            Scratch::Temp(t) => t.path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_blanks_proxies_and_labels_the_version() {
        // SAFETY: tests in this module do not read the environment concurrently.
        unsafe { std::env::set_var("HTTPS_PROXY", "http://proxy.internal:3128") };
        let cfg = NodeImageConfig {
            source: Source::Release(kube::KubeVersion::parse("v1.30.0").unwrap()),
            image: "n:1".into(),
            base_image: "b".into(),
            arch: "amd64".into(),
            release_url: "http://x".into(),
            verify: true,
            build_dir: None,
            keep_container: false,
            check: None,
            tree: kube::TreeOptions {
                kube_root: None,
                kube_repo: String::new(),
                version: None,
                mode: kube::build::BuildMode::Docker,
                component_base_image: None,
            },
            images: ImageSources::default(),
            node_mirrors: vec![],
        };
        let artifacts = Artifacts { binaries: vec![], image_tars: vec![], version: cfg_version() };
        let labels =
            crate::docker::Labels { run_id: "r".into(), version: "0".into(), pid: 1, host: "h".into() };
        let changes = commit_changes(&cfg, &artifacts, &labels);
        unsafe { std::env::remove_var("HTTPS_PROXY") };
        assert!(changes.contains(&r#"ENTRYPOINT ["/usr/local/bin/entrypoint","/sbin/init"]"#.to_owned()));
        assert!(changes.contains(&"ENV HTTPS_PROXY=\"\"".to_owned()), "{changes:?}");
        assert!(changes.contains(&format!("LABEL {LABEL_KUBE_VERSION}=\"v1.30.0\"")));
        assert!(changes.contains(&format!("LABEL {LABEL_KUBE_SOURCE}=\"release:v1.30.0\"")));
        assert!(!changes.iter().any(|c| c.contains("proxy.internal")));
    }

    fn cfg_version() -> kube::KubeVersion {
        kube::KubeVersion::parse("v1.30.0").unwrap()
    }
}
