//! Which release a device is offered: pure decisions, tested below.
//!
//! 1. The channel: the device's override (set through `/channel_self`),
//!    else the `defaultChannel` it sent, else `production`
//!    ([`channel_for`]).
//! 2. The candidates: the app's releases on that channel, newest first by
//!    sequence number (never by semver), each bundle by its newest
//!    statement only (a new percentage for a bundle, a pause at 0 %,
//!    replaces what earlier releases of that bundle said). The first one
//!    the device is eligible for is chosen: inside its rollout draw
//!    ([`Rollout::includes`](lanseed_protocol::release::Rollout::includes)
//!    on the device id), not expired, and with a minimum native version
//!    at or below the device's `version_build` ([`native_at_least`]).
//! 3. It is offered only when its sequence number is higher than that of
//!    the release the device runs ([`running`]): `builtin` is 0; a
//!    version that names several releases counts as the highest of them.
//!    So a pause (a newer release at 0 %) or a lowered percentage never
//!    moves a device back: the release it left behind is lower than the
//!    one it runs. A `version_name` the gateway does not hold (this node
//!    still fetches what another node gave the device, or collected it,
//!    or the device comes from another update server) is compared by
//!    semver instead ([`newer_than_unknown`]): only a higher version is
//!    offered, so a node that lags never moves a device back; a version
//!    that is not semver counts as the builtin bundle.
//!
//! Two releases of one app with the same version but different bundles
//! would look the same to the plugin, which knows bundles by their version
//! string: the later ones (by sequence) are shown as `VERSION+<first 8 hex
//! of the bundle id>` ([`display_versions`]), the first keeps its plain
//! version, so names given out earlier never change.

use std::collections::HashMap;

use lanseed_protocol::BundleId;
use lanseed_protocol::release::{DEFAULT_CHANNEL, Release};

/// What the plugin calls its builtin bundle.
pub const BUILTIN: &str = "builtin";

/// One release as the gateway offers it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The signed statement.
    pub release: &'a Release,
    /// The version string devices see (see [`display_versions`]).
    pub display: &'a str,
}

/// What a device said about itself.
#[derive(Clone, Copy, Debug)]
pub struct Device<'a> {
    /// Its id (the rollout draw).
    pub id: &'a str,
    /// App id.
    pub app: &'a str,
    /// The channel it follows ([`channel_for`]).
    pub channel: &'a str,
    /// The version it runs, or `builtin`.
    pub version_name: &'a str,
    /// The native app's version.
    pub version_build: &'a str,
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Offer the candidate at this index.
    Offer(usize),
    /// Nothing newer it is eligible for.
    UpToDate,
    /// No release of the app at all.
    UnknownApp,
}

/// The channel a device follows: its override, else the `defaultChannel`
/// it sent (when not empty), else `production`.
pub fn channel_for<'a>(overridden: Option<&'a str>, default_channel: Option<&'a str>) -> &'a str {
    overridden
        .or(default_channel.filter(|c| !c.is_empty()))
        .unwrap_or(DEFAULT_CHANNEL)
}

/// The version string devices see for each of `releases` (same order):
/// the version, suffixed `+<8 hex of the bundle id>` (`.` instead of `+`
/// when the version has build metadata already) for a release whose
/// version an earlier release of the app (lower sequence) has with
/// another bundle.
pub fn display_versions(releases: &[&Release]) -> Vec<String> {
    releases
        .iter()
        .map(|r| {
            let first = (releases.iter())
                .filter(|o| o.app == r.app && o.version == r.version)
                .min_by_key(|o| (o.seq, o.channel.as_str()))
                .map_or(r.bundle_id, |o| o.bundle_id);
            if first == r.bundle_id {
                r.version.clone()
            } else {
                let short = &r.bundle_id.to_string()[..8];
                let sep = if r.version.contains('+') { '.' } else { '+' };
                format!("{}{sep}{short}", r.version)
            }
        })
        .collect()
}

/// What the gateway knows of the release a device runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    /// Its sequence number: 0 for `builtin`, else the highest of the held
    /// releases its version names.
    Seq(u64),
    /// A version no held release has (one this node has not fetched yet,
    /// or already collected, or another update server's).
    Unknown,
}

