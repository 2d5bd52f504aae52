//! The devices table: what every device the node heard of runs, keyed by
//! `device_id`, from device reports (a lanseed device's, sent to its
//! peers) and the Capgo gateway's stats. Pure bookkeeping (callers
//! pass the time), tested below; `lanseed status --json` shows it as
//! `devices`, `lanseed dev` prints it as it changes, rollouts count it.
//!
//! Anyone on the LAN can mint peer ids and device ids, so:
//! - a row is *authenticated* only when its report came from a peer the
//!   fleet key admitted (the node's own included); decisions count those
//!   only;
//! - authenticated and unauthenticated rows are bounded separately
//!   ([`MAX_AUTHENTICATED`], [`MAX_UNAUTHENTICATED`]), the least recently
//!   seen going first, so a flood of unauthenticated ids never pushes out
//!   an authenticated device;
//! - a `device_id` is bound to the first peer that reported it: another
//!   peer claiming it is refused and counted;
//! - rows not seen for [`FORGET_AFTER`] are forgotten, binding included.

use std::collections::HashMap;

use lanseed_protocol::report::DeviceReport;
use libp2p::PeerId;
use serde::Serialize;

/// Most authenticated rows.
pub const MAX_AUTHENTICATED: usize = 10_000;
/// Most unauthenticated rows.
pub const MAX_UNAUTHENTICATED: usize = 5_000;
/// Seconds after which a row nobody refreshed is forgotten.
pub const FORGET_AFTER: u64 = 24 * 3600;
/// Reports a lanseed device may miss before its row is marked stale.
pub const STALE_AFTER_MISSED: u64 = 3;

/// Where a row came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// This node's own device agent.
    Local,
    /// A lanseed device's report, from a peer.
    Report,
    /// The Capgo gateway's stats (plain HTTP, never authenticated).
    Gateway,
}

/// One device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// What it reported last.
    pub report: DeviceReport,
    /// Where that came from.
    pub source: Source,
    /// The peer it is bound to (`None` for the node's own).
    pub peer: Option<PeerId>,
    /// Whether the fleet key admitted that peer.
    pub authenticated: bool,
    /// When it was first and last heard of (Unix seconds, this node's clock).
    pub first_seen: u64,
    /// See `first_seen`.
    pub last_seen: u64,
}

impl Row {
    /// Whether a lanseed device went quiet: [`STALE_AFTER_MISSED`] reports
    /// (sent every [`REPORT_EVERY`](lanseed_protocol::report::REPORT_EVERY))
    /// missed by `now`. Gateway rows never are: the plugin posts stats
    /// when something happens, not on a schedule.
    pub fn stale(&self, now: u64) -> bool {
        let every = lanseed_protocol::report::REPORT_EVERY.as_secs();
        self.source != Source::Gateway
            && now.saturating_sub(self.last_seen) > STALE_AFTER_MISSED * every
    }
}

/// What became of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// A device not known before.
    New,
    /// A known device's row, refreshed.
    Updated,
    /// Its `device_id` is bound to another peer: refused.
    Claimed,
}

/// The table.
#[derive(Default)]
pub struct Devices {
    rows: HashMap<String, Row>,
    authenticated: usize,
    /// Reports refused because another peer holds their `device_id`.
    pub claims_refused: u64,
    /// Rows pushed out by newer ones at a cap.
    pub evicted: u64,
}

