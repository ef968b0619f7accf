//! nodeimg through Podman's Docker-compatible API (`DOCKER_HOST=unix:///…/podman.sock`):
//! a rootful `podman system service` of the test's own, on a socket in a temp dir, with an
//! isolated store (`--root`, `--runroot`, `--tmpdir`, `--network-config-dir`), so the host's
//! Podman store and CNI configs are never touched and the store goes with the temp dir.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodeimg::docker::Docker;
use support::fixtures::{self, Options, VERSION};
use support::{BUILD_LIMIT, COMMAND_LIMIT, Run, assert_one_error_line, assert_success, output_within};

/// How long the service gets to answer on its socket.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A rootful Podman API service with a store of its own; on drop (also after a failed
/// assertion) its containers are removed, the service stopped, the store unmounted and
/// deleted.
struct Podman {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    /// `unix:///…/podman.sock`, for `DOCKER_HOST`.
    host: String,
}

impl Podman {
    fn start() -> Self {
        Self::start_with(true)
    }

    /// `host_limits`: configure the containers' rlimits to what the host grants (else
    /// Podman's defaults, which a host without CAP_SYS_RESOURCE refuses).
    fn start_with(host_limits: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("nodeimg-podman-").tempdir().unwrap();
        // Podman raises RLIMIT_NOFILE/NPROC of every container to 1048576/4194304; a host
        // without CAP_SYS_RESOURCE (this sandbox) refuses that ("error setting rlimit"). The
        // limits of this process are what the host grants (Podman lowers its own RLIMIT_NPROC
        // to the kernel's pid_max, so no more than that).
        let pid_max: u64 =
            std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        let conf = dir.path().join("containers.conf");
        let limits = format!(
            "[containers]\ndefault_ulimits = [\"nofile={0}:{0}\", \"nproc={1}:{1}\"]\n",
            hard_limit(libc::RLIMIT_NOFILE),
            hard_limit(libc::RLIMIT_NPROC).min(pid_max)
        );
        std::fs::write(&conf, if host_limits { limits } else { String::new() }).unwrap();
        let socket = dir.path().join("podman.sock");
        let host = format!("unix://{}", socket.display());
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let child = podman_cli(dir.path())
            .args(["system", "service", "--time=0", &host])
            .env("CONTAINERS_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("podman is installed (scripts/setup.sh)");
        let podman = Podman { child: Some(child), dir: Some(dir), host };
        let start = Instant::now();
        while !ping(&socket) {
            assert!(
                start.elapsed() < START_LIMIT,
                "podman system service did not answer within {START_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        podman
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// `podman --root … ARGS` on this service's store, within [`COMMAND_LIMIT`]; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let out = output_within(podman_cli(self.dir()).args(args), COMMAND_LIMIT);
        assert_success(&out, &format!("podman {}", args.join(" ")));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `nodeimg ARGS` of `run`, through this service.
    fn nodeimg(&self, run: &Run, args: &[&str]) -> Command {
        let mut cmd = run.command(args);
        cmd.env("DOCKER_HOST", &self.host);
        cmd
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // Containers outlive the service (conmon holds them): remove them first, bounded.
        let mut rm = podman_cli(dir.path());
        rm.args(["rm", "--all", "--force", "--time", "0"]).stdout(Stdio::null()).stderr(Stdio::null());
        if let Ok(child) = rm.spawn() {
            bounded(child, COMMAND_LIMIT);
        }
        if let Some(mut child) = self.child.take() {
            support::stop(&mut child);
        }
        // The overlay driver mounts its home (and layers) under the store: unmount, deepest
        // first, before deleting.
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| Path::new(m).starts_with(dir.path()))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            Command::new("umount").args(["-l", &m]).status().ok();
        }
        dir.close().ok();
    }
}

fn podman_cli(dir: &Path) -> Command {
    let mut cmd = Command::new("podman");
    let flag = |name: &str| dir.join(name).display().to_string();
    cmd.args(["--root", &flag("root"), "--runroot", &flag("run"), "--tmpdir", &flag("tmp")]).args([
        "--network-config-dir",
        &flag("cni"),
        "--cgroup-manager",
        "cgroupfs",
    ]);
    cmd
}

fn bounded(child: Child, limit: Duration) {
    let mut child = child;
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    support::stop(&mut child);
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    limit.rlim_max.min(1 << 20)
}

/// A `GET /_ping` answered with 200 on `socket`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    if stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n").is_err() {
        return false;
    }
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).is_ok() && status.contains(" 200")
}

