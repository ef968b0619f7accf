//! `nodeimg cluster update`: prints, per node, what changed (old -> new) and how long each
//! stage took.

use anyhow::{Context, Result};

use crate::cli::UpdateArgs;
use crate::cluster::{self, NodeReport};
use crate::progress::Reporter;
use crate::{config, sweep};

pub async fn run(args: UpdateArgs, reporter: &Reporter) -> Result<()> {
    let cfg = config::cluster_update(args)?;
    let docker = super::connect(reporter).await?;
    let started = std::time::Instant::now();
    let reports = sweep::guarded(&docker, reporter, cluster::update(&cfg, &docker, reporter))
        .await
        .with_context(|| format!("updating cluster {}", cfg.cluster))?;
    print!("{}", table(&reports));
    reporter.info(format!(
        "cluster {}: {} node(s) updated in {:.1}s",
        cfg.cluster,
        reports.iter().filter(|r| !r.changes.is_empty()).count(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn table(reports: &[NodeReport]) -> String {
    let mut out = String::new();
    for r in reports {
        if r.changes.is_empty() {
            out.push_str(&format!("{}: unchanged\n", r.node));
            continue;
        }
        let stages: Vec<String> =
            r.stages.iter().map(|(name, took)| format!("{name} {:.1}s", took.as_secs_f64())).collect();
        out.push_str(&format!("{}: {}\n", r.node, stages.join(", ")));
        for c in &r.changes {
            out.push_str(&format!("  {}: {} -> {}\n", c.what, c.old, c.new));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Change;
    use std::time::Duration;

    #[test]
    fn the_table_says_what_changed_and_how_long_it_took() {
        let reports = [
            NodeReport {
                node: "k-control-plane".into(),
                changes: vec![Change {
                    what: "kubelet".into(),
                    old: "v1.20.2 (sha256 aaaa)".into(),
                    new: "v1.20.2-x (sha256 bbbb)".into(),
                }],
                stages: vec![("copy", Duration::from_millis(300)), ("ready", Duration::from_secs(6))],
            },
            NodeReport { node: "k-worker".into(), ..Default::default() },
        ];
        assert_eq!(
            table(&reports),
            "k-control-plane: copy 0.3s, ready 6.0s\n  kubelet: v1.20.2 (sha256 aaaa) -> v1.20.2-x (sha256 bbbb)\nk-worker: unchanged\n"
        );
    }
}
