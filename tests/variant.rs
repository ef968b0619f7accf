//! `nodeimg build node-variant`, `images add` and `images list NODE_IMAGE` end to end, on a
//! node image built from a release fixture.

mod support;

use std::time::Instant;

use nodeimg::docker::Docker;
use sha2::{Digest, Sha256};
use support::fixtures::{self, Options};
use support::{RemoveImage, Run, assert_success};

/// sha256 of the Kubernetes binaries and /kind/version in a container of `image`.
async fn sums(docker: &Docker, image: &str) -> String {
    let id = docker.create_container(&nodeimg::docker::ContainerSpec::idle(image)).await.unwrap();
    docker.start_container(&id).await.unwrap();
    let cmd = ["sha256sum", "/usr/bin/kubeadm", "/usr/bin/kubelet", "/usr/bin/kubectl", "/kind/version"];
    let out = docker.exec(&id, &cmd).await.unwrap();
    docker.remove_container(&id).await.unwrap();
    assert!(out.success(), "{}", out.stderr);
    out.stdout
}

fn sum_of(sums: &str, path: &str) -> String {
    sums.lines().find(|l| l.ends_with(path)).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// `images list IMAGE` on a node image: its stdout.
fn list(run: &Run, image: &str) -> String {
    let out = run.output(&["images", "list", image]);
    assert_success(&out, &format!("images list {image}"));
    String::from_utf8(out.stdout).unwrap()
}

/// `diff A B --json`: every change as (part, name, in A, in B).
fn diff(run: &Run, a: &str, b: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    let out = run.output(&["diff", a, b, "--json"]);
    assert_success(&out, &format!("diff {a} {b}"));
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut changes = Vec::new();
    for part in diff["parts"].as_array().unwrap() {
        for c in part["changes"].as_array().unwrap() {
            changes.push((
                text(&part["name"]).unwrap(),
                text(&c["name"]).unwrap(),
                text(&c["a"]),
                text(&c["b"]),
            ));
        }
    }
    assert_eq!(diff["identical"], changes.is_empty(), "{diff}");
    changes
}

/// `build node-variant --from-node <the run's node image> -i NEW ARGS`.
fn node_variant(run: &Run, new: &str, args: &[&str]) -> std::process::Output {
    let base = ["build", "node-variant", "--from-node", &run.target, "-i", new];
    run.output(&[&base[..], args].concat())
}

#[test]
fn a_variant_changes_one_binary_and_images_add_pins_an_image() {
    let run = Run::new("variant");
    let release = fixtures::server_tarball(&Options::default());
    let started = Instant::now();
    assert_success(&run.build(&release.build_args()), "build node-image");
    let full_build = started.elapsed();
    let docker = support::block_on(support::docker(&run.run_id));
    let source = support::block_on(docker.inspect_image(&run.target)).unwrap().unwrap();
    let before = support::block_on(sums(&docker, &run.target));
    let listed_before = list(&run, &run.target);
    assert!(listed_before.contains("registry.k8s.io/kube-apiserver:v1.30.0\tsha256:"), "{listed_before}");
    assert!(listed_before.lines().all(|l| l.ends_with("\tpinned")), "{listed_before}");

    // A different ELF for the node's architecture: a copy of busybox.
    let kubelet = run.files.path().join("kubelet");
    std::fs::copy("/bin/busybox", &kubelet).unwrap();
    let new_sum = hex::encode(Sha256::digest(std::fs::read(&kubelet).unwrap()));
    let variant = format!("nodeimg-test/node:variant-of-{}", run.unique);
    let _variant = RemoveImage(variant.clone());
    let started = Instant::now();
    let out = node_variant(&run, &variant, &["--with-kubelet", kubelet.to_str().unwrap()]);
    let variant_time = started.elapsed();
    assert_success(&out, "build node-variant --with-kubelet");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), variant);
    println!("full fixture build: {full_build:.1?}; variant with one changed binary: {variant_time:.1?}");
    run.assert_clean();

    let made = support::block_on(docker.inspect_image(&variant)).unwrap().unwrap();
    let after = support::block_on(sums(&docker, &variant));
    assert_eq!(sum_of(&after, "/usr/bin/kubelet"), new_sum);
    for path in ["/usr/bin/kubeadm", "/usr/bin/kubectl", "/kind/version"] {
        assert_eq!(sum_of(&after, path), sum_of(&before, path), "{path} unchanged");
    }
    assert_eq!(list(&run, &variant), listed_before, "the images and their pins are unchanged");
    let still = support::block_on(docker.inspect_image(&run.target)).unwrap().unwrap();
    assert_eq!(still.id, source.id, "the source tag still points at the old image");
    assert_eq!(made.labels.get("io.nodeimg.variant.of"), Some(&source.id));
    assert_eq!(
        made.labels.get("io.nodeimg.kubernetes.version"),
        source.labels.get("io.nodeimg.kubernetes.version")
    );
    assert_eq!(made.layers, source.layers + 1, "one layer added");
    assert_eq!(
        (&made.entrypoint, &made.cmd, &made.stop_signal),
        (&source.entrypoint, &source.cmd, &source.stop_signal)
    );

    // diff: exactly the one binary, by its sha256.
    let changes = diff(&run, &run.target, &variant);
    let old_sum = sum_of(&before, "/usr/bin/kubelet");
    assert_eq!(
        changes,
        [("binaries".to_owned(), "kubelet".to_owned(), Some(old_sum), Some(new_sum.clone()))]
    );

    // images add: a busybox image of the test's own, into a new tag.
    let extra = support::block_on(fixtures::busybox_image(
        &docker,
        &format!("nodeimg-test/busybox:add-{}", run.unique),
    ));
    let added = format!("nodeimg-test/node:added-{}", run.unique);
    let _added = RemoveImage(added.clone());
    let out = run.output(&["images", "add", &extra.name, "--to", &variant, "-i", &added]);
    assert_success(&out, "images add");
    run.assert_clean();
    let listed = list(&run, &added);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&format!("docker.io/{}\t", extra.name)))
        .unwrap_or_else(|| panic!("{} missing:\n{listed}", extra.name));
    let fields: Vec<&str> = line.split('\t').collect();
    assert!(fields[1].starts_with("sha256:") && fields[1].len() == 71, "a digest: {line}");
    assert_eq!(fields[2], "pinned", "{line}");
    assert_eq!(listed.lines().count(), listed_before.lines().count() + 1, "{listed}");
    assert_eq!(
        support::block_on(docker.inspect_image(&variant)).unwrap().unwrap().id,
        made.id,
        "-i leaves --to alone"
    );

    let changes = diff(&run, &variant, &added);
    let name = format!("docker.io/{}", extra.name);
    assert_eq!(changes, [("images".to_owned(), name, None, Some(fields[1].to_owned()))], "one image added");
    let text = run.output(&["diff", &variant, &added]);
    assert_success(&text, "diff");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("  + docker.io/{}  sha256:", extra.name)), "{text}");
    assert!(text.contains("binaries: identical (3)"), "{text}");
    let out = run.output(&["diff", &extra.name, &added]);
    let line = support::assert_one_error_line(&out, &extra.name);
    assert!(line.contains("is not a node image"), "{line}");

    // Without -i, the node image's own tag moves, to an image that adds to it (the image it
    // left, untagged, is the new one's parent and goes with it when the guard removes it).
    let before_add = support::block_on(docker.inspect_image(&added)).unwrap().unwrap().id;
    let second = support::block_on(fixtures::busybox_image(
        &docker,
        &format!("nodeimg-test/busybox:again-{}", run.unique),
    ));
    assert_success(&run.output(&["images", "add", &second.name, "--to", &added]), "images add without -i");
    run.assert_clean();
    let moved = support::block_on(docker.inspect_image(&added)).unwrap().unwrap();
    assert_eq!(moved.labels.get("io.nodeimg.variant.of"), Some(&before_add));
    assert!(list(&run, &added).contains(&format!("docker.io/{}\t", second.name)));
}

