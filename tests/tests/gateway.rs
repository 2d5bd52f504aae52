//! The Capgo-compatible gateway of a real `lanseed seed --http` node,
//! asked as @capgo/capacitor-updater 8.51 asks it: the request bodies are
//! the plugin's own (`lanseed_tests::capgo::info`, from `createInfoObject`
//! in `android/src/main/java/ee/forgr/capacitor_updater/CapgoUpdater.java`;
//! each test names the plugin call it replays). Each test runs a node of
//! its own on a loopback port, inside `/work/shared/tools/isolated`.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lanseed_protocol::BundleId;
use lanseed_protocol::release::Rollout;
use lanseed_protocol::zip::ZipLimits;
use lanseed_protocol::zip::read::{Layout, SafeZip};
use lanseed_tests::capgo::{Resp, device_id, get_link, info, post, request, sha256_hex};
use lanseed_tests::net::NodeProc;
use lanseed_tests::{free_port, json, keygen, node_status, pack_args, path_str, run_ok, wait_for};
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/capgo");

/// A node with the gateway on, and what it was made from.
struct Gw {
    node: NodeProc,
    port: u16,
    dir: tempfile::TempDir,
}

/// Packing releases before the node starts.
struct Packer {
    key: PathBuf,
    store: PathBuf,
    dir: PathBuf,
}

impl Packer {
    /// Packs `build` as `version` of `app`; returns the release (JSON).
    fn pack(&self, build: &Path, app: &str, version: &str, extra: &[&str]) -> Value {
        let mut e = vec!["--json"];
        e.extend_from_slice(extra);
        json(&run_ok(&pack_args(
            build,
            app,
            version,
            &self.key,
            &self.store,
            &e,
        )))
    }

    /// A web build named `name` whose index.html says `text`.
    fn build(&self, name: &str, text: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(d.join("assets")).unwrap();
        std::fs::write(
            d.join("index.html"),
            format!("<!doctype html><p>{text}</p>"),
        )
        .unwrap();
        std::fs::write(d.join("assets/app.js"), format!("console.log({text:?});")).unwrap();
        d
    }

    fn channel(&self, args: &[&str]) {
        let mut a = vec!["channel", "set"];
        a.extend_from_slice(args);
        a.extend(["--store", path_str(&self.store)]);
        run_ok(&a);
    }
}

fn gateway(setup: impl FnOnce(&Packer)) -> Gw {
    gateway_with(setup, &[])
}

/// [`gateway`] with more flags for the node.
fn gateway_with(setup: impl FnOnce(&Packer), flags: &[&str]) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let packer = Packer {
        key: keygen(dir.path()),
        store: dir.path().join("store"),
        dir: dir.path().to_owned(),
    };
    setup(&packer);
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--http",
        &http,
    ];
    args.extend_from_slice(flags);
    let node = NodeProc::start_here("seed", &packer.store, &args);
    node.wait_log("capgo gateway listening", Duration::from_secs(20));
    Gw { node, port, dir }
}

impl Gw {
    fn updates(&self, body: &Value) -> Resp {
        post(self.port, "/updates", body)
    }

    /// The `version` offered to `body`, or the answer's `kind`.
    fn offered(&self, body: &Value) -> String {
        let r = self.updates(body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        match v["version"].as_str() {
            Some(version) => version.to_owned(),
            None => v["kind"].as_str().expect("a version or a kind").to_owned(),
        }
    }
}

/// The files of a zip, by name.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = SafeZip::from_reader(
        Cursor::new(bytes),
        "served zip",
        ZipLimits::default(),
        Layout::Raw,
    )
    .expect("a valid zip");
    let names: Vec<String> = z.entries().iter().map(|e| e.name.clone()).collect();
    (0..names.len())
        .map(|i| (names[i].clone(), z.read_to_vec(i, 1 << 30).unwrap()))
        .collect()
}

const APP: &str = "com.example.kiosk";

