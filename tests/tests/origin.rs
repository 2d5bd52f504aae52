//! `lanseed seed --origin`: a site cache pulling from a `publish-static`
//! tree served over HTTP (the small server of
//! `lanseed_tests::origin_server`, on loopback). A first sync; a second
//! release that moves only its new blobs, then seeded to a LAN node; each
//! bad origin (a 404, a truncated blob, a tampered blob, a release signed
//! by another key) gets a clear error and nothing stored; a restart in the
//! middle of a download resumes it with `Range`; `--origin-rate` holds.
//!
//! Run inside `/work/shared/tools/isolated` (nodes listen on loopback).

use std::path::{Path, PathBuf};
use std::time::Duration;

use lanseed_tests::net::NodeProc;
use lanseed_tests::origin_server::OriginServer;
use lanseed_tests::{
    generate_build, keygen, node_status, path_str as s, run_ok, store_releases, verify_store,
    wait_for,
};

const APP: &str = "com.example.site";
const T: Duration = Duration::from_secs(30);

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    trust: String,
    build: PathBuf,
    /// The publisher's store.
    publisher: PathBuf,
    /// The static tree.
    www: PathBuf,
}

fn setup(files: usize, bytes: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    generate_build(&build, files, bytes, 15);
    Setup {
        publisher: dir.path().join("publisher"),
        www: dir.path().join("www"),
        dir,
        key,
        trust,
        build,
    }
}

impl Setup {
    /// Packs `version` of the build with `key` and publishes the tree.
    fn release_with(&self, version: &str, key: &Path, publisher: &Path, www: &Path) {
        std::fs::write(self.build.join("index.html"), format!("<h1>{version}</h1>")).unwrap();
        run_ok(&lanseed_tests::pack_args(
            &self.build,
            APP,
            version,
            key,
            publisher,
            &[],
        ));
        run_ok(&["publish-static", "--store", s(publisher), "--out", s(www)]);
    }

    fn release(&self, version: &str) {
        self.release_with(version, &self.key, &self.publisher, &self.www);
    }

    /// A site cache on a store of its own, polling `url` often.
    fn cache(&self, name: &str, url: &str) -> NodeProc {
        self.cache_with(name, url, &[])
    }

    /// [`Setup::cache`] with more flags.
    fn cache_with(&self, name: &str, url: &str, extra: &[&str]) -> NodeProc {
        let mut args = vec![
            "--origin",
            url,
            "--origin-every",
            "300ms",
            "--follow",
            APP,
            "--trust",
            &self.trust,
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ];
        args.extend_from_slice(extra);
        NodeProc::start_here("seed", &self.dir.path().join(name), &args)
    }
}

/// The versions the store holds.
fn versions(store: &Path) -> Vec<String> {
    store_releases(store)
        .iter()
        .map(|r| r["version"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Files under `dir`, recursively, with their sizes.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), e.metadata().unwrap().len()));
        }
    }
    out
}

/// The site cache's status section.
fn origin_status(store: &Path) -> serde_json::Value {
    node_status(store)["origin"].clone()
}

/// Waits for the cache's status to report an error containing `needle`.
fn wait_error(store: &Path, needle: &str) -> String {
    wait_for(&format!("an origin error with `{needle}`"), T, || {
        origin_status(store)["last_error"]
            .as_str()
            .filter(|e| e.contains(needle))
            .map(str::to_owned)
    })
}

