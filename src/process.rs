//! Child processes whose output is shown as it comes and kept in part for error messages.

use std::collections::VecDeque;
use std::process::ExitStatus;

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
}
