//! `lanseed-devbench`: the dev loop's latency end to end, in real headless
//! Chromium. On a namespace LAN, `lanseed dev` watches a 5 MB build
//! folder of 200 files on host 0, laid out as vite writes one (`assets/`,
//! `assets/img/`; `--deep`: over ~100 folders, which makes each install
//! create ~100 directories); three (`--devices`) `lanseed device --channel dev --apply
//! immediate` agents on hosts 1–3 each have the page open in Chromium. The
//! benchmark writes a one-file change into the build, `--changes` times,
//! and times the write to each page running the new bundle (its
//! `notifyAppReady`, which the page sends once it loaded and ran its
//! scripts). Prints p50 and p95 over every device and change, and the
//! median of each stage, from the nodes' logs:
//!
//! - debounce: the write → the dev loop starts packing (the folder quiet);
//! - pack: → the dev node's store holds the release;
//! - announce: → the device starts fetching;
//! - fetch: → the transfer is committed on the device;
//! - notice: → the device's updater starts installing it;
//! - install: → the bundle is set (materialised, switched);
//! - reload: → the open page asks for the new bundle's page;
//! - page: → the page loaded, ran its scripts and confirmed.
//!
//! ```text
//! cargo build --release -p lanseed -p lanseed-tests
//! ../shared/tools/isolated target/release/lanseed-devbench [--changes 20] [--devices 3] [--deep] [--keep]
//! ```
//!
//! Traffic stays inside the namespaces it makes.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lanseed_tests::devloop::DevLoop;
use lanseed_tests::net::{Browser, log_time_us, log_value};
use lanseed_tests::{generate_build, generate_vite_build, store_releases};

const APP: &str = "com.example.devbench";
/// The updater's line for a page's notifyAppReady that ended a trial (not
/// the rollback's "notifyAppReady not called in time").
const CONFIRMED: &str = "notifyAppReady: bundle confirmed";

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The first line of `log` containing every needle, after `from` (µs).
fn line_time(log: &str, needles: &[&str], from: i64) -> Option<i64> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter(|l| l.starts_with("20"))
        .map(log_time_us)
        .find(|t| *t >= from)
}

/// A log file read from where the last look stopped.
struct Tail {
    file: std::fs::File,
    partial: String,
}

impl Tail {
    fn new(path: &std::path::Path) -> Tail {
        Tail {
            file: std::fs::File::open(path).expect("the device's log"),
            partial: String::new(),
        }
    }

