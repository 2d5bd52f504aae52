//! A pack killed with SIGKILL at any instant leaves a store that opens,
//! whose every blob matches its hash, and that holds the whole new release
//! or none of it; the old release is untouched and a new pack succeeds.
//!
//! The kill points are the crash points of `lanseed_protocol::crashpoint`:
//! a first run counts them and names the phase of each, then the pack is
//! rerun once per chosen point with `LANSEED_TEST_KILL_AT=N`, where the
//! process sends SIGKILL to itself exactly there.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use lanseed_protocol::{BundleId, Store};
use lanseed_tests::{copy_tree, generate_build, json, keygen, lanseed, run_ok};

const KILLS: usize = 60;

fn pack_args<'a>(build: &'a Path, key: &'a Path, store: &'a Path) -> Vec<&'a str> {
    vec![
        "pack",
        build.to_str().unwrap(),
        "--app",
        "com.example.kiosk",
        "--version",
        "2.0.0",
        "--key",
        key.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--seq",
        "2",
        "--json",
    ]
}

/// Checks the store after a crash: it opens, verifies, still holds release
/// 1 whole, and holds release 2 whole (with the expected bundle) or not at all.
fn check_store(store: &Path, new_bundle: &BundleId, old_bundle: &BundleId) -> bool {
    let s = Store::open(store).expect("store opens after a crash");
    let report = s.verify(None, &|_| {}).expect("verify runs");
    assert!(
        report.is_ok(),
        "problems after crash: {:?}",
        report.problems
    );
    let releases = s.releases().unwrap();
    let bundles: Vec<BundleId> = releases.iter().map(|r| r.release().bundle_id).collect();
    assert_eq!(bundles[0], *old_bundle, "old release intact");
    s.check_complete(old_bundle).unwrap();
    match bundles.len() {
        1 => false,
        2 => {
            assert_eq!(bundles[1], *new_bundle);
            s.check_complete(new_bundle).unwrap();
            true
        }
        n => panic!("{n} releases after one pack"),
    }
}

#[test]
fn sigkill_during_pack_leaves_whole_release_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let v1 = dir.path().join("v1");
    let v2 = dir.path().join("v2");
    generate_build(&v1, 150, 2 << 20, 1);
    // v2 shares half of v1's files and adds a multi-piece file.
    generate_build(&v2, 150, 2 << 20, 2);
    copy_tree(&v1.join("assets/1"), &v2.join("assets/1"));
    std::fs::write(v2.join("big.bin"), vec![7u8; 3 << 20]).unwrap();

    let base = dir.path().join("base");
    let out = run_ok(&[
        "pack",
        v1.to_str().unwrap(),
        "--app",
        "com.example.kiosk",
        "--version",
        "1.0.0",
        "--key",
        key.to_str().unwrap(),
        "--store",
        base.to_str().unwrap(),
        "--seq",
        "1",
        "--json",
    ]);
    let old_bundle: BundleId = json(&out)["bundle_id"].as_str().unwrap().parse().unwrap();

    // Count the crash points of a full pack, and learn their phases.
    let counted = dir.path().join("counted");
    copy_tree(&base, &counted);
    let out = lanseed()
        .args(pack_args(&v2, &key, &counted))
        .env(lanseed_protocol::crashpoint::ENV, "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_bundle: BundleId = json(&out)["bundle_id"].as_str().unwrap().parse().unwrap();
    let phases: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("crashpoint "))
        .map(|l| l.split_once(' ').unwrap().1.to_owned())
        .collect();
    let total = phases.len();
    assert!(total > KILLS, "only {total} crash points");
    // The durable order: all data synced before the first rename into
    // place, all names synced before the index is touched. (A SIGKILL keeps
    // the page cache, so only this order protects against a power cut.)
    let first = |p: &str| phases.iter().position(|x| x.starts_with(p)).unwrap();
    let last = |p: &str| phases.iter().rposition(|x| x.starts_with(p)).unwrap();
    assert!(last("stage") < first("sync: data synced"));
    assert!(first("sync: data synced") < first("publish: renamed"));
    assert!(last("publish: renamed") < first("publish: names synced"));
    assert!(first("publish: names synced") < first("commit"));
    assert!(check_store(&counted, &new_bundle, &old_bundle));

    // Kill points: spread evenly over the whole pack, plus every point of
    // the short phases (syncs and the commit), which an even spread would
    // mostly miss.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|i| 1 + i * (total - 1) / (KILLS - 1))
        .collect();
    points.extend(
        phases
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.starts_with("sync") || p.starts_with("commit") || p.contains("names")
            })
            .map(|(i, _)| i + 1),
    );
    points.sort_unstable();
    points.dedup();

    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    let mut committed = 0;
    for (n, &point) in points.iter().enumerate() {
        let store = dir.path().join(format!("run-{point}"));
        copy_tree(&base, &store);
        let out = lanseed()
            .args(pack_args(&v2, &key, &store))
            .env(lanseed_protocol::crashpoint::ENV, point.to_string())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "point {point} did not kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let phase = stderr
            .lines()
            .find_map(|l| l.strip_suffix(": SIGKILL"))
            .and_then(|l| l.strip_prefix("crashpoint "))
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .expect("the kill names its phase");
        eprintln!("kill {point:>4}/{total}: {phase}");
        *hits
            .entry(phase.split(':').next().unwrap().to_owned())
            .or_default() += 1;

        let was_committed = check_store(&store, &new_bundle, &old_bundle);
        committed += usize::from(was_committed);
        // Every few kills, and after every kill past the commit point, the
        // interrupted pack is simply run again (a re-run of a committed
        // pack finds its release already there).
        if n % 6 == 0 || was_committed {
            let out = run_ok(&pack_args(&v2, &key, &store));
            assert_eq!(json(&out)["bundle_id"], new_bundle.to_string());
            assert!(check_store(&store, &new_bundle, &old_bundle));
            run_ok(&["store", "gc", "--store", store.to_str().unwrap()]);
            assert!(check_store(&store, &new_bundle, &old_bundle));
        }
        std::fs::remove_dir_all(&store).unwrap();
    }
    eprintln!(
        "{} kills over {total} crash points; phases hit: {hits:?}; release committed in {committed}",
        points.len()
    );
    assert!(points.len() >= 50);
    for phase in ["stage", "sync", "publish", "commit"] {
        assert!(
            hits.get(phase).copied().unwrap_or(0) >= 1,
            "no kill in phase {phase}: {hits:?}"
        );
    }
    assert!(committed >= 1, "some kills came after the commit point");
}
