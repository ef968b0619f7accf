//! One file per subcommand: each validates its arguments (through `config`), runs its
//! pipeline under the cleanup guard, and prints the result. Results go to stdout, progress
//! to stderr.

mod build_base_image;
mod build_node_image;
mod build_node_variant;
mod build_report;
pub mod clean;
mod cluster_update;
mod diff;
mod images_add;
mod images_list;
mod images_save;
mod load;
mod save;
mod verify;

use anyhow::{Context, Result};

use crate::cli::{BuildCommand, Cli, ClusterCommand, Command, ImagesCommand};
use crate::docker::{Docker, Labels};
use crate::progress::{Reporter, Verbosity};

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<()> {
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    let reporter = Reporter::new(verbosity);
    for line in cli.deprecations() {
        reporter.warn(line);
    }
    match cli.command {
        Command::Build(BuildCommand::BaseImage(args)) => build_base_image::run(args, &reporter).await,
        Command::Build(BuildCommand::NodeImage(args)) => build_node_image::run(*args, &reporter).await,
        Command::Build(BuildCommand::NodeVariant(args)) => build_node_variant::run(*args, &reporter).await,
        Command::Images(ImagesCommand::Add(args)) => images_add::run(*args, &reporter).await,
        Command::Images(ImagesCommand::List(args)) => images_list::run(*args, &reporter).await,
        Command::Images(ImagesCommand::Save(args)) => images_save::run(*args, &reporter).await,
        Command::Save(args) => save::run(args, &reporter).await,
        Command::Load(args) => load::run(args, &reporter).await,
        Command::Verify(args) => verify::run(args, &reporter).await,
        Command::Diff(args) => diff::run(args, &reporter).await,
        Command::Clean(args) => clean::run(args, &reporter).await,
        Command::Cluster(ClusterCommand::Update(args)) => cluster_update::run(*args, &reporter).await,
    }
}

/// Connects to the engine `DOCKER_HOST` names and says which one answered: the first
/// progress line of every command that touches the engine.
async fn connect(reporter: &Reporter) -> Result<Docker> {
    let docker = Docker::connect(Labels::for_this_process()).await.context("connecting to Docker")?;
    reporter.info(format!("engine: {} at {}", docker.engine(), docker.host()));
    Ok(docker)
}
