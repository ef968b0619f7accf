//! Shared fixtures for the end-to-end tests: the real nodeimg binary, the real Docker daemon,
//! and one base image shared by every test run (rebuilt only when base-image/ changes).
//!
//! Hygiene: a test never leaves an image under a name a real build would use (nodeimg takes
//! images from the host's Docker): fixture images reach nodeimg through archives
//! ([`fixtures::Release::images`]) or a loopback registry, and images a test makes in the
//! host's Docker have unique `nodeimg-test/...` names and are removed by guards
//! ([`RemoveImage`], [`fixtures::TestImage`], [`Run`]), also when an assertion fails.
#![allow(dead_code)]

pub mod arches;
pub mod engine;
pub mod fake_registry;
pub mod fixtures;
pub mod kubetree;
pub mod podman;
mod process;
pub mod registry;
mod run;
pub mod tls;

use sha2::Digest;
use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nodeimg::docker::{Docker, Labels};

#[allow(unused_imports)] // not every test binary uses every helper
pub use process::{BUILD_LIMIT, COMMAND_LIMIT, output_within, stop, wait_within};
#[allow(unused_imports)]
pub use run::Run;

/// How long a guard's cleanup may take when it runs on drop.
const DROP_LIMIT: Duration = Duration::from_secs(120);

pub fn nodeimg() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeimg"));
    // Cargo sets OUT_DIR for tests; Kubernetes' Makefile would take it as its output dir.
    cmd.env_remove("NODEIMG_RUN_ID").env_remove("OUT_DIR");
    cmd
}

/// A run id unique to one test, so assertions about "no container left" see only its own:
/// `test-<test>-<pid>-<hex>`, the last part unique on its own.
pub fn run_id(test: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let unique = (nanos as u64).wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed));
    format!("test-{test}-{}-{unique:x}", std::process::id())
}

pub fn labels(run_id: &str) -> Labels {
    Labels { run_id: run_id.to_owned(), ..Labels::for_this_process() }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

pub async fn docker(run_id: &str) -> Docker {
    Docker::connect(labels(run_id)).await.expect("the Docker daemon answers")
}

/// Runs `future` on a runtime of its own, on a thread of its own, so plain and async code
/// alike can call it (a `block_on` inside a runtime would panic); its panics go on.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| runtime().block_on(future)).join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// For guards: runs `future` on its own runtime for at most [`DROP_LIMIT`], ignoring
/// failures (a panic in a drop during unwinding would abort the test binary).
fn quietly<F: Future<Output = ()> + Send>(future: F) {
    std::thread::scope(|s| {
        // The timeout is made inside the runtime: its timer needs one.
        s.spawn(|| runtime().block_on(async { tokio::time::timeout(DROP_LIMIT, future).await })).join().ok();
    });
}

/// Removes every container of the run (kept ones too) when dropped, also when an assertion
/// failed first.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run_id = &self.0;
        quietly(async {
            let Ok(docker) = Docker::connect(labels(run_id)).await else { return };
            for c in docker.list_containers(Some(run_id)).await.unwrap_or_default() {
                if let Some(root) = &c.host_cgroups {
                    nodeimg::node::release_host_cgroups(&docker, &c.id, root).await.ok();
                }
                docker.remove_container(&c.id).await.ok();
            }
            for n in docker.list_networks(Some(run_id)).await.unwrap_or_default() {
                docker.remove_network(&n.id).await.ok();
            }
        });
    }
}

/// A container the test created with the docker CLI (by name or ID), with its anonymous
/// volumes; removed on drop, also when an assertion failed first.
pub struct RemoveContainer(pub String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["120", "docker", "rm", "-f", "-v", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Removes the image `name` when dropped, also when an assertion failed first. Only for
/// names the test made itself: another image sharing the ID keeps its own names.
pub struct RemoveImage(pub String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let name = &self.0;
        quietly(async {
            if let Ok(docker) = Docker::connect(labels("cleanup")).await {
                docker.remove_image(name).await.ok();
            }
        });
    }
}

/// The base image built by `nodeimg build base-image` (debootstrap), built at most once
/// across test binaries and runs: the default tag is a hash of base-image/, so an unchanged
/// folder is a cache hit. A file lock keeps parallel test binaries from building it twice.
pub fn base_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_base(&[])).clone()
}