impl Devices {
    /// Takes `report` from `peer` (`None`: the node's own device) at
    /// `now` (Unix seconds).
    pub fn take(
        &mut self,
        report: DeviceReport,
        source: Source,
        peer: Option<PeerId>,
        authenticated: bool,
        now: u64,
    ) -> Taken {
        // Plain-HTTP stats never hold a device id against a device the
        // fleet key admitted: its report takes the row over.
        if authenticated
            && source != Source::Gateway
            && self
                .rows
                .get(&report.device_id)
                .is_some_and(|r| r.source == Source::Gateway)
        {
            let id = report.device_id.clone();
            self.remove(&id);
        }
        if let Some(row) = self.rows.get_mut(&report.device_id) {
            if row.last_seen + FORGET_AFTER >= now {
                // Gateway stats and lanseed reports never overwrite each
                // other's rows: anyone on the LAN can post stats.
                let gateway = (row.source == Source::Gateway) != (source == Source::Gateway);
                if row.peer != peer || gateway {
                    self.claims_refused += 1;
                    return Taken::Claimed;
                }
                if row.authenticated != authenticated {
                    self.authenticated = if authenticated {
                        self.authenticated + 1
                    } else {
                        self.authenticated - 1
                    };
                }
                // The plugin follows a failure with other stats (`delete`
                // of the failed bundle, a check): the failure stays on the
                // row until that bundle succeeds. A lanseed report always
                // says which bundle failed last itself.
                let kept = (source == Source::Gateway && report.failed.is_none())
                    .then_some(row.report.failed)
                    .flatten()
                    .filter(|f| !(report.bundle == Some(*f) && report.status == "success"));
                let mut report = report;
                report.failed = report.failed.or(kept);
                row.report = report;
                row.source = source;
                row.authenticated = authenticated;
                row.last_seen = now;
                return Taken::Updated;
            }
            // Forgotten: its binding with it.
            let id = report.device_id.clone();
            self.remove(&id);
        }
        let (count, cap) = if authenticated {
            (self.authenticated, MAX_AUTHENTICATED)
        } else {
            (self.rows.len() - self.authenticated, MAX_UNAUTHENTICATED)
        };
        if count >= cap {
            let oldest = (self.rows.iter())
                .filter(|(_, r)| r.authenticated == authenticated)
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.remove(&k);
                self.evicted += 1;
            }
        }
        if authenticated {
            self.authenticated += 1;
        }
        self.rows.insert(
            report.device_id.clone(),
            Row {
                report,
                source,
                peer,
                authenticated,
                first_seen: now,
                last_seen: now,
            },
        );
        Taken::New
    }

    fn remove(&mut self, id: &str) {
        if let Some(r) = self.rows.remove(id)
            && r.authenticated
        {
            self.authenticated -= 1;
        }
    }

    /// Forgets rows not seen for [`FORGET_AFTER`].
    pub fn expire(&mut self, now: u64) {
        let old: Vec<String> = (self.rows.iter())
            .filter(|(_, r)| r.last_seen + FORGET_AFTER < now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            self.remove(&k);
        }
    }

    /// The rows, by device id.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    /// Rows (authenticated, unauthenticated).
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.authenticated, self.rows.len() - self.authenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, version: &str) -> DeviceReport {
        DeviceReport {
            device_id: id.into(),
            app: "com.example.kiosk".into(),
            channel: "production".into(),
            bundle: Some([1; 32]),
            version: version.into(),
            seq: 1,
            native_version: "1.0.0".into(),
            status: "success".into(),
            event: Some("set".into()),
            time: 5,
            failed: None,
        }
    }

    #[test]
    fn a_gateway_failure_stays_on_its_row_until_that_bundle_succeeds() {
        let mut d = Devices::default();
        let stat = |event: &str, status: &str, bundle: u8, failed: Option<u8>| DeviceReport {
            event: Some(event.into()),
            status: status.into(),
            bundle: Some([bundle; 32]),
            failed: failed.map(|f| [f; 32]),
            ..report("phone", "2.0.0")
        };
        let failed = |d: &Devices| d.rows().next().unwrap().report.failed;
        d.take(
            stat("update_fail", "error", 2, Some(2)),
            Source::Gateway,
            None,
            false,
            1,
        );
        d.take(
            stat("delete", "unknown", 2, None),
            Source::Gateway,
            None,
            false,
            2,
        );
        assert_eq!(failed(&d), Some([2; 32]), "kept past the plugin's delete");
        d.take(
            stat("app_ready", "success", 1, None),
            Source::Gateway,
            None,
            false,
            3,
        );
        assert_eq!(failed(&d), Some([2; 32]), "another bundle's success");
        d.take(
            stat("app_ready", "success", 2, None),
            Source::Gateway,
            None,
            false,
            4,
        );
        assert_eq!(failed(&d), None, "the bundle itself succeeded");
    }

    #[test]
    fn a_device_id_is_bound_to_the_first_peer_that_reported_it() {
        let mut d = Devices::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(
            d.take(report("k1", "1.0.0"), Source::Report, Some(a), true, 10),
            Taken::New
        );
        assert_eq!(
            d.take(report("k1", "2.0.0"), Source::Report, Some(a), true, 20),
            Taken::Updated
        );
        assert_eq!(
            d.take(report("k1", "6.6.6"), Source::Report, Some(b), true, 30),
            Taken::Claimed
        );
        assert_eq!(d.claims_refused, 1);
        let row = d.rows().next().unwrap();
        assert_eq!(
            (row.report.version.as_str(), row.first_seen, row.last_seen),
            ("2.0.0", 10, 20)
        );
        // Once forgotten, the id may be reported by another peer.
        let later = 20 + FORGET_AFTER + 1;
        assert_eq!(
            d.take(report("k1", "3.0.0"), Source::Report, Some(b), true, later),
            Taken::New
        );
        assert_eq!(d.counts(), (1, 0));
    }

    #[test]
    fn a_flood_of_unauthenticated_ids_never_pushes_out_an_authenticated_device() {
        let mut d = Devices::default();
        let good = PeerId::random();
        d.take(
            report("kiosk", "1.0.0"),
            Source::Report,
            Some(good),
            true,
            1,
        );
        for i in 0..(MAX_UNAUTHENTICATED as u64 + 2_000) {
            let t = d.take(
                report(&format!("x{i}"), "1.0.0"),
                Source::Report,
                Some(PeerId::random()),
                false,
                2 + i,
            );
            assert_eq!(t, Taken::New);
        }
        assert_eq!(d.counts(), (1, MAX_UNAUTHENTICATED));
        assert!(d.rows().any(|r| r.report.device_id == "kiosk"));
        assert_eq!(d.evicted, 2_000);
        // The least recently seen went first.
        assert!(!d.rows().any(|r| r.report.device_id == "x0"));
        assert!(
            d.rows()
                .any(|r| r.report.device_id == format!("x{}", MAX_UNAUTHENTICATED + 1_999))
        );
    }

    #[test]
    fn a_device_that_misses_three_reports_is_stale_and_stays_listed() {
        let mut d = Devices::default();
        let peer = PeerId::random();
        d.take(
            report("k1", "1.0.0"),
            Source::Report,
            Some(peer),
            true,
            1_000,
        );
        d.take(report("g1", "1.0.0"), Source::Gateway, None, false, 1_000);
        let at = |now| {
            let mut v: Vec<(String, bool)> = d
                .rows()
                .map(|r| (r.report.device_id.clone(), r.stale(now)))
                .collect();
            v.sort();
            v
        };
        assert_eq!(at(1_090), [("g1".into(), false), ("k1".into(), false)]);
        assert_eq!(at(1_091), [("g1".into(), false), ("k1".into(), true)]);
        assert_eq!(at(50_000).len(), 2, "stale rows stay until forgotten");
    }

    #[test]
    fn gateway_stats_and_lanseed_reports_never_overwrite_each_other() {
        let mut d = Devices::default();
        let peer = PeerId::random();
        d.take(report("k1", "1.0.0"), Source::Report, Some(peer), true, 1);
        // Anyone on the LAN can post stats under that id.
        assert_eq!(
            d.take(report("k1", "6.6.6"), Source::Gateway, None, false, 2),
            Taken::Claimed
        );
        d.take(report("own", "1.0.0"), Source::Local, None, true, 1);
        assert_eq!(
            d.take(report("own", "6.6.6"), Source::Gateway, None, false, 2),
            Taken::Claimed
        );
        // A gateway row is refreshed by later stats; a peer the fleet key
        // did not admit cannot take it over...
        assert_eq!(
            d.take(report("g1", "1.0.0"), Source::Gateway, None, false, 3),
            Taken::New
        );
        assert_eq!(
            d.take(report("g1", "1.1.0"), Source::Gateway, None, false, 4),
            Taken::Updated
        );
        let stranger = PeerId::random();
        assert_eq!(
            d.take(
                report("g1", "6.6.6"),
                Source::Report,
                Some(stranger),
                false,
                5
            ),
            Taken::Claimed
        );
        let versions: Vec<&str> = {
            let mut v: Vec<_> = d.rows().map(|r| r.report.version.as_str()).collect();
            v.sort();
            v
        };
        assert_eq!(versions, ["1.0.0", "1.0.0", "1.1.0"]);
        // ...but stats posted under an admitted device's id (before its
        // first report) never lock it out of its own row.
        assert_eq!(
            d.take(report("g1", "2.0.0"), Source::Report, Some(peer), true, 6),
            Taken::New
        );
        let row = d.rows().find(|r| r.report.device_id == "g1").unwrap();
        assert_eq!((row.source, row.authenticated), (Source::Report, true));
        assert_eq!(
            d.take(report("g1", "6.6.6"), Source::Gateway, None, false, 7),
            Taken::Claimed
        );
    }

    #[test]
    fn authenticated_rows_are_capped_too_and_expire() {
        let mut d = Devices::default();
        for i in 0..(MAX_AUTHENTICATED as u64 + 5) {
            d.take(
                report(&format!("a{i}"), "1.0.0"),
                Source::Report,
                Some(PeerId::random()),
                true,
                i,
            );
        }
        assert_eq!(d.counts(), (MAX_AUTHENTICATED, 0));
        d.expire(MAX_AUTHENTICATED as u64 + 5 + FORGET_AFTER + 1);
        assert_eq!(d.counts(), (0, 0));
    }
}
