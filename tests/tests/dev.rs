//! `lanseed dev` end to end on a namespace LAN (the dev node on host 0,
//! two `lanseed device --channel dev --apply immediate` agents on hosts 1
//! and 2, finding each other over mDNS on the LAN's bridge): a saved file
//! reaches both devices and the page open on each (headless Chromium);
//! a one-file change moves little more than that file; a broken build is
//! reported and the next good one goes through; a build written the way
//! vite writes one (the folder emptied, the files written one by one,
//! `index.html` last) becomes exactly one release; the dev node's devices
//! table shows both devices on the new bundle.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lanseed_tests::devloop::DevLoop;
use lanseed_tests::net::{Browser, Lan, NodeProc};
use lanseed_tests::{json, node_status, run_ok, store_releases, wait_for};

const APP: &str = "com.example.devloop";
const T: Duration = Duration::from_secs(40);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Loop {
    dir: tempfile::TempDir,
    lan: Lan,
    build: PathBuf,
    dev_store: PathBuf,
    dev: NodeProc,
    devices: Vec<NodeProc>,
}

/// The page of a build: confirms itself, shows `text`.
fn page(text: &str) -> String {
    format!(
        "<!doctype html><html><body><h1 id=v>{text}</h1>\
         <script src=\"/__lanseed/client.js\"></script><script src=\"app.js\"></script></body></html>"
    )
}

/// A build folder: index.html, app.js (confirms) and `extra` files of
/// `size` bytes each under assets/.
fn write_build(build: &Path, text: &str, extra: usize, size: usize) {
    std::fs::create_dir_all(build.join("assets")).unwrap();
    std::fs::write(build.join("app.js"), "lanseed.notifyAppReady();").unwrap();
    for i in 0..extra {
        let body: String = (0..size)
            .map(|j| char::from(b'a' + ((i * 7 + j * 13 + j / 7) % 26) as u8))
            .collect();
        std::fs::write(build.join(format!("assets/chunk-{i}.js")), body).unwrap();
    }
    std::fs::write(build.join("index.html"), page(text)).unwrap();
}

fn start(extra_files: usize) -> Loop {
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("dist");
    write_build(&build, "one", extra_files, 50_000);
    let DevLoop {
        lan,
        dev_store,
        dev,
        devices,
    } = DevLoop::start(dir.path(), &build, APP, 2, &page("builtin"));
    Loop {
        dir,
        lan,
        build,
        dev_store,
        dev,
        devices,
    }
}

impl Loop {
    /// Waits until every device runs `bundle`, confirming it as its page
    /// would (a page open on the device confirms it too).
    fn wait_all(&self, bundle: &str) {
        for (k, d) in self.devices.iter().enumerate() {
            wait_for(&format!("{} on {bundle}", d.store.display()), T, || {
                let st = json(&run_ok(&["device", "list", "--store", s(&d.store)]));
                if st["current"]["bundle_id"] != bundle {
                    return None;
                }
                if st["current"]["status"] == "trial" {
                    self.confirm(k + 1, bundle);
                }
                (st["current"]["status"] == "success").then_some(())
            });
        }
    }

    /// notifyAppReady for `bundle` on host `i`'s device.
    fn confirm(&self, i: usize, bundle: &str) {
        use std::io::{Read, Write};
        let Ok(mut c) = self.lan.hosts[i].connect("127.0.0.1:8787".parse().unwrap()) else {
            return;
        };
        let body = format!("{{\"bundle\":\"{bundle}\"}}");
        let _ = write!(
            c,
            "POST /__lanseed/ready HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = c.read_to_end(&mut Vec::new());
    }

    /// The newest dev release's bundle id in the dev store.
    fn newest(&self) -> (u64, String) {
        store_releases(&self.dev_store)
            .iter()
            .map(|r| {
                (
                    r["seq"].as_u64().unwrap(),
                    r["bundle_id"].as_str().unwrap().to_owned(),
                )
            })
            .max()
            .unwrap()
    }

    /// Waits for a release newer than `seq`; returns its bundle id.
    fn next_release(&self, seq: u64) -> (u64, String) {
        wait_for("a new dev release", T, || {
            let n = self.newest();
            (n.0 > seq).then_some(n)
        })
    }
}

#[test]
fn a_saved_file_reaches_both_devices_their_pages_and_the_devices_table() {
    let l = start(3);
    let (seq1, v1) = wait_for("the first release", T, || {
        store_releases(&l.dev_store).first().map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["bundle_id"].as_str().unwrap().to_owned(),
            )
        })
    });
    l.wait_all(&v1);
    let _pages: Vec<Browser> = (1..3)
        .map(|i| Browser::open(&l.lan.hosts[i], "http://127.0.0.1:8787/"))
        .collect();
    for d in &l.devices {
        d.wait_log(&format!("page served bundle={v1}"), T);
    }
    // Save a file.
    let saved = Instant::now();
    std::fs::write(l.build.join("index.html"), page("two")).unwrap();
    let (_, v2) = l.next_release(seq1);
    l.wait_all(&v2);
    // The open page on each device reloaded onto the new bundle by itself.
    for d in &l.devices {
        d.wait_log(&format!("page served bundle={v2}"), T);
    }
    eprintln!(
        "save to both pages reloaded: {:.0} ms",
        saved.elapsed().as_secs_f64() * 1e3
    );
    // The dev node's devices table shows both on the new bundle, and its
    // log has each device's `set`.
    let st = wait_for("both devices in the dev node's table", T, || {
        let st = node_status(&l.dev_store);
        let on: Vec<String> = st["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["bundle_id"] == v2.as_str())
            .map(|d| d["device_id"].as_str().unwrap().to_owned())
            .collect();
        (on.len() == 2).then_some(st)
    });
    eprintln!("{}", st["devices"]);
    for i in 1..3 {
        l.dev.wait_log(&format!("phone-{i}: set"), T);
    }
}

