//! A second Docker daemon of a test's own, standing in for a remote build machine (tests of
//! `--engine ARCH=DOCKER_HOST`): `dockerd` with its own socket, data root, exec root and
//! pidfile in a fresh dir under /var/tmp (overlay2 works there; the data root must not be on
//! a tmpfs), an empty config file (the host's /etc/docker/daemon.json names the main
//! daemon's data root), a bridge of its own and no iptables or masquerading rules (the
//! host's network is otherwise untouched: containers there reach nothing beyond it). Not
//! `--bridge none`: a daemon started so deletes the host's `docker0`, which the main daemon's
//! containers hang on. It starts its own containerd under its
//! exec root. On drop (also after a failed assertion) its containers are removed, the daemon
//! and every process under its dirs stopped, what it mounted there unmounted and the dir
//! deleted. The main daemon is never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodeimg::docker::Docker;

use super::{COMMAND_LIMIT, assert_success, output_within};

/// How long the daemon gets to answer on its socket (it takes about 5 s).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the daemon gets to stop after SIGTERM (it stops its containers and containerd).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Where the daemon's dir goes: a disk filesystem on which overlay2 works (not /tmp, which
/// may be a tmpfs).
const PARENT: &str = "/var/tmp";

pub struct SecondEngine {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    /// The bridge interface made for it, deleted on drop.
    bridge: String,
    /// `unix:///…/docker.sock`, for `DOCKER_HOST` and `--engine ARCH=HOST`.
    pub host: String,
}

impl SecondEngine {
    /// Starts the daemon and waits until it answers `/_ping`; panics with its log's tail if
    /// it does not within [`START_LIMIT`] (or exits first).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("nodeimg-engine-").tempdir_in(PARENT).unwrap();
        let path = dir.path();
        let config = path.join("daemon.json");
        std::fs::write(&config, "{}\n").unwrap();
        let socket = path.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let log = std::fs::File::create(path.join("dockerd.log")).unwrap();
        let bridge = make_bridge(path);
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config)
            .args(["--host", &host])
            .arg("--data-root")
            .arg(path.join("data"))
            .arg("--exec-root")
            .arg(path.join("exec"))
            .arg("--pidfile")
            .arg(path.join("dockerd.pid"))
            .args(["--storage-driver", "overlay2"])
            .args(["--bridge", &bridge, "--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(["--shutdown-timeout", "5"])
            // Its own containerd, not the host's (`--containerd` unset), and no environment of
            // the main daemon's.
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd is installed");
        // From here the drop stops the daemon and removes what it left.
        let mut engine = SecondEngine { child: Some(child), dir: Some(dir), bridge, host };
        let start = Instant::now();
        while !super::ping(&socket) {
            if let Ok(Some(status)) = engine.child.as_mut().unwrap().try_wait() {
                panic!("the second dockerd exited ({status}) before it answered:\n{}", engine.log_tail());
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "the second dockerd did not answer on {} within {START_LIMIT:?}:\n{}",
                engine.host,
                engine.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        engine
    }

    /// The temp dir holding the socket, config, log, pidfile, data root and exec root.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir().join("exec")
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dockerd.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `docker ARGS` (the CLI) against this daemon, within [`COMMAND_LIMIT`], which must
    /// succeed; its stdout.
    pub fn docker_cli(&self, args: &[&str]) -> String {
        let out = output_within(self.cli().args(args), COMMAND_LIMIT);
        assert_success(&out, &format!("DOCKER_HOST={} docker {}", self.host, args.join(" ")));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The docker CLI with `DOCKER_HOST` set to this daemon.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", &self.host).env_remove("DOCKER_CONTEXT");
        cmd
    }

    /// nodeimg's client of this daemon, its containers labelled with `run_id`.
    pub async fn client(&self, run_id: &str) -> Docker {
        Docker::connect_to(&self.host, super::labels(run_id)).await.expect("the second dockerd answers")
    }

    /// Copies `image` from the main engine into this one: `docker save` there streamed into
    /// `docker load` here (never whole in memory). The caller removes it from the main engine.
    pub fn copy_image(&self, image: &str) {
        super::block_on(async {
            let main = super::docker("copy-image").await;
            let this = self.client("copy-image").await;
            let loaded = this
                .load_image(main.save_image(image))
                .await
                .unwrap_or_else(|e| panic!("copying {image} to {}: {e:#}", self.host));
            assert!(!loaded.is_empty(), "the second dockerd loaded nothing of {image}");
        });
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // Containers first (bounded): the daemon would stop them itself, but only after its
        // shutdown timeout, one by one.
        if let Some(child) = self.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            let mut ps = self.cli();
            ps.args(["ps", "--all", "--quiet"]).stdin(Stdio::null()).stderr(Stdio::null());
            if let Some(out) = bounded_output(ps, COMMAND_LIMIT) {
                let ids: Vec<String> =
                    String::from_utf8_lossy(&out).split_whitespace().map(str::to_owned).collect();
                if !ids.is_empty() {
                    let mut rm = self.cli();
                    rm.args(["rm", "--force", "--volumes"]).args(&ids).stdin(Stdio::null());
                    bounded_output(rm, COMMAND_LIMIT);
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child process, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < STOP_LIMIT {
                std::thread::sleep(Duration::from_millis(50));
            }
            super::stop(&mut child); // SIGKILL if still there; reaps it
        }
        // What the daemon started and a SIGKILL (or a crash) would orphan: its containerd and
        // shims, whose command lines name the exec root, and its containers' processes, in
        // their cgroups. A clean shutdown leaves none.
        let containers = container_ids(dir.path());
        // Containers are killed outright, as `docker rm --force` would (a PID 1 without a
        // handler ignores SIGTERM); containerd and shims get SIGTERM first.
        stop_processes(&[libc::SIGKILL], |pid| in_cgroups(pid, &containers));
        stop_processes(&[libc::SIGTERM, libc::SIGKILL], |pid| names(pid, dir.path()));
        remove_cgroups(&containers);
        // What a daemon that died leaves mounted (a clean shutdown unmounts all): the private
        // bind mount of its data root, containers' overlay and shm mounts, network namespace
        // files under the exec root. Deepest first, lazily if busy.
        for mount in mounts_under(dir.path()) {
            let status = Command::new("umount").arg(&mount).stderr(Stdio::null()).status();
            if !status.is_ok_and(|s| s.success()) {
                Command::new("umount").args(["-l", &mount]).stderr(Stdio::null()).status().ok();
            }
        }
        dir.close().ok();
        Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status().ok();
    }
}

/// A bridge interface for the daemon, `nimg-<6 chars of its dir's name>`, with an address
/// of its own in 10.213.0.0/16 (the daemon takes its subnet from it).
fn make_bridge(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy();
    let suffix: String = name.chars().rev().take(6).collect();
    let bridge = format!("nimg-{suffix}");
    let third = suffix.bytes().fold(0u32, |a, b| (a * 31 + u32::from(b)) % 250) + 2;
    for args in [
        vec!["link", "add", &bridge, "type", "bridge"],
        vec!["addr", "add", &format!("10.213.{third}.1/24"), "dev", &bridge],
        vec!["link", "set", &bridge, "up"],
    ] {
        let status = Command::new("ip").args(&args).status().expect("ip (iproute2) is installed");
        assert!(status.success(), "ip {} failed", args.join(" "));
    }
    bridge
}

/// Mount points at or under `dir` in this process's mount namespace (the daemon's), deepest
/// first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

/// IDs of the processes whose command line names `dir` (what `pgrep -f DIR` finds), this
/// process excluded.
pub fn processes_under(dir: &Path) -> Vec<i32> {
    processes(|pid| names(pid, dir))
}

/// IDs of the processes in the cgroups of the containers `ids` (those the daemon makes under
/// its default cgroup parent, `docker`).
pub fn processes_of(ids: &[String]) -> Vec<i32> {
    processes(|pid| in_cgroups(pid, ids))
}

/// The IDs of the containers the daemon with its dir in `dir` knows (its data root's).
pub fn container_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("data/containers")) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.len() == 64).collect()
}

