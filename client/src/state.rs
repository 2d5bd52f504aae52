//! The device's state: which bundles it holds, which one runs, which one
//! runs next, which failed. One JSON file in the store
//! (`STORE/device/state.json`), replaced atomically on every change; it is
//! also the active-bundle pointer (see [`crate::install`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which step of the updater a state write belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A downloaded bundle is scheduled.
    Download,
    /// A bundle becomes current.
    Switch,
    /// A trial ends in success.
    Trial,
    /// A failed trial is rolled back.
    Rollback,
    /// Anything else (reset, delete, channel).
    State,
}

impl Phase {
    fn labels(self) -> [&'static str; 4] {
        match self {
            Phase::Download => [
                "download: state written",
                "download: state synced",
                "download: state renamed",
                "download: dir synced",
            ],
            Phase::Switch => [
                "switch: state written",
                "switch: state synced",
                "switch: state renamed",
                "switch: dir synced",
            ],
            Phase::Trial => [
                "trial: state written",
                "trial: state synced",
                "trial: state renamed",
                "trial: dir synced",
            ],
            Phase::Rollback => [
                "rollback: state written",
                "rollback: state synced",
                "rollback: state renamed",
                "rollback: dir synced",
            ],
            Phase::State => [
                "state: written",
                "state: synced",
                "state: renamed",
                "state: dir synced",
            ],
        }
    }
}

/// The id of the builtin bundle in the state.
pub const BUILTIN: &str = "builtin";

/// Capgo's bundle states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleStatus {
    /// Being fetched.
    Downloading,
    /// Verified and materialised, not scheduled.
    Pending,
    /// Will become current at the next switch.
    Next,
    /// Running on trial, waiting for notifyAppReady.
    Trial,
    /// Confirmed healthy.
    Success,
    /// Failed its trial; never installed again.
    Error,
}

/// One downloaded bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// Version of its release.
    pub version: String,
    /// Channel of its release.
    pub channel: String,
    /// Sequence number of its release.
    pub seq: u64,
    /// Its state.
    pub status: BundleStatus,
}

/// Everything the updater persists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// This device's id (the rollout draw uses it).
    pub device_id: String,
    /// The native app version the state belongs to.
    pub native_version: String,
    /// The channel the device follows.
    pub channel: String,
    /// Bundles on disk, by bundle id.
    pub bundles: BTreeMap<String, BundleRecord>,
    /// The bundle served now ([`BUILTIN`] or a bundle id).
    pub current: String,
    /// The last bundle confirmed healthy: where a failed trial goes back to.
    pub fallback: String,
    /// The bundle to switch to at the next switch.
    pub next: Option<String>,
    /// Bundles that failed, with the sequence number they failed at.
    pub failed: BTreeMap<String, u64>,
    /// Highest sequence number installed per channel (no downgrade by
    /// replay).
    pub installed_seq: BTreeMap<String, u64>,
}

impl DeviceState {
    /// A fresh state running the builtin bundle.
    pub fn new(device_id: String, native_version: String, channel: String) -> Self {
        DeviceState {
            device_id,
            native_version,
            channel,
            bundles: BTreeMap::new(),
            current: BUILTIN.into(),
            fallback: BUILTIN.into(),
            next: None,
            failed: BTreeMap::new(),
            installed_seq: BTreeMap::new(),
        }
    }

    /// Where the state lives in the store at `root`.
    pub fn path(root: &Path) -> PathBuf {
        root.join("device").join("state.json")
    }

    /// Reads the state, `None` when the device has none yet.
    pub fn load(root: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(Self::path(root)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the state atomically and durably; `phase` names the crash
    /// points of the write (see `lanseed_protocol::crashpoint`).
    pub fn save(&self, root: &Path, phase: Phase) -> std::io::Result<()> {
        let path = Self::path(root);
        std::fs::create_dir_all(path.parent().expect("state has a parent"))?;
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        lanseed_protocol::store::durable::write_atomic_labeled(&path, &bytes, phase.labels())
    }

    /// Removes temp files of state writes a crash interrupted
    /// (`.state.json.<pid>.tmp`).
    pub fn clean_leftovers(root: &Path) -> std::io::Result<()> {
        let path = Self::path(root);
        let dir = path.parent().expect("state has a parent");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".state.json.") && name.ends_with(".tmp") {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    /// The bundle on trial, if the current one is.
    pub fn trial(&self) -> Option<&str> {
        let id = self.current.as_str();
        (self.bundles.get(id)?.status == BundleStatus::Trial).then_some(id)
    }
}
