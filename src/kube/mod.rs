//! Where Kubernetes comes from. Every source ends as one [`Artifacts`] value: the binaries
//! for /usr/bin, the control-plane image tars, and the version.

pub mod build;
pub mod download;
pub mod release;
mod retry;
pub mod tree;
mod version;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use version::{BadVersion, KubeVersion};

use crate::progress::Reporter;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifacts {
    /// kubeadm, kubelet, kubectl.
    pub binaries: Vec<PathBuf>,
    /// docker-save tars of kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy.
    pub image_tars: Vec<PathBuf>,
    pub version: KubeVersion,
    /// A host-mode build has the control-plane binaries but no images of them; the
    /// node-image pipeline makes those.
    pub components: Option<ComponentBinaries>,
    /// Where the artifacts came from, for a build report.
    pub provenance: Provenance,
}

/// Where Kubernetes came from, as a build report pins it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// `release`, `url`, `file` or `tree`.
    pub kind: &'static str,
    pub url: Option<String>,
    pub path: Option<PathBuf>,
    /// The tarball (downloaded into the cache, or given), when there was one: a report
    /// hashes it.
    pub tarball: Option<PathBuf>,
    /// Of a git tree: HEAD, and whether the work tree had changes.
    pub commit: Option<String>,
    pub dirty: Option<bool>,
}

/// The control-plane binaries of a host-mode build, and how upstream would name their images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentBinaries {
    /// Holds kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy.
    pub bin_dir: PathBuf,
    /// `STABLE_DOCKER_REGISTRY` and `STABLE_DOCKER_TAG`: images are `<registry>/<component>:<tag>`.
    pub registry: String,
    pub tag: String,
    /// The tree's build/common.sh, which names each component's base image.
    pub common_sh: String,
}

/// What SOURCE is, as detected or forced with `--type` (`cli::SourceType` says what each
/// reading means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceType {
    File,
    Url,
    Release,
    Ci,
    Source,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
    Release(KubeVersion),
    Ci(String),
    Tree(Option<PathBuf>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("no such file or directory: {0}")]
    Missing(String),
    #[error("{0:?} is not an http(s) URL")]
    NotUrl(String),
    #[error("{0:?} is not a CI marker (expected ci/latest or ci/latest-1.36)")]
    NotCi(String),
    #[error(transparent)]
    Version(#[from] BadVersion),
    #[error(
        "cannot tell what {0:?} is: give a tarball path, a URL, a version (v1.30.0) or ci/latest, or set --type"
    )]
    Unknown(String),
    #[error("--type release with no SOURCE needs -k VERSION (or the version as SOURCE: v1.30.0)")]
    ReleaseWithoutVersion,
    #[error("--type {0} needs a SOURCE")]
    TypeWithoutSource(&'static str),
}

/// Detects SOURCE as kind does; `--type` forces the reading. With no SOURCE, `-k` names a
/// release, and nothing at all means the source tree (kind's default).
pub fn detect(
    input: Option<&str>,
    forced: Option<SourceType>,
    kube_version: Option<&str>,
) -> Result<Source, SourceError> {
    let Some(input) = input else {
        // No SOURCE: a source tree (checked out at -k if given), or `--type release -k V`.
        return match (forced, kube_version) {
            (Some(SourceType::Release), Some(v)) => Ok(Source::Release(KubeVersion::parse(v)?)),
            (Some(SourceType::Release), None) => Err(SourceError::ReleaseWithoutVersion),
            (None | Some(SourceType::Source), _) => Ok(Source::Tree(None)),
            (Some(SourceType::File), _) => Err(SourceError::TypeWithoutSource("file")),
            (Some(SourceType::Url), _) => Err(SourceError::TypeWithoutSource("url")),
            (Some(SourceType::Ci), _) => Err(SourceError::TypeWithoutSource("ci")),
        };
    };
    let is_url = input.starts_with("http://") || input.starts_with("https://");
    let kind = forced.unwrap_or_else(|| {
        if is_url {
            SourceType::Url
        } else if input.starts_with("ci/") {
            SourceType::Ci
        } else if KubeVersion::parse(input).is_ok() && !Path::new(input).exists() {
            SourceType::Release
        } else if tree::is_kubernetes(Path::new(input)) {
            SourceType::Source
        } else if Path::new(input).exists() || input.ends_with(".tar.gz") || input.ends_with(".tgz") {
            SourceType::File
        } else {
            SourceType::Source
        }
    });
    match kind {
        SourceType::File if Path::new(input).exists() => Ok(Source::File(input.into())),
        SourceType::File => Err(SourceError::Missing(input.to_owned())),
        SourceType::Url if is_url => Ok(Source::Url(input.to_owned())),
        SourceType::Url => Err(SourceError::NotUrl(input.to_owned())),
        SourceType::Release => Ok(Source::Release(KubeVersion::parse(input)?)),
        SourceType::Ci if ci_marker(input).is_some() => Ok(Source::Ci(input.to_owned())),
        SourceType::Ci => Err(SourceError::NotCi(input.to_owned())),
        SourceType::Source if Path::new(input).is_dir() => Ok(Source::Tree(Some(input.into()))),
        SourceType::Source if forced.is_some() => Err(SourceError::Missing(input.to_owned())),
        SourceType::Source => Err(SourceError::Unknown(input.to_owned())),
    }
}

