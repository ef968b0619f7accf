//! Kubernetes release fixtures made on the spot: a `kubernetes-server-linux-amd64.tar.gz`
//! in upstream's layout with shell stand-ins for the binaries and real docker-save image
//! tars, a docker-save archive of busybox stand-ins for every other image a build needs
//! (given to nodeimg with `--image-archive`, never put in the host's Docker under those
//! names), busybox images under names of a test's own, and an HTTP server on 127.0.0.1 to
//! serve releases.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nodeimg::archive::image::{self as imagearchive, ImageConfig};
use nodeimg::docker::Docker;
use nodeimg::reference::normalize;
use sha2::{Digest, Sha256, Sha512};

use super::RemoveImage;

pub const VERSION: &str = "v1.30.0";

/// The images the stand-in kubeadm lists besides the control plane, and the manifests'
/// images, canonical: what a build from a fixture release needs besides the built images.
/// Real names: they reach nodeimg only through [`Release::images`] (or another archive or a
/// loopback registry), never through the host's Docker.
pub fn needed_images() -> Vec<String> {
    let kubeadm = [
        "registry.k8s.io/pause:3.9",
        "registry.k8s.io/etcd:3.5.12-0",
        "registry.k8s.io/coredns/coredns:v1.11.1",
    ];
    kubeadm.into_iter().chain(nodeimg::nodeimage::manifests::default_images()).map(normalize).collect()
}

/// How to deviate from a good release, for failure tests.
#[derive(Default, Clone)]
pub struct Options {
    /// Files of kubernetes/server/bin to leave out.
    pub omit: Vec<&'static str>,
    /// Content of kubernetes/version (None: the version; Some(None): no version file).
    pub version_file: Option<Option<String>>,
    /// Extra raw entries: (path, symlink target or None for a file).
    pub hostile: Vec<(String, Option<String>)>,
    /// The Kubernetes version of the release (default [`VERSION`]).
    pub version: Option<&'static str>,
    /// An image the stand-in kubeadm lists that nobody has.
    pub extra_kubeadm_image: Option<String>,
    /// The release's architecture (default amd64): the tarball's name, the built images'
    /// `-<arch>` names and every image config's `architecture`, [`Release::images`]' too.
    pub arch: Option<&'static str>,
    /// A real executable of that arch, copied as kubelet and kubectl (default: the shell
    /// stand-ins); kubeadm stays the stand-in, whose image list the build reads.
    pub binary: Option<PathBuf>,
}

pub struct Release {
    pub dir: tempfile::TempDir,
    pub tarball: PathBuf,
    /// A docker-save archive of busybox stand-ins for [`needed_images`], beside the tarball.
    pub images: PathBuf,
}

impl Release {
    /// `--image-archive <images>`: where a build from this release finds [`needed_images`].
    pub fn image_args(&self) -> [&str; 2] {
        ["--image-archive", self.images.to_str().unwrap()]
    }

    /// Serves the release over HTTP from a temp dir that `lay_out(tarball, root)` fills
    /// (e.g. [`release_tree`], [`ci_tree`]).
    pub fn serve(&self, lay_out: impl FnOnce(&Path, &Path)) -> HttpServer {
        let dir = tempfile::tempdir().unwrap();
        lay_out(&self.tarball, dir.path());
        let mut server = HttpServer::serve(dir.path());
        server._served = Some(dir);
        server
    }

    /// The tarball as the source, plus [`Release::image_args`].
    pub fn build_args(&self) -> [&str; 3] {
        let [flag, images] = self.image_args();
        [self.tarball.to_str().unwrap(), flag, images]
    }
}

pub fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/setup.sh)");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    root
}

/// A docker-save tar of a busybox image tagged `tag` (the built images' stand-in).
pub fn write_image_tar(layer: &imagearchive::Layer, tag: &str, dest: &Path) {
    write_tar(layer, &[tag.to_owned()], BTreeMap::new(), "amd64", dest);
}

/// A docker-save tar of one busybox image under every name of `tags`; labelled, so that its
/// ID and digest differ from those of the [`write_image_tar`] images.
pub fn write_images_tar(layer: &imagearchive::Layer, tags: &[String], dest: &Path) {
    write_images_tar_for(layer, tags, "amd64", dest);
}

/// [`write_images_tar`] whose config says `arch` (the layer stays amd64 busybox: a build
/// imports images, it never runs them).
pub fn write_images_tar_for(layer: &imagearchive::Layer, tags: &[String], arch: &str, dest: &Path) {
    let labels = BTreeMap::from([("io.nodeimg.test.stand-in".to_owned(), "true".to_owned())]);
    write_tar(layer, tags, labels, arch, dest);
}

