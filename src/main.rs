//! The `autoscaler-cloudify` binary: parses flags and hands over to the library.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "autoscaler-cloudify", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Cloudify Manager simulator alone.
    Simulator(autoscaler_cloudify::simulator::SimulatorArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulator(args) => autoscaler_cloudify::simulator::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
