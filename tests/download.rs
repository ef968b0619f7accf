//! Downloads against misbehaving servers: one that stalls, one that drops the connection
//! mid-file, one that trickles while the user presses Ctrl-C. Each server is a loopback
//! listener written here, since python's http.server can neither stall nor honour Range.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha512};
use support::fixtures::{self, Options};

const TARBALL: &str = "kubernetes-server-linux-amd64.tar.gz";
const RELEASE_PATH: &str = "/v1.30.0/kubernetes-server-linux-amd64.tar.gz";

/// One request as the server saw it: the path and the `Range` header.
#[derive(Clone, Debug)]
struct Request {
    path: String,
    range: Option<String>,
}

impl Request {
    /// The first byte asked for by `Range: bytes=N-`.
    fn range_start(&self) -> Option<usize> {
        self.range.as_deref()?.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()
    }
}

type Handler = dyn Fn(&Request, TcpStream, &AtomicBool) + Send + Sync;

/// A loopback HTTP/1.1 server handing every connection to `handler` on its own thread;
/// dropping it releases handlers that hold their connection open.
struct Server {
    url: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(handler: impl Fn(&Request, TcpStream, &AtomicBool) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop2, requests2) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (handler, stop, requests) = (handler.clone(), stop2.clone(), requests2.clone());
                std::thread::spawn(move || {
                    let Some(request) = read_request(&stream) else { return };
                    requests.lock().unwrap().push(request.clone());
                    handler(&request, stream, &stop);
                });
            }
        });
        Server { url, stop, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        TcpStream::connect(self.url.trim_start_matches("http://")).ok();
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut range = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    Some(Request { path, range })
}

fn head(status: &str, length: usize, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n{extra}\r\n")
}

