//! The end of a build: commit the build container untagged, check the image (`--verify`)
//! under a temporary tag, and only then move the target tag.

use anyhow::{Context, Result};

use super::NodeImageConfig;
use super::incremental::{Inputs, LABEL_DEAD_BYTES, LABEL_INPUTS, LABEL_LAYERS, Previous, dead_bytes};
use crate::docker::{ContainerGuard, Docker, ImageGuard, quote, short_id};
use crate::kube::{Artifacts, Source};
use crate::progress::Reporter;

pub const LABEL_KUBE_VERSION: &str = "io.nodeimg.kubernetes.version";
pub const LABEL_KUBE_SOURCE: &str = "io.nodeimg.kubernetes.source";
/// Where `build --verify` keeps an image while checking it; `nodeimg clean` removes the
/// tags of runs that died.
pub const VERIFY_REPO: &str = "nodeimg-verify";
/// Where a host-mode build keeps the control-plane images it makes, for the moment it takes
/// to save them: names no one else owns (`nodeimg-tmp/<component>:<process token>`).
pub const TEMP_REPO: &str = "nodeimg-tmp";

/// What the labels record for the next incremental build.
pub struct Record {
    pub inputs: Inputs,
    pub layers: u32,
    pub dead_bytes: u64,
}

impl Record {
    /// The record of a build with `inputs`, on `previous` (whose record was `old`) when
    /// incremental: one layer more, and the bytes of what it replaced now dead.
    pub fn next(
        previous: Option<&Previous>,
        inputs: Inputs,
        old: &Inputs,
        replaced: &[String],
        changed_binaries: &[&str],
    ) -> Self {
        let Some(previous) = previous else { return Record { inputs, layers: 0, dead_bytes: 0 } };
        let binaries: Vec<String> = changed_binaries.iter().map(|b| b.to_string()).collect();
        Record {
            inputs,
            layers: previous.layers + 1,
            dead_bytes: previous.dead_bytes
                + dead_bytes(&old.images, replaced)
                + dead_bytes(&old.binaries, &binaries),
        }
    }
}

pub async fn commit(
    docker: &Docker,
    id: &str,
    cfg: &NodeImageConfig,
    artifacts: &Artifacts,
    record: &Record,
    reporter: &Reporter,
) -> Result<String> {
    let step = reporter.step("committing the node image");
    let image_id = docker.commit(id, &changes(cfg, artifacts, record)).await?;
    step.finish(short_id(&image_id));
    Ok(image_id)
}

fn changes(cfg: &NodeImageConfig, artifacts: &Artifacts, record: &Record) -> Vec<String> {
    let entrypoint = serde_json::to_string(&crate::baseimage::ENTRYPOINT).expect("strings serialize");
    let mut changes = vec![format!("ENTRYPOINT {entrypoint}")];
    changes.extend(cfg.proxy_env.iter().map(|(k, _)| format!("ENV {k}=\"\"")));
    changes
        .extend(labels(cfg, artifacts, record).into_iter().map(|(k, v)| format!("LABEL {k}={}", quote(&v))));
    changes
}

/// The labels a node image gets: its Kubernetes version and source, and the record for the
/// next incremental build.
pub fn labels(cfg: &NodeImageConfig, artifacts: &Artifacts, record: &Record) -> Vec<(&'static str, String)> {
    let inputs = serde_json::to_string(&record.inputs).expect("inputs serialize");
    let mut labels = vec![
        (LABEL_KUBE_VERSION, artifacts.version.text.clone()),
        (LABEL_KUBE_SOURCE, source_label(&cfg.source)),
        (LABEL_INPUTS, inputs),
        (LABEL_LAYERS, record.layers.to_string()),
        (LABEL_DEAD_BYTES, record.dead_bytes.to_string()),
    ];
    labels.sort();
    labels
}

