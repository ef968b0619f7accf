//! Air-gapped builds end to end, all on loopback: a real registry (Debian's docker-registry)
//! as the mirror, a local file server as the release mirror, `images save` bundles and
//! `--offline`.
//!
//! The images that go through the mirror have names unique to the test run (a kubeadm image
//! of the fixture release and an `--extra-image`), as does the one only the host's Docker
//! has; the shared fixture images (pause, etcd, coredns, kindnetd, ...) come from the
//! release's image archive and never enter the host's Docker.

mod support;

use std::path::Path;
use std::time::Duration;

use nodeimg::docker::Docker;
use support::fixtures::{self, Options, VERSION};
use support::registry::Registry;
use support::{Run, assert_success, wait_for};

/// The image the fixture's kubeadm lists, under registry.k8s.io, that no one has locally.
fn k8s_image(run: &Run) -> String {
    format!("registry.k8s.io/nodeimg-test-airgap:k8s-{}", run.unique)
}

fn extra_image(run: &Run) -> String {
    format!("docker.io/nodeimg-test/airgap-extra:{}", run.unique)
}

/// A release whose kubeadm also lists [`k8s_image`].
fn release(run: &Run) -> fixtures::Release {
    fixtures::server_tarball(&Options { extra_kubeadm_image: Some(k8s_image(run)), ..Default::default() })
}

/// `nodeimg -v build node-image ARGS` of the run.
fn build(run: &Run, args: &[&str]) -> std::process::Output {
    run.build(&[&["-v"], args].concat())
}

/// A failed build: one error line naming every needle, no container of the run, the target
/// still pointing at `before`.
async fn assert_failed(
    docker: &Docker,
    run: &Run,
    out: &std::process::Output,
    needles: &[&str],
    before: &str,
) {
    let line = support::assert_one_error_line(out, needles[0]);
    for needle in needles {
        assert!(line.contains(needle), "the error names {needle:?}: {line}");
    }
    run.assert_clean();
    let now = docker.inspect_image(&run.target).await.unwrap().map(|i| i.id);
    assert_eq!(now.as_deref(), Some(before), "the target tag is untouched");
}

/// A tiny image of our own, pushed to the registry under each path, then removed locally.
async fn seed(docker: &Docker, registry: &Registry, local: &str, paths: &[String]) {
    let image = fixtures::busybox_image(docker, local).await;
    for path in paths {
        registry.push(docker, &image.name, path).await;
    }
}

/// `ctr images ls` of the node image, read with containerd started in a throwaway container.
async fn node_images(docker: &Docker, image: &str) -> (String, String, String) {
    let id = support::with_containerd(docker, image).await;
    let images = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls"]).await.unwrap().stdout;
    let hosts = docker
        .exec(&id, &["sh", "-c", "cat /etc/containerd/certs.d/registry.k8s.io/hosts.toml"])
        .await
        .unwrap()
        .stdout;
    let config = docker.exec(&id, &["cat", "/etc/containerd/config.toml"]).await.unwrap().stdout;
    docker.remove_container(&id).await.unwrap();
    (images, hosts, config)
}

fn assert_pinned(images: &str, name: &str) {
    let line = images.lines().find(|l| l.starts_with(&format!("{name} ")));
    let line = line.unwrap_or_else(|| panic!("{name} missing:\n{images}"));
    assert!(line.contains("io.cri-containerd.pinned=pinned"), "{name} is pinned: {line}");
}

/// Every image a build from the fixture release needs besides the built ones.
fn needed(run: &Run, with_extra: bool) -> Vec<String> {
    let mut all = fixtures::needed_images();
    all.push(k8s_image(run));
    if with_extra {
        all.push(extra_image(run));
    }
    all
}

