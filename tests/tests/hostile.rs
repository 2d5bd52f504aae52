//! A hostile LAN: the lying peer (`lanseed-liar`, tests/src/liar) against
//! real `lanseed seed` processes on a LAN of network namespaces.
//!
//! Every test has the same shape. A seeder (host 0, upload capped so that
//! times mean something) holds a release; an honest follower (host 1)
//! fetches it once alone, to time it, and once more with the liar (host 2,
//! or several hosts) doing one thing wrong. Then, for every behaviour:
//! - the honest nodes are still running;
//! - the follower holds the release within 2 × its time alone + 5 s (or
//!   stays on its current one, for a downgrade);
//! - each honest node's peak RSS is within its idle RSS + 64 MiB;
//! - `store verify` passes on the follower's store;
//! - the liar got what it deserved, as `status --json` shows it: banned
//!   (bad data), set aside (silence, a trickle, lying `Have`s),
//!   rate-limited (floods, counted), closed (malformed frames), refused
//!   (releases the node does not take).
//!
//! The tests time transfers, so they run one at a time (a lock).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lanseed_tests::liar::harness::{Liar, node_addr};
use lanseed_tests::net::{Lan, NodeProc};
use lanseed_tests::{
    copy_tree, generate_build, json, keygen, node_status, pack_args, path_str as s, run_ok,
    store_releases, verify_store,
};

const APP: &str = "com.example.kiosk";
const T: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;
/// The seeder's upload cap.
const LIMIT: &str = "8MiB";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct World {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: String,
    build: PathBuf,
    lan: Lan,
    seed_store: PathBuf,
    release: serde_json::Value,
}

impl World {
    /// A LAN of `hosts` hosts and a seeder's store holding a release of
    /// `size` bytes.
    fn new(hosts: usize, size: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path());
        let trust = format!("{}.pub", key.display());
        let build = dir.path().join("build");
        generate_build(&build, 12, size, size ^ 0x11);
        let seed_store = dir.path().join("seed");
        let release = json(&run_ok(&pack_args(
            &build,
            APP,
            "1.0.0",
            &key,
            &seed_store,
            &["--json"],
        )));
        World {
            dir,
            key,
            trust,
            build,
            lan: Lan::new(hosts),
            seed_store,
            release,
        }
    }

    fn store(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A copy of the seeder's store (no node identity).
    fn copy_of_seed(&self, name: &str) -> PathBuf {
        let to = self.store(name);
        copy_tree(&self.seed_store, &to);
        let _ = std::fs::remove_file(to.join("node.key"));
        to
    }

    fn seeder(&self) -> NodeProc {
        self.seeder_with(&[])
    }

    /// The seeder on host 0, capped at [`LIMIT`], with `extra` flags.
    fn seeder_with(&self, extra: &[&str]) -> NodeProc {
        let mut args = vec![
            "--no-mdns",
            "--listen",
            "/ip4/0.0.0.0/tcp/0",
            "--upload-limit",
            LIMIT,
        ];
        args.extend_from_slice(extra);
        NodeProc::start(&self.lan.hosts[0], &self.seed_store, &args)
    }

    /// A follower on host 1 that dials `peers`.
    fn follower(&self, name: &str, peers: &[&str]) -> NodeProc {
        self.follower_on(1, name, peers)
    }

    /// A follower on `host` that dials `peers`.
    fn follower_on(&self, host: usize, name: &str, peers: &[&str]) -> NodeProc {
        let mut args = vec![
            "--no-mdns",
            "--listen",
            "/ip4/0.0.0.0/tcp/0",
            "--follow",
            APP,
            "--trust",
            self.trust.as_str(),
        ];
        for p in peers {
            args.extend(["--peer", p]);
        }
        NodeProc::start(&self.lan.hosts[host], &self.store(name), &args)
    }

    /// A liar on `host` that listens, serving `store`, doing `mode`; with
    /// its address (`/ip4/…/tcp/…/p2p/…`) and peer id.
    fn listening_liar(&self, host: usize, store: &Path, mode: &[&str]) -> (Liar, String, String) {
        let mut args = vec![
            "--listen",
            "/ip4/0.0.0.0/tcp/0",
            "--store",
            s(store),
            "--for",
            "120",
        ];
        args.extend_from_slice(mode);
        let liar = Liar::start(&self.lan.hosts[host], &args);
        let listening = liar.wait_named("listening", T);
        let id = listening["peer_id"].as_str().unwrap().to_owned();
        let port = listening["addr"]
            .as_str()
            .unwrap()
            .split("/tcp/")
            .nth(1)
            .unwrap();
        let port = port.split('/').next().unwrap();
        let addr = format!("/ip4/{}/tcp/{port}/p2p/{id}", self.lan.addrs[host]);
        (liar, addr, id)
    }

    /// `/ip4/<host's address>/tcp/<port>/p2p/<id>` of a node on `host`.
    fn addr(&self, node: &NodeProc, host: usize) -> String {
        let a = node_addr(node);
        let port = a.split("/tcp/").nth(1).unwrap();
        format!("/ip4/{}/tcp/{port}", self.lan.addrs[host])
    }

    /// Time for the follower to hold the release with nobody lying.
    fn baseline(&self) -> Duration {
        let seeder = self.seeder();
        let start = Instant::now();
        let f = self.follower("baseline", &[&self.addr(&seeder, 0)]);
        f.wait_log("transfer done", T);
        start.elapsed()
    }

    fn holds_release(&self, store: &Path) -> bool {
        store_releases(store)
            .iter()
            .any(|r| r["bundle_id"] == self.release["bundle_id"])
    }
}

