//! `lanseed-originbench`: benchmark 2 of issue 15, a site behind a slow
//! uplink. nginx (Debian's `nginx-light`) serves a `publish-static` tree
//! on host 0 of a test LAN, whose link is capped at 10 Mbit/s (the WAN);
//! a site cache (`lanseed seed --origin URL --follow APP`) on host 1 and
//! N devices (`lanseed seed --follow APP`, finding the cache over mDNS) on
//! hosts 2.. sit on 100 Mbit/s links. For a first release and a second
//! one, it prints the bundle's size, the compressed size of the new blobs
//! (one copy, as the origin stores them), the bytes host 0 sent (frames,
//! headers included, as the kernel counts them on its interface), their
//! ratio (target: at most 1.05, whatever N) and the time until every
//! device holds the release. "meta B" is what the release added to the
//! tree besides blobs (signed record, manifest, file list) plus the whole
//! new `index.json`: the metadata the cache fetches once.
//!
//! ```text
//! cargo build -p lanseed -p lanseed-tests --bin lanseed-originbench
//! /work/shared/tools/isolated target/debug/lanseed-originbench [--devices 4,16] [--mb 12] [--files 150]
//! ```
//!
//! Needs root (namespaces, tc) and `nginx` on the PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lanseed_tests::net::{Lan, NodeProc};
use lanseed_tests::{Rng, generate_build, keygen, path_str as s, run_ok, store_releases};

const APP: &str = "com.example.site";
/// The WAN link, Mbit/s.
const WAN_MBIT: u32 = 10;
/// The LAN links, Mbit/s.
const LAN_MBIT: u32 = 100;
/// The target ratio of WAN bytes to one compressed copy of the new blobs.
const TARGET: f64 = 1.05;
/// Longest a release may take to reach every device.
const DEADLINE: Duration = Duration::from_secs(600);

struct Args {
    devices: Vec<usize>,
    mb: u64,
    files: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        devices: vec![4, 16],
        mb: 12,
        files: 150,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--devices" => {
                a.devices = value()?
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--mb" => a.mb = value()?.parse()?,
            "--files" => a.files = value()?.parse()?,
            "-h" | "--help" => {
                println!("usage: lanseed-originbench [--devices 4,16] [--mb 12] [--files 150]");
                std::process::exit(0);
            }
            _ => bail!("unknown flag {flag} (try --help)"),
        }
    }
    if a.mb < 10 {
        bail!("--mb must be at least 10 (the benchmark's bundle is at least 10 MB)");
    }
    Ok(a)
}

/// nginx serving `root` on `addr:8080` inside host 0; stopped on drop.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(lan: &Lan, root: &Path, prefix: &Path) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(prefix)?;
        let conf = prefix.join("nginx.conf");
        let p = prefix.display();
        std::fs::write(
            &conf,
            format!(
                "user root;\nworker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\n\
                 error_log {p}/error.log warn;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log {p}/access.log;\n  sendfile on;\n  tcp_nopush on;\n\
                 default_type application/octet-stream;\n  types {{ application/json json; }}\n\
                 server {{ listen {}:8080; root {}; etag on; }}\n}}\n",
                lan.addrs[0],
                root.display()
            ),
        )?;
        let child = lan.hosts[0]
            .command(Path::new("nginx"))
            .args(["-c", s(&conf), "-p", s(prefix), "-e"])
            .arg(prefix.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nginx (apt-get install nginx-light)")?;
        let n = Nginx { child };
        let start = Instant::now();
        while !prefix.join("nginx.pid").is_file() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "nginx did not start: {}",
                    std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers before it exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Files of the tree (but `index.json`) and their sizes.
fn tree_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let e = e.unwrap();
        if e.path().is_dir() {
            out.extend(tree_files(&e.path()));
        } else if e.file_name() != "index.json" {
            out.push((e.path(), e.metadata().unwrap().len()));
        }
    }
    out
}

/// What a release added to the tree: its blobs' bytes as stored, and the
/// bytes of its metadata (signed record, manifest, file list, and the
/// whole new `index.json`).
struct Added {
    blobs: u64,
    meta: u64,
}

/// Packs `version` of `build` and publishes the tree.
fn release(build: &Path, version: &str, key: &Path, publisher: &Path, www: &Path) -> Added {
    let before: Vec<PathBuf> = tree_files(www).into_iter().map(|b| b.0).collect();
    std::fs::write(build.join("index.html"), format!("<h1>{version}</h1>")).unwrap();
    run_ok(&lanseed_tests::pack_args(
        build,
        APP,
        version,
        key,
        publisher,
        &[],
    ));
    run_ok(&["publish-static", "--store", s(publisher), "--out", s(www)]);
    let new: Vec<(PathBuf, u64)> = tree_files(www)
        .into_iter()
        .filter(|b| !before.contains(&b.0))
        .collect();
    let blobs_dir = www.join("blobs");
    let sum = |blobs: bool| -> u64 {
        new.iter()
            .filter(|f| f.0.starts_with(&blobs_dir) == blobs)
            .map(|f| f.1)
            .sum()
    };
    let index = std::fs::metadata(www.join("index.json")).unwrap().len();
    Added {
        blobs: sum(true),
        meta: sum(false) + index,
    }
}

