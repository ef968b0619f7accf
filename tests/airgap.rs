//! Air-gapped builds end to end, all on loopback: a real registry (Debian's docker-registry)
//! as the mirror, a local file server as the release mirror, `images save` bundles and
//! `--offline`.
//!
//! The images that go through the mirror have names unique to the test run (a kubeadm image
//! of the fixture release and an `--extra-image`): the shared fixture images (pause, etcd,
//! coredns, kindnetd, ...) stay in the host's Docker untouched, other tests use them, and
//! the host cache comes before the mirror in the source order anyway.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use nodeimg::docker::Docker;
use nodeimg::reference::normalize;
use support::fixtures::{self, Options, VERSION};
use support::registry::Registry;
use support::{Cleanup, assert_success, wait_for};

struct Run {
    run_id: String,
    target: String,
    tmp: tempfile::TempDir,
    /// Unique to the run: the tag of the images that only the registry has.
    unique: String,
}

impl Run {
    fn new(name: &str) -> Self {
        let run_id = support::run_id(&format!("airgap-{name}"));
        let unique = run_id.rsplit('-').next().unwrap().to_owned();
        Run {
            target: format!("nodeimg-test/node:airgap-{name}-{}", std::process::id()),
            run_id,
            tmp: tempfile::tempdir().unwrap(),
            unique,
        }
    }

    /// The image the fixture's kubeadm lists, under registry.k8s.io, that no one has locally.
    fn k8s_image(&self) -> String {
        format!("registry.k8s.io/nodeimg-test-airgap:k8s-{}", self.unique)
    }

    fn extra_image(&self) -> String {
        format!("docker.io/nodeimg-test/airgap-extra:{}", self.unique)
    }

    fn release(&self) -> fixtures::Release {
        fixtures::server_tarball(&Options {
            extra_kubeadm_image: Some(self.k8s_image()),
            ..Default::default()
        })
    }

    fn nodeimg(&self, args: &[&str]) -> Output {
        let mut cmd = support::nodeimg();
        cmd.args(args)
            .args(["-b", &support::base_image()])
            .env("NODEIMG_RUN_ID", &self.run_id)
            .env("TMPDIR", self.tmp.path())
            .env("NODEIMG_CACHE_DIR", self.tmp.path().join("cache"));
        cmd.output().unwrap()
    }

    fn build(&self, args: &[&str]) -> Output {
        self.nodeimg(&[&["-v", "build", "node-image", "-i", &self.target], args].concat())
    }

    /// A failed run: exit 1, one error line naming every needle, no container of the run,
    /// the target still pointing at `before`.
    async fn assert_failed(&self, docker: &Docker, out: &Output, needles: &[&str], before: &str) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        for needle in needles {
            assert!(errors[0].contains(needle), "the error names {needle:?}: {}", errors[0]);
        }
        let left = docker.list_containers(Some(&self.run_id)).await.unwrap();
        assert!(left.is_empty(), "containers left: {left:?}");
        let now = docker.inspect_image(&self.target).await.unwrap().map(|i| i.id);
        assert_eq!(now.as_deref(), Some(before), "the target tag is untouched");
    }
}

/// Serves the release like dl.k8s.io does.
fn release_server(release: &fixtures::Release) -> (tempfile::TempDir, fixtures::HttpServer) {
    let served = tempfile::tempdir().unwrap();
    fixtures::release_tree(&release.tarball, served.path(), true);
    let server = fixtures::HttpServer::serve(served.path());
    (served, server)
}

