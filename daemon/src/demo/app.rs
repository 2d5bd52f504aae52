//! The example app (`examples/hello-kiosk`), embedded in the binary so an
//! installed `lanseed` runs the demo too, and the builds the demo derives
//! from it: the builtin bundle the devices ship with, v1 (the example as
//! it is), a broken v2 and a healthy v3.
//!
//! v2 is broken the way real builds break: its `index.html` still loads
//! `assets/app.js`, the script that calls `notifyAppReady`, but the bundle
//! lacks it; the page loads, the app never confirms, and every device rolls
//! back.

use std::path::Path;

/// The example's files, as `examples/hello-kiosk` holds them.
const EXAMPLE: [(&str, &[u8]); 3] = [
    (
        "index.html",
        include_bytes!("../../../examples/hello-kiosk/index.html"),
    ),
    (
        "assets/style.css",
        include_bytes!("../../../examples/hello-kiosk/assets/style.css"),
    ),
    (
        "assets/app.js",
        include_bytes!("../../../examples/hello-kiosk/assets/app.js"),
    ),
];

/// The script that confirms the app is healthy (v2 lacks it).
pub const READY_SCRIPT: &str = "assets/app.js";

/// The version line of the example's page, replaced in derived builds.
const VERSION_LINE: &str = "version 1.0.0";

/// The app id the demo publishes under.
pub const APP: &str = "com.example.hello";

/// One build the demo uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Shipped inside the native app: the floor of every rollback.
    Builtin,
    /// The example as it is.
    V1,
    /// Broken: `index.html` loads [`READY_SCRIPT`], which it lacks.
    V2,
    /// Healthy again.
    V3,
}

impl Build {
    /// The builds published in turn.
    pub const PUBLISHED: [Build; 3] = [Build::V1, Build::V2, Build::V3];

    /// Its version (semver).
    pub fn version(self) -> &'static str {
        match self {
            Build::Builtin => "0.9.0",
            Build::V1 => "1.0.0",
            Build::V2 => "2.0.0",
            Build::V3 => "3.0.0",
        }
    }

    /// Its folder name under the demo's `apps/`.
    pub fn folder(self) -> &'static str {
        match self {
            Build::Builtin => "builtin",
            Build::V1 => "v1",
            Build::V2 => "v2",
            Build::V3 => "v3",
        }
    }

    /// Whether a device should keep it (false: it rolls back).
    pub fn healthy(self) -> bool {
        self != Build::V2
    }

    /// Its files: relative path and bytes.
    pub fn files(self) -> Vec<(&'static str, Vec<u8>)> {
        let label = match self {
            Build::Builtin => format!("version {} (builtin)", self.version()),
            _ => format!("version {}", self.version()),
        };
        EXAMPLE
            .iter()
            .filter(|(path, _)| self.healthy() || *path != READY_SCRIPT)
            .map(|(path, bytes)| {
                let bytes = if *path == "index.html" {
                    String::from_utf8_lossy(bytes)
                        .replace(VERSION_LINE, &label)
                        .into_bytes()
                } else {
                    bytes.to_vec()
                };
                (*path, bytes)
            })
            .collect()
    }

    /// Writes its files under `dir` (created).
    pub fn write(self, dir: &Path) -> std::io::Result<()> {
        for (path, bytes) in self.files() {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(file, bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(build: Build) -> String {
        let files = build.files();
        let (_, html) = files.iter().find(|(p, _)| *p == "index.html").unwrap();
        String::from_utf8(html.clone()).unwrap()
    }

    fn has(build: Build, path: &str) -> bool {
        build.files().iter().any(|(p, _)| *p == path)
    }

    #[test]
    fn v1_is_the_example_as_it_is() {
        let files = Build::V1.files();
        assert_eq!(files.len(), EXAMPLE.len());
        for ((p, b), (ep, eb)) in files.iter().zip(EXAMPLE.iter()) {
            assert_eq!((p, b.as_slice()), (ep, *eb));
        }
    }

    #[test]
    fn every_page_loads_the_client_and_the_ready_script() {
        for build in [Build::Builtin, Build::V1, Build::V2, Build::V3] {
            let html = page(build);
            assert!(html.contains("/__lanseed/client.js"), "{build:?}");
            assert!(html.contains(READY_SCRIPT), "{build:?}");
            assert!(
                html.contains(&format!("version {}", build.version())),
                "{build:?} shows its version"
            );
        }
    }

    #[test]
    fn only_v2_lacks_the_script_that_confirms() {
        assert!(!has(Build::V2, READY_SCRIPT));
        for build in [Build::Builtin, Build::V1, Build::V3] {
            assert!(has(build, READY_SCRIPT), "{build:?}");
        }
    }

    #[test]
    fn every_build_is_a_different_bundle() {
        let pages: std::collections::HashSet<String> =
            [Build::Builtin, Build::V1, Build::V2, Build::V3]
                .into_iter()
                .map(page)
                .collect();
        assert_eq!(pages.len(), 4);
    }

    #[test]
    fn the_ready_script_calls_notify_app_ready() {
        let (_, js) = EXAMPLE.iter().find(|(p, _)| *p == READY_SCRIPT).unwrap();
        assert!(String::from_utf8_lossy(js).contains("notifyAppReady"));
    }
}