/// The containerd 2 line's base (`build base-image --runtime 2`), under its default name.
pub fn base_image_runtime_2() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_base(&["--runtime", "2"])).clone()
}

/// [`base_image`] with a stand-in crictl (busybox-static, an ELF executable) installed by
/// `--crictl`: for checks that crictl and its config are where kind looks. Not for booting a
/// control plane (kubeadm's preflight would run the stand-in).
pub fn base_image_with_crictl() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let data = std::fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh installs it)");
            let sha: String = sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
            build_base(&["--crictl", "/bin/busybox", "--crictl-sha256", &sha])
        })
        .clone()
}

/// The arm64 base (`build base-image --arch arm64`), under its default name, cached like
/// [`base_image`]. Its packages install under qemu (scripts/setup.sh registers it), several
/// times slower than natively: the first build has [`EMULATED_BUILD_LIMIT`].
pub fn base_image_arm64() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_base_within(&["--arch", "arm64"], EMULATED_BUILD_LIMIT)).clone()
}

pub const EMULATED_BUILD_LIMIT: Duration = Duration::from_secs(40 * 60);

pub fn build_base(args: &[&str]) -> String {
    build_base_within(args, BUILD_LIMIT)
}

fn build_base_within(args: &[&str], limit: Duration) -> String {
    let lock = File::create(std::env::temp_dir().join("nodeimg-test-base-image.lock")).unwrap();
    let start = Instant::now();
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let waited = start.elapsed();
        assert!(waited < limit * 2, "the base image lock is still held after {waited:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = output_within(nodeimg().args(["build", "base-image"]).args(args), limit);
    assert_success(&out, &format!("nodeimg build base-image {}", args.join(" ")));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A failure as the user sees it: exit 1, nothing on stdout, exactly one `error:` line on
/// stderr, the last line, naming `needle`. Returns that line.
pub fn assert_one_error_line(out: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status {}:\n{stderr}", out.status);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "the error is the last line:\n{stderr}");
    assert!(errors[0].contains(needle), "the error names {needle:?}: {}", errors[0]);
    assert!(out.stdout.is_empty(), "no result on stdout: {}", String::from_utf8_lossy(&out.stdout));
    errors[0].to_owned()
}

/// `docker ARGS` (the CLI) within [`COMMAND_LIMIT`], which must succeed; its stdout.
pub fn docker_cli(args: &[&str]) -> String {
    let out = output_within(Command::new("docker").args(args), COMMAND_LIMIT);
    assert_success(&out, &format!("docker {}", args.join(" ")));
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `check` until it returns Some, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A throwaway container of `image` (a node image) with containerd started in it, for
/// reading what the node's containerd holds; the caller removes it.
pub async fn with_containerd(docker: &Docker, image: &str) -> String {
    let id = docker.create_container(&nodeimg::docker::ContainerSpec::idle(image)).await.unwrap();
    docker.start_container(&id).await.unwrap();
    docker.exec(&id, &["sh", "-c", "containerd >/dev/null 2>&1 &"]).await.unwrap();
    wait_for("containerd in the node", Duration::from_secs(30), || async {
        docker.exec(&id, &["ctr", "version"]).await.ok().filter(|o| o.success())
    })
    .await;
    id
}

/// A `GET /_ping` answered with 200 on `socket`.
pub fn ping(socket: &std::path::Path) -> bool {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok();
    if std::io::Write::write_all(&mut stream, b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n").is_err() {
        return false;
    }
    let mut status = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut status).is_ok()
        && status.contains(" 200")
}
