//! `lanseed-fanout`: one publisher, N devices, every link capped both ways:
//! how long until the last device has the release, for lanseed and, in
//! the same run over the same links, for an HTTP update server (nginx)
//! and for BitTorrent (aria2c with opentracker).
//!
//! ```text
//! apt-get install nginx-light curl aria2 opentracker mktorrent
//! cargo build --release -p lanseed -p lanseed-tests
//! ../shared/tools/isolated target/release/lanseed-fanout --nodes 4,16 --mbit 50 --svg docs/fanout-scaling.svg
//! ```
//!
//! The workload is a generated web-like bundle of about 20 MB: 16 MB of
//! incompressible media and 4 MB of JS and CSS in 500 files.
//! - **lanseed**: a `lanseed seed` publisher and N `lanseed seed --follow`
//!   devices (`--agents`: `lanseed device` agents) on a bridge, mDNS on,
//!   started and meshed before the clock starts. The time runs from
//!   `lanseed pack` on the publisher's host to the last device's
//!   `transfer done` (its pieces verified, the release committed to its
//!   store; for an agent, its updater's `downloadComplete`), both read
//!   from the log timestamps.
//! - **nginx** serves the bundle's zip from the publisher's host; every
//!   device fetches it at once with curl and checks its SHA-256.
//! - **aria2**: the zip as a torrent of 1 MiB pieces (mktorrent),
//!   opentracker and a seeding aria2c on the publisher's host, an aria2c
//!   on every device, DHT and local peer discovery off.
//!
//! Making the zip and the torrent is not counted; `pack` is. Printed per
//! configuration: the fluid lower bound max(F/u_s, F/d, N·F/(u_s + Σu_i)),
//! each system's time to the last device (median of `--runs`), the
//! ratios, the CPU seconds of every process of each system and what share
//! of the machine's cores they kept busy, and the publisher's upload
//! multiple (bytes sent at its interface / bundle size). First, a plain
//! TCP check of the links: one nginx → curl transfer over a shaped link.
//!
//! Namespaces are named by the run's prefix and torn down on exit, panic
//! or a signal (`lanseed_tests::netrun`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use lanseed_tests::baseline::{self, Finished};
use lanseed_tests::net::{Lan, NodeProc, log_time_us};
use lanseed_tests::netrun::{self, Job};
use lanseed_tests::zipcraft::{Craft, craft_zip};
use lanseed_tests::{Rng, cpu_model, lanseed_bin, path_str};

const APP: &str = "com.example.fanout";
const VERSION: &str = "1.0.0";

/// The systems compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Lanseed,
    Nginx,
    Aria2,
}

impl System {
    const ALL: [System; 3] = [System::Lanseed, System::Nginx, System::Aria2];

    fn name(self) -> &'static str {
        match self {
            System::Lanseed => "lanseed",
            System::Nginx => "nginx",
            System::Aria2 => "aria2",
        }
    }

    fn parse(s: &str) -> anyhow::Result<System> {
        System::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .with_context(|| format!("--only takes lanseed, nginx or aria2, not {s}"))
    }
}

struct Args {
    nodes: Vec<usize>,
    /// The link rate for every configuration, else [`default_mbit`].
    mbit: Option<u32>,
    only: Option<System>,
    runs: usize,
    agents: bool,
    svg: Option<PathBuf>,
    dir: Option<PathBuf>,
    /// Where to keep each lanseed run's node logs.
    logs: Option<PathBuf>,
}

