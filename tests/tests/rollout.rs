//! Staged rollouts and the fleet view on a fleet of real device agents.
//!
//! Each test runs a publisher's node (`lanseed seed`, with the fleet key)
//! and 16 (or 6) `lanseed device` agents with the same fleet key, all in a
//! network namespace of the test's own, joined by `--peer` (`--no-mdns`),
//! so tests running side by side never see each other. The test plays
//! each kiosk's page: it calls notifyAppReady (`POST /__lanseed/ready`)
//! for the bundles it calls healthy, and never for a broken one.
//!
//! What is checked comes from the devices themselves: their updater state
//! (`lanseed device list`) and the updater events in their logs (`set`,
//! `appReloaded`), and which devices a wave must reach is computed here
//! from SPEC's draw.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanseed_protocol::BundleId;
use lanseed_protocol::release::Rollout;
use lanseed_tests::capgo::{info, request_on};
use lanseed_tests::net::{Netns, NodeProc};
use lanseed_tests::{json, keygen, lanseed, run_ok};
use serde_json::{Value, json};

const APP: &str = "com.example.kiosk";
const CHANNEL: &str = "production";
const T: Duration = Duration::from_secs(90);
/// The publisher's node's port (and its gateway's, the next one), in the
/// fleet's namespace.
const SEEDER_PORT: u16 = 19_000;
/// The first kiosk's page port; the others follow.
const DEVICE_PORTS: u16 = 20_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn wait_for<R>(what: &str, f: impl FnMut() -> Option<R>) -> R {
    lanseed_tests::wait_for(what, T, f)
}

/// One kiosk.
struct Device {
    id: String,
    store: PathBuf,
    port: u16,
    node: NodeProc,
}

impl Device {
    fn state(&self) -> Value {
        json(&run_ok(&["device", "list", "--store", s(&self.store)]))
    }

