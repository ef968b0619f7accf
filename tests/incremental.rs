//! Incremental rebuilds of `build node-image` from the fixture source tree (host mode): a
//! change to one component's source replaces that binary or image only, as one thin layer
//! on the previous image; a rebuild with nothing changed adds no layer; `--from-node` and
//! `--full` choose the start.

mod support;

use std::collections::BTreeMap;
use std::process::Output;

use support::fixtures::{self, ImageArchive};
use support::{BUILD_LIMIT, Run, assert_success, docker_cli, kubetree, output_within};

const LABEL_INPUTS: &str = "io.nodeimg.inputs";
const LABEL_LAYERS: &str = "io.nodeimg.incremental.layers";

struct Tree {
    dir: tempfile::TempDir,
    run: Run,
    images: ImageArchive,
    component_base: String,
    _component_image: fixtures::TestImage,
    nowhere: tempfile::TempDir,
}

impl Tree {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let root = fixtures::busybox_root(scratch.path());
        let layer = nodeimg::archive::image::write_layer(&root, &scratch.path().join("layer.tar")).unwrap();
        kubetree::create(dir.path(), false, |tag, dest| fixtures::write_image_tar(&layer, tag, dest));
        // A tree with work in progress: its version (v1.30.1-dirty) stays while sources change.
        std::fs::write(dir.path().join("CHANGELOG"), "work in progress\n").unwrap();
        let run = Run::new(&format!("inc-{name}"));
        let component_base = format!("nodeimg-test/component-base:{}", run.unique);
        let component_image = support::block_on(async {
            fixtures::busybox_image(&support::docker(&run.run_id).await, &component_base).await
        });
        Tree {
            dir,
            run,
            images: ImageArchive::new(&fixtures::needed_images()),
            component_base,
            _component_image: component_image,
            nowhere: tempfile::tempdir().unwrap(),
        }
    }

    /// A change to one component's source: `make all` appends it to that binary.
    fn change(&self, component: &str, text: &str) {
        let dir = self.dir.path().join("cmd").join(component);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("patch"), format!("# {text}\n")).unwrap();
    }

    fn build(&self, args: &[&str]) -> Output {
        let root = self.dir.path().to_str().unwrap();
        let mut cmd = self.run.build_command(&[
            "--kube-root",
            root,
            "--build-mode",
            "host",
            "--component-base-image",
            &self.component_base,
            "--image-archive",
            self.images.path.to_str().unwrap(),
        ]);
        cmd.args(args).current_dir(self.nowhere.path()).env("GOPATH", self.nowhere.path());
        let out = output_within(&mut cmd, BUILD_LIMIT);
        self.run.assert_clean();
        out
    }
}

fn inspect(image: &str, format: &str) -> String {
    docker_cli(&["image", "inspect", "--format", format, image]).trim().to_owned()
}

fn layers(image: &str) -> Vec<String> {
    inspect(image, "{{range .RootFS.Layers}}{{println .}}{{end}}").lines().map(str::to_owned).collect()
}

/// The size of the image's top layer, in bytes.
fn top_layer_size(image: &str) -> u64 {
    docker_cli(&["history", "--no-trunc", "--human=false", "--format", "{{.Size}}", image])
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("docker history prints the top layer first")
}

/// sha256 of /usr/bin/kubeadm, kubelet, kubectl in the image.
fn binaries(image: &str) -> BTreeMap<String, String> {
    let out = docker_cli(&[
        "run",
        "--rm",
        "--entrypoint",
        "sha256sum",
        image,
        "/usr/bin/kubeadm",
        "/usr/bin/kubelet",
        "/usr/bin/kubectl",
    ]);
    out.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, path)| (path.trim_start_matches("/usr/bin/").to_owned(), sum.to_owned()))
        .collect()
}

