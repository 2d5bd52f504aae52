//! Who plays the app on each device: opens the device's page, follows it
//! as the device swaps bundles, and lets the app confirm itself.
//!
//! - Headless Chromium where it is installed ([`chromium`]): the real
//!   page runs, `client.js` reloads it when the device switches bundles,
//!   and `assets/app.js` calls `notifyAppReady`.
//! - Otherwise the built-in page driver ([`driver`]): on every bundle
//!   switch it loads the page and every script the page references, and
//!   calls the confirmation endpoint `client.js` calls only if they all
//!   load.
//!
//! Either way a broken bundle is never confirmed by the demo itself: the
//! page has to load whole.

pub mod chromium;
pub mod driver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::DemoError;

/// What `--confirm-with` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfirmWith {
    /// Chromium where it is installed, else the page driver.
    Auto,
    /// Headless Chromium (an error when it is not installed).
    Chromium,
    /// The built-in page driver.
    Driver,
}

/// Who confirmed, in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmer {
    /// Headless Chromium.
    Chromium,
    /// The built-in page driver.
    PageDriver,
}

/// Names a Chromium may have on PATH.
const CHROMIUM_NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The first Chromium in the directories of `path` (a `$PATH` value)
/// for which `is_file` holds.
pub fn find_chromium_in(path: &str, is_file: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .flat_map(|dir| CHROMIUM_NAMES.iter().map(move |n| dir.join(n)))
        .find(|p| is_file(p))
}

/// Chromium on this machine's `$PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    find_chromium_in(&path, Path::is_file)
}

/// The confirmer for `with`, given the Chromium found (if any).
pub fn choose(
    with: ConfirmWith,
    found: Option<PathBuf>,
) -> Result<(Confirmer, Option<PathBuf>), DemoError> {
    match (with, found) {
        (ConfirmWith::Driver, _) => Ok((Confirmer::PageDriver, None)),
        (ConfirmWith::Auto | ConfirmWith::Chromium, Some(b)) => Ok((Confirmer::Chromium, Some(b))),
        (ConfirmWith::Auto, None) => Ok((Confirmer::PageDriver, None)),
        (ConfirmWith::Chromium, None) => Err(DemoError::NoChromium),
    }
}

/// One device's page, open until dropped.
pub enum Page {
    /// In Chromium.
    Chromium {
        /// Stopped on drop.
        _browser: chromium::Browser,
    },
    /// Followed by the page driver.
    Driver {
        /// Stopped on drop.
        _driver: driver::Driver,
    },
}

impl Page {
    /// Opens the page a device serves at `serve` (on loopback). Chromium
    /// keeps its profile and log under `dir`.
    pub fn open(
        confirmer: Confirmer,
        browser: Option<&Path>,
        serve: SocketAddr,
        dir: &Path,
    ) -> Result<Page, DemoError> {
        match (confirmer, browser) {
            (Confirmer::Chromium, Some(b)) => Ok(Page::Chromium {
                _browser: chromium::Browser::open(b, &format!("http://{serve}/"), dir)?,
            }),
            _ => Ok(Page::Driver {
                _driver: driver::Driver::start(serve)?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_chromium_where_it_is() {
        let b = PathBuf::from("/usr/bin/chromium");
        assert_eq!(
            choose(ConfirmWith::Auto, Some(b.clone())).unwrap(),
            (Confirmer::Chromium, Some(b.clone()))
        );
        assert_eq!(
            choose(ConfirmWith::Auto, None).unwrap(),
            (Confirmer::PageDriver, None)
        );
        assert_eq!(
            choose(ConfirmWith::Driver, Some(b)).unwrap(),
            (Confirmer::PageDriver, None)
        );
        assert!(matches!(
            choose(ConfirmWith::Chromium, None),
            Err(DemoError::NoChromium)
        ));
    }

    #[test]
    fn chromium_is_looked_for_under_its_usual_names_in_path_order() {
        let found = find_chromium_in("/a:/b", |p| {
            p == Path::new("/b/chromium") || p == Path::new("/a/google-chrome")
        });
        assert_eq!(found, Some(PathBuf::from("/a/google-chrome")));
        assert_eq!(find_chromium_in("/a:/b", |_| false), None);
        assert_eq!(find_chromium_in("", |_| true), None);
    }
}