/// The tests' Docker-built base image, carried into Podman with `nodeimg save` and `load`:
/// building one through Podman (`build base-image`, debootstrap) costs minutes and a Debian
/// mirror; the shared one is usually built already, and the carry exercises save and load.
fn base_into(podman: &Podman, run: &Run) -> String {
    let base = support::base_image();
    let archive = run.files.path().join("base.tar");
    let out = run.output(&["save", &base, "-o", archive.to_str().unwrap()]);
    assert_success(&out, "nodeimg save (base image, from Docker)");
    let out =
        output_within(&mut podman.nodeimg(run, &["load", "-i", archive.to_str().unwrap()]), BUILD_LIMIT);
    assert_success(&out, "nodeimg load (base image, into Podman)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The checksum pass comes first; the engine line is the first once Podman is asked.
    let engine = stderr.lines().find(|l| l.contains("engine: ")).unwrap_or_default();
    assert!(
        engine.contains("engine: Podman 4.") && engine.ends_with(&format!("at {}", podman.host)),
        "a line names the engine: {stderr}"
    );
    std::fs::remove_file(&archive).unwrap();
    base
}

#[test]
fn node_image_through_podman_round_trips_into_docker() {
    let podman = Podman::start();
    let run = Run::new("podman");
    let release = fixtures::server_tarball(&Options::default());
    let base = base_into(&podman, &run);

    // images list and images save: the plan and the bundle, through Podman.
    let [tarball, flag, archive] = release.build_args();
    let list = ["images", "list", tarball, "-b", &base, flag, archive];
    let out = output_within(&mut podman.nodeimg(&run, &list), BUILD_LIMIT);
    assert_success(&out, "images list through Podman");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 4 + fixtures::needed_images().len(), "{listed}");
    assert!(listed.contains(&format!("registry.k8s.io/kube-apiserver:{VERSION}\tbuilt")), "{listed}");
    let bundle = run.files.path().join("bundle.tar");
    let save = ["images", "save", tarball, "-b", &base, flag, archive, "-o", bundle.to_str().unwrap()];
    let out = output_within(&mut podman.nodeimg(&run, &save), BUILD_LIMIT);
    assert_success(&out, "images save through Podman");
    assert!(std::fs::metadata(&bundle).unwrap().len() > 0);
    std::fs::remove_file(&bundle).unwrap();
    run.assert_clean();

    let start = Instant::now();
    let mut build = podman.nodeimg(&run, &["build", "node-image", "-i", &run.target, "-b", &base]);
    let out = output_within(build.args(release.build_args()), BUILD_LIMIT);
    assert_success(&out, "build node-image through Podman");
    let through_podman = start.elapsed();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), run.target);
    run.assert_clean();
    // The same build through Docker, for comparison (a name of its own, removed on drop).
    let in_docker = fixtures::TestImage::new(&format!("{}-docker", run.target), "");
    let start = Instant::now();
    let mut build = run.command(&["build", "node-image", "-i", &in_docker.name, "-b", &base]);
    assert_success(
        &output_within(build.args(release.build_args()), BUILD_LIMIT),
        "the same build through Docker",
    );
    eprintln!("build node-image: through Podman {through_podman:?}, through Docker {:?}", start.elapsed());
    drop(in_docker);

    // In Podman's store (qualified the Podman way), with every image pinned inside.
    let listed = podman.cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let (repo, tag) = run.target.split_once(':').unwrap();
    assert!(listed.lines().any(|l| l.ends_with(&format!("/{repo}:{tag}"))), "{listed}");
    let (info, images) = support::block_on(async {
        let docker = Docker::connect_to(&podman.host, support::labels(&run.run_id)).await.unwrap();
        assert!(docker.engine().is_podman());
        let info = docker.inspect_image(&run.target).await.unwrap().expect("the node image is in Podman");
        (info, pinned_images(&docker, &run.target).await)
    });
    assert_eq!(info.labels.get("io.nodeimg.kubernetes.version").map(String::as_str), Some(VERSION));
    assert_eq!(info.entrypoint, vec!["/usr/local/bin/entrypoint", "/sbin/init"]);
    assert_all_pinned(&images);

    // Saved from Podman, loaded into Docker: the same image under the same name.
    let archive = run.files.path().join("node.tar.zst");
    let out = output_within(
        &mut podman.nodeimg(&run, &["save", &run.target, "-o", archive.to_str().unwrap()]),
        BUILD_LIMIT,
    );
    assert_success(&out, "nodeimg save through Podman");
    let out = run.output(&["load", "-i", archive.to_str().unwrap()]);
    assert_success(&out, "nodeimg load into Docker");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        run.target,
        "loaded under the name it was built with"
    );
    let (in_docker, images) = support::block_on(async {
        let docker = support::docker(&run.run_id).await;
        let info = docker.inspect_image(&run.target).await.unwrap().expect("the node image is in Docker");
        (info, pinned_images(&docker, &run.target).await)
    });
    assert_eq!(in_docker.id, info.id, "same image config, same ID");
    assert_eq!(in_docker.labels, info.labels);
    assert_eq!(in_docker.entrypoint, info.entrypoint);
    assert_all_pinned(&images);

    // verify as kind runs clusters on Podman: nodes boot (systemd, kind's boot line), then
    // the fixture's kubeadm refuses `init`; the kept cluster is Podman's, and clean removes it.
    let mut verify =
        podman.nodeimg(&run, &["verify", &run.target, "--nodes", "2", "--keep", "--timeout", "60s"]);
    let out = output_within(&mut verify, BUILD_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.contains("kubeadm init") && last.contains("unsupported: init"), "{stderr}");
    let kept = stderr.lines().find(|l| l.contains("kept cluster ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(kept.contains("`podman exec ") && kept.contains("`nodeimg clean`"), "Podman's CLI: {kept}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.lines().any(|l| l.contains("boot") && l.ends_with("ok")),
        "nodes booted:\n{report}\n{stderr}"
    );
    let running = podman.cli(&[
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=io.nodeimg.build={}", run.run_id),
    ]);
    assert_eq!(running.lines().count(), 2, "two nodes kept:\n{running}");
    for node in running.lines() {
        // kind's /var on Podman: a named volume mounted suid,dev (containerd unpacks there).
        let var = podman.cli(&["exec", node, "sh", "-c", "grep ' /var ' /proc/self/mountinfo"]);
        assert!(!var.contains("nosuid") && !var.contains("nodev") && var.contains("nodeimg-vol-"), "{var}");
    }
    let out = output_within(&mut podman.nodeimg(&run, &["clean"]), COMMAND_LIMIT);
    assert_success(&out, "nodeimg clean through Podman");
    let removed = String::from_utf8_lossy(&out.stdout);
    for node in running.lines() {
        assert!(removed.contains(node), "{node} removed:\n{removed}");
    }
    let left = podman.cli(&["ps", "--all", "--quiet"]);
    assert_eq!(left.trim(), "", "no container left in Podman");
    let networks = podman.cli(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(networks.trim(), "podman", "only Podman's own network left");
    assert_eq!(podman.cli(&["volume", "ls", "--quiet"]).trim(), "", "the nodes' volumes went with them");
}

/// `ctr images ls` in a throwaway node container of `image`.
async fn pinned_images(docker: &Docker, image: &str) -> String {
    let id = support::with_containerd(docker, image).await;
    let images = docker.exec(&id, &["ctr", "-n", "k8s.io", "images", "ls"]).await.unwrap().stdout;
    // Exit codes come through as they are (nodeimg judges every step by them).
    let failed = docker.exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"]).await.unwrap();
    assert_eq!((failed.code, failed.stdout.as_str(), failed.stderr.as_str()), (3, "out\n", "err\n"));
    docker.remove_container(&id).await.unwrap();
    images
}

fn assert_all_pinned(images: &str) {
    let built = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
        .map(|c| format!("registry.k8s.io/{c}:{VERSION}"));
    for name in built.into_iter().chain(fixtures::needed_images()) {
        assert!(
            images
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("io.cri-containerd.pinned=pinned")),
            "{name} missing or unpinned:\n{images}"
        );
    }
}

#[test]
fn base_image_through_podman() {
    let podman = Podman::start();
    let run = Run::new("podman-base");
    let name = format!("nodeimg-test/base-podman:{}", run.unique);
    let start = Instant::now();
    let out = output_within(&mut podman.nodeimg(&run, &["build", "base-image", "-i", &name]), BUILD_LIMIT);
    assert_success(&out, "build base-image through Podman");
    eprintln!("base image through Podman: {:?}", start.elapsed());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    let config = podman.cli(&[
        "image",
        "inspect",
        &name,
        "--format",
        "{{json .Config.Entrypoint}} {{.Config.StopSignal}}",
    ]);
    assert_eq!(config.trim(), r#"["/usr/local/bin/entrypoint","/sbin/init"] SIGRTMIN+3"#);
    // Found again by its name: a second build is a cache hit.
    let out = output_within(&mut podman.nodeimg(&run, &["build", "base-image", "-i", &name]), COMMAND_LIMIT);
    assert_success(&out, "build base-image through Podman, again");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("debootstrap"), "cached");
    run.assert_clean();
}

#[test]
fn a_missing_socket_is_one_error_line() {
    let run = Run::new("podman-gone");
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}", dir.path().join("podman.sock").display());
    let mut cmd = run.command(&["images", "list", VERSION]);
    let out = output_within(cmd.env("DOCKER_HOST", &host), COMMAND_LIMIT);
    let line = assert_one_error_line(&out, &host);
    assert!(line.contains("cannot reach"), "{line}");
}

#[test]
fn an_engine_with_an_old_api_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("old.sock");
    let _server = OldPodman::serve(&socket);
    let run = Run::new("podman-old");
    let host = format!("unix://{}", socket.display());
    let mut cmd = run.command(&["clean"]);
    let out = output_within(cmd.env("DOCKER_HOST", &host), COMMAND_LIMIT);
    let line = assert_one_error_line(&out, &host);
    assert!(line.contains("Podman 3.4.4 (API 1.40)") && line.contains("needs Engine API 1.41"), "{line}");
}

/// Where the host withholds CAP_SYS_RESOURCE (this sandbox), Podman's default rlimits cannot
/// be applied: one line naming the step and the fix, not the runtime's words. Elsewhere
/// there is nothing to refuse, and the test says so.
#[test]
fn podmans_default_limits_refused_is_one_error_line() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    // Bit 24: CAP_SYS_RESOURCE.
    if u64::from_str_radix(caps, 16).unwrap() & (1 << 24) != 0 {
        eprintln!("skipped: this host grants CAP_SYS_RESOURCE, so Podman's default limits apply");
        return;
    }
    let podman = Podman::start_with(false);
    let run = Run::new("podman-limits");
    let release = fixtures::server_tarball(&Options::default());
    let base = base_into(&podman, &run);
    let mut build = podman.nodeimg(&run, &["build", "node-image", "-i", &run.target, "-b", &base]);
    let out = output_within(build.args(release.build_args()), BUILD_LIMIT);
    let line = assert_one_error_line(&out, "creating the build container");
    assert!(line.contains("Podman cannot raise") && line.contains("default_ulimits"), "{line}");
    assert!(!line.contains("OCI"), "not the runtime's words: {line}");
    assert_eq!(podman.cli(&["ps", "--all", "--quiet"]).trim(), "", "no container left");
    assert_eq!(podman.cli(&["volume", "ls", "--quiet"]).trim(), "", "no volume left");
}

/// A Podman 3 stand-in: answers every request with its `/version` (API 1.40), one request
/// per connection, until dropped.
struct OldPodman {
    socket: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OldPodman {
    fn serve(socket: &Path) -> Self {
        let listener = UnixListener::bind(socket).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let body = r#"{"Version":"3.4.4","ApiVersion":"1.40","MinAPIVersion":"1.24","Components":[{"Name":"Podman Engine","Version":"3.4.4","Details":{"APIVersion":"3.4.4"}}]}"#;
            for stream in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.40\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).ok();
            }
        });
        OldPodman { socket: socket.to_owned(), stop, thread: Some(thread) }
    }
}

impl Drop for OldPodman {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        std::os::unix::net::UnixStream::connect(&self.socket).ok();
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}