/// `nodeimg images list IMAGE`: name → (digest, pinned).
fn held(run: &Run, image: &str) -> BTreeMap<String, (String, bool)> {
    let out = run.output(&["images", "list", image]);
    assert_success(&out, "images list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split('\t');
            Some((words.next()?.to_owned(), (words.next()?.to_owned(), words.next()? == "pinned")))
        })
        .collect()
}

/// The blobs in the node's containerd content store, with their sizes.
fn blobs(image: &str) -> Vec<String> {
    let script = "cd /var/lib/containerd/io.containerd.content.v1.content/blobs/sha256 && ls -l | tail -n +2";
    let out = docker_cli(&["run", "--rm", "--entrypoint", "sh", image, "-c", script]);
    out.lines().map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn a_rebuild_replaces_only_what_changed_in_one_thin_layer() {
    let tree = Tree::new("one");
    let target = tree.run.target.clone();
    let out = tree.build(&[]);
    assert_success(&out, "the first build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("incremental"), "nothing to build on yet: {stderr}");
    let first = inspect(&target, "{{.Id}}");
    assert_eq!(inspect(&target, &format!("{{{{index .Config.Labels \"{LABEL_LAYERS}\"}}}}")), "0");
    assert!(
        inspect(&target, &format!("{{{{index .Config.Labels \"{LABEL_INPUTS}\"}}}}")).contains("kubelet")
    );
    let (first_layers, first_binaries, first_held) =
        (layers(&target), binaries(&target), held(&tree.run, &target));
    let full_layer = top_layer_size(&target);

    // One component's source changes: only its binary goes in.
    tree.change("kubelet", "a fix in the kubelet");
    let out = tree.build(&[]);
    assert_success(&out, "the rebuild");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("incremental build on"), "{stderr}");
    assert!(stderr.contains("writing the new layer"), "the layer is written, not committed: {stderr}");
    assert!(!stderr.contains("committing"), "{stderr}");
    assert!(!stderr.contains("importing"), "no image changed, none imported: {stderr}");
    assert!(!stderr.contains("making image"), "no component image made again: {stderr}");
    let second = inspect(&target, "{{.Id}}");
    assert_ne!(second, first);
    let second_layers = layers(&target);
    assert_eq!(second_layers.len(), first_layers.len() + 1, "one layer more");
    assert_eq!(second_layers[..first_layers.len()], first_layers[..], "on the previous image's layers");
    assert_eq!(inspect(&target, &format!("{{{{index .Config.Labels \"{LABEL_LAYERS}\"}}}}")), "1");
    let thin = top_layer_size(&target);
    assert!(
        thin < 256 * 1024 && thin * 10 < full_layer,
        "a thin layer: {thin} bytes (full build's: {full_layer})"
    );
    let second_binaries = binaries(&target);
    assert_ne!(second_binaries["kubelet"], first_binaries["kubelet"]);
    assert_eq!(second_binaries["kubeadm"], first_binaries["kubeadm"]);
    assert_eq!(second_binaries["kubectl"], first_binaries["kubectl"]);
    let second_held = held(&tree.run, &target);
    assert_eq!(second_held, first_held, "the same images, all still there");
    assert!(second_held.values().all(|(_, pinned)| *pinned), "every image pinned: {second_held:?}");

    // `diff` between the two names exactly the one binary, by its sha256 (the first image
    // is the second's parent, so it is still here by its ID).
    let out = tree.run.output(&["diff", &first, &target, "--json"]);
    assert_success(&out, "diff");
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes: Vec<(String, String, String, String)> = diff["parts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["changes"].as_array().unwrap().iter().map(move |c| (p["name"].clone(), c.clone())))
        .map(|(part, c)| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
            (text(&part), text(&c["name"]), text(&c["a"]), text(&c["b"]))
        })
        .collect();
    let (old, new) = (first_binaries["kubelet"].clone(), second_binaries["kubelet"].clone());
    assert_eq!(changes, [("binaries".to_owned(), "kubelet".to_owned(), old, new)], "{diff}");

    // Nothing changed: no work, no layer.
    let out = tree.build(&[]);
    assert_success(&out, "the rebuild with nothing changed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unchanged since"), "{stderr}");
    assert!(!stderr.contains("copying"), "{stderr}");
    assert_eq!(inspect(&target, "{{.Id}}"), second, "the same image");

    // A control-plane image changes: re-made and re-imported, the old one gone from containerd.
    let blobs_before = blobs(&target);
    tree.change("kube-scheduler", "a fix in the scheduler");
    let out = tree.build(&[]);
    assert_success(&out, "the rebuild with a new scheduler");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("making image registry.k8s.io/kube-scheduler"), "{stderr}");
    assert!(!stderr.contains("making image registry.k8s.io/kube-apiserver"), "{stderr}");
    assert!(stderr.contains("importing 1 images"), "{stderr}");
    let third_held = held(&tree.run, &target);
    let scheduler = third_held.keys().find(|k| k.contains("kube-scheduler")).unwrap().clone();
    assert_ne!(third_held[&scheduler].0, second_held[&scheduler].0, "a new scheduler image");
    assert_eq!(third_held.len(), second_held.len(), "no image added: {third_held:?}");
    assert!(third_held.values().all(|(_, pinned)| *pinned), "every image pinned: {third_held:?}");
    let blobs_after = blobs(&target);
    assert_eq!(
        blobs_after.len(),
        blobs_before.len(),
        "the old scheduler's blobs were removed, not kept beside the new: {blobs_before:#?} {blobs_after:#?}\n{stderr}"
    );
    assert_eq!(binaries(&target), second_binaries, "the binaries as they were");

    // --full starts again from the base image.
    let out = tree.build(&["--full"]);
    assert_success(&out, "--full");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("incremental"));
    assert_eq!(inspect(&target, &format!("{{{{index .Config.Labels \"{LABEL_LAYERS}\"}}}}")), "0");
    assert_eq!(layers(&target).len(), first_layers.len());
}

