//! Shared fixtures for the end-to-end tests: the real nodeimg binary, the real Docker daemon,
//! and one base image shared by every test run (rebuilt only when base-image/ changes).
#![allow(dead_code)]

pub mod fixtures;
pub mod kubetree;
pub mod registry;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nodeimg::docker::{Docker, Labels};

pub fn nodeimg() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeimg"));
    // Cargo sets OUT_DIR for tests; Kubernetes' Makefile would take it as its output dir.
    cmd.env_remove("NODEIMG_RUN_ID").env_remove("OUT_DIR");
    cmd
}

/// A run id unique to one test, so assertions about "no container left" see only its own.
pub fn run_id(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("test-{test}-{}-{:x}", std::process::id(), nanos as u64)
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

/// Removes the test's containers when dropped, also when an assertion failed first.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run_id = self.0.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let docker = docker(&run_id).await;
                docker.remove_run_containers().await.ok();
            })
        })
        .join()
        .ok();
    }
}

/// The base image built by `nodeimg build base-image` (debootstrap), built at most once
/// across test binaries and runs: the default tag is a hash of base-image/, so an unchanged
/// folder is a cache hit. A file lock keeps parallel test binaries from building it twice.
pub fn base_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let lock = File::create(std::env::temp_dir().join("nodeimg-test-base-image.lock")).unwrap();
            // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
            assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
            let out = nodeimg().args(["build", "base-image"]).output().unwrap();
            assert_success(&out, "nodeimg build base-image");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .clone()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
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
