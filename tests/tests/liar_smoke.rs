//! The lying peer (`lanseed-liar`) itself, against real `lanseed seed`
//! processes in network namespaces: it connects (dialing and listening,
//! with a fleet key too), its frames reach the node, it serves its store
//! truthfully, lies when told, and opens the connections and mDNS records
//! it says. These tests check the liar; what the node does about its lies
//! is for the tests of the node's defences.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lanseed_tests::liar::harness::{Liar, arg, node_addr, node_peer_id};
use lanseed_tests::net::{Lan, Netns, NodeProc};
use lanseed_tests::{generate_build, keygen, pack_args, run_ok};
use serde_json::Value;

const APP: &str = "com.example.kiosk";
const T: Duration = Duration::from_secs(30);

/// A publisher key, its trust file, and a store (`liar`) holding one
/// release of a 3 MB build (several pieces).
struct Setup {
    dir: tempfile::TempDir,
    trust: String,
    liar_store: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    generate_build(&build, 20, 1 << 20, 11);
    std::fs::write(build.join("large.bin"), vec![9u8; 2_500_000]).unwrap();
    let liar_store = dir.path().join("liar");
    run_ok(&pack_args(&build, APP, "1.0.0", &key, &liar_store, &[]));
    Setup {
        dir,
        trust,
        liar_store,
    }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A node on loopback in `ns` that follows APP and trusts the key.
    fn follower(&self, ns: &Netns, name: &str, extra: &[&str]) -> NodeProc {
        let mut args = vec![
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--follow",
            APP,
            "--trust",
            &self.trust,
        ];
        args.extend_from_slice(extra);
        NodeProc::start(ns, &self.path(name), &args)
    }
}

fn loopback_node(ns: &Netns, store: &Path, extra: &[&str]) -> NodeProc {
    let mut args = vec!["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
    args.extend_from_slice(extra);
    NodeProc::start(ns, store, &args)
}

fn frame<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "frame" && e["name"] == name)
        .unwrap_or_else(|| panic!("no frame {name} in {events:#?}"))
}

#[test]
fn frames_reach_the_node_through_a_fleet_key_and_honest_ones_are_answered() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.key");
    run_ok(&["keygen", "--fleet", "--out", arg(&fleet)]);
    let hex = std::fs::read_to_string(&fleet)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let node = loopback_node(&ns, &dir.path().join("node"), &["--fleet-key", arg(&fleet)]);
    let addr = node_addr(&node);
    let mut liar = Liar::start(
        &ns,
        &[
            "--dial",
            &addr,
            "--fleet-key",
            &hex,
            "--key-seed",
            "7",
            "--for",
            "60",
            "frames",
            "--only",
            "ok.",
            "--only",
            "variant.4",
            "--only",
            "frame.prefix_truncated.eof",
        ],
    );
    assert!(liar.wait_exit(Duration::from_secs(60)).success());
    let events = liar.events();
    let me = liar.wait_named("start", T)["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let connected = liar.wait_named("connected", T);
    assert_eq!(connected["peer"], node_peer_id(&node).as_str());
    assert!(
        node.log_text().contains(&me),
        "the node saw the liar's peer id {me}"
    );

    // Honest frames are understood: the liar's encoding is the node's.
    for (name, answer) in [
        ("ok.announce", "ack"),
        ("ok.get_manifest", "not_found"),
        ("ok.get_pieces", "not_found"),
        ("ok.have", "ack"),
        // A record of a later release layout: refused, yet answered (an
        // older node does the same with a newer one's records).
        ("ok.announce.later_release_layout", "ack"),
    ] {
        let f = frame(&events, name);
        assert_eq!(f["outcome"], "answered", "{f}");
        assert_eq!(f["answer"], answer, "{f}");
    }
    // The lies were sent, each on its own stream, and each got a verdict.
    let known = ["answered", "closed", "reset", "timeout", "conn_lost"];
    for name in ["variant.4", "frame.prefix_truncated.eof"] {
        let f = frame(&events, name);
        assert!(known.contains(&f["outcome"].as_str().unwrap()), "{f}");
    }
    let done = liar.wait_named("frames_done", T);
    assert_eq!(done["sent"], 7, "{done}");
    assert_eq!(done["unsent"], 0, "{done}");
    assert_eq!(liar.wait_named("done", T)["reason"], "mode_done");

    // The same seed is the same identity.
    let mut again = Liar::start(
        &ns,
        &[
            "--dial",
            &addr,
            "--fleet-key",
            &hex,
            "--key-seed",
            "7",
            "--for",
            "0",
            "announce",
        ],
    );
    again.wait_exit(T);
    assert_eq!(again.wait_named("start", T)["peer_id"], me.as_str());
}

