//! Each rollout's progress, as the status page shows it: for every app
//! and channel, its newest release (by sequence number, never semver)
//! and where the devices of that app and channel stand against it.
//!
//! A device of the app and channel is
//! - *on the bundle* when it runs the release's bundle (or, for a
//!   Capgo-encrypted release, its payload bundle);
//! - *failed* when it is not, and the bundle whose trial failed last on
//!   it is this one (or, for a row that does not say which, its last
//!   event is `update_fail`): the updater tried the bundle and went back;
//! - *pending* otherwise (not reached yet, outside the rollout's share,
//!   or still downloading).
//!
//! Pure: the page's feed calls it with a status's releases and devices.

use serde::Serialize;

use crate::node::status::DeviceStatus;
use crate::output::ReleaseView;

/// Device ids of failed devices listed per rollout at most (the counts
/// cover them all).
pub const MAX_FAILED_LISTED: usize = 20;

/// The Capgo stats action of a failed update.
const UPDATE_FAIL: &str = "update_fail";

/// Where one app and channel's newest release stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutProgress {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// The newest release's version.
    pub version: String,
    /// Its sequence number.
    pub seq: u64,
    /// Its bundle.
    pub bundle_id: String,
    /// Its rollout share, 0 to 100.
    pub rollout_percent: f64,
    /// Devices of this app and channel.
    pub devices: usize,
    /// Devices on the release's bundle.
    pub on_bundle: usize,
    /// Devices not on it yet.
    pub pending: usize,
    /// Devices whose last event is `update_fail`, not on it.
    pub failed: usize,
    /// The first [`MAX_FAILED_LISTED`] failed devices' ids, sorted.
    pub failed_ids: Vec<String>,
}