/// Waits until `f` holds the release, at most `bound`; returns the time.
fn wait_release(w: &World, f: &NodeProc, start: Instant, bound: Duration) -> Duration {
    while !w.holds_release(&f.store) {
        assert!(
            start.elapsed() < bound,
            "the follower did not get the release within {bound:?}; status {}\nlog:\n{}",
            node_status(&f.store),
            f.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// The states `node`'s status shows for `peer` (banned, set_aside, ...).
fn fate(node: &NodeProc, peer: &str) -> Vec<String> {
    node_status(&node.store)["refused"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["peer_id"] == peer)
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `node` shows `state` for `peer`.
fn wait_fate(node: &NodeProc, peer: &str, state: &str) {
    let start = Instant::now();
    loop {
        let states = fate(node, peer);
        if states.iter().any(|s| s == state) {
            return;
        }
        assert!(
            start.elapsed() < T,
            "{peer} is not {state} (it is {states:?}); status: {}\nlog:\n{}",
            node_status(&node.store),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs one liar scenario: the follower dials `peers_of(liar addrs)`, the
/// seeder dials the follower, and the checks of the module's header hold.
/// Returns the follower and seeder for further checks.
struct Run {
    seeder: NodeProc,
    follower: NodeProc,
    liars: Vec<Liar>,
}

impl Run {
    /// Every honest node runs, stayed within its memory bound, and the
    /// follower's store verifies.
    fn check_health(&mut self, w: &World, idle: &[(String, u64)]) {
        for (node, (name, idle)) in [&mut self.seeder, &mut self.follower].into_iter().zip(idle) {
            assert!(node.is_running(), "{name} stopped:\n{}", node.log_text());
            let (_, peak) = node.rss();
            assert!(
                peak <= idle + 64 * MIB,
                "{name}: peak RSS {} MiB, idle {} MiB",
                peak / MIB,
                idle / MIB
            );
            eprintln!(
                "{name}: idle {:.1} MiB, peak {:.1} MiB",
                *idle as f64 / MIB as f64,
                peak as f64 / MIB as f64
            );
        }
        verify_store(&self.follower.store, &w.trust);
    }
}

/// A liar that serves `how` lies from a copy of the seeder's store: the
/// follower knows only the liar at first, so the liar is asked (manifest
/// and pieces); the honest seeder joins a moment later.
fn lie_scenario(name: &str, liar_mode: &[&str], state: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(3, 16 * MIB);
    let liar_store = w.copy_of_seed("liar");
    let alone = w.baseline();
    let (liar, liar_addr, liar_id) = w.listening_liar(2, &liar_store, liar_mode);
    let start = Instant::now();
    let follower = w.follower("f", &[&liar_addr]);
    let idle_f = follower.rss().0;
    std::thread::sleep(Duration::from_millis(500));
    let seeder = w.seeder_with(&["--peer", &w.addr(&follower, 1)]);
    let idle_s = seeder.rss().0;
    let bound = alone * 2 + Duration::from_secs(5) + Duration::from_millis(500);
    let took = wait_release(&w, &follower, start, bound);
    eprintln!("{name}: {took:?} with the liar, {alone:?} alone (bound {bound:?})");
    wait_fate(&follower, &liar_id, state);
    let mut run = Run {
        seeder,
        follower,
        liars: vec![liar],
    };
    run.check_health(
        &w,
        &[("seeder".into(), idle_s), ("follower".into(), idle_f)],
    );
    drop(run.liars);
}

#[test]
fn wrong_piece_bytes_get_the_liar_banned() {
    lie_scenario("wrong bytes", &["lie", "--how", "wrong-bytes"], "banned");
}

#[test]
fn more_bytes_than_asked_get_the_liar_banned() {
    lie_scenario("extra bytes", &["lie", "--how", "extra-bytes"], "banned");
}

#[test]
fn a_manifest_that_does_not_hash_to_its_bundle_gets_the_liar_banned() {
    lie_scenario("bad manifest", &["lie", "--how", "bad-manifest"], "banned");
}

#[test]
fn an_endless_answer_gets_the_liar_banned() {
    lie_scenario("endless", &["lie", "--how", "endless"], "banned");
}

#[test]
fn an_answer_declaring_a_huge_body_gets_the_liar_banned() {
    lie_scenario("huge answer", &["lie", "--how", "huge-answer"], "banned");
}

#[test]
fn a_silent_peer_is_set_aside_and_costs_seconds() {
    lie_scenario("silent", &["lie", "--how", "silent"], "set_aside");
}

#[test]
fn a_peer_that_trickles_is_set_aside() {
    lie_scenario("trickle", &["lie", "--how", "trickle"], "set_aside");
}

#[test]
fn lying_have_bitfields_get_the_liar_set_aside() {
    lie_scenario("lying have", &["have", "--lying"], "set_aside");
}

/// A liar that dials both honest nodes and does `mode` to them while the
/// follower fetches from the seeder; returns the run, the liar's peer id
/// and the seeder's status afterwards.
fn attack_scenario(name: &str, mode: &[&str], with_store: bool) -> (Run, String, World) {
    let w = World::new(3, 16 * MIB);
    let liar_store = w.copy_of_seed("liar");
    let alone = w.baseline();
    let seeder = w.seeder();
    let idle_s = seeder.rss().0;
    let s_addr = w.addr(&seeder, 0);
    let mut args = vec!["--dial", s_addr.as_str(), "--key-seed", "7", "--for", "30"];
    if with_store {
        args.extend(["--store", s(&liar_store)]);
    }
    args.extend_from_slice(mode);
    let liar = Liar::start(&w.lan.hosts[2], &args);
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    let follower = w.follower("f", &[&s_addr]);
    let idle_f = follower.rss().0;
    let bound = alone * 2 + Duration::from_secs(5) + Duration::from_millis(500);
    let took = wait_release(&w, &follower, start, bound);
    eprintln!("{name}: {took:?} with the liar, {alone:?} alone (bound {bound:?})");
    let liar_id = liar
        .events()
        .iter()
        .find_map(|e| e["peer_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut run = Run {
        seeder,
        follower,
        liars: vec![liar],
    };
    run.check_health(
        &w,
        &[("seeder".into(), idle_s), ("follower".into(), idle_f)],
    );
    (run, liar_id, w)
}

/// Parts of the names of the liar's frames that lie about a length, a
/// count or a kind (`craft::request_frames`): each must be refused.
const LYING: [&str; 6] = [
    "2^40",
    "u64max",
    "u32max",
    "over_by_1",
    "over_limit",
    "variant.",
];

#[test]
fn malformed_and_lying_frames_close_their_streams_and_the_node_serves_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Every frame of the liar's catalogue (the 42-byte Have declaring
    // 2^40 bytes, and the same trick on every length-prefixed field and
    // count of every message), each on its own stream, under a fresh
    // identity whenever the node bans the last one, while an honest
    // follower fetches from the same node.
    let (run, _, _w) = attack_scenario(
        "frames",
        &["frames", "--wait-ms", "300", "--fresh-id"],
        false,
    );
    let done = run.liars[0].wait_named("frames_done", T);
    let frames: Vec<serde_json::Value> = (run.liars[0].events_named("frame").into_iter())
        .filter(|f| f["dir"] == "request")
        .collect();
    let mut checked = 0;
    for f in &frames {
        let name = f["name"].as_str().unwrap();
        if name.starts_with("ok.") {
            assert_eq!(f["outcome"], "answered", "{f}");
        } else if LYING.iter().any(|l| name.contains(l)) && !name.contains(".hold") {
            // Closed unanswered, or the connection closed with it (the
            // frame that got its sender banned).
            let outcome = f["outcome"].as_str().unwrap();
            assert!(
                ["closed", "conn_lost", "reset"].contains(&outcome),
                "the node refused {name} unanswered: {f}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} lying frames checked; {done}");
    assert!(
        run.liars[0]
            .events_named("frame")
            .iter()
            .any(|f| f["name"] == "have.release_len.2^40"),
        "the 42-byte Have was sent"
    );
    let st = node_status(&run.seeder.store);
    let closed = st["dropped"]["malformed_frames"].as_u64().unwrap();
    assert!(
        closed >= checked,
        "malformed frames counted: {closed} for {checked}"
    );
    let states: Vec<&str> = (st["refused"].as_array().unwrap().iter())
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert!(states.contains(&"closed"), "{st}");
    assert!(
        states.contains(&"banned"),
        "a peer sending many is banned: {st}"
    );
    let log = run.seeder.log_text();
    assert!(
        log.contains("closed a malformed stream"),
        "the node logs them"
    );
    // A record of a later release layout (what an older node gets from a
    // newer one) is refused as such, without a strike: answered above.
    assert!(
        log.contains("release uses layout LSRELEA9, which this lanseed does not read"),
        "{log}"
    );
    eprintln!("frames: {done}; {checked} lying frames closed, {closed} counted");
}

#[test]
fn malformed_frames_on_a_line_close_it_and_the_node_serves_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The same catalogue, each frame on a line of its own
    // (`/lanseed/pieces/1`): only a `GetPieces` is valid there, so every
    // other frame, honest or not, ends its line unanswered. Frames held
    // open would hold their lines, and a peer has at most two: left out.
    let (run, _, _w) = attack_scenario(
        "frames on lines",
        &[
            "frames",
            "--line",
            "--wait-ms",
            "1000",
            "--fresh-id",
            "--skip",
            ".hold",
        ],
        false,
    );
    let done = run.liars[0].wait_named("frames_done", T);
    let frames: Vec<serde_json::Value> = (run.liars[0].events_named("frame").into_iter())
        .filter(|f| f["dir"] == "request")
        .collect();
    let (mut answered, mut refused, mut lies) = (0, 0, 0);
    for f in &frames {
        let name = f["name"].as_str().unwrap();
        let outcome = f["outcome"].as_str().unwrap();
        if name == "ok.get_pieces" {
            assert_eq!(outcome, "answered", "{f}");
            answered += 1;
        } else {
            assert!(
                ["closed", "conn_lost", "reset"].contains(&outcome),
                "the node refused {name} on a line unanswered: {f}"
            );
            refused += 1;
            lies += usize::from(LYING.iter().any(|l| name.contains(l)));
        }
    }
    assert_eq!(answered, 1, "{done}");
    assert!(
        refused >= 40 && lies >= 40,
        "{refused} frames refused; {done}"
    );
    let st = node_status(&run.seeder.store);
    // Each lie refused on its own merit, not by a cap on lines.
    let counted = st["dropped"]["malformed_frames"].as_u64().unwrap() as usize;
    assert!(
        counted >= lies,
        "malformed frames counted: {counted} for {lies} lies; {st}"
    );
    let states: Vec<&str> = (st["refused"].as_array().unwrap().iter())
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert!(
        states.contains(&"banned"),
        "a peer sending many is banned: {st}"
    );
    assert!(
        run.seeder
            .log_text()
            .contains("a request other than GetPieces on a line"),
        "the node says why"
    );
    eprintln!("frames on lines: {done}; {refused} refused");
}

#[test]
fn pieces_come_on_a_line_or_by_request_response_from_a_peer_without_lines() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // An honest peer as the only source: one that speaks lines, then one
    // of an older version that does not.
    for lines in [true, false] {
        let w = World::new(2, 16 * MIB);
        let liar_store = w.copy_of_seed("liar");
        let mode: &[&str] = if lines {
            &["announce"]
        } else {
            &["--no-lines", "announce"]
        };
        let (liar, liar_addr, _) = w.listening_liar(1, &liar_store, mode);
        let start = Instant::now();
        let follower = w.follower("f", &[&liar_addr]);
        let took = wait_release(&w, &follower, start, T);
        verify_store(&follower.store, &w.trust);
        let pieces = (liar.events_named("answered").into_iter())
            .filter(|e| e["what"] == "pieces" && e["how"] == "honest")
            .count();
        assert!(pieces > 0, "the pieces came from the liar");
        let opened = liar.events_named("line").len();
        if lines {
            assert!(opened >= 1, "the follower asked on a line");
        } else {
            assert_eq!(opened, 0, "no line was accepted");
        }
        eprintln!("lines {lines}: {took:?}, {pieces} answers of pieces, {opened} lines");
    }
}

#[test]
fn wrong_piece_bytes_by_request_response_get_the_liar_banned() {
    // The same lie from a peer without lines: the fetch falls back, and
    // checks what it gets just the same.
    lie_scenario(
        "wrong bytes, no lines",
        &["--no-lines", "lie", "--how", "wrong-bytes"],
        "banned",
    );
}

#[test]
fn floods_of_announcements_are_rate_limited_and_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, _, _w) = attack_scenario(
        "announce flood",
        &["flood", "--what", "announce", "--rate", "1000"],
        true,
    );
    let st = node_status(&run.seeder.store);
    assert!(
        st["dropped"]["announcements"].as_u64().unwrap() > 100,
        "{st}"
    );
    assert!(
        st["refused"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "rate_limited"),
        "{st}"
    );
}

#[test]
fn floods_of_haves_are_rate_limited_and_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, _, _w) = attack_scenario(
        "have flood",
        &["flood", "--what", "have", "--rate", "1000"],
        true,
    );
    let st = node_status(&run.seeder.store);
    assert!(st["dropped"]["haves"].as_u64().unwrap() > 100, "{st}");
}

#[test]
fn a_thousand_connections_from_fresh_peer_ids_are_bounded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (run, _, _w) = attack_scenario(
        "1000 ids",
        &[
            "ids",
            "--count",
            "1000",
            "--concurrency",
            "50",
            "--hold-ms",
            "2000",
        ],
        false,
    );
    let st = node_status(&run.seeder.store);
    assert!(
        st["dropped"]["connections_refused"].as_u64().unwrap() > 0,
        "{st}"
    );
    let done = run.liars[0].wait_named("ids_done", T);
    eprintln!("ids: {done}");
    assert!(st["peers"].as_array().unwrap().len() <= 256, "{st}");
}

#[test]
fn five_hundred_spoofed_mdns_records_fill_the_peer_book_to_its_cap_and_no_more() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(3, 4 * MIB);
    // A node with mDNS on, and 500 records of peers that do not exist at
    // an address of the LAN nobody has.
    let node = NodeProc::start(
        &w.lan.hosts[1],
        &w.store("mdns"),
        &["--listen", "/ip4/0.0.0.0/tcp/0"],
    );
    let idle = node.rss().0;
    let nowhere = format!("{}.250", w.lan.addrs[2].rsplit_once('.').unwrap().0);
    let _liar = Liar::start(
        &w.lan.hosts[2],
        &["--for", "40", "mdns", "--count", "500", "--addr", &nowhere],
    );
    // The book fills up to its cap.
    let start = Instant::now();
    loop {
        let st = node_status(&node.store);
        let known = st["peers"].as_array().unwrap().len();
        assert!(known <= 256, "{known} peers known");
        if known >= 200 || start.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let known = node_status(&node.store)["peers"].as_array().unwrap().len();
    assert!(
        known >= 200,
        "the spoofed records filled the book: {known} peers known"
    );
    // Dials stay within 10 a second (plus a burst of 10).
    let d0 = node_status(&node.store)["dropped"]["dials"]
        .as_u64()
        .unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let st = node_status(&node.store);
    let dials = st["dropped"]["dials"].as_u64().unwrap() - d0;
    let per_sec = dials as f64 / t0.elapsed().as_secs_f64();
    eprintln!(
        "mdns: {} peers known, {dials} dials in 5 s ({per_sec:.1}/s), {} names refused, {} forgotten",
        st["peers"].as_array().unwrap().len(),
        st["dropped"]["peers_refused"],
        st["dropped"]["peers_forgotten"]
    );
    assert!(st["peers"].as_array().unwrap().len() <= 256);
    assert!(per_sec <= 12.5, "{per_sec} dials a second");
    let mut node = node;
    assert!(node.is_running());
    assert!(node.rss().1 <= idle + 64 * MIB);
}

#[test]
fn a_replayed_older_release_is_refused_and_the_follower_stays_on_its_newer_one() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(3, 2 * MIB);
    // The liar holds an older release (a lower sequence) that the
    // follower never had; the seeder a newer one.
    let old_store = w.store("old");
    run_ok(&pack_args(
        &w.build,
        APP,
        "0.9.0",
        &w.key,
        &old_store,
        &["--seq", "5"],
    ));
    std::fs::write(w.build.join("index.html"), "<h1>2.0</h1>").unwrap();
    let newer = json(&run_ok(&pack_args(
        &w.build,
        APP,
        "2.0.0",
        &w.key,
        &w.seed_store,
        &["--json"],
    )));
    let seeder = w.seeder();
    let mut f = w.follower("f", &[&w.addr(&seeder, 0)]);
    let idle = f.rss().0;
    f.wait_log("version=2.0.0 bundle", T);
    f.wait_log("transfer done", T);
    let liar = Liar::start(
        &w.lan.hosts[2],
        &[
            "--dial",
            &w.addr(&f, 1),
            "--store",
            s(&old_store),
            "--for",
            "20",
            "announce",
        ],
    );
    let liar_id = liar.wait_event("any", T, |e| e["peer_id"].is_string())["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_fate(&f, &liar_id, "refused");
    let held: Vec<String> = store_releases(&f.store)
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_owned())
        .collect();
    assert!(held.contains(&"2.0.0".to_owned()), "{held:?}");
    assert!(
        !f.log_text().contains("version=0.9.0 seq"),
        "the older release is never fetched"
    );
    assert_eq!(newer["version"], "2.0.0");
    assert!(f.is_running());
    assert!(
        f.rss().1 <= idle + 64 * MIB,
        "peak RSS within idle + 64 MiB"
    );
    verify_store(&f.store, &w.trust);
}

#[test]
fn twenty_silent_peers_next_to_one_honest_seeder_cost_seconds() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(22, 16 * MIB);
    let liar_store = w.copy_of_seed("liar");
    let alone = w.baseline();
    let mut addrs = Vec::new();
    let mut liars = Vec::new();
    for host in 2..22 {
        let (liar, addr, _) = w.listening_liar(host, &liar_store, &["lie", "--how", "silent"]);
        addrs.push(addr);
        liars.push(liar);
    }
    let peers: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let start = Instant::now();
    let follower = w.follower("f", &peers);
    let idle_f = follower.rss().0;
    std::thread::sleep(Duration::from_millis(500));
    let seeder = w.seeder_with(&["--peer", &w.addr(&follower, 1)]);
    let idle_s = seeder.rss().0;
    let bound = alone * 2 + Duration::from_secs(5) + Duration::from_millis(500);
    let took = wait_release(&w, &follower, start, bound);
    eprintln!("20 silent peers: {took:?}, {alone:?} alone (bound {bound:?})");
    let mut run = Run {
        seeder,
        follower,
        liars,
    };
    run.check_health(
        &w,
        &[("seeder".into(), idle_s), ("follower".into(), idle_f)],
    );
}

