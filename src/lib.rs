//! nodeimg: builds node images for kind. `main.rs` is a thin shell over [`run`].

pub mod archive;
pub mod baseimage;
pub mod clean;
pub mod cli;
pub mod configfile;
pub mod docker;
pub mod guard;
pub mod imagearchive;
pub mod kube;
pub mod node;
pub mod nodeimage;
pub mod process;
pub mod progress;
pub mod templates;
pub mod transfer;
pub mod verify;

use anyhow::{Context, Result};

use crate::cli::{BuildCommand, Cli, Command, ImagesCommand};
use crate::docker::{Docker, Labels};
use crate::progress::Reporter;

/// Runs one command line; the result (an image name, removed leftovers) goes to stdout,
/// progress to stderr.
pub async fn run(cli: Cli) -> Result<()> {
    let reporter = Reporter::new(cli.verbosity());
    match cli.command {
        Command::Build(BuildCommand::BaseImage(args)) => {
            let cfg = args.into_config()?;
            let docker = connect().await?;
            let built =
                guard::guarded(&docker, &reporter, baseimage::build(&cfg, &docker, &reporter)).await?;
            println!("{}", built.reference);
        }
        Command::Build(BuildCommand::NodeImage(args)) => {
            let save = args.save_target()?;
            let cfg = (*args).into_config()?;
            if !cfg.verify {
                reporter.warn("--no-verify: downloads are NOT checked against published checksums");
            }
            let docker = connect().await?;
            let built =
                guard::guarded(&docker, &reporter, nodeimage::build(&cfg, &docker, &reporter)).await?;
            reporter.info(format!(
                "node image {} ({}, {:.0} MB): Kubernetes {}, {} images inside",
                built.reference,
                docker::short_id(&built.id),
                built.size as f64 / 1e6,
                built.version,
                built.images.len()
            ));
            reporter.info(format!("images: {}", nodeimage::sources::summary(&built.plan)));
            for p in &built.plan {
                reporter.detail(format!("  {}  <- {}", p.image, p.origin));
            }
            if let Some(target) = save {
                save_image(&docker, &reporter, &built.reference, &target).await?;
            }
            println!("{}", built.reference);
        }
        Command::Save(args) => {
            let target = args.target()?;
            let docker = connect().await?;
            save_image(&docker, &reporter, &args.image, &target).await?;
            println!("{}", target.path.display());
        }
        Command::Load(args) => {
            let path = &args.input;
            let what = || format!("loading {}", path.display());
            let archive = transfer::Archive::open(path).with_context(what)?;
            if args.no_verify {
                reporter.warn(format!("--no-verify: {} is NOT checked against its checksum", path.display()));
            } else {
                transfer::verify(path, &reporter).await.with_context(what)?;
            }
            let docker = connect().await?;
            let loaded = guard::guarded(&docker, &reporter, transfer::load(&docker, archive, &reporter))
                .await
                .with_context(what)?;
            for image in loaded {
                println!("{image}");
            }
        }
        Command::Images(ImagesCommand::List(args)) => {
            let cfg = (*args).into_config()?;
            let docker = connect().await?;
            let plan = guard::guarded(&docker, &reporter, nodeimage::plan(&cfg, &docker, &reporter)).await?;
            for p in plan {
                println!("{}\t{}", p.image, p.origin);
            }
        }
        Command::Images(ImagesCommand::Save(args)) => {
            let args = *args;
            transfer::output_dir_exists(&args.output)?;
            let cfg = args.source.into_config()?;
            let docker = connect().await?;
            let save = nodeimage::bundle::save(&cfg, &args.output, &docker, &reporter);
            let saved = guard::guarded(&docker, &reporter, save).await?;
            reporter.info(format!(
                "{} images ({}), {:.0} MB",
                saved.images.len(),
                saved.summary,
                saved.size as f64 / 1e6
            ));
            println!("{}", args.output.display());
        }
        Command::Verify(args) => {
            let output = args.output;
            let cfg = args.into_config()?;
            let docker = connect().await?;
            let (mut report, result) = match guard::guarded(&docker, &reporter, async {
                Ok(verify::verify(&cfg, &docker, &reporter).await)
            })
            .await
            {
                Ok(done) => done,
                Err(interrupted) => return Err(interrupted),
            };
            report.finish(result.as_ref().err().map(one_line));
            match output {
                cli::Output::Json => println!("{}", report.to_json()),
                cli::Output::Text => print!("{}", report.to_text()),
            }
            result.with_context(|| format!("verifying {}", cfg.image))?;
        }
        Command::Clean(args) => {
            let cfg = clean::CleanConfig { all: args.all, dry_run: args.dry_run };
            let docker = connect().await?;
            for name in clean::clean(cfg, &docker, &reporter).await? {
                println!("{name}");
            }
        }
    }
    Ok(())
}

async fn save_image(
    docker: &Docker,
    reporter: &Reporter,
    image: &str,
    target: &transfer::SaveTarget,
) -> Result<()> {
    guard::guarded(docker, reporter, transfer::save(docker, image, target, reporter))
        .await
        .with_context(|| format!("saving {image} to {}", target.path.display()))?;
    Ok(())
}

async fn connect() -> Result<Docker> {
    Docker::connect(Labels::for_this_process()).await.context("connecting to Docker")
}

/// The innermost cause of an error: for network errors, the part that says what happened
/// ("Connection refused") rather than the wrappers around it.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An error as one line: the context chain joined by ": ", inner newlines folded.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// 130/143 after SIGINT/SIGTERM, as shells report them; 1 for every other failure.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<guard::Interrupted>().map(|i| i.exit_code).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_on_one_line() {
        let err = anyhow::anyhow!("inner\nsecond line").context("outer");
        assert_eq!(one_line(&err), "outer: inner; second line");
        assert_eq!(exit_code(&err), 1);
        let sig: anyhow::Error = guard::Interrupted { name: "SIGINT", exit_code: 130 }.into();
        assert_eq!(exit_code(&sig.context("building")), 130);
    }
}
