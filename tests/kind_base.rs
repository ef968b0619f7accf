//! Issue 11, end to end: node images on containerd 2. A v1.37 node image on nodeimg's
//! containerd 2 base, booted, with its edits as containerd 2 reads them; and a base shaped
//! like kind's (`-b docker.io/kindest/base:<tag>`), whose config nodeimg must leave as it
//! was except the edits it documents.

mod support;

use std::time::Duration;

use nodeimg::docker::{ContainerSpec, Docker};
use nodeimg::node::containerd::{self, Config};
use nodeimg::progress::{Reporter, Verbosity};
use support::fixtures::{self, Options};
use support::{RemoveImage, Run, assert_success, wait_for};

/// What `--node-registry-mirror` is given: a loopback mirror, never contacted by these tests
/// (nothing is pulled), so only the config it leaves is checked.
const MIRROR: &str = "registry.k8s.io=http://127.0.0.1:5000";

/// The kind-shaped containerd config (see the file's header), used as is.
const KIND_CONFIG: &str = include_str!("../src/node/containerd/testdata/kind-base.toml");

/// `ctr images ls` in the k8s.io namespace of the node image, with containerd started in a
/// throwaway container.
async fn node_images(docker: &Docker, image: &str) -> String {
    let id = support::with_containerd(docker, image).await;
    let images = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls"]).await.unwrap();
    docker.remove_container(&id).await.unwrap();
    assert!(images.success(), "ctr images ls: {images:?}");
    images.stdout
}

/// A file of `image`, read from an idle container (no boot: what the image holds).
async fn read_file(docker: &Docker, image: &str, path: &str) -> String {
    let id = docker.create_container(&ContainerSpec::idle(image)).await.unwrap();
    docker.start_container(&id).await.unwrap();
    let out = docker.exec(&id, &["cat", path]).await.unwrap();
    docker.remove_container(&id).await.unwrap();
    assert!(out.success(), "cat {path}: {out:?}");
    out.stdout
}

/// The item at `path` of a parsed TOML document, if every table on the way is there.
fn lookup<'a>(doc: &'a toml_edit::DocumentMut, path: &[&str]) -> Option<&'a toml_edit::Item> {
    let mut item = doc.as_item();
    for key in path {
        item = item.as_table_like()?.get(key)?;
    }
    Some(item)
}

#[test]
fn v1_37_on_the_containerd_2_base_boots_with_its_edits_in_containerd_2_terms() {
    let base = support::base_image_runtime_2();
    let run = Run::new("k8s137-rt2");
    let release = fixtures::server_tarball(&Options { version: Some("v1.37.0"), ..Default::default() });
    let out =
        run.build(&[&release.build_args()[..], &["-b", &base, "--node-registry-mirror", MIRROR]].concat());
    assert_success(&out, "build node-image v1.37.0 on the containerd 2 base");
    run.assert_clean();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;

        // Every image of the build (the built control plane and the archive's) is in the
        // node's containerd and pinned, so the kubelet's image GC never removes it.
        let images = node_images(&docker, &run.target).await;
        let built = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
            .map(|c| format!("registry.k8s.io/{c}:v1.37.0"));
        for name in built.into_iter().chain(fixtures::needed_images()) {
            let line = images
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{images}"));
            assert!(line.contains("io.cri-containerd.pinned=pinned"), "{name} is pinned: {line}");
        }

        // The sandbox image the node's config names (the base keeps a version 2 file, which
        // containerd 2 migrates in memory): the dump must show it where containerd 2 keeps it.
        let file = read_file(&docker, &run.target, containerd::CONFIG).await;
        let sandbox = Config::parse(containerd::CONFIG, &file).unwrap().sandbox_image().unwrap();

        let reporter = Reporter::with_terminal(Verbosity::Quiet, false);
        let node = nodeimg::node::start(&docker, &run.target, None, &reporter).await.unwrap();
        // The run's Cleanup guard releases the host cgroups and removes the node (and its
        // /var volume) if an assertion below fails first.
        let dump = wait_for("containerd in the booted node", Duration::from_secs(90), || async {
            let out = docker.exec(&node.id, &["containerd", "config", "dump"]).await.ok()?;
            let ready = docker.exec(&node.id, &["ctr", "version"]).await.ok()?;
            (out.success() && ready.success()).then_some(out.stdout)
        })
        .await;
        if let Some(root) = &node.cgroup_root {
            nodeimg::node::release_host_cgroups(&docker, &node.id, root).await.unwrap();
        }
        docker.remove_container(&node.id).await.unwrap();

        // Parsed, not matched as text: containerd 2 quotes keys its own way ('...').
        let doc: toml_edit::DocumentMut = dump.parse().unwrap_or_else(|e| panic!("{e}:\n{dump}"));
        let images_plugin = ["plugins", "io.containerd.cri.v1.images"];
        let get = |rest: &[&str]| {
            let path = [&images_plugin[..], rest].concat();
            lookup(&doc, &path).and_then(|i| i.as_str()).map(str::to_owned)
        };
        assert_eq!(get(&["pinned_images", "sandbox"]).as_deref(), Some(&*sandbox), "{dump}");
        assert_eq!(get(&["registry", "config_path"]).as_deref(), Some(containerd::CERTS_D), "{dump}");
        run.assert_clean();
    });
}