#[test]
fn mirrors_then_a_saved_bundle_build_offline() {
    let run = Run::new("airgap-mirror");
    let release = release(&run);
    let server = release.serve(|tarball, root| fixtures::release_tree(tarball, root, true));
    let mut registry = Registry::start();
    let reg = registry.host.clone();
    let runtime_image = format!("nodeimg-test-airgap-runtime:{}", run.unique);
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let base = support::base_image();
        let host_only = format!("docker.io/nodeimg-test/airgap-hostonly:{}", run.unique);
        let _host_only = fixtures::busybox_image(&docker, &host_only).await;
        let k8s_path = k8s_image(&run).trim_start_matches("registry.k8s.io/").to_owned();
        let hub_path = format!("hub/{}", extra_image(&run).trim_start_matches("docker.io/"));
        let local = format!("nodeimg-test/airgap-seed:{}", run.unique);
        seed(&docker, &registry, &local, &[k8s_path.clone(), hub_path.clone(), runtime_image.clone()]).await;
        for image in [k8s_image(&run), extra_image(&run)] {
            assert!(!docker.image_exists(&image).await.unwrap(), "{image} is not in the host cache");
        }

        // docker.io's mirror comes from a config file: http:// and a path prefix.
        let config = run.files.path().join("nodeimg.toml");
        std::fs::write(
            &config,
            format!(
                "registry_mirrors = [\"docker.io=http://{reg}/hub\"]\nextra_images = [\"{}\"]\n",
                extra_image(&run)
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let k8s_mirror = format!("registry.k8s.io={reg}");
        let [archive_flag, archive] = release.image_args();
        let common = [
            "--release-url",
            &server.url,
            "--registry-mirror",
            &k8s_mirror,
            "--config",
            config,
            archive_flag,
            archive,
        ];

        // images list: every image with the source a build would use.
        let list = ["images", "list", VERSION, "-b", &base, "--extra-image", &host_only];
        let out = run.output(&[&list[..], &common].concat());
        assert_success(&out, "images list");
        let listed = String::from_utf8_lossy(&out.stdout);
        let from = |image: &str| {
            listed.lines().find_map(|l| l.strip_prefix(&format!("{image}\t"))).map(str::to_owned)
        };
        assert_eq!(from(&k8s_image(&run)), Some(format!("mirror {reg} ({reg}/{k8s_path})")), "{listed}");
        assert_eq!(
            from(&extra_image(&run)),
            Some(format!("mirror {reg}/hub ({reg}/{hub_path})")),
            "{listed}"
        );
        assert_eq!(from("registry.k8s.io/pause:3.9"), Some(format!("archive ({archive})")), "{listed}");
        assert_eq!(from(&host_only).as_deref(), Some("host docker"), "{listed}");
        assert_eq!(listed.lines().count(), 4 + needed(&run, true).len() + 1, "{listed}");

        // The build: pulls through the mirror, keeps canonical names only.
        let node_mirror = format!("registry.k8s.io=http://{reg}");
        let more = ["--node-registry-mirror", &node_mirror, "--extra-image", &host_only];
        let out = build(&run, &[&[VERSION][..], &common, &more].concat());
        assert_success(&out, "build through mirrors");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary =
            format!("images: 4 built, {} archive, 1 host docker, 2 mirror", fixtures::needed_images().len());
        assert!(stderr.contains(&summary), "summary {summary:?} in:\n{stderr}");
        for source in
            [format!("{}  <- mirror {reg} ", k8s_image(&run)), format!("{host_only}  <- host docker")]
        {
            assert!(stderr.contains(&source), "-v names the source {source:?}:\n{stderr}");
        }
        for path in [&k8s_path, &hub_path] {
            assert_pulled(&registry, path);
        }
        for mirror_ref in [format!("{reg}/{k8s_path}"), format!("{reg}/{hub_path}")] {
            assert!(
                !docker.image_exists(&mirror_ref).await.unwrap(),
                "{mirror_ref} left in the host's Docker"
            );
        }
        let (images, hosts, config_toml) = node_images(&docker, &run.target).await;
        for name in needed(&run, true).iter().chain([&host_only]) {
            assert_pinned(&images, name);
        }
        assert!(!images.contains("127.0.0.1"), "no mirror names in the node:\n{images}");
        // Straight from the registry: its manifest (digest and type, so compressed layers),
        // not one that `docker save` and `ctr import` made up.
        assert!(!stderr.contains("pulling it through Docker"), "{stderr}");
        // (CRI's own `sha256:<image ID>` names are what kind's nodes have too.)
        let extra_names: Vec<&str> = images.lines().filter(|l| l.starts_with("import-")).collect();
        assert!(extra_names.is_empty(), "only the images' own names: {extra_names:#?}");
        let client = nodeimg::registry::Client::new().unwrap();
        for (name, path) in [(k8s_image(&run), &k8s_path), (extra_image(&run), &hub_path)] {
            let served = client.manifest(&format!("{reg}/{path}")).await.unwrap();
            let line = images.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                (fields[1], fields[2]),
                (served.media_type.as_str(), served.digest.as_str()),
                "{line}"
            );
        }
        let hosts: toml_edit::DocumentMut = hosts.parse().expect("hosts.toml is TOML");
        assert_eq!(hosts["server"].as_str(), Some("https://registry.k8s.io"));
        assert!(hosts["host"][&format!("http://{reg}")]["capabilities"].is_array(), "{hosts}");
        let config_toml: toml_edit::DocumentMut = config_toml.parse().unwrap();
        assert_eq!(
            config_toml["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"].as_str(),
            Some("/etc/containerd/certs.d")
        );

        // A booted node pulls through its hosts.toml from the loopback registry.
        pull_in_booted_node(&docker, &run, &registry, &format!("registry.k8s.io/{runtime_image}")).await;
        docker.remove_image(&run.target).await.unwrap();

        // images save: the bundle for the other side.
        let out_dir = run.files.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let bundle = out_dir.join("bundle.tar");
        let save = ["images", "save", VERSION, "-b", &base, "-o", bundle.to_str().unwrap()];
        let out = run.output(&[&save[..], &common].concat());
        assert_success(&out, "images save");
        let written: Vec<_> = std::fs::read_dir(&out_dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(written, vec!["bundle.tar"], "no temp file left beside the bundle");
        for mirror_ref in [format!("{reg}/{k8s_path}"), format!("{reg}/{hub_path}")] {
            assert!(!docker.image_exists(&mirror_ref).await.unwrap(), "{mirror_ref} left by images save");
        }
        let archive = nodeimg::nodeimage::archives::index(&bundle).unwrap();
        let mut names: Vec<String> = archive.images.keys().cloned().collect();
        let mut expected = needed(&run, true);
        names.sort();
        expected.sort();
        assert_eq!(names, expected, "the bundle holds every needed image and no built one");

        // Offline, registry stopped, from the bundle; the extra image is in the bundle but
        // not wanted this time, so it must not stay in the node.
        registry.stop();
        let bundle = bundle.to_str().unwrap();
        let offline = [VERSION, "--release-url", &server.url, "--registry-mirror", &k8s_mirror];
        let out = build(&run, &[&offline[..], &["--offline", "--image-archive", bundle]].concat());
        assert_success(&out, "offline build from the bundle");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary = format!("images: 4 built, {} archive", needed(&run, false).len());
        assert!(stderr.contains(&summary), "summary {summary:?} in:\n{stderr}");
        assert!(
            stderr.contains(&extra_image(&run)) && stderr.contains("unneeded"),
            "says what it dropped:\n{stderr}"
        );
        let (images, _, _) = node_images(&docker, &run.target).await;
        docker.remove_image(&run.target).await.unwrap();
        for name in needed(&run, false) {
            assert_pinned(&images, &name);
        }
        assert!(!images.contains(&extra_image(&run)), "an unneeded archive image is removed:\n{images}");

        // The same bundle as a plain OCI layout whose names are only full
        // `org.opencontainers.image.ref.name`s: ctr imports those unnamed, nodeimg names them.
        let oci = run.files.path().join("oci.tar");
        oci_only(Path::new(bundle), &oci);
        let archive = nodeimg::nodeimage::archives::index(&oci).unwrap();
        assert!(archive.oci && archive.images.contains_key(&k8s_image(&run)), "{archive:?}");
        let out =
            build(&run, &[&offline[..], &["--offline", "--image-archive", oci.to_str().unwrap()]].concat());
        assert_success(&out, "offline build from an OCI layout");
        let (images, _, _) = node_images(&docker, &run.target).await;
        docker.remove_image(&run.target).await.unwrap();
        for name in needed(&run, false) {
            assert_pinned(&images, &name);
        }
        assert!(!images.contains(&extra_image(&run)), "{images}");
        for digest in archive.images.values().flatten() {
            let digest_name = |l: &&str| l.starts_with("import-") && l.contains(&format!("@{digest} "));
            assert!(!images.lines().any(|l| digest_name(&l)), "no digest name for {digest}:\n{images}");
        }
        run.assert_clean();
    });
}