/// Changes about a quarter of the build's files (same sizes).
fn change_build(build: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut files = Vec::new();
    let mut stack = vec![build.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    for p in &files {
        if rng.below(4) != 0 {
            continue;
        }
        let mut data = std::fs::read(p).unwrap();
        for i in (0..data.len()).step_by(97) {
            data[i] = b'a' + (rng.below(26) as u8);
        }
        std::fs::write(p, data).unwrap();
    }
}

/// Bytes host 0 sent: what came down the WAN link.
fn wan_sent(lan: &Lan) -> u64 {
    lan.bytes(0).1
}

/// Waits until every store holds `version`; returns the time taken.
fn wait_all(stores: &[PathBuf], version: &str, since: Instant) -> anyhow::Result<Duration> {
    let mut left: Vec<&PathBuf> = stores.iter().collect();
    while !left.is_empty() {
        if since.elapsed() > DEADLINE {
            bail!("{} devices lack {version} after {DEADLINE:?}", left.len());
        }
        left.retain(|st| {
            !store_releases(st)
                .iter()
                .any(|r| r["version"].as_str() == Some(version))
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(since.elapsed())
}

struct Row {
    n: usize,
    release: &'static str,
    bundle: u64,
    new_blobs: u64,
    meta: u64,
    wan: u64,
    time: Duration,
}

fn run(args: &Args, n: usize) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    generate_build(&build, args.files, args.mb << 20, 21);
    let bundle: u64 = lanseed_tests::listing(&build).iter().map(|f| f.1).sum();
    let publisher = dir.path().join("publisher");
    let www = dir.path().join("www");
    let new1 = release(&build, "1.0.0", &key, &publisher, &www);

    let lan = Lan::new(n + 2);
    lan.shape(0, WAN_MBIT);
    for i in 1..n + 2 {
        lan.shape(i, LAN_MBIT);
    }
    let _nginx = Nginx::start(&lan, &www, &dir.path().join("nginx"))?;
    let url = format!("http://{}:8080/", lan.addrs[0]);
    let follow = ["--follow", APP, "--trust", trust.as_str()];
    let mut devices = Vec::new();
    for i in 0..n {
        let store = dir.path().join(format!("device-{i}"));
        devices.push(NodeProc::start(&lan.hosts[i + 2], &store, &follow));
    }
    let stores: Vec<PathBuf> = devices.iter().map(|d| d.store.clone()).collect();

    let wan0 = wan_sent(&lan);
    let started = Instant::now();
    let mut cache_args = vec!["--origin", url.as_str(), "--origin-every", "1s"];
    cache_args.extend_from_slice(&follow);
    let cache = NodeProc::start(&lan.hosts[1], &dir.path().join("cache"), &cache_args);
    let time1 = wait_all(&stores, "1.0.0", started)?;
    let wan1 = wan_sent(&lan) - wan0;

    change_build(&build, 77);
    let bundle2: u64 = lanseed_tests::listing(&build).iter().map(|f| f.1).sum();
    let wan0 = wan_sent(&lan);
    let started = Instant::now();
    let new2 = release(&build, "1.1.0", &key, &publisher, &www);
    let time2 = wait_all(&stores, "1.1.0", started)?;
    let wan2 = wan_sent(&lan) - wan0;
    drop(cache);
    drop(devices);
    Ok(vec![
        Row {
            n,
            release: "first",
            bundle,
            new_blobs: new1.blobs,
            meta: new1.meta,
            wan: wan1,
            time: time1,
        },
        Row {
            n,
            release: "second",
            bundle: bundle2,
            new_blobs: new2.blobs,
            meta: new2.meta,
            wan: wan2,
            time: time2,
        },
    ])
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!(
        "site behind a slow uplink: origin nginx at {WAN_MBIT} Mbit/s, cache and devices at {LAN_MBIT} Mbit/s; \
         bundle {} MB in {} files; target WAN bytes <= {TARGET} x compressed new blobs",
        args.mb, args.files
    );
    println!(
        "{:>3} {:>7} {:>12} {:>16} {:>8} {:>12} {:>7} {:>18}",
        "N",
        "release",
        "bundle B",
        "compressed new B",
        "meta B",
        "WAN B",
        "ratio",
        "time to all (s)"
    );
    let mut ok = true;
    for &n in &args.devices {
        for r in run(&args, n)? {
            let ratio = r.wan as f64 / r.new_blobs.max(1) as f64;
            ok &= ratio <= TARGET;
            println!(
                "{:>3} {:>7} {:>12} {:>16} {:>8} {:>12} {:>7.3} {:>18.1}",
                r.n,
                r.release,
                r.bundle,
                r.new_blobs,
                r.meta,
                r.wan,
                ratio,
                r.time.as_secs_f64()
            );
        }
    }
    println!(
        "{}",
        if ok {
            "every ratio within the target".to_owned()
        } else {
            format!("a ratio is above the target of {TARGET}")
        }
    );
    Ok(())
}
