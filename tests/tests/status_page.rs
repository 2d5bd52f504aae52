//! The live status page of a node started with `--http`, in headless
//! Chromium: a follower fetching a large release from a slow seeder
//! (`--upload-limit`) and told of six devices by Capgo stats; the page's
//! fleet table, transfer progress and rollout counts are checked against
//! `lanseed status --json` of the same node. Nodes and browser run in a
//! network namespace of the test's own.
//!
//! `docs/status-page.png` comes from this test's run:
//! `LANSEED_WRITE_STATUS_PNG=1 /work/shared/tools/isolated cargo test -p
//! lanseed-tests --test status_page` writes it (without the variable the
//! screenshot goes to a temporary folder and is only checked).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use lanseed_tests::capgo::{device_id, info};
use lanseed_tests::net::{Browser, Netns, NodeProc};
use lanseed_tests::{generate_build, json, keygen, node_status, pack_args, run_ok, wait_for};
use serde_json::{Value, json};

const APP: &str = "com.example.kiosk";
const PORT: u16 = 8080;
const T: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

/// `METHOD PATH` on the node's `--http` port, from inside `ns`; the
/// status and the body.
fn request(ns: &Netns, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = ns
        .connect(SocketAddr::from(([127, 0, 0, 1], PORT)))
        .expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Opens `GET /status/events`; the connection and its status line.
fn open_stream(ns: &Netns) -> (BufReader<TcpStream>, String) {
    let mut s = ns
        .connect(SocketAddr::from(([127, 0, 0, 1], PORT)))
        .expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /status/events HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    (r, line)
}

/// The peer's address for `--peer`, from its log.
fn listen_addr(node: &NodeProc) -> String {
    let line = node.wait_log("listening address=", T);
    let addr = line.split("address=").nth(1).unwrap().trim().to_owned();
    let started = node.wait_log("node started", T);
    let id = started.split("peer_id=").nth(1).unwrap();
    let id = id.split_whitespace().next().unwrap();
    format!("{addr}/p2p/{id}")
}

/// A Capgo stats event (plugin 8.51's `sendStats` body) at `now_ms`.
fn stat(n: u64, action: &str, version: &str, now_ms: u64) -> Value {
    let mut e = info(APP, &device_id(n), version);
    e["version_name"] = json!(version);
    e["old_version_name"] = json!("builtin");
    e["action"] = json!(action);
    e["timestamp"] = json!(now_ms);
    e
}

/// The `<tr …>…</tr>` elements of `dom` with attribute `attr`, each with
/// that attribute's value.
fn rows<'a>(dom: &'a str, attr: &str) -> Vec<(String, &'a str)> {
    let needle = format!("<tr {attr}=\"");
    dom.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &dom[i..];
            let end = rest.find("</tr>").expect("a closed row") + 5;
            let row = &rest[..end];
            let value = row[needle.len()..].split('"').next().unwrap().to_owned();
            (value, row)
        })
        .collect()
}

/// The value of `attr` in the first tag of `row`.
fn attr<'a>(row: &'a str, attr: &str) -> &'a str {
    let tag = &row[..row.find('>').unwrap()];
    let key = format!(" {attr}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in {tag}"));
    tag[at + key.len()..].split('"').next().unwrap()
}

fn number(row: &str, name: &str) -> u64 {
    attr(row, name).parse().unwrap()
}