    fn current(&self) -> (String, String) {
        let st = self.state();
        (
            st["current"]["bundle_id"].as_str().unwrap_or("").to_owned(),
            st["current"]["status"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Updater events of kind `event` in its log (about `bundle`, if given).
    fn events(&self, event: &str, bundle: Option<&str>) -> usize {
        let needle = match bundle {
            Some(b) => format!("\"event\":\"{event}\",\"bundle\":\"{b}\""),
            None => format!("\"event\":\"{event}\""),
        };
        self.node.log_text().matches(&needle).count()
    }
}

/// The publisher's node and its fleet.
struct Fleet {
    dir: tempfile::TempDir,
    ns: Arc<Netns>,
    key: PathBuf,
    /// The fleet key, when the fleet has one.
    fleet_key: Option<PathBuf>,
    /// The publisher's store.
    publisher: PathBuf,
    /// Its `--peer` address (dialled by address).
    seeder_addr: String,
    _seeder: NodeProc,
    /// The seeder's Capgo gateway port (inside the namespace).
    http: u16,
    devices: Vec<Device>,
    /// Bundles the test's pages confirm (notifyAppReady).
    healthy: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    pages: Option<std::thread::JoinHandle<()>>,
}

impl Fleet {
    /// The publisher's node, with version 1.0.0 packed, and a fleet key.
    fn new() -> (Fleet, String) {
        Self::with_fleet_key(true)
    }

    fn with_fleet_key(with: bool) -> (Fleet, String) {
        let dir = tempfile::tempdir().unwrap();
        let ns = Arc::new(Netns::new());
        let key = keygen(dir.path());
        let fleet_key = with.then(|| dir.path().join("fleet.key"));
        if let Some(f) = &fleet_key {
            run_ok(&["keygen", "--fleet", "--out", s(f)]);
        }
        let publisher = dir.path().join("publisher");
        let a = pack(dir.path(), &key, &publisher, "1.0.0", 100, true);
        // The namespace is the fleet's own: fixed ports below the ephemeral
        // range, which no node listening on port 0 there can take first.
        let listen = format!("/ip4/127.0.0.1/tcp/{SEEDER_PORT}");
        let http = SEEDER_PORT + 1;
        let http_addr = format!("127.0.0.1:{http}");
        let mut args = vec!["--no-mdns", "--listen", &listen, "--http", &http_addr];
        if let Some(f) = &fleet_key {
            args.extend(["--fleet-key", s(f)]);
        }
        let seeder = NodeProc::start_cmd(&ns, "seed", &publisher, &args);
        seeder.wait_log("listening", T);
        let fleet = Fleet {
            dir,
            ns,
            key,
            fleet_key,
            publisher,
            seeder_addr: listen,
            _seeder: seeder,
            http,
            devices: Vec::new(),
            healthy: Arc::new(Mutex::new(HashSet::from([a.clone()]))),
            stop: Arc::default(),
            pages: None,
        };
        (fleet, a)
    }

    /// Packs `version` into the publisher's store.
    fn pack(&self, version: &str, rollout: u16, healthy: bool) -> String {
        pack(
            self.dir.path(),
            &self.key,
            &self.publisher,
            version,
            rollout,
            healthy,
        )
    }

    /// Starts kiosks with `ids`, and the pages that confirm healthy bundles.
    fn start_devices(&mut self, ids: &[String]) {
        let peer = self.seeder_addr.clone();
        let trust = format!("{}.pub", self.key.display());
        let builtin = self.dir.path().join("builtin");
        std::fs::create_dir_all(&builtin).unwrap();
        std::fs::write(builtin.join("index.html"), "<h1>builtin</h1>").unwrap();
        for id in ids {
            let store = self.dir.path().join(format!("dev-{id}"));
            let port = DEVICE_PORTS + self.devices.len() as u16;
            let serve = format!("127.0.0.1:{port}");
            let mut args = vec![
                "--app",
                APP,
                "--channel",
                CHANNEL,
                "--device-id",
                id,
                "--trust",
                &trust,
                "--builtin",
                s(&builtin),
                "--serve",
                &serve,
                "--apply",
                "immediate",
                "--app-ready-timeout",
                "12s",
                "--no-mdns",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--peer",
                &peer,
            ];
            if let Some(f) = &self.fleet_key {
                args.extend(["--fleet-key", s(f)]);
            }
            let node = NodeProc::start_cmd(&self.ns, "device", &store, &args);
            self.devices.push(Device {
                id: id.clone(),
                store,
                port,
                node,
            });
        }
        self.start_pages();
    }

    /// A thread that plays every kiosk's page: like the page's script, it
    /// asks each device for its current bundle, and a device on trial of a
    /// healthy bundle gets its notifyAppReady. (It asks the device itself,
    /// not the publisher's fleet table: a report that arrives late under
    /// load must not let the trial window run out.)
    fn start_pages(&mut self) {
        let ns = self.ns.clone();
        let ports: Vec<u16> = self.devices.iter().map(|d| d.port).collect();
        let (healthy, stop) = (self.healthy.clone(), self.stop.clone());
        self.pages = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let healthy = healthy.lock().unwrap().clone();
                for &port in &ports {
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let Ok(conn) = ns.connect(addr) else { continue };
                    let current = request_on(conn, port, "GET", "/__lanseed/current", &[], &[]);
                    let Ok(current) = serde_json::from_slice::<Value>(&current.body) else {
                        continue;
                    };
                    let bundle = current["bundle_id"].as_str().unwrap_or("");
                    if current["status"] != "trial" || !healthy.contains(bundle) {
                        continue;
                    }
                    if let Ok(conn) = ns.connect(addr) {
                        let body = json!({ "bundle": bundle }).to_string();
                        request_on(conn, port, "POST", "/__lanseed/ready", &[], body.as_bytes());
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }

    /// Waits until every device runs `bundle`, confirmed.
    fn wait_all_on(&self, bundle: &str) {
        let start = Instant::now();
        for d in &self.devices {
            while d.current() != (bundle.to_owned(), "success".to_owned()) {
                assert!(
                    start.elapsed() < T,
                    "{} not on {bundle}: {:#}\n{}",
                    d.id,
                    d.state(),
                    d.node.log_text()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Which devices are on which bundle, as the publisher's node knows
    /// them from their reports.
    fn table(&self) -> Vec<(String, String, String)> {
        let status = lanseed_tests::node_status(&self.publisher);
        let mut rows: Vec<_> = status["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["source"] != "gateway")
            .map(|r| {
                (
                    r["device_id"].as_str().unwrap().to_owned(),
                    r["bundle_id"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// `lanseed rollout ARGS` running in the background, its output kept.
    fn rollout(&self, args: &[&str]) -> Running {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let out = self.dir.path().join(format!(
            "rollout-{}.out",
            RUNS.fetch_add(1, Ordering::SeqCst)
        ));
        let mut cmd = lanseed();
        cmd.args(["rollout", APP, CHANNEL])
            .args(args)
            .args(["--key", s(&self.key), "--store", s(&self.publisher)])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::piped());
        Running {
            child: cmd.spawn().unwrap(),
            out,
        }
    }

    fn post_stats(&self, events: &Value) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.http));
        let conn = self.ns.connect(addr).unwrap();
        let r = request_on(
            conn,
            self.http,
            "POST",
            "/stats",
            &[],
            events.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
}

/// Packs a one-page build of `version` into `store` with `rollout`
/// percent; returns its bundle id. A broken build differs only in its
/// text: never calling notifyAppReady is the test's doing.
fn pack(
    dir: &Path,
    key: &Path,
    store: &Path,
    version: &str,
    rollout: u16,
    healthy: bool,
) -> String {
    let build = dir.join(format!("build-{version}"));
    std::fs::create_dir_all(&build).unwrap();
    let page = if healthy { "ready" } else { "never ready" };
    std::fs::write(
        build.join("index.html"),
        format!("<h1>{version}</h1><p>{page}</p>"),
    )
    .unwrap();
    let out = run_ok(&[
        "pack",
        s(&build),
        "--app",
        APP,
        "--channel",
        CHANNEL,
        "--version",
        version,
        "--rollout",
        &rollout.to_string(),
        "--key",
        s(key),
        "--store",
        s(store),
        "--json",
    ]);
    json(&out)["bundle_id"].as_str().unwrap().to_owned()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.pages.take() {
            let _ = p.join();
        }
    }
}

/// A `lanseed rollout` in the background.
struct Running {
    child: Child,
    out: PathBuf,
}

impl Running {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_line(&self, needle: &str) -> String {
        wait_for(&format!("rollout printing {needle:?}"), || {
            self.text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        })
    }

    /// Waits for it to exit; returns whether it succeeded, its stderr and
    /// its whole output.
    fn finish(mut self) -> (bool, String, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.take() {
                    for line in BufReader::new(e).lines() {
                        err.push_str(&line.unwrap_or_default());
                        err.push('\n');
                    }
                }
                return (status.success(), err, self.text());
            }
            assert!(
                start.elapsed() < T * 2,
                "rollout still running:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pct(p: u16) -> Rollout {
    Rollout::from_basis_points(p * 100).unwrap()
}

/// The draw of `id` for `bundle`, 0..10,000 (the share it first falls in).
fn inside(bundle: &str, share: Rollout, id: &str) -> bool {
    let b: BundleId = bundle.parse().unwrap();
    share.includes(APP, &b, id)
}

/// `n` device ids such that each of `waves` draws at least one device the
/// wave before it did not.
fn ids_for_waves(bundle: &str, waves: &[u16], n: usize) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::new();
    let mut candidates = (0..).map(|i| format!("kiosk-{i:03}"));
    for (k, &w) in waves.iter().enumerate() {
        let below = if k == 0 {
            None
        } else {
            Some(pct(waves[k - 1]))
        };
        let id = candidates
            .by_ref()
            .find(|id| inside(bundle, pct(w), id) && below.is_none_or(|b| !inside(bundle, b, id)))
            .unwrap();
        chosen.push(id);
    }
    chosen.extend(candidates.take(n - chosen.len()));
    chosen
}

/// The ids among `devices` the draw at `share` includes.
fn drawn(devices: &[Device], bundle: &str, share: u16) -> HashSet<String> {
    devices
        .iter()
        .filter(|d| inside(bundle, pct(share), &d.id))
        .map(|d| d.id.clone())
        .collect()
}

#[test]
fn waves_advance_by_themselves_reach_exactly_the_drawn_devices_and_resume_after_a_restart() {
    let (mut fleet, a) = Fleet::new();
    let waves = [10, 25, 50, 100];
    let b = fleet.pack("2.0.0", 0, true);
    let ids = ids_for_waves(&b, &waves, 16);
    fleet.start_devices(&ids);
    fleet.wait_all_on(&a);
    fleet.healthy.lock().unwrap().insert(b.clone());
    // One kiosk of the first wave hangs (frozen): its wave must wait for it.
    let frozen = fleet
        .devices
        .iter()
        .find(|d| inside(&b, pct(10), &d.id))
        .unwrap();
    frozen.node.pause();
    let mut rollout = fleet.rollout(&["--waves", "10,25,50,100", "--dwell", "8s"]);
    let mut history = String::new();
    // Stats any LAN host can post: update_fail of 2.0.0 for 20 made-up
    // devices the first wave draws. Not authenticated: the gate ignores them.
    let liars: Vec<Value> = (0..)
        .map(|i| format!("liar-{i}"))
        .filter(|id| inside(&b, pct(10), id))
        .take(20)
        .map(|id| {
            let mut e = info(APP, &id, "2.0.0");
            e["defaultChannel"] = json!(CHANNEL);
            e["old_version_name"] = json!("1.0.0");
            e["action"] = json!("update_fail");
            e
        })
        .collect();
    fleet.post_stats(&Value::Array(liars));
    for (k, &w) in waves.iter().enumerate() {
        let begins = format!("wave {}/4 ({w} %) begins", k + 1);
        rollout.wait_line(&begins);
        if k == 1 {
            // A restart mid-wave resumes it.
            rollout.child.kill().unwrap();
            rollout.child.wait().unwrap();
            history.push_str(&rollout.text());
            let state: Value = serde_json::from_slice(
                &std::fs::read(
                    fleet
                        .publisher
                        .join("rollouts")
                        .join(format!("{APP}@{CHANNEL}.json")),
                )
                .unwrap(),
            )
            .unwrap();
            assert_eq!(
                (state["wave"].as_u64(), state["outcome"]["state"].as_str()),
                (Some(1), Some("running"))
            );
            rollout = fleet.rollout(&["--waves", "10,25,50,100", "--dwell", "8s"]);
            let line = rollout.wait_line("resuming");
            assert!(line.contains("wave 2/4 (25 %)"), "{line}");
        }
        let want = drawn(&fleet.devices, &b, w);
        assert!(
            !want.is_empty(),
            "the ids were chosen so that wave {w} % draws someone"
        );
        if k == 0 {
            let line = rollout.wait_line("dwell over; waiting for");
            assert!(line.contains(&frozen.id), "{line}");
            std::thread::sleep(Duration::from_secs(3));
            assert!(
                !rollout.text().contains("wave 2/4"),
                "a wave went through with a selected device pending:\n{}",
                rollout.text()
            );
            frozen.node.resume();
        }
        // Every drawn device ends on 2.0.0, confirmed, and only those.
        let start = Instant::now();
        let table = loop {
            let t = fleet.table();
            // Every drawn device, not just as many devices: once the next
            // wave has begun, its devices may get there first.
            let on_b: HashSet<&String> = t
                .iter()
                .filter(|(_, bundle, st)| *bundle == b && st == "success")
                .map(|(id, _, _)| id)
                .collect();
            if want.iter().all(|id| on_b.contains(id)) {
                break t;
            }
            if start.elapsed() >= T {
                let behind: Vec<String> = fleet
                    .devices
                    .iter()
                    .filter(|d| want.contains(&d.id) && !on_b.contains(&d.id))
                    .map(|d| format!("{}'s log:\n{}", d.id, d.node.log_text()))
                    .collect();
                panic!(
                    "the {w} % wave not on 2.0.0: {t:?}\nrollout:\n{}\n{}",
                    rollout.text(),
                    behind.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let on_b: HashSet<String> = table
            .iter()
            .filter(|(_, bundle, _)| *bundle == b)
            .map(|(id, _, _)| id.clone())
            .collect();
        // Devices on 2.0.0 are the drawn ones; on a slow machine the next
        // wave may have begun meanwhile (its dwell over), and then those
        // it draws may be on it too, but never anyone else.
        let next = waves.get(k + 1).map(|&n| drawn(&fleet.devices, &b, n));
        let began = |text: &str| text.contains(&format!("wave {}/4", k + 2));
        let allowed = |id: &String| {
            want.contains(id)
                || (began(&rollout.text()) && next.as_ref().is_some_and(|n| n.contains(id)))
        };
        assert!(
            want.is_subset(&on_b),
            "wave {w} %: {on_b:?} against the draw {want:?}"
        );
        assert!(
            on_b.iter().all(&allowed),
            "wave {w} %: {on_b:?} against the draw {want:?}"
        );
        for d in &fleet.devices {
            let (bundle, _) = d.current();
            if want.contains(&d.id) {
                assert_eq!(bundle, b, "{} at {w} %", d.id);
            } else if bundle == b {
                assert!(allowed(&d.id), "{} on 2.0.0 outside the {w} % draw", d.id);
            }
        }
    }
    let (ok, err, out) = rollout.finish();
    assert!(ok, "rollout failed: {err}\n{out}");
    assert!(
        out.contains("not counted"),
        "the liars' stats are shown as not counted:\n{out}"
    );
    // Each wave went through on the reports of exactly its drawn devices.
    let out = history + &out;
    for (k, &w) in waves[..3].iter().enumerate() {
        let n = drawn(&fleet.devices, &b, w).len();
        let through = format!(
            "wave {}/4 ({w} %) through: {n} of {n} selected reported ({n} confirmed, 0 failed)",
            k + 1
        );
        assert!(out.contains(&through), "no {through:?} in\n{out}");
    }
    assert!(
        out.contains("done: 2.0.0 on 100 % (16 confirmed, 0 failed)"),
        "{out}"
    );
    // Each device installed 1.0.0 and 2.0.0 once and reloaded twice: the
    // statements that raised the share did not touch devices already on it.
    for d in &fleet.devices {
        assert_eq!(d.events("set", Some(&b)), 1, "{} set 2.0.0", d.id);
        assert_eq!(d.events("appReloaded", None), 2, "{} reloads", d.id);
    }
}

#[test]
fn a_bundle_that_never_calls_ready_halts_in_its_first_wave_and_goes_back() {
    let (mut fleet, a) = Fleet::new();
    let bad = fleet.pack("2.0.0", 0, false);
    let ids = ids_for_waves(&bad, &[10], 16);
    fleet.start_devices(&ids);
    fleet.wait_all_on(&a);
    let first = drawn(&fleet.devices, &bad, 10);
    let rollout = fleet.rollout(&[
        "--waves",
        "10,25,50,100",
        "--dwell",
        "5s",
        "--max-failure-rate",
        "2%",
        "--on-halt",
        "back-to",
    ]);
    let out_wait = rollout.wait_line("halting in wave 1/4 (10 %)");
    let (ok, err, out) = rollout.finish();
    assert!(!ok, "a halted rollout exits non-zero:\n{out}");
    assert!(err.contains("halted"), "{err}");
    assert!(out.contains("back to 1.0.0"), "{out}\n{out_wait}");
    // Every device is back on (or still on) 1.0.0; only the first wave
    // ever ran 2.0.0.
    // (Given time to go wrong after the halt.)
    fleet.wait_all_on(&a);
    std::thread::sleep(Duration::from_secs(3));
    for d in &fleet.devices {
        assert_eq!(
            d.events("set", Some(&bad)) > 0,
            first.contains(&d.id),
            "{}: installed the broken bundle",
            d.id
        );
        assert_eq!(d.current().0, a, "{}", d.id);
    }
    let newest = lanseed_tests::store_releases(&fleet.publisher)
        .into_iter()
        .max_by_key(|r| r["seq"].as_u64())
        .unwrap();
    assert_eq!(
        (newest["version"].as_str(), newest["bundle_id"].as_str()),
        (Some("1.0.0"), Some(a.as_str()))
    );
}

#[test]
fn back_to_brings_every_device_back_and_devices_already_there_do_not_reload() {
    let (mut fleet, a) = Fleet::new();
    let b = fleet.pack("2.0.0", 0, true);
    let ids = ids_for_waves(&b, &[50, 100], 16);
    fleet.start_devices(&ids);
    fleet.wait_all_on(&a);
    fleet.healthy.lock().unwrap().insert(b.clone());
    run_ok(&[
        "rollout",
        APP,
        CHANNEL,
        "--percent",
        "50",
        "--key",
        s(&fleet.key),
        "--store",
        s(&fleet.publisher),
    ]);
    let half = drawn(&fleet.devices, &b, 50);
    for d in &fleet.devices {
        let want = if half.contains(&d.id) { &b } else { &a };
        wait_for(&format!("{} on its bundle", d.id), || {
            (d.current() == (want.clone(), "success".to_owned())).then_some(())
        });
    }
    let reloads: Vec<usize> = fleet
        .devices
        .iter()
        .map(|d| d.events("appReloaded", None))
        .collect();
    run_ok(&[
        "rollout",
        APP,
        CHANNEL,
        "--back-to",
        "1.0.0",
        "--key",
        s(&fleet.key),
        "--store",
        s(&fleet.publisher),
    ]);
    fleet.wait_all_on(&a);
    // The release reached the devices left on 1.0.0 too: give them time to
    // (wrongly) reload, then count.
    std::thread::sleep(Duration::from_secs(3));
    for (d, before) in fleet.devices.iter().zip(reloads) {
        let after = d.events("appReloaded", None);
        if half.contains(&d.id) {
            assert_eq!(after, before + 1, "{} came back with one reload", d.id);
        } else {
            assert_eq!(after, before, "{} stayed on 1.0.0 without a reload", d.id);
        }
    }
}

#[test]
fn the_fleet_view_lists_six_devices_and_marks_a_killed_one_stale() {
    let (mut fleet, a) = Fleet::new();
    let ids: Vec<String> = (0..6).map(|i| format!("shop-{i}")).collect();
    fleet.start_devices(&ids);
    fleet.wait_all_on(&a);
    let listed = |fleet: &Fleet| -> Vec<Value> {
        let out = run_ok(&["fleet", "--json", "--store", s(&fleet.publisher)]);
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    };
    let rows = wait_for("six confirmed rows", || {
        let rows = listed(&fleet);
        (rows.len() == 6 && rows.iter().all(|r| r["status"] == "success")).then_some(rows)
    });
    for r in &rows {
        assert!(ids.iter().any(|id| r["device_id"] == *id), "{r}");
        assert_eq!(
            (r["version"].as_str(), r["bundle_id"].as_str()),
            (Some("1.0.0"), Some(a.as_str()))
        );
        assert_eq!(
            (r["authenticated"].as_bool(), r["stale"].as_bool()),
            (Some(true), Some(false)),
            "{r}"
        );
        assert_eq!(r["channel"], CHANNEL);
    }
    // A kiosk loses power: after three missed reports (30 s each) its row
    // is stale, and still listed.
    let gone = fleet.devices.remove(2);
    let mut node = gone.node;
    node.kill9();
    let started = Instant::now();
    let rows = lanseed_tests::wait_for("the killed kiosk stale", Duration::from_secs(150), || {
        let rows = listed(&fleet);
        rows.iter()
            .any(|r| r["device_id"] == gone.id && r["stale"] == true)
            .then_some(rows)
    });
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "stale too soon: {:?}",
        started.elapsed()
    );
    assert_eq!(rows.len(), 6, "the stale row stays listed");
    for r in &rows {
        assert_eq!(r["stale"] == true, r["device_id"] == gone.id, "{r}");
    }
    let human =
        String::from_utf8(run_ok(&["fleet", "--store", s(&fleet.publisher)]).stdout).unwrap();
    assert!(human.contains("stale"), "{human}");
}

#[test]
fn without_a_fleet_key_a_rollout_in_waves_is_refused() {
    // No fleet key: anyone on the LAN could have sent the devices'
    // reports, none is authenticated, and a gate that counts nothing would
    // only wait out its dwells: refused, saying why.
    let (mut fleet, _a) = Fleet::with_fleet_key(false);
    fleet.pack("2.0.0", 0, true);
    let rollout = fleet.rollout(&["--waves", "50,100", "--dwell", "1s"]);
    let (ok, err, _) = rollout.finish();
    assert!(!ok);
    assert!(err.contains("without --fleet-key"), "{err}");
    let newest = lanseed_tests::store_releases(&fleet.publisher)
        .into_iter()
        .max_by_key(|r| r["seq"].as_u64())
        .unwrap();
    assert_eq!(newest["rollout_percent"], 0.0, "nothing was published");
    fleet.devices.clear();
}
