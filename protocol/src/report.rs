//! Device reports: how a device tells its peers what it runs, whenever
//! its state changes and every [`REPORT_EVERY`]. Every node keeps the
//! reports it hears in one table of devices (the node's `devices` module);
//! `lanseed dev` prints them as they arrive, rollouts count them.
//!
//! A report is small and bounded: every string has a length limit and a
//! character set ([`DeviceReport::check`]), so that one encoded report is
//! at most [`MAX_REPORT_BYTES`]. It is not signed: who sent it is the peer
//! id of the connection it came on, and whether that peer was admitted by
//! the fleet key decides whether the row counts (see the node).
//!
//! The last event uses the action names of Capgo's stats (`set`,
//! `update_fail`, `download_fail`, `download_complete`, `app_ready`, …), so
//! the Capgo gateway's stats and lanseed reports fill the same table.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_APP_LEN, MAX_CHANNEL_LEN, MAX_VERSION_LEN};

/// How often a device reports when nothing changes.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Longest status or event name.
pub const MAX_NAME_LEN: usize = 32;
/// Largest encoded report (every field at its limit, with room for the
/// length prefixes and the numbers).
pub const MAX_REPORT_BYTES: usize = MAX_DEVICE_ID_LEN
    + MAX_APP_LEN
    + MAX_CHANNEL_LEN
    + 33
    + 2 * MAX_VERSION_LEN
    + 2 * MAX_NAME_LEN
    + 33
    + 64;

/// What a device runs, as it reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// The device's id (the rollout draw uses it).
    pub device_id: String,
    /// App id.
    pub app: String,
    /// The channel it follows.
    pub channel: String,
    /// The current bundle; `None` for the builtin one.
    pub bundle: Option<[u8; 32]>,
    /// Its version (`builtin` for the builtin one).
    pub version: String,
    /// The sequence number of its release (0 for the builtin one).
    pub seq: u64,
    /// The native app's version.
    pub native_version: String,
    /// The current bundle's status (`success`, `trial`, …).
    pub status: String,
    /// The last event, by Capgo's stats action name, if any.
    pub event: Option<String>,
    /// When the report was made, seconds since the Unix epoch.
    pub time: u64,
    /// The bundle whose trial failed last on this device (rolled back),
    /// if any: what a rollout's health gate counts as a failure of that
    /// bundle, whatever the device reported since.
    pub failed: Option<[u8; 32]>,
}

/// Why a report is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// A field is empty, too long, or has characters it may not have.
    #[error("report field {field} is not valid: {value:?}")]
    Field {
        /// Which.
        field: &'static str,
        /// Its value, cut to 64 characters.
        value: String,
    },
}

/// Characters of ids and names: ASCII letters, digits, `-`, `_`, `.`,
/// `:`, `+` (versions), 1..=`max` of them.
fn token(field: &'static str, value: &str, max: usize) -> Result<(), ReportError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+'));
    ok.then_some(()).ok_or_else(|| ReportError::Field {
        field,
        value: value.chars().take(64).collect(),
    })
}

impl DeviceReport {
    /// Checks every field's length and characters.
    pub fn check(&self) -> Result<(), ReportError> {
        token("device_id", &self.device_id, MAX_DEVICE_ID_LEN)?;
        token("app", &self.app, MAX_APP_LEN)?;
        token("channel", &self.channel, MAX_CHANNEL_LEN)?;
        token("version", &self.version, MAX_VERSION_LEN)?;
        token("native_version", &self.native_version, MAX_VERSION_LEN)?;
        token("status", &self.status, MAX_NAME_LEN)?;
        if let Some(e) = &self.event {
            token("event", e, MAX_NAME_LEN)?;
        }
        Ok(())
    }

    /// The current bundle's id in hex, or `builtin`.
    pub fn bundle_id(&self) -> String {
        self.bundle
            .map_or_else(|| "builtin".to_owned(), hex::encode)
    }
}

/// Capgo's stats action for an updater event name (`set`, `updateFailed`,
/// …), as the plugin reports it.
pub fn capgo_action(event: &str) -> Option<&'static str> {
    Some(match event {
        "set" => "set",
        "updateFailed" => "update_fail",
        "downloadFailed" => "download_fail",
        "downloadComplete" => "download_complete",
        "appReady" => "app_ready",
        "updateAvailable" => "update_available",
        "appReloaded" => "app_reloaded",
        "download" => return None,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn report() -> DeviceReport {
        DeviceReport {
            device_id: "kiosk-7".into(),
            app: "com.example.kiosk".into(),
            channel: "production".into(),
            bundle: Some([7; 32]),
            version: "1.2.3".into(),
            seq: 42,
            native_version: "1.0.0".into(),
            status: "success".into(),
            event: Some("set".into()),
            time: 1_800_000_000,
            failed: Some([9; 32]),
        }
    }

    #[test]
    fn fields_are_checked() {
        assert_eq!(report().check(), Ok(()));
        let mut r = report();
        r.device_id = "x".repeat(MAX_DEVICE_ID_LEN + 1);
        assert!(r.check().is_err());
        let mut r = report();
        r.status = "succ ess".into();
        assert!(r.check().is_err());
        let mut r = report();
        r.event = Some(String::new());
        assert!(r.check().is_err());
        let mut r = report();
        r.version = "1.0.0-beta.1+build.5".into();
        assert_eq!(r.check(), Ok(()));
    }

    #[test]
    fn capgo_actions() {
        assert_eq!(capgo_action("updateFailed"), Some("update_fail"));
        assert_eq!(capgo_action("set"), Some("set"));
        assert_eq!(capgo_action("download"), None);
    }
}
