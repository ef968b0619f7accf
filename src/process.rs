//! Child processes whose output is shown as it comes and kept in part for error messages,
//! in process groups that end with the future that started them.

use std::collections::VecDeque;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_stream::wrappers::LinesStream;

/// How many of the last output lines a failure message shows.
pub const TAIL_LINES: usize = 20;

/// The last lines of a finished command's output, and how it ended.
pub struct Tail {
    pub lines: VecDeque<String>,
    pub status: ExitStatus,
}

impl Tail {
    /// The last line matching `pick`, else the last line.
    pub fn reason(&self, pick: impl Fn(&str) -> bool) -> &str {
        self.lines
            .iter()
            .rev()
            .find(|l| pick(l))
            .or(self.lines.back())
            .map(String::as_str)
            .unwrap_or("no output")
    }

    pub fn joined(&self) -> String {
        self.lines.iter().map(String::as_str).collect::<Vec<_>>().join(" | ")
    }
}

/// Reads a spawned child's stdout and stderr (both piped) line by line, handing each line to
/// `on_line`, until it exits.
pub async fn follow(
    child: &mut tokio::process::Child,
    mut on_line: impl FnMut(&str) -> Result<()>,
) -> Result<Tail> {
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let mut merged = futures_util::stream::select(LinesStream::new(stdout), LinesStream::new(stderr));
    let mut lines = VecDeque::new();
    while let Some(line) = merged.next().await {
        let line = line?;
        on_line(&line)?;
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    let status = child.wait().await?;
    Ok(Tail { lines, status })
}

/// How long a process group has between SIGTERM and SIGKILL: enough for make to remove a
/// half-written target, short enough that Ctrl-C still feels immediate.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// A child in a process group of its own, with all it starts. Dropping the guard (the
/// future that owns it was dropped on Ctrl-C, or the command failed) ends the whole group:
/// SIGTERM, then SIGKILL to whatever is still alive after [`KILL_GRACE`].
/// `kill_on_drop` would only reach the direct child: make's `go build` children, or a
/// script's background jobs, would be orphaned and keep running.
pub struct GroupChild {
    /// `None` once handed to the thread that finishes the group off.
    child: Option<tokio::process::Child>,
    pgid: i32,
}

impl GroupChild {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<Self> {
        let child = cmd.process_group(0).kill_on_drop(false).spawn()?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok()).unwrap_or(0);
        Ok(Self { child: Some(child), pgid })
    }

    pub fn child(&mut self) -> &mut tokio::process::Child {
        self.child.as_mut().expect("the child is only taken on drop")
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        // A leader not reaped yet (Ctrl-C while it runs) keeps the group's id from being
        // reused until it is, after the last signal. One reaped by `follow` leaves the id to
        // members still running, if any; with none, kill finds nothing and this ends here.
        if self.pgid <= 0 || !signal_group(self.pgid, libc::SIGTERM) {
            return;
        }
        let (pgid, child) = (self.pgid, self.child.take());
        let finish = move || {
            let start = Instant::now();
            while group_alive(pgid) && start.elapsed() < KILL_GRACE {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal_group(pgid, libc::SIGKILL);
            // Dropped only now, so the leader is reaped after the last signal.
            drop(child);
        };
        // On a runtime, off its threads; the runtime's shutdown waits for blocking tasks,
        // so the SIGKILL still happens when the program is on its way out after Ctrl-C.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(finish)),
            Err(_) => finish(),
        }
    }
}

/// Sends `signal` to process group `pgid`; false when the group has no process left.
fn signal_group(pgid: i32, signal: i32) -> bool {
    // SAFETY: kill has no memory preconditions; a negative id names a process group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Whether a process of group `pgid` is still running. Zombies do not count: a dead
/// member waiting to be reaped (by us, or by an init that may never do it) is harmless.
fn group_alive(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(|e| e.ok()).any(|entry| {
        let name = entry.file_name();
        let pid = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit()));
        pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .is_some_and(|stat| stat_is_live_member(&stat, pgid))
    })
}

/// From `/proc/<pid>/stat`: `pid (comm) state ppid pgrp …`; comm may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn stat_is_live_member(stat: &str, pgid: i32) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
    matches!(fields.as_slice(), [state, _, pgrp] if !matches!(*state, "Z" | "X") && pgrp.parse() == Ok(pgid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_last_lines_of_both_streams() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "for i in $(seq 1 30); do echo out$i; done; sleep 0.3; echo err >&2; exit 3"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut seen = 0;
        let tail = follow(&mut child, |_| {
            seen += 1;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(seen, 31);
        assert_eq!(tail.lines.len(), TAIL_LINES);
        // stderr's line comes last in time (after the sleep), so it is in the tail.
        assert_eq!(tail.lines.back().map(String::as_str), Some("err"));
        assert!(tail.lines.contains(&"out30".to_owned()));
        assert_eq!(tail.status.code(), Some(3));
        assert_eq!(tail.reason(|l| l.starts_with("err")), "err");
    }

    /// Spawns `script` as a group leader; it prints the pid of a background job first.
    async fn group_with_job(script: &str) -> (GroupChild, u32) {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", script]).stdout(std::process::Stdio::piped());
        let mut group = GroupChild::spawn(&mut cmd).unwrap();
        let stdout = group.child().stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        let pid = first.unwrap().unwrap().unwrap().trim().parse().unwrap();
        assert!(running(pid), "the background job runs");
        (group, pid)
    }

    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
    }

    async fn gone_within(pid: u32, limit: Duration) -> Duration {
        let start = Instant::now();
        while running(pid) {
            assert!(start.elapsed() < limit, "pid {pid} still runs after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    #[tokio::test]
    async fn dropping_the_guard_kills_the_background_jobs_too() {
        let (group, job) = group_with_job("sleep 100 & echo $!; wait").await;
        drop(group);
        let took = gone_within(job, Duration::from_secs(3)).await;
        assert!(took < KILL_GRACE, "SIGTERM was enough, no grace waited ({took:?})");
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
        // Ignored signals stay ignored across exec, so the sleep ignores SIGTERM too.
        let (group, job) = group_with_job("trap '' TERM; sleep 100 & echo $!; wait").await;
        drop(group);
        let took = gone_within(job, KILL_GRACE + Duration::from_secs(3)).await;
        assert!(took >= KILL_GRACE, "killed only after the grace ({took:?})");
    }

    #[tokio::test]
    async fn a_finished_group_is_left_alone() {
        let mut cmd = tokio::process::Command::new("true");
        let mut group = GroupChild::spawn(&mut cmd).unwrap();
        assert!(group.child().wait().await.unwrap().success());
        let pgid = group.pgid;
        drop(group);
        assert!(!group_alive(pgid));
    }

    #[test]
    fn reads_group_and_state_from_proc_stat() {
        let stat = "4242 (make (x) y) S 1 4242 4242 0 -1 4194560";
        assert!(stat_is_live_member(stat, 4242));
        assert!(!stat_is_live_member(stat, 4243));
        assert!(!stat_is_live_member(&stat.replace(") S", ") Z"), 4242));
        assert!(!stat_is_live_member("garbage", 4242));
    }
}