#[test]
fn from_node_builds_on_another_tag_and_refuses_what_it_cannot_build_on() {
    let tree = Tree::new("from");
    let out = tree.build(&[]);
    assert_success(&out, "the first build");
    let first = inspect(&tree.run.target, "{{.Id}}");
    let other = format!("nodeimg-test/node:from-copy-{}", tree.run.unique);
    let _other = support::RemoveImage(other.clone());
    tree.change("kubectl", "a kubectl change");
    // Into another tag, on the first: the first keeps its tag and content.
    let mut cmd = tree.run.command(&["build", "node-image", "-i", &other, "--from-node", &tree.run.target]);
    let root = tree.dir.path().to_str().unwrap();
    cmd.args(["-b", &support::base_image(), "--kube-root", root, "--build-mode", "host"])
        .args(["--component-base-image", &tree.component_base, "--image-archive"])
        .arg(&tree.images.path)
        .current_dir(tree.nowhere.path())
        .env("GOPATH", tree.nowhere.path());
    let out = output_within(&mut cmd, BUILD_LIMIT);
    assert_success(&out, "--from-node");
    assert!(String::from_utf8_lossy(&out.stderr).contains("incremental build on"));
    assert_eq!(inspect(&tree.run.target, "{{.Id}}"), first, "the image built on is untouched");
    assert_eq!(layers(&other).len(), layers(&tree.run.target).len() + 1);

    // Not a node image nodeimg recorded: refused, naming it; nothing made.
    let out = tree.build(&["--from-node", &support::base_image()]);
    let line = support::assert_one_error_line(&out, "--from-node");
    assert!(line.contains(&support::base_image()) && line.contains(LABEL_INPUTS), "{line}");
    assert_eq!(inspect(&tree.run.target, "{{.Id}}"), first, "the target tag stays");
    let out = tree.build(&["--from-node", "nodeimg-test/no-such-node:1"]);
    support::assert_one_error_line(&out, "no-such-node:1");
}
