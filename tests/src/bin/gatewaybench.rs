//! `lanseed-gatewaybench`: many Capacitor apps checking in with one
//! node's Capgo gateway at once. A `lanseed seed --http` node on loopback
//! holds one release of a generated web build (200 files, 5 MB); the
//! benchmark starts `--devices` threads (200 by default), each a device
//! with an id of its own, and at one instant each sends the plugin's
//! `POST /updates` (the body of plugin 8.51's `getLatest`). Three rounds:
//!
//! - cold: fired the moment the node is up, while it makes the release's
//!   zip (which it starts as soon as it holds the release): every request
//!   waits on that one build;
//! - warm: the same devices checking again;
//! - download: every device downloading the zip at once.
//!
//! Every answer is checked (the version offered, the checksum; each
//! downloaded zip's SHA-256 against it). Prints p50 and p99 latency per
//! round (connect to last byte) and the node's resident memory (`VmRSS`
//! now, `VmHWM` peak) from `/proc`.
//!
//! ```text
//! cargo build --release -p lanseed -p lanseed-tests
//! ../shared/tools/isolated target/release/lanseed-gatewaybench [--devices 200]
//! ```
//!
//! Traffic goes to loopback only.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lanseed_tests::capgo::{
    Resp, device_id, device_ip, get_link, get_link_from, info, request_from, sha256_hex,
};
use lanseed_tests::net::NodeProc;
use lanseed_tests::{free_port, generate_build, json, keygen, pack_args, run_ok};

const APP: &str = "com.example.gatewaybench";

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Runs `each(i)` on `n` threads released at one instant; returns each
/// one's latency (ms) and answer.
fn at_once<T: Send + 'static>(
    n: usize,
    each: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<(f64, T)> {
    let barrier = Arc::new(Barrier::new(n));
    let each = Arc::new(each);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, each) = (barrier.clone(), each.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let out = each(i);
                    (start.elapsed().as_secs_f64() * 1e3, out)
                })
                .expect("spawn a device thread")
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a device thread"))
        .collect()
}

fn report(name: &str, results: &[(f64, bool)], node: &NodeProc) -> anyhow::Result<()> {
    let bad = results.iter().filter(|(_, ok)| !ok).count();
    if bad > 0 {
        bail!("{name}: {bad} of {} answers were wrong", results.len());
    }
    let mut ms: Vec<f64> = results.iter().map(|(t, _)| *t).collect();
    let (rss, hwm) = node.rss();
    println!(
        "{name:<9} {} devices, all answers right: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; node RSS {:.1} MiB (peak {:.1} MiB)",
        ms.len(),
        percentile(&mut ms, 0.50),
        percentile(&mut ms, 0.99),
        percentile(&mut ms, 1.0),
        rss as f64 / 1048576.0,
        hwm as f64 / 1048576.0,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut devices = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--devices" => devices = args.next().context("--devices N")?.parse()?,
            "--help" | "-h" => {
                println!("lanseed-gatewaybench [--devices N]: see the source's docs");
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    println!("cpu: {}", lanseed_tests::cpu_model());
    let dir = tempfile::tempdir()?;
    let build = dir.path().join("dist");
    generate_build(&build, 200, 5_000_000, 42);
    let key = keygen(dir.path());
    let store = dir.path().join("store");
    let packed = json(&run_ok(&pack_args(
        &build,
        APP,
        "1.0.0",
        &key,
        &store,
        &["--json"],
    )));
    let version = packed["version"]
        .as_str()
        .context("pack --json")?
        .to_owned();
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let node = NodeProc::start_here(
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
    node.wait_log("capgo gateway listening", Duration::from_secs(20));
    let (rss, _) = node.rss();
    println!("idle      node RSS {:.1} MiB", rss as f64 / 1048576.0);

    let check = move |i: usize| -> Resp {
        let body = info(APP, &device_id(i as u64), "builtin").to_string();
        request_from(
            Some(device_ip(i)),
            port,
            "POST",
            "/updates",
            &[],
            body.as_bytes(),
        )
    };
    let answers = at_once(devices, check);
    let first = answers[0].1.json();
    let checksum = first["checksum"].as_str().context("an offer")?.to_owned();
    let url = first["url"].as_str().context("an offer")?.to_owned();
    let right = |r: &Resp| {
        r.status == 200 && {
            let v = r.json();
            v["version"] == version.as_str() && v["checksum"] == checksum.as_str()
        }
    };
    let graded: Vec<(f64, bool)> = answers.iter().map(|(t, r)| (*t, right(r))).collect();
    report("cold", &graded, &node)?;

    let answers = at_once(devices, check);
    let graded: Vec<(f64, bool)> = answers.iter().map(|(t, r)| (*t, right(r))).collect();
    report("warm", &graded, &node)?;

    let zip = get_link(port, &url, &[]);
    println!(
        "zip       {:.2} MB ({} files in the bundle)",
        zip.body.len() as f64 / 1e6,
        200
    );
    let want = checksum.clone();
    let answers = at_once(devices, move |i| {
        let r = get_link_from(Some(device_ip(i)), port, &url, &[]);
        r.status == 200 && sha256_hex(&r.body) == want
    });
    report("download", &answers, &node)?;
    Ok(())
}