fn write_tar(
    layer: &imagearchive::Layer,
    tags: &[String],
    labels: BTreeMap<String, String>,
    arch: &str,
    dest: &Path,
) {
    let config =
        ImageConfig { architecture: arch.into(), cmd: vec!["/bin/sh".into()], labels, ..Default::default() };
    let config_bytes = imagearchive::config_json(&config, &layer.diff_id, "2024-01-01T00:00:00Z");
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config_bytes)));
    let layer_name = format!("{}/layer.tar", layer.diff_id.trim_start_matches("sha256:"));
    let manifest = serde_json::json!([{ "Config": config_name, "RepoTags": tags, "Layers": [layer_name] }]);
    let mut tar = tar::Builder::new(std::fs::File::create(dest).unwrap());
    nodeimg::archive::append_bytes(&mut tar, &config_name, 0o644, &config_bytes).unwrap();
    tar.append_path_with_name(&layer.path, &layer_name).unwrap();
    nodeimg::archive::append_bytes(&mut tar, "manifest.json", 0o644, manifest.to_string().as_bytes())
        .unwrap();
    tar.finish().unwrap();
}

fn kubeadm_script(version: &str, extra: Option<&str>) -> String {
    let mut list = String::new();
    for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"] {
        list += &format!("registry.k8s.io/{c}:$2\n");
    }
    list +=
        "registry.k8s.io/pause:3.9\nregistry.k8s.io/etcd:3.5.12-0\nregistry.k8s.io/coredns/coredns:v1.11.1\n";
    if let Some(extra) = extra {
        list += &format!("{extra}\n");
    }
    format!(
        "#!/bin/sh\n# stand-in for kubeadm\ncase \"$1 $2 $3\" in\n  \"config images list\") shift 3; [ \"$1\" = --kubernetes-version ] || exit 2\n    cat <<EOF\n{list}EOF\n    ;;\n  version*) echo 'kubeadm version: &version.Info{{GitVersion:\"{version}\"}}' ;;\n  *) echo \"unsupported: $*\" >&2; exit 1 ;;\nesac\n"
    )
}

fn stand_in(name: &str, version: &str) -> String {
    format!("#!/bin/sh\n# stand-in for {name}\necho \"Kubernetes {version}\"\n")
}

fn add<W: Write>(tar: &mut tar::Builder<W>, path: &str, mode: u32, data: &[u8]) {
    nodeimg::archive::append_bytes(tar, path, mode, data).unwrap();
}

