//! The health gate of `lanseed rollout --waves`: which devices a wave
//! selects, how many of them confirmed the new bundle or failed it, and
//! whether to wait, advance or halt. Pure: the runner ([`super`]) hands it
//! the node's devices table and the time.
//!
//! Who counts: devices of the app and channel seen in the last
//! [`SEEN_WITHIN`] whose row is *authenticated* (a lanseed report from a
//! peer the fleet key admitted). Gateway stats are plain HTTP any LAN host
//! can post: they count only with `--count-gateway-stats`.
//!
//! A device is *selected* by a wave when SPEC's rollout draw at the wave's
//! share includes it; it has *confirmed* when it runs the bundle with
//! status `success` (notifyAppReady came), and *failed* when its last
//! failed trial (or, for gateway rows, a failure the plugin posted) was of
//! the bundle. The rest of the selected devices are *pending*.
//!
//! A wave advances when at least [`REPORTED_SHARE`] of the devices it
//! selects confirmed or failed and its dwell has passed; one that selects
//! no device waits out its dwell. The rollout halts as soon as the 95 %
//! Wilson lower bound of the failure rate (failed over confirmed + failed)
//! exceeds the bound.

use std::collections::BTreeMap;

use lanseed_protocol::BundleId;
use lanseed_protocol::release::Rollout;
use serde::Deserialize;

use crate::gateway::choose::native_at_least;

/// Devices not seen for this long (seconds) do not count.
pub const SEEN_WITHIN: u64 = 3600;
/// The share of selected devices that must have confirmed or failed
/// before a wave advances, in percent.
pub const REPORTED_SHARE: usize = 90;
/// The normal quantile of a two-sided 95 % interval.
const Z: f64 = 1.96;

/// One row of the node's devices table, as `lanseed status --json` gives
/// it (the fields the gate reads).
#[derive(Clone, Debug, Deserialize)]
pub struct Device {
    /// Its id (the draw uses it).
    pub device_id: String,
    /// App id.
    pub app: String,
    /// The channel it follows.
    pub channel: String,
    /// The bundle it runs (hex, or `builtin`).
    pub bundle_id: String,
    /// That bundle's status (`success`, `trial`, …).
    pub status: String,
    /// The native app's version.
    pub native_version: String,
    /// The bundle whose trial failed last, if any (required: a node too
    /// old to say is refused, rather than counted as never failing).
    pub failed_bundle: Option<String>,
    /// `local`, `report` or `gateway`.
    pub source: String,
    /// Whether the fleet key admitted the peer it came from.
    pub authenticated: bool,
    /// Last heard of (Unix seconds).
    pub last_seen: u64,
}

/// What is being rolled out, and which rows count.
#[derive(Clone, Debug)]
pub struct Target {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// The bundle rolled out.
    pub bundle: BundleId,
    /// The release's minimum native version: devices below it can never
    /// take the bundle, and are not waited for.
    pub min_native_version: Option<String>,
    /// Whether gateway stats count.
    pub count_gateway_stats: bool,
}

/// The devices of one wave, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Selected by the wave's draw, among the devices that count.
    pub selected: usize,
    /// Of those: on the bundle, confirmed.
    pub confirmed: usize,
    /// Of those: failed it.
    pub failed: usize,
    /// Devices of the app and channel that do not count (not
    /// authenticated, or gateway stats without `--count-gateway-stats`).
    pub ignored: usize,
    /// Devices the draw selects whose native app is too old for the
    /// release (never waited for).
    pub too_old: usize,
}

impl Tally {
    /// Selected devices that neither confirmed nor failed yet.
    pub fn pending(&self) -> usize {
        self.selected - self.confirmed - self.failed
    }
}

/// Whether row `d` counts for the gate (authenticated, or gateway stats
/// with `--count-gateway-stats`), of the app and channel, seen recently.
pub fn counts(d: &Device, target: &Target, now: u64) -> bool {
    d.app == target.app
        && d.channel == target.channel
        && now.saturating_sub(d.last_seen) <= SEEN_WITHIN
        && if d.source == "gateway" {
            target.count_gateway_stats
        } else {
            d.authenticated
        }
}

/// Devices remembered at most (the devices table's own bound: with
/// `--count-gateway-stats`, ids any LAN host mints would count too).
pub const MAX_REMEMBERED: usize = 15_000;