/// Boots the node image like kind (restricted privileges here), on the host's network so
/// its containerd reaches the loopback registry, and pulls through `certs.d`.
async fn pull_in_booted_node(docker: &Docker, run: &Run, registry: &Registry, image: &str) {
    let mut spec = nodeimg::node::node_spec(&run.target, None, nodeimg::node::Privilege::Restricted);
    spec.network_mode = Some("host".into());
    let id = docker.create_container(&spec).await.unwrap();
    docker.start_container(&id).await.unwrap();
    wait_for("containerd in the booted node", Duration::from_secs(90), || async {
        let out = docker.exec(&id, &["systemctl", "is-active", "containerd"]).await.ok()?;
        (out.stdout.trim() == "active").then_some(())
    })
    .await;
    let plugins = docker.exec(&id, &["ctr", "plugins", "ls"]).await.unwrap().stdout;
    let pull = docker
        .exec(
            &id,
            &["ctr", "-n", "k8s.io", "images", "pull", "--hosts-dir", "/etc/containerd/certs.d", image],
        )
        .await
        .unwrap();
    let listed = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls", "-q"]).await.unwrap().stdout;
    docker.remove_container(&id).await.unwrap();
    let cri = plugins.lines().find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "));
    assert!(
        cri.is_some_and(|l| l.trim_end().ends_with("ok")),
        "the CRI plugin loads with config_path:\n{plugins}"
    );
    assert!(pull.success(), "pull through the node's mirror: {}\n{}", pull.stderr, pull.stdout);
    assert!(listed.lines().any(|l| l == image), "{image} pulled:\n{listed}");
    assert_pulled(registry, image.trim_start_matches("registry.k8s.io/"));
}

