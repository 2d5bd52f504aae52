//! `lanseed`: the one binary. Parses the command line, runs the command,
//! and turns any error into one clear sentence and a non-zero exit.

mod cli;
mod cmd;
mod output;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    init_logging();
    if let Err(e) = cmd::run(cli) {
        // `{:#}` prints the error and its causes on one line.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Logs go to stderr; `RUST_LOG` picks what (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
