use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::container::short;
use super::error::{Daemon, Error};
use super::{Docker, Result};

/// What a command run inside a container printed, and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The last non-empty line of stderr (else stdout): the part of a failure worth printing.
    pub fn last_line(&self) -> &str {
        [&self.stderr, &self.stdout]
            .into_iter()
            .flat_map(|s| s.lines().rev())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }
}

impl Docker {
    /// Runs `cmd` in the container and captures its output and exit code.
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> Result<ExecOutput> {
        self.exec_inner(id, cmd, None::<tokio::io::Empty>, None).await
    }

    /// Runs `cmd` with its stdout written to `sink` as it comes (an archive `ctr export`
    /// writes), not captured; stderr is captured.
    pub async fn exec_stdout_to(
        &self,
        id: &str,
        cmd: &[&str],
        sink: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
    ) -> Result<ExecOutput> {
        self.exec_inner(id, cmd, None::<tokio::io::Empty>, Some(sink)).await
    }

    /// Runs `cmd` with `input` streamed to its stdin, then closed; for piping an image tar
    /// into `ctr images import -` without holding it in memory.
    pub async fn exec_with_stdin<R>(&self, id: &str, cmd: &[&str], input: R) -> Result<ExecOutput>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.exec_inner(id, cmd, Some(input), None).await
    }

    async fn exec_inner<R>(
        &self,
        id: &str,
        cmd: &[&str],
        input: Option<R>,
        mut sink: Option<&mut (dyn tokio::io::AsyncWrite + Send + Unpin)>,
    ) -> Result<ExecOutput>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (cmd_text, short_id) = (cmd.join(" "), short(id).to_owned());
        let api = |e| Error::Exec { cmd: cmd_text.clone(), id: short_id.clone(), source: Daemon(e) };
        let io = |what, source| Error::ExecIo { cmd: cmd_text.clone(), id: short_id.clone(), what, source };
        let options = CreateExecOptions {
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            attach_stdin: Some(input.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self.client.create_exec(id, options).await.map_err(api)?;
        let started = self
            .client
            .start_exec(&exec.id, Some(StartExecOptions { detach: false, ..Default::default() }))
            .await
            .map_err(api)?;
        let StartExecResults::Attached { mut output, input: mut stdin } = started else {
            return Err(Error::Protocol {
                action: format!("running `{cmd_text}` in container {short_id}"),
                problem: "the daemon did not attach",
            });
        };
        let feeder = input.map(|reader| {
            tokio::spawn(async move {
                // Large writes: image tars are hundreds of MB, and 8 KiB writes into the
                // hijacked connection cost a third of the throughput.
                let mut reader = tokio::io::BufReader::with_capacity(1 << 20, reader);
                tokio::io::copy_buf(&mut reader, &mut stdin).await?;
                stdin.shutdown().await
            })
        });
        let mut result = ExecOutput::default();
        while let Some(chunk) = output.next().await {
            match chunk.map_err(api)? {
                LogOutput::StdErr { message } => result.stderr.push_str(&String::from_utf8_lossy(&message)),
                LogOutput::StdOut { message } | LogOutput::Console { message } => match sink.as_mut() {
                    Some(sink) => sink.write_all(&message).await.map_err(|e| io("writing its output", e))?,
                    None => result.stdout.push_str(&String::from_utf8_lossy(&message)),
                },
                LogOutput::StdIn { .. } => {}
            }
        }
        if let Some(feeder) = feeder {
            let fed = feeder.await.map_err(|e| io("feeding stdin", std::io::Error::other(e)))?;
            // The command may exit before reading all input (and then fails on its own);
            // only report a broken feed when the command claims success.
            if let Err(e) = fed {
                let code = self.exit_code(&exec.id, &api).await?;
                if code == 0 {
                    return Err(io("streaming stdin", e));
                }
            }
        }
        result.code = self.exit_code(&exec.id, &api).await.map_err(|e| match e {
            Error::Protocol { problem, .. } => {
                Error::Protocol { action: format!("running `{cmd_text}` in container {short_id}"), problem }
            }
            other => other,
        })?;
        Ok(result)
    }

    async fn exit_code(&self, exec_id: &str, api: &impl Fn(bollard::errors::Error) -> Error) -> Result<i64> {
        // The output stream ends when the process closes it, which can be a moment before
        // the daemon records the exit code.
        for _ in 0..50 {
            let info = self.client.inspect_exec(exec_id).await.map_err(api)?;
            if info.running != Some(true)
                && let Some(code) = info.exit_code
            {
                return Ok(code);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(Error::Protocol { action: String::new(), problem: "no exit code after 5 s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_prefers_stderr_and_skips_blank_lines() {
        let out = ExecOutput { code: 1, stdout: "ok\n".into(), stderr: "first\nsecond\n\n".into() };
        assert_eq!(out.last_line(), "second");
        let out = ExecOutput { code: 1, stdout: "only stdout\n".into(), stderr: String::new() };
        assert_eq!(out.last_line(), "only stdout");
        assert!(!out.success());
    }
}
