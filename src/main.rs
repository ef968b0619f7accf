use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nodeimg::cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nodeimg::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", nodeimg::one_line(&err));
            ExitCode::from(nodeimg::exit_code(&err))
        }
    }
}