/// `getLatest` (plugin 8.51): a device on its builtin bundle is offered
/// the release; the zip it downloads has the checksum of the offer,
/// unzips to the bundle, and resumes byte-exactly with `Range`; once on
/// it, the device is up to date.
#[test]
fn update_offered_downloaded_resumed_then_up_to_date() {
    let gw = gateway(|p| {
        let b = p.build("v1", "one");
        p.pack(&b, APP, "1.0.0", &[]);
    });
    // Many devices at first contact: one zip is made, every answer waits
    // for it.
    let port = gw.port;
    let firsts: Vec<String> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                post(port, "/updates", &info(APP, &device_id(100 + i), "builtin")).json()["checksum"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(firsts.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(gw.node.log_text().matches("gateway zip made").count(), 1);

    let dev = device_id(1);
    let r = gw.updates(&info(APP, &dev, "builtin"));
    assert_eq!(r.status, 200);
    let offer = r.json();
    assert_eq!(offer["version"], "1.0.0");
    assert!(offer.get("session_key").is_none() && offer.get("manifest").is_none());
    let url = offer["url"].as_str().unwrap();
    let checksum = offer["checksum"].as_str().unwrap();
    let zip = get_link(gw.port, url, &[]);
    assert_eq!(zip.status, 200);
    assert_eq!(
        zip.header("content-length"),
        Some(zip.body.len().to_string().as_str())
    );
    assert_eq!(sha256_hex(&zip.body), checksum);
    let etag = zip.header("etag").unwrap().to_owned();
    let files = unzip(&zip.body);
    let index = files
        .iter()
        .find(|(n, _)| n == "index.html")
        .expect("index.html");
    assert_eq!(index.1, b"<!doctype html><p>one</p>");

    // A download cut at byte 100 resumes from there.
    let cut = 100;
    let rest = get_link(
        gw.port,
        url,
        &[("Range", &format!("bytes={cut}-")), ("If-Range", &etag)],
    );
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.header("content-range"),
        Some(format!("bytes {cut}-{}/{}", zip.body.len() - 1, zip.body.len()).as_str())
    );
    assert_eq!(rest.body, zip.body[cut..]);
    // Another device asking gets the same bytes (made once).
    let again = gw.updates(&info(APP, &device_id(2), "builtin")).json();
    assert_eq!(again["checksum"], checksum);

    assert_eq!(gw.offered(&info(APP, &dev, "1.0.0")), "up_to_date");
    let up = gw.updates(&info(APP, &dev, "1.0.0")).json();
    assert_eq!(up["error"], "no_new_version_available");
    assert!(up["message"].as_str().is_some_and(|m| !m.is_empty()));
    // The zip is in the store's cache.
    let cached = std::fs::read_dir(gw.node.store.join("cache/gateway/zip"))
        .unwrap()
        .count();
    assert_eq!(cached, 2, "the zip and its checksum");
    // A cached zip that goes missing (a cleared cache, a disk fault) is
    // made again at the next check, not served as a 404 until a restart.
    for e in std::fs::read_dir(gw.node.store.join("cache/gateway/zip")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "zip") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let again = gw.updates(&info(APP, &device_id(3), "builtin")).json();
    assert_eq!(again["checksum"], checksum, "the same deterministic zip");
    let zip = get_link(gw.port, again["url"].as_str().unwrap(), &[]);
    assert_eq!(zip.status, 200);
    assert_eq!(sha256_hex(&zip.body), checksum);
}

/// Bad input is a 4xx with `error` and `message`, never a 5xx: malformed
/// JSON, a missing device id, an unknown app, an unknown download.
#[test]
fn malformed_requests_and_unknown_apps_are_refused_plainly() {
    let gw = gateway(|p| {
        let b = p.build("v1", "one");
        p.pack(&b, APP, "1.0.0", &[]);
    });
    for body in [
        &b"{"[..],
        b"[]",
        b"{\"app_id\":\"com.example.kiosk\"}",
        b"\xff\xfe",
    ] {
        let r = request(gw.port, "POST", "/updates", &[], body);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        let v = r.json();
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    let big = vec![b' '; 1 << 20];
    assert_eq!(request(gw.port, "POST", "/updates", &[], &big).status, 413);
    // `getLatest` of an app the gateway holds nothing of.
    let v = gw
        .updates(&info("com.example.other", &device_id(3), "builtin"))
        .json();
    assert_eq!(
        (v["kind"].as_str(), v["error"].as_str()),
        (Some("failed"), Some("unknown_app"))
    );
    let missing = format!("/capgo/zip/{}.zip", "0".repeat(64));
    assert_eq!(request(gw.port, "GET", &missing, &[], b"").status, 404);
    assert_eq!(
        request(gw.port, "GET", "/capgo/file/..%2f..%2fetc", &[], b"").status,
        404
    );
}

/// `getLatest` of an app with a public key (`key_id` in the body): a
/// release that is not encrypted for that key is refused as `blocked`.
#[test]
fn a_key_id_the_release_does_not_match_is_blocked() {
    let gw = gateway(|p| {
        let b = p.build("v1", "one");
        p.pack(&b, APP, "1.0.0", &[]);
    });
    let mut body = info(APP, &device_id(4), "builtin");
    body["key_id"] = json!("MIIBCgKCAQEAx1y2");
    let v = gw.updates(&body).json();
    assert_eq!(
        (v["kind"].as_str(), v["error"].as_str()),
        (Some("blocked"), Some("key_id_mismatch"))
    );
}

/// Six `getLatest` in a row: the sixth is `429` with `Retry-After` (the
/// plugin pauses its checks for that long); other devices go on.
#[test]
fn checking_too_often_is_told_to_wait() {
    let gw = gateway(|p| {
        let b = p.build("v1", "one");
        p.pack(&b, APP, "1.0.0", &[]);
    });
    let body = info(APP, &device_id(5), "builtin");
    let codes: Vec<u16> = (0..6).map(|_| gw.updates(&body).status).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429]);
    let r = gw.updates(&body);
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait));
    assert_eq!(r.json()["error"], "too_many_requests");
    assert_eq!(gw.updates(&info(APP, &device_id(6), "builtin")).status, 200);
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(gw.updates(&body).status, 200);
}

