//! `nodeimg diff IMAGE_A IMAGE_B`: prints what differs, as text or JSON.

use anyhow::{Context, Result};

use crate::cli::DiffArgs;
use crate::progress::Reporter;
use crate::{config, diff, sweep};

pub async fn run(args: DiffArgs, reporter: &Reporter) -> Result<()> {
    let (a, b, json) = config::diff(args)?;
    let docker = super::connect(reporter).await?;
    let step = reporter.step(format!("reading {a} and {b}"));
    let read = async {
        let first = diff::read(&docker, &a).await.with_context(|| format!("reading {a}"))?;
        let second = diff::read(&docker, &b).await.with_context(|| format!("reading {b}"))?;
        anyhow::Ok((first, second))
    };
    let (first, second) = match sweep::guarded(&docker, reporter, read).await {
        Ok(read) => read,
        Err(e) => {
            step.fail("failed");
            return Err(e);
        }
    };
    step.finish("done");
    let diff = diff::compare(&first, &second);
    if json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
    } else {
        print!("{}", diff.text());
    }
    Ok(())
}
