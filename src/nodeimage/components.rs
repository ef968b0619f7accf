//! Host-mode builds have binaries but no control-plane images: nodeimg makes each one from a
//! component base image plus the binary and writes it as a docker-save tar, for the pipeline
//! to import like any other built image under the name upstream gives it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use super::TEMP_REPO;
use super::images::BuiltImage;
use super::incremental::Item;
use super::iptables;
use crate::archive;
use crate::docker::{ContainerGuard, ContainerSpec, Docker};
use crate::kube::ComponentBinaries;
use crate::kube::release::IMAGES;
use crate::progress::Reporter;
use crate::reference::normalize;

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

/// Makes the four control-plane images and writes them to `dest` as `<component>.tar`;
/// one whose recipe (base image, binary, iptables wrapper) is the one recorded in
/// `previous` is not made again but returned as kept, with its record.
///
/// Each is tagged only under a name no one else owns (`nodeimg-tmp/<component>:<process>`),
/// saved, and removed again: a real `registry.k8s.io/kube-*` image the user has keeps its
/// tag, and concurrent runs never save each other's image. The node knows it by upstream's
/// name, given at import.
pub async fn make_images(
    docker: &Docker,
    binaries: &ComponentBinaries,
    base_override: Option<&str>,
    previous: &BTreeMap<String, Item>,
    dest: &Path,
    reporter: &Reporter,
) -> Result<(Vec<BuiltImage>, Vec<(String, Item)>)> {
    let (registry, tag) = (&binaries.registry, &binaries.tag);
    let (mut built, mut kept) = (Vec::new(), Vec::new());
    for component in IMAGES {
        let base = match base_override {
            Some(b) => b.to_owned(),
            None => upstream_base_image(&binaries.common_sh, component).ok_or_else(|| {
                anyhow!("cannot tell the base image of {component} from build/common.sh; pass --component-base-image")
            })?,
        };
        let name = normalize(&format!("{registry}/{component}:{tag}"));
        if !docker.image_exists(&base).await? {
            let step = reporter.step(format!("pulling component base image {base}"));
            docker
                .pull(&base, "", &mut |_| {})
                .await
                .with_context(|| format!("component base image {base} is not here and cannot be pulled"))?;
            step.finish("pulled");
        }
        let binary = binaries.bin_dir.join(component);
        let digest = recipe(docker, &base, &binary, component).await?;
        if let Some(before) = previous.get(&name).filter(|before| before.digest == digest) {
            kept.push((name, before.clone()));
            continue;
        }
        let step = reporter.step(format!("making image {name} from {base}"));
        let image = make_image(docker, &base, &binary, component, reporter)
            .await
            .with_context(|| format!("making the {component} image"))?;
        let temp = format!("{TEMP_REPO}/{component}:{}", docker.labels().process);
        let tar = dest.join(format!("{component}.tar"));
        let saved = async {
            docker.tag_image(&image, &temp).await?;
            save_to_file(docker, &temp, &tar).await
        }
        .await;
        // The temporary name and the image go whatever happened; the tar holds the image now.
        let untagged = docker.remove_image(&temp).await;
        docker.remove_unused_image(&image).await.ok();
        saved?;
        untagged?;
        step.finish("done");
        built.push(BuiltImage { tar, original: temp, name, digest });
    }
    Ok((built, kept))
}

/// The digest of what a component image is made of: the image is made anew each time (a new
/// commit, new timestamps), so its own digest would change with nothing changed.
async fn recipe(docker: &Docker, base: &str, binary: &Path, component: &str) -> Result<String> {
    use sha2::Digest;
    let base_id = docker.inspect_image(base).await?.map(|i| i.id).unwrap_or_default();
    let binary_digest = super::incremental::file_item(binary)
        .await
        .with_context(|| format!("reading {}", binary.display()))?
        .digest;
    let mut hash = sha2::Sha256::new();
    for part in [component, &base_id, &binary_digest, iptables::WRAPPER] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

/// A container of `base` with the binary added as its entrypoint (and, for kube-proxy, the
/// iptables wrapper), committed untagged; returns the image ID.
pub async fn make_image(
    docker: &Docker,
    base: &str,
    binary: &Path,
    component: &str,
    reporter: &Reporter,
) -> Result<String> {
    let entrypoint = format!("/usr/local/bin/{component}");
    let spec = ContainerSpec {
        image: base.to_owned(),
        entrypoint: Some(vec![entrypoint.clone()]),
        ..Default::default()
    };
    let container = ContainerGuard::new(docker, docker.create_container(&spec).await?);
    let (binary, name) = (binary.to_owned(), PathBuf::from(entrypoint.trim_start_matches('/')));
    let tar = archive::tar_stream(move |t| archive::append_file(t, &binary, &name, 0o755));
    docker.upload(container.id(), "/", tar).await?;
    if component == "kube-proxy" {
        iptables::prepare(docker, container.id(), reporter).await?;
    }
    let image = docker.commit(container.id(), &[format!("ENTRYPOINT [\"{entrypoint}\"]")]).await?;
    container.remove().await?;
    Ok(image)
}

async fn save_to_file(docker: &Docker, reference: &str, path: &Path) -> Result<()> {
    let mut reader = tokio_util::io::StreamReader::new(docker.save_image(reference));
    let mut file =
        tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?;
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
