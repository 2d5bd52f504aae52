//! `lanseed demo` end to end, each run in a network namespace of its own:
//! every claim of its report holds against each device's store, its
//! device state and `lanseed status --json` (devices table included); it
//! ends cleanly and leaves nothing running; and nothing it does leaves
//! loopback (tcpdump on a live veth interface sees no mDNS and no packet
//! of its nodes).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lanseed_tests::net::Netns;
use lanseed_tests::{json, lanseed_bin, path_str, run_ok, wait_for};
use serde_json::Value;

/// The longest a demo may take (it takes well under a minute).
const DEMO_TIMEOUT: Duration = Duration::from_secs(150);

/// A child process (the demo, tcpdump) interrupted when dropped (the
/// demo then stops everything it started) and, failing that, killed, so a
/// failed assertion never leaves a `--keep` demo or a capture running.
struct Interrupted(Child);

impl Drop for Interrupted {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) && matches!(self.0.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo started inside `ns` with `args`; its progress goes to `progress`.
fn start_demo(ns: &Netns, args: &[&str], progress: &Path) -> Interrupted {
    Interrupted(
        ns.command(&lanseed_bin())
            .arg("demo")
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("LANSEED_STORE")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(progress).unwrap())
            .spawn()
            .expect("spawn lanseed demo"),
    )
}

/// Reads the JSON report from the demo's stdout (without waiting for it
/// to exit: with --keep it runs on).
fn read_report(demo: &mut Interrupted, progress: &Path) -> Value {
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut values =
            serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
        let _ = tx.send(values.next().and_then(Result::ok));
    });
    match rx.recv_timeout(DEMO_TIMEOUT) {
        Ok(Some(report)) => report,
        _ => {
            let _ = demo.0.kill();
            panic!(
                "no report from the demo; its progress:\n{}",
                std::fs::read_to_string(progress).unwrap_or_default()
            )
        }
    }
}

/// Waits for the demo to exit; panics after `timeout`.
fn wait_exit(demo: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = demo.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = demo.kill();
            panic!("the demo did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes whose command line names `dir` (the demo's nodes and
/// browsers all do: their stores and profiles are in it).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = path_str(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

fn chromium_installed() -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| d.starts_with('/'))
        .any(|d| {
            [
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ]
            .iter()
            .any(|n| Path::new(d).join(n).is_file())
        })
}

fn nodes(report: &Value) -> Vec<Value> {
    report["nodes"].as_array().unwrap().clone()
}

fn devices(report: &Value) -> Vec<Value> {
    nodes(report)
        .into_iter()
        .filter(|n| n["role"] == "device")
        .collect()
}