/// A tiny image of our own, pushed to the registry under each path, then removed locally.
async fn seed(docker: &Docker, registry: &Registry, local: &str, paths: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let root = fixtures::busybox_root(dir.path());
    let stream = nodeimg::archive::tar_stream(move |t| nodeimg::archive::append_rootfs(t, &root));
    let id = docker.import_rootfs(stream, vec![r#"CMD ["/bin/sh"]"#.into()]).await.unwrap();
    docker.tag_image(&id, local).await.unwrap();
    for path in paths {
        registry.push(docker, local, path).await;
    }
    docker.remove_image(local).await.unwrap();
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
    let mut all: Vec<String> = fixtures::host_images().iter().map(|i| normalize(i)).collect();
    all.push(run.k8s_image());
    if with_extra {
        all.push(run.extra_image());
    }
    all
}

#[test]
fn mirrors_then_a_saved_bundle_build_offline() {
    let run = Run::new("mirror");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = run.release();
    let (_served, server) = release_server(&release);
    let mut registry = Registry::start();
    let reg = registry.host.clone();
    let runtime_image = format!("nodeimg-test-airgap-runtime:{}", run.unique);
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        fixtures::ensure_host_images(&docker).await;
        let k8s_path = run.k8s_image().trim_start_matches("registry.k8s.io/").to_owned();
        let hub_path = format!("hub/{}", run.extra_image().trim_start_matches("docker.io/"));
        let local = format!("nodeimg-test/airgap-seed:{}", run.unique);
        seed(&docker, &registry, &local, &[k8s_path.clone(), hub_path.clone(), runtime_image.clone()]).await;
        for image in [run.k8s_image(), run.extra_image()] {
            assert!(!docker.image_exists(&image).await.unwrap(), "{image} is not in the host cache");
        }

        // docker.io's mirror comes from a config file: http:// and a path prefix.
        let config = run.tmp.path().join("nodeimg.toml");
        std::fs::write(
            &config,
            format!(
                "registry_mirrors = [\"docker.io=http://{reg}/hub\"]\nextra_images = [\"{}\"]\n",
                run.extra_image()
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let k8s_mirror = format!("registry.k8s.io={reg}");
        let common = ["--release-url", &server.url, "--registry-mirror", &k8s_mirror, "--config", config];

        // images list: every image with the source a build would use.
        let out = run.nodeimg(&[&["images", "list", VERSION][..], &common].concat());
        assert_success(&out, "images list");
        let listed = String::from_utf8_lossy(&out.stdout);
        let from = |image: &str| {
            listed.lines().find_map(|l| l.strip_prefix(&format!("{image}\t"))).map(str::to_owned)
        };
        assert_eq!(from(&run.k8s_image()), Some(format!("mirror {reg} ({reg}/{k8s_path})")), "{listed}");
        assert_eq!(
            from(&run.extra_image()),
            Some(format!("mirror {reg}/hub ({reg}/{hub_path})")),
            "{listed}"
        );
        assert_eq!(from("registry.k8s.io/pause:3.9").as_deref(), Some("host docker"), "{listed}");
        assert_eq!(listed.lines().count(), 4 + needed(&run, true).len(), "{listed}");

        // The build: pulls through the mirror, keeps canonical names only.
        let node_mirror = format!("registry.k8s.io=http://{reg}");
        let out = run.build(&[&[VERSION][..], &common, &["--node-registry-mirror", &node_mirror]].concat());
        assert_success(&out, "build through mirrors");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary = format!("images: 4 built, {} host docker, 2 mirror", fixtures::host_images().len());
        assert!(stderr.contains(&summary), "summary {summary:?} in:\n{stderr}");
        assert!(
            stderr.contains(&format!("{}  <- mirror {reg} ", run.k8s_image())),
            "-v names the source:\n{stderr}"
        );
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
        for name in needed(&run, true) {
            assert_pinned(&images, &name);
        }
        assert!(!images.contains("127.0.0.1"), "no mirror names in the node:\n{images}");
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
        let out_dir = run.tmp.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let bundle = out_dir.join("bundle.tar");
        let out = run
            .nodeimg(&[&["images", "save", VERSION, "-o", bundle.to_str().unwrap()][..], &common].concat());
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
        let out = run.build(&[&offline[..], &["--offline", "--image-archive", bundle]].concat());
        assert_success(&out, "offline build from the bundle");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary = format!("images: 4 built, {} archive", needed(&run, false).len());
        assert!(stderr.contains(&summary), "summary {summary:?} in:\n{stderr}");
        assert!(
            stderr.contains(&run.extra_image()) && stderr.contains("unneeded"),
            "says what it dropped:\n{stderr}"
        );
        let (images, _, _) = node_images(&docker, &run.target).await;
        docker.remove_image(&run.target).await.unwrap();
        for name in needed(&run, false) {
            assert_pinned(&images, &name);
        }
        assert!(!images.contains(&run.extra_image()), "an unneeded archive image is removed:\n{images}");

        // The same bundle as a plain OCI layout whose names are only full
        // `org.opencontainers.image.ref.name`s: ctr imports those unnamed, nodeimg names them.
        let oci = run.tmp.path().join("oci.tar");
        oci_only(Path::new(bundle), &oci);
        let archive = nodeimg::nodeimage::archives::index(&oci).unwrap();
        assert!(archive.oci && archive.images.contains_key(&run.k8s_image()), "{archive:?}");
        let out =
            run.build(&[&offline[..], &["--offline", "--image-archive", oci.to_str().unwrap()]].concat());
        assert_success(&out, "offline build from an OCI layout");
        let (images, _, _) = node_images(&docker, &run.target).await;
        docker.remove_image(&run.target).await.unwrap();
        for name in needed(&run, false) {
            assert_pinned(&images, &name);
        }
        assert!(!images.contains(&run.extra_image()), "{images}");
        for digest in archive.images.values().flatten() {
            let digest_name = |l: &&str| l.starts_with("import-") && l.contains(&format!("@{digest} "));
            assert!(!images.lines().any(|l| digest_name(&l)), "no digest name for {digest}:\n{images}");
        }
        let left = docker.list_containers(Some(&run.run_id)).await.unwrap();
        assert!(left.is_empty(), "containers left: {left:?}");
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

/// Copies an archive entry by entry, streaming, without manifest.json and with index.json's
/// names moved to `org.opencontainers.image.ref.name`.
fn oci_only(from: &Path, to: &Path) {
    let mut input = tar::Archive::new(std::fs::File::open(from).unwrap());
    let mut output = tar::Builder::new(std::fs::File::create(to).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        if path == Path::new("manifest.json") {
            continue;
        }
        if path == Path::new("index.json") {
            let mut index: serde_json::Value = serde_json::from_reader(&mut entry).unwrap();
            for m in index["manifests"].as_array_mut().unwrap() {
                let name = m["annotations"]["io.containerd.image.name"].as_str().unwrap().to_owned();
                m["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name });
            }
            let bytes = serde_json::to_vec(&index).unwrap();
            nodeimg::archive::append_bytes(&mut output, "index.json", 0o644, &bytes).unwrap();
        } else {
            let header = entry.header().clone();
            output.append(&header, &mut entry).unwrap();
        }
    }
    output.finish().unwrap();
}

fn tag_target(docker: &Docker, run: &Run) -> impl std::future::Future<Output = String> {
    let (docker, target) = (docker.clone(), run.target.clone());
    async move {
        let id = docker.inspect_image(&support::base_image()).await.unwrap().unwrap().id;
        docker.tag_image(&id, &target).await.unwrap();
        id
    }
}

#[test]
fn bad_mirror_flags_and_missing_images_fail_cleanly() {
    let run = Run::new("bad");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = run.release();
    let tarball = release.tarball.to_str().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        fixtures::ensure_host_images(&docker).await;
        let before = tag_target(&docker, &run).await;

        let out = run.build(&[tarball, "--registry-mirror", "registry.k8s.io"]);
        run.assert_failed(&docker, &out, &["--registry-mirror \"registry.k8s.io\"", "SRC=DEST"], &before)
            .await;

        let refused = format!("registry.k8s.io=127.0.0.1:{closed}");
        let out = run.build(&[tarball, "--registry-mirror", &refused]);
        let mirror = format!("127.0.0.1:{closed}");
        run.assert_failed(&docker, &out, &[&run.k8s_image(), &mirror, "connection refused"], &before).await;

        let extra = run.extra_image();
        let out = run.build(&[tarball, "--offline", "--extra-image", &extra]);
        run.assert_failed(&docker, &out, &["--offline", "2 image(s)", &run.k8s_image(), &extra], &before)
            .await;
        let out = run.nodeimg(&["images", "list", tarball, "--offline", "--extra-image", &extra]);
        assert_success(&out, "images list --offline");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.contains(&format!("{extra}\tmissing (--offline)\n")), "{listed}");

        let out = run.build(&[tarball, "--image-archive", tarball]);
        run.assert_failed(
            &docker,
            &out,
            &["reading image archive", tarball, "neither a docker-save"],
            &before,
        )
        .await;
        docker.remove_image(&run.target).await.unwrap();
    });
}

#[test]
fn extra_images_come_from_an_images_dir_and_are_pinned() {
    let run = Run::new("extra");
    let _cleanup = Cleanup(run.run_id.clone());
    let release = fixtures::server_tarball(&Options::default());
    let dir = run.tmp.path().join("images");
    std::fs::create_dir(&dir).unwrap();
    let layer = nodeimg::archive::image::write_layer(
        &fixtures::busybox_root(run.tmp.path()),
        &run.tmp.path().join("layer.tar"),
    )
    .unwrap();
    let extra = run.extra_image();
    fixtures::write_image_tar(&layer, &extra, &dir.join("extra.tar"));
    let list = run.tmp.path().join("extra-images.txt");
    std::fs::write(&list, format!("# preloaded\n{extra}\n")).unwrap();
    support::runtime().block_on(async {
        let docker = support::docker(&run.run_id).await;
        fixtures::ensure_host_images(&docker).await;
        let out = run.build(&[
            release.tarball.to_str().unwrap(),
            "--images-dir",
            dir.to_str().unwrap(),
            "--extra-images-file",
            list.to_str().unwrap(),
            "--offline",
        ]);
        assert_success(&out, "build with an extra image from an images dir");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{extra}  <- archive ")), "{stderr}");
        let (images, _, _) = node_images(&docker, &run.target).await;
        docker.remove_image(&run.target).await.unwrap();
        assert_pinned(&images, &extra);
        assert!(!docker.image_exists(&extra).await.unwrap(), "the host's Docker was not used for it");
        assert!(Path::new(&dir).join("extra.tar").exists());
    });
}