fn ci_marker(input: &str) -> Option<&str> {
    let marker = input.strip_prefix("ci/")?;
    let ok =
        marker.starts_with("latest") && marker.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    ok.then_some(marker)
}

pub struct FetchOptions {
    pub arch: String,
    /// Base URL of releases (dl.k8s.io layout).
    pub release_url: String,
    pub verify: bool,
    pub tree: TreeOptions,
}

/// How to get and build a source tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeOptions {
    pub kube_root: Option<PathBuf>,
    /// Cloned into the cache when no tree is found and a version is asked for.
    pub kube_repo: String,
    /// `-k`: the tag to check out.
    pub version: Option<KubeVersion>,
    pub mode: build::BuildMode,
}

pub fn server_tarball_url(base: &str, version: &KubeVersion, arch: &str, ci: bool) -> String {
    let base = base.trim_end_matches('/');
    let ci = if ci { "ci/" } else { "" };
    format!("{base}/{ci}{version}/kubernetes-server-linux-{arch}.tar.gz")
}

/// Gets the artifacts into `scratch` (or uses an extracted directory in place).
pub async fn fetch(
    source: &Source,
    opts: &FetchOptions,
    scratch: &Path,
    reporter: &Reporter,
) -> Result<Artifacts> {
    let (tarball, mut provenance) = match source {
        Source::File(path) if path.is_dir() => {
            let mut artifacts = release::from_directory(path)?;
            artifacts.provenance =
                Provenance { kind: "file", path: Some(path.clone()), ..Default::default() };
            return Ok(artifacts);
        }
        Source::File(path) => {
            (path.clone(), Provenance { kind: "file", path: Some(path.clone()), ..Default::default() })
        }
        Source::Url(url) => (download::fetch(url, opts.verify, reporter).await?, Provenance::url("url", url)),
        Source::Release(version) => {
            let url = server_tarball_url(&opts.release_url, version, &opts.arch, false);
            (download::fetch(&url, opts.verify, reporter).await?, Provenance::url("release", &url))
        }
        Source::Ci(marker) => {
            let marker_url = format!("{}/{marker}.txt", opts.release_url.trim_end_matches('/'));
            let text = download::fetch_text(&marker_url).await?;
            let version = KubeVersion::parse(&text).with_context(|| format!("reading {marker_url}"))?;
            reporter.info(format!("{marker} is {version}"));
            let url = server_tarball_url(&opts.release_url, &version, &opts.arch, true);
            (download::fetch(&url, opts.verify, reporter).await?, Provenance::url("url", &url))
        }
        Source::Tree(dir) => return from_tree(dir.as_deref(), opts, reporter).await,
    };
    provenance.tarball = Some(tarball.clone());
    let step =
        reporter.step(format!("extracting {}", tarball.file_name().unwrap_or_default().to_string_lossy()));
    let dest = scratch.join("kubernetes");
    // Stopped and waited for if the build is cancelled: an extraction still running after
    // Ctrl-C would re-create the scratch directory the cancellation just removed.
    let mut artifacts =
        crate::blocking::run_drained(move |cancel| release::from_tarball(&tarball, &dest, cancel)).await?;
    step.finish(artifacts.version.to_string());
    artifacts.provenance = provenance;
    Ok(artifacts)
}

impl Provenance {
    fn url(kind: &'static str, url: &str) -> Self {
        Provenance { kind, url: Some(url.to_owned()), ..Default::default() }
    }

    /// A tree's HEAD, when it is a git repository (a `git archive` export is not).
    fn tree(root: &Path, version: &KubeVersion) -> Self {
        let commit = git2::Repository::open(root)
            .ok()
            .and_then(|repo| repo.head().ok()?.peel_to_commit().ok().map(|c| c.id().to_string()));
        Provenance {
            kind: "tree",
            path: Some(root.to_owned()),
            dirty: Some(version.text.ends_with("-dirty")),
            commit,
            ..Default::default()
        }
    }
}