#[test]
fn refusals_write_nothing() {
    let source = Run::new("variant-source");
    let release = fixtures::server_tarball(&Options::default());
    assert_success(&source.build(&release.build_args()), "build node-image");
    let docker = support::block_on(support::docker(&source.run_id));
    let old = support::block_on(docker.inspect_image(&source.target)).unwrap().unwrap().id;

    let run = Run::new("variant-refused");
    let busybox = run.files.path().join("kubelet");
    std::fs::copy("/bin/busybox", &busybox).unwrap();
    let busybox = busybox.to_str().unwrap();
    // An ELF header for aarch64 (e_machine 183): enough for the check, never run.
    let arm = run.files.path().join("kubelet-arm64");
    support::arches::arm64_header(&arm);
    let variant = |args: &[&str]| {
        let base = ["build", "node-variant", "-i", &run.target];
        run.output(&[&base[..], args].concat())
    };

    let out = variant(&["--from-node", &source.target, "--with-kubelet", arm.to_str().unwrap()]);
    let line = run.assert_failed(&out, "arm64");
    assert!(line.contains("--with-kubelet") && line.contains("amd64"), "{line}");

    let base = support::base_image();
    let out = variant(&["--from-node", &base, "--with-kubelet", busybox]);
    let line = run.assert_failed(&out, "not a node image");
    assert!(line.contains(&base), "{line}");

    let out = variant(&["--from-node", &source.target, "--with-path", &format!("{busybox}:usr/bin/x")]);
    run.assert_failed(&out, "absolute");

    let absent = format!("nodeimg-test/absent:{}", run.unique);
    let out = run.output(&["images", "add", &absent, "--to", &source.target, "--offline"]);
    support::assert_one_error_line(&out, &absent);
    run.assert_clean();

    assert!(run.labelled_images().is_empty(), "no image made: {}", run.labelled_images());
    let now = support::block_on(docker.inspect_image(&source.target)).unwrap().unwrap().id;
    assert_eq!(now, old, "the node image's tag is untouched");
}

