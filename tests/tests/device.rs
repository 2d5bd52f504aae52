//! `lanseed device` end to end, in real headless Chromium (Debian's
//! `chromium`), fed by a real seeder, each test in a namespace of its own:
//! a healthy bundle becomes `success` and shows; a broken one is rolled
//! back and never returns; a page of the old bundle cannot rescue a broken
//! new one; in `immediate` mode the open page reloads by itself; client
//! routes serve `index.html`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lanseed_tests::net::{Browser, Netns, NodeProc};
use lanseed_tests::{json, keygen, run_ok};

const APP: &str = "com.example.kiosk";
const URL: &str = "http://127.0.0.1:8787";
const T: Duration = Duration::from_secs(40);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What a test bundle's page does.
enum Page {
    /// Loads client.js and calls notifyAppReady.
    Healthy,
    /// Throws before it could confirm.
    Broken,
    /// Without client.js: confirms its own bundle (read from the response's
    /// Server-Timing) every 100 ms, forever, and never reloads.
    KeepsConfirming,
}

struct World {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: String,
    builtin: PathBuf,
    seeder: PathBuf,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let builtin = dir.path().join("builtin");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("index.html"), "<h1 id=v>builtin</h1>").unwrap();
    let seeder = dir.path().join("seeder");
    World {
        dir,
        key,
        trust,
        builtin,
        seeder,
    }
}

impl World {
    /// Packs a bundle into the seeder's store; returns its bundle id.
    fn publish(&self, version: &str, page: Page) -> String {
        let build = self.dir.path().join(format!("build-{version}"));
        std::fs::create_dir_all(build.join("assets")).unwrap();
        let script = match page {
            Page::Healthy => {
                "<script src=\"/__lanseed/client.js\"></script><script src=\"/assets/app.js\"></script>"
            }
            Page::Broken => {
                "<script src=\"/__lanseed/client.js\"></script><script>throw new Error('broken build'); lanseed.notifyAppReady();</script>"
            }
            Page::KeepsConfirming => {
                "<script>\
                var t = performance.getEntriesByType('navigation')[0].serverTiming;\
                var id = t.filter(function (e) { return e.name === 'lanseed'; })[0].description;\
                setInterval(function () { fetch('/__lanseed/ready', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({bundle: id})}); }, 100);\
                </script>"
            }
        };
        std::fs::write(
            build.join("index.html"),
            format!(
                "<!doctype html><html><body><h1 id=v>version {version}</h1>{script}</body></html>"
            ),
        )
        .unwrap();
        std::fs::write(build.join("assets/app.js"), "lanseed.notifyAppReady();").unwrap();
        let out = run_ok(&[
            "pack",
            s(&build),
            "--app",
            APP,
            "--version",
            version,
            "--key",
            s(&self.key),
            "--store",
            s(&self.seeder),
            "--json",
        ]);
        json(&out)["bundle_id"].as_str().unwrap().to_owned()
    }

    fn device(&self, ns: &Netns, extra: &[&str]) -> NodeProc {
        let mut args = vec![
            "--app",
            APP,
            "--trust",
            &self.trust,
            "--builtin",
            s(&self.builtin),
            "--serve",
            "127.0.0.1:8787",
            // Long enough for a headless Chromium started after the swap
            // to load the page on a loaded 2-core CI machine (3 s was not).
            "--app-ready-timeout",
            "10s",
        ];
        args.extend_from_slice(extra);
        NodeProc::start_cmd(ns, "device", &self.dir.path().join("device"), &args)
    }
}

fn device_state(store: &Path) -> serde_json::Value {
    json(&run_ok(&["device", "list", "--store", s(store)]))
}