/// The registry's access log shows a pull (a manifest read) of `path` (`repo:tag`).
fn assert_pulled(registry: &Registry, path: &str) {
    let (repo, tag) = path.rsplit_once(':').unwrap();
    let log = registry.log();
    let manifests: Vec<&str> =
        log.lines().filter(|l| l.starts_with("127.0.0.1 - -") && l.contains("/manifests/")).collect();
    let pulled = manifests.iter().any(|l| {
        (l.contains("\"GET ") || l.contains("\"HEAD "))
            && [' ', '?'].iter().any(|end| l.contains(&format!(" /v2/{repo}/manifests/{tag}{end}")))
    });
    assert!(pulled, "the registry served {path}:\n{}", manifests.join("\n"));
}

/// The archive as a plain OCI layout: no manifest.json, index.json's names moved to
/// `org.opencontainers.image.ref.name`.
fn oci_only(from: &Path, to: &Path) {
    fixtures::copy_tar(from, to, &["manifest.json"], "index.json", |index| {
        for m in index["manifests"].as_array_mut().unwrap() {
            let name = m["annotations"]["io.containerd.image.name"].as_str().unwrap().to_owned();
            m["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name });
        }
    });
}

/// Tags the base image as the run's target; returns its ID.
async fn tag_target(docker: &Docker, run: &Run) -> String {
    let id = docker.inspect_image(&support::base_image()).await.unwrap().unwrap().id;
    docker.tag_image(&id, &run.target).await.unwrap();
    id
}

#[test]
fn bad_mirror_flags_and_missing_images_fail_cleanly() {
    let run = Run::new("airgap-bad");
    let release = release(&run);
    let tarball = release.tarball.to_str().unwrap();
    let [archive_flag, archive] = release.image_args();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let before = tag_target(&docker, &run).await;
        let build = |args: &[&str]| build(&run, &[&release.build_args()[..], args].concat());

        let out = build(&["--registry-mirror", "registry.k8s.io"]);
        let needles = ["--registry-mirror \"registry.k8s.io\"", "SRC=DEST"];
        assert_failed(&docker, &run, &out, &needles, &before).await;

        let refused = format!("registry.k8s.io=127.0.0.1:{closed}");
        let out = build(&["--registry-mirror", &refused]);
        let mirror = format!("127.0.0.1:{closed}");
        assert_failed(&docker, &run, &out, &[&k8s_image(&run), &mirror, "connection refused"], &before).await;

        let extra = extra_image(&run);
        let out = build(&["--offline", "--extra-image", &extra]);
        let needles = ["--offline", "2 image(s)", &k8s_image(&run), &extra];
        assert_failed(&docker, &run, &out, &needles, &before).await;
        let base = support::base_image();
        let list = ["images", "list", tarball, "-b", &base, archive_flag, archive];
        let out = run.output(&[&list[..], &["--offline", "--extra-image", &extra]].concat());
        assert_success(&out, "images list --offline");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.contains(&format!("{extra}\tmissing (--offline)\n")), "{listed}");

        let out = build(&["--image-archive", tarball]);
        let needles = ["reading image archive", tarball, "neither a docker-save"];
        assert_failed(&docker, &run, &out, &needles, &before).await;
        docker.remove_image(&run.target).await.unwrap();
    });
}

