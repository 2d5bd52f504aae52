//! Headless Chromium on one device's page, kept open for the whole demo:
//! the page's `client.js` reloads it whenever the device switches bundles,
//! so each new bundle is loaded, and confirmed by its own script, as in a
//! kiosk.
//!
//! Chromium starts helper processes of its own, so it runs in a process
//! group of its own, and the whole group is stopped on drop. Its sandbox
//! is off (`--no-sandbox`: it runs as root in containers and CI, and loads
//! only the demo's own pages on loopback); features that would look for
//! devices on the network (media router, background fetches) are off, so
//! it sends nothing beyond loopback either.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::demo::error::DemoError;

/// The flags of every demo browser.
const FLAGS: [&str; 12] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
    "--mute-audio",
    "--disable-features=MediaRouter,DialMediaRouteProvider,CastMediaRouteProvider,OptimizationHints",
];

/// How long Chromium has to stop on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running headless Chromium.
pub struct Browser {
    child: Child,
}

impl Browser {
    /// Opens `url` in `program`, with a fresh profile and a log under `dir`.
    pub fn open(program: &Path, url: &str, dir: &Path) -> Result<Browser, DemoError> {
        let profile = dir.join("browser-profile");
        std::fs::create_dir_all(&profile).map_err(DemoError::io("cannot create", &profile))?;
        let log_path = dir.join("browser.log");
        let log =
            std::fs::File::create(&log_path).map_err(DemoError::io("cannot create", &log_path))?;
        let child = Command::new(program)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|source| DemoError::Spawn {
                name: "the browser".into(),
                program: program.display().to_string(),
                source,
            })?;
        Ok(Browser { child })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Helpers that outlived the browser, or a browser that did not stop.
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
