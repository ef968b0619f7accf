//! Ctrl-C (SIGINT) ends `nodeimg build node-image` within seconds and leaves nothing behind,
//! also in the middle of a git clone (git2 work runs off the async runtime and stops at its
//! next callback) and of a source build (make runs in its own process group, killed whole).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{Cleanup, kubetree};

/// How long nodeimg may take to exit after SIGINT.
const EXIT_LIMIT: Duration = Duration::from_secs(3);

/// The real binary, run from an empty directory with an empty GOPATH, HOME, cache and
/// TMPDIR, so that only the flags choose the tree. Killed when dropped, even after a
/// failed assertion.
struct Nodeimg {
    child: Child,
    stderr: Arc<Mutex<String>>,
    _dirs: [tempfile::TempDir; 2],
    cache: tempfile::TempDir,
    _cleanup: Cleanup,
}

impl Nodeimg {
    fn start(test: &str, args: &[&str]) -> Self {
        let run_id = support::run_id(test);
        let (nowhere, tmp, cache) = (tempdir(), tempdir(), tempdir());
        let mut child = support::nodeimg()
            .args(["build", "node-image", "--build-mode", "host", "-b", "nodeimg-test/never-used:1"])
            .args(args)
            .current_dir(nowhere.path())
            .env("GOPATH", nowhere.path())
            .env("HOME", nowhere.path())
            .env("TMPDIR", tmp.path())
            .env("NODEIMG_CACHE_DIR", cache.path())
            .env("NODEIMG_RUN_ID", &run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Nodeimg { child, stderr, _dirs: [nowhere, tmp], cache, _cleanup: Cleanup(run_id) }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Polls `ready` until it holds, failing when nodeimg exits first or after `limit`.
    fn wait_until(&mut self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nodeimg exited ({status}) before {what}:\n{}", self.stderr());
            }
            assert!(start.elapsed() < limit, "no {what} after {limit:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT and waits at most [`EXIT_LIMIT`] for the exit; how long it took.
    fn interrupt(&mut self) -> (ExitStatus, Duration) {
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < EXIT_LIMIT,
                "nodeimg still runs {EXIT_LIMIT:?} after SIGINT:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Nodeimg {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn assert_interrupted(nodeimg: &Nodeimg, status: ExitStatus) {
    assert_eq!(status.code(), Some(130), "exit code after SIGINT:\n{}", nodeimg.stderr());
    assert!(nodeimg.stderr().contains("interrupted by SIGINT"), "{}", nodeimg.stderr());
}

#[test]
fn ctrl_c_during_a_clone_stops_it_and_removes_the_partial_clone() {
    let origin = big_kubernetes_repo(16);
    let server = SlowGitServer::start(origin.path(), 1 << 20);
    let url = format!("git://127.0.0.1:{}/kubernetes.git", server.port);
    let mut nodeimg = Nodeimg::start("interrupt-clone", &["-k", "v1.30.0", "--kube-repo", &url]);
    let partial = nodeimg.cache.path().join("kubernetes.partial");
    nodeimg.wait_until("clone under way", Duration::from_secs(60), || {
        server.sent() > 256 << 10 && partial.is_dir()
    });

    let (status, took) = nodeimg.interrupt();
    eprintln!("clone: nodeimg exited {took:?} after SIGINT, {} KiB served", server.sent() >> 10);
    assert_interrupted(&nodeimg, status);
    assert!(!partial.exists(), "the partial clone is removed");
    assert!(!nodeimg.cache.path().join("kubernetes").exists(), "an unfinished clone is not kept");
    assert!(server.sent() < 8 << 20, "the transfer stopped ({} KiB served)", server.sent() >> 10);
}

#[test]
fn ctrl_c_during_make_kills_the_whole_build() {
    let tree = tempdir();
    kubetree::create(tree.path(), false, |_, dest| std::fs::write(dest, b"").unwrap());
    // `all` starts a shell that starts a sleep: make's grandchildren, as go build's are.
    let pids = tree.path().join("_output/build.pids");
    std::fs::write(
        tree.path().join("Makefile"),
        format!(
            "all:\n\t@echo '+++ [0101 00:00:00] Building go targets for linux/amd64'\n\
             \tmkdir -p _output && sh -c 'sleep 300 & echo $$$$ $$! > {p}.new && mv {p}.new {p}; wait'\n",
            p = pids.display()
        ),
    )
    .unwrap();
    let root = tree.path().to_str().unwrap();
    let mut nodeimg = Nodeimg::start("interrupt-make", &["--kube-root", root]);
    let mut strays = Strays::default();
    nodeimg.wait_until("make's grandchildren", Duration::from_secs(60), || {
        let Ok(text) = std::fs::read_to_string(&pids) else { return false };
        strays.0 = text.split_whitespace().map(|p| p.parse().unwrap()).collect();
        strays.0.iter().all(|&pid| running(pid))
    });

    let (status, took) = nodeimg.interrupt();
    eprintln!("make: nodeimg exited {took:?} after SIGINT");
    assert_interrupted(&nodeimg, status);
    let start = Instant::now();
    while let Some(pid) = strays.0.iter().copied().find(|&pid| running(pid)) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "make's descendant {pid} ({}) outlived nodeimg",
            cmdline(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("make: its descendants were gone {:?} after the exit", start.elapsed());
}

/// Running, as opposed to gone or a zombie waiting for a reaper.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// Processes a failed test would otherwise leave running; killed when dropped.
#[derive(Default)]
struct Strays(Vec<u32>);

impl Drop for Strays {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // Only ours: the fixture's `sh` and `sleep 300`, not a process that took the pid.
            let line = cmdline(pid);
            if running(pid) && (line.starts_with("sleep 300") || line.contains("sleep 300 &")) {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// A repository that looks like Kubernetes (go.mod, tag v1.30.0) with `megabytes` of
/// random, incompressible files, so that a throttled clone of it takes a while.
fn big_kubernetes_repo(megabytes: usize) -> tempfile::TempDir {
    let dir = tempdir();
    let repo = git2::Repository::init(dir.path()).unwrap();
    std::fs::write(dir.path().join("go.mod"), "module k8s.io/kubernetes\n\ngo 1.22\n").unwrap();
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    for i in 0..megabytes {
        let mut data = vec![0; 1 << 20];
        random.read_exact(&mut data).unwrap();
        std::fs::write(dir.path().join(format!("blob{i}")), data).unwrap();
    }
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("fixture", "fixture@example.com").unwrap();
    let oid = repo.commit(Some("HEAD"), &sig, &sig, "v1.30.0", &tree, &[]).unwrap();
    repo.tag_lightweight("v1.30.0", &repo.find_object(oid, None).unwrap(), false).unwrap();
    dir
}

/// Serves one repository over git:// on 127.0.0.1, `git upload-pack` behind each
/// connection, its output throttled to `rate` bytes a second; counts the bytes sent so a
/// test knows that a clone is under way. Stops, and kills its upload-packs, when dropped.
struct SlowGitServer {
    port: u16,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<Connection>>>,
}

/// One client: its `git upload-pack`, its socket, the thread sending to it.
struct Connection {
    upload_pack: Child,
    socket: TcpStream,
    sender: JoinHandle<()>,
}

impl SlowGitServer {
    fn start(repo: &Path, rate: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sent, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (repo, s, st, conns) = (repo.to_owned(), sent.clone(), stop.clone(), connections.clone());
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((socket, _)) => {
                        if let Some(conn) = serve(socket, &repo, rate, s.clone()) {
                            conns.lock().unwrap().push(conn);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SlowGitServer { port, sent, stop, accept: Some(accept), connections }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for SlowGitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.accept.take().map(JoinHandle::join);
        for mut conn in self.connections.lock().unwrap().drain(..) {
            conn.upload_pack.kill().ok();
            conn.upload_pack.wait().ok();
            conn.socket.shutdown(Shutdown::Both).ok();
            conn.sender.join().ok();
        }
    }
}

/// Reads the git:// request line, starts `git upload-pack`, and pipes the socket into it
/// and its output, throttled, back out.
fn serve(socket: TcpStream, repo: &Path, rate: u64, sent: Arc<AtomicU64>) -> Option<Connection> {
    socket.set_nonblocking(false).ok()?;
    // A client that connects and says nothing must not hold up the accepting thread.
    socket.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = socket.try_clone().ok()?;
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).ok()?;
    let len = usize::from_str_radix(std::str::from_utf8(&len).ok()?, 16).ok()?;
    let mut request = vec![0; len.checked_sub(4)?];
    reader.read_exact(&mut request).ok()?;
    if !request.starts_with(b"git-upload-pack ") {
        return None;
    }
    socket.set_read_timeout(None).ok()?;
    let mut child = Command::new("git")
        .arg("upload-pack")
        .arg(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let (stdin, stdout) = (child.stdin.take()?, child.stdout.take()?);
    let writer = socket.try_clone().ok()?;
    std::thread::spawn(move || copy_in(reader, stdin));
    let sender = std::thread::spawn(move || copy_out_slowly(stdout, writer, rate, &sent));
    Some(Connection { upload_pack: child, socket, sender })
}

fn copy_in(mut from: TcpStream, mut to: ChildStdin) {
    let mut chunk = vec![0; 16 << 10];
    while let Ok(n) = from.read(&mut chunk) {
        if n == 0 || to.write_all(&chunk[..n]).is_err() {
            break;
        }
    }
}

fn copy_out_slowly(mut from: ChildStdout, mut to: TcpStream, rate: u64, sent: &AtomicU64) {
    let mut chunk = vec![0; 16 << 10];
    while let Ok(n) = from.read(&mut chunk) {
        if n == 0 || to.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent.fetch_add(n as u64, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
    }
    to.shutdown(Shutdown::Write).ok();
}
