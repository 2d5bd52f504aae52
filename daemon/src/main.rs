//! `lanseed`: the one binary. Parses the command line, runs the command,
//! and turns any error into one clear sentence and a non-zero exit.

mod cli;
mod cmd;
mod config;
mod control_socket;
mod cputime;
mod demo;
mod dev;
mod device;
mod gateway;
mod memory;
mod metrics;
mod node;
mod origin;
mod output;
mod rollout;

fn main() {
    memory::limit_malloc_arenas();
    raise_open_file_limit();
    let cli = config::parse_cli();
    init_logging();
    if let Err(e) = cmd::run(cli) {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes as one line, skipping a cause whose text the
/// line already holds (many of our errors quote their cause).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Raises the soft limit on open files to the hard one: a node holds
/// peers' connections, the gateway's and the store's files at once, and
/// the usual soft limit (1,024) is lower than its own caps add up to.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

/// Logs go to stderr; `RUST_LOG` picks what (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A log that cannot be written (stderr redirected to a full disk) is
    // dropped: by default the subscriber would report that with
    // `eprintln!`, which panics when stderr fails, and take the node down.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
}
