//! `nodeimg load --input FILE`: prints what was loaded, one image per line.

use anyhow::{Context, Result};

use crate::cli::LoadArgs;
use crate::progress::Reporter;
use crate::{sweep, transfer};

pub async fn run(args: LoadArgs, reporter: &Reporter) -> Result<()> {
    let path = args.file();
    let what = || format!("loading {}", path.display());
    let archive = transfer::Archive::open(path).with_context(what)?;
    if args.skips_checksums() {
        reporter.warn(format!("--skip-checksums: {} is NOT checked against its checksum", path.display()));
    } else {
        transfer::verify(path, reporter).await.with_context(what)?;
    }
    let docker = super::connect(reporter).await?;
    let loaded = sweep::guarded(&docker, reporter, transfer::load(&docker, archive, reporter))
        .await
        .with_context(what)?;
    for image in loaded {
        println!("{image}");
    }
    Ok(())
}
