//! `nodeimg verify IMAGE`: prints the report (text or JSON); exit 0 only if every stage passed
//! (or was skipped, with `--allow-skipped`).

use anyhow::{Context, Result};

use crate::cli::{Output, VerifyArgs};
use crate::progress::Reporter;
use crate::{config, sweep, verify};

pub async fn run(args: VerifyArgs, reporter: &Reporter) -> Result<()> {
    let output = args.output;
    let cfg = config::verify(args)?;
    let docker = super::connect(reporter).await?;
    let (mut report, result) =
        sweep::guarded(&docker, reporter, async { Ok(verify::verify(&cfg, &docker, reporter).await) })
            .await?;
    report.finish(result.as_ref().err().map(crate::error::one_line));
    match output {
        Output::Json => println!("{}", report.to_json()),
        Output::Text => print!("{}", report.to_text()),
    }
    result.with_context(|| format!("verifying {}", cfg.image))
}