/// The rollout draw on the device id: a device on builtin outside v2's
/// 50 % gets v1; after v2 is paused (a new release of the same bundle at
/// 0 %), a device on v2 is told up to date, not moved back to v1, and a
/// device on builtin gets v1.
#[test]
fn rollout_exclusion_and_a_pause_never_move_a_device_back() {
    let mut v2_bundle = String::new();
    let gw = gateway(|p| {
        let b1 = p.build("v1", "one");
        let b2 = p.build("v2", "two");
        p.pack(&b1, APP, "1.0.0", &[]);
        v2_bundle = p.pack(&b2, APP, "2.0.0", &["--rollout", "50"])["bundle_id"]
            .as_str()
            .unwrap()
            .to_owned();
    });
    let bundle: BundleId = v2_bundle.parse().unwrap();
    let half: Rollout = "50".parse().unwrap();
    let pick = |inside: bool| {
        (100..)
            .map(device_id)
            .find(|d| half.includes(APP, &bundle, d) == inside)
            .unwrap()
    };
    let (out, inside) = (pick(false), pick(true));
    assert_eq!(gw.offered(&info(APP, &out, "builtin")), "1.0.0");
    assert_eq!(gw.offered(&info(APP, &inside, "builtin")), "2.0.0");
    assert_eq!(gw.offered(&info(APP, &inside, "2.0.0")), "up_to_date");

    // Paused: `lanseed pack` of the same build at 0 % while the node runs.
    let store = gw.node.store.clone();
    let key = gw.dir.path().join("publisher.key");
    run_ok(&pack_args(
        &gw.dir.path().join("v2"),
        APP,
        "2.0.0",
        &key,
        &store,
        &["--rollout", "0"],
    ));
    wait_for(
        "the pause to reach the gateway",
        Duration::from_secs(10),
        || (gw.offered(&info(APP, &inside, "builtin")) == "1.0.0").then_some(()),
    );
    assert_eq!(gw.offered(&info(APP, &inside, "2.0.0")), "up_to_date");
    assert_eq!(gw.offered(&info(APP, &out, "1.0.0")), "up_to_date");
}