fn steps(report: &Value) -> Vec<Value> {
    report["steps"].as_array().unwrap().clone()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// What every report must say: three steps, v1 confirmed, v2 rolled
/// back, v3 confirmed, on every one of the three devices, with times
/// that make sense.
fn check_story(report: &Value) {
    let want = [
        ("1.0.0", "confirmed"),
        ("2.0.0", "rolled_back"),
        ("3.0.0", "confirmed"),
    ];
    let steps = steps(report);
    assert_eq!(steps.len(), 3, "{report:#}");
    assert_eq!(devices(report).len(), 3);
    let timeout = report["app_ready_timeout_secs"].as_f64().unwrap();
    for (step, (version, outcome)) in steps.iter().zip(want) {
        assert_eq!(step["version"], version);
        assert_eq!(step["outcome"], outcome, "{step:#}");
        let reached = step["reached_all_secs"].as_f64().unwrap();
        let settled = step["settled_all_secs"].as_f64().unwrap();
        assert!(reached > 0.0 && reached <= settled, "{step:#}");
        if outcome == "rolled_back" {
            // Nobody confirmed: each device waited out its timeout.
            assert!(settled >= timeout, "{step:#}");
        }
        let ds = step["devices"].as_array().unwrap();
        assert_eq!(ds.len(), 3);
        for d in ds {
            assert_eq!(d["outcome"], outcome, "{step:#}");
            // Fetched (the node's commit) and set (the updater's switch)
            // are logged by two tasks; only their presence is certain.
            assert!(d["fetched_secs"].as_f64().unwrap() > 0.0, "{d:#}");
            let set = d["set_secs"].as_f64().unwrap();
            let done = d["settled_secs"].as_f64().unwrap();
            assert!(set <= done, "{d:#}");
        }
    }
}

#[test]
fn demo_report_matches_every_store_device_state_and_node_status() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let progress = tmp.path().join("progress.txt");
    let mut demo = start_demo(
        &ns,
        &["--dir", path_str(&dir), "--json", "--keep"],
        &progress,
    );
    let report = read_report(&mut demo, &progress);
    check_story(&report);

    // Who confirmed, and how the nodes found each other (a new namespace's
    // loopback has no MULTICAST flag: --peer).
    let chromium = chromium_installed();
    assert_eq!(
        report["confirmer"],
        if chromium { "chromium" } else { "page_driver" }
    );
    assert_eq!(report["browser"].is_string(), chromium);
    assert_eq!(report["discovery"], "peer");
    assert_eq!(report["dir"], path_str(&dir));

    let steps = steps(&report);
    let (v1, v2, v3) = (&steps[0], &steps[1], &steps[2]);
    let trust = dir.join("publisher/publisher.key.pub");
    let names: Vec<String> = nodes(&report)
        .iter()
        .map(|n| s(&n["name"]).to_owned())
        .collect();

    for d in devices(&report) {
        let store = PathBuf::from(s(&d["store"]));
        let name = s(&d["name"]);
        // The device state says what the report says it ended on...
        let state = json(&run_ok(&["device", "list", "--store", path_str(&store)]));
        assert_eq!(state["device_id"], d["device_id"]);
        assert_eq!(state["current"]["bundle_id"], v3["bundle_id"], "{state:#}");
        assert_eq!(state["current"]["version"], "3.0.0");
        assert_eq!(state["current"]["status"], "success");
        assert_eq!(d["final_bundle_id"], v3["bundle_id"]);
        assert_eq!(d["final_version"], "3.0.0");
        assert_eq!(d["final_status"], "success");
        // ...and what each step did to it.
        let events = state["recent_events"].as_array().unwrap();
        let saw = |event: &str, step: &Value| {
            events
                .iter()
                .any(|e| e["event"] == event && e["bundle"] == step["bundle_id"])
        };
        assert!(saw("appReady", v1), "{name}: {state:#}");
        assert!(
            saw("set", v2) && saw("updateFailed", v2),
            "{name}: {state:#}"
        );
        assert!(!saw("appReady", v2), "{name}: {state:#}");
        assert!(saw("appReady", v3), "{name}: {state:#}");
        // Its store holds v3 as signed, whole and verified.
        let releases = json(&run_ok(&[
            "releases",
            "--store",
            path_str(&store),
            "--json",
        ]));
        assert!(
            releases
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["bundle_id"] == v3["bundle_id"]
                    && r["seq"] == v3["seq"]
                    && r["version"] == "3.0.0"),
            "{name}: {releases:#}"
        );
        run_ok(&[
            "store",
            "verify",
            "--store",
            path_str(&store),
            "--trust",
            path_str(&trust),
        ]);
        // Its page is v3.
        let url = s(&d["url"]);
        let out = ns
            .command(Path::new("curl"))
            .args(["-s", "-m", "5", url])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("version 3.0.0"),
            "{name} at {url}"
        );
    }

    // Bytes: v1 was new to every device; v3 shares all but its page with
    // v1, which no device fetched again.
    for d in v1["devices"].as_array().unwrap() {
        assert_eq!(d["bytes"], v1["bundle_bytes"], "{d:#}");
    }
    for step in [v2, v3] {
        for d in step["devices"].as_array().unwrap() {
            let b = d["bytes"].as_u64().unwrap();
            assert!(b > 0 && b < step["bundle_bytes"].as_u64().unwrap(), "{d:#}");
        }
    }
    // The releases are the publisher's, signed, and the seeder holds them all.
    for store in ["publisher/store", "seeder/store"] {
        let held = json(&run_ok(&[
            "releases",
            "--store",
            path_str(&dir.join(store)),
            "--json",
        ]));
        for step in [v1, v2, v3] {
            assert!(
                held.as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["bundle_id"] == step["bundle_id"]
                        && r["seq"] == step["seq"]
                        && r["version"] == step["version"]),
                "{store}: {held:#}"
            );
        }
        run_ok(&[
            "store",
            "verify",
            "--store",
            path_str(&dir.join(store)),
            "--trust",
            path_str(&trust),
        ]);
    }
    // Who served whom: real nodes, never themselves, adding up to what
    // each device received; somebody had to get each release from the seeder.
    for step in [v1, v2, v3] {
        let served = step["served"].as_array().unwrap();
        assert!(served.iter().any(|e| e["from"] == "seeder"), "{step:#}");
        let mut sum = 0;
        for e in served {
            assert!(names.iter().any(|n| e["from"] == n.as_str()), "{e}");
            assert_ne!(e["from"], e["to"]);
            sum += e["wire_bytes"].as_u64().unwrap();
        }
        assert_eq!(sum, step["wire_bytes"].as_u64().unwrap(), "{step:#}");
        for d in step["devices"].as_array().unwrap() {
            let to_d: u64 = served
                .iter()
                .filter(|e| e["to"] == d["name"])
                .map(|e| e["wire_bytes"].as_u64().unwrap())
                .sum();
            assert_eq!(to_d, d["wire_bytes"].as_u64().unwrap(), "{step:#}");
        }
        assert_eq!(
            step["bytes"].as_u64().unwrap(),
            step["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["bytes"].as_u64().unwrap())
                .sum::<u64>()
        );
    }

    // Each node's status: its peer id, its uploads, and a devices table
    // with every device on v3, confirmed, authenticated by the fleet key.
    for n in nodes(&report) {
        let store = PathBuf::from(s(&n["store"]));
        let name = s(&n["name"]);
        let status = wait_for(
            &format!("{name}'s devices table to show every device on 3.0.0"),
            Duration::from_secs(20),
            || {
                let st = json(&run_ok(&["status", "--store", path_str(&store), "--json"]));
                let rows = st["devices"].as_array().cloned().unwrap_or_default();
                devices(&report)
                    .iter()
                    .all(|d| {
                        rows.iter().any(|r| {
                            r["device_id"] == d["device_id"]
                                && r["bundle_id"] == v3["bundle_id"]
                                && r["version"] == "3.0.0"
                                && r["status"] == "success"
                                && r["authenticated"] == true
                        })
                    })
                    .then_some(st)
            },
        );
        assert_eq!(status["peer_id"], n["peer_id"]);
        assert_eq!(
            status["uploads"]["bytes"], n["uploaded_bytes"],
            "{name} uploaded what the report says"
        );
        assert_eq!(status["uploads"]["answers"], n["uploaded_answers"]);
        let per_step: u64 = steps
            .iter()
            .flat_map(|st| st["uploads"].as_array().unwrap().clone())
            .filter(|u| u["node"] == name)
            .map(|u| u["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(per_step, n["uploaded_bytes"].as_u64().unwrap(), "{name}");
        let served_by_n: u64 = steps
            .iter()
            .flat_map(|st| st["served"].as_array().unwrap().clone())
            .filter(|e| e["from"] == name)
            .map(|e| e["wire_bytes"].as_u64().unwrap())
            .sum();
        assert!(
            served_by_n <= n["uploaded_bytes"].as_u64().unwrap(),
            "{name} cannot have served more than it uploaded"
        );
        // It knows the other three, connected.
        let connected = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"] == true)
            .count();
        assert_eq!(connected, 3, "{name}: {status:#}");
    }

    // Ctrl-C ends it cleanly, and nothing it started is left running.
    assert!(
        demo.0.try_wait().unwrap().is_none(),
        "--keep keeps it running"
    );
    let pid = demo.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = wait_exit(&mut demo.0, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_eq!(processes_under(&dir), Vec::<String>::new());
    assert!(dir.join("seeder/node.log").is_file(), "--dir is kept");
}

#[test]
fn demo_stays_on_loopback() {
    // A namespace whose loopback carries multicast (so the demo uses
    // mDNS), next to a live veth link with an address and no IPv6.
    let ns = Netns::new();
    ns.ip(&["link", "set", "lo", "multicast", "on"]);
    let other = Netns::new();
    ns.ip(&[
        "link", "add", "demo0", "type", "veth", "peer", "name", "demo1",
    ]);
    ns.ip(&["link", "set", "demo1", "netns", &other.name]);
    let sysctl = |n: &Netns, key: &str| {
        let ok = std::process::Command::new("ip")
            .args(["netns", "exec", &n.name, "sysctl", "-qw", key])
            .status()
            .unwrap()
            .success();
        assert!(ok, "sysctl {key}");
    };
    for n in [&ns, &other] {
        sysctl(n, "net.ipv6.conf.all.disable_ipv6=1");
        sysctl(n, "net.ipv6.conf.default.disable_ipv6=1");
    }
    ns.ip(&["addr", "add", "10.123.0.1/24", "dev", "demo0"]);
    ns.ip(&["link", "set", "demo0", "up"]);
    other.ip(&["addr", "add", "10.123.0.2/24", "dev", "demo1"]);
    other.ip(&["link", "set", "demo1", "up"]);

    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("veth.txt");
    let tcpdump_log = tmp.path().join("tcpdump.txt");
    let mut tcpdump = Interrupted(
        ns.command(Path::new("tcpdump"))
            .args(["-i", "demo0", "-nn", "-l"])
            .stdout(std::fs::File::create(&capture).unwrap())
            .stderr(std::fs::File::create(&tcpdump_log).unwrap())
            .spawn()
            .expect("tcpdump (Debian package `tcpdump`)"),
    );
    wait_for("tcpdump listening", Duration::from_secs(10), || {
        std::fs::read_to_string(&tcpdump_log)
            .unwrap_or_default()
            .contains("listening on")
            .then_some(())
    });

    let dir = tmp.path().join("demo");
    let progress = tmp.path().join("progress.txt");
    let mut demo = start_demo(&ns, &["--dir", path_str(&dir), "--json"], &progress);
    let report = read_report(&mut demo, &progress);
    let status = wait_exit(&mut demo.0, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    check_story(&report);
    assert_eq!(report["discovery"], "mdns", "{report:#}");
    assert_eq!(processes_under(&dir), Vec::<String>::new());

    // A packet the test sends on the link, so an empty capture cannot pass
    // for a clean one.
    let _ = ns
        .command(Path::new("curl"))
        .args(["-s", "-m", "1", "http://10.123.0.2:9/"])
        .output();
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-INT", &tcpdump.0.id().to_string()])
        .status()
        .unwrap();
    let _ = wait_exit(&mut tcpdump.0, Duration::from_secs(10));
    let packets = std::fs::read_to_string(&capture).unwrap();
    assert!(
        packets.contains("10.123.0.2.9:"),
        "the capture saw the test's own packet: {packets}"
    );

    let mut ports: Vec<String> = Vec::new();
    for n in nodes(&report) {
        for addr in n["listen"].as_array().unwrap() {
            let a = s(addr);
            assert!(a.starts_with("/ip4/127.0.0.1/tcp/"), "{a}");
            ports.push(a.split('/').nth(4).unwrap().to_owned());
        }
        if let Some(url) = n["url"].as_str() {
            assert!(url.starts_with("http://127.0.0.1:"), "{url}");
            ports.push(
                url.trim_end_matches('/')
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert_eq!(ports.len(), 4 + 3, "{report:#}");
    for line in packets.lines() {
        assert!(!line.contains(".5353"), "mDNS left loopback: {line}");
        for port in &ports {
            assert!(
                !line.contains(&format!(".{port}:")) && !line.contains(&format!(".{port} ")),
                "a node's packet left loopback (port {port}): {line}"
            );
        }
    }
}