/// Finds (or clones) the tree, checks out `-k`, builds it with upstream's build.
async fn from_tree(dir: Option<&Path>, opts: &FetchOptions, reporter: &Reporter) -> Result<Artifacts> {
    let t = &opts.tree;
    let cwd = std::env::current_dir()?;
    let root = match tree::find_root(dir.or(t.kube_root.as_deref()), &cwd, tree::default_gopath().as_deref())?
    {
        Some(root) => root,
        None if t.version.is_some() => {
            let cache = download::cache_root().join("kubernetes");
            tree::ensure_clone(&t.kube_repo, &cache, t.version.as_ref(), reporter).await?
        }
        None => bail!(
            "no Kubernetes tree found (current directory, $GOPATH/src/k8s.io/kubernetes, $GOPATH/src/github.com/kubernetes/kubernetes): pass --kube-root DIR, -k VERSION to clone one, or a release SOURCE"
        ),
    };
    if let Some(version) = &t.version {
        tree::checkout_version(&root, version, reporter).await?;
    }
    let status = tree::workspace_status(&root)?;
    reporter.info(format!(
        "building Kubernetes {} from {} ({:?} mode)",
        status.version,
        root.display(),
        t.mode
    ));
    let log_dir = build::output_dir(&root);
    std::fs::create_dir_all(&log_dir)?;
    let log = log_dir.join("nodeimg-build.log");
    build::run(&root, t.mode, &status.version, &opts.arch, &log, reporter).await?;
    let provenance = Provenance::tree(&root, &status.version);
    match t.mode {
        build::BuildMode::Docker => {
            let mut artifacts = build::docker_artifacts(&root, &opts.arch, status.version)?;
            artifacts.provenance = provenance;
            Ok(artifacts)
        }
        build::BuildMode::Host => {
            let (binaries, programs) = build::outputs(&root, build::BuildMode::Host, &opts.arch);
            for path in binaries.iter().chain(&programs) {
                if !path.is_file() {
                    bail!("the build did not produce {}", path.display());
                }
            }
            let bin_dir = binaries[0].parent().expect("binaries live in a directory").to_owned();
            let components = ComponentBinaries {
                bin_dir,
                registry: status.registry,
                tag: status.docker_tag,
                common_sh: std::fs::read_to_string(root.join("build/common.sh")).unwrap_or_default(),
            };
            Ok(Artifacts {
                binaries,
                image_tars: Vec::new(),
                version: status.version,
                components: Some(components),
                provenance,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_like_kind() {
        assert_eq!(
            detect(Some("https://x/k.tar.gz"), None, None),
            Ok(Source::Url("https://x/k.tar.gz".into()))
        );
        assert_eq!(detect(Some("ci/latest-1.36"), None, None), Ok(Source::Ci("ci/latest-1.36".into())));
        assert!(matches!(detect(Some("v1.30.0"), None, None), Ok(Source::Release(_))));
        assert_eq!(detect(None, None, Some("v1.30.0")), Ok(Source::Tree(None)), "-k alone checks out a tree");
        assert!(matches!(detect(None, Some(SourceType::Release), Some("v1.30.0")), Ok(Source::Release(_))));
        let err = detect(None, Some(SourceType::Release), None);
        assert_eq!(err, Err(SourceError::ReleaseWithoutVersion));
        assert!(!err.unwrap_err().to_string().contains("set --type"), "--type was set: say what is missing");
        assert_eq!(detect(None, None, None), Ok(Source::Tree(None)));
        let here = env!("CARGO_MANIFEST_DIR");
        assert_eq!(
            detect(Some(&format!("{here}/Cargo.toml")), None, None),
            Ok(Source::File(format!("{here}/Cargo.toml").into()))
        );
        assert_eq!(
            detect(Some("/no/such.tar.gz"), None, None),
            Err(SourceError::Missing("/no/such.tar.gz".into()))
        );
        assert!(matches!(detect(Some("banana"), None, None), Err(SourceError::Unknown(_))));
    }

    #[test]
    fn forced_types_are_checked() {
        assert_eq!(
            detect(Some("v1.30.0"), Some(SourceType::Url), None),
            Err(SourceError::NotUrl("v1.30.0".into()))
        );
        assert!(matches!(
            detect(Some("1.30"), Some(SourceType::Release), None),
            Err(SourceError::Version(_))
        ));
        assert_eq!(
            detect(Some("ci/x y"), Some(SourceType::Ci), None),
            Err(SourceError::NotCi("ci/x y".into()))
        );
    }

    #[test]
    fn release_urls_follow_dl_k8s_io() {
        let v = KubeVersion::parse("v1.30.0").unwrap();
        assert_eq!(
            server_tarball_url("https://dl.k8s.io/", &v, "amd64", false),
            "https://dl.k8s.io/v1.30.0/kubernetes-server-linux-amd64.tar.gz"
        );
        let ci = KubeVersion::parse("v1.36.0-alpha.1.5+abc").unwrap();
        assert_eq!(
            server_tarball_url("http://127.0.0.1:8080", &ci, "arm64", true),
            "http://127.0.0.1:8080/ci/v1.36.0-alpha.1.5+abc/kubernetes-server-linux-arm64.tar.gz"
        );
    }
}
