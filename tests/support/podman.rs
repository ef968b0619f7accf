//! A Podman API service of a test's own (`podman system service` on a socket in a temp
//! dir, with an isolated store: `--root`, `--runroot`, `--tmpdir`, `--network-config-dir`),
//! so the host's Podman store and CNI configs are never touched and the store goes with the
//! temp dir; and a stand-in for a Podman too old for nodeimg.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{COMMAND_LIMIT, Run, assert_success, output_within};

/// How long the service gets to answer on its socket.
/// Generous: on 2 cores busy with parallel builds, the service was seen to miss 30 s.
const START_LIMIT: Duration = Duration::from_secs(90);

/// A rootful Podman API service with a store of its own; on drop (also after a failed
/// assertion) its containers are removed, the service stopped, the store unmounted and
/// deleted.
pub struct Podman {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    /// `unix:///…/podman.sock`, for `DOCKER_HOST`.
    pub host: String,
}

impl Podman {
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// `host_limits`: configure the containers' rlimits to what the host grants (else
    /// Podman's defaults, which a host without CAP_SYS_RESOURCE refuses).
    pub fn start_with(host_limits: bool) -> Self {
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
        // From here the drop removes what the service leaves on the host.
        HostTraces::enter();
        let podman = Podman { child: Some(child), dir: Some(dir), host };
        let start = Instant::now();
        while !super::ping(&socket) {
            assert!(
                start.elapsed() < START_LIMIT,
                "podman system service did not answer within {START_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        podman
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// `podman --root … ARGS` on this service's store, within [`COMMAND_LIMIT`]; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = output_within(podman_cli(self.dir()).args(args), COMMAND_LIMIT);
        assert_success(&out, &format!("podman {}", args.join(" ")));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `nodeimg ARGS` of `run`, through this service.
    pub fn nodeimg(&self, run: &Run, args: &[&str]) -> Command {
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
            super::stop(&mut child);
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
        HostTraces::leave();
    }
}

/// What Podman writes outside the flags' dirs whatever they say: containers/image's blob
/// info cache (root's is always /var/lib/containers/cache) and CNI's lock in /etc/cni/net.d.
/// Those that were not there when the first service of this process started are removed
/// when the last one stops (services of parallel tests share them).
const HOST_TRACES: [&str; 2] = ["/var/lib/containers", "/etc/cni/net.d/cni.lock"];

struct HostTraces;

static TRACES: std::sync::Mutex<(usize, Vec<&str>)> = std::sync::Mutex::new((0, Vec::new()));

impl HostTraces {
    fn enter() {
        let mut traces = TRACES.lock().unwrap_or_else(|p| p.into_inner());
        if traces.0 == 0 {
            traces.1 = HOST_TRACES.into_iter().filter(|p| !Path::new(p).exists()).collect();
        }
        traces.0 += 1;
    }

    fn leave() {
        let mut traces = TRACES.lock().unwrap_or_else(|p| p.into_inner());
        traces.0 -= 1;
        if traces.0 == 0 {
            for path in traces.1.drain(..) {
                std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path)).ok();
            }
        }
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
    super::stop(&mut child);
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    limit.rlim_max.min(1 << 20)
}

/// A Podman 3 stand-in: answers every request with its `/version` (API 1.40), one request
/// per connection, until dropped.
pub struct OldPodman {
    socket: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OldPodman {
    pub fn serve(socket: &Path) -> Self {
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
