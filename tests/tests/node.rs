//! Real `lanseed seed` processes, each test in network namespaces of its
//! own: discovery, announcements, verified fetch, trust, fleet keys,
//! status, and a LAN of two hosts on a bridge.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lanseed_tests::net::{Lan, Netns, NodeProc, log_time_us};
use lanseed_tests::{
    generate_build, json, keygen, lanseed, node_status, path_str as s, run_ok, store_releases,
    verify_store,
};

const APP: &str = "com.example.kiosk";
const T: Duration = Duration::from_secs(30);

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: String,
    build: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    generate_build(&build, 80, 3 << 20, 4);
    std::fs::write(build.join("large.bin"), vec![7u8; 2_600_000]).unwrap();
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

    fn pack(&self, store: &Path, version: &str, extra: &[&str]) -> serde_json::Value {
        std::fs::write(self.build.join("index.html"), format!("<h1>{version}</h1>")).unwrap();
        let mut args = vec![
            "pack",
            s(&self.build),
            "--app",
            APP,
            "--version",
            version,
            "--key",
            s(&self.key),
            "--store",
            s(store),
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&run_ok(&args))
    }

    fn follower(&self, ns: &Netns, name: &str, extra: &[&str]) -> NodeProc {
        let mut args = vec!["--follow", APP, "--trust", self.trust.as_str()];
        args.extend_from_slice(extra);
        NodeProc::start(ns, &self.store(name), &args)
    }
}

