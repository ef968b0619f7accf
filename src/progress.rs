//! Progress: spinners with elapsed time on a terminal, plain timestamped lines otherwise
//! (CI logs), nothing but errors with `--quiet`.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Owns the terminal's progress display; cheap to clone and share between steps.
#[derive(Clone)]
pub struct Reporter {
    verbosity: Verbosity,
    multi: Option<Arc<MultiProgress>>,
}

impl Reporter {
    /// Spinners when stderr is a terminal, plain lines when it is not.
    pub fn new(verbosity: Verbosity) -> Self {
        let tty = std::io::stderr().is_terminal() && verbosity != Verbosity::Quiet;
        Self::with_terminal(verbosity, tty)
    }

    pub fn with_terminal(verbosity: Verbosity, tty: bool) -> Self {
        let multi = tty.then(|| Arc::new(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())));
        Self { verbosity, multi }
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Starts a step; it shows until finished, or as failed if dropped unfinished.
    pub fn step(&self, title: impl Into<String>) -> Step {
        let title = title.into();
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {prefix} [{elapsed}] {wide_msg:.dim}")
                    .expect("static template"),
            );
            bar.set_prefix(title.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            self.line(Verbosity::Normal, &format!("{title} ..."));
        }
        Step { reporter: self.clone(), title, bar, start: Instant::now(), done: false }
    }

    /// A step that moves bytes: a byte bar on a terminal (a spinner when the size is not
    /// known), start and end lines otherwise.
    pub fn bytes(&self, title: impl Into<String>, total: Option<u64>) -> Step {
        let step = self.step(title);
        if let (Some(bar), Some(total)) = (&step.bar, total) {
            bar.set_length(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.cyan} {prefix} [{elapsed}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("static template"),
            );
        }
        step
    }

    /// A line for normal output.
    pub fn info(&self, msg: impl Display) {
        self.line(Verbosity::Normal, &msg.to_string());
    }

    /// A line shown only with `--verbose`.
    pub fn detail(&self, msg: impl Display) {
        self.line(Verbosity::Verbose, &msg.to_string());
    }

    /// A warning, shown even with `--quiet`.
    pub fn warn(&self, msg: impl Display) {
        self.line(Verbosity::Quiet, &format!("warning: {msg}"));
    }

    fn line(&self, level: Verbosity, msg: &str) {
        if self.verbosity < level {
            return;
        }
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(msg);
            }
            None => eprintln!("{}", plain_line(SystemTime::now(), msg)),
        }
    }
}

/// `[HH:MM:SS] message`, in UTC, for logs without a terminal.
pub fn plain_line(now: SystemTime, msg: &str) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) % 86_400;
    format!("[{:02}:{:02}:{:02}] {msg}", secs / 3600, secs / 60 % 60, secs % 60)
}

pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 { format!("{secs:.1}s") } else { format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60) }
}

pub struct Step {
    reporter: Reporter,
    title: String,
    bar: Option<ProgressBar>,
    start: Instant,
    done: bool,
}

impl Step {
    /// The step's current activity: beside the spinner, or a line with `--verbose`.
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None => self.reporter.detail(format!("  {msg}")),
        }
    }

    /// Advances a byte step.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Marks the step done with a short outcome.
    pub fn finish(mut self, outcome: impl Display) {
        self.done = true;
        let line = format!("✓ {}: {outcome} ({})", self.title, format_duration(self.elapsed()));
        self.close(&line, Verbosity::Normal);
    }

    /// Marks the step failed with a short outcome (the error itself is reported once, at
    /// the end).
    pub fn fail(mut self, outcome: impl Display) {
        self.done = true;
        let line = format!("✗ {}: {outcome} ({})", self.title, format_duration(self.elapsed()));
        self.close(&line, Verbosity::Normal);
    }

    fn close(&mut self, line: &str, level: Verbosity) {
        match self.bar.take() {
            Some(bar) => {
                bar.finish_and_clear();
                if self.reporter.verbosity >= level {
                    let _ = self.reporter.multi.as_ref().map(|m| m.println(line));
                }
            }
            None => self.reporter.line(level, line),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.done {
            let line = format!("✗ {} (after {})", self.title, format_duration(self.elapsed()));
            self.close(&line, Verbosity::Normal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_carry_a_utc_time() {
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 13 + 60 * 5 + 9);
        assert_eq!(plain_line(t, "building"), "[13:05:09] building");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn verbosity_orders_quiet_below_verbose() {
        assert!(Verbosity::Quiet < Verbosity::Normal && Verbosity::Normal < Verbosity::Verbose);
        let reporter = Reporter::with_terminal(Verbosity::Quiet, false);
        let step = reporter.step("quiet step");
        step.finish("done");
    }
}