/// Peer-first choice has a follower wait for pieces other followers say
/// they are fetching rather than ask the source: a liar that says it
/// fetches every piece, holds none and lacks whatever it is asked, must
/// cost the fetch its patience (2 s), not the release.
#[test]
fn a_follower_that_claims_to_fetch_every_piece_cannot_hold_a_fetch_up() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(3, 16 * MIB);
    let liar_store = w.copy_of_seed("liar");
    let alone = w.baseline();
    let (liar, liar_addr, _) = w.listening_liar(2, &liar_store, &["have", "--claim-fetching"]);
    let start = Instant::now();
    let follower = w.follower("f", &[&liar_addr]);
    let idle_f = follower.rss().0;
    std::thread::sleep(Duration::from_millis(500));
    let seeder = w.seeder_with(&["--peer", &w.addr(&follower, 1)]);
    let idle_s = seeder.rss().0;
    let bound = alone * 2 + Duration::from_secs(5) + Duration::from_millis(500);
    let took = wait_release(&w, &follower, start, bound);
    eprintln!("a liar claiming every piece: {took:?}, {alone:?} alone (bound {bound:?})");
    let mut run = Run {
        seeder,
        follower,
        liars: vec![liar],
    };
    run.check_health(
        &w,
        &[("seeder".into(), idle_s), ("follower".into(), idle_f)],
    );
}