fn listen_addr(node: &NodeProc) -> String {
    let line = node.wait_log("listening address=", T);
    let addr = line.split("address=").nth(1).unwrap().trim().to_owned();
    let peer = node.wait_log("node started", T);
    let id = peer
        .split("peer_id=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    format!("{addr}/p2p/{id}")
}

fn peer_id(node: &NodeProc) -> String {
    let line = node.wait_log("node started", T);
    line.split("peer_id=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn release_reaches_followers_over_mdns_and_announcements_are_fast() {
    let ns = Netns::new();
    let t = setup();
    let a_store = t.store("a");
    t.pack(&a_store, "1.0.0", &[]);
    let mut a = NodeProc::start(&ns, &a_store, &[]);
    let mut followers: Vec<NodeProc> = ["b", "c", "d"]
        .iter()
        .map(|n| t.follower(&ns, n, &[]))
        .collect();
    for f in &followers {
        f.wait_log("peer found via mdns", T);
        f.wait_log("version=1.0.0 bundle", T);
        f.wait_log("transfer done", T);
    }

    // A release packed into the running seeder reaches every follower.
    let v2 = t.pack(&a_store, "1.1.0", &[]);
    let noticed = a.wait_log("version=1.1.0 seq", T);
    for f in &followers {
        let done = f.wait_log("version=1.1.0 bundle", T);
        assert!(
            done.contains("fetching release") || done.contains("transfer done"),
            "{done}"
        );
    }
    let mut worst = 0;
    for f in &followers {
        let t0 = log_time_us(&noticed);
        let got = f
            .log_text()
            .lines()
            .filter(|l| l.contains("announcement received") && log_time_us(l) >= t0)
            .map(log_time_us)
            .next()
            .expect("announcement after the pack");
        worst = worst.max(got - t0);
    }
    eprintln!("announcement latency, seeder noticed -> follower received, worst of 3: {worst} us");
    assert!(worst <= 100_000, "announcement took {worst} us");
    for f in &followers {
        f.wait_log(
            "transfer done app=com.example.kiosk channel=production version=1.1.0",
            T,
        );
    }
    for f in &followers {
        verify_store(&f.store, &t.trust);
        let held = store_releases(&f.store);
        assert!(held.iter().any(|r| r["release_id"] == v2["release_id"]));
    }

    // A follower started later catches up.
    let e = t.follower(&ns, "e", &[]);
    e.wait_log(
        "transfer done app=com.example.kiosk channel=production version=1.1.0",
        T,
    );
    verify_store(&e.store, &t.trust);

    // SIGTERM stops a node cleanly: exit 0, control socket gone.
    for n in followers.iter_mut().chain(std::iter::once(&mut a)) {
        let socket = node_status(&n.store)["control_socket"]
            .as_str()
            .expect("status names its control socket")
            .to_owned();
        assert!(Path::new(&socket).exists(), "{socket}");
        let status = n.stop();
        assert!(status.success(), "{status:?}\n{}", n.log_text());
        assert!(!Path::new(&socket).exists(), "{socket}");
        assert!(n.log_text().contains("node stopping"));
    }
}

#[test]
fn corrupted_seeder_is_dropped_and_a_good_one_serves() {
    let ns = Netns::new();
    let t = setup();
    let good = t.store("good");
    t.pack(&good, "1.0.0", &[]);
    // The bad seeder holds the same release with one blob damaged on disk.
    let bad = t.store("bad");
    lanseed_tests::copy_tree(&good, &bad);
    let _ = std::fs::remove_file(bad.join("node.key"));
    let manifest_blob = {
        let m = json(&run_ok(&["releases", "--store", s(&bad), "--json"]));
        m[0]["bundle_id"].as_str().unwrap().to_owned()
    };
    let manifest = lanseed_protocol::Store::open(&bad)
        .unwrap()
        .read_manifest(&manifest_blob.parse().unwrap())
        .unwrap();
    let large = manifest.get("large.bin").unwrap();
    let path = lanseed_protocol::Store::open(&bad)
        .unwrap()
        .blob_path(&large.blake3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2_000_000] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let b = NodeProc::start(&ns, &bad, &["--no-mdns"]);
    let f = t.follower(&ns, "f", &["--no-mdns", "--peer", &listen_addr(&b)]);
    let bad_id = peer_id(&b);
    let dropped = f.wait_log("banned peer", T);
    assert!(dropped.contains(&bad_id), "{dropped}");
    assert!(dropped.contains("does not match its hash"), "{dropped}");
    f.wait_log("transfer stalled", T);
    // A good seeder that connects later completes the transfer.
    let _g = NodeProc::start(&ns, &good, &["--no-mdns", "--peer", &listen_addr(&f)]);
    f.wait_log("transfer done", T);
    verify_store(&f.store, &t.trust);
    assert_eq!(store_releases(&f.store).len(), 1);
}

#[test]
fn untrusted_or_out_of_scope_releases_are_never_fetched() {
    let ns = Netns::new();
    let t = setup();
    let a_store = t.store("a");
    // Signed by a stranger's key, and by the trusted key on a channel its
    // trust line does not cover.
    let stranger_dir = t.dir.path().join("stranger");
    std::fs::create_dir(&stranger_dir).unwrap();
    let stranger = keygen(&stranger_dir);
    std::fs::write(t.build.join("index.html"), "stranger").unwrap();
    run_ok(&[
        "pack",
        s(&t.build),
        "--app",
        APP,
        "--version",
        "6.6.6",
        "--key",
        s(&stranger),
        "--store",
        s(&a_store),
    ]);
    t.pack(&a_store, "2.0.0", &["--channel", "beta"]);
    let scoped = t.dir.path().join("scoped.trust");
    let line = std::fs::read_to_string(&t.trust).unwrap();
    std::fs::write(&scoped, format!("{} channels=production\n", line.trim())).unwrap();

    let _a = NodeProc::start(&ns, &a_store, &[]);
    let b = NodeProc::start(
        &ns,
        &t.store("b"),
        &["--follow", APP, "--trust", s(&scoped)],
    );
    b.wait_log("is not trusted for app", T);
    b.wait_log("publisher key", T);
    let refusals = || {
        b.log_text()
            .lines()
            .filter(|l| l.contains("refused announced release"))
            .count()
    };
    let start = std::time::Instant::now();
    while refusals() < 2 && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refusals() >= 2, "{}", b.log_text());
    std::thread::sleep(Duration::from_millis(500));
    assert!(!b.log_text().contains("fetching release"));
    assert!(store_releases(&b.store).is_empty());
    let blobs = std::fs::read_dir(b.store.join("blobs")).unwrap().count();
    assert_eq!(blobs, 0, "nothing fetched");
}

#[test]
fn fleet_key_keeps_other_nodes_out() {
    let ns = Netns::new();
    let t = setup();
    let fleet = t.dir.path().join("fleet.key");
    let other = t.dir.path().join("other.key");
    run_ok(&["keygen", "--fleet", "--out", s(&fleet)]);
    run_ok(&["keygen", "--fleet", "--out", s(&other)]);
    let a_store = t.store("a");
    t.pack(&a_store, "1.0.0", &[]);
    let _a = NodeProc::start(&ns, &a_store, &["--fleet-key", s(&fleet)]);
    let member = t.follower(&ns, "member", &["--fleet-key", s(&fleet)]);
    let outsider = t.follower(&ns, "outsider", &[]);
    let stranger = t.follower(&ns, "stranger", &["--fleet-key", s(&other)]);
    member.wait_log("transfer done", T);
    // The others see the mDNS records but cannot connect.
    outsider.wait_log("peer found via mdns", T);
    stranger.wait_log("peer found via mdns", T);
    std::thread::sleep(Duration::from_secs(3));
    for n in [&outsider, &stranger] {
        let st = node_status(&n.store);
        let connected = st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"] == true)
            .count();
        assert_eq!(connected, 0, "{st}");
        assert!(store_releases(&n.store).is_empty());
        assert!(!n.log_text().contains("peer connected"), "{}", n.log_text());
    }
}

#[test]
fn status_json_shows_peers_and_transfers() {
    let ns = Netns::new();
    let t = setup();
    let a_store = t.store("a");
    t.pack(&a_store, "1.0.0", &[]);
    // A seeder that lost its files: the follower's transfer stays visible.
    let lost = lanseed_protocol::Store::open(&a_store).unwrap();
    let m = store_releases(&a_store)[0]["bundle_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let manifest = lost.read_manifest(&m).unwrap();
    std::fs::remove_file(lost.blob_path(&manifest.get("large.bin").unwrap().blake3)).unwrap();
    let a = NodeProc::start(&ns, &a_store, &[]);
    let b = t.follower(&ns, "b", &[]);
    b.wait_log("transfer stalled", T);
    let st = node_status(&b.store);
    let peers = st["peers"].as_array().unwrap();
    // Found over mDNS, or dialled by A first (then it came in).
    assert!(
        peers.iter().any(|p| p["peer_id"] == peer_id(&a)
            && p["connected"] == true
            && (p["found_by"] == "mdns" || p["found_by"] == "inbound")),
        "{st}"
    );
    let tr = &st["transfers"][0];
    assert_eq!(tr["app"], APP);
    // Stalled, or just revived to ask the peer again.
    assert!(tr["state"] == "stalled" || tr["state"] == "files", "{tr}");
    assert!(tr["bytes_total"].as_u64().unwrap() > 2_600_000, "{tr}");
    assert_eq!(st["releases"].as_array().unwrap().len(), 0);
    let sa = node_status(&a_store);
    assert_eq!(sa["releases"][0]["version"], "1.0.0");
    // The seeder served the manifest and the files it still had.
    assert!(sa["uploads"]["answers"].as_u64().unwrap() > 0, "{sa}");
    assert!(sa["uploads"]["bytes"].as_u64().unwrap() > 0, "{sa}");
    assert_eq!(sa["uploads"]["max_peers"], 8);
    // Human output too.
    let out = lanseed()
        .args(["status", "--store", s(&b.store)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 transfers") && text.contains("stalled") && text.contains("uploads:"),
        "{text}"
    );
    // No node: a clear error.
    let err = lanseed()
        .args(["status", "--store", s(&t.store("nobody"))])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no lanseed node is running"));
}

#[test]
fn discovery_and_transfer_across_a_bridge() {
    let lan = Lan::new(2);
    let t = setup();
    let a_store = t.store("a");
    t.pack(&a_store, "1.0.0", &[]);
    let a = NodeProc::start(&lan.hosts[0], &a_store, &[]);
    let b = t.follower(&lan.hosts[1], "b", &[]);
    let found = b.wait_log("peer found via mdns", T);
    assert!(found.contains(&lan.addrs[0]), "{found}");
    b.wait_log("transfer done", T);
    verify_store(&b.store, &t.trust);

    // A standard mDNS browser (python-zeroconf) on the other host sees the
    // record, with the peer id in its TXT properties.
    let script = r#"
import sys, time
from zeroconf import Zeroconf, ServiceBrowser, ServiceListener
seen = {}
class L(ServiceListener):
    def add_service(self, zc, ty, name):
        info = zc.get_service_info(ty, name, 3000)
        if info: seen[name] = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    def update_service(self, zc, ty, name): self.add_service(zc, ty, name)
    def remove_service(self, zc, ty, name): pass
zc = Zeroconf()
ServiceBrowser(zc, "_lanseed._udp.local.", L())
end = time.time() + 10
while time.time() < end and not any(p.get("peer") == sys.argv[1] for p in seen.values()):
    time.sleep(0.1)
zc.close()
print(seen)
sys.exit(0 if any(p.get("peer") == sys.argv[1] for p in seen.values()) else 1)
"#;
    let out = lan.hosts[1]
        .command(Path::new("python3"))
        .args(["-c", script, &peer_id(&a)])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python-zeroconf did not see {}: {} {}",
        peer_id(&a),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = SystemTime::now();
}

#[test]
fn a_restarted_seeder_is_dialled_again_and_same_bundle_releases_all_arrive() {
    let ns = Netns::new();
    let t = setup();
    let a_store = t.store("a");
    t.pack(&a_store, "1.0.0", &[]);
    // The same build on a second channel: one bundle, two releases.
    t.pack(&a_store, "1.0.0", &["--channel", "beta"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut a = NodeProc::start(&ns, &a_store, &["--no-mdns", "--listen", &listen]);
    let a_addr = listen_addr(&a);
    let b = t.follower(&ns, "b", &["--no-mdns", "--peer", &a_addr]);
    b.wait_log("transfer done", T);
    let start = std::time::Instant::now();
    while store_releases(&b.store).len() < 2 && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        store_releases(&b.store).len(),
        2,
        "both releases of the bundle"
    );
    assert!(!b.log_text().contains("dropped peer"), "{}", b.log_text());

    // The seeder restarts (same store, identity and address); a release
    // packed afterwards still reaches the follower, which dials it again.
    assert!(a.stop().success());
    b.wait_log("peer disconnected", T);
    let _a = NodeProc::start(&ns, &a_store, &["--no-mdns", "--listen", &listen]);
    t.pack(&a_store, "1.1.0", &[]);
    b.wait_log(
        "transfer done app=com.example.kiosk channel=production version=1.1.0",
        T,
    );
    verify_store(&b.store, &t.trust);
}
