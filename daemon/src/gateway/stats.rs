//! The plugin's stats, as rows of the node's devices table.
//!
//! `POST /stats` carries a JSON array of events (`sendStats` batches them,
//! at most 200, once a second), each the info object plus `action`,
//! `version_name`, `old_version_name`, `timestamp` (ms); the
//! `rate_limit_reached` event comes alone, as one object
//! (`sendRateLimitStatistic`). Plugin 8.51,
//! `android/src/main/java/ee/forgr/capacitor_updater/CapgoUpdater.java`.
//!
//! Each event becomes a [`DeviceReport`] ([`to_report`], pure): the
//! action is the report's event (Capgo's names are the table's names), a
//! status is derived from it ([`status_of`]), and the bundle and sequence
//! are looked up from the version name when the gateway knows it.

use lanseed_protocol::report::{DeviceReport, MAX_NAME_LEN};

use super::wire::{BadRequest, Info, text};

/// Most events taken from one request (the plugin sends at most 200).
pub const MAX_EVENTS: usize = 200;
/// Largest stats body.
pub const MAX_BODY: usize = 512 << 10;

/// Stats events the node takes per second, from all devices together
/// (anyone on the LAN can post stats, under any number of device ids:
/// each new id costs the node's devices table some work).
pub const EVENTS_PER_SEC: f64 = 200.0;
/// Events taken at once, before that rate applies.
pub const EVENTS_BURST: f64 = 2_000.0;

/// The node's budget of stats events (a token bucket): more are answered
/// `ok` and dropped, as a full queue's are.
#[derive(Debug)]
pub struct Budget {
    tokens: f64,
    at: std::time::Instant,
}

impl Budget {
    /// A full budget at `now`.
    pub fn new(now: std::time::Instant) -> Budget {
        Budget {
            tokens: EVENTS_BURST,
            at: now,
        }
    }

    /// Whether one more event may be taken at `now`.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * EVENTS_PER_SEC).min(EVENTS_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The events of a stats body: an array, or one object.
pub fn events(body: &[u8]) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, BadRequest> {
    let bad = |message: String| BadRequest {
        error: "invalid_json",
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let list = match value {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => vec![serde_json::Value::Object(o)],
        _ => return Err(bad("stats must be an array of events or one event".into())),
    };
    if list.len() > MAX_EVENTS {
        return Err(bad(format!("at most {MAX_EVENTS} events per request")));
    }
    Ok(list
        .into_iter()
        .filter_map(|v| match v {
            serde_json::Value::Object(o) => Some(o),
            _ => None,
        })
        .collect())
}

/// The plugin's actions that tell its version failed on the device (the
/// gate of `lanseed rollout --count-gateway-stats` counts them).
pub const FAILURES: [&str; 3] = ["update_fail", "checksum_fail", "download_fail"];

/// The bundle status an action tells of.
pub fn status_of(action: &str) -> &'static str {
    match action {
        "app_ready" => "success",
        "set" | "set_next" => "trial",
        "reset" => "success",
        a if a.ends_with("_fail") || a.ends_with("_error") => "error",
        _ => "unknown",
    }
}

/// The row one event makes: `channel` is the one the device follows,
/// `known` the bundle and sequence number of its version (when a release
/// has it), `now` this node's time (Unix seconds, used when the event has
/// no usable timestamp). `None` when the event has no action or a field
/// the table cannot hold.
pub fn to_report(
    info: &Info,
    channel: &str,
    known: Option<([u8; 32], u64)>,
    now: u64,
) -> Option<DeviceReport> {
    let action = text(&info.rest, "action").ok()??;
    if action.is_empty() || action.len() > MAX_NAME_LEN {
        return None;
    }
    let time = match info
        .rest
        .get("timestamp")
        .and_then(serde_json::Value::as_u64)
    {
        Some(ms) if ms / 1000 > 0 && ms / 1000 <= now + 86_400 => ms / 1000,
        _ => now,
    };
    let report = DeviceReport {
        device_id: info.device_id.clone(),
        app: info.app_id.clone(),
        channel: channel.to_owned(),
        bundle: known.map(|(b, _)| b),
        version: info.version_name.clone(),
        seq: known.map_or(0, |(_, s)| s),
        native_version: if info.version_build.is_empty() {
            "unknown".to_owned()
        } else {
            info.version_build.clone()
        },
        status: status_of(&action).to_owned(),
        failed: FAILURES
            .contains(&action.as_str())
            .then_some(known.map(|(b, _)| b))
            .flatten(),
        event: Some(action),
        time,
    };
    report.check().is_ok().then_some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str) -> Info {
        let body = format!(
            r#"{{"platform":"ios","device_id":"A1B2C3D4-0000-4000-8000-000000000001","app_id":"com.example.app",
            "version_build":"1.0","version_name":"1.2.0","action":"{action}","old_version_name":"1.1.0",
            "timestamp":1800000000123}}"#
        );
        Info::from_json(body.as_bytes()).unwrap()
    }

    #[test]
    fn an_event_becomes_a_row() {
        let r = to_report(
            &event("app_ready"),
            "production",
            Some(([3; 32], 7)),
            1_800_000_100,
        )
        .unwrap();
        assert_eq!(r.event.as_deref(), Some("app_ready"));
        assert_eq!(
            (r.status.as_str(), r.seq, r.time),
            ("success", 7, 1_800_000_000)
        );
        assert_eq!(r.version, "1.2.0");
        assert_eq!(r.native_version, "1.0");
        let r = to_report(&event("download_fail"), "beta", None, 1_800_000_100).unwrap();
        assert_eq!(
            (r.status.as_str(), r.bundle, r.channel.as_str()),
            ("error", None, "beta")
        );
        // A timestamp from far in the future is replaced by the node's time.
        let r = to_report(&event("set"), "production", None, 1_000).unwrap();
        assert_eq!(r.time, 1_000);
    }

    #[test]
    fn events_come_as_an_array_or_alone_and_junk_is_refused() {
        assert_eq!(events(br#"[{"a":1},{"b":2},3]"#).unwrap().len(), 2);
        assert_eq!(
            events(br#"{"action":"rate_limit_reached"}"#).unwrap().len(),
            1
        );
        assert!(events(b"3").is_err());
        assert!(events(b"[").is_err());
        let many = format!("[{}]", vec!["{}"; MAX_EVENTS + 1].join(","));
        assert!(events(many.as_bytes()).is_err());
        // An action the table cannot hold makes no row.
        assert!(to_report(&event("has space"), "production", None, 1).is_none());
        assert!(to_report(&event(&"x".repeat(33)), "production", None, 1).is_none());
    }

    #[test]
    fn the_budget_takes_a_burst_then_a_steady_rate() {
        let t0 = std::time::Instant::now();
        let mut b = Budget::new(t0);
        let burst = (0..3_000).filter(|_| b.take(t0)).count();
        assert_eq!(burst, EVENTS_BURST as usize);
        let later = t0 + std::time::Duration::from_millis(500);
        let refill = (0..3_000).filter(|_| b.take(later)).count();
        assert_eq!(refill, (EVENTS_PER_SEC / 2.0) as usize);
        let much_later = t0 + std::time::Duration::from_secs(3_600);
        let again = (0..3_000).filter(|_| b.take(much_later)).count();
        assert_eq!(again, EVENTS_BURST as usize, "never more than the burst");
    }
}
