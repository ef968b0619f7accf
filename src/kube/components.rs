//! Host-mode builds have binaries but no control-plane images: nodeimg makes each one from a
//! component base image plus the binary, named as upstream names them, and writes it as a
//! docker-save tar for the pipeline to import like any other built image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use super::release::IMAGES;
use crate::archive;
use crate::docker::{ContainerSpec, Docker};
use crate::progress::Reporter;

/// The base image upstream's build uses for `component`, read from the tree's
/// `build/common.sh` (`"kube-proxy,${KUBE_PROXY_BASE_IMAGE:-${REGISTRY}/distroless-iptables:${v}}"`).
pub fn upstream_base_image(common_sh: &str, component: &str) -> Option<String> {
    let mut vars: HashMap<String, String> = HashMap::new();
    for line in common_sh.lines().map(str::trim) {
        let line = line.strip_prefix("readonly ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else { continue };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
            continue;
        }
        let value = value.trim_matches('"');
        let value = match value.strip_prefix(&format!("${{{name}:-")) {
            Some(default) => default.strip_suffix('}').unwrap_or(default),
            None => value,
        };
        vars.insert(name.to_owned(), expand(value, &vars));
    }
    let line = common_sh.lines().map(str::trim).find(|l| l.starts_with(&format!("\"{component},")))?;
    let spec = line.trim_matches('"').strip_prefix(&format!("{component},"))?;
    let default = spec.strip_prefix("${").and_then(|s| s.split_once(":-")).map(|(_, d)| d)?;
    let default = default.strip_suffix('}').unwrap_or(default);
    let image = expand(default, &vars);
    (!image.contains('$') && !image.is_empty()).then_some(image)
}

fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

/// Makes the four control-plane images and writes them to `dest` as `<component>.tar`.
pub async fn make_images(
    docker: &Docker,
    root: &Path,
    bin_dir: &Path,
    base_override: Option<&str>,
    status: &super::tree::WorkspaceStatus,
    dest: &Path,
    reporter: &Reporter,
) -> Result<Vec<PathBuf>> {
    let (registry, tag) = (&status.registry, &status.docker_tag);
    let common = std::fs::read_to_string(root.join("build/common.sh")).unwrap_or_default();
    let mut tars = Vec::new();
    for component in IMAGES {
        let base = match base_override {
            Some(b) => b.to_owned(),
            None => upstream_base_image(&common, component).ok_or_else(|| {
                anyhow!("cannot tell the base image of {component} from build/common.sh; pass --component-base-image")
            })?,
        };
        let step = reporter.step(format!("making image {registry}/{component}:{tag} from {base}"));
        if !docker.image_exists(&base).await? {
            docker
                .pull(&base, "", &mut |_| {})
                .await
                .with_context(|| format!("component base image {base} is not here and cannot be pulled"))?;
        }
        let binary = bin_dir.join(component);
        let entrypoint = format!("/usr/local/bin/{component}");
        let mut spec = ContainerSpec { image: base.clone(), ..Default::default() };
        spec.entrypoint = Some(vec![entrypoint.clone()]);
        let id = docker.create_container(&spec).await?;
        let result = async {
            let name = format!("usr/local/bin/{component}");
            let tar = archive::tar_stream(move |t| {
                let mut file = std::fs::File::open(&binary)?;
                let mut header = tar::Header::new_gnu();
                header.set_size(file.metadata()?.len());
                header.set_mode(0o755);
                header.set_uid(0);
                header.set_gid(0);
                t.append_data(&mut header, &name, &mut file)
            });
            docker.upload(&id, "/", tar).await?;
            let changes = [format!("ENTRYPOINT [\"{entrypoint}\"]")];
            Ok::<_, anyhow::Error>(docker.commit(&id, &changes).await?)
        }
        .await;
        docker.remove_container(&id).await?;
        let image = result.with_context(|| format!("making the {component} image"))?;
        let reference = format!("{registry}/{component}:{tag}");
        docker.tag_image(&image, &reference).await?;
        let tar_path = dest.join(format!("{component}.tar"));
        let saved = save_to_file(docker, &reference, &tar_path).await;
        docker.remove_image(&reference).await?;
        saved?;
        step.finish("done");
        tars.push(tar_path);
    }
    Ok(tars)
}

async fn save_to_file(docker: &Docker, reference: &str, path: &Path) -> Result<()> {
    let mut reader = tokio_util::io::StreamReader::new(docker.save_image(reference));
    let mut file = tokio::fs::File::create(path).await?;
    tokio::io::copy(&mut reader, &mut file).await.with_context(|| format!("saving {reference}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMON_1_20: &str = r#"
readonly KUBE_BUILD_IMAGE_REPO=kube-build
readonly KUBE_BASE_IMAGE_REGISTRY="${KUBE_BASE_IMAGE_REGISTRY:-k8s.gcr.io/build-image}"
readonly __default_debian_iptables_version=buster-v1.3.0
readonly __default_go_runner_version=v2.2.0-go1.15.5-buster.0
kube::build::get_docker_wrapped_binaries() {
  local targets=(
    "kube-apiserver,${KUBE_APISERVER_BASE_IMAGE:-${KUBE_BASE_IMAGE_REGISTRY}/go-runner:${__default_go_runner_version}}"
    "kube-proxy,${KUBE_PROXY_BASE_IMAGE:-${KUBE_BASE_IMAGE_REGISTRY}/debian-iptables:${__default_debian_iptables_version}}"
  )
"#;

    #[test]
    fn reads_upstreams_component_bases() {
        assert_eq!(
            upstream_base_image(COMMON_1_20, "kube-apiserver").as_deref(),
            Some("k8s.gcr.io/build-image/go-runner:v2.2.0-go1.15.5-buster.0")
        );
        assert_eq!(
            upstream_base_image(COMMON_1_20, "kube-proxy").as_deref(),
            Some("k8s.gcr.io/build-image/debian-iptables:buster-v1.3.0")
        );
        assert_eq!(upstream_base_image(COMMON_1_20, "kube-scheduler"), None);
        assert_eq!(upstream_base_image("", "kube-proxy"), None);
    }
}