/// Keeps a connection open, sending nothing, until the server is dropped.
fn hold(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nodeimg with its own run id and an empty download cache.
struct Run {
    run_id: String,
    cache: tempfile::TempDir,
}

impl Run {
    fn new(name: &str) -> Self {
        Run { run_id: support::run_id(name), cache: tempfile::tempdir().unwrap() }
    }

    fn spawn(&self, args: &[&str], stall_timeout: &str) -> Child {
        support::nodeimg()
            .args(args)
            .env("NODEIMG_RUN_ID", &self.run_id)
            .env("NODEIMG_CACHE_DIR", self.cache.path())
            .env("NODEIMG_DOWNLOAD_STALL_TIMEOUT", stall_timeout)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn files(&self) -> Vec<PathBuf> {
        walk(self.cache.path())
    }

    fn assert_no_part_file(&self) {
        let parts: Vec<_> = self.files().into_iter().filter(|p| is_part(p)).collect();
        assert!(parts.is_empty(), "part files left in the cache: {parts:?}");
    }
}

fn is_part(path: &Path) -> bool {
    path.file_name().unwrap().to_string_lossy().contains(".part")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        match entry.path() {
            p if p.is_dir() => out.extend(walk(&p)),
            p => out.push(p),
        }
    }
    out
}

/// Waits at most `limit` for `child`, killing it on timeout; returns its exit code, its
/// stderr and how long it took from `start`.
fn finish(mut child: Child, start: Instant, limit: Duration) -> (Option<i32>, String, Duration) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).ok();
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("nodeimg still running after {limit:?}; killed:\n{}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    (status.code(), reader.join().unwrap(), elapsed)
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn a_stalled_download_fails_naming_the_url() {
    let server = Server::start(|_, mut stream, stop| {
        let length = 1 << 20;
        let sent = stream
            .write_all(head("200 OK", length, "").as_bytes())
            .and_then(|_| stream.write_all(&vec![7u8; length / 2]));
        if sent.is_ok() {
            hold(stop);
        }
    });
    let run = Run::new("stall");
    let url = format!("{}{RELEASE_PATH}", server.url);
    let args = ["build", "node-image", &url, "--skip-checksums", "-b", "nosuch/base:x"];
    let start = Instant::now();
    let (code, stderr, elapsed) = finish(run.spawn(&args, "2"), start, Duration::from_secs(40));
    eprintln!("stalled download failed after {elapsed:?}");
    assert_eq!(code, Some(1), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line:");
    assert!(errors[0].contains(&url) && errors[0].contains("stalled: no data for 2 s"), "{}", errors[0]);
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}:");
    assert!(stderr.contains("resuming (try 4/4)"), "every try was made:");
    run.assert_no_part_file();
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let release = fixtures::server_tarball(&Options::default());
    let data = Arc::new(std::fs::read(&release.tarball).unwrap());
    let sum = hex::encode(Sha512::digest(&*data));
    let served = AtomicUsize::new(0);
    let (body, checksum) = (data.clone(), format!("{sum}  {TARBALL}\n"));
    let server = Server::start(move |request, mut stream, _| {
        let reply = match (request.path.as_str(), request.range_start()) {
            (p, _) if p == format!("{RELEASE_PATH}.sha512") => {
                [head("200 OK", checksum.len(), "").as_bytes(), checksum.as_bytes()].concat()
            }
            (RELEASE_PATH, Some(from)) => {
                let range = format!("Content-Range: bytes {from}-{}/{}\r\n", body.len() - 1, body.len());
                [head("206 Partial Content", body.len() - from, &range).as_bytes(), &body[from..]].concat()
            }
            // The first answer promises the whole file and breaks off halfway.
            (RELEASE_PATH, None) if served.fetch_add(1, Ordering::SeqCst) == 0 => {
                [head("200 OK", body.len(), "").as_bytes(), &body[..body.len() / 2]].concat()
            }
            (RELEASE_PATH, None) => [head("200 OK", body.len(), "").as_bytes(), &body[..]].concat(),
            _ => head("404 Not Found", 0, "").into_bytes(),
        };
        stream.write_all(&reply).ok();
    });
    let run = Run::new("resume");
    let url = format!("{}{RELEASE_PATH}", server.url);
    // A missing base image with --offline stops the build right after the extraction.
    let base = "nodeimg-test/nosuch-base:1";
    let args = ["build", "node-image", &url, "-b", base, "--offline", "-i", "nodeimg-test/node:resume"];
    let start = Instant::now();
    let (code, stderr, elapsed) = finish(run.spawn(&args, "10"), start, Duration::from_secs(60));
    eprintln!("resumed download and extraction took {elapsed:?}");

    assert!(stderr.contains("interrupted at") && stderr.contains("resuming (try 2/4)"), "{stderr}");
    let ranges: Vec<_> = server.requests().iter().filter_map(Request::range_start).collect();
    assert_eq!(ranges, [data.len() / 2], "one range request, from where the file broke off");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("base image {base} is not here")), "past the download: {stderr}");
    assert_eq!(code, Some(1));
    let cached: Vec<_> =
        run.files().into_iter().filter(|p| p.to_string_lossy().ends_with(&format!("-{TARBALL}"))).collect();
    assert_eq!(cached.len(), 1, "{:?}", run.files());
    assert_eq!(hex::encode(Sha512::digest(std::fs::read(&cached[0]).unwrap())), sum);
    run.assert_no_part_file();
}

#[test]
fn ctrl_c_during_a_download_exits_130_and_removes_the_part_file() {
    let server = Server::start(|_, mut stream, stop| {
        let length = 64 << 20;
        if stream.write_all(head("200 OK", length, "").as_bytes()).is_err() {
            return;
        }
        // 20 KB/s: slow, never stalled.
        while !stop.load(Ordering::SeqCst) && stream.write_all(&[1u8; 1024]).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let run = Run::new("sigint");
    let url = format!("{}{RELEASE_PATH}", server.url);
    let mut child =
        run.spawn(&["build", "node-image", &url, "--skip-checksums", "-b", "nosuch/base:x"], "30");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.files().iter().any(|p| is_part(p)) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            // Kills the child if it still runs; either way the test fails with its stderr.
            let (code, stderr, _) = finish(child, Instant::now(), Duration::ZERO);
            panic!("no part file appeared (exit {code:?}):\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the child we spawned, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let start = Instant::now();
    let (code, stderr, elapsed) = finish(child, start, Duration::from_secs(10));
    eprintln!("Ctrl-C to exit: {elapsed:?}");
    assert_eq!(code, Some(130), "{stderr}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    run.assert_no_part_file();
}
