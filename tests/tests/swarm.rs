//! Swarm transfer between real `lanseed seed` processes on a LAN of network
//! namespaces joined by a bridge: several seeders at once, followers that
//! feed each other, seeders and followers killed mid-transfer, deltas and
//! compression. Bytes are counted by the kernel on each host's interface,
//! not by the nodes; seeders are capped with `--upload-limit` so that
//! timing means something.
//!
//! The tests here time transfers, so they run one at a time (a lock), each
//! on its own LAN with its own stores.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lanseed_tests::net::{Lan, NodeProc, log_time_us};
use lanseed_tests::{
    Rng, copy_tree, generate_build, json, keygen, node_status, path_str as s, run_ok,
    store_releases, verify_store,
};

const APP: &str = "com.example.kiosk";
const T: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: String,
    build: PathBuf,
}

/// A build of `files` incompressible files of `S / files` bytes each (so
/// that bytes on the wire are the bundle's bytes, and timing is honest).
fn setup_random(total: u64, files: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("index.html"), "<h1>hi</h1>").unwrap();
    lanseed_tests::generate_media(&build, files, total, total ^ files as u64);
    Setup {
        dir,
        key,
        trust,
        build,
    }
}

impl Setup {
    fn store(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pack(&self, store: &Path, version: &str) -> serde_json::Value {
        json(&run_ok(&lanseed_tests::pack_args(
            &self.build,
            APP,
            version,
            &self.key,
            store,
            &["--json"],
        )))
    }

    /// A copy of `from` as another seeder's store (its own node identity).
    fn clone_store(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.store(name);
        copy_tree(from, &to);
        let _ = std::fs::remove_file(to.join("node.key"));
        to
    }

    fn follower(&self, lan: &Lan, host: usize, name: &str, extra: &[&str]) -> NodeProc {
        let mut args = vec!["--follow", APP, "--trust", self.trust.as_str()];
        args.extend_from_slice(extra);
        NodeProc::start(&lan.hosts[host], &self.store(name), &args)
    }

    /// The bundle's size on disk: sum of its files.
    fn bundle_bytes(&self) -> u64 {
        lanseed_tests::listing(&self.build)
            .iter()
            .map(|(_, n)| n)
            .sum()
    }
}

/// `/ip4/ADDR/tcp/PORT/p2p/ID` of a node on host `addr`.
fn addr_of(node: &NodeProc, addr: &str) -> String {
    let st = node_status(&node.store);
    let port = st["listen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find_map(|a| a.split("/tcp/").nth(1))
        .unwrap()
        .to_owned();
    format!(
        "/ip4/{addr}/tcp/{port}/p2p/{}",
        st["peer_id"].as_str().unwrap()
    )
}

fn seeder(lan: &Lan, host: usize, store: &Path, extra: &[&str]) -> NodeProc {
    let mut args = vec!["--no-mdns", "--listen", "/ip4/0.0.0.0/tcp/0"];
    args.extend_from_slice(extra);
    NodeProc::start(&lan.hosts[host], store, &args)
}

/// Seconds from "fetching release" to "transfer done" in a node's log.
fn transfer_secs(node: &NodeProc) -> f64 {
    let start = node.wait_log("fetching release", T);
    let done = node.wait_log("transfer done", T);
    (log_time_us(&done) - log_time_us(&start)) as f64 / 1e6
}

/// Polls `f` until it returns true.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < T, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bytes_done(store: &Path) -> u64 {
    node_status(store)["transfers"]
        .as_array()
        .and_then(|t| t.first())
        .and_then(|t| t["bytes_done"].as_u64())
        .unwrap_or(0)
}

#[test]
fn three_capped_seeders_share_one_fetch() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const R: u64 = 8 * MIB;
    // 48 pieces of 1 MiB: 16 per seeder, so that a piece more or less for
    // one of them (the granularity of the work) is a few percent.
    let t = setup_random(48 * MIB, 4);
    let size = t.bundle_bytes();
    let a = t.store("a");
    t.pack(&a, "1.0.0");
    let b = t.clone_store(&a, "b");
    let c = t.clone_store(&a, "c");
    let lan = Lan::new(4);
    let limit = R.to_string();
    let seeders: Vec<NodeProc> = [&a, &b, &c]
        .iter()
        .enumerate()
        .map(|(i, st)| seeder(&lan, i, st, &["--upload-limit", &limit]))
        .collect();
    let peers: Vec<String> = seeders
        .iter()
        .enumerate()
        .map(|(i, n)| addr_of(n, &lan.addrs[i]))
        .collect();
    let before: Vec<u64> = (0..3).map(|i| lan.bytes(i).1).collect();
    let mut args = vec!["--no-mdns"];
    for p in &peers {
        args.extend(["--peer", p.as_str()]);
    }
    let f = t.follower(&lan, 3, "f", &args);
    let secs = transfer_secs(&f);
    verify_store(&f.store, &t.trust);
    let sent: Vec<u64> = (0..3).map(|i| lan.bytes(i).1 - before[i]).collect();
    let ideal = size as f64 / (3.0 * R as f64);
    if std::env::var_os("SWARM_TEST_LOG").is_some() {
        eprintln!("{}", f.log_text());
    }
    eprintln!(
        "k=3 seeders at {R} B/s: {size} bytes in {secs:.2} s (ideal {ideal:.2} s, ratio {:.2}); sent per seeder {sent:?}",
        secs / ideal
    );
    assert!(
        secs <= 1.3 * ideal,
        "{secs:.2} s > 1.3 × {ideal:.2} s\n{}",
        f.log_text()
    );
    for (i, n) in sent.iter().enumerate() {
        assert!(
            *n as f64 >= 0.2 * size as f64,
            "seeder {i} sent only {n} of {size} bytes"
        );
    }
}

