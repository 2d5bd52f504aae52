//! `GET /metrics` of real nodes (`--http`): a scrape that Prometheus'
//! own checker (`promtool check metrics`, Debian's `prometheus` package)
//! passes, counters that follow what the nodes did, and byte counters
//! that agree with the bytes the kernel counted on the network interface
//! (a LAN of network namespaces), and a device's rollbacks. Run inside
//! `/work/shared/tools/isolated`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lanseed_tests::capgo::{device_id, info, post, request};
use lanseed_tests::net::{Lan, Netns, NodeProc};
use lanseed_tests::{free_port, json, keygen, node_status, path_str, run_ok};
use serde_json::json;

const APP: &str = "com.example.kiosk";
const T: Duration = Duration::from_secs(30);

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: String,
    build: PathBuf,
}

/// A build of `files` incompressible files, `total` bytes in all.
fn setup(total: u64, files: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("index.html"), "<h1>metrics</h1>").unwrap();
    lanseed_tests::generate_media(&build, files, total, total ^ 0x5eed);
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

    fn pack(&self, store: &Path, version: &str) {
        json(&run_ok(&lanseed_tests::pack_args(
            &self.build,
            APP,
            version,
            &self.key,
            store,
            &["--json"],
        )));
    }
}

/// `/ip4/ADDR/tcp/PORT/p2p/ID` of a node reached at `addr`.
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

/// The value of the sample `name{labels}` (labels as written, in order);
/// `None` when there is no such line.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a sample's value is a number"))
}

