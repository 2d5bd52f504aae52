//! What can stop the demo, each as one sentence that says what to do.

use std::path::PathBuf;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The folder to run in holds something already.
    #[error(
        "--dir {0} is not empty; give a new or empty folder (the demo never deletes your files)"
    )]
    DirNotEmpty(PathBuf),
    /// A file or folder of the demo could not be made or read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What it was doing.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Keys, packing or the release file failed.
    #[error("cannot {what}: {source}")]
    Publish {
        /// What it was doing.
        what: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A node process could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// The node's name.
        name: String,
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A node process ended on its own.
    #[error("{name} stopped unexpectedly ({status}); its log is {}", log.display())]
    NodeDied {
        /// The node's name.
        name: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its log.
        log: PathBuf,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {secs} s; the nodes' logs are in {}", dir.display())]
    Timeout {
        /// What was awaited.
        what: String,
        /// The time allowed.
        secs: u64,
        /// The demo's folder.
        dir: PathBuf,
    },
    /// Something went other than the story says.
    #[error("{what}; see {}", log.display())]
    Unexpected {
        /// What happened.
        what: String,
        /// The log to look at.
        log: PathBuf,
    },
    /// Chromium was asked for and is not installed.
    #[error(
        "--confirm-with chromium: no chromium, chromium-browser or google-chrome on PATH; install one or use --confirm-with driver"
    )]
    NoChromium,
    /// SIGINT or SIGTERM.
    #[error("interrupted; every node the demo started is stopped")]
    Interrupted,
}

impl DemoError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| DemoError::Io { what, path, source }
    }

    /// A failure of the publishing side while doing `what`.
    pub fn publish<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        what: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| DemoError::Publish {
            what,
            source: e.into(),
        }
    }
}