/// The progress of each app and channel's newest release in `releases`
/// among `devices`, sorted by app and channel.
pub fn progress(releases: &[ReleaseView], devices: &[DeviceStatus]) -> Vec<RolloutProgress> {
    let mut newest: std::collections::BTreeMap<(&str, &str), &ReleaseView> =
        std::collections::BTreeMap::new();
    for r in releases {
        let e = newest.entry((&r.app, &r.channel)).or_insert(r);
        if r.seq > e.seq {
            *e = r;
        }
    }
    newest
        .into_values()
        .map(|r| {
            let payload = r.capgo.as_ref().map(|c| c.bundle_id.as_str());
            let mut p = RolloutProgress {
                app: r.app.clone(),
                channel: r.channel.clone(),
                version: r.version.clone(),
                seq: r.seq,
                bundle_id: r.bundle_id.clone(),
                rollout_percent: r.rollout_percent,
                devices: 0,
                on_bundle: 0,
                pending: 0,
                failed: 0,
                failed_ids: Vec::new(),
            };
            let mut failed_ids = Vec::new();
            for d in devices
                .iter()
                .filter(|d| d.app == r.app && d.channel == r.channel)
            {
                p.devices += 1;
                if d.bundle_id == r.bundle_id || Some(d.bundle_id.as_str()) == payload {
                    p.on_bundle += 1;
                } else if d.failed_bundle.as_deref() == Some(r.bundle_id.as_str())
                    || (d.failed_bundle.is_none() && d.last_event.as_deref() == Some(UPDATE_FAIL))
                {
                    p.failed += 1;
                    failed_ids.push(d.device_id.as_str());
                } else {
                    p.pending += 1;
                }
            }
            failed_ids.sort_unstable();
            p.failed_ids = (failed_ids.iter().take(MAX_FAILED_LISTED))
                .map(|s| (*s).to_owned())
                .collect();
            p
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::node::devices::Source;
    use crate::output::CapgoView;

    pub(crate) fn release(
        app: &str,
        channel: &str,
        version: &str,
        seq: u64,
        bundle: &str,
    ) -> ReleaseView {
        ReleaseView {
            app: app.into(),
            channel: channel.into(),
            version: version.into(),
            seq,
            bundle_id: bundle.into(),
            release_id: format!("r{seq}"),
            created: seq,
            created_at: String::new(),
            rollout_percent: 100.0,
            min_native_version: None,
            expires: None,
            notes: None,
            publisher: "lanseed-pub-ed25519:00".into(),
            capgo: None,
        }
    }

    pub(crate) fn device(
        id: &str,
        app: &str,
        channel: &str,
        bundle: &str,
        event: Option<&str>,
    ) -> DeviceStatus {
        DeviceStatus {
            device_id: id.into(),
            app: app.into(),
            channel: channel.into(),
            bundle_id: bundle.into(),
            version: "1.0.0".into(),
            seq: 1,
            native_version: "1.0".into(),
            status: "success".into(),
            last_event: event.map(Into::into),
            failed_bundle: None,
            reported_at: 100,
            source: Source::Gateway,
            peer_id: None,
            authenticated: false,
            first_seen: 100,
            last_seen: 100,
            stale: false,
        }
    }

    fn counts(p: &RolloutProgress) -> (usize, usize, usize, usize) {
        (p.devices, p.on_bundle, p.pending, p.failed)
    }

    #[test]
    fn the_newest_release_by_sequence_is_counted_not_the_highest_semver() {
        let releases = [
            release("a", "production", "9.0.0", 5, "old"),
            release("a", "production", "1.0.0", 7, "new"),
        ];
        let devices = [
            device("d1", "a", "production", "new", Some("app_ready")),
            device("d2", "a", "production", "old", Some("set")),
        ];
        let p = progress(&releases, &devices);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].version.as_str(), p[0].seq), ("1.0.0", 7));
        assert_eq!(counts(&p[0]), (2, 1, 1, 0));
    }

    #[test]
    fn update_fail_off_the_bundle_is_failed_and_on_it_is_not() {
        let releases = [release("a", "production", "2.0.0", 2, "b2")];
        let devices = [
            device("z", "a", "production", "builtin", Some("update_fail")),
            device("y", "a", "production", "b1", Some("update_fail")),
            // An update_fail of an older attempt, then the bundle arrived.
            device("x", "a", "production", "b2", Some("update_fail")),
            device("w", "a", "production", "b1", Some("download_fail")),
            device("v", "a", "production", "b1", None),
        ];
        let p = &progress(&releases, &devices)[0];
        assert_eq!(counts(p), (5, 1, 2, 2));
        assert_eq!(p.failed_ids, ["y", "z"]);
        // A lanseed report says which bundle failed: an update_fail of
        // another bundle is not a failure of this one, and a failure of
        // this one counts whatever the device did since.
        let mut other = device("u", "a", "production", "b1", Some("update_fail"));
        other.failed_bundle = Some("b0".into());
        let mut this = device("t", "a", "production", "b1", Some("app_ready"));
        this.failed_bundle = Some("b2".into());
        let p = &progress(&releases, &[other, this])[0];
        assert_eq!(p.failed_ids, ["t"]);
        assert_eq!(p.pending, 1);
    }

    #[test]
    fn devices_count_only_for_their_own_app_and_channel() {
        let releases = [
            release("a", "production", "1.0.0", 1, "b1"),
            release("a", "beta", "1.1.0", 2, "b2"),
            release("b", "production", "1.0.0", 3, "b1"),
        ];
        let devices = [
            device("d1", "a", "production", "b1", None),
            device("d2", "a", "beta", "b1", Some("update_fail")),
            device("d3", "b", "production", "b1", None),
            device("d4", "c", "production", "b1", None),
        ];
        let p = progress(&releases, &devices);
        let keys: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.app.as_str(), p.channel.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("a", "beta"), ("a", "production"), ("b", "production")]
        );
        assert_eq!(counts(&p[0]), (1, 0, 0, 1));
        assert_eq!(counts(&p[1]), (1, 1, 0, 0));
        assert_eq!(counts(&p[2]), (1, 1, 0, 0));
    }

    #[test]
    fn a_capgo_payload_bundle_counts_as_on_the_release() {
        let mut r = release("a", "production", "1.0.0", 1, "signed");
        r.capgo = Some(CapgoView {
            bundle_id: "payload".into(),
            key_id: String::new(),
            session_key: String::new(),
            checksum: String::new(),
        });
        r.rollout_percent = 25.0;
        let p = &progress(&[r], &[device("d", "a", "production", "payload", None)])[0];
        assert_eq!(counts(p), (1, 1, 0, 0));
        assert_eq!(p.rollout_percent, 25.0);
    }

    #[test]
    fn no_devices_and_no_releases() {
        assert!(progress(&[], &[device("d", "a", "production", "b", None)]).is_empty());
        let p = &progress(&[release("a", "production", "1.0.0", 1, "b")], &[])[0];
        assert_eq!(counts(p), (0, 0, 0, 0));
    }

    #[test]
    fn failed_ids_are_bounded_but_counted() {
        let releases = [release("a", "production", "1.0.0", 1, "b")];
        let devices: Vec<DeviceStatus> = (0..MAX_FAILED_LISTED + 5)
            .map(|i| {
                device(
                    &format!("d{i:03}"),
                    "a",
                    "production",
                    "builtin",
                    Some("update_fail"),
                )
            })
            .collect();
        let p = &progress(&releases, &devices)[0];
        assert_eq!(p.failed, MAX_FAILED_LISTED + 5);
        assert_eq!(p.failed_ids.len(), MAX_FAILED_LISTED);
        assert_eq!(p.failed_ids[0], "d000");
    }
}
