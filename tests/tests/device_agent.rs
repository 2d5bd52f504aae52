//! `lanseed device` run as a kiosk operator would: channel switches that
//! install what the store already holds and switch what the node fetches,
//! a channel kept across restarts, a store the device collects itself, a
//! full disk it recovers from by itself, and pages answered while a large
//! bundle installs.
//!
//! The nodes here find each other through `--peer` only (`--no-mdns`), on
//! loopback ports of their own, inside the test run's private namespace
//! (`../shared/tools/isolated`), so the test reaches the kiosk server
//! directly and tests running side by side never see each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lanseed_tests::net::NodeProc;
use lanseed_tests::{
    free_port, generate_build, http_get, http_post, json, keygen, node_status, run_ok,
    store_releases,
};

const APP: &str = "com.example.kiosk";
const T: Duration = Duration::from_secs(40);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Kiosk {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: String,
    builtin: PathBuf,
    /// The device's store.
    store: PathBuf,
    port: u16,
}

fn kiosk() -> Kiosk {
    kiosk_in(tempfile::tempdir().unwrap(), None)
}

/// A kiosk whose store lives at `store` (default: in the temp dir).
fn kiosk_in(dir: tempfile::TempDir, store: Option<PathBuf>) -> Kiosk {
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let builtin = dir.path().join("builtin");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("index.html"), "<h1>builtin</h1>").unwrap();
    let store = store.unwrap_or_else(|| dir.path().join("device"));
    Kiosk {
        dir,
        key,
        trust,
        builtin,
        store,
        port: free_port(),
    }
}

impl Kiosk {
    /// Packs a one-page build of `version` on `channel` with sequence
    /// `seq` into `store`; returns its bundle id.
    fn pack(&self, store: &Path, channel: &str, version: &str, seq: u64) -> String {
        let build = self.dir.path().join(format!("build-{channel}-{version}"));
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(
            build.join("index.html"),
            format!("<h1>{channel} {version}</h1>"),
        )
        .unwrap();
        self.pack_dir(store, &build, channel, version, seq)
    }

    fn pack_dir(
        &self,
        store: &Path,
        build: &Path,
        channel: &str,
        version: &str,
        seq: u64,
    ) -> String {
        let out = run_ok(&[
            "pack",
            s(build),
            "--app",
            APP,
            "--channel",
            channel,
            "--version",
            version,
            "--seq",
            &seq.to_string(),
            "--key",
            s(&self.key),
            "--store",
            s(store),
            "--json",
        ]);
        json(&out)["bundle_id"].as_str().unwrap().to_owned()
    }

    fn device(&self, extra: &[&str]) -> NodeProc {
        let serve = format!("127.0.0.1:{}", self.port);
        let mut args = vec![
            "--app",
            APP,
            "--trust",
            &self.trust,
            "--builtin",
            s(&self.builtin),
            "--serve",
            &serve,
            "--app-ready-timeout",
            "20s",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ];
        args.extend_from_slice(extra);
        NodeProc::start_here("device", &self.store, &args)
    }

    fn state(&self) -> serde_json::Value {
        json(&run_ok(&["device", "list", "--store", s(&self.store)]))
    }

    /// Waits until the current bundle is `bundle`, then confirms it as its
    /// page would (notifyAppReady).
    fn wait_and_confirm(&self, bundle: &str) {
        wait_for(&format!("{bundle} current"), || {
            (self.state()["current"]["bundle_id"] == bundle).then_some(())
        });
        let (code, body) = http_post(
            self.port,
            "__lanseed/ready",
            &format!("{{\"bundle\":\"{bundle}\"}}"),
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        wait_for(&format!("{bundle} confirmed"), || {
            (self.state()["current"]["status"] == "success").then_some(())
        });
    }
}

/// A seeder on a loopback port of its own; returns it and its `--peer`
/// address (without `/p2p/`: dialled by address).
fn seeder(store: &Path) -> (NodeProc, String) {
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let node = NodeProc::start_here("seed", store, &["--no-mdns", "--listen", &listen]);
    (node, listen)
}

fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    lanseed_tests::wait_for(what, T, f)
}

