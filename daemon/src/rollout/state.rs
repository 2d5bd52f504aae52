//! Where a rollout in waves keeps its progress: one JSON file per app and
//! channel in the store (`rollouts/<app>@<channel>.json`), written
//! atomically (a temp file, fsync, rename), so that a restarted `lanseed
//! rollout` resumes the wave it was in, with the time that wave began.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lanseed_protocol::store::durable::write_atomic;
use serde::{Deserialize, Serialize};

/// The folder of the store the files live in.
pub const DIR: &str = "rollouts";

/// How a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Outcome {
    /// In progress.
    Running,
    /// The last wave is through.
    Done,
    /// Stopped by the health gate.
    Halted {
        /// Why.
        why: String,
    },
    /// Another release of the channel was published meanwhile, or its
    /// share was changed by hand.
    Superseded {
        /// What happened.
        why: String,
    },
}

/// A rollout in waves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaveState {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// The bundle rolled out (hex).
    pub bundle: String,
    /// Its version.
    pub version: String,
    /// The waves' shares, in basis points, rising.
    pub waves: Vec<u16>,
    /// The wave in progress (index into `waves`).
    pub wave: usize,
    /// When it began (Unix seconds).
    pub began: u64,
    /// Least time in a wave, seconds.
    pub dwell: u64,
    /// Highest failure rate tolerated, 0.0..=1.0.
    pub max_failure_rate: f64,
    /// The version `--on-halt back-to` goes back to, if set.
    pub on_halt_back_to: Option<String>,
    /// Whether gateway stats count for the gate.
    pub count_gateway_stats: bool,
    /// How it stands.
    pub outcome: Outcome,
    /// Devices that counted for the gate during the rollout, with when
    /// they were last seen (Unix seconds): a device the node forgot (it
    /// restarted) is still waited for.
    #[serde(default)]
    pub devices: BTreeMap<String, u64>,
}

/// Why a state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("rollout state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a rollout state.
    #[error("rollout state {path} is damaged ({source}); remove it to start the rollout afresh")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The state file of `app` on `channel` in the store at `root` (both
/// names are checked release fields: no `/`).
pub fn path(root: &Path, app: &str, channel: &str) -> PathBuf {
    root.join(DIR).join(format!("{app}@{channel}.json"))
}

/// Reads the state at `path`, `None` when there is none.
pub fn load(path: &Path) -> Result<Option<WaveState>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.into(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Damaged {
            path: path.into(),
            source,
        })
}

/// Writes `state` at `path`, atomically.
pub fn save(path: &Path, state: &WaveState) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.into(),
        source,
    };
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
    let json = serde_json::to_vec_pretty(state).expect("a rollout state serializes");
    write_atomic(path, &json).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_survives_a_save_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "com.example.kiosk", "production");
        assert!(load(&p).unwrap().is_none());
        let s = WaveState {
            app: "com.example.kiosk".into(),
            channel: "production".into(),
            bundle: "ab".repeat(32),
            version: "2.0.0".into(),
            waves: vec![1_000, 2_500, 10_000],
            wave: 1,
            began: 1_800_000_000,
            dwell: 600,
            max_failure_rate: 0.02,
            on_halt_back_to: Some("1.0.0".into()),
            count_gateway_stats: false,
            outcome: Outcome::Halted {
                why: "too many failures".into(),
            },
            devices: BTreeMap::from([("kiosk-1".to_owned(), 1_800_000_000)]),
        };
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), Some(s));
        std::fs::write(&p, "{").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("damaged") && e.contains("production.json"),
            "{e}"
        );
    }
}
