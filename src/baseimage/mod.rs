//! `nodeimg build base-image`: the image every node image starts from.

pub mod assets;
mod check;
pub mod crictl;
mod debootstrap;
mod dockerfile;
mod rootfs;
pub mod runtime;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub use crictl::Crictl;
pub use debootstrap::{default_mirror, mirror_from_apt_sources};
pub use runtime::RuntimeLine;

use crate::archive::image::ImageConfig;
use crate::docker::Docker;
use crate::progress::Reporter;

/// Ties an image to the inputs it was built from; a rebuild happens only when they change.
pub const LABEL_KEY: &str = "io.nodeimg.base.key";
pub const LABEL_SOURCE: &str = "io.nodeimg.base.source";
pub const LABEL_ARCH: &str = "io.nodeimg.base.arch";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Debootstrap { suite: String, mirror: String },
    Dockerfile { debian_image: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseImageConfig {
    pub source: Source,
    /// The name to give the result; by default one derived from the inputs.
    pub image: Option<String>,
    pub rebuild: bool,
    /// The crictl to install; none leaves the image without one.
    pub crictl: Option<Crictl>,
    /// No crictl flag was given: the pinned release (`base-image/crictl-releases`) is
    /// installed when it can be fetched, see [`with_default_crictl`].
    pub crictl_default: bool,
    /// containerd, runc and CNI plugins: which pinned set of `base-image/runtimes`.
    pub runtime: RuntimeLine,
    /// Docker's name of the target architecture (`amd64`, `arm64`, ...); another than the
    /// host's runs its programs through a binfmt_misc handler (qemu-user-static).
    pub arch: String,
}

impl BaseImageConfig {
    /// Hash of `base-image/` and what decides the image's content (the suite, the Debian
    /// image): equal keys, equal images. Where the packages came from (the mirror) is left
    /// out, so an image carried to another machine (`nodeimg save`/`load`) is found there
    /// under the same default name whatever that machine's apt mirror is.
    pub fn key(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(assets::content_hash());
        match &self.source {
            Source::Debootstrap { suite, .. } => hash.update(format!("\0debootstrap\0{suite}")),
            Source::Dockerfile { debian_image } => hash.update(format!("\0dockerfile\0{debian_image}")),
        }
        hash.update(format!("\0runtime\0{}", self.runtime));
        // amd64 hashes as before the arch was an input, so cached amd64 bases keep their
        // names; every other arch gets keys of its own.
        if self.arch != "amd64" {
            hash.update(format!("\0arch\0{}", self.arch));
        }
        // The sha256 pins crictl's content wherever it came from: with and without one (or
        // with another) are different images, under different default tags.
        if let Some(crictl) = &self.crictl {
            hash.update(format!("\0crictl\0{}", crictl.sha256));
        }
        hex::encode(hash.finalize())[..16].to_owned()
    }

    pub fn target(&self) -> String {
        self.image.clone().unwrap_or_else(|| format!("nodeimg/base:{}", self.key()))
    }

    fn source_name(&self) -> &'static str {
        match self.source {
            Source::Debootstrap { .. } => "debootstrap",
            Source::Dockerfile { .. } => "dockerfile",
        }
    }

    /// Labels that describe the image's inputs.
    fn image_labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            (LABEL_KEY, self.key()),
            (LABEL_SOURCE, self.source_name().to_owned()),
            (LABEL_ARCH, self.arch.clone()),
        ];
        if let Some(crictl) = &self.crictl {
            labels.push((crictl::LABEL_SHA256, crictl.sha256.clone()));
            if let Some(version) = &crictl.version {
                labels.push((crictl::LABEL_VERSION, version.clone()));
            }
        }
        labels
    }

    /// The one-line note for a build without crictl, naming the flag of its source.
    fn no_crictl_note(&self) -> Option<String> {
        let flag = match self.source {
            Source::Debootstrap { .. } => "--crictl",
            Source::Dockerfile { .. } => "--crictl-version",
        };
        self.crictl.is_none().then(|| {
            format!("no crictl: kind load reloads images every time, kind export logs' crictl step fails; pass {flag}")
        })
    }

    /// The image configuration as kind's base image has it (the Dockerfile says the same),
    /// with the input labels and the run's labels.
    fn image_config(&self, docker: &Docker) -> ImageConfig {
        let mut labels: BTreeMap<String, String> = docker.labels().image_map().into_iter().collect();
        labels.extend(self.image_labels().into_iter().map(|(k, v)| (k.to_owned(), v)));
        ImageConfig {
            architecture: self.arch.clone(),
            entrypoint: ENTRYPOINT.iter().map(|s| s.to_string()).collect(),
            env: vec![ENV.to_owned()],
            stop_signal: Some(STOP_SIGNAL.to_owned()),
            labels,
            cmd: Vec::new(),
            created_by: format!("nodeimg {} build base-image", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What `nodeimg build base-image --runtime LINE --arch ARCH` builds with no other flags.
pub fn default_config(runtime: RuntimeLine, arch: &str) -> BaseImageConfig {
    BaseImageConfig {
        source: Source::Debootstrap { suite: DEFAULT_SUITE.into(), mirror: default_mirror() },
        image: None,
        rebuild: false,
        crictl: None,
        crictl_default: true,
        runtime,
        arch: arch.to_owned(),
    }
}

/// Without a crictl flag, a debootstrap base gets the pinned crictl release when a base with
/// it is cached or the release can be fetched (into the download cache, where the build
/// takes it from). Offline it goes without, and says so; a download that does not match its
/// pin fails the build. With `fetch` false (`--offline`, or a command that builds nothing)
/// only a cached image with it counts: nothing is downloaded.
pub async fn with_default_crictl(
    cfg: &BaseImageConfig,
    docker: &Docker,
    fetch: bool,
    reporter: &Reporter,
) -> Result<BaseImageConfig> {
    let without = BaseImageConfig { crictl_default: false, ..cfg.clone() };
    if !cfg.crictl_default || cfg.crictl.is_some() || !matches!(cfg.source, Source::Debootstrap { .. }) {
        return Ok(without);
    }
    let Some(pinned) = Crictl::pinned(&cfg.arch)? else { return Ok(without) };
    let with = BaseImageConfig { crictl: Some(pinned.clone()), ..without.clone() };
    if !cfg.rebuild
        && let Some(existing) = docker.inspect_image(&with.target()).await?
        && existing.labels.get(LABEL_KEY) == Some(&with.key())
    {
        return Ok(with);
    }
    let crictl::Input::Url(url) = &pinned.input else { return Ok(with) };
    if !fetch {
        return Ok(without);
    }
    match crate::kube::download::fetch_sha256(url, &pinned.sha256, reporter).await {
        Ok(_) => Ok(with),
        Err(err) if err.is::<crate::kube::download::ChecksumMismatch>() => {
            Err(err.context(format!("the pinned crictl ({})", crictl::RELEASES_ENV)))
        }
        Err(err) => {
            let version = pinned.version.as_deref().unwrap_or_default();
            reporter.info(format!("crictl {version} cannot be fetched ({})", crate::error::one_line(&err)));
            Ok(without)
        }
    }
}

/// The root filesystem's Debian suite: bookworm's systemd 252 boots on cgroup v1 hosts.
pub const DEFAULT_SUITE: &str = "bookworm";

/// The outcome, for the summary line.
#[derive(Debug)]
pub struct BaseImage {
    pub reference: String,
    pub id: String,
    pub size: u64,
    pub cached: bool,
}

/// Builds (or reuses) the base image: build untagged, check it boots the tools a node needs,
/// and only then move the tag, so a failed build never holds the target name.
pub async fn build(cfg: &BaseImageConfig, docker: &Docker, reporter: &Reporter) -> Result<BaseImage> {
    let cfg = &with_default_crictl(cfg, docker, true, reporter).await?;
    let target = cfg.target();
    let started = Instant::now();
    if let Some(note) = cfg.no_crictl_note() {
        reporter.info(format!("note: {note}"));
    }
    if !cfg.rebuild
        && let Some(existing) = docker.inspect_image(&target).await?
        && existing.labels.get(LABEL_KEY) == Some(&cfg.key())
    {
        reporter.info(format!("{target} is up to date (inputs unchanged; --rebuild forces a build)"));
        check::run(docker, &existing.id, reporter).await.with_context(|| format!("checking {target}"))?;
        return Ok(BaseImage { reference: target, id: existing.id, size: existing.size, cached: true });
    }
    let id = match &cfg.source {
        Source::Debootstrap { suite, mirror } => {
            let crictl = cfg.crictl.as_ref();
            let config = cfg.image_config(docker);
            let target = debootstrap::Target { suite, mirror, arch: &cfg.arch };
            debootstrap::build(&target, cfg.runtime, crictl, &config, docker, reporter).await.with_context(
                || format!("building the base image with debootstrap ({suite} from {mirror})"),
            )?
        }
        Source::Dockerfile { debian_image } => {
            let (crictl, labels) = (cfg.crictl.as_ref(), cfg.image_labels());
            let platform = format!("linux/{}", cfg.arch);
            dockerfile::build(debian_image, &platform, cfg.runtime, crictl, &labels, docker, reporter)
                .await
                .with_context(|| format!("building base-image/Dockerfile from {debian_image}"))?
        }
    };
    if let Err(err) = check::run(docker, &id, reporter).await {
        docker.remove_image(&id).await.ok();
        return Err(err.context("the new base image failed its check; it was removed"));
    }
    docker.tag_image(&id, &target).await?;
    let size = docker.inspect_image(&id).await?.map(|i| i.size).unwrap_or_default();
    reporter.info(format!(
        "built {target} ({:.0} MB) in {}",
        size as f64 / 1e6,
        crate::progress::format_duration(started.elapsed())
    ));
    Ok(BaseImage { reference: target, id, size, cached: false })
}

pub const ENTRYPOINT: [&str; 2] = ["/usr/local/bin/entrypoint", "/sbin/init"];
/// systemd shuts down cleanly on SIGRTMIN+3.
const STOP_SIGNAL: &str = "SIGRTMIN+3";
/// Tells systemd it runs in a container.
const ENV: &str = "container=docker";

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(suite: &str) -> BaseImageConfig {
        BaseImageConfig {
            source: Source::Debootstrap { suite: suite.into(), mirror: "http://m/debian".into() },
            image: None,
            rebuild: false,
            crictl: None,
            crictl_default: false,
            runtime: RuntimeLine::V1_7,
            arch: "amd64".into(),
        }
    }

    #[test]
    fn arch_enters_the_key_and_amd64_keeps_its_old_one() {
        let amd64 = cfg("bookworm");
        let arm64 = BaseImageConfig { arch: "arm64".into(), ..cfg("bookworm") };
        assert_ne!(amd64.key(), arm64.key());
        assert!(arm64.image_labels().contains(&(LABEL_ARCH, "arm64".into())));
    }

    #[test]
    fn key_follows_the_content_not_the_mirror() {
        assert_eq!(cfg("bookworm").key(), cfg("bookworm").key());
        let elsewhere = BaseImageConfig {
            source: Source::Debootstrap {
                suite: "bookworm".into(),
                mirror: "http://apt.internal/debian".into(),
            },
            ..cfg("bookworm")
        };
        assert_eq!(elsewhere.key(), cfg("bookworm").key(), "the mirror must not change the default tag");
        assert_ne!(cfg("bookworm").key(), cfg("trixie").key());
        let dockerfile =
            BaseImageConfig { source: Source::Dockerfile { debian_image: "debian:12".into() }, ..cfg("x") };
        assert_ne!(dockerfile.key(), cfg("bookworm").key());
        for line in [RuntimeLine::V1_6, RuntimeLine::V2] {
            let other = BaseImageConfig { runtime: line, ..cfg("bookworm") };
            assert_ne!(other.key(), cfg("bookworm").key(), "runtime {line} shares no tag with 1.7");
        }
    }

    #[test]
    fn crictl_enters_the_key_and_the_labels() {
        let crictl = |sha: &str| Crictl {
            input: crictl::Input::File("/tmp/crictl".into()),
            sha256: sha.repeat(64),
            version: Some("v1.30.0".into()),
        };
        let with = BaseImageConfig { crictl: Some(crictl("a")), ..cfg("bookworm") };
        assert_ne!(with.key(), cfg("bookworm").key(), "with and without crictl share no tag");
        assert_ne!(with.key(), BaseImageConfig { crictl: Some(crictl("b")), ..cfg("bookworm") }.key());
        let elsewhere = Crictl { input: crictl::Input::Url("http://x/crictl".into()), ..crictl("a") };
        assert_eq!(with.key(), BaseImageConfig { crictl: Some(elsewhere), ..cfg("bookworm") }.key());
        let labels = with.image_labels();
        assert!(labels.contains(&("io.nodeimg.crictl.sha256", "a".repeat(64))), "{labels:?}");
        assert!(labels.contains(&("io.nodeimg.crictl.version", "v1.30.0".into())), "{labels:?}");
        assert!(!cfg("bookworm").image_labels().iter().any(|(k, _)| k.contains("crictl")));
        assert_eq!(with.no_crictl_note(), None);
        assert!(cfg("bookworm").no_crictl_note().is_some_and(|n| n.ends_with("pass --crictl")));
    }

    #[test]
    fn default_target_is_named_by_key() {
        let c = cfg("bookworm");
        assert_eq!(c.target(), format!("nodeimg/base:{}", c.key()));
        let named = BaseImageConfig { image: Some("my/base:1".into()), ..c };
        assert_eq!(named.target(), "my/base:1");
    }

    #[test]
    fn config_matches_the_dockerfile() {
        let dockerfile = std::str::from_utf8(assets::get("Dockerfile").contents).unwrap();
        let entrypoint = format!("ENTRYPOINT {}", serde_json::to_string(&ENTRYPOINT).unwrap());
        for line in [entrypoint, format!("STOPSIGNAL {STOP_SIGNAL}"), format!("ENV {ENV}")] {
            assert!(dockerfile.lines().any(|l| l.replace(", ", ",") == line), "Dockerfile lacks {line:?}");
        }
    }
}