#[test]
fn a_one_file_change_moves_little_more_than_that_file() {
    let l = start(60); // 60 files of 50 kB: a 3 MB build
    let (seq1, v1) = wait_for("the first release", T, || {
        store_releases(&l.dev_store).first().map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["bundle_id"].as_str().unwrap().to_owned(),
            )
        })
    });
    l.wait_all(&v1);
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<u64> = (1..3).map(|i| l.lan.bytes(i).0).collect();
    // One file changes.
    let changed: String = (0..50_000)
        .map(|j| char::from(b'a' + (j % 23) as u8))
        .collect();
    std::fs::write(l.build.join("assets/chunk-7.js"), &changed).unwrap();
    let (_, v2) = l.next_release(seq1);
    l.wait_all(&v2);
    let zstd_size = zstd::encode_all(changed.as_bytes(), 3).unwrap().len() as u64;
    let manifest = std::fs::metadata(l.dev_store.join("manifests").join(&v2))
        .unwrap()
        .len();
    let bound = zstd_size + manifest + 64 * 1024;
    for (k, i) in (1..3).enumerate() {
        let got = l.lan.bytes(i).0 - before[k];
        eprintln!(
            "device {i}: received {got} bytes for a one-file change (file {zstd_size} zstd, manifest {manifest}, bound {bound})"
        );
        assert!(got <= bound, "device {i} received {got} > {bound}");
    }
}

#[test]
fn a_broken_build_is_reported_and_the_next_good_one_goes_through() {
    let mut l = start(1);
    let (seq1, v1) = wait_for("the first release", T, || {
        store_releases(&l.dev_store).first().map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["bundle_id"].as_str().unwrap().to_owned(),
            )
        })
    });
    l.wait_all(&v1);
    // A link out of the build folder: refused, reported, nothing published.
    std::os::unix::fs::symlink("/etc/hostname", l.build.join("leak.txt")).unwrap();
    l.dev.wait_log("build not published", T);
    assert_eq!(l.newest().0, seq1);
    assert!(l.dev.is_running(), "the loop keeps running");
    // Fixed: the next build goes through.
    std::fs::remove_file(l.build.join("leak.txt")).unwrap();
    std::fs::write(l.build.join("index.html"), page("fixed")).unwrap();
    let (_, v2) = l.next_release(seq1);
    l.wait_all(&v2);
}

#[test]
fn a_build_written_like_vite_writes_it_is_one_release_of_the_whole_build() {
    let l = start(10);
    let (seq1, v1) = wait_for("the first release", T, || {
        store_releases(&l.dev_store).first().map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["bundle_id"].as_str().unwrap().to_owned(),
            )
        })
    });
    l.wait_all(&v1);
    // The folder emptied, then the files written one by one over 2 s,
    // index.html last.
    for e in std::fs::read_dir(&l.build).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::create_dir_all(l.build.join("assets")).unwrap();
    let files: Vec<(String, String)> = (0..10)
        .map(|i| {
            (
                format!("assets/chunk-{i}.js"),
                format!("/* v2 chunk {i} */ {}", "z".repeat(10_000 + i)),
            )
        })
        .chain([("app.js".to_owned(), "lanseed.notifyAppReady();".to_owned())])
        .collect();
    for (name, body) in &files {
        std::fs::write(l.build.join(name), body).unwrap();
        std::thread::sleep(Duration::from_millis(180));
    }
    std::fs::write(l.build.join("index.html"), page("vite")).unwrap();
    let (seq2, v2) = l.next_release(seq1);
    l.wait_all(&v2);
    std::thread::sleep(Duration::from_millis(1000));
    let releases = store_releases(&l.dev_store);
    let newer: Vec<_> = releases
        .iter()
        .filter(|r| r["seq"].as_u64().unwrap() > seq1)
        .collect();
    assert_eq!(newer.len(), 1, "exactly one release: {releases:?}");
    assert_eq!(l.newest().0, seq2);
    // Of the whole build: every file, index.html included.
    let manifest = lanseed_protocol::Store::open(&l.dev_store)
        .unwrap()
        .read_manifest(&v2.parse().unwrap())
        .unwrap();
    assert_eq!(manifest.files().len(), files.len() + 1);
    let _ = &l.dir;
}

#[test]
fn a_build_no_page_confirms_is_reported_as_update_fail_with_the_bundle_rolled_back_to() {
    // No browser here: nothing calls notifyAppReady, so each device's trial
    // of the first build runs out and it goes back to its builtin page.
    // The dev loop says so, per device (the report's last event is the
    // failure, not the reload that follows it).
    let l = start(1);
    let (_, v1) = wait_for("the first release", T, || {
        store_releases(&l.dev_store).first().map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["bundle_id"].as_str().unwrap().to_owned(),
            )
        })
    });
    for d in &l.devices {
        wait_for("the build on trial", T, || {
            let st = json(&run_ok(&["device", "list", "--store", s(&d.store)]));
            (st["current"]["bundle_id"] == v1.as_str()).then_some(())
        });
    }
    for i in 1..3 {
        let line = l.dev.wait_log(&format!("phone-{i}: update_fail"), T);
        assert!(line.contains("back on builtin"), "{line}");
    }
    let st = node_status(&l.dev_store);
    for d in st["devices"].as_array().unwrap() {
        assert_eq!(d["failed_bundle"], v1.as_str(), "{d}");
        assert_eq!(d["last_event"], "update_fail", "{d}");
    }
}