/// The release a device runs, from the version it sent (see [`Running`]).
pub fn running(candidates: &[Candidate<'_>], app: &str, version_name: &str) -> Running {
    if version_name == BUILTIN {
        return Running::Seq(0);
    }
    let of_app = || candidates.iter().filter(|c| c.release.app == app);
    let exact = of_app()
        .filter(|c| c.display == version_name)
        .map(|c| c.release.seq)
        .max();
    exact
        .or_else(|| {
            of_app()
                .filter(|c| c.release.version == version_name)
                .map(|c| c.release.seq)
                .max()
        })
        .map_or(Running::Unknown, Running::Seq)
}

/// Whether `candidate` (a release's version) may replace the version a
/// device runs that the gateway does not know: only a higher semver
/// (build metadata aside), so a node that lags behind the device (still
/// fetching what another node already gave it) never moves it back. A
/// device version that is not semver cannot be compared: it is treated
/// as the builtin bundle (a device coming from another update server).
pub fn newer_than_unknown(candidate: &str, device_version: &str) -> bool {
    let parse = |v: &str| {
        semver::Version::parse(v.trim())
            .ok()
            .map(|v| (v.major, v.minor, v.patch, v.pre))
    };
    match (parse(candidate), parse(device_version)) {
        (Some(c), Some(d)) => c > d,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// Whether native version `have` (a `version_build`; `1.2` reads as
/// `1.2.0`) is at least `min`. A version that is not semver is never
/// enough: a release that asks for a native version is not risked on an
/// app whose version cannot be compared.
pub fn native_at_least(have: &str, min: &str) -> bool {
    let parse = |v: &str| {
        let v = v.trim();
        semver::Version::parse(v)
            .or_else(|_| semver::Version::parse(&format!("{v}.0")))
            .or_else(|_| semver::Version::parse(&format!("{v}.0.0")))
            .ok()
    };
    match (parse(have), semver::Version::parse(min)) {
        (Some(have), Ok(min)) => have >= min,
        _ => false,
    }
}

/// Whether `device` may run `r` at `now` (Unix seconds): inside its
/// rollout, not expired, native version high enough.
pub fn eligible(r: &Release, device: &Device<'_>, now: u64) -> bool {
    r.rollout.includes(&r.app, &r.bundle_id, device.id)
        && r.expires.is_none_or(|e| now < e)
        && (r.min_native_version.as_deref())
            .is_none_or(|min| native_at_least(device.version_build, min))
}

/// The decision for `device` among `candidates` (every release the node
/// holds, any app) at `now`.
pub fn choose(candidates: &[Candidate<'_>], device: &Device<'_>, now: u64) -> Choice {
    if !candidates.iter().any(|c| c.release.app == device.app) {
        return Choice::UnknownApp;
    }
    let running = running(candidates, device.app, device.version_name);
    let on_channel = |r: &Release| r.app == device.app && r.channel == device.channel;
    let mut newest_of_bundle: HashMap<BundleId, u64> = HashMap::new();
    for c in candidates.iter().filter(|c| on_channel(c.release)) {
        let seq = newest_of_bundle.entry(c.release.bundle_id).or_default();
        *seq = (*seq).max(c.release.seq);
    }
    let superseded = |r: &Release| {
        newest_of_bundle
            .get(&r.bundle_id)
            .is_some_and(|s| *s > r.seq)
    };
    let newest = (candidates.iter().enumerate())
        .filter(|(_, c)| on_channel(c.release) && !superseded(c.release))
        .filter(|(_, c)| eligible(c.release, device, now))
        .max_by_key(|(_, c)| c.release.seq);
    let newer = |c: &Candidate<'_>| match running {
        Running::Seq(seq) => c.release.seq > seq,
        Running::Unknown => newer_than_unknown(&c.release.version, device.version_name),
    };
    match newest {
        Some((i, c)) if newer(c) && c.display != device.version_name => Choice::Offer(i),
        _ => Choice::UpToDate,
    }
}

#[cfg(test)]
mod tests {
    use lanseed_protocol::Hash;
    use lanseed_protocol::release::Rollout;

    use super::*;

    const APP: &str = "com.example.app";

    fn release(version: &str, seq: u64, bundle: u8) -> Release {
        Release {
            app: APP.into(),
            channel: "production".into(),
            version: version.into(),
            bundle_id: BundleId(Hash::of(&[bundle])),
            seq,
            created: seq,
            min_native_version: None,
            rollout: Rollout::FULL,
            expires: None,
            notes: None,
            capgo: None,
        }
    }

    fn device<'a>(id: &'a str, version_name: &'a str) -> Device<'a> {
        Device {
            id,
            app: APP,
            channel: "production",
            version_name,
            version_build: "1.0.0",
        }
    }

    /// The decision, as the version offered (or a word).
    fn decide(releases: &[Release], d: &Device<'_>, now: u64) -> String {
        let refs: Vec<&Release> = releases.iter().collect();
        let shown = display_versions(&refs);
        let cands: Vec<Candidate<'_>> = (releases.iter().zip(&shown))
            .map(|(release, display)| Candidate { release, display })
            .collect();
        match choose(&cands, d, now) {
            Choice::Offer(i) => shown[i].clone(),
            Choice::UpToDate => "up_to_date".into(),
            Choice::UnknownApp => "unknown_app".into(),
        }
    }

    /// A device id inside (or outside) a rollout of `percent` of `r`.
    fn device_id(r: &Release, inside: bool) -> String {
        (0..)
            .map(|i| format!("dev-{i}"))
            .find(|id| r.rollout.includes(APP, &r.bundle_id, id) == inside)
            .unwrap()
    }

    #[test]
    fn the_channel_is_the_override_then_the_default_then_production() {
        assert_eq!(channel_for(Some("beta"), Some("dev")), "beta");
        assert_eq!(channel_for(None, Some("dev")), "dev");
        assert_eq!(channel_for(None, Some("")), "production");
        assert_eq!(channel_for(None, None), "production");
    }

    #[test]
    fn the_newest_by_sequence_is_offered_not_the_highest_semver() {
        let rs = [release("9.0.0", 1, 1), release("1.0.0", 2, 2)];
        assert_eq!(decide(&rs, &device("d", BUILTIN), 0), "1.0.0");
        assert_eq!(decide(&rs, &device("d", "9.0.0"), 0), "1.0.0");
        assert_eq!(decide(&rs, &device("d", "1.0.0"), 0), "up_to_date");
    }

    #[test]
    fn unknown_apps_and_empty_channels() {
        let rs = [release("1.0.0", 1, 1)];
        let mut d = device("d", BUILTIN);
        d.app = "com.example.other";
        assert_eq!(decide(&rs, &d, 0), "unknown_app");
        let mut d = device("d", BUILTIN);
        d.channel = "beta";
        assert_eq!(decide(&rs, &d, 0), "up_to_date");
    }

    #[test]
    fn a_device_outside_the_rollout_gets_the_previous_eligible_release() {
        let mut v2 = release("2.0.0", 2, 2);
        v2.rollout = "50".parse().unwrap();
        let rs = [release("1.0.0", 1, 1), v2.clone()];
        let out = device_id(&v2, false);
        let inside = device_id(&v2, true);
        assert_eq!(decide(&rs, &device(&out, BUILTIN), 0), "1.0.0");
        assert_eq!(decide(&rs, &device(&inside, BUILTIN), 0), "2.0.0");
    }

    #[test]
    fn a_pause_or_a_lower_percentage_never_moves_a_device_back() {
        let v1 = release("1.0.0", 1, 1);
        let v2 = release("2.0.0", 2, 2);
        let mut paused = release("2.0.0", 3, 2);
        paused.rollout = Rollout::from_basis_points(0).unwrap();
        let rs = [v1, v2, paused.clone()];
        assert_eq!(decide(&rs, &device("d", "2.0.0"), 0), "up_to_date");
        // The pause replaces what seq 2 said of the bundle: no one else
        // gets it, and those on 1.0.0 stay there.
        assert_eq!(decide(&rs, &device("d", BUILTIN), 0), "1.0.0");
        assert_eq!(decide(&rs, &device("d", "1.0.0"), 0), "up_to_date");
        // Lowered from 100 % to 10 %: a device that had it keeps it.
        let mut lowered = release("2.0.0", 4, 2);
        lowered.rollout = "10".parse().unwrap();
        let out = device_id(&lowered, false);
        let rs = [release("1.0.0", 1, 1), release("2.0.0", 2, 2), lowered];
        assert_eq!(decide(&rs, &device(&out, "2.0.0"), 0), "up_to_date");
        assert_eq!(decide(&rs, &device(&out, BUILTIN), 0), "1.0.0");
        // A new release back to an older bundle is offered to those past it.
        let rs = [
            release("1.0.0", 1, 1),
            release("2.0.0", 2, 2),
            release("1.0.0", 3, 1),
        ];
        assert_eq!(decide(&rs, &device("d", "2.0.0"), 0), "1.0.0");
        assert_eq!(decide(&rs, &device("d", "1.0.0"), 0), "up_to_date");
    }

    #[test]
    fn expired_releases_and_too_old_native_apps_are_passed_over() {
        let mut v2 = release("2.0.0", 2, 2);
        v2.expires = Some(100);
        let rs = [release("1.0.0", 1, 1), v2];
        assert_eq!(decide(&rs, &device("d", BUILTIN), 99), "2.0.0");
        assert_eq!(decide(&rs, &device("d", BUILTIN), 100), "1.0.0");

        let mut v3 = release("3.0.0", 3, 3);
        v3.min_native_version = Some("2.0.0".into());
        let rs = [release("1.0.0", 1, 1), v3];
        let mut d = device("d", BUILTIN);
        for (build, want) in [
            ("1.9.9", "1.0.0"),
            ("2.0", "3.0.0"),
            ("2", "3.0.0"),
            ("10", "3.0.0"),
            ("build-7", "1.0.0"),
            ("", "1.0.0"),
        ] {
            d.version_build = build;
            assert_eq!(decide(&rs, &d, 0), want, "version_build {build:?}");
        }
    }

    #[test]
    fn an_unknown_version_is_replaced_only_by_a_higher_one() {
        let rs = [release("1.0.0", 1, 1)];
        // From another update server, or a version this node collected.
        assert_eq!(decide(&rs, &device("d", "0.9.0-cloud"), 0), "1.0.0");
        assert_eq!(decide(&rs, &device("d", "0.9.0"), 0), "1.0.0");
        // Not semver: the builtin bundle, for all the gateway can tell.
        assert_eq!(decide(&rs, &device("d", "cloud-build-17"), 0), "1.0.0");
        // A node that lags: the device already runs 2.0.0, which another
        // node gave it and this one is still fetching. Never back.
        assert_eq!(decide(&rs, &device("d", "2.0.0"), 0), "up_to_date");
        assert_eq!(decide(&rs, &device("d", "1.0.0+0badcafe"), 0), "up_to_date");
        assert!(newer_than_unknown("1.0.1", "1.0.0+build"));
        assert!(!newer_than_unknown("1.0.0-rc.1", "1.0.0"));
        assert!(!newer_than_unknown("not-semver", "1.0.0"));
    }

    #[test]
    fn same_version_other_bundle_gets_a_suffix_and_is_offered() {
        let rs = [
            release("1.0.0", 1, 1),
            release("1.0.0", 2, 2),
            release("1.0.0+b.1", 3, 3),
            release("1.0.0+b.1", 4, 4),
            // the same bundle again (a new rollout statement): no suffix
            release("1.0.0", 5, 1),
        ];
        let refs: Vec<&Release> = rs.iter().collect();
        let shown = display_versions(&refs);
        let short = |b: u8| BundleId(Hash::of(&[b])).to_string()[..8].to_owned();
        assert_eq!(shown[0], "1.0.0");
        assert_eq!(shown[1], format!("1.0.0+{}", short(2)));
        assert_eq!(shown[2], "1.0.0+b.1");
        assert_eq!(shown[3], format!("1.0.0+b.1.{}", short(4)));
        assert_eq!(shown[4], "1.0.0");
        let two = [release("1.0.0", 1, 1), release("1.0.0", 2, 2)];
        assert_eq!(
            decide(&two, &device("d", "1.0.0"), 0),
            format!("1.0.0+{}", short(2))
        );
        let mine = format!("1.0.0+{}", short(2));
        assert_eq!(decide(&two, &device("d", &mine), 0), "up_to_date");
    }
}