#[test]
fn a_kind_shaped_base_keeps_its_config_except_the_documented_edits() {
    let rt2 = support::base_image_runtime_2();
    let run = Run::new("kind-shaped");
    // A name of the test's own, never kind's: the host may hold the real one.
    let base = format!("nodeimg-test/kind-shaped-base:{}", run.unique);
    let _base = RemoveImage(base.clone());
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let id = docker.create_container(&ContainerSpec::idle(&rt2)).await.unwrap();
        docker.start_container(&id).await.unwrap();
        nodeimg::node::files::write(&docker, &id, containerd::CONFIG, KIND_CONFIG).await.unwrap();
        // The idle container's `sleep infinity` must not become the base's entrypoint.
        let entrypoint = r#"ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]"#.to_owned();
        let image = docker.commit(&id, &[entrypoint]).await.unwrap();
        docker.remove_container(&id).await.unwrap();
        docker.tag_image(&image, &base).await.unwrap();
    });

    // kind's config names pause:3.10, which the fixture's kubeadm does not list: the build
    // needs it from somewhere, offline.
    let pause = fixtures::ImageArchive::new(&["registry.k8s.io/pause:3.10".to_owned()]);
    let release = fixtures::server_tarball(&Options::default());
    let extra = ["--image-archive", pause.path.to_str().unwrap()];
    let args = [&release.build_args()[..], &extra, &["-b", &base, "--node-registry-mirror", MIRROR]].concat();
    let out = run.build(&args);
    assert_success(&out, "build node-image on the kind-shaped base");
    run.assert_clean();
    let written = support::runtime().block_on(async {
        read_file(&support::docker(&run.run_id).await, &run.target, containerd::CONFIG).await
    });

    // The edits for a v1.30 build with --node-registry-mirror: `config_path` under CRI's
    // registry table (added: kind's config has none). SystemdCgroup is edited only before
    // Kubernetes 1.24. Those lines, and no others, may differ.
    let edits =
        ["[plugins.\"io.containerd.grpc.v1.cri\".registry]", "config_path = \"/etc/containerd/certs.d\""];
    let mut rest: Vec<&str> = written.lines().collect();
    for edit in edits {
        let at = rest.iter().position(|l| l.trim() == edit);
        let at = at.unwrap_or_else(|| panic!("the edit {edit:?} is missing:\n{written}"));
        rest.remove(at);
    }
    // A blank line toml_edit may put before the added table is layout, not a setting.
    let trimmed = |lines: Vec<&str>| lines.join("\n").trim_end().to_owned();
    assert_eq!(
        trimmed(rest),
        trimmed(KIND_CONFIG.lines().collect()),
        "nodeimg rewrote more than its edits; written:\n{written}"
    );
}