const USAGE: &str = "usage: lanseed-fanout [--nodes 4,16,48] [--mbit M] [--only lanseed|nginx|aria2] [--runs 1] [--agents] [--svg PATH] [--dir DIR] [--logs DIR]\n\
  --nodes: device counts, one configuration each\n\
  --mbit:  link rate of every host, both ways (default 50 Mbit/s, 10 from 32 devices on)\n\
  --agents: lanseed devices are `lanseed device` agents, not `seed --follow` nodes\n\
  --svg:   write the scaling plot (time to the last device against N) there\n\
  --dir:   where the stores and downloads go (default: the system's temporary folder)\n\
  --logs:  keep each lanseed run's node logs there (DIR/lanseed-N-runR/nodeI.log)";

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
    let mut it = args.into_iter();
    let mut a = Args {
        nodes: vec![4, 16, 48],
        mbit: None,
        only: None,
        runs: 1,
        agents: false,
        svg: None,
        dir: None,
        logs: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => {
                a.nodes = value()?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--nodes takes a list of counts, e.g. 4,16,48")?;
                if a.nodes.iter().any(|&n| n == 0 || n > 200) {
                    bail!("--nodes: each count from 1 to 200");
                }
            }
            "--mbit" => {
                let m: u32 = value()?.parse().context("--mbit")?;
                if !(1..=10_000).contains(&m) {
                    bail!("--mbit from 1 to 10000");
                }
                a.mbit = Some(m);
            }
            "--only" => a.only = Some(System::parse(&value()?)?),
            "--runs" => {
                a.runs = value()?.parse().context("--runs")?;
                if a.runs == 0 {
                    bail!("--runs at least 1");
                }
            }
            "--agents" => a.agents = true,
            "--svg" => a.svg = Some(value()?.into()),
            "--dir" => a.dir = Some(value()?.into()),
            "--logs" => a.logs = Some(value()?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    Ok(a)
}

/// The link rate of a configuration with `n` devices when `--mbit` is not
/// given: 50 Mbit/s, and 10 from 32 devices on, so that with every
/// process on two cores the links, not the cores, stay the limit.
fn default_mbit(n: usize) -> u32 {
    if n >= 32 { 10 } else { 50 }
}

/// The fluid lower bound of distributing `f` bytes from a server that
/// uploads `us` bytes/s to clients that download `d` bytes/s each and
/// upload `uploads[i]`: max(F/u_s, F/d, N·F/(u_s + Σu_i)).
fn fluid_bound(f: f64, us: f64, d: f64, uploads: &[f64]) -> f64 {
    let n = uploads.len() as f64;
    let total = us + uploads.iter().sum::<f64>();
    (f / us).max(f / d).max(n * f / total)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The generated bundle's layout: sizes of `count` text files adding up to
/// `total` bytes, spread like a real build (many small, a few large): a
/// power law, capped so no file exceeds a tenth of the total.
fn text_sizes(rng: &mut Rng, count: usize, total: u64) -> Vec<u64> {
    let raw: Vec<f64> = (0..count)
        .map(|_| {
            let u = (rng.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
            u.powf(-0.9).min(count as f64 / 10.0)
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    let mut sizes: Vec<u64> = raw
        .iter()
        .map(|w| ((w / sum) * total as f64) as u64)
        .collect();
    // The rounding's remainder goes to the first file.
    let short = total - sizes.iter().sum::<u64>();
    if let Some(first) = sizes.first_mut() {
        *first += short;
    }
    sizes
}

/// JS- or CSS-like text of `size` bytes (compresses as such text does).
fn text(rng: &mut Rng, size: u64, css: bool) -> Vec<u8> {
    const JS: [&str; 10] = [
        "function ",
        "return ",
        "const ",
        "let x = ",
        "{ ",
        "}; ",
        "\n",
        "value",
        "this.state",
        "=> ",
    ];
    const CSS: [&str; 8] = [
        ".btn ",
        "{ margin: 0; ",
        "padding: 4px; ",
        "color: #333; ",
        "}\n",
        "display: flex; ",
        ".card ",
        "font-size: 14px; ",
    ];
    let words: &[&str] = if css { &CSS } else { &JS };
    let mut out = Vec::with_capacity(size as usize + 24);
    while (out.len() as u64) < size {
        let w = words[rng.below(words.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        // A number now and then, as minified code has.
        out.extend_from_slice(rng.below(1000).to_string().as_bytes());
    }
    out.truncate(size as usize);
    out
}

/// What [`web_bundle`] made.
struct Bundle {
    /// Its files' bytes, all together (F).
    bytes: u64,
    files: usize,
    text_bytes: u64,
    text_files: usize,
}

/// Generates the web-like bundle under `dir`: `index.html`, 48 media files
/// of incompressible bytes (16 MB) and 500 JS and CSS files (4 MB).
fn web_bundle(dir: &Path, seed: u64) -> anyhow::Result<Bundle> {
    const MEDIA_FILES: usize = 48;
    const MEDIA_BYTES: u64 = 16_000_000;
    const TEXT_FILES: usize = 500;
    const TEXT_BYTES: u64 = 4_000_000;
    let media = dir.join("assets/media");
    std::fs::create_dir_all(&media)?;
    lanseed_tests::generate_media(&media, MEDIA_FILES, MEDIA_BYTES, seed);
    let mut rng = Rng::new(seed ^ 0x5eed);
    for (i, size) in text_sizes(&mut rng, TEXT_FILES, TEXT_BYTES)
        .into_iter()
        .enumerate()
    {
        let css = i % 4 == 3;
        let sub = dir.join(format!("assets/{}", ["js", "css"][usize::from(css)]));
        std::fs::create_dir_all(&sub)?;
        let name = format!("chunk-{i}.{}", ["js", "css"][usize::from(css)]);
        std::fs::write(sub.join(name), text(&mut rng, size, css))?;
    }
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>fan-out</title><script type=module src=\"assets/js/chunk-0.js\"></script>",
    )?;
    let list = lanseed_tests::listing(dir);
    let is_text = |p: &str| p.ends_with(".js") || p.ends_with(".css");
    Ok(Bundle {
        bytes: list.iter().map(|(_, n)| n).sum(),
        files: list.iter().filter(|(p, _)| !p.ends_with('/')).count(),
        text_bytes: list
            .iter()
            .filter(|(p, _)| is_text(p))
            .map(|(_, n)| n)
            .sum(),
        text_files: list.iter().filter(|(p, _)| is_text(p)).count(),
    })
}

/// The bundle as a zip (text deflated, media stored, as `zip` does).
fn zip_of(dir: &Path, out: &Path) -> anyhow::Result<u64> {
    let mut entries = Vec::new();
    for (name, _) in lanseed_tests::listing(dir) {
        if name.ends_with('/') {
            continue;
        }
        let data = std::fs::read(dir.join(&name))?;
        let mut e = Craft::file(&name, &data);
        e.deflate = !name.ends_with(".bin");
        entries.push(e);
    }
    let zip = craft_zip(&entries);
    std::fs::write(out, &zip)?;
    Ok(zip.len() as u64)
}

/// One system's run of one configuration.
#[derive(Clone, Copy, Debug)]
struct Measure {
    /// Seconds to the last device.
    secs: f64,
    /// CPU seconds of all its processes.
    cpu: f64,
    /// Bytes sent at the publisher's interface / bundle bytes.
    upload_multiple: f64,
}

/// Everything the runs share.
struct Setup {
    root: PathBuf,
    build: PathBuf,
    zip: PathBuf,
    key: PathBuf,
    trust: PathBuf,
    builtin: PathBuf,
    bundle: Bundle,
    agents: bool,
    logs: Option<PathBuf>,
}

/// A timeout for one system's fan-out: generous against the HTTP
/// server's N·F/u_s.
fn timeout_for(n: usize, f: f64, rate: f64) -> Duration {
    Duration::from_secs_f64(120.0 + 4.0 * (n as f64 + 1.0) * f / rate)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Peers connected to the node on `store` (0 when it cannot say).
fn connected_peers(store: &Path) -> usize {
    let out = lanseed_tests::lanseed()
        .args(["status", "--store", path_str(store), "--json"])
        .output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| {
            v["peers"]
                .as_array()
                .map(|p| p.iter().filter(|p| p["connected"] == true).count())
        })
        .unwrap_or(0)
}

/// The log line that says device `node` has the release.
fn done_line(node: &NodeProc, agents: bool) -> Option<String> {
    let text = node.log_text();
    let field = format!("version={VERSION}");
    text.lines()
        .find(|l| {
            if agents {
                l.contains("\"downloadComplete\"") && l.contains(VERSION)
            } else {
                l.contains("transfer done") && l.contains(&field)
            }
        })
        .map(str::to_owned)
}

fn run_lanseed(s: &Setup, n: usize, mbit: u32, run: usize) -> anyhow::Result<Measure> {
    let lan = Lan::new(n + 1);
    lan.shape_all(mbit);
    let dir = s.root.join(format!("lanseed-{n}"));
    std::fs::create_dir_all(&dir)?;
    let store = |i: usize| dir.join(format!("node{i}"));
    let trust = path_str(&s.trust);
    // LANSEED_LOG sets the nodes' log filter (with --logs, to look into a run).
    let level = std::env::var("LANSEED_LOG").unwrap_or_else(|_| "lanseed=info".into());
    let level = level.as_str();
    let publisher = NodeProc::start_cmd_logging(&lan.hosts[0], "seed", &store(0), &[], level);
    let builtin = path_str(&s.builtin);
    let devices: Vec<NodeProc> = (1..=n)
        .map(|i| {
            if s.agents {
                let args = [
                    "--app",
                    APP,
                    "--trust",
                    trust,
                    "--builtin",
                    builtin,
                    "--serve",
                    "127.0.0.1:8787",
                ];
                NodeProc::start_cmd_logging(&lan.hosts[i], "device", &store(i), &args, level)
            } else {
                let args = ["--follow", APP, "--trust", trust];
                NodeProc::start_cmd_logging(&lan.hosts[i], "seed", &store(i), &args, level)
            }
        })
        .collect();
    // Everyone has found everyone (mDNS) before the release exists, as on
    // a LAN whose devices run all day.
    let mesh = Instant::now();
    let meshed = netrun::poll(Duration::from_secs(60), Duration::from_millis(500), || {
        (0..=n)
            .all(|i| connected_peers(&store(i)) >= n)
            .then_some(())
    });
    if meshed.is_none() {
        let least = (0..=n).map(|i| connected_peers(&store(i))).min();
        eprintln!(
            "  warning: no full mesh after 60 s (least connected node: {least:?} of {n} peers); going on"
        );
    } else {
        eprintln!(
            "  lanseed: full mesh in {:.1} s",
            mesh.elapsed().as_secs_f64()
        );
    }
    let nodes: Vec<&NodeProc> = std::iter::once(&publisher).chain(&devices).collect();
    let cpu0: Vec<f64> = nodes
        .iter()
        .map(|p| netrun::tree_cpu_secs(p.pid()).unwrap_or(0.0))
        .collect();
    let sent0 = lan.bytes(0).1;
    let t0 = now_us();
    let mut cmd = lan.hosts[0].command(&lanseed_bin());
    cmd.args([
        "pack",
        path_str(&s.build),
        "--app",
        APP,
        "--version",
        VERSION,
        "--key",
        path_str(&s.key),
        "--store",
        path_str(&store(0)),
    ])
    .env("RUST_LOG", "warn")
    .stderr(std::process::Stdio::piped());
    let pack_start = Instant::now();
    let pack = Job::run(&mut cmd)?;
    let pack_secs = pack_start.elapsed().as_secs_f64();
    if !pack.output.status.success() {
        bail!(
            "lanseed pack failed: {}",
            String::from_utf8_lossy(&pack.output.stderr)
        );
    }
    let f = s.bundle.bytes as f64;
    let rate = f64::from(mbit) * 1e6 / 8.0;
    let timeout = timeout_for(n, f, rate);
    let start = Instant::now();
    let mut done: Vec<Option<i64>> = vec![None; n];
    while done.iter().any(Option::is_none) {
        if start.elapsed() > timeout {
            let have = done.iter().flatten().count();
            keep_logs(s, &dir, n, run)?;
            bail!("lanseed: {have} of {n} devices had the release after {timeout:?}");
        }
        for (slot, node) in done.iter_mut().zip(&devices) {
            if slot.is_none() {
                *slot = done_line(node, s.agents).map(|l| log_time_us(&l));
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let last = done.iter().flatten().copied().max().unwrap_or(t0);
    // Where the time went, from the logs.
    let since = |us: i64| (us - t0) as f64 / 1e6;
    let first_line = |node: &NodeProc, needle: &str| {
        node.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(log_time_us)
            .find(|&us| us >= t0)
    };
    let announced = first_line(&publisher, "release in store").map(since);
    let fetching = devices
        .iter()
        .filter_map(|d| first_line(d, "fetching release"))
        .min()
        .map(since);
    let mut times: Vec<f64> = done.iter().flatten().map(|&us| since(us)).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "  lanseed: pack {pack_secs:.2} s; the publisher has the release at {}, the first device fetches from {}; devices done from {:.2} s, median {:.2} s, last {:.2} s",
        fmt_opt(announced, " s"),
        fmt_opt(fetching, " s"),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let cpu: f64 = nodes
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| netrun::tree_cpu_secs(p.pid()).unwrap_or(*c0) - c0)
        .sum::<f64>()
        + pack.cpu_secs;
    let sent = lan.bytes(0).1 - sent0;
    let up = &lanseed_tests::node_status(&store(0))["uploads"];
    println!(
        "  lanseed: the publisher sent {} answers; told Busy: {} requests for want of a slot, {} held back (a piece on its way to another device)",
        up["answers"], up["refused"], up["held_back"]
    );
    drop(devices);
    drop(publisher);
    netrun::kill_own_processes();
    keep_logs(s, &dir, n, run)?;
    drop(lan);
    std::fs::remove_dir_all(&dir)?;
    Ok(Measure {
        secs: (last - t0) as f64 / 1e6,
        cpu,
        upload_multiple: sent as f64 / f,
    })
}

/// Copies the node logs of a lanseed run (in `dir`) to `--logs`, if
/// given.
fn keep_logs(s: &Setup, dir: &Path, n: usize, run: usize) -> anyhow::Result<()> {
    let Some(logs) = &s.logs else {
        return Ok(());
    };
    let to = logs.join(format!("lanseed-{n}-run{run}"));
    std::fs::create_dir_all(&to)?;
    for i in 0..=n {
        let name = format!("node{i}.log");
        std::fs::copy(dir.join(&name), to.join(&name))?;
    }
    Ok(())
}

fn run_nginx(s: &Setup, n: usize, mbit: u32) -> anyhow::Result<Measure> {
    let lan = Lan::new(n + 1);
    lan.shape_all(mbit);
    let dir = s.root.join(format!("nginx-{n}"));
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::copy(&s.zip, www.join("bundle.zip"))?;
    let sha = baseline::sha256_hex(&s.zip)?;
    let server = baseline::Nginx::start(&lan.hosts[0], &lan.addrs[0], &www, &dir.join("nginx"))?;
    let url = format!("{}bundle.zip", server.base_url);
    let clients: Vec<usize> = (1..=n).collect();
    let f = s.bundle.bytes as f64;
    let rate = f64::from(mbit) * 1e6 / 8.0;
    let cpu0 = server.cpu_secs();
    let sent0 = lan.bytes(0).1;
    let got = baseline::http_fetch_all(&lan, &clients, &url, &sha, &dir, timeout_for(n, f, rate))?;
    let sent = lan.bytes(0).1 - sent0;
    println!("  nginx: {}", spread(&got));
    let cpu = server.cpu_secs() - cpu0 + got.cpu_secs;
    drop(server);
    netrun::kill_own_processes();
    drop(lan);
    std::fs::remove_dir_all(&dir)?;
    Ok(measure(&got, cpu, sent, f))
}

/// When the devices were done: first, median, last.
fn spread(got: &Finished) -> String {
    let mut t = got.done_secs.clone();
    t.sort_by(f64::total_cmp);
    match t.as_slice() {
        [] => "no device".to_owned(),
        _ => format!(
            "devices done from {:.2} s, median {:.2} s, last {:.2} s",
            t[0],
            t[t.len() / 2],
            t[t.len() - 1]
        ),
    }
}

fn measure(got: &Finished, cpu: f64, sent: u64, f: f64) -> Measure {
    Measure {
        secs: got.last(),
        cpu,
        upload_multiple: sent as f64 / f,
    }
}

fn run_aria2(s: &Setup, n: usize, mbit: u32) -> anyhow::Result<Measure> {
    let lan = Lan::new(n + 1);
    lan.shape_all(mbit);
    let dir = s.root.join(format!("aria2-{n}"));
    std::fs::create_dir_all(&dir)?;
    let clients: Vec<usize> = (1..=n).collect();
    let f = s.bundle.bytes as f64;
    let rate = f64::from(mbit) * 1e6 / 8.0;
    let sent0 = lan.bytes(0).1;
    let got = baseline::torrent_fan_out(&lan, 0, &clients, &s.zip, &dir, timeout_for(n, f, rate))?;
    let sent = lan.bytes(0).1 - sent0;
    println!("  aria2: {}", spread(&got));
    netrun::kill_own_processes();
    drop(lan);
    std::fs::remove_dir_all(&dir)?;
    Ok(measure(&got, got.cpu_secs, sent, f))
}

/// Plain TCP over one shaped link: nginx → curl of the zip between two
/// hosts; the goodput as a share of the link rate.
fn link_check(s: &Setup, mbit: u32) -> anyhow::Result<f64> {
    let lan = Lan::new(2);
    lan.shape_all(mbit);
    let dir = s.root.join("link-check");
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::copy(&s.zip, www.join("bundle.zip"))?;
    let server = baseline::Nginx::start(&lan.hosts[0], &lan.addrs[0], &www, &dir.join("nginx"))?;
    let url = format!("{}bundle.zip", server.base_url);
    let rate = f64::from(mbit) * 1e6 / 8.0;
    let goodput = baseline::http_goodput(&lan.hosts[1], &url)?;
    drop(server);
    netrun::kill_own_processes();
    drop(lan);
    std::fs::remove_dir_all(&dir)?;
    Ok(goodput / rate)
}

/// One configuration's results.
struct Row {
    n: usize,
    mbit: u32,
    bound: f64,
    by: Vec<(System, Measure)>,
}

impl Row {
    fn get(&self, s: System) -> Option<Measure> {
        self.by.iter().find(|(x, _)| *x == s).map(|(_, m)| *m)
    }
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}{unit}"))
}

/// The results as a Markdown table.
fn table(rows: &[Row], f: u64, cores: usize) -> String {
    let mut out = String::from(
        "| N | link | bound | lanseed | nginx | aria2 | lanseed / bound | nginx / lanseed | aria2 / lanseed | CPU s lanseed / nginx / aria2 (cores busy) | publisher upload multiple lanseed / nginx / aria2 |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let t = |s| r.get(s).map(|m| m.secs);
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        let cpu = |s: System| {
            r.get(s).map_or("-".to_owned(), |m| {
                format!("{:.1} ({:.2})", m.cpu, m.cpu / m.secs)
            })
        };
        let up = |s: System| {
            r.get(s)
                .map_or("-".to_owned(), |m| format!("{:.2}", m.upload_multiple))
        };
        out.push_str(&format!(
            "| {} | {} Mbit/s | {:.2} s | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} |\n",
            r.n,
            r.mbit,
            r.bound,
            fmt_opt(t(System::Lanseed), " s"),
            fmt_opt(t(System::Nginx), " s"),
            fmt_opt(t(System::Aria2), " s"),
            fmt_opt(ratio(t(System::Lanseed), Some(r.bound)), " x"),
            fmt_opt(ratio(t(System::Nginx), t(System::Lanseed)), " x"),
            fmt_opt(ratio(t(System::Aria2), t(System::Lanseed)), " x"),
            cpu(System::Lanseed),
            cpu(System::Nginx),
            cpu(System::Aria2),
            up(System::Lanseed),
            up(System::Nginx),
            up(System::Aria2),
        ));
    }
    out.push_str(&format!(
        "\nF = {f} bytes; bound = max(F/u_s, F/d, N·F/(u_s + Σu_i)) at the nominal link rate; \"cores busy\" = CPU seconds / wall seconds (of {cores} cores).\n"
    ));
    out
}

mod plot {
    //! The scaling plot: time to the last device against N, one line per
    //! system, as a small standalone SVG.

    /// One point: a system's time at N devices over links of `mbit`.
    pub struct Point {
        pub system: &'static str,
        pub n: usize,
        pub mbit: u32,
        pub secs: f64,
    }

    const W: f64 = 560.0;
    const H: f64 = 360.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 120.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 56.0;

    fn colour(system: &str) -> &'static str {
        match system {
            "lanseed" => "#1b7f3b",
            "nginx" => "#c0392b",
            "aria2" => "#2c5aa0",
            _ => "#555555",
        }
    }

    /// Round numbers for a log axis covering `lo..=hi`.
    pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
        let mut out = Vec::new();
        let mut decade = 10f64.powf(lo.log10().floor());
        while decade <= hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let v = decade * m;
                if v >= lo * 0.9999 && v <= hi * 1.0001 {
                    out.push(v);
                }
            }
            decade *= 10.0;
        }
        out
    }

    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// The plot of `points` (log-log), titled `title`; `bounds` are the
    /// fluid lower bound at each (N, mbit), drawn dashed.
    pub fn svg(title: &str, points: &[Point], bounds: &[(usize, u32, f64)]) -> String {
        let ns: Vec<usize> = points.iter().map(|p| p.n).collect();
        let (nmin, nmax) = (
            *ns.iter().min().unwrap_or(&1) as f64,
            *ns.iter().max().unwrap_or(&1) as f64,
        );
        let all_secs = points
            .iter()
            .map(|p| p.secs)
            .chain(bounds.iter().map(|b| b.2));
        let (mut smin, mut smax) = (f64::MAX, 0.0f64);
        for s in all_secs {
            smin = smin.min(s);
            smax = smax.max(s);
        }
        if points.is_empty() {
            (smin, smax) = (1.0, 10.0);
        }
        let (ylo, yhi) = (
            10f64.powf(smin.log10().floor()),
            10f64.powf(smax.log10().ceil()),
        );
        let (xlo, xhi) = (nmin / 1.5, nmax * 1.5);
        let x = |n: f64| LEFT + (n.ln() - xlo.ln()) / (xhi.ln() - xlo.ln()) * (W - LEFT - RIGHT);
        let y =
            |s: f64| H - BOTTOM - (s.ln() - ylo.ln()) / (yhi.ln() - ylo.ln()) * (H - TOP - BOTTOM);
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
            W / 2.0,
            esc(title)
        );
        // Axes and grid.
        for v in log_ticks(ylo, yhi) {
            let yy = y(v);
            out.push_str(&format!(
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e4e4e4\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                W - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                v
            ));
        }
        let mut xs: Vec<(usize, u32)> = points.iter().map(|p| (p.n, p.mbit)).collect();
        xs.sort_unstable();
        xs.dedup();
        for (n, mbit) in &xs {
            let xx = x(*n as f64);
            out.push_str(&format!(
                "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/>\n<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>\n<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#777\" font-size=\"10\">{mbit} Mbit/s</text>\n",
                H - BOTTOM,
                H - BOTTOM + 16.0,
                H - BOTTOM + 29.0
            ));
        }
        out.push_str(&format!(
            "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#333\"/>\n<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">devices (N), link rate</text>\n\
             <text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">seconds to the last device (log)</text>\n",
            H - BOTTOM,
            W - RIGHT,
            H - BOTTOM,
            H - BOTTOM,
            LEFT + (W - LEFT - RIGHT) / 2.0,
            H - 8.0,
            TOP + (H - TOP - BOTTOM) / 2.0
        ));
        // Lines: the bound, then each system.
        // (name, (N, seconds) points, dashed)
        type Series<'a> = (&'a str, Vec<(f64, f64)>, bool);
        let mut series: Vec<Series> = Vec::new();
        let mut b: Vec<(f64, f64)> = bounds.iter().map(|(n, _, s)| (*n as f64, *s)).collect();
        b.sort_by(|p, q| p.0.total_cmp(&q.0));
        series.push(("bound", b, true));
        for sys in ["lanseed", "nginx", "aria2"] {
            let mut v: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.system == sys)
                .map(|p| (p.n as f64, p.secs))
                .collect();
            v.sort_by(|p, q| p.0.total_cmp(&q.0));
            if !v.is_empty() {
                series.push((sys, v, false));
            }
        }
        for (k, (name, v, dashed)) in series.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let c = colour(name);
            let pts: Vec<String> = v
                .iter()
                .map(|(n, s)| format!("{:.1},{:.1}", x(*n), y(*s)))
                .collect();
            let dash = if *dashed {
                " stroke-dasharray=\"5 4\""
            } else {
                ""
            };
            out.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
                pts.join(" ")
            ));
            if !dashed {
                for (n, s) in v {
                    out.push_str(&format!(
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{c}\"/>\n",
                        x(*n),
                        y(*s)
                    ));
                }
            }
            let ly = TOP + 10.0 + 20.0 * k as f64;
            let lx = W - RIGHT + 14.0;
            out.push_str(&format!(
                "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{c}\" stroke-width=\"2\"{dash}/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                lx + 22.0,
                lx + 28.0,
                ly + 4.0,
                esc(name)
            ));
        }
        out.push_str("</svg>\n");
        out
    }
}