#[test]
fn publisher_fans_out_to_six_followers_that_feed_each_other() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const R: u64 = 8 * MIB;
    let t = setup_random(32 * MIB, 4);
    let size = t.bundle_bytes();
    let lan = Lan::new(7);
    // Followers first, finding each other (and later the publisher) by mDNS.
    let followers: Vec<NodeProc> = (1..7)
        .map(|i| t.follower(&lan, i, &format!("f{i}"), &[]))
        .collect();
    wait_until("followers to see each other", || {
        followers.iter().all(|f| {
            node_status(&f.store)["peers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["connected"].as_bool() == Some(true))
                .count()
                >= 5
        })
    });
    let p = t.store("publisher");
    t.pack(&p, "1.0.0");
    let before = lan.bytes(0).1;
    let publisher = NodeProc::start(&lan.hosts[0], &p, &["--upload-limit", &R.to_string()]);
    let mut slowest: f64 = 0.0;
    for f in &followers {
        slowest = slowest.max(transfer_secs(f));
    }
    let uploaded = lan.bytes(0).1 - before;
    for f in &followers {
        verify_store(&f.store, &t.trust);
    }
    eprintln!(
        "publisher at {R} B/s to 6 followers: it sent {uploaded} bytes = {:.2} × the bundle ({size}); slowest follower {slowest:.2} s (publisher alone would need {:.2} s)",
        uploaded as f64 / size as f64,
        6.0 * size as f64 / R as f64
    );
    assert!(
        uploaded < 2 * size,
        "publisher uploaded {uploaded} >= 2 × {size}"
    );
    drop(publisher);
}

#[test]
fn a_seeder_killed_mid_transfer_does_not_stop_the_fetch() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = setup_random(24 * MIB, 3);
    let a = t.store("a");
    t.pack(&a, "1.0.0");
    let b = t.clone_store(&a, "b");
    let lan = Lan::new(3);
    let limit = (4 * MIB).to_string();
    let mut sa = seeder(&lan, 0, &a, &["--upload-limit", &limit]);
    let sb = seeder(&lan, 1, &b, &["--upload-limit", &limit]);
    let (pa, pb) = (addr_of(&sa, &lan.addrs[0]), addr_of(&sb, &lan.addrs[1]));
    let f = t.follower(&lan, 2, "f", &["--no-mdns", "--peer", &pa, "--peer", &pb]);
    let size = t.bundle_bytes();
    wait_until("a quarter of the bundle", || {
        bytes_done(&f.store) > size / 4
    });
    sa.kill9();
    let at_kill = bytes_done(&f.store);
    assert!(at_kill < size, "the transfer was over before the kill");
    f.wait_log("transfer done", T);
    verify_store(&f.store, &t.trust);
    assert_eq!(store_releases(&f.store).len(), 1);
}

#[test]
fn a_follower_killed_and_restarted_resumes_from_its_verified_pieces() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = setup_random(24 * MIB, 3);
    let files = 4; // three media files and index.html
    let a = t.store("a");
    t.pack(&a, "1.0.0");
    let lan = Lan::new(2);
    let sa = seeder(&lan, 0, &a, &["--upload-limit", &(4 * MIB).to_string()]);
    let pa = addr_of(&sa, &lan.addrs[0]);
    let size = t.bundle_bytes();
    let mut f = t.follower(&lan, 1, "f", &["--no-mdns", "--peer", &pa]);
    wait_until("half the bundle", || bytes_done(&f.store) > size / 2);
    let verified = bytes_done(&f.store);
    f.kill9();
    let (rx_before, _) = lan.bytes(1);
    let f2 = t.follower(&lan, 1, "f", &["--no-mdns", "--peer", &pa]);
    let resumed = f2.wait_log("resumed", T);
    f2.wait_log("transfer done", T);
    let (rx_after, _) = lan.bytes(1);
    verify_store(&f2.store, &t.trust);
    let moved = rx_after - rx_before;
    let remained = size - verified;
    let bound = remained + files * MIB;
    eprintln!(
        "restart at {verified} of {size} bytes verified: moved {moved} bytes after restart; remained {remained}, bound {bound}; {resumed}"
    );
    assert!(moved < bound, "moved {moved} >= {bound}");
    assert!(
        !std::fs::exists(f2.store.join("partial")).unwrap()
            || std::fs::read_dir(f2.store.join("partial")).unwrap().count() == 0
    );
}