fn processes(matches: impl Fn(i32) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && matches(pid))
        .collect()
}

/// Process `pid`'s command line names `dir`.
fn names(pid: i32, dir: &Path) -> bool {
    let needle = dir.as_os_str().as_encoded_bytes();
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| !c.is_empty() && c.windows(needle.len()).any(|w| w == needle))
}

/// Process `pid` is in the cgroup of one of the containers `ids` (cgroup v1 or v2).
fn in_cgroups(pid: i32, ids: &[String]) -> bool {
    if ids.is_empty() {
        return false;
    }
    let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return false };
    cgroups.lines().filter_map(|l| l.rsplit(':').next()).any(|path| {
        ids.iter().any(|id| path.strip_prefix("/docker/").is_some_and(|rest| rest.starts_with(id.as_str())))
    })
}

/// Each of `signals` in turn, with a bounded wait after each, to every process that
/// `matches`, until none is left.
fn stop_processes(signals: &[i32], matches: impl Fn(i32) -> bool) {
    for &signal in signals {
        let pids = processes(&matches);
        if pids.is_empty() {
            return;
        }
        for &pid in &pids {
            // SAFETY: kill(2) on a process ID; at worst ESRCH when it is gone.
            unsafe { libc::kill(pid, signal) };
        }
        let start = Instant::now();
        while !processes(&matches).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Removes the (empty) cgroups runc made for the containers `ids` and did not remove, the
/// daemon having died first: `docker/<id>` under every v1 hierarchy, or the v2 root.
fn remove_cgroups(ids: &[String]) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    let roots: Vec<PathBuf> =
        roots.flatten().map(|e| e.path()).chain([PathBuf::from("/sys/fs/cgroup")]).collect();
    for root in roots {
        for id in ids {
            std::fs::remove_dir(root.join("docker").join(id)).ok();
        }
    }
}

/// Runs `cmd` with stdout captured for at most `limit`; its stdout if it succeeded. Never
/// panics: for Drop.
fn bounded_output(mut cmd: Command, limit: Duration) -> Option<Vec<u8>> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut bytes).ok();
        bytes
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let bytes = reader.join().ok()?;
                return status.success().then_some(bytes);
            }
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                super::stop(&mut child);
                return None;
            }
        }
    }
}