/// `version_build` below a release's minimum native version: the newest
/// release it can run is offered instead.
#[test]
fn a_native_version_too_low_gets_the_release_it_can_run() {
    let gw = gateway(|p| {
        let b1 = p.build("v1", "one");
        let b2 = p.build("v2", "two");
        p.pack(&b1, APP, "1.0.0", &[]);
        p.pack(&b2, APP, "2.0.0", &["--min-native-version", "2.0.0"]);
    });
    let mut body = info(APP, &device_id(7), "builtin");
    body["version_build"] = json!("1.9");
    assert_eq!(gw.offered(&body), "1.0.0");
    body["version_name"] = json!("1.0.0");
    assert_eq!(gw.offered(&body), "up_to_date");
    body["version_build"] = json!("2.0");
    assert_eq!(gw.offered(&body), "2.0.0");
}

/// Two releases with the same version and different bundles: the later
/// one is offered as `VERSION+<8 hex of its bundle id>`, so the plugin,
/// which knows bundles by version, tells them apart.
#[test]
fn two_releases_with_one_version_get_distinct_version_strings() {
    let mut second = String::new();
    let gw = gateway(|p| {
        let b1 = p.build("a", "first");
        let b2 = p.build("b", "second");
        p.pack(&b1, APP, "1.0.0", &[]);
        second = p.pack(&b2, APP, "1.0.0", &[])["bundle_id"]
            .as_str()
            .unwrap()
            .to_owned();
    });
    let suffixed = format!("1.0.0+{}", &second[..8]);
    let dev = device_id(8);
    assert_eq!(gw.offered(&info(APP, &dev, "builtin")), suffixed);
    assert_eq!(gw.offered(&info(APP, &dev, "1.0.0")), suffixed);
    assert_eq!(gw.offered(&info(APP, &dev, &suffixed)), "up_to_date");
}

/// `listChannels` (GET with the info object as query), `setChannel`
/// (POST `{…info, channel}`), `getChannel` (PUT): a device switches
/// itself to a self-assignable channel and is then offered its release;
/// a channel that is not self-assignable is refused; the override
/// survives a restart of the node.
#[test]
fn a_device_switches_channel_through_channel_self() {
    let mut gw = gateway(|p| {
        let b1 = p.build("prod", "prod");
        let b2 = p.build("beta", "beta");
        p.pack(&b1, APP, "1.0.0", &[]);
        p.pack(&b2, APP, "1.1.0-beta.1", &["--channel", "beta"]);
        p.pack(&b2, APP, "1.1.0-qa", &["--channel", "qa"]);
        p.channel(&[APP, "beta", "--self-assign"]);
        p.channel(&[APP, "production", "--public"]);
    });
    let listed = json(&run_ok(&[
        "channel",
        "list",
        "--json",
        "--store",
        path_str(&gw.node.store),
    ]));
    assert_eq!(
        listed,
        json!([
            { "app": APP, "name": "beta", "public": false, "self_assign": true, "capgo_manifest": false },
            { "app": APP, "name": "production", "public": true, "self_assign": false, "capgo_manifest": false },
        ])
    );
    let dev = device_id(9);
    let q =
        format!("/channel_self?app_id={APP}&device_id={dev}&version_name=builtin&platform=android");
    let list = request(gw.port, "GET", &q, &[], b"").json();
    assert_eq!(
        list,
        json!([
            { "id": 1, "name": "beta", "public": false, "allow_self_set": true },
            { "id": 2, "name": "production", "public": true, "allow_self_set": false },
        ])
    );
    assert_eq!(gw.offered(&info(APP, &dev, "builtin")), "1.0.0");

    let mut set = info(APP, &dev, "builtin");
    set["channel"] = json!("qa");
    let r = post(gw.port, "/channel_self", &set);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "channel_self_set_not_allowed");
    set["channel"] = json!("beta");
    let r = post(gw.port, "/channel_self", &set);
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));

    let read = request(
        gw.port,
        "PUT",
        "/channel_self",
        &[],
        info(APP, &dev, "1.0.0").to_string().as_bytes(),
    )
    .json();
    assert_eq!(
        (read["channel"].as_str(), read["status"].as_str()),
        (Some("beta"), Some("override"))
    );
    // Five requests at once are the burst; the sixth waits a second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(gw.offered(&info(APP, &dev, "builtin")), "1.1.0-beta.1");
    // Other devices stay on production.
    assert_eq!(gw.offered(&info(APP, &device_id(10), "builtin")), "1.0.0");

    // The override is written to the store and read again at start.
    wait_for("the overrides file", Duration::from_secs(5), || {
        std::fs::read_to_string(gw.node.store.join("gateway-overrides.json"))
            .ok()
            .filter(|t| t.contains(&dev))
    });
    assert!(gw.node.stop().success());
    let store = gw.node.store.clone();
    let http = format!("127.0.0.1:{}", gw.port);
    gw.node = NodeProc::start_here(
        "seed",
        &store,
        &[
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            &http,
        ],
    );
    gw.node
        .wait_log("capgo gateway listening", Duration::from_secs(20));
    assert_eq!(gw.offered(&info(APP, &dev, "builtin")), "1.1.0-beta.1");

    // Asking for the public channel removes the override.
    set["channel"] = json!("production");
    assert_eq!(post(gw.port, "/channel_self", &set).json()["unset"], true);
    assert_eq!(gw.offered(&info(APP, &dev, "builtin")), "1.0.0");
    // DELETE too (query string form).
    let del = request(gw.port, "DELETE", &q, &[], b"");
    assert_eq!(del.json()["status"], "ok");
}