/// Initial seeding: a whole seeder holds a piece on its way to one peer
/// back from the others for a while, so that they get it from that peer.
/// A peer that takes every piece and never passes one on (nor says what
/// it holds) can use that once per piece, not round after round: the
/// honest follower gets the release in about the time two peers sharing
/// the seeder's uplink take.
#[test]
fn a_peer_that_takes_every_piece_and_never_shares_cannot_hold_them_back() {
    let held_back = leech_beside_a_follower(&["leech"], |seeder, liar| {
        // It has taken pieces before the follower comes.
        let t0 = Instant::now();
        while node_status(&seeder.store)["uploads"]["answers"]
            .as_u64()
            .unwrap()
            < 4
        {
            assert!(t0.elapsed() < T, "the leech got nothing:\n{}", liar.dump());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // The rule was at work: the follower was told to wait for pieces the
    // leech had just taken.
    assert!(held_back >= 1, "no piece was held back");
}

#[test]
fn a_flood_of_requests_for_pieces_that_do_not_exist_costs_a_follower_little() {
    // Held back: the liar's own requests for pieces on their way to the
    // follower. That asking alone holds nothing back from the follower is
    // `serve::tests::only_pieces_an_answer_carries_are_held_back_for_its_peer`.
    leech_beside_a_follower(&["leech", "--junk"], |_, liar| {
        // Its first round is under way before the follower comes.
        liar.wait_event("a round of junk requests", T, |e| e["kind"] == "leech-junk");
    });
}

/// A liar in `mode` dialing a seeder of a 16 MiB release; once `ready`
/// says it is at work, a follower must get the release within twice the
/// time it takes alone (plus 5 s: the liar shares the seeder's uplink),
/// and the nodes stay healthy. Returns the seeder's held-back count.
fn leech_beside_a_follower(mode: &[&str], ready: impl FnOnce(&NodeProc, &Liar)) -> u64 {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(3, 16 * MIB);
    let liar_store = w.copy_of_seed("liar");
    let alone = w.baseline();
    let seeder = w.seeder();
    let idle_s = seeder.rss().0;
    let addr = w.addr(&seeder, 0);
    let mut args = vec!["--dial", &addr, "--store", s(&liar_store), "--for", "120"];
    args.extend_from_slice(mode);
    let liar = Liar::start(&w.lan.hosts[2], &args);
    ready(&seeder, &liar);
    let start = Instant::now();
    let follower = w.follower("f", &[&addr]);
    let idle_f = follower.rss().0;
    let bound = alone * 2 + Duration::from_secs(5);
    let took = wait_release(&w, &follower, start, bound);
    let held_back = node_status(&seeder.store)["uploads"]["held_back"]
        .as_u64()
        .unwrap();
    eprintln!(
        "{mode:?} beside a follower: {took:?}, {alone:?} alone (bound {bound:?}); {held_back} requests held back"
    );
    let mut run = Run {
        seeder,
        follower,
        liars: vec![liar],
    };
    run.check_health(
        &w,
        &[("seeder".into(), idle_s), ("follower".into(), idle_f)],
    );
    held_back
}

#[test]
fn a_release_signed_by_an_untrusted_key_is_refused_without_fetching() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(3, 2 * MIB);
    let stranger_dir = w.dir.path().join("stranger");
    std::fs::create_dir(&stranger_dir).unwrap();
    let stranger = keygen(&stranger_dir);
    let liar_store = w.store("liar");
    std::fs::write(w.build.join("index.html"), "<h1>not yours</h1>").unwrap();
    run_ok(&pack_args(
        &w.build,
        APP,
        "6.6.6",
        &stranger,
        &liar_store,
        &[],
    ));
    let seeder = w.seeder();
    let mut f = w.follower("f", &[&w.addr(&seeder, 0)]);
    let idle = f.rss().0;
    f.wait_log("transfer done", T);
    let liar = Liar::start(
        &w.lan.hosts[2],
        &[
            "--dial",
            &w.addr(&f, 1),
            "--store",
            s(&liar_store),
            "--for",
            "20",
            "announce",
        ],
    );
    let liar_id = liar.wait_event("any", T, |e| e["peer_id"].is_string())["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_fate(&f, &liar_id, "refused");
    let st = node_status(&f.store);
    assert!(
        st["dropped"]["releases_refused"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert!(!f.log_text().contains("version=6.6.6 seq"), "never fetched");
    assert!(w.holds_release(&f.store));
    assert_eq!(store_releases(&f.store).len(), 1);
    assert!(f.is_running());
    assert!(
        f.rss().1 <= idle + 64 * MIB,
        "peak RSS within idle + 64 MiB"
    );
    verify_store(&f.store, &w.trust);
}

#[test]
fn an_upload_slot_held_by_a_peer_that_stops_reading_is_freed_within_seconds() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new(3, 32 * MIB);
    let alone = w.baseline();
    // One upload slot: a follower that freezes mid-transfer holds it.
    let seeder = w.seeder_with(&["--max-uploads", "1"]);
    let s_addr = w.addr(&seeder, 0);
    let frozen = w.follower("frozen", &[&s_addr]);
    let start = Instant::now();
    loop {
        let st = node_status(&frozen.store);
        let done = st["transfers"][0]["bytes_done"].as_u64().unwrap_or(0);
        if done > 8 * MIB {
            break;
        }
        assert!(start.elapsed() < T, "{st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    frozen.pause();
    // Another follower, on another host, still gets the whole release.
    let start = Instant::now();
    let other = w.follower_on(2, "other", &[&s_addr]);
    let bound = alone * 2 + Duration::from_secs(5);
    let took = wait_release(&w, &other, start, bound);
    eprintln!(
        "a frozen reader holding the only slot: another follower took {took:?} ({alone:?} alone, bound {bound:?})"
    );
    frozen.resume();
    let mut seeder = seeder;
    assert!(seeder.is_running());
    verify_store(&other.store, &w.trust);
}

#[test]
fn loopback_is_exempt_from_the_per_address_limits_unless_told_otherwise() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ns = lanseed_tests::net::Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for (name, extra) in [("exempt", None), ("limited", Some("--limit-loopback"))] {
        let mut args = vec!["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];
        args.extend(extra);
        let node = NodeProc::start(&ns, &dir.path().join(name), &args);
        let addr = node_addr(&node);
        let mut liar = Liar::start(
            &ns,
            &[
                "--dial",
                &addr,
                "--for",
                "20",
                "ids",
                "--count",
                "40",
                "--concurrency",
                "20",
                "--hold-ms",
                "1000",
            ],
        );
        liar.wait_named("ids_done", T);
        liar.stop();
        let st = node_status(&node.store);
        refused.push(st["dropped"]["connections_refused"].as_u64().unwrap());
    }
    assert_eq!(refused[0], 0, "loopback is exempt by default");
    assert!(refused[1] > 0, "--limit-loopback limits it: {refused:?}");
}
