//! How releases and reports look on the terminal and in `--json`.
//!
//! JSON keys are snake_case and stable: scripts rely on `app`, `channel`,
//! `version`, `seq` and `bundle_id` at least.

use lanseed_protocol::SignedRelease;
use serde::Serialize;

/// A release as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct ReleaseView {
    pub app: String,
    pub channel: String,
    pub version: String,
    pub seq: u64,
    pub bundle_id: String,
    pub release_id: String,
    pub created: u64,
    pub created_at: String,
    pub rollout_percent: f64,
    pub min_native_version: Option<String>,
    pub expires: Option<u64>,
    pub notes: Option<String>,
    pub publisher: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capgo: Option<CapgoView>,
}

/// A release's Capgo encryption v2 artefacts, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct CapgoView {
    /// The payload bundle (its bundle.zip.enc is the encrypted zip).
    pub bundle_id: String,
    pub key_id: String,
    pub session_key: String,
    pub checksum: String,
}

impl ReleaseView {
    pub fn new(signed: &SignedRelease) -> Self {
        let r = signed.release();
        ReleaseView {
            app: r.app.clone(),
            channel: r.channel.clone(),
            version: r.version.clone(),
            seq: r.seq,
            bundle_id: r.bundle_id.to_string(),
            release_id: signed.id().to_string(),
            created: r.created,
            created_at: timestamp(r.created),
            rollout_percent: r.rollout.percent(),
            min_native_version: r.min_native_version.clone(),
            expires: r.expires,
            notes: r.notes.clone(),
            publisher: signed.publisher().to_string(),
            capgo: r.capgo.as_ref().map(|c| CapgoView {
                bundle_id: c.bundle_id.to_string(),
                key_id: c.key_id.clone(),
                session_key: c.session_key_text(),
                checksum: c.checksum_text(),
            }),
        }
    }
}

/// Unix seconds as an RFC 3339 UTC time.
/// Times past year 9999 (a signed release may say anything) print as the
/// raw number.
pub fn timestamp(secs: u64) -> String {
    const YEAR_9999_END: u64 = 253_402_300_799;
    if secs > YEAR_9999_END {
        return format!("@{secs}");
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A byte count for people: 1.4 MiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_timestamps_do_not_panic() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(u64::MAX), format!("@{}", u64::MAX));
        assert_eq!(timestamp(253_402_300_799), "9999-12-31T23:59:59Z");
    }
}
