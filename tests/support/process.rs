//! Child processes with a bound: every nodeimg, docker or helper process a test starts is
//! waited for at most a given time, then stopped, and the test fails naming the command.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// For a build of a node image (fixtures) or the base image.
pub const BUILD_LIMIT: Duration = Duration::from_secs(10 * 60);
/// For a small command: flag validation, `nodeimg clean`, the docker CLI, sha256sum.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopped process gets for its own cleanup after SIGTERM, before SIGKILL.
const GRACE: Duration = Duration::from_secs(20);

/// Runs `cmd` to its end like [`Command::output`] (stdin empty, stdout and stderr
/// captured), at most `limit`: a command still running then is stopped and the test fails
/// naming it.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
    wait_within(child, &what, limit)
}

/// Waits for `child` like [`Child::wait_with_output`] (what it writes to a piped stdout or
/// stderr is collected), at most `limit`. Past that the child gets SIGTERM (nodeimg then
/// removes what it created), SIGKILL after a grace period, and the test fails naming `what`
/// with the child's stderr so far.
pub fn wait_within(mut child: Child, what: &str, limit: Duration) -> Output {
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    match exit_within(&mut child, limit) {
        Some(status) => Output {
            status,
            stdout: collect(stdout, what, "stdout"),
            stderr: collect(stderr, what, "stderr"),
        },
        None => {
            let status = stop(&mut child);
            let stderr = stderr.and_then(|rx| rx.recv_timeout(GRACE).ok()).unwrap_or_default();
            panic!(
                "{what} did not finish within {limit:?} and was stopped ({status:?}); its stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
    }
}

/// Stops `child` (SIGTERM, SIGKILL after a grace period) and reaps it; `None` if it could not
/// be reaped even after SIGKILL. Never panics: for Drop implementations.
pub fn stop(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // SAFETY: signalling our own child process, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    exit_within(child, GRACE).or_else(|| {
        child.kill().ok();
        exit_within(child, GRACE)
    })
}

/// The child's exit status once it exits, or `None` after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).ok();
        tx.send(bytes).ok();
    });
    rx
}

/// What a reader collected; the pipe must close soon after the child exited (a process the
/// child left behind may hold it open: that fails the test rather than hang it).
fn collect(rx: Option<Receiver<Vec<u8>>>, what: &str, pipe: &str) -> Vec<u8> {
    match rx.map(|rx| rx.recv_timeout(GRACE)) {
        None => Vec::new(),
        Some(Ok(bytes)) => bytes,
        Some(Err(RecvTimeoutError::Timeout)) => {
            panic!("{what} exited but its {pipe} stayed open for {GRACE:?}: a process it started lives on")
        }
        Some(Err(RecvTimeoutError::Disconnected)) => panic!("reading the {pipe} of {what} failed"),
    }
}