pub fn source_label(source: &Source) -> String {
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

/// Tags the committed image as the target, after `--verify` when asked: the image is checked
/// under a temporary tag (kind and the kubelet want names, not IDs); only a passing image
/// gets the target tag. An image that does not pass is removed, and the target tag stays
/// where it was. `container` is the build container, gone before the check needs the memory
/// (`None` when it is kept).
pub async fn check_then_tag(
    docker: &Docker,
    image_id: &str,
    container: Option<ContainerGuard>,
    target: &str,
    check: Option<&crate::verify::VerifyConfig>,
    reporter: &Reporter,
) -> Result<()> {
    if let Some(container) = container {
        container.remove().await.context("removing the build container")?;
    }
    let Some(check) = check else {
        docker.tag_image(image_id, target).await?;
        return Ok(());
    };
    let temp = format!("{VERIFY_REPO}:{}-{}", short_id(image_id), std::process::id());
    // From here a Ctrl-C (dropping this future) removes the temporary tag too.
    let temp_tag = ImageGuard::new(docker, &temp);
    let checked = async {
        docker.tag_image(image_id, &temp).await?;
        let check = crate::verify::VerifyConfig { image: temp.clone(), ..check.clone() };
        let (mut report, result) = crate::verify::verify(&check, docker, reporter).await;
        report.finish(result.as_ref().err().map(crate::error::one_line));
        for line in report.to_text().lines() {
            reporter.info(line);
        }
        result.context("verifying the node image")?;
        docker.tag_image(image_id, target).await?;
        anyhow::Ok(())
    }
    .await;
    // With the target tag in place this only untags.
    let untagged = temp_tag.remove().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::{KubeVersion, TreeOptions, build::BuildMode};

    /// The proxy settings come in with the config (read from the environment by `config`),
    /// so this test needs no process-wide environment.
    #[test]
    fn commit_blanks_proxies_and_labels_the_version() {
        let version = KubeVersion::parse("v1.30.0").unwrap();
        let cfg = NodeImageConfig {
            source: Source::Release(version.clone()),
            image: "n:1".into(),
            base_image: Some("b".into()),
            skip_compat_check: false,
            arch: "amd64".into(),
            release_url: "http://x".into(),
            checksums: true,
            build_dir: None,
            keep_container: false,
            check: None,
            tree: TreeOptions {
                kube_root: None,
                kube_repo: String::new(),
                version: None,
                mode: BuildMode::Docker,
            },
            component_base_image: None,
            images: super::super::ImageSources::default(),
            node_mirrors: vec![],
            proxy_env: vec![("HTTPS_PROXY".into(), "http://proxy.internal:3128".into())],
            from_node: Default::default(),
            allow_foreign_images: false,
            plan_only: false,
        };
        let artifacts = Artifacts {
            binaries: vec![],
            image_tars: vec![],
            version,
            components: None,
            provenance: Default::default(),
        };
        let record = Record { inputs: Inputs::default(), layers: 2, dead_bytes: 7 };
        let changes = changes(&cfg, &artifacts, &record);
        assert!(changes.contains(&r#"ENTRYPOINT ["/usr/local/bin/entrypoint","/sbin/init"]"#.to_owned()));
        assert!(changes.contains(&"ENV HTTPS_PROXY=\"\"".to_owned()), "{changes:?}");
        assert!(changes.contains(&format!("LABEL {LABEL_KUBE_VERSION}=\"v1.30.0\"")));
        assert!(changes.contains(&format!("LABEL {LABEL_KUBE_SOURCE}=\"release:v1.30.0\"")));
        assert!(!changes.iter().any(|c| c.contains("proxy.internal")));
        assert!(changes.contains(&format!("LABEL {LABEL_LAYERS}=\"2\"")));
        assert!(changes.contains(&format!("LABEL {LABEL_DEAD_BYTES}=\"7\"")));
        let inputs = changes.iter().find(|c| c.starts_with(&format!("LABEL {LABEL_INPUTS}="))).unwrap();
        assert!(inputs.contains(r#"\"binaries\":{}"#), "JSON, quoted: {inputs}");
    }
}