/// Adds the devices of `devices` that count to `remembered` (id → last
/// seen), forgets those not seen for [`SEEN_WITHIN`] and, past
/// [`MAX_REMEMBERED`], the least recently seen; true when an id was added
/// or forgotten (worth saving).
pub fn remember(
    remembered: &mut BTreeMap<String, u64>,
    devices: &[Device],
    target: &Target,
    now: u64,
) -> bool {
    let before = remembered.len();
    let mut added = false;
    for d in devices.iter().filter(|d| counts(d, target, now)) {
        added |= remembered
            .insert(d.device_id.clone(), d.last_seen)
            .is_none();
    }
    remembered.retain(|_, seen| now.saturating_sub(*seen) <= SEEN_WITHIN);
    if remembered.len() > MAX_REMEMBERED {
        let mut by_age: Vec<(u64, String)> =
            remembered.iter().map(|(id, s)| (*s, id.clone())).collect();
        by_age.sort_unstable();
        let excess = by_age.len() - MAX_REMEMBERED;
        for (_, id) in &by_age[..excess] {
            remembered.remove(id);
        }
    }
    added || remembered.len() != before
}

/// Counts `devices` for a wave of `share` at `now` (Unix seconds), with
/// `remembered`: devices that counted earlier in the rollout (id → when
/// last seen) and are missing from the table now (the node restarted and
/// they have not reported again yet): selected ones are pending, so an
/// empty or half-filled table never lets a wave through.
pub fn tally(
    devices: &[Device],
    remembered: &BTreeMap<String, u64>,
    target: &Target,
    share: Rollout,
    now: u64,
) -> (Tally, Vec<String>) {
    let bundle = target.bundle.to_string();
    let mut t = Tally::default();
    let mut pending = Vec::new();
    for (id, seen) in remembered {
        if now.saturating_sub(*seen) <= SEEN_WITHIN
            && !devices.iter().any(|d| d.device_id == *id)
            && share.includes(&target.app, &target.bundle, id)
        {
            t.selected += 1;
            pending.push(id.clone());
        }
    }
    for d in devices {
        if d.app != target.app
            || d.channel != target.channel
            || now.saturating_sub(d.last_seen) > SEEN_WITHIN
        {
            continue;
        }
        if !counts(d, target, now) {
            t.ignored += 1;
            continue;
        }
        if !share.includes(&target.app, &target.bundle, &d.device_id) {
            continue;
        }
        if d.bundle_id == bundle && d.status == "success" {
            t.selected += 1;
            t.confirmed += 1;
        } else if d.failed_bundle.as_deref() == Some(bundle.as_str()) {
            t.selected += 1;
            t.failed += 1;
        } else if target
            .min_native_version
            .as_deref()
            .is_some_and(|min| !native_at_least(&d.native_version, min))
        {
            t.too_old += 1;
        } else {
            t.selected += 1;
            pending.push(d.device_id.clone());
        }
    }
    pending.sort();
    (t, pending)
}

/// The lower bound of the 95 % Wilson score interval of `failed` out of
/// `n` (0 when `n` is 0).
pub fn wilson_lower(failed: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (f, n) = (failed as f64, n as f64);
    let p = f / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Keep waiting.
    Wait,
    /// Go to the next wave.
    Advance,
    /// The last wave is through: the rollout is done.
    Finish,
    /// Stop the rollout: the failure rate's lower bound is above the limit.
    Halt {
        /// That lower bound, 0.0..=1.0.
        lower: f64,
    },
}

/// The gate's settings.
#[derive(Clone, Copy, Debug)]
pub struct Gate {
    /// Least time in a wave, seconds.
    pub dwell: u64,
    /// Highest failure rate tolerated, 0.0..=1.0.
    pub max_failure_rate: f64,
}

