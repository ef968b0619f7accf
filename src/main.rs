use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nodeimg::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    match runtime.block_on(nodeimg::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", nodeimg::one_line(&err));
            ExitCode::from(nodeimg::exit_code(&err))
        }
    }
}