/// A release being fetched, and six devices: the page shows what
/// `lanseed status --json` shows.
#[test]
fn the_page_shows_the_fleet_and_a_transfer_as_status_does() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let (seeder_store, store) = (dir.path().join("seeder"), dir.path().join("node"));
    let small = dir.path().join("v1");
    generate_build(&small, 5, 20_000, 1);
    // Packed in one second, the two would take one sequence number.
    run_ok(&pack_args(
        &small,
        APP,
        "1.0.0",
        &key,
        &store,
        &["--seq", "1"],
    ));
    let large = dir.path().join("v2");
    generate_build(&large, 40, 48 * MIB, 2);
    let v2 = json(&run_ok(&pack_args(
        &large,
        APP,
        "2.0.0",
        &key,
        &seeder_store,
        &["--json", "--seq", "2"],
    )));
    let v2_bundle = v2["bundle_id"].as_str().unwrap().to_owned();

    let ns = Netns::new();
    let local = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];
    let mut args = local.to_vec();
    args.extend(["--upload-limit", "1M"]);
    let seeder = NodeProc::start(&ns, &seeder_store, &args);
    let peer = listen_addr(&seeder);
    let http = format!("127.0.0.1:{PORT}");
    let mut args = local.to_vec();
    args.extend([
        "--follow", APP, "--trust", &trust, "--peer", &peer, "--http", &http,
    ]);
    let mut node = NodeProc::start(&ns, &store, &args);
    node.wait_log("capgo gateway listening", T);

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let events = json!([
        stat(1, "set", "1.0.0", now_ms - 95_000),
        stat(1, "app_ready", "1.0.0", now_ms - 90_000),
        stat(2, "app_ready", "1.0.0", now_ms - 40_000),
        stat(3, "set", "1.0.0", now_ms - 5_000),
        stat(4, "update_fail", "builtin", now_ms - 20_000),
        stat(5, "download_complete", "builtin", now_ms - 8_000),
        stat(6, "get", "builtin", now_ms - 2_000),
    ]);
    assert_eq!(
        request(&ns, "POST", "/stats", &events.to_string()),
        (200, r#"{"status":"ok"}"#.to_owned())
    );
    let started = Instant::now();
    let before = wait_for("the transfer under way and six devices", T, || {
        let s = node_status(&store);
        assert!(
            started.elapsed() < T - Duration::from_secs(1),
            "no transfer with six devices: {s}\n{}",
            node.log_text()
        );
        let t = s["transfers"].as_array()?.first()?.clone();
        (s["devices"].as_array()?.len() == 6 && t["bytes_done"].as_u64()? > 0).then_some(s)
    });

    // The page in a browser: once it shows at least the progress of the
    // first read, its DOM, then the second read.
    let url = format!("http://127.0.0.1:{PORT}/");
    let (browser, mut page) = Browser::open_devtools(&ns, &url, (1280, 900), 9222);
    let done_before = before["transfers"][0]["bytes_done"].as_u64().unwrap();
    wait_for("the page to show the transfer's progress", T, || {
        let shown = page.eval(
            "(function () { var r = document.querySelector('tr[data-bundle]'); \
             return r ? Number(r.getAttribute('data-done')) : -1; })()",
        );
        (shown.as_i64()? >= done_before as i64).then_some(())
    });
    let dom = page
        .eval("document.documentElement.outerHTML")
        .as_str()
        .unwrap()
        .to_owned();
    let after = node_status(&store);
    assert!(dom.contains("data-updated="), "the stream delivered: {dom}");

    // The fleet table: one row per device, as status --json has it.
    let devices = after["devices"].as_array().unwrap();
    let shown = rows(&dom, "data-device");
    assert_eq!(shown.len(), devices.len(), "{dom}");
    for d in devices {
        let id = d["device_id"].as_str().unwrap();
        let (_, row) = shown
            .iter()
            .find(|(v, _)| v == id)
            .unwrap_or_else(|| panic!("no row for {id}: {dom}"));
        let version = d["version"].as_str().unwrap();
        assert_eq!(attr(row, "data-version"), version);
        assert_eq!(attr(row, "data-status"), d["status"].as_str().unwrap());
        assert_eq!(
            attr(row, "data-last-event"),
            d["last_event"].as_str().unwrap_or("")
        );
        assert!(row.contains(&format!(">{version}<")), "{row}");
        assert!(row.contains(">gateway<"), "{row}");
    }

    // The transfer: the same bundle, and progress between the two reads.
    let (bundle, row) = rows(&dom, "data-bundle")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no transfer shown: {dom}"));
    assert_eq!(bundle, v2_bundle);
    let transfer = |s: &Value| s["transfers"][0].clone();
    let (t0, t1) = (transfer(&before), transfer(&after));
    assert_eq!(
        t1["bundle_id"].as_str(),
        Some(v2_bundle.as_str()),
        "{after}"
    );
    let done = number(row, "data-done");
    assert!(
        t0["bytes_done"].as_u64().unwrap() <= done && done <= t1["bytes_done"].as_u64().unwrap(),
        "page {done}, status {t0} then {t1}"
    );
    assert_eq!(
        number(row, "data-total"),
        t1["bytes_total"].as_u64().unwrap()
    );
    assert!(done < number(row, "data-total"), "still in progress: {row}");
    let percent: f64 = attr(row, "data-percent").parse().unwrap();
    let expect = 100.0 * done as f64 / t1["bytes_total"].as_f64().unwrap();
    assert!((percent - expect).abs() < 0.1, "{percent} {expect}");

    // The rollout of 1.0.0 (2.0.0 is not held yet): three devices on it,
    // one failed, two pending.
    let rollouts = rows(&dom, "data-rollout");
    assert_eq!(rollouts.len(), 1, "{dom}");
    let (key_shown, row) = &rollouts[0];
    assert_eq!(key_shown, &format!("{APP}/production"));
    assert_eq!(attr(row, "data-version"), "1.0.0");
    let counts = ["data-on", "data-pending", "data-failed"].map(|a| number(row, a));
    assert_eq!(counts, [3, 2, 1], "{row}");

    // Nothing only the local operator sees.
    let socket = after["control_socket"].as_str().unwrap();
    assert!(!dom.contains(socket), "{socket} shown");
    let addr = after["listen"][0].as_str().unwrap();
    assert!(!dom.contains(addr), "{addr} shown");

    // The screenshot for docs/status-page.png, from this same run.
    let shot = page.call(
        "Page.captureScreenshot",
        json!({
            "format": "png",
            "captureBeyondViewport": true,
            "clip": { "x": 0, "y": 0, "width": 1280, "height": 900, "scale": 1 },
        }),
    );
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if std::env::var_os("LANSEED_WRITE_STATUS_PNG").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status-page.png");
        std::fs::write(&docs, &png).unwrap();
        eprintln!("wrote {}", docs.display());
    }

    // The page keeps its stream open; that does not hold a stop up (the
    // gateway's grace is 5 s).
    let start = Instant::now();
    assert!(node.stop().success());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(browser);
}