/// The 1, 5 and 15 minute load averages (other work on the machine
/// skews every figure: print it with them).
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> anyhow::Result<()> {
    netrun::install_teardown()?;
    let a = parse_args(std::env::args().skip(1))?;
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; use --release for figures");
    }
    let systems: Vec<System> = match a.only {
        Some(s) => vec![s],
        None => System::ALL.to_vec(),
    };
    // Every tool first, so a missing one fails before anything runs.
    let mut tools = vec!["nginx", "curl"]; // the link check
    if systems.contains(&System::Aria2) {
        tools.extend(["aria2c", "opentracker", "mktorrent"]);
    }
    for t in tools {
        baseline::require(t)?;
    }
    let base = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let root = base.path().to_owned();
    netrun::remove_on_teardown(&root);

    let build = root.join("build");
    let bundle = web_bundle(&build, 15)?;
    let zip = root.join("bundle.zip");
    let zip_bytes = zip_of(&build, &zip)?;
    let key = lanseed_tests::keygen(&root);
    let trust = PathBuf::from(format!("{}.pub", key.display()));
    let builtin = root.join("builtin");
    std::fs::create_dir_all(&builtin)?;
    std::fs::write(builtin.join("index.html"), "<h1>builtin</h1>")?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("CPU: {} ({cores} cores)", cpu_model());
    println!("load average at the start: {}", load_average());
    println!("lanseed: {}", lanseed_bin().display());
    println!(
        "bundle: {} bytes in {} files ({} bytes of JS and CSS in {} files, the rest incompressible media); its zip {zip_bytes} bytes",
        bundle.bytes, bundle.files, bundle.text_bytes, bundle.text_files
    );
    println!(
        "lanseed devices: {}",
        if a.agents {
            "`lanseed device` agents"
        } else {
            "`lanseed seed --follow` nodes"
        }
    );
    let setup = Setup {
        root: root.clone(),
        build,
        zip,
        key,
        trust,
        builtin,
        bundle,
        agents: a.agents,
        logs: a.logs.clone(),
    };

    let mbit_of = |n: usize| a.mbit.unwrap_or_else(|| default_mbit(n));
    let mut rates: Vec<u32> = a.nodes.iter().map(|&n| mbit_of(n)).collect();
    rates.sort_unstable();
    rates.dedup();
    for &mbit in &rates {
        let share = link_check(&setup, mbit)?;
        println!(
            "plain TCP check at {mbit} Mbit/s: nginx → curl of the zip over one shaped link (curl's own timing): {:.1} Mbit/s = {:.1} % of the link",
            share * f64::from(mbit),
            100.0 * share
        );
    }

    let f = setup.bundle.bytes as f64;
    let mut rows = Vec::new();
    for &n in &a.nodes {
        let mbit = mbit_of(n);
        let rate = f64::from(mbit) * 1e6 / 8.0;
        let bound = fluid_bound(f, rate, rate, &vec![rate; n]);
        println!(
            "\nN = {n}, {mbit} Mbit/s both ways, F = {:.1} MB: bound {bound:.2} s",
            f / 1e6
        );
        let mut by = Vec::new();
        for &sys in &systems {
            let mut runs = Vec::new();
            for run in 0..a.runs {
                let t = Instant::now();
                let m = match sys {
                    System::Lanseed => run_lanseed(&setup, n, mbit, run),
                    System::Nginx => run_nginx(&setup, n, mbit),
                    System::Aria2 => run_aria2(&setup, n, mbit),
                }
                .with_context(|| format!("{} at N = {n}", sys.name()))?;
                let busy = m.cpu / m.secs;
                println!(
                    "  {} run {run}: last device at {:.2} s ({:.2} x the bound); CPU {:.1} s = {busy:.2} of {cores} cores busy{}; publisher sent {:.2} x the bundle ({:.0} s in all; load average now {})",
                    sys.name(),
                    m.secs,
                    m.secs / bound,
                    m.cpu,
                    if busy > 0.8 * cores as f64 {
                        " (CPU-bound)"
                    } else {
                        ""
                    },
                    m.upload_multiple,
                    t.elapsed().as_secs_f64(),
                    load_average()
                );
                runs.push(m);
            }
            let m = Measure {
                secs: median(runs.iter().map(|m| m.secs).collect()),
                cpu: median(runs.iter().map(|m| m.cpu).collect()),
                upload_multiple: median(runs.iter().map(|m| m.upload_multiple).collect()),
            };
            by.push((sys, m));
        }
        let row = Row { n, mbit, bound, by };
        let l = row.get(System::Lanseed);
        if let Some(l) = l {
            let mut verdict = vec![format!(
                "lanseed {:.2} x the bound (target <= 1.5)",
                l.secs / bound
            )];
            if let Some(x) = row.get(System::Nginx) {
                verdict.push(format!(
                    "{:.1} x faster than nginx{}",
                    x.secs / l.secs,
                    if n == 16 {
                        " (target >= 8 at N = 16)"
                    } else {
                        ""
                    }
                ));
            }
            if let Some(x) = row.get(System::Aria2) {
                verdict.push(format!(
                    "{:.2} x faster than aria2 (target > 1)",
                    x.secs / l.secs
                ));
            }
            println!("  => {}", verdict.join("; "));
        }
        rows.push(row);
    }
    println!("\n{}", table(&rows, setup.bundle.bytes, cores));

    if let Some(path) = &a.svg {
        let points: Vec<plot::Point> = rows
            .iter()
            .flat_map(|r| {
                r.by.iter().map(|(s, m)| plot::Point {
                    system: s.name(),
                    n: r.n,
                    mbit: r.mbit,
                    secs: m.secs,
                })
            })
            .collect();
        let bounds: Vec<(usize, u32, f64)> = rows.iter().map(|r| (r.n, r.mbit, r.bound)).collect();
        let title = format!(
            "Fan-out of a {:.0} MB bundle: time to the last device",
            f / 1e6
        );
        std::fs::write(path, plot::svg(&title, &points, &bounds))?;
        println!("plot written to {}", path.display());
    }
    netrun::teardown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> anyhow::Result<Args> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn flags_are_parsed_and_checked() {
        let a = args("--nodes 4,16 --mbit 20 --only aria2 --runs 3 --agents --svg x.svg --logs l")
            .unwrap();
        assert_eq!(a.logs.as_deref(), Some(Path::new("l")));
        assert_eq!(a.nodes, [4, 16]);
        assert_eq!(a.mbit, Some(20));
        assert_eq!(a.only, Some(System::Aria2));
        assert_eq!(a.runs, 3);
        assert!(a.agents);
        assert_eq!(a.svg.as_deref(), Some(Path::new("x.svg")));
        let d = args("").unwrap();
        assert_eq!(d.nodes, [4, 16, 48]);
        assert_eq!((d.mbit, d.only, d.runs, d.agents), (None, None, 1, false));
        for bad in [
            "--nodes 0",
            "--nodes 4,x",
            "--nodes 201",
            "--mbit 0",
            "--only bittorrent",
            "--runs 0",
            "--runs",
            "--what",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn large_fleets_get_slower_links_unless_told() {
        assert_eq!(default_mbit(4), 50);
        assert_eq!(default_mbit(16), 50);
        assert_eq!(default_mbit(31), 50);
        assert_eq!(default_mbit(32), 10);
        assert_eq!(default_mbit(48), 10);
    }

    #[test]
    fn the_bound_is_the_slowest_of_its_three_limits() {
        // Equal links: one bundle over one link.
        assert!((fluid_bound(100.0, 10.0, 10.0, &[10.0; 16]) - 10.0).abs() < 1e-9);
        // A slow downloader.
        assert!((fluid_bound(100.0, 10.0, 5.0, &[10.0; 4]) - 20.0).abs() < 1e-9);
        // Devices that cannot upload: the server sends N copies.
        assert!((fluid_bound(100.0, 10.0, 10.0, &[0.0; 8]) - 80.0).abs() < 1e-9);
        // Weak uploaders: N·F / (u_s + Σu_i) = 4·100 / (10 + 4·2.5) = 20.
        assert!((fluid_bound(100.0, 10.0, 100.0, &[2.5; 4]) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn text_sizes_add_up_and_spread() {
        for (count, total) in [(1, 10), (500, 4_000_000), (7, 7), (3, 100_003)] {
            let sizes = text_sizes(&mut Rng::new(1), count, total);
            assert_eq!(sizes.len(), count);
            assert_eq!(sizes.iter().sum::<u64>(), total, "{count} {total}");
        }
        let sizes = text_sizes(&mut Rng::new(1), 500, 4_000_000);
        let max = *sizes.iter().max().unwrap();
        let min = *sizes.iter().min().unwrap();
        assert!(max > 20 * min, "a spread like a real build: {min}..{max}");
        assert!(max < 4_000_000 / 5, "no file is most of the text: {max}");
    }

    #[test]
    fn generated_text_has_its_size_and_compresses_like_code() {
        use std::io::Write;
        for size in [0u64, 1, 9, 4096, 100_000] {
            assert_eq!(text(&mut Rng::new(2), size, false).len() as u64, size);
        }
        let t = text(&mut Rng::new(2), 200_000, true);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&t).unwrap();
        let packed = z.finish().unwrap().len();
        assert!(packed < t.len() / 2 && packed > t.len() / 50, "{packed}");
    }

    #[test]
    fn log_ticks_are_round_and_inside_the_range() {
        assert_eq!(
            plot::log_ticks(1.0, 100.0),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(plot::log_ticks(3.0, 30.0), [5.0, 10.0, 20.0]);
    }

    #[test]
    fn the_plot_has_a_line_per_system_and_the_bound() {
        let points = [
            (System::Lanseed, 4, 3.0),
            (System::Lanseed, 16, 3.5),
            (System::Nginx, 4, 14.0),
            (System::Nginx, 16, 55.0),
        ]
        .map(|(s, n, secs)| plot::Point {
            system: s.name(),
            n,
            mbit: 50,
            secs,
        });
        let svg = plot::svg("a <title>", &points, &[(4, 50, 3.4), (16, 50, 3.4)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 3, "bound, lanseed, nginx");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Slower is higher up: nginx's N = 16 point sits above lanseed's.
        let cy = |nth: usize| -> f64 {
            let c = svg.match_indices("cy=\"").nth(nth).unwrap().0 + 4;
            svg[c..c + 10].split('"').next().unwrap().parse().unwrap()
        };
        assert!(cy(3) < cy(1), "{} vs {}", cy(3), cy(1));
    }

    #[test]
    fn the_table_has_a_row_per_configuration_with_ratios() {
        let m = |secs| Measure {
            secs,
            cpu: 4.0,
            upload_multiple: 1.1,
        };
        let rows = [Row {
            n: 16,
            mbit: 50,
            bound: 3.2,
            by: vec![(System::Lanseed, m(4.0)), (System::Nginx, m(60.0))],
        }];
        let t = table(&rows, 20_000_000, 2);
        let row = t.lines().nth(2).unwrap();
        assert!(
            row.starts_with(
                "| 16 | 50 Mbit/s | 3.20 s | 4.00 s | 60.00 s | - | 1.25 x | 15.00 x | - |"
            ),
            "{row}"
        );
    }
}