#[test]
fn a_second_release_moves_only_the_changed_file() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = setup_random(8 * MIB, 8);
    let a = t.store("a");
    t.pack(&a, "1.0.0");
    let lan = Lan::new(2);
    let sa = seeder(&lan, 0, &a, &[]);
    let pa = addr_of(&sa, &lan.addrs[0]);
    let f = t.follower(&lan, 1, "f", &["--no-mdns", "--peer", &pa]);
    f.wait_log("transfer done", T);
    // One file changes: 300 KB of new incompressible bytes.
    let mut rng = Rng::new(99);
    let changed: Vec<u8> = (0..300_000 / 8)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    std::fs::write(t.build.join("media-3.bin"), &changed).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (rx_before, _) = lan.bytes(1);
    let v2 = t.pack(&a, "2.0.0");
    wait_until("the second release", || store_releases(&f.store).len() == 2);
    std::thread::sleep(Duration::from_millis(300));
    let (rx_after, _) = lan.bytes(1);
    let moved = rx_after - rx_before;
    let bundle = v2["bundle_id"].as_str().unwrap();
    let manifest = std::fs::metadata(a.join("manifests").join(bundle))
        .map(|m| m.len())
        .unwrap_or(0);
    let bound = changed.len() as u64 + manifest + 64 * 1024;
    eprintln!(
        "second release: {moved} bytes moved for a {} byte change (manifest {manifest}); bound {bound}",
        changed.len()
    );
    assert!(
        moved >= changed.len() as u64,
        "the changed file did not move?"
    );
    assert!(moved < bound, "moved {moved} >= {bound}");
    verify_store(&f.store, &t.trust);
}

#[test]
fn a_full_install_moves_no_more_than_the_deflate_zip() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    // A web build: many small text files, some images, as generate_build
    // spreads them, plus the real example app.
    let build = dir.path().join("build");
    generate_build(&build, 600, 6 << 20, 21);
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-kiosk"),
        &build.join("hello"),
    );
    let a = dir.path().join("a");
    run_ok(&lanseed_tests::pack_args(
        &build,
        APP,
        "1.0.0",
        &key,
        &a,
        &[],
    ));
    let zip = dir.path().join("bundle.zip");
    run_ok(&[
        "export",
        APP,
        "1.0.0",
        "--zip",
        "--out",
        s(&zip),
        "--store",
        s(&a),
    ]);
    let zip_size = std::fs::metadata(&zip).unwrap().len();
    let lan = Lan::new(2);
    let sa = seeder(&lan, 0, &a, &[]);
    let pa = addr_of(&sa, &lan.addrs[0]);
    let (rx_before, _) = lan.bytes(1);
    let f = NodeProc::start(
        &lan.hosts[1],
        &dir.path().join("f"),
        &[
            "--no-mdns",
            "--peer",
            &pa,
            "--follow",
            APP,
            "--trust",
            &trust,
        ],
    );
    f.wait_log("transfer done", T);
    let (rx_after, _) = lan.bytes(1);
    verify_store(&f.store, &trust);
    let moved = rx_after - rx_before;
    let raw: u64 = lanseed_tests::listing(&build).iter().map(|(_, n)| n).sum();
    eprintln!(
        "full install: {moved} bytes at the interface; deflate zip {zip_size} ({:.3} ×); raw build {raw}",
        moved as f64 / zip_size as f64
    );
    assert!(
        (moved as f64) <= 1.05 * zip_size as f64,
        "{moved} > 1.05 × {zip_size}"
    );
}

