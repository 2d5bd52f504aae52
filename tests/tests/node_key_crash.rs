//! A node killed with SIGKILL at any instant of its first start never
//! leaves an empty or truncated `node.key`, and starts fine afterwards
//! with the key that was written whole (or a new one if none was).
//!
//! Kills come from the crash points of `lanseed_protocol::crashpoint`
//! (every durable step of a first start: the store's marker, the key's
//! temp file written, synced, renamed, its directory synced), and from the
//! test itself with a plain `kill -9` after a few early delays.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lanseed_tests::net::{Netns, NodeProc, strip_ansi};
use lanseed_tests::{Rng, lanseed_bin};

const ARGS: [&str; 4] = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--store"];

/// `lanseed seed` on `store` in `ns`, its stderr to `log`.
fn seed(ns: &Netns, store: &Path, log: &Path, kill_at: Option<&str>) -> Child {
    let mut cmd: Command = ns.command(&lanseed_bin());
    cmd.arg("seed")
        .args(ARGS)
        .arg(store)
        .env("RUST_LOG", "lanseed=info")
        .env("NO_COLOR", "1")
        .env_remove(lanseed_protocol::crashpoint::ENV)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(n) = kill_at {
        cmd.env(lanseed_protocol::crashpoint::ENV, n);
    }
    cmd.spawn().expect("spawn lanseed seed")
}

/// Waits until `log` has a line with `needle`; returns it.
fn wait_line(log: &Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no `{needle}` in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The peer id a `node started` line names.
fn logged_peer_id(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("peer_id="))
        .unwrap_or_else(|| panic!("no peer id in {line}"))
        .to_owned()
}

/// The peer id of the key in `store`, or `None` when there is no key;
/// panics when the file is there but not a whole key.
fn key_on_disk(store: &Path, what: &str) -> Option<String> {
    let bytes = match std::fs::read(store.join("node.key")) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{what}: cannot read node.key: {e}"),
    };
    assert!(!bytes.is_empty(), "{what}: node.key is empty");
    let key = libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
        .unwrap_or_else(|e| panic!("{what}: node.key ({} bytes) is no key: {e}", bytes.len()));
    Some(key.public().to_peer_id().to_string())
}

/// After a kill: the key is whole or absent, and the node starts with it
/// (or with a new one), leaving no temp file of the key behind.
fn check_and_restart(ns: &Netns, store: &Path, what: &str) {
    let before = key_on_disk(store, what);
    let node = NodeProc::start(ns, store, &ARGS[..3]);
    let started = node.wait_log("node started", Duration::from_secs(20));
    let now = key_on_disk(store, what).expect("a started node has a key");
    assert_eq!(logged_peer_id(&started), now, "{what}");
    if let Some(before) = before {
        assert_eq!(before, now, "{what}: the whole key written was not kept");
    }
    let leftovers: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".node.key"))
        .collect();
    assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
}

#[test]
fn sigkill_during_first_start_never_leaves_a_broken_node_key() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();

    // Count the crash points of a first start, and learn their phases.
    let counted = dir.path().join("counted");
    let log = dir.path().join("counted.log");
    let mut child = seed(&ns, &counted, &log, Some("0"));
    wait_line(&log, "node started");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let phases: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("crashpoint "))
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    for p in [
        "node key: written",
        "node key: synced",
        "node key: renamed",
        "node key: directory synced",
    ] {
        assert!(phases.contains(&p), "no crash point `{p}` in {phases:?}");
    }

    // A SIGKILL at each of them.
    for n in 1..=phases.len() {
        let what = format!("killed at crash point {n} ({})", phases[n - 1]);
        let store = dir.path().join(format!("at-{n}"));
        let log = dir.path().join(format!("at-{n}.kill.log"));
        let status = seed(&ns, &store, &log, Some(&n.to_string()))
            .wait()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "{what}: {status:?}\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        check_and_restart(&ns, &store, &what);
    }

    // A plain kill -9 after a few early delays.
    let mut rng = Rng::new(7);
    let delays: Vec<u64> = [0, 1, 5]
        .into_iter()
        .chain((0..9).map(|_| rng.below(80)))
        .collect();
    for (i, ms) in delays.into_iter().enumerate() {
        let what = format!("kill -9 after {ms} ms");
        let store = dir.path().join(format!("delay-{i}"));
        let log = dir.path().join(format!("delay-{i}.kill.log"));
        let mut child = seed(&ns, &store, &log, None);
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        check_and_restart(&ns, &store, &what);
    }
}