#[test]
fn the_liar_serves_its_store_truthfully_to_a_node_that_dials_it_and_lies_when_told() {
    let ns = Netns::new();
    let t = setup();

    // Honest: the liar listens, the node dials it (`--peer`) and fetches
    // the whole release from it.
    let mut liar = Liar::start(
        &ns,
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--store",
            arg(&t.liar_store),
            "--for",
            "60",
            "announce",
        ],
    );
    let liar_addr = liar.wait_named("listening", T)["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = t.follower(&ns, "honest", &["--peer", &liar_addr]);
    node.wait_log("transfer done", T);
    let announced = liar.wait_event("announce sent", T, |e| {
        e["event"] == "sent" && e["kind"] == "announce"
    });
    assert_eq!(announced["answer"], "ack", "{announced}");
    for what in ["manifest", "pieces"] {
        let a = liar.wait_event(what, T, |e| e["event"] == "answered" && e["what"] == what);
        assert_eq!(a["how"], "honest", "{a}");
        assert_eq!(a["answer"], what, "{a}");
        assert_eq!(a["result"], "ok", "{a}");
    }
    liar.stop();

    // Lying: the liar dials another node and sends flipped piece bytes.
    let node = t.follower(&ns, "lied-to", &[]);
    let mut liar = Liar::start(
        &ns,
        &[
            "--dial",
            &node_addr(&node),
            "--store",
            arg(&t.liar_store),
            "--for",
            "60",
            "lie",
            "--how",
            "wrong-bytes",
        ],
    );
    let manifest = liar.wait_event("manifest answer", T, |e| {
        e["event"] == "answered" && e["what"] == "manifest"
    });
    assert_eq!(manifest["how"], "honest", "wrong-bytes lies on pieces only");
    let pieces = liar.wait_event("pieces answer", T, |e| {
        e["event"] == "answered" && e["what"] == "pieces"
    });
    assert_eq!(pieces["how"], "wrong-bytes", "{pieces}");
    assert_eq!(pieces["answer"], "pieces", "{pieces}");
    liar.stop();
}

#[test]
fn have_flood_and_ids_send_what_they_say() {
    let ns = Netns::new();
    let t = setup();
    let node = t.follower(&ns, "node", &[]);
    let addr = node_addr(&node);

    // Lying Haves: the node takes each (Ack) and is told NotFound after.
    let mut liar = Liar::start(
        &ns,
        &[
            "--dial",
            &addr,
            "--store",
            arg(&t.liar_store),
            "--for",
            "3",
            "have",
            "--lying",
            "--every-ms",
            "200",
        ],
    );
    assert!(liar.wait_exit(T).success());
    // One Have per release and round; the node took at least the first
    // (how it treats many is its own business).
    let haves = liar.events_named("sent");
    assert!(haves.len() >= 3, "{}", liar.dump());
    for h in &haves {
        assert_eq!(h["kind"], "have");
        assert_eq!(h["count"], 1, "{h}");
    }
    assert_eq!(haves[0]["answers"]["ack"], 1, "{}", haves[0]);
    assert!(
        liar.events_named("answered")
            .iter()
            .all(|a| a["answer"] == "not_found"),
        "{}",
        liar.dump()
    );

    // A flood of announcements, many streams at once.
    let mut liar = Liar::start(
        &ns,
        &[
            "--dial",
            &addr,
            "--store",
            arg(&t.liar_store),
            "--for",
            "2",
            "flood",
            "--what",
            "announce",
            "--rate",
            "200",
        ],
    );
    assert!(liar.wait_exit(T).success());
    let sent = liar.wait_event("flood total", T, |e| e["event"] == "sent");
    assert_eq!(sent["kind"], "announce");
    let count = sent["count"].as_u64().unwrap();
    assert!((200..=500).contains(&count), "{sent}");
    assert!(sent["answered"].as_u64().unwrap() > 0, "{sent}");
    assert_eq!(
        count,
        ["answered", "failed", "inflight"]
            .iter()
            .map(|k| sent[k].as_u64().unwrap())
            .sum::<u64>(),
        "every request is accounted for: {sent}"
    );

    // Fresh identities, each fully upgraded.
    let mut liar = Liar::start(
        &ns,
        &[
            "--dial",
            &addr,
            "--for",
            "30",
            "ids",
            "--count",
            "12",
            "--concurrency",
            "4",
            "--hold-ms",
            "300",
        ],
    );
    assert!(liar.wait_exit(T).success());
    let done = liar.wait_named("ids_done", T);
    assert_eq!(done["ok"], 12, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
}

#[test]
fn mdns_records_of_peers_that_do_not_exist_reach_a_node_on_the_lan() {
    let lan = Lan::new(2);
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("/ip4/{}/tcp/0", lan.addrs[0]);
    let node = NodeProc::start(
        &lan.hosts[0],
        &dir.path().join("node"),
        &["--listen", &listen],
    );
    // An address on the LAN that nobody has.
    let nobody = lan.addrs[0].rsplit_once('.').unwrap().0.to_owned() + ".200";
    let mut liar = Liar::start(
        &lan.hosts[1],
        &["--for", "60", "mdns", "--count", "3", "--addr", &nobody],
    );
    let registered = liar.wait_named("registered", T);
    let peers: Vec<String> = registered["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(peers.len(), 3);
    for p in &peers {
        let line = node.wait_log(p, T);
        assert!(line.contains(&nobody), "{line}");
    }
    liar.stop();
    assert_eq!(liar.wait_named("unregistered", T)["count"], 3);
}