#[test]
fn first_sync_then_a_second_release_moves_only_new_blobs_and_is_seeded_on_the_lan() {
    let t = setup(60, 3 << 20);
    t.release("1.0.0");
    let server = OriginServer::start(&t.www);
    let mut cache = t.cache("cache", &server.url());
    let store = cache.store.clone();
    wait_for("the first release", T, || {
        (versions(&store) == ["1.0.0"]).then_some(())
    });
    verify_store(&store, &t.trust);
    let first_blobs: u64 = files(&t.www.join("blobs")).iter().map(|f| f.1).sum();
    assert_eq!(
        server.blob_body_bytes(),
        first_blobs,
        "the first sync moves each blob once, as the origin stores it"
    );
    let status = wait_for("a good poll", T, || {
        let o = origin_status(&store);
        (o["last_result"] == "up to date" || o["last_result"] == "index.json not modified")
            .then_some(o)
    });
    assert_eq!(status["url"], server.url());
    assert_eq!(status["blobs_pending"], 0);
    assert_eq!(status["releases_added"], 1);
    assert!(status["bytes_fetched"].as_u64().unwrap() >= first_blobs);
    assert!(status["last_error"].is_null());
    let text = String::from_utf8(run_ok(&["status", "--store", s(&store)]).stdout).unwrap();
    assert!(text.contains(&format!("origin {}", server.url())), "{text}");

    // Polls of an unchanged origin are answered 304.
    wait_for("a conditional poll answered 304", T, || {
        server
            .served()
            .iter()
            .any(|r| r.path == "index.json" && r.status == 304)
            .then_some(())
    });

    // A second release: a few files change.
    let before: Vec<PathBuf> = files(&t.www.join("blobs"))
        .into_iter()
        .map(|f| f.0)
        .collect();
    for (i, (p, _)) in files(&t.build.join("assets")).iter().take(5).enumerate() {
        std::fs::write(p, format!("changed {i} ").repeat(2000)).unwrap();
    }
    t.release("1.1.0");
    let new_blobs: u64 = files(&t.www.join("blobs"))
        .iter()
        .filter(|f| !before.contains(&f.0))
        .map(|f| f.1)
        .sum();
    assert!(new_blobs > 0);
    let served_before = server.blob_body_bytes();
    wait_for("the second release", T, || {
        versions(&store).contains(&"1.1.0".to_owned()).then_some(())
    });
    verify_store(&store, &t.trust);
    assert_eq!(
        server.blob_body_bytes() - served_before,
        new_blobs,
        "the second release moves exactly its new blobs"
    );

    // A LAN node with no origin gets it from the cache.
    let status = node_status(&store);
    let addr = format!(
        "{}/p2p/{}",
        status["listen"][0].as_str().unwrap(),
        status["peer_id"].as_str().unwrap()
    );
    let device = NodeProc::start_here(
        "seed",
        &t.dir.path().join("device"),
        &[
            "--follow",
            APP,
            "--trust",
            &t.trust,
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--peer",
            &addr,
        ],
    );
    wait_for("the LAN node to have 1.1.0", T, || {
        versions(&device.store)
            .contains(&"1.1.0".to_owned())
            .then_some(())
    });
    verify_store(&device.store, &t.trust);
    assert!(cache.is_running());
}

/// A copy of the good tree, spoiled by `spoil`, served; the cache's error
/// must contain `needle` and its store hold nothing.
fn bad_origin(t: &Setup, name: &str, needle: &str, spoil: impl FnOnce(&Path)) -> String {
    let www = t.dir.path().join(format!("www-{name}"));
    lanseed_tests::copy_tree(&t.www, &www);
    spoil(&www);
    let server = OriginServer::start(&www);
    let cache = t.cache(name, &server.url());
    let error = wait_error(&cache.store, needle);
    eprintln!("{name}: {error}");
    assert!(
        error.starts_with("origin: "),
        "a one-line error that names its source: {error}"
    );
    assert!(
        versions(&cache.store).is_empty(),
        "{name}: nothing committed"
    );
    assert!(
        files(&cache.store.join("blobs")).is_empty(),
        "{name}: no blob stored"
    );
    assert!(
        !cache
            .store
            .join("manifests")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "{name}: no manifest stored"
    );
    error
}

/// The largest blob file of the tree.
fn largest_blob(www: &Path, gzip: bool) -> PathBuf {
    files(&www.join("blobs"))
        .into_iter()
        .filter(|f| f.0.to_string_lossy().ends_with(".gz") == gzip)
        .max_by_key(|f| f.1)
        .expect("a blob")
        .0
}

#[test]
fn a_bad_origin_gets_a_clear_error_and_nothing_is_stored() {
    let t = setup(30, 1 << 20);
    t.release("1.0.0");

    let e = bad_origin(&t, "missing", "returned 404", |www| {
        std::fs::remove_file(largest_blob(www, false)).unwrap();
    });
    assert!(e.contains("/blobs/"), "{e}");

    let e = bad_origin(&t, "truncated", "bytes, the manifest says", |www| {
        let p = largest_blob(www, false);
        let data = std::fs::read(&p).unwrap();
        std::fs::write(&p, &data[..data.len() / 2]).unwrap();
    });
    assert!(e.contains("nothing stored"), "{e}");

    bad_origin(&t, "truncated-gz", "gzip", |www| {
        let p = largest_blob(www, true);
        let data = std::fs::read(&p).unwrap();
        std::fs::write(&p, &data[..data.len() / 2]).unwrap();
    });

    bad_origin(&t, "tampered", "does not match its BLAKE3 hash", |www| {
        let p = largest_blob(www, false);
        let mut data = std::fs::read(&p).unwrap();
        let at = data.len() / 3;
        data[at] ^= 0x20;
        std::fs::write(&p, &data).unwrap();
    });

    // The same app signed by a key the cache does not trust.
    let stranger = t.dir.path().join("stranger-key");
    std::fs::create_dir_all(&stranger).unwrap();
    let other_key = keygen(&stranger);
    let other_www = t.dir.path().join("www-stranger-src");
    t.release_with(
        "2.0.0",
        &other_key,
        &t.dir.path().join("stranger-store"),
        &other_www,
    );
    let e = bad_origin(&t, "stranger", "is not trusted", |www| {
        std::fs::remove_dir_all(www).unwrap();
        lanseed_tests::copy_tree(&other_www, www);
    });
    assert!(e.contains("releases/"), "{e}");
}