/// (channel, seq) of every release in `store`, sorted.
fn held(store: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = store_releases(store)
        .iter()
        .map(|r| {
            (
                r["channel"].as_str().unwrap().to_owned(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_channel_switch_installs_what_the_store_holds_then_fetches_the_new_channel() {
    let k = kiosk();
    let seeder_store = k.dir.path().join("seeder");
    let prod = k.pack(&seeder_store, "production", "1.0.0", 1);
    let (_seeder, peer) = seeder(&seeder_store);
    // No --channel: production on a first start.
    let mut device = k.device(&["--peer", &peer, "--apply", "immediate"]);
    k.wait_and_confirm(&prod);
    // (The collection that follows the confirmation is over.)
    std::thread::sleep(Duration::from_millis(1000));

    // A beta release lands in the device's store (imported by hand): the
    // device follows production, so it stays where it is.
    let beta1 = k.pack(&k.store, "beta", "2.0.0-beta.1", 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(k.state()["current"]["bundle_id"], prod.as_str());

    // Switched to beta: the newest beta release already held installs.
    run_ok(&["device", "channel", "beta", "--store", s(&k.store)]);
    k.wait_and_confirm(&beta1);
    // The node follows beta now: a newer beta published on the seeder is
    // fetched and installed.
    let beta2 = k.pack(&seeder_store, "beta", "2.0.0-beta.2", 2);
    k.wait_and_confirm(&beta2);
    // The seeder's next production release is not fetched any more.
    k.pack(&seeder_store, "production", "1.1.0", 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !held(&k.store).contains(&("production".into(), 2)),
        "a beta device fetched production: {:?}",
        held(&k.store)
    );
    let log = device.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("fetching release") && l.contains("version=1.1.0")),
        "{log}"
    );

    // Restarted without --channel: the channel set by `device channel` stays.
    device.stop();
    let _device = k.device(&["--peer", &peer, "--apply", "immediate"]);
    let st = k.state();
    assert_eq!(st["channel"], "beta", "{st}");
    assert_eq!(st["current"]["bundle_id"], beta2.as_str(), "{st}");
    let log = std::fs::read_to_string(k.store.with_extension("log")).unwrap();
    assert!(log.contains("channel=beta"), "{log}");
}

#[test]
fn a_device_collects_its_store_down_to_what_its_rule_keeps() {
    let k = kiosk();
    // A developer's dev channel next to production, all in the kiosk's store.
    for seq in 1..=30 {
        k.pack(&k.store, "dev", &format!("0.{seq}.0"), seq);
    }
    let mut prod = Vec::new();
    for seq in 1..=3 {
        prod.push(k.pack(&k.store, "production", &format!("1.{seq}.0"), seq));
    }
    assert_eq!(held(&k.store).len(), 33);
    let _device = k.device(&["--channel", "production", "--apply", "immediate"]);
    k.wait_and_confirm(&prod[2]);
    // Kept: the current bundle's release; every other release goes, and
    // with it every blob and manifest no kept release needs.
    wait_for("the collection", || {
        (held(&k.store) == [("production".to_owned(), 3)]).then_some(())
    });
    // The index goes first, the files after it.
    wait_for("the files to go", || {
        let blobs = walk_files(&k.store.join("blobs"));
        let manifests = walk_files(&k.store.join("manifests"));
        ((blobs.len(), manifests.len()) == (1, 1)).then_some(())
    });
    let bundles: Vec<_> = std::fs::read_dir(k.store.join("device/bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(bundles, [prod[2].clone()]);
    lanseed_tests::verify_store(&k.store, &k.trust);
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A tmpfs of `mb` MiB mounted by the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: PathBuf, mb: u32) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs", s(&at)])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs (the tests run as root)");
        Tmpfs(at)
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail", s(&self.0)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Fills it up to `leave` free bytes with one file; returns its path.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.0.join("filler");
        let len = self.free().saturating_sub(leave);
        let f = std::fs::File::create(&path).unwrap();
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        let chunk = vec![0x5a_u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        w.flush().unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", s(&self.0)]).status();
    }
}

#[test]
fn a_fetch_that_failed_on_a_full_disk_completes_once_space_is_freed_and_the_floor_waits() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::new(dir.path().join("small"), 48);
    let k = kiosk_in(dir, Some(fs.0.join("store")));
    let seeder_store = k.dir.path().join("seeder");
    let build = k.dir.path().join("big");
    generate_build(&build, 40, 12_000_000, 7);
    let v1 = k.pack_dir(&seeder_store, &build, "production", "1.0.0", 1);

    // The device's log is on the tmpfs too (beside its store): a log that
    // cannot be written must not stop it.
    // No floor: the transfer runs into the full disk and fails...
    let filler = fs.fill(5 << 20);
    let (_seeder, peer) = seeder(&seeder_store);
    let device = k.device(&["--peer", &peer, "--apply", "immediate", "--min-free", "0"]);
    let st = wait_for("a retry after the disk filled up", || {
        let st = lanseed_tests::lanseed()
            .args(["status", "--json", "--store", s(&k.store)])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&st.stderr),
            device.log_text()
        );
        let st = json(&st);
        (!st["retrying"].as_array().unwrap().is_empty()).then_some(st)
    });
    // (Its log is on the full tmpfs too: the failure shows in its status,
    // not reliably in its log.)
    eprintln!("retrying: {}", st["retrying"]);
    // ...and completes by itself once space is freed.
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    k.wait_and_confirm(&v1);
    eprintln!(
        "installed {:.1}s after space was freed",
        start.elapsed().as_secs_f64()
    );
    drop(device);

    // With a floor above the free space, a new release waits, and status
    // says why.
    let v2 = {
        let b2 = k.dir.path().join("big2");
        generate_build(&b2, 10, 2_000_000, 8);
        k.pack_dir(&seeder_store, &b2, "production", "2.0.0", 2)
    };
    let device = k.device(&[
        "--peer",
        &peer,
        "--apply",
        "immediate",
        "--min-free",
        "100%",
    ]);
    let why = wait_for("status to say why fetches wait", || {
        node_status(&k.store)["waiting"].as_str().map(str::to_owned)
    });
    assert!(why.contains("--min-free"), "{why}");
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(k.state()["current"]["bundle_id"], v2.as_str());
    assert!(!held(&k.store).contains(&("production".into(), 2)));
    drop(device);
    // Without the floor it arrives.
    let _device = k.device(&["--peer", &peer, "--apply", "immediate"]);
    k.wait_and_confirm(&v2);
}

/// The p-th percentile of `v` (sorted in place).
fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn page_latency(port: u16) -> Duration {
    let t = Instant::now();
    let (code, body) = http_get(port, "");
    assert_eq!(code, 200);
    assert!(!body.is_empty());
    t.elapsed()
}

/// A notifyAppReady for a bundle that is not on trial: answered by the
/// updater itself (`confirmed: false`), so it measures whether the updater
/// is free.
fn ready_latency(port: u16) -> Duration {
    let t = Instant::now();
    let (code, body) = http_post(port, "__lanseed/ready", "{\"bundle\":\"not-on-trial\"}");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    t.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn pages_are_answered_while_a_bundle_of_20000_files_installs() {
    let k = kiosk();
    let build = k.dir.path().join("huge");
    generate_build(&build, 20_000, 40_000_000, 11);
    let device = k.device(&["--apply", "next-start"]);
    let mut idle: Vec<Duration> = (0..100).map(|_| page_latency(k.port)).collect();
    let mut idle_ready: Vec<Duration> = (0..100).map(|_| ready_latency(k.port)).collect();
    let (idle_p99, idle_ready_p99) = (
        percentile(&mut idle, 0.99),
        percentile(&mut idle_ready, 0.99),
    );

    // Packed into the device's store by another process: the device
    // notices and materialises it (20,000 hard links and a sync).
    let packed = Instant::now();
    let id = k.pack_dir(&k.store, &build, "production", "2.0.0", 1);
    eprintln!("packed in {:.1}s", packed.elapsed().as_secs_f64());
    wait_for("the install to start", || {
        (k.state()["installing"] == id.as_str()).then_some(())
    });
    // Batches of 10 pages and 10 notifyAppReady; a batch counts as
    // during the install when the install still runs after it.
    let (mut busy, mut busy_ready, mut during) = (Vec::new(), Vec::new(), 0);
    while busy.len() < 100 {
        for _ in 0..10 {
            busy.push(page_latency(k.port));
            busy_ready.push(ready_latency(k.port));
        }
        if k.state()["installing"] == id.as_str() {
            during += 10;
        }
    }
    let (busy_p99, busy_ready_p99) = (
        percentile(&mut busy, 0.99),
        percentile(&mut busy_ready, 0.99),
    );
    wait_for("the install to end", || {
        (k.state()["next"] == id.as_str()).then_some(())
    });
    let log = device.log_text();
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .map(lanseed_tests::net::log_time_us)
            .unwrap()
    };
    let install_ms = (at("\"downloadComplete\"") - at("installing")) as f64 / 1e3;
    eprintln!(
        "p99 of 100 page loads: {:.1} ms idle, {:.1} ms while installing; of notifyAppReady: {:.1} ms idle, {:.1} ms while installing \
         (the install took {install_ms:.0} ms; {during} of the 100 requests of each kind were made during it)",
        ms(idle_p99),
        ms(busy_p99),
        ms(idle_ready_p99),
        ms(busy_ready_p99),
    );
    assert!(
        during >= 50,
        "only {during} requests fell inside the install"
    );
    assert!(
        busy_p99 <= idle_p99 * 3 + Duration::from_millis(20),
        "page p99 {busy_p99:?} while installing against {idle_p99:?} idle"
    );
    assert!(
        busy_ready_p99 <= idle_ready_p99 * 3 + Duration::from_millis(20),
        "notifyAppReady p99 {busy_ready_p99:?} while installing against {idle_ready_p99:?} idle"
    );
}

#[test]
fn a_second_agent_on_the_same_store_is_refused_and_harms_nothing() {
    let k = kiosk();
    let _device = k.device(&[]);
    let before = k.state();
    let serve = format!("127.0.0.1:{}", free_port());
    let out = lanseed_tests::lanseed()
        .args([
            "device",
            "--store",
            s(&k.store),
            "--app",
            APP,
            "--trust",
            &k.trust,
        ])
        .args(["--builtin", s(&k.builtin), "--serve", &serve, "--no-mdns"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("another lanseed device agent is running"),
        "{err}"
    );
    // The first one still answers, on its socket and its server.
    assert_eq!(k.state()["device_id"], before["device_id"]);
    assert_eq!(http_get(k.port, "").0, 200);
}

#[test]
fn a_peer_address_down_at_first_is_dialled_until_it_answers_and_status_prints_ours() {
    let k = kiosk();
    let seeder_store = k.dir.path().join("seeder");
    let v1 = k.pack(&seeder_store, "production", "1.0.0", 1);
    // A --peer without /p2p/<id>, where nothing listens yet.
    let peer = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let device = k.device(&["--peer", &peer, "--apply", "immediate"]);
    device.wait_log("--peer did not answer", T);
    let st = node_status(&k.store);
    assert_eq!(st["dialling"][0]["address"], peer.as_str(), "{st}");
    std::thread::sleep(Duration::from_secs(2));
    let _seeder = NodeProc::start_here("seed", &seeder_store, &["--no-mdns", "--listen", &peer]);
    k.wait_and_confirm(&v1);
    assert!(
        node_status(&k.store)["dialling"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // `lanseed status` prints the address another node's --peer takes.
    let out = run_ok(&["status", "--store", s(&k.store)]);
    let text = String::from_utf8_lossy(&out.stdout);
    let id = node_status(&k.store)["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.lines()
            .any(|l| l.trim().starts_with("/ip4/127.0.0.1/tcp/")
                && l.trim().ends_with(&format!("/p2p/{id}"))),
        "{text}"
    );
}