#[test]
fn upload_limit_holds_and_max_uploads_bounds_the_peers_served() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const R: u64 = 3 * MIB;
    let t = setup_random(24 * MIB, 4);
    let a = t.store("a");
    t.pack(&a, "1.0.0");
    let lan = Lan::new(4);
    let sa = seeder(
        &lan,
        0,
        &a,
        &["--upload-limit", &R.to_string(), "--max-uploads", "1"],
    );
    let pa = addr_of(&sa, &lan.addrs[0]);
    let followers: Vec<NodeProc> = (1..4)
        .map(|i| t.follower(&lan, i, &format!("f{i}"), &["--peer", &pa]))
        .collect();
    followers[0].wait_log("fetching release", T);
    std::thread::sleep(Duration::from_millis(1000));
    let (_, tx1) = lan.bytes(0);
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let (_, tx2) = lan.bytes(0);
    let rate = (tx2 - tx1) as f64 / t1.elapsed().as_secs_f64();
    for f in &followers {
        f.wait_log("transfer done", T);
        verify_store(&f.store, &t.trust);
    }
    let up = &node_status(&a)["uploads"];
    eprintln!(
        "upload limit {R} B/s: measured {rate:.0} B/s at the interface ({:.3} ×); uploads {up}",
        rate / R as f64
    );
    assert!(
        (rate / R as f64 - 1.0).abs() <= 0.10,
        "rate {rate:.0} B/s is not within 10 % of {R}"
    );
    assert_eq!(up["peak_peers"].as_u64(), Some(1), "{up}");
    assert!(up["refused"].as_u64().unwrap() > 0, "{up}");
}

#[test]
fn a_peer_that_stops_reading_does_not_hold_up_other_uploads() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const R: u64 = 4 * MIB;
    let t = setup_random(16 * MIB, 2);
    let a = t.store("a");
    t.pack(&a, "1.0.0");
    let lan = Lan::new(3);
    let sa = seeder(&lan, 0, &a, &["--upload-limit", &R.to_string()]);
    let pa = addr_of(&sa, &lan.addrs[0]);
    let stuck = t.follower(&lan, 1, "stuck", &["--no-mdns", "--peer", &pa]);
    wait_until("the first megabytes on the peer to freeze", || {
        bytes_done(&stuck.store) > 2 * MIB
    });
    // Frozen mid-transfer: its connection stays open, its answers in
    // flight stop moving once its windows are full.
    stuck.pause();
    let other = t.follower(&lan, 2, "other", &["--no-mdns", "--peer", &pa]);
    let secs = transfer_secs(&other);
    let ideal = t.bundle_bytes() as f64 / R as f64;
    eprintln!(
        "with a frozen peer holding answers: another peer fetched in {secs:.2} s (alone at the limit: {ideal:.2} s)"
    );
    verify_store(&other.store, &t.trust);
    // Held up until the frozen peer's requests time out (20 s), it would
    // take far longer.
    assert!(
        secs < 2.0 * ideal + 3.0,
        "{secs:.2} s for {ideal:.2} s at the limit"
    );
    stuck.resume();
    stuck.wait_log("transfer done", T);
    verify_store(&stuck.store, &t.trust);
}

#[test]
fn pieces_damaged_on_disk_are_refetched_after_a_restart_and_peers_drop_the_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t = setup_random(16 * MIB, 2);
    let a = t.store("a");
    t.pack(&a, "1.0.0");
    let lan = Lan::new(3);
    let sa = seeder(&lan, 0, &a, &["--upload-limit", &(2 * MIB).to_string()]);
    let pa = addr_of(&sa, &lan.addrs[0]);
    let mut x = t.follower(&lan, 1, "x", &["--no-mdns", "--peer", &pa]);
    let size = t.bundle_bytes();
    wait_until("a third of the bundle on x", || {
        bytes_done(&x.store) > size / 3
    });
    // The disk under x changes: one byte in every piece of its partial
    // files (verified pieces are now wrong; others will be overwritten).
    let partial = std::fs::read_dir(x.store.join("partial"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in std::fs::read_dir(&partial).unwrap() {
        let path = f.unwrap().path();
        if path.file_name().unwrap() == "manifest" {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        for at in (100..bytes.len()).step_by(MIB as usize) {
            bytes[at] ^= 0x55;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    // y fetches from x (fast, but now wrong) and the seeder.
    let px = addr_of(&x, &lan.addrs[1]);
    let y = t.follower(&lan, 2, "y", &["--no-mdns", "--peer", &px, "--peer", &pa]);
    let dropped = y.wait_log("banned peer", T);
    assert!(dropped.contains(&peer_of(&px)), "{dropped}");
    // x restarts (well before it could have finished at the seeder's
    // rate): the pieces it finds on disk are checked again, the damaged
    // ones fetched again, and what it commits is the bundle.
    x.kill9();
    let x = t.follower(&lan, 1, "x", &["--no-mdns", "--peer", &pa]);
    y.wait_log("transfer done", T);
    verify_store(&y.store, &t.trust);
    x.wait_log("transfer done", T);
    verify_store(&x.store, &t.trust);
}

fn peer_of(addr: &str) -> String {
    addr.rsplit("/p2p/").next().unwrap().to_owned()
}