/// Standard base64 (DevTools' screenshots).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
            let bytes = n.to_be_bytes();
            bytes[1..c.len()].to_vec()
        })
        .collect()
}

/// Live streams are bounded: the seventeenth waits its turn (`503` with
/// `Retry-After`); a stream gets the status at once, then heartbeats;
/// `/status.json` answers too.
#[test]
fn streams_beyond_the_bound_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let http = format!("127.0.0.1:{PORT}");
    let node = NodeProc::start(
        &ns,
        &dir.path().join("node"),
        &[
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            &http,
        ],
    );
    node.wait_log("capgo gateway listening", T);
    let mut streams: Vec<_> = (0..16).map(|_| open_stream(&ns)).collect();
    for (_, line) in &streams {
        assert!(line.contains(" 200 "), "{line}");
    }
    let (mut refused, line) = open_stream(&ns);
    assert!(line.contains(" 503 "), "{line}");
    let mut head = String::new();
    while refused.read_line(&mut head).unwrap() > 2 {}
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 10"),
        "{head}"
    );

    // The first stream's first status event names this node.
    let peer = node_status(&node.store)["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (r, _) = &mut streams[0];
    let mut seen = String::new();
    while !seen.contains("event: status") {
        assert!(r.read_line(&mut seen).unwrap() > 0, "{seen}");
    }
    seen.clear();
    r.read_line(&mut seen).unwrap();
    let status: Value = serde_json::from_str(seen.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(status["peer_id"], peer.as_str());

    // A slot freed is a slot taken.
    streams.pop();
    let reopened = wait_for("a freed slot", Duration::from_secs(30), || {
        let (s, line) = open_stream(&ns);
        line.contains(" 200 ").then_some(s)
    });
    drop(reopened);

    let (code, body) = request(&ns, "GET", "/status.json", "");
    assert_eq!(code, 200, "{body}");
    let snapshot: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snapshot["peer_id"], peer.as_str());
    assert!(snapshot.get("control_socket").is_none(), "{body}");
}