    /// The whole lines written since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        use std::io::Read;
        let mut buf = String::new();
        let _ = self.file.read_to_string(&mut buf);
        self.partial.push_str(&buf);
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        done.lines().map(lanseed_tests::net::strip_ansi).collect()
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let mut changes = 20usize;
    let mut keep = false;
    let mut deep = false;
    let mut devices_n = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--changes" => changes = args.next().context("--changes N")?.parse()?,
            "--devices" => devices_n = args.next().context("--devices N")?.parse()?,
            "--keep" => keep = true,
            "--deep" => deep = true,
            "--help" | "-h" => {
                println!(
                    "lanseed-devbench [--changes N] [--devices N] [--keep] [--deep]: see the source's docs \
                     (--keep leaves the build, stores and logs in place and prints where; \
                     --deep spreads the build over ~100 folders instead of vite's three)"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    println!("cpu: {}", lanseed_tests::cpu_model());
    let dir = tempfile::tempdir()?;
    if keep {
        println!("keeping {}", dir.path().display());
    }
    let build = dir.path().join("dist");
    if deep {
        generate_build(&build, 200, 5_000_000, 42);
    } else {
        generate_vite_build(&build, 200, 5_000_000, 42);
    }
    std::fs::write(
        build.join("index.html"),
        "<!doctype html><h1 id=v>devbench</h1><script src=\"/__lanseed/client.js\"></script>\
         <script src=\"msg.js\"></script><script>lanseed.notifyAppReady();</script>",
    )?;
    std::fs::write(build.join("msg.js"), "var msg = 0;")?;
    let DevLoop {
        lan,
        dev_store,
        dev,
        devices,
    } = DevLoop::start(
        dir.path(),
        &build,
        APP,
        devices_n,
        "<script src=\"/__lanseed/client.js\"></script>",
    );
    let _pages: Vec<Browser> = (1..=devices_n)
        .map(|i| Browser::open(&lan.hosts[i], "http://127.0.0.1:8787/"))
        .collect();
    let newest = || -> Option<(u64, String)> {
        store_releases(&dev_store)
            .iter()
            .map(|r| {
                (
                    r["seq"].as_u64().unwrap_or(0),
                    r["bundle_id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .max()
    };
    // Wait for the first build on every page.
    let wait_confirmed = |bundle: &str, since: i64| -> anyhow::Result<Vec<i64>> {
        let start = Instant::now();
        let mut times = vec![None; devices_n];
        while times.iter().any(Option::is_none) {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("bundle {bundle} did not reach every page in 60 s");
            }
            for (k, d) in devices.iter().enumerate() {
                if times[k].is_none() {
                    times[k] = line_time(
                        &d.log_text(),
                        &[CONFIRMED, &format!("bundle={bundle}")],
                        since,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(times.into_iter().map(|t| t.unwrap_or(0)).collect())
    };
    let start = Instant::now();
    let (mut seq, first) = loop {
        if let Some(n) = newest() {
            break n;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("no first release");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_confirmed(&first, 0)?;
    println!(
        "{devices_n} devices with the page open run the first build; {changes} one-file changes follow"
    );

    let mut total = Vec::new();
    let stages = [
        "debounce", "pack", "announce", "fetch", "notice", "install", "reload", "page",
    ];
    let mut per_stage: Vec<Vec<f64>> = vec![Vec::new(); stages.len()];
    let mut tails: Vec<Tail> = devices.iter().map(|d| Tail::new(&d.log)).collect();
    let mut current = first;
    for n in 1..=changes {
        std::thread::sleep(Duration::from_millis(700));
        for t in &mut tails {
            t.new_lines();
        }
        let t0 = now_us();
        std::fs::write(build.join("msg.js"), format!("var msg = {n};"))?;
        // While the change travels, the benchmark only reads the bytes
        // the devices' logs gained (no process spawned, no whole log
        // re-read): its own work must not slow the loop it times.
        let mut seen: Vec<Option<(i64, String)>> = vec![None; devices_n];
        while seen.iter().any(Option::is_none) {
            if now_us() - t0 > 60_000_000 {
                bail!("change {n} did not reach every page in 60 s");
            }
            for (k, t) in tails.iter_mut().enumerate() {
                if seen[k].is_some() {
                    continue;
                }
                seen[k] = t
                    .new_lines()
                    .iter()
                    .filter(|l| l.contains(CONFIRMED) && l.starts_with("20"))
                    .filter_map(|l| Some((log_time_us(l), log_value(l, "bundle")?.to_owned())))
                    .find(|(_, b)| *b != current);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (confirmed, bundles): (Vec<i64>, Vec<String>) = seen.into_iter().flatten().unzip();
        let bundle = bundles[0].clone();
        if bundles.iter().any(|b| *b != bundle) {
            bail!("change {n}: the pages confirmed different bundles: {bundles:?}");
        }
        match newest() {
            Some((s2, b)) if s2 > seq && b == bundle => seq = s2,
            other => bail!("change {n}: pages run {bundle}, the dev store's newest is {other:?}"),
        }
        current = bundle.clone();
        let dev_log = dev.log_text();
        let packing = line_time(&dev_log, &["packing"], t0).unwrap_or(t0);
        let stored = line_time(&dev_log, &["release in store", "release="], t0).unwrap_or(packing);
        let mut row = Vec::new();
        for (k, d) in devices.iter().enumerate() {
            let log = d.log_text();
            let fetching = line_time(&log, &["fetching release", &format!("bundle={bundle}")], t0);
            let done = line_time(&log, &["transfer done", &format!("bundle={bundle}")], t0);
            let installing = line_time(&log, &["installing", &format!("bundle={bundle}")], t0);
            let set = line_time(
                &log,
                &["bundle set, on trial", &format!("bundle={bundle}")],
                t0,
            );
            let served = line_time(&log, &["page served", &format!("bundle={bundle}")], t0);
            let ms = (confirmed[k] - t0) as f64 / 1e3;
            total.push(ms);
            row.push(format!("{ms:.0}"));
            if let (Some(f), Some(dn), Some(inst), Some(st), Some(pg)) =
                (fetching, done, installing, set, served)
            {
                let marks = [t0, packing, stored, f, dn, inst, st, pg, confirmed[k]];
                for (i, w) in marks.windows(2).enumerate() {
                    per_stage[i].push((w[1] - w[0]) as f64 / 1e3);
                }
            }
        }
        println!("change {n:>2}: {} ms", row.join(" / "));
    }
    let (p50, p95) = (percentile(&mut total, 0.5), percentile(&mut total, 0.95));
    println!(
        "write to page running the new bundle, {} samples: p50 {p50:.0} ms, p95 {p95:.0} ms (targets 250 / 500)",
        total.len()
    );
    for (name, mut v) in stages.iter().zip(per_stage) {
        if !v.is_empty() {
            println!("  {name:<9} median {:>6.1} ms", percentile(&mut v, 0.5));
        }
    }
    if keep {
        let _ = dir.keep();
    }
    Ok(())
}
