//! What `nodeimg verify` found: each stage with its time, as a text summary or JSON.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::Cni;
use crate::node::Privilege;

/// How a stage ended. A skipped stage checked nothing: it is not a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Passed,
    Failed,
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub seconds: f64,
    pub state: State,
    /// `state == passed`, for readers of the earlier JSON.
    pub passed: bool,
    /// Why the stage checked nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub kubernetes_version: Option<String>,
    #[serde(serialize_with = "privilege_name")]
    pub privilege: Option<Privilege>,
    pub cni: Option<Cni>,
    pub stages: Vec<Stage>,
    /// Every stage passed, or was skipped with `--allow-skipped`, and no error ended the check.
    pub passed: bool,
    /// `--allow-skipped`: a skipped stage does not fail the check.
    pub allow_skipped: bool,
    /// The error that ended the check, one line.
    pub error: Option<String>,
}

fn privilege_name<S: serde::Serializer>(p: &Option<Privilege>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(Privilege::Privileged) => s.serialize_str("privileged"),
        Some(Privilege::Restricted) => s.serialize_str("restricted"),
        None => s.serialize_none(),
    }
}

impl Report {
    pub fn new(image: &str) -> Self {
        Self {
            image: image.to_owned(),
            kubernetes_version: None,
            privilege: None,
            cni: None,
            stages: Vec::new(),
            passed: false,
            allow_skipped: false,
            error: None,
        }
    }

    pub fn passed(&mut self, name: &'static str, took: Duration) {
        self.stages.push(Stage {
            name,
            seconds: round(took),
            state: State::Passed,
            passed: true,
            skipped: None,
        });
    }

    /// Marks the last stage as one that checked nothing, and why.
    pub fn skipped(&mut self, why: String) {
        if let Some(stage) = self.stages.last_mut() {
            stage.skipped = Some(why);
            stage.state = State::Skipped;
            stage.passed = false;
        }
    }

    /// The first skipped stage and why, unless `--allow-skipped` accepts it.
    pub fn refused_skip(&self) -> Option<(&'static str, &str)> {
        let skipped = self.stages.iter().find(|s| s.state == State::Skipped)?;
        (!self.allow_skipped).then(|| (skipped.name, skipped.skipped.as_deref().unwrap_or_default()))
    }

    pub fn failed(&mut self, name: &'static str, took: Duration) {
        self.stages.push(Stage {
            name,
            seconds: round(took),
            state: State::Failed,
            passed: false,
            skipped: None,
        });
    }

    /// Records how the check ended (`error` is None when every stage passed).
    pub fn finish(&mut self, error: Option<String>) {
        let accepted =
            |s: &Stage| s.state == State::Passed || (s.state == State::Skipped && self.allow_skipped);
        self.passed = error.is_none() && self.stages.iter().all(accepted);
        self.error = error;
    }

    pub fn total_seconds(&self) -> f64 {
        round(Duration::from_secs_f64(self.stages.iter().map(|s| s.seconds).sum()))
    }

    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a report serializes");
        value["total_seconds"] = self.total_seconds().into();
        serde_json::to_string_pretty(&value).expect("a report serializes")
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "verified" } else { "FAILED" };
        let version = self.kubernetes_version.as_deref().unwrap_or("unknown version");
        let _ = write!(out, "{verdict} {} (Kubernetes {version}", self.image);
        if let Some(cni) = self.cni {
            let _ = write!(out, ", CNI {}", if cni == Cni::Default { "default" } else { "bridge" });
        }
        if self.privilege == Some(Privilege::Restricted) {
            out.push_str(", without --privileged");
        }
        out.push_str(")\n");
        for stage in &self.stages {
            let mark = match stage.state {
                State::Skipped => format!("SKIPPED: {}", stage.skipped.as_deref().unwrap_or_default()),
                State::Passed => "ok".to_owned(),
                State::Failed => "FAILED".to_owned(),
            };
            let _ = writeln!(out, "  {:<14}{:>8.1}s  {mark}", stage.name, stage.seconds);
        }
        let _ = writeln!(out, "  {:<14}{:>8.1}s", "total", self.total_seconds());
        out
    }
}

fn round(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut r = Report::new("kindest/node:v1.20.2");
        r.kubernetes_version = Some("v1.20.2".into());
        r.privilege = Some(Privilege::Restricted);
        r.passed("boot", Duration::from_millis(3140));
        r.passed("kubeadm init", Duration::from_millis(16020));
        r
    }

    #[test]
    fn json_has_every_stage_and_the_verdict() {
        let mut r = report();
        r.failed("API ready", Duration::from_secs(60));
        r.finish(Some("API ready: timed out".into()));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(v["privilege"], "restricted");
        assert_eq!(v["stages"][0]["name"], "boot");
        assert_eq!(v["stages"][0]["seconds"], 3.1);
        assert_eq!(v["stages"][2]["passed"], false);
        assert_eq!(v["total_seconds"], 79.1);
        assert_eq!(v["error"], "API ready: timed out");
    }

    #[test]
    fn a_skipped_stage_is_its_own_state_and_no_pass() {
        let mut r = report();
        r.passed("DNS", Duration::from_millis(200));
        r.skipped("the node's own resolver (nameserver 10.0.0.1) does not know the node names".into());
        r.finish(None);
        assert!(!r.passed, "a skipped stage is not a pass");
        assert_eq!(r.refused_skip().map(|(name, _)| name), Some("DNS"));
        assert!(r.to_text().starts_with("FAILED"), "{}", r.to_text());
        assert!(
            r.to_text().lines().any(|l| l.contains("DNS") && l.contains("SKIPPED: the node's own resolver"))
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["stages"][2]["state"], "skipped");
        assert_eq!(v["stages"][2]["passed"], false);
        assert_eq!(v["stages"][0]["state"], "passed");
        assert!(v["stages"][2]["skipped"].as_str().unwrap().contains("nameserver 10.0.0.1"));
        assert!(v["stages"][0].get("skipped").is_none(), "only a skipped stage carries it");

        r.allow_skipped = true;
        r.finish(None);
        assert!(r.passed && r.refused_skip().is_none(), "--allow-skipped accepts it");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.to_json()).unwrap()["stages"][2]["state"],
            "skipped"
        );
    }

    #[test]
    fn passes_only_when_every_stage_passed_without_error() {
        let mut r = report();
        r.finish(None);
        assert!(r.passed);
        assert!(
            r.to_text()
                .starts_with("verified kindest/node:v1.20.2 (Kubernetes v1.20.2, without --privileged)")
        );
        assert!(r.to_text().contains("kubeadm init"));
        let mut r = report();
        r.finish(Some("removing the node container: gone".into()));
        assert!(!r.passed, "a failed cleanup fails the check");
        assert!(r.to_text().starts_with("FAILED"));
    }
}
