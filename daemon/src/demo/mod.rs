//! `lanseed demo`: the whole story on loopback in one command.
//!
//! It makes a publisher key and a fleet key, packs the embedded example
//! app as three signed releases ([`app`], [`publish`]), starts one seeder
//! and three device agents as real nodes, child processes of this binary
//! talking libp2p over 127.0.0.1 ([`nodes`], [`discovery`]), opens each
//! device's page in headless Chromium or the built-in page driver
//! ([`confirm`]), then publishes v1 (installed and confirmed everywhere),
//! a broken v2 (rolled back everywhere) and v3, and prints what happened
//! ([`report`], from the nodes' logs and status: [`logs`]). [`story`]
//! tells it in order; [`ctl`] asks the nodes and waits.
//!
//! Nothing leaves loopback: the nodes listen on 127.0.0.1, use mDNS on
//! `lo` only (or `--peer` where `lo` has no multicast), and only the run's
//! own nodes connect to each other (a fleet key made for the run). It runs
//! in a temporary folder (`--dir` to choose one and keep it), and stops
//! every process it started at the end, on an error, and on Ctrl-C.

pub mod app;
pub mod confirm;
pub mod ctl;
pub mod discovery;
pub mod error;
pub mod logs;
pub mod nodes;
pub mod publish;
pub mod report;
pub mod story;

use std::path::{Path, PathBuf};

pub use confirm::ConfirmWith;
pub use error::DemoError;

/// What `lanseed demo` was given.
pub struct DemoOptions {
    /// The folder to run in and keep, if any.
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    pub json: bool,
    /// Leave the devices serving until interrupted.
    pub keep: bool,
    /// Who confirms.
    pub confirm_with: ConfirmWith,
}

/// Runs the demo.
pub fn run(opts: DemoOptions) -> Result<(), DemoError> {
    let (dir, kept) = match opts.dir {
        Some(d) => (prepare(&d)?, true),
        None => (temp_dir()?, false),
    };
    let result = ctl::Ctl::new(&dir).and_then(|ctl| {
        story::run(
            &story::Options {
                dir: dir.clone(),
                dir_kept: kept,
                json: opts.json,
                keep: opts.keep,
                confirm_with: opts.confirm_with,
            },
            &ctl,
        )
    });
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// `--dir`: made absolute, created, and required to be empty.
fn prepare(dir: &Path) -> Result<PathBuf, DemoError> {
    let dir = std::path::absolute(dir).map_err(DemoError::io("cannot resolve", dir))?;
    std::fs::create_dir_all(&dir).map_err(DemoError::io("cannot create", &dir))?;
    let mut entries = std::fs::read_dir(&dir).map_err(DemoError::io("cannot read", &dir))?;
    if entries.next().is_some() {
        return Err(DemoError::DirNotEmpty(dir));
    }
    Ok(dir)
}

/// A new folder under the system's temporary directory.
fn temp_dir() -> Result<PathBuf, DemoError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("lanseed-demo-{}-{nanos:08x}", std::process::id()));
    std::fs::create_dir(&dir).map_err(DemoError::io("cannot create", &dir))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chosen_folder_must_be_empty() {
        let base = tempfile::tempdir().unwrap();
        let fresh = base.path().join("fresh");
        assert_eq!(prepare(&fresh).unwrap(), fresh);
        assert_eq!(prepare(&fresh).unwrap(), fresh, "an empty folder is fine");
        std::fs::write(fresh.join("mine.txt"), "x").unwrap();
        assert!(matches!(prepare(&fresh), Err(DemoError::DirNotEmpty(_))));
        assert!(
            fresh.join("mine.txt").is_file(),
            "nothing of the user's is touched"
        );
    }
}
