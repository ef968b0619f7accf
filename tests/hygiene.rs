//! Tests leave nothing under a name a real build would use: nodeimg prefers the host's
//! images, so a busybox stand-in left as `registry.k8s.io/etcd:...` would silently end up in
//! the next real node image.

mod support;

use std::collections::BTreeSet;

use support::fixtures::{self, Options};
use support::{Run, assert_success, docker_cli};

/// Names a real build would take from the host's Docker: the registries kubeadm and kind's
/// manifests use, and Docker Hub's official images (shown without `docker.io/library/`).
fn is_real_name(name: &str) -> bool {
    let repo = name.rsplit_once(':').map_or(name, |(repo, _)| repo);
    ["registry.k8s.io/", "k8s.gcr.io/", "docker.io/", "kindest/"].iter().any(|p| repo.starts_with(p))
        // nodeimg-verify:<id>-<pid> is nodeimg's own temporary tag, unique to a run.
        || (!repo.contains('/') && repo != "nodeimg-verify" && repo != "<none>")
}

fn real_names() -> BTreeSet<String> {
    let listed = docker_cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    listed.lines().filter(|n| is_real_name(n)).map(str::to_owned).collect()
}

/// Whether another test process (one on the same daemon, from another checkout) made the
/// image: its run-id label is a test's, with another pid.
async fn made_by_another_test(docker: &nodeimg::docker::Docker, name: &str) -> bool {
    let labels = docker.inspect_image(name).await.unwrap().map(|i| i.labels).unwrap_or_default();
    let run_id = labels.get(nodeimg::docker::LABEL_IMAGE_BUILD).map(String::as_str).unwrap_or("");
    run_id.starts_with("test-") && !run_id.contains(&format!("-{}-", std::process::id()))
}

#[test]
fn a_fixture_build_leaves_no_image_under_a_real_name() {
    let before = real_names();
    let run = Run::new("hygiene");
    let release = fixtures::server_tarball(&Options::default());
    let out = run.build(&release.build_args());
    assert_success(&out, "build node-image from a fixture release");
    // Every image the release needs was in the node, so it came from somewhere.
    let summary = format!("images: 4 built, {} archive", fixtures::needed_images().len());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&summary), "{summary}");
    run.assert_clean();

    let new = support::block_on(async {
        let docker = support::docker(&run.run_id).await;
        let mut new = Vec::new();
        for name in real_names().difference(&before) {
            if !made_by_another_test(&docker, name).await {
                new.push(name.clone());
            }
        }
        new
    });
    assert!(new.is_empty(), "images left under names a real build would use: {new:?}");
}