/// Manifest (delta) mode on a channel: every file by its SHA-256; a
/// `.br` download decompresses to its `file_hash`; a file Brotli does not
/// shrink by a tenth is served as it is. `manifest_size` (plugins 8.47+,
/// body as Capgo's backend reads it: `{…info, version, manifest}`) sums
/// the bytes of the files a device still lacks, and counts a hash the
/// gateway does not know apart.
#[test]
fn manifest_mode_files_match_their_hashes_and_manifest_size_adds_up() {
    let gw = gateway(|p| {
        let b = p.build("v1", "delta");
        std::fs::write(
            b.join("assets/big.js"),
            "export const x = 'lanseed';\n".repeat(2000),
        )
        .unwrap();
        let mut rng = lanseed_tests::Rng::new(7);
        let noise: Vec<u8> = (0..8192).map(|_| rng.next_u64() as u8).collect();
        std::fs::write(b.join("assets/noise.bin"), noise).unwrap();
        p.pack(&b, APP, "1.0.0", &[]);
        p.channel(&[APP, "production", "--capgo-manifest"]);
    });
    let offer = gw.updates(&info(APP, &device_id(11), "builtin")).json();
    assert!(offer["url"].is_string() && offer["checksum"].is_string());
    let manifest = offer["manifest"].as_array().expect("manifest mode").clone();
    let build = gw.dir.path().join("v1");
    assert_eq!(manifest.len(), 4);
    let mut sizes = Vec::new();
    for e in &manifest {
        let name = e["file_name"].as_str().unwrap();
        let got = get_link(gw.port, e["download_url"].as_str().unwrap(), &[]);
        assert_eq!(got.status, 200, "{name}");
        let content = match name.strip_suffix(".br") {
            Some(_) => {
                let mut out = Vec::new();
                brotli::BrotliDecompress(&mut &got.body[..], &mut out).expect("brotli");
                assert!(got.body.len() * 10 <= out.len() * 9, "{name} pays");
                out
            }
            None => got.body.clone(),
        };
        let plain = name.trim_end_matches(".br");
        assert_eq!(content, std::fs::read(build.join(plain)).unwrap(), "{name}");
        assert_eq!(
            sha256_hex(&content),
            e["file_hash"].as_str().unwrap(),
            "{name}"
        );
        sizes.push((e.clone(), got.body.len() as u64));
    }
    let names: Vec<&str> = manifest
        .iter()
        .map(|e| e["file_name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"assets/big.js.br"), "{names:?}");
    assert!(names.contains(&"assets/noise.bin"), "{names:?}");

    // The device holds two of the files already; it asks about the other
    // two and one hash the gateway never had.
    let mut body = info(APP, &device_id(11), "builtin");
    body["version"] = json!("1.0.0");
    let lacking: Vec<Value> = sizes[2..].iter().map(|(e, _)| e.clone()).collect();
    let mut asked = lacking.clone();
    asked.push(
        json!({ "file_name": "x.js", "file_hash": "ab".repeat(32), "download_url": "http://x/y" }),
    );
    body["manifest"] = Value::Array(asked);
    let size = post(gw.port, "/updates/manifest_size", &body).json();
    let want: u64 = sizes[2..].iter().map(|(_, n)| n).sum();
    assert_eq!(size["totalSize"], want);
    assert_eq!(
        (size["knownFiles"].as_u64(), size["unknownFiles"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(size["files"][2]["error"], "size_unknown");
    // The variants are cached in the store.
    assert!(
        std::fs::read_dir(gw.node.store.join("cache/gateway/br"))
            .unwrap()
            .count()
            >= 4
    );
}

/// `sendStats` batches events in an array (once a second);
/// `sendRateLimitStatistic` posts `rate_limit_reached` alone, as an
/// object. Both show in `lanseed status --json` as the device's last
/// event, version and time, as unauthenticated gateway rows.
#[test]
fn stats_show_in_the_nodes_devices() {
    let gw = gateway(|p| {
        let b = p.build("v1", "one");
        p.pack(&b, APP, "1.0.0", &[]);
    });
    let (a, b) = (device_id(12), device_id(13));
    let event = |dev: &str, action: &str, version: &str, old: &str| {
        let mut e = info(APP, dev, version);
        e["version_name"] = json!(version);
        e["old_version_name"] = json!(old);
        e["action"] = json!(action);
        e["timestamp"] = json!(1_700_000_000_000u64);
        e
    };
    let batch = json!([
        event(&a, "set", "1.0.0", "builtin"),
        event(&a, "app_ready", "1.0.0", "")
    ]);
    let r = post(gw.port, "/stats", &batch);
    assert_eq!((r.status, r.json()), (200, json!({ "status": "ok" })));
    let mut alone = info(APP, &b, "builtin");
    alone["old_version_name"] = json!("");
    alone["action"] = json!("rate_limit_reached");
    assert_eq!(post(gw.port, "/stats", &alone).status, 200);
    assert_eq!(
        request(gw.port, "POST", "/stats", &[], b"{not json").status,
        400
    );

    let devices = wait_for(
        "the stats in the devices table",
        Duration::from_secs(10),
        || {
            let d = node_status(&gw.node.store)["devices"].as_array().cloned()?;
            (d.len() == 2).then_some(d)
        },
    );
    let row = |id: &str| {
        devices
            .iter()
            .find(|d| d["device_id"] == id)
            .unwrap()
            .clone()
    };
    let ra = row(&a);
    assert_eq!(ra["last_event"], "app_ready");
    assert_eq!(ra["status"], "success");
    assert_eq!(ra["version"], "1.0.0");
    assert_eq!(ra["reported_at"], 1_700_000_000u64);
    assert_eq!(
        (ra["source"].as_str(), ra["authenticated"].as_bool()),
        (Some("gateway"), Some(false))
    );
    assert!(
        ra["seq"].as_u64().unwrap() > 0,
        "the release is known: {ra}"
    );
    let rb = row(&b);
    assert_eq!(
        (rb["last_event"].as_str(), rb["version"].as_str()),
        (Some("rate_limit_reached"), Some("builtin"))
    );
}

/// A zip made by the real `@capgo/cli bundle zip` (tests/fixtures/capgo)
/// is packed and served: the served zip holds the same files.
#[test]
fn a_capgo_cli_zip_is_packed_and_served() {
    let gw = gateway(|p| {
        p.pack(
            &Path::new(FIXTURE).join("fixture.zip"),
            "com.example.fixture",
            "1.0.0",
            &[],
        );
    });
    let offer = gw
        .updates(&info("com.example.fixture", &device_id(14), "builtin"))
        .json();
    let zip = get_link(gw.port, offer["url"].as_str().unwrap(), &[]);
    assert_eq!(sha256_hex(&zip.body), offer["checksum"].as_str().unwrap());
    let files = unzip(&zip.body);
    assert!(files.iter().any(|(n, _)| n == "index.html"));
    for (name, bytes) in &files {
        let want = std::fs::read(Path::new(FIXTURE).join("dist").join(name)).unwrap();
        assert_eq!(bytes, &want, "{name}");
    }
}

/// `--tls-cert` and `--tls-key`: the gateway speaks HTTPS, and its links
/// are `https://` (checked with curl against the fixture's certificate).
#[test]
fn the_gateway_speaks_https_with_a_certificate() {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
    let gw = gateway_with(
        |p| {
            let b = p.build("v1", "one");
            p.pack(&b, APP, "1.0.0", &[]);
        },
        &["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)],
    );
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert", path_str(&cert)])
            .args(args)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let body = info(APP, &device_id(15), "builtin").to_string();
    let base = format!("https://127.0.0.1:{}", gw.port);
    let offer: Value = serde_json::from_slice(&curl(&[
        "-X",
        "POST",
        "-d",
        &body,
        &format!("{base}/updates"),
    ]))
    .unwrap();
    let url = offer["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/capgo/zip/")), "{url}");
    assert_eq!(
        sha256_hex(&curl(&[url])),
        offer["checksum"].as_str().unwrap()
    );
    // Plain HTTP on the TLS port gets no offer.
    let plain = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-d",
            &body,
            &format!("http://127.0.0.1:{}/updates", gw.port),
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("checksum"));
}

/// `--http` on `lanseed dev` and `lanseed device`: the dev loop's node
/// offers each build it publishes on channel `dev` to an app that asks for
/// that channel (`defaultChannel: "dev"` in the plugin's config); a device
/// agent's node answers too (it holds no release of another app).
#[test]
fn dev_and_device_nodes_have_the_gateway_too() {
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("dist");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("index.html"), "<!doctype html><p>dev 1").unwrap();
    let (port, key) = (free_port(), dir.path().join("dev.key"));
    let http = format!("127.0.0.1:{port}");
    let dev = NodeProc::start_here(
        "dev",
        &dir.path().join("dev-store"),
        &[
            path_str(&build),
            "--app",
            APP,
            "--key",
            path_str(&key),
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            &http,
        ],
    );
    dev.wait_log("capgo gateway listening", Duration::from_secs(20));
    let mut ask = info(APP, &device_id(16), "builtin");
    ask["defaultChannel"] = json!("dev");
    let first = wait_for(
        "the first dev build offered",
        Duration::from_secs(20),
        || {
            post(port, "/updates", &ask).json()["version"]
                .as_str()
                .map(str::to_owned)
        },
    );
    ask["version_name"] = json!(first);
    std::fs::write(build.join("index.html"), "<!doctype html><p>dev 2").unwrap();
    let second = wait_for(
        "the next dev build offered",
        Duration::from_secs(20),
        || {
            std::thread::sleep(Duration::from_millis(300)); // within the rate limit
            post(port, "/updates", &ask).json()["version"]
                .as_str()
                .map(str::to_owned)
        },
    );
    assert_ne!(first, second);
    // Without the dev channel the app is on production, where dev
    // publishes nothing.
    let v = post(port, "/updates", &info(APP, &device_id(17), "builtin")).json();
    assert_eq!(v["kind"], "up_to_date");

    let builtin = dir.path().join("builtin");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("index.html"), "<!doctype html>").unwrap();
    let trust = format!("{}.pub", keygen(dir.path()).display());
    let (serve, gw_port) = (free_port(), free_port());
    let (serve, http) = (format!("127.0.0.1:{serve}"), format!("127.0.0.1:{gw_port}"));
    let device = NodeProc::start_here(
        "device",
        &dir.path().join("device-store"),
        &[
            "--app",
            "com.example.agent",
            "--trust",
            &trust,
            "--builtin",
            path_str(&builtin),
            "--serve",
            &serve,
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            &http,
        ],
    );
    device.wait_log("capgo gateway listening", Duration::from_secs(20));
    let v = post(gw_port, "/updates", &info(APP, &device_id(18), "builtin")).json();
    assert_eq!(v["error"], "unknown_app");
}

/// Hosts that open connections and say nothing cost seconds and a
/// bounded number of descriptors: at most 64 connections from one address
/// (more are closed at once, others are still served), and a connection
/// that sends no request head within 10 s is closed.
#[test]
fn idle_connections_are_bounded_and_closed() {
    use std::io::Read;
    use std::net::TcpStream;
    let gw = gateway(|p| {
        p.pack(&p.build("v1", "one"), "com.example.idle", "1.0.0", &[]);
    });
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", gw.port)).unwrap())
        .collect();
    let start = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    // The 65th from the same address is closed at once.
    let mut extra = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(extra.read(&mut buf).expect("closed, not timed out"), 0);
    // Another address is still served.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            "127.0.0.2",
        ])
        .args([
            "-X",
            "POST",
            "-d",
            "{}",
            "-H",
            "content-type: application/json",
        ])
        .arg(format!("http://127.0.0.1:{}/updates", gw.port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");
    // The silent ones are closed after the header timeout.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(c.read(&mut buf).expect("closed by the gateway"), 0);
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "closed after {took:?}"
    );
    // And once they are gone, this address is served again.
    let r = gw.updates(&info("com.example.idle", &device_id(1), "builtin"));
    assert_eq!(r.status, 200);
}

