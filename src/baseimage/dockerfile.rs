//! `--from dockerfile`: build `base-image/Dockerfile` through the Engine API, for machines
//! that can pull a Debian image.

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::assets;
use crate::archive;
use crate::docker::Docker;
use crate::progress::Reporter;

pub async fn build(
    debian_image: &str,
    labels: &[(&str, String)],
    docker: &Docker,
    reporter: &Reporter,
) -> Result<String> {
    if !docker.image_exists(debian_image).await? {
        let step = reporter.step(format!("pulling {debian_image}"));
        docker
            .pull(debian_image, "", &mut |status| step.set_message(status.to_owned()))
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
    let args = HashMap::from([("BASE_IMAGE".to_owned(), debian_image.to_owned())]);
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let id = docker
        .build_image(context, args, labels, &mut |line| {
            reporter.detail(line);
            step.set_message(line.to_owned());
        })
        .await?;
    step.finish(crate::docker::short_id(&id));
    Ok(id)
}