/// The sum of every sample of `name` whose labels contain each of `with`.
fn sum(text: &str, name: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?.strip_prefix('{')?;
            with.iter()
                .all(|w| labels.contains(w))
                .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

/// `promtool check metrics` on `text`; panics with promtool's findings
/// unless it passes, and when promtool is not installed.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to check the metrics ({e}): install Debian's `prometheus` package (apt-get install prometheus), as .ci/run does"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /metrics` of the node whose gateway is on `127.0.0.1:port`.
fn scrape(port: u16) -> String {
    let r = request(port, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    String::from_utf8(r.body).expect("the exposition is UTF-8")
}

/// `GET /metrics` of a node in `ns` whose gateway is on its loopback.
fn scrape_in(ns: &Netns, port: u16) -> String {
    let mut c = ns
        .connect(([127, 0, 0, 1], port).into())
        .expect("connect to the gateway in the namespace");
    c.set_read_timeout(Some(T)).unwrap();
    write!(c, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let r = lanseed_tests::capgo::parse(&raw);
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

#[test]
fn a_scrape_of_a_seeder_and_a_follower_passes_promtool_and_counts_what_they_did() {
    let set = setup(1 << 20, 4);
    let (seed_store, follow_store) = (set.store("seeder"), set.store("follower"));
    set.pack(&seed_store, "1.0.0");
    let (p1, p2) = (free_port(), free_port());
    let (h1, h2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let loopback = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];
    let seeder = NodeProc::start_here(
        "seed",
        &seed_store,
        &[&loopback[..], &["--http", &h1]].concat(),
    );
    let peer = addr_of(&seeder, "127.0.0.1");
    let follower = NodeProc::start_here(
        "seed",
        &follow_store,
        &[
            &loopback[..],
            &[
                "--http", &h2, "--peer", &peer, "--follow", APP, "--trust", &set.trust,
            ],
        ]
        .concat(),
    );
    follower.wait_log("transfer done", T);

    // The follower's gateway: an update check with an offer, a device's
    // stats, a path that does not exist.
    let dev = device_id(1);
    lanseed_tests::wait_for("the follower's gateway to offer 1.0.0", T, || {
        let r = post(p2, "/updates", &info(APP, &dev, "builtin"));
        (r.status == 200 && r.json()["version"] == "1.0.0").then_some(())
    });
    let mut stat = info(APP, &dev, "1.0.0");
    stat["action"] = json!("set");
    stat["old_version_name"] = json!("builtin");
    assert_eq!(post(p2, "/stats", &stat).status, 200);
    assert_eq!(request(p2, "GET", "/nowhere", &[], b"").status, 404);

    let f = scrape(p2);
    promtool_check(&f);
    assert_eq!(sample(&f, "lanseed_peers"), Some(1.0), "{f}");
    assert_eq!(sample(&f, "lanseed_transfers_started_total"), Some(1.0));
    assert_eq!(
        sample(&f, "lanseed_transfers_ended_total{result=\"completed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&f, "lanseed_transfer_duration_seconds_count"),
        Some(1.0)
    );
    assert!(sample(&f, "lanseed_announcements_total{direction=\"received\"}").unwrap() >= 1.0);
    assert!(
        sum(
            &f,
            "lanseed_p2p_bytes_total",
            &["kind=\"pieces\"", "direction=\"received\""]
        ) > (1 << 20) as f64,
        "{f}"
    );
    assert_eq!(
        sample(
            &f,
            "lanseed_gateway_requests_total{path=\"/updates\",result=\"update\"}"
        ),
        Some(1.0),
        "{f}"
    );
    assert_eq!(
        sample(
            &f,
            "lanseed_gateway_requests_total{path=\"other\",result=\"4xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &f,
            "lanseed_devices{status=\"trial\",authenticated=\"false\"}"
        ),
        Some(1.0),
        "{f}"
    );
    assert!(sample(&f, "lanseed_http_bytes_total{direction=\"received\"}").unwrap() > 0.0);
    assert_eq!(sample(&f, "lanseed_rollbacks_total"), Some(0.0));

    let s1 = scrape(p1);
    promtool_check(&s1);
    assert_eq!(sample(&s1, "lanseed_peers"), Some(1.0), "{s1}");
    assert!(sample(&s1, "lanseed_announcements_total{direction=\"sent\"}").unwrap() >= 1.0);
    assert!(
        sum(
            &s1,
            "lanseed_p2p_bytes_total",
            &["kind=\"pieces\"", "direction=\"sent\""]
        ) > (1 << 20) as f64
    );
    // What Prometheus asks for, it gets: OpenMetrics, ending in `# EOF`.
    let om = request(
        p1,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        )],
        b"",
    );
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = String::from_utf8(om.body).unwrap();
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE lanseed_p2p_bytes counter\n"));
    drop((seeder, follower));
}

/// The bytes a node says it sent or received on its streams, against the
/// bytes its namespace's interface counted: a few MB pass from a seeder
/// to a follower on a LAN of two namespaces. The nodes count their own
/// frames only (not noise, yamux, TCP, IP or Ethernet headers): within
/// 10 % below the interface's count, never above it (measured: 0.951,
/// the headers of 1,448-byte segments being most of the rest).
#[test]
fn byte_counters_match_the_interface_within_ten_percent() {
    const SIZE: u64 = 6 << 20;
    let set = setup(SIZE, 6);
    let (seed_store, follow_store) = (set.store("seeder"), set.store("follower"));
    set.pack(&seed_store, "1.0.0");
    let lan = Lan::new(2);
    // One TCP segment per packet, as on a wire: without it, veth counts a
    // segmentation offload's 64 KiB packet with its headers once, and
    // the headers' share of the interface's count would look smaller
    // than it is.
    for (i, host) in lan.hosts.iter().enumerate() {
        host.ip(&["link", "set", "dev", &Lan::dev(i), "gso_max_segs", "1"]);
    }
    let http = "127.0.0.1:9464";
    let common = [
        "--no-mdns",
        "--listen",
        "/ip4/0.0.0.0/tcp/0",
        "--http",
        http,
    ];
    let seeder = NodeProc::start(&lan.hosts[0], &seed_store, &common);
    let peer = addr_of(&seeder, &lan.addrs[0]);
    let seeder_before = scrape_in(&lan.hosts[0], 9464);
    let (_, tx0) = lan.bytes(0);
    let (rx1, _) = lan.bytes(1);
    let follower = NodeProc::start(
        &lan.hosts[1],
        &follow_store,
        &[
            &common[..],
            &["--peer", &peer, "--follow", APP, "--trust", &set.trust],
        ]
        .concat(),
    );
    follower.wait_log("transfer done", T);
    // The last answers' acknowledgements, and the follower's last `Have`.
    std::thread::sleep(Duration::from_millis(500));
    let (_, tx0_after) = lan.bytes(0);
    let (rx1_after, _) = lan.bytes(1);
    let seeder_after = scrape_in(&lan.hosts[0], 9464);
    let follower_after = scrape_in(&lan.hosts[1], 9464);
    let sent = |t: &str| sum(t, "lanseed_p2p_bytes_total", &["direction=\"sent\""]);
    let received = |t: &str| sum(t, "lanseed_p2p_bytes_total", &["direction=\"received\""]);
    let seeder_sent = sent(&seeder_after) - sent(&seeder_before);
    let follower_received = received(&follower_after);
    let wire_tx = (tx0_after - tx0) as f64;
    let wire_rx = (rx1_after - rx1) as f64;
    let (r_sent, r_received) = (seeder_sent / wire_tx, follower_received / wire_rx);
    eprintln!(
        "seeder: {seeder_sent} bytes sent by lanseed, {wire_tx} on h0 (ratio {r_sent:.4}); \
         follower: {follower_received} received by lanseed, {wire_rx} on h1 (ratio {r_received:.4})"
    );
    assert!(
        seeder_sent > SIZE as f64,
        "the bundle was counted: {seeder_sent}"
    );
    for (what, r) in [("seeder sent", r_sent), ("follower received", r_received)] {
        assert!(
            (0.90..=1.0).contains(&r),
            "{what}: lanseed's count is {r:.4} of the interface's"
        );
    }
    drop((seeder, follower));
}

/// A device whose bundle never calls `notifyAppReady`: its trial fails,
/// the device rolls back, and `/metrics` counts one rollback.
#[test]
fn a_device_counts_a_rollback_when_its_bundle_never_calls_ready() {
    let set = setup(64 << 10, 1);
    let seed_store = set.store("seeder");
    set.pack(&seed_store, "1.0.0");
    let seeder = NodeProc::start_here(
        "seed",
        &seed_store,
        &["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
    );
    let peer = addr_of(&seeder, "127.0.0.1");
    let builtin = set.store("builtin");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("index.html"), "<h1>builtin</h1>").unwrap();
    let (serve, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let port: u16 = http.rsplit(':').next().unwrap().parse().unwrap();
    let device = NodeProc::start_here(
        "device",
        &set.store("device"),
        &[
            "--app",
            APP,
            "--trust",
            &set.trust,
            "--builtin",
            path_str(&builtin),
            "--serve",
            &serve,
            "--apply",
            "immediate",
            "--app-ready-timeout",
            "2s",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--peer",
            &peer,
            "--http",
            &http,
        ],
    );
    assert_eq!(sample(&scrape(port), "lanseed_rollbacks_total"), Some(0.0));
    device.wait_log("updateFailed", T);
    let text = lanseed_tests::wait_for("the rollback to be counted", T, || {
        let text = scrape(port);
        (sample(&text, "lanseed_rollbacks_total") == Some(1.0)).then_some(text)
    });
    promtool_check(&text);
    assert_eq!(
        sample(&text, "lanseed_transfers_ended_total{result=\"completed\"}"),
        Some(1.0),
        "{text}"
    );
    // The device's own row is in its devices table (authenticated: its own).
    assert_eq!(
        sum(&text, "lanseed_devices", &["authenticated=\"true\""]),
        1.0,
        "{text}"
    );
    drop((seeder, device));
}