/// Anyone on the LAN can post stats under made-up device ids: the node
/// takes them at a bounded rate (a burst of 2,000 events, then 200 a
/// second), answers `ok` to the rest, and keeps answering update checks.
#[test]
fn a_flood_of_stats_under_new_ids_is_taken_at_a_bounded_rate() {
    let gw = gateway(|p| {
        let b = p.build("v1", "one");
        p.pack(&b, APP, "1.0.0", &[]);
    });
    let start = std::time::Instant::now();
    for r in 0..30u64 {
        let batch: Vec<Value> = (0..200u64)
            .map(|i| {
                let mut e = info(APP, &device_id(100_000 + r * 1_000 + i), "1.0.0");
                e["action"] = json!("set");
                e["version_name"] = json!("1.0.0");
                e["old_version_name"] = json!("builtin");
                e["timestamp"] = json!(1_700_000_000_000u64);
                e
            })
            .collect();
        let resp = post(gw.port, "/stats", &Value::Array(batch));
        assert_eq!((resp.status, resp.json()), (200, json!({ "status": "ok" })));
    }
    let secs = start.elapsed().as_secs_f64();
    // The node's table: what the budget let through, once the queue drained.
    std::thread::sleep(Duration::from_millis(500));
    let rows = node_status(&gw.node.store)["devices"]
        .as_array()
        .map_or(0, Vec::len);
    let bound = 2_000.0 + 200.0 * (secs + 0.6);
    assert!(rows >= 2_000, "the burst is taken: {rows}");
    assert!(
        (rows as f64) <= bound,
        "{rows} rows after {secs:.2} s (bound {bound:.0})"
    );
    // Checks are still answered at once.
    let t = std::time::Instant::now();
    assert_eq!(gw.offered(&info(APP, &device_id(1), "builtin")), "1.0.0");
    assert!(t.elapsed() < Duration::from_secs(1));
}