#[test]
fn upgrade_artifacts_go_under_kind_upgrade_with_their_images_pinned() {
    let run = Run::new("variant-upgrade");
    let release = fixtures::server_tarball(&Options::default());
    assert_success(&run.build(&release.build_args()), "build node-image");
    let next = fixtures::server_tarball(&Options { version: Some("v1.30.1"), ..Default::default() });
    let variant = format!("nodeimg-test/node:upgrade-{}", run.unique);
    let _variant = RemoveImage(variant.clone());
    let out = node_variant(&run, &variant, &["--with-upgrade-artifacts", next.tarball.to_str().unwrap()]);
    assert_success(&out, "build node-variant --with-upgrade-artifacts");
    run.assert_clean();
    let docker = support::block_on(support::docker(&run.run_id));
    let (before, after) =
        support::block_on(async { (sums(&docker, &run.target).await, sums(&docker, &variant).await) });
    assert_eq!(before, after, "the node's own binaries and version are unchanged");
    let upgrade = support::block_on(async {
        let id = docker.create_container(&nodeimg::docker::ContainerSpec::idle(&variant)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        let out =
            docker.exec(&id, &["sh", "-c", "ls /kind/upgrade/v1.30.1; /kind/upgrade/v1.30.1/kubelet"]).await;
        docker.remove_container(&id).await.unwrap();
        out.unwrap().stdout
    });
    assert_eq!(upgrade, "kubeadm\nkubectl\nkubelet\nKubernetes v1.30.1\n");
    let listed = list(&run, &variant);
    for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"] {
        let line = listed.lines().find(|l| l.starts_with(&format!("registry.k8s.io/{c}:v1.30.1\t")));
        assert!(line.is_some_and(|l| l.ends_with("\tpinned")), "{c} v1.30.1 pinned:\n{listed}");
        assert!(listed.contains(&format!("registry.k8s.io/{c}:v1.30.0\t")), "{c} v1.30.0 kept:\n{listed}");
    }
}