#[test]
fn extra_images_come_from_an_images_dir_and_are_pinned() {
    let run = Run::new("airgap-extra");
    let release = fixtures::server_tarball(&Options::default());
    let dir = run.files.path().join("images");
    std::fs::create_dir(&dir).unwrap();
    let layer = nodeimg::archive::image::write_layer(
        &fixtures::busybox_root(run.files.path()),
        &run.files.path().join("layer.tar"),
    )
    .unwrap();
    let extra = extra_image(&run);
    // Compressed, as `nodeimg save` writes archives: indexed and imported as a stream.
    let plain = run.files.path().join("extra.tar");
    fixtures::write_image_tar(&layer, &extra, &plain);
    let compressed = std::fs::File::create(dir.join("extra.tar.zst")).unwrap();
    zstd::stream::copy_encode(std::fs::File::open(&plain).unwrap(), compressed, 3).unwrap();
    let list = run.files.path().join("extra-images.txt");
    std::fs::write(&list, format!("# preloaded\n{extra}\n")).unwrap();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        let args = ["--images-dir", dir.to_str().unwrap(), "--extra-images-file", list.to_str().unwrap()];
        let out = build(&run, &[&release.build_args()[..], &args, &["--offline"]].concat());
        assert_success(&out, "build with an extra image from an images dir");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{extra}  <- archive ")), "{stderr}");
        let (images, _, _) = node_images(&docker, &run.target).await;
        docker.remove_image(&run.target).await.unwrap();
        assert_pinned(&images, &extra);
        assert!(!docker.image_exists(&extra).await.unwrap(), "the host's Docker was not used for it");
        assert!(stderr.contains("extra.tar.zst"), "the compressed archive supplied it: {stderr}");
        assert!(Path::new(&dir).join("extra.tar.zst").exists());
        run.assert_clean();
    });
}
