//! `--from dockerfile`: build `base-image/Dockerfile` through the Engine API, for machines
//! that can pull a Debian image.

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::assets;
use super::crictl::Crictl;
use super::runtime::{self, RuntimeLine};
use crate::archive;
use crate::docker::{ContainerSpec, Docker};
use crate::progress::Reporter;

pub async fn build(
    debian_image: &str,
    platform: &str,
    line: RuntimeLine,
    crictl: Option<&Crictl>,
    labels: &[(&str, String)],
    docker: &Docker,
    reporter: &Reporter,
) -> Result<String> {
    if !docker.image_exists(debian_image).await? {
        let step = reporter.step(format!("pulling {debian_image}"));
        docker
            .pull(debian_image, platform, &mut |status| step.set_message(status.to_owned()))
            .await
            .with_context(|| format!("cannot get the Debian image {debian_image}"))?;
        step.finish("pulled");
    }
    let step = reporter.step("building base-image/Dockerfile");
    let context = archive::tar_stream(|tar| {
        for file in assets::FILES {
            archive::append_bytes(tar, file.path, file.mode, file.contents)?;
        }
        Ok(())
    });
    let args = build_args(debian_image, line, crictl);
    let mut labels: HashMap<String, String> =
        labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let id = docker
        .build_image(context, platform, args, labels.clone(), &mut |line| {
            reporter.detail(line);
            step.set_message(line.to_owned());
        })
        .await?;
    step.finish(crate::docker::short_id(&id));
    // The installed versions are known only now: a second, layer-less build adds them.
    let step = reporter.step("labelling the installed runtime versions");
    let installed =
        installed_versions(docker, &id).await.context("reading the installed runtime versions")?;
    let suite = debian_image.rsplit(':').next().unwrap_or(debian_image).trim_end_matches("-slim");
    labels.extend(
        runtime::labels_from_dpkg(suite, line, &installed).into_iter().map(|(k, v)| (k.to_owned(), v)),
    );
    let dockerfile = format!("FROM {id}\n");
    let context = archive::tar_stream(move |tar| {
        archive::append_bytes(tar, "Dockerfile", 0o644, dockerfile.as_bytes())
    });
    let labelled = docker.build_image(context, platform, HashMap::new(), labels, &mut |_| {}).await;
    docker.remove_image(&id).await.ok();
    let labelled = labelled?;
    builder_containers_gone(docker).await;
    step.finish(crate::docker::short_id(&labelled));
    Ok(labelled)
}

/// The classic builder gives its intermediate containers the build's labels (this run's) and
/// may still be removing the last ones when the build answers: wait a little for them, then
/// remove what is left, so the run leaves nothing labelled behind. This run starts every
/// container of its own; never-started ones are the builder's.
async fn builder_containers_gone(docker: &Docker) {
    let run_id = docker.labels().run_id.clone();
    for attempt in 0..=25 {
        let left = docker
            .list_containers_by(crate::docker::LABEL_IMAGE_BUILD, Some(&run_id))
            .await
            .unwrap_or_default();
        let created: Vec<_> = left.into_iter().filter(|c| c.state == "created").collect();
        if created.is_empty() {
            return;
        }
        if attempt == 25 {
            for c in created {
                docker.remove_container(&c.id).await.ok();
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn installed_versions(docker: &Docker, image: &str) -> Result<String> {
    let id = docker.create_container(&ContainerSpec::idle(image)).await?;
    let outcome = async {
        docker.start_container(&id).await?;
        Ok::<_, anyhow::Error>(docker.exec(&id, &["sh", "-c", &runtime::installed_script()]).await?)
    }
    .await;
    docker.remove_container(&id).await?;
    let out = outcome?;
    if !out.success() {
        anyhow::bail!("dpkg-query failed: {}", out.last_line());
    }
    Ok(out.stdout)
}

/// The Dockerfile's ARGs. Without crictl, CRICTL_VERSION stays empty and the Dockerfile
/// skips the download; with one, the Dockerfile fetches upstream's release tarball of that
/// version and checks it with `sha256sum -c`.
fn build_args(debian_image: &str, line: RuntimeLine, crictl: Option<&Crictl>) -> HashMap<String, String> {
    let mut args = HashMap::from([
        ("BASE_IMAGE".to_owned(), debian_image.to_owned()),
        ("RUNTIME".to_owned(), line.name().to_owned()),
    ]);
    if let Some(Crictl { version: Some(version), sha256, .. }) = crictl {
        args.insert("CRICTL_VERSION".to_owned(), version.clone());
        args.insert("CRICTL_SHA256".to_owned(), sha256.clone());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseimage::crictl::Input;

    #[test]
    fn crictl_reaches_the_dockerfile_as_build_args() {
        let none = build_args("debian:12", RuntimeLine::V2, None);
        assert_eq!(
            none,
            HashMap::from([
                ("BASE_IMAGE".to_owned(), "debian:12".to_owned()),
                ("RUNTIME".to_owned(), "2".to_owned())
            ])
        );
        let crictl = Crictl {
            input: Input::Url(Crictl::release_url("v1.30.0", "amd64")),
            sha256: "ab".repeat(32),
            version: Some("v1.30.0".into()),
        };
        let args = build_args("debian:12", RuntimeLine::V1_7, Some(&crictl));
        assert_eq!(args["CRICTL_VERSION"], "v1.30.0");
        assert_eq!(args["CRICTL_SHA256"], "ab".repeat(32));
        let dockerfile = std::str::from_utf8(assets::get("Dockerfile").contents).unwrap();
        for arg in args.keys() {
            assert!(
                dockerfile.lines().any(|l| l.starts_with(&format!("ARG {arg}"))),
                "Dockerfile lacks ARG {arg}"
            );
        }
        assert!(dockerfile.contains("sha256sum -c"), "the Dockerfile checks the tarball");
    }
}
