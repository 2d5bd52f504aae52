//! The demo's own runtime: it asks its nodes through their control
//! sockets (the same requests as `lanseed status` and `lanseed device
//! list`), notices SIGINT and SIGTERM, and waits for conditions with a
//! deadline, giving up at once when interrupted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::DemoError;
use crate::device::control::{DeviceRequest, request};
use crate::node::control::request_status;

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// Control requests, signals and waits.
pub struct Ctl {
    rt: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    dir: PathBuf,
}

impl Ctl {
    /// A runtime that watches for SIGINT and SIGTERM from now on; `dir`
    /// is named in timeout errors (the logs are there).
    pub fn new(dir: &Path) -> Result<Ctl, DemoError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(DemoError::io("cannot start a runtime in", dir))?;
        let stop = Arc::new(AtomicBool::new(false));
        let signal = rt
            .block_on(async { crate::cmd::shutdown_signal() })
            .map_err(|e| DemoError::Io {
                what: "cannot watch signals for",
                path: dir.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let flag = stop.clone();
        rt.spawn(async move {
            signal.await;
            flag.store(true, Ordering::SeqCst);
        });
        Ok(Ctl {
            rt,
            stop,
            dir: dir.to_owned(),
        })
    }

    /// Whether SIGINT or SIGTERM came.
    pub fn interrupted(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// `lanseed status --json` of the node on `store`, if it answers.
    pub fn status(&self, store: &Path) -> Option<serde_json::Value> {
        self.rt.block_on(request_status(store)).ok()
    }

    /// `lanseed device list` of the device on `store`, if it answers.
    pub fn device(&self, store: &Path) -> Option<serde_json::Value> {
        self.rt
            .block_on(request(store, &DeviceRequest::List))
            .ok()
            .filter(|v| v.get("error").is_none())
    }

    /// Calls `check` until it gives a value, for at most `timeout`.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<Option<T>, DemoError>,
    ) -> Result<T, DemoError> {
        let start = Instant::now();
        loop {
            if self.interrupted() {
                return Err(DemoError::Interrupted);
            }
            if let Some(t) = check()? {
                return Ok(t);
            }
            if start.elapsed() > timeout {
                return Err(DemoError::Timeout {
                    what: what.to_owned(),
                    secs: timeout.as_secs(),
                    dir: self.dir.clone(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for SIGINT or SIGTERM.
    pub fn until_interrupted(&self) {
        while !self.interrupted() {
            std::thread::sleep(POLL * 4);
        }
    }
}