/// Writes a release tarball (gzip) in upstream's layout.
pub fn server_tarball(opts: &Options) -> Release {
    let version = opts.version.unwrap_or(VERSION);
    let arch = opts.arch.unwrap_or("amd64");
    let dir = tempfile::tempdir().unwrap();
    let root = busybox_root(dir.path());
    let layer = imagearchive::write_layer(&root, &dir.path().join("layer.tar")).unwrap();
    let tarball = dir.path().join(format!("kubernetes-server-linux-{arch}.tar.gz"));
    let gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&tarball).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    match &opts.version_file {
        None => add(&mut tar, "kubernetes/version", 0o644, format!("{version}\n").as_bytes()),
        Some(Some(text)) => add(&mut tar, "kubernetes/version", 0o644, text.as_bytes()),
        Some(None) => {}
    }
    let bins = [
        ("kubeadm", kubeadm_script(version, opts.extra_kubeadm_image.as_deref())),
        ("kubelet", stand_in("kubelet", version)),
        ("kubectl", stand_in("kubectl", version)),
    ];
    for (name, script) in bins {
        let content = match &opts.binary {
            Some(binary) if name != "kubeadm" => std::fs::read(binary).unwrap(),
            _ => script.into_bytes(),
        };
        if !opts.omit.contains(&name) {
            add(&mut tar, &format!("kubernetes/server/bin/{name}"), 0o755, &content);
        }
    }
    // An unneeded file the extractor must skip.
    add(&mut tar, "kubernetes/server/bin/mounter", 0o755, b"#!/bin/sh\n");
    for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"] {
        let image_tar = dir.path().join(format!("{c}.tar"));
        let tag = format!("registry.k8s.io/{c}-{arch}:{version}");
        write_tar(&layer, &[tag], BTreeMap::new(), arch, &image_tar);
        if !opts.omit.contains(&c) {
            tar.append_path_with_name(&image_tar, format!("kubernetes/server/bin/{c}.tar")).unwrap();
        }
        add(&mut tar, &format!("kubernetes/server/bin/{c}.docker_tag"), 0o644, version.as_bytes());
    }
    for (path, link) in &opts.hostile {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        match link {
            Some(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                header.set_size(0);
            }
            None => header.set_size(4),
        }
        header.set_cksum();
        tar.append(&header, &b"evil"[..if link.is_some() { 0 } else { 4 }]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    let images = dir.path().join("images.tar");
    write_images_tar_for(&layer, &needed_images(), arch, &images);
    Release { dir, tarball, images }
}

/// A docker-save archive of busybox stand-ins under `names`, in a temp dir of its own.
pub struct ImageArchive {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ImageArchive {
    pub fn new(names: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layer =
            imagearchive::write_layer(&busybox_root(dir.path()), &dir.path().join("layer.tar")).unwrap();
        let path = dir.path().join("images.tar");
        write_images_tar(&layer, names, &path);
        ImageArchive { _dir: dir, path }
    }

    /// An archive the caller writes at `path`, inside `dir`, which goes with it.
    pub fn at(path: PathBuf, dir: tempfile::TempDir) -> Self {
        ImageArchive { _dir: dir, path }
    }
}

/// Copies the tar `from` to `to` entry by entry, streaming, leaving out the entries named in
/// `skip` and rewriting the JSON file `json` with `edit`.
pub fn copy_tar(
    from: &Path,
    to: &Path,
    skip: &[&str],
    json: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let mut edit = Some(edit);
    let mut input = tar::Archive::new(std::fs::File::open(from).unwrap());
    let mut output = tar::Builder::new(std::fs::File::create(to).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        if skip.iter().any(|s| path == Path::new(s)) {
            continue;
        }
        if path == Path::new(json) {
            let mut value: serde_json::Value = serde_json::from_reader(&mut entry).unwrap();
            edit.take().expect("one such entry")(&mut value);
            let bytes = serde_json::to_vec(&value).unwrap();
            nodeimg::archive::append_bytes(&mut output, json, 0o644, &bytes).unwrap();
        } else {
            let header = entry.header().clone();
            output.append(&header, &mut entry).unwrap();
        }
    }
    output.finish().unwrap();
}

/// An image the test made in the host's Docker, under a name of its own: the name is
/// removed when dropped, also when an assertion failed first.
pub struct TestImage {
    pub name: String,
    pub id: String,
    _remove: RemoveImage,
}

impl TestImage {
    /// Takes over the removal of `name`, which the test tagged on image `id`.
    pub fn new(name: &str, id: &str) -> Self {
        TestImage { name: name.to_owned(), id: id.to_owned(), _remove: RemoveImage(name.to_owned()) }
    }
}

/// Imports the tree at `root` as a one-layer image with Dockerfile-style `changes`, tagged
/// `name` (a name of the test's own, never a real image's).
pub async fn rootfs_image(docker: &Docker, name: &str, root: &Path, changes: Vec<String>) -> TestImage {
    let root = root.to_owned();
    let stream = nodeimg::archive::tar_stream(move |t| nodeimg::archive::append_rootfs(t, &root));
    let id = docker.import_rootfs(stream, changes).await.unwrap();
    let image = TestImage::new(name, &id);
    docker.tag_image(&id, name).await.unwrap();
    image
}

/// A tiny busybox image (`CMD ["/bin/sh"]`) tagged `name`, a name of the test's own.
pub async fn busybox_image(docker: &Docker, name: &str) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let root = busybox_root(dir.path());
    rootfs_image(docker, name, &root, vec![r#"CMD ["/bin/sh"]"#.into()]).await
}

/// `python3 -m http.server` on a free 127.0.0.1 port, serving `dir`; stopped on drop.
pub struct HttpServer {
    child: Child,
    pub url: String,
    /// What it serves, when the server owns it.
    _served: Option<tempfile::TempDir>,
}

impl HttpServer {
    pub fn serve(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, url: format!("http://127.0.0.1:{port}"), _served: None }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        super::stop(&mut self.child);
    }
}

/// Lays a tarball out as `<root>/<version>/kubernetes-server-linux-amd64.tar.gz` with a
/// `.sha512` beside it (or a wrong one).
pub fn release_tree(tarball: &Path, root: &Path, good_checksum: bool) {
    release_tree_at(tarball, &root.join(VERSION), good_checksum);
}

/// The CI layout: `<root>/ci/latest.txt` naming the version, the tarball under `ci/<version>/`.
pub fn ci_tree(tarball: &Path, root: &Path) {
    std::fs::create_dir_all(root.join("ci")).unwrap();
    std::fs::write(root.join("ci/latest.txt"), format!("{VERSION}\n")).unwrap();
    release_tree_at(tarball, &root.join("ci").join(VERSION), true);
}

fn release_tree_at(tarball: &Path, dir: &Path, good_checksum: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let dest = dir.join("kubernetes-server-linux-amd64.tar.gz");
    std::fs::copy(tarball, &dest).unwrap();
    let mut sum = hex::encode(Sha512::digest(std::fs::read(&dest).unwrap()));
    if !good_checksum {
        let flipped = if sum.starts_with('0') { "1" } else { "0" };
        sum.replace_range(..1, flipped);
    }
    std::fs::write(
        dir.join("kubernetes-server-linux-amd64.tar.gz.sha512"),
        format!("{sum}  kubernetes-server-linux-amd64.tar.gz\n"),
    )
    .unwrap();
}

/// A small image made here from busybox (`nodeimg-test/busybox:<unique>`), saved by the
/// daemon and imported into the node `node_id`'s containerd (`k8s.io`) through exec stdin, as
/// the node-image pipeline does; the host's copy is removed again. Returns the name
/// containerd holds it under.
pub async fn busybox_into_node(docker: &Docker, node_id: &str, unique: &str) -> String {
    let tag = format!("nodeimg-test/busybox:{unique}");
    let image = busybox_image(docker, &tag).await;
    let saved = tokio_util::io::StreamReader::new(docker.save_image(&tag));
    let import = docker
        .exec_with_stdin(node_id, &["ctr", "-n", "k8s.io", "images", "import", "-"], saved)
        .await
        .unwrap();
    drop(image);
    assert!(import.success(), "ctr import failed: {import:?}");
    format!("docker.io/{tag}")
}