/// Waits until the device's current bundle is `bundle` with `status`.
fn wait_current(store: &Path, bundle: &str, status: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let st = device_state(store);
        if st["current"]["bundle_id"] == bundle && st["current"]["status"] == status {
            return st;
        }
        assert!(
            start.elapsed() < T,
            "current is not {bundle} ({status}): {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a log line containing all of `needles`, past line `from`.
fn wait_line(node: &NodeProc, from: usize, needles: &[&str]) -> usize {
    let start = Instant::now();
    loop {
        let log = node.log_text();
        if let Some((i, _)) = log
            .lines()
            .enumerate()
            .skip(from)
            .find(|(_, l)| needles.iter().all(|n| l.contains(n)))
        {
            return i;
        }
        assert!(
            start.elapsed() < T,
            "no line with {needles:?} after line {from}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn healthy_bundle_becomes_success_and_client_routes_serve_index() {
    let ns = Netns::new();
    let w = world();
    let v1 = w.publish("1.1.0", Page::Healthy);
    let _seeder = NodeProc::start(&ns, &w.seeder, &[]);
    let device = w.device(&ns, &["--apply", "immediate"]);
    wait_line(&device, 0, &["bundle set, on trial", &v1]);
    // A client-routed path gets index.html; the page confirms itself.
    let dom = Browser::dump_dom(&ns, &format!("{URL}/settings/profile"), 2500);
    assert!(dom.contains("version 1.1.0"), "{dom}");
    let st = wait_current(&device.store, &v1, "success");
    assert_eq!(st["current"]["version"], "1.1.0");
    let events: Vec<&str> = st["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for e in ["updateAvailable", "downloadComplete", "set", "appReady"] {
        assert!(events.contains(&e), "{events:?}");
    }
    // Progress while the node fetched it, before the 100 % of the install.
    assert!(
        st["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "download" && e["percent"].as_u64().unwrap() < 100),
        "{st}"
    );
    // Still the app after the trial, on any client route; a missing asset is a 404.
    let dom = Browser::dump_dom(&ns, &format!("{URL}/deep/link"), 1500);
    assert!(dom.contains("version 1.1.0"), "{dom}");
    let out = ns
        .command(Path::new("curl"))
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{URL}/assets/missing.js"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn broken_bundle_rolls_back_and_never_returns() {
    let ns = Netns::new();
    let w = world();
    let v1 = w.publish("1.0.0", Page::Healthy);
    let _seeder = NodeProc::start(&ns, &w.seeder, &[]);
    let device = w.device(&ns, &["--apply", "immediate"]);
    wait_line(&device, 0, &["bundle set, on trial", &v1]);
    let _first = Browser::dump_dom(&ns, &format!("{URL}/"), 2000);
    wait_current(&device.store, &v1, "success");

    // A page stays open on 1.0.0 while a broken 2.0.0 arrives.
    let _browser = Browser::open(&ns, &format!("{URL}/"));
    let mark = wait_line(&device, 0, &["page served", &v1]);
    let v2 = w.publish("2.0.0", Page::Broken);
    let set = wait_line(&device, mark, &["bundle set, on trial", &v2]);
    // The open page follows the swap to 2.0.0, which throws...
    wait_line(&device, set, &["page served", &v2]);
    // ...and within the timeout the device goes back; the page shows 1.0.0 again.
    let rolled = wait_line(&device, set, &["updateFailed", &v2]);
    wait_line(&device, rolled, &["page served", &v1]);
    let st = wait_current(&device.store, &v1, "success");
    let b2 = st["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bundle_id"] == v2.as_str())
        .cloned()
        .unwrap();
    assert_eq!(b2["status"], "error");
    let dom = Browser::dump_dom(&ns, &format!("{URL}/"), 1500);
    assert!(dom.contains("version 1.0.0"), "{dom}");

    // Announced again with a newer sequence: refused, 1.0.0 stays.
    let again = w.publish("2.0.0", Page::Broken);
    assert_eq!(again, v2);
    wait_line(
        &device,
        rolled,
        &["not installed", "failed on this device before"],
    );
    std::thread::sleep(Duration::from_millis(500));
    wait_current(&device.store, &v1, "success");
    assert_eq!(
        device
            .log_text()
            .matches(&format!("bundle set, on trial bundle={v2}"))
            .count(),
        1
    );
}

#[test]
fn the_old_page_confirming_cannot_rescue_a_broken_bundle() {
    let ns = Netns::new();
    let w = world();
    let v1 = w.publish("1.0.0", Page::KeepsConfirming);
    let _seeder = NodeProc::start(&ns, &w.seeder, &[]);
    let device = w.device(&ns, &["--apply", "immediate"]);
    wait_line(&device, 0, &["bundle set, on trial", &v1]);
    // The old page confirms its own bundle every 100 ms, before and after the swap.
    let _old_page = Browser::open(&ns, &format!("{URL}/"));
    wait_current(&device.store, &v1, "success");
    let v2 = w.publish("2.0.0", Page::Broken);
    let set = wait_line(&device, 0, &["bundle set, on trial", &v2]);
    wait_line(&device, set, &["notifyAppReady", &v1, "confirmed=false"]);
    let _new_page = Browser::open(&ns, &format!("{URL}/"));
    wait_line(&device, set, &["updateFailed", &v2]);
    let st = wait_current(&device.store, &v1, "success");
    assert!(
        st["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["bundle_id"] == v2.as_str() && b["status"] == "error"),
        "{st}"
    );
}

#[test]
fn in_immediate_mode_the_open_page_reloads_by_itself() {
    let ns = Netns::new();
    let w = world();
    let v1 = w.publish("1.0.0", Page::Healthy);
    let _seeder = NodeProc::start(&ns, &w.seeder, &[]);
    let device = w.device(&ns, &["--apply", "immediate"]);
    wait_line(&device, 0, &["bundle set, on trial", &v1]);
    let _browser = Browser::open(&ns, &format!("{URL}/"));
    wait_current(&device.store, &v1, "success");
    let v2 = w.publish("2.0.0", Page::Healthy);
    let set = wait_line(&device, 0, &["bundle set, on trial", &v2]);
    // Nobody but the open page asks: it reloads, shows 2.0.0, confirms it.
    wait_line(&device, set, &["page served", &v2]);
    wait_line(&device, set, &["notifyAppReady", &v2, "confirmed=true"]);
    wait_current(&device.store, &v2, "success");
}