#[test]
fn a_restart_in_the_middle_of_a_download_resumes_it() {
    let t = setup(10, 200_000);
    let media = t.build.join("media");
    std::fs::create_dir_all(&media).unwrap();
    lanseed_tests::generate_media(&media, 1, 3 << 20, 9);
    t.release("1.0.0");
    let big = largest_blob(&t.www, false);
    let big_len = std::fs::metadata(&big).unwrap().len();
    let big_rel = big
        .strip_prefix(&t.www)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let cut = big_len / 3;

    let server = OriginServer::start(&t.www);
    server.cut_blobs_after(Some(cut));
    let mut cache = t.cache("cache", &server.url());
    let store = cache.store.clone();
    wait_for("the download to be cut", T, || {
        server
            .served()
            .iter()
            .any(|r| r.path == big_rel && r.body_bytes == cut)
            .then_some(())
    });
    wait_error(&store, "failed");
    cache.kill9();
    let partial = store.join("partial-origin").join(big.file_name().unwrap());
    assert_eq!(
        std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0),
        cut,
        "what arrived is kept"
    );
    assert!(versions(&store).is_empty());

    server.cut_blobs_after(None);
    let cache = t.cache("cache", &server.url());
    wait_for("the release after the restart", T, || {
        (versions(&cache.store) == ["1.0.0"]).then_some(())
    });
    verify_store(&cache.store, &t.trust);
    let asks: Vec<_> = server
        .served()
        .into_iter()
        .filter(|r| r.path == big_rel)
        .collect();
    let last = asks.last().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={cut}-").as_str()),
        "{asks:?}"
    );
    assert_eq!(last.status, 206);
    assert_eq!(
        asks.iter().map(|r| r.body_bytes).sum::<u64>(),
        big_len,
        "every byte of the big blob crossed once: {asks:?}"
    );
    let all_blobs: u64 = files(&t.www.join("blobs")).iter().map(|f| f.1).sum();
    assert_eq!(
        server.blob_body_bytes(),
        all_blobs,
        "blobs finished before the restart were not fetched again"
    );
    assert!(
        !store.join("partial-origin").exists(),
        "the partial folder is emptied once nothing is pending"
    );
}

#[test]
fn the_origin_rate_caps_the_download() {
    let t = setup(4, 20_000);
    let media = t.build.join("media");
    std::fs::create_dir_all(&media).unwrap();
    lanseed_tests::generate_media(&media, 1, 1_500_000, 5);
    t.release("1.0.0");
    let server = OriginServer::start(&t.www);
    let rate = 500_000.0;
    let started = std::time::Instant::now();
    let cache = t.cache_with("cache", &server.url(), &["--origin-rate", "500K"]);
    wait_for("the release", T, || {
        (versions(&cache.store) == ["1.0.0"]).then_some(())
    });
    let took = started.elapsed().as_secs_f64();
    let bytes = server.blob_body_bytes() as f64;
    assert!(
        took >= 0.8 * bytes / rate,
        "{bytes} bytes in {took:.2} s: faster than 500 KB/s"
    );
}

#[test]
fn a_bad_release_does_not_hold_back_the_others() {
    let t = setup(8, 100_000);
    t.release("1.0.0");
    // The same origin also lists a beta signed by a key nobody trusts.
    let stranger = t.dir.path().join("stranger-key");
    std::fs::create_dir_all(&stranger).unwrap();
    let other_key = keygen(&stranger);
    std::fs::write(t.build.join("index.html"), "<h1>beta</h1>").unwrap();
    run_ok(&lanseed_tests::pack_args(
        &t.build,
        APP,
        "2.0.0-beta.1",
        &other_key,
        &t.publisher,
        &["--channel", "beta"],
    ));
    run_ok(&[
        "publish-static",
        "--store",
        s(&t.publisher),
        "--out",
        s(&t.www),
    ]);
    let server = OriginServer::start(&t.www);
    let cache = t.cache("cache", &server.url());
    let error = wait_error(&cache.store, "is not trusted");
    assert!(error.contains("2.0.0-beta.1 (beta)"), "{error}");
    wait_for("the trusted release", T, || {
        (versions(&cache.store) == ["1.0.0"]).then_some(())
    });
    verify_store(&cache.store, &t.trust);
}
