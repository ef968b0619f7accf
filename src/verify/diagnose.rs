//! What a failed check shows besides its one-line error: the kubelet's last words and the
//! pods' state (to stderr), and the line of kubeadm's output that says what went wrong.

use super::kubectl;
use crate::docker::{Docker, ExecOutput};
use crate::progress::Reporter;

/// The line of kubeadm's output that says what went wrong (it ends with advice on how to
/// see a stack trace, which is not it).
pub(super) fn kubeadm_error(out: &ExecOutput) -> &str {
    [&out.stderr, &out.stdout]
        .into_iter()
        .flat_map(|s| s.lines().rev())
        .map(str::trim)
        .find(|l| l.starts_with("error") || l.contains("couldn't") || l.contains("failed"))
        .unwrap_or_else(|| out.last_line())
}

/// After a failure: what the kubelet said last and the pods' state, to stderr.
pub(super) async fn diagnose(docker: &Docker, id: &str, reporter: &Reporter) {
    // Errors and fatal lines first: a crashing kubelet's last lines are a goroutine dump.
    let journal = "journalctl -u kubelet -n 400 --no-pager -o cat 2>/dev/null | \
                   grep -E '^[EF][0-9]{4} |Main process exited|error' | tail -n 12 | grep . || \
                   journalctl -u kubelet -n 12 --no-pager -o cat";
    if let Ok(out) = docker.exec(id, &["sh", "-c", journal]).await {
        reporter.warn("last kubelet journal lines (errors first):");
        for line in out.stdout.lines() {
            reporter.warn(format!("  kubelet: {line}"));
        }
    }
    let pods = kubectl(docker, id, &["get", "pods", "-A", "-o", "wide", "--request-timeout=5s"]).await;
    if let Some(out) = pods.ok().filter(|o| o.success()) {
        reporter.warn("pods:");
        for line in out.stdout.lines() {
            reporter.warn(format!("  {line}"));
        }
    }
}