/// Decides from the wave's `tally`, when the wave began and `now` (Unix
/// seconds), and whether it is the last wave.
pub fn decide(gate: &Gate, t: &Tally, began: u64, now: u64, last: bool) -> Decision {
    let outcomes = t.confirmed + t.failed;
    let lower = wilson_lower(t.failed, outcomes);
    if t.failed > 0 && lower > gate.max_failure_rate {
        return Decision::Halt { lower };
    }
    let dwelt = now >= began.saturating_add(gate.dwell);
    let reported = outcomes * 100 >= t.selected * REPORTED_SHARE;
    match (dwelt && reported, last) {
        (false, _) => Decision::Wait,
        (true, false) => Decision::Advance,
        (true, true) => Decision::Finish,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "com.example.kiosk";

    fn target() -> Target {
        Target {
            app: APP.into(),
            channel: "production".into(),
            bundle: BundleId(blake3::hash(b"new").into()),
            min_native_version: None,
            count_gateway_stats: false,
        }
    }

    fn device(id: &str, bundle: &str, status: &str, failed: Option<&str>) -> Device {
        Device {
            device_id: id.into(),
            app: APP.into(),
            channel: "production".into(),
            bundle_id: bundle.into(),
            status: status.into(),
            native_version: "2.0.0".into(),
            failed_bundle: failed.map(str::to_owned),
            source: "report".into(),
            authenticated: true,
            last_seen: 10_000,
        }
    }

    /// Device ids the draw at `share` includes (and, with `inside` false,
    /// excludes).
    fn ids(t: &Target, share: Rollout, inside: bool, n: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("kiosk-{i}"))
            .filter(|id| share.includes(&t.app, &t.bundle, id) == inside)
            .take(n)
            .collect()
    }

    fn pct(p: u16) -> Rollout {
        Rollout::from_basis_points(p * 100).unwrap()
    }

    #[test]
    fn selected_devices_are_counted_by_outcome_and_others_are_not() {
        let t = target();
        let new = t.bundle.to_string();
        let inside = ids(&t, pct(25), true, 4);
        let outside = ids(&t, pct(25), false, 3);
        let mut devices = vec![
            device(&inside[0], &new, "success", None),
            device(&inside[1], "old", "success", Some(&new)),
            device(&inside[2], &new, "trial", None),
            device(&inside[3], "old", "success", Some("another")),
            device(&outside[0], &new, "success", None),
        ];
        let tally_now = |d: &[Device]| tally(d, &BTreeMap::new(), &t, pct(25), 10_000).0;
        let want = Tally {
            selected: 4,
            confirmed: 1,
            failed: 1,
            ignored: 0,
            too_old: 0,
        };
        assert_eq!(tally_now(&devices), want);
        assert_eq!(want.pending(), 2);
        // Unauthenticated reports, gateway stats, other apps and channels,
        // and devices not seen for an hour do not count.
        let mut liar = device(&outside[1], "old", "success", Some(&new));
        liar.authenticated = false;
        let mut stats = device(&outside[2], "old", "error", Some(&new));
        stats.source = "gateway".into();
        stats.authenticated = false;
        let mut gone = device(&inside[1], "old", "success", Some(&new));
        gone.device_id = ids(&t, pct(25), true, 5)[4].clone();
        gone.last_seen = 10_000 - SEEN_WITHIN - 1;
        let mut beta = device(&inside[1], "old", "success", Some(&new));
        beta.channel = "beta".into();
        devices.extend([liar, stats.clone(), gone, beta]);
        assert_eq!(tally_now(&devices), Tally { ignored: 2, ..want });
        // With --count-gateway-stats the stats count (this one is outside
        // the wave's draw).
        let counted = Target {
            count_gateway_stats: true,
            ..t.clone()
        };
        let t2 = tally(&devices, &BTreeMap::new(), &counted, pct(25), 10_000).0;
        assert_eq!(t2.ignored, 1);
        stats.device_id = ids(&t, pct(25), true, 6)[5].clone();
        assert_eq!(
            tally(&[stats], &BTreeMap::new(), &counted, pct(25), 10_000)
                .0
                .failed,
            1
        );
    }

    #[test]
    fn the_wilson_bound_is_known_values_and_tightens_with_more_devices() {
        assert_eq!(wilson_lower(0, 0), 0.0);
        assert_eq!(wilson_lower(0, 50), 0.0);
        // 1 of 1: (1 + 1.9208 - 1.96 * sqrt(0.9604)) / 4.8416.
        assert!((wilson_lower(1, 1) - 0.2065).abs() < 1e-3);
        // 1 of 100: about 0.18 %; 10 of 100: about 5.5 %.
        assert!((wilson_lower(1, 100) - 0.00177).abs() < 1e-4);
        assert!((wilson_lower(10, 100) - 0.0552).abs() < 1e-3);
        assert!(wilson_lower(10, 1_000) < wilson_lower(10, 100));
    }

    #[test]
    fn a_wave_advances_after_its_dwell_once_nine_in_ten_reported() {
        let gate = Gate {
            dwell: 60,
            max_failure_rate: 0.02,
        };
        let t = |selected, confirmed| Tally {
            selected,
            confirmed,
            failed: 0,
            ignored: 0,
            too_old: 0,
        };
        assert_eq!(
            decide(&gate, &t(10, 10), 1_000, 1_059, false),
            Decision::Wait
        );
        assert_eq!(
            decide(&gate, &t(10, 10), 1_000, 1_060, false),
            Decision::Advance
        );
        assert_eq!(
            decide(&gate, &t(10, 8), 1_000, 9_000, false),
            Decision::Wait
        );
        assert_eq!(
            decide(&gate, &t(10, 9), 1_000, 9_000, false),
            Decision::Advance
        );
        assert_eq!(
            decide(&gate, &t(10, 9), 1_000, 9_000, true),
            Decision::Finish
        );
        // A wave that selects nobody waits out its dwell.
        assert_eq!(decide(&gate, &t(0, 0), 1_000, 1_000, false), Decision::Wait);
        assert_eq!(
            decide(&gate, &t(0, 0), 1_000, 1_060, false),
            Decision::Advance
        );
    }

    #[test]
    fn one_failure_among_few_halts_and_rare_failures_among_many_do_not() {
        let gate = Gate {
            dwell: 60,
            max_failure_rate: 0.02,
        };
        let t = |confirmed, failed| Tally {
            selected: confirmed + failed,
            confirmed,
            failed,
            ignored: 0,
            too_old: 0,
        };
        // Halting does not wait for the dwell.
        assert!(matches!(
            decide(&gate, &t(0, 1), 1_000, 1_000, false),
            Decision::Halt { lower } if lower > 0.2
        ));
        // 1 of 5 halts; 1 of 10 (bound 1.8 %) does not yet.
        assert!(matches!(
            decide(&gate, &t(4, 1), 1_000, 1_000, false),
            Decision::Halt { .. }
        ));
        assert_eq!(decide(&gate, &t(9, 1), 1_000, 1_000, false), Decision::Wait);
        assert_eq!(
            decide(&gate, &t(999, 1), 1_000, 1_060, false),
            Decision::Advance
        );
        assert!(matches!(
            decide(&gate, &t(950, 50), 1_000, 1_000, false),
            Decision::Halt { .. }
        ));
    }

    #[test]
    fn devices_missing_after_a_restart_are_pending_and_too_old_ones_are_not_waited_for() {
        let t = target();
        let new = t.bundle.to_string();
        let inside = ids(&t, pct(50), true, 3);
        // The node restarted: only inside[0] has reported again.
        let devices = vec![device(&inside[0], &new, "success", None)];
        let remembered: BTreeMap<String, u64> =
            inside.iter().map(|id| (id.clone(), 9_000)).collect();
        let (tally_now, pending) = tally(&devices, &remembered, &t, pct(50), 10_000);
        assert_eq!((tally_now.selected, tally_now.confirmed), (3, 1));
        assert_eq!(pending, inside[1..].to_vec());
        let gate = Gate {
            dwell: 0,
            max_failure_rate: 0.02,
        };
        assert_eq!(decide(&gate, &tally_now, 0, 10_000, false), Decision::Wait);
        // Remembered too long ago: gone.
        let old: BTreeMap<String, u64> = inside.iter().map(|id| (id.clone(), 1)).collect();
        assert_eq!(tally(&devices, &old, &t, pct(50), 10_000).0.selected, 1);
        // A native app below the release's minimum never takes it.
        let needs = Target {
            min_native_version: Some("3.0.0".into()),
            ..t.clone()
        };
        let waiting = vec![device(&inside[1], "old", "success", None)];
        let (tally_now, pending) = tally(&waiting, &BTreeMap::new(), &needs, pct(50), 10_000);
        assert_eq!((tally_now.selected, tally_now.too_old), (0, 1));
        assert!(pending.is_empty());
    }

    #[test]
    fn remembered_devices_are_bounded_and_forgotten_after_an_hour() {
        let t = target();
        let mut remembered = BTreeMap::new();
        let many: Vec<Device> = (0..MAX_REMEMBERED + 10)
            .map(|i| {
                let mut d = device(&format!("kiosk-{i}"), "old", "success", None);
                d.last_seen = 10_000 + i as u64 % 7;
                d
            })
            .collect();
        assert!(remember(&mut remembered, &many, &t, 10_010));
        assert_eq!(remembered.len(), MAX_REMEMBERED);
        assert!(
            !remember(&mut remembered, &[], &t, 10_010),
            "nothing changed"
        );
        assert!(remember(&mut remembered, &[], &t, 10_007 + SEEN_WITHIN + 1));
        assert!(remembered.is_empty(), "all older than an hour");
    }
}
