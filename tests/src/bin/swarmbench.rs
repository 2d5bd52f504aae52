//! `lanseed-swarmbench`: transfer throughput and memory of lanseed nodes,
//! the figures `docs/PERF.md` records for the swarm. Run it where only
//! loopback exists, from a release build:
//!
//! ```text
//! cargo build --release -p lanseed -p lanseed-tests
//! ../shared/tools/isolated target/release/lanseed-swarmbench [--only throughput|memory]
//! ```
//!
//! `LANSEED_BIN=path/to/lanseed` measures another build of the node (the
//! code before a change, say) with the same benchmark; one whose
//! "transfer done" logs `cpu_secs` and `commit_secs` (afdb79a or later).
//!
//! Side by side in one run, each measured `--runs` times (median):
//! 1. **raw stream**: `rawstream` sends the bundle's size over one libp2p
//!    stream between two processes (TCP + noise + yamux, the node's own
//!    stack), nothing else: the ceiling;
//! 2. **lanseed fetch**: a `lanseed seed` follower fetches a bundle of that
//!    size (incompressible files, so compression cannot flatter it) from a
//!    seeder, from "fetching release" to "transfer done" in its log:
//!    manifest, piece requests, verification, writes and the durable
//!    commit (two `syncfs`);
//!    with its store on the disk and, with `--dir /dev/shm`, on tmpfs;
//! 3. **fetcher peak RSS** (VmHWM) for bundles of `--mb`/4 and `--mb`;
//! 4. **seeder peak RSS** holding `--releases` releases with `--peers`
//!    followers connected, each fetching the newest.
//!
//! With the throughput, each process's CPU time per GB moved (user and
//! system, all threads, from the process's CPU-time clock), over the
//! transfer: the raw stream's two ends from their substream's opening
//! to its end, the fetcher from "fetching release" to "transfer done"
//! (its log's `cpu_secs`), the seeder from before the fetcher starts to
//! the end (its side of the handshake included). What the raw ends and
//! the fetcher used outside their transfer (exec, start-up, the
//! connection's handshake, and for the fetcher what it did after
//! "transfer done" until the benchmark read its clock: a cost per
//! process, not per byte) is printed apart. The CPU model is printed
//! first. Each run
//! also sends the bundle's files over a raw stream (`rawstream
//! send-file`, reading 64 KiB just before writing it, as the seeder
//! does): that sender's CPU is what serving files costs without lanseed,
//! so the seeder is shown against it too.
//!
//! Traffic stays on 127.0.0.1; mDNS is off.
#![allow(unsafe_code)] // only in the shared bench helpers; none here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lanseed_tests::net::{log_field, log_time_us};
use lanseed_tests::{Rng, cpu_model, cpu_secs, lanseed_bin};

struct Args {
    mb: u64,
    runs: usize,
    dir: Option<PathBuf>,
    peers: usize,
    releases: usize,
    /// Only this part (`throughput` or `memory`), or both.
    only: Option<String>,
    /// Where `perf record` writes a profile of the fetcher and the seeder
    /// for each run (`perf` from Debian's `linux-perf`).
    perf: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        mb: 200,
        runs: 3,
        dir: None,
        peers: 50,
        releases: 100,
        only: None,
        perf: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mb" => a.mb = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--dir" => a.dir = Some(value()?.into()),
            "--perf" => a.perf = Some(value()?.into()),
            "--peers" => a.peers = value()?.parse()?,
            "--releases" => a.releases = value()?.parse()?,
            "--only" => match value()?.as_str() {
                part @ ("throughput" | "memory") => a.only = Some(part.to_owned()),
                other => bail!("--only takes throughput or memory, not {other}"),
            },
            "-h" | "--help" => {
                println!(
                    "usage: lanseed-swarmbench [--mb 200] [--runs 3] [--dir DIR] [--peers 50] [--releases 100] [--only throughput|memory] [--perf DIR]\n\
                     --perf DIR: profile the fetcher and the seeder of each throughput run with\n\
                     `perf record` into DIR/{{fetcher,seeder}}-RUN.data (their CPU figures then\n\
                     include perf's own cost; read with `perf report -i FILE`; LANSEED_PERF_ARGS adds\n\
                     to perf's arguments, e.g. '--call-graph dwarf,16384')"
                );
                std::process::exit(0);
            }
            _ => bail!("unknown flag {flag} (try --help)"),
        }
    }
    Ok(a)
}

const APP: &str = "com.example.bench";

/// A `lanseed` process with its log file.
struct Node {
    child: Child,
    log: PathBuf,
    store: PathBuf,
}

impl Node {
    /// Starts `lanseed seed` logging at `info` (a device runs at `warn` or
    /// `info`: no line per piece).
    fn start(store: &Path, args: &[&str]) -> anyhow::Result<Node> {
        let log = store.with_extension("log");
        let mut child = Command::new(lanseed_bin())
            .args(["seed", "--store", path(store), "--no-mdns"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(args)
            .env("RUST_LOG", "lanseed=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn lanseed seed")?;
        let node = Node {
            child: {
                // Keep the handle; wait for the node to be up.
                let start = Instant::now();
                loop {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("listening") {
                        break;
                    }
                    if let Some(status) = child.try_wait()? {
                        bail!("lanseed seed exited ({status}):\n{text}");
                    }
                    if start.elapsed() > Duration::from_secs(20) {
                        bail!("lanseed seed did not start:\n{text}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                child
            },
            log,
            store: store.to_owned(),
        };
        Ok(node)
    }

    fn log_line(&self, needle: &str) -> Option<String> {
        std::fs::read_to_string(&self.log)
            .ok()?
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_owned)
    }

    fn wait_line(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.log_line(needle) {
                return Ok(l);
            }
            if start.elapsed() > timeout {
                bail!("no `{needle}` in {} after {timeout:?}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `/ip4/127.0.0.1/tcp/PORT/p2p/ID`.
    fn addr(&self) -> anyhow::Result<String> {
        let listen = self.wait_line("listening address=", Duration::from_secs(10))?;
        let addr = listen.split("address=").nth(1).context("address")?.trim();
        let started = self.wait_line("node started", Duration::from_secs(10))?;
        let id = started
            .split("peer_id=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .context("peer id")?;
        Ok(format!("{addr}/p2p/{id}"))
    }

    /// Peak resident set (VmHWM) so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        proc_status_kib(self.child.id(), "VmHWM:") as f64 / 1024.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("bench paths are UTF-8")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A build of incompressible files adding up to `bytes`.
fn media_build(dir: &Path, bytes: u64, seed: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("index.html"), format!("<h1>{seed}</h1>"))?;
    let mut rng = Rng::new(seed);
    let files = (bytes / (10 << 20)).max(1);
    for i in 0..files {
        let data: Vec<u8> = (0..bytes / files / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        std::fs::write(dir.join(format!("media-{i}.bin")), data)?;
    }
    Ok(())
}

fn pack(build: &Path, store: &Path, key: &Path, version: &str) -> anyhow::Result<()> {
    run(Command::new(lanseed_bin())
        .args(["pack", path(build), "--app", APP, "--version", version])
        .args(["--key", path(key), "--store", path(store)])
        .env("RUST_LOG", "warn"))?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One raw stream run.
struct Raw {
    /// MB/s.
    mb_s: f64,
    /// CPU seconds of the receiving and the sending process over the
    /// transfer, and before it (start-up, handshake).
    recv_cpu: f64,
    send_cpu: f64,
    recv_setup_cpu: f64,
    send_setup_cpu: f64,
}

/// The `CPU <transfer> <process>` line of a rawstream's output: CPU
/// seconds over the transfer, and before it.
fn cpu_line<'a>(mut lines: impl Iterator<Item = &'a str>) -> anyhow::Result<(f64, f64)> {
    let line = lines
        .find_map(|l| l.strip_prefix("CPU "))
        .context("rawstream printed no CPU line")?;
    let mut f = line.split_whitespace().map(str::parse::<f64>);
    match (f.next(), f.next()) {
        (Some(Ok(transfer)), Some(Ok(process))) if transfer.is_finite() && process.is_finite() => {
            Ok((transfer, process - transfer))
        }
        _ => bail!("rawstream printed CPU {line:?} (its CPU-time clock could not be read)"),
    }
}

/// Most of a machine's time the hypervisor may give to others (steal)
/// during a run that counts as quiet: on a shared host the throughput of
/// both transfers swings with it, while their CPU per GB does not.
const QUIET_STEAL: f64 = 0.10;

/// The machine's CPU time so far, from `/proc/stat`: all of it, and what
/// the hypervisor gave to others while this VM wanted to run (steal).
struct Steal {
    total: u64,
    stolen: u64,
}

impl Steal {
    fn now() -> Steal {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal ...
        let f: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        Steal {
            total: f.iter().sum(),
            stolen: f.get(7).copied().unwrap_or(0),
        }
    }

    /// The share of the machine's time stolen since `self` (0 to 1).
    fn share_since(&self) -> f64 {
        let now = Steal::now();
        let total = now.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        now.stolen.saturating_sub(self.stolen) as f64 / total as f64
    }
}

/// What the raw stream sends.
enum RawSource<'a> {
    /// This many bytes from one buffer in memory.
    Memory(u64),
    /// These files' bytes, read 64 KiB at a time as they are sent.
    Files(&'a [PathBuf]),
}

/// Raw libp2p stream throughput of `bytes` (sent from `source`), and its
/// CPU.
fn raw_stream(bytes: u64, source: &RawSource) -> anyhow::Result<Raw> {
    let exe = std::env::current_exe()?;
    let rawstream = exe.with_file_name("rawstream");
    let mut listener = Command::new(&rawstream)
        .arg("listen")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", rawstream.display()))?;
    let mut lines = BufReader::new(listener.stdout.take().context("stdout")?).lines();
    let addr = loop {
        let line = lines.next().context("rawstream listen ended")??;
        if let Some(a) = line.strip_prefix("ADDR ") {
            break a.to_owned();
        }
    };
    let mut send = Command::new(&rawstream);
    match source {
        RawSource::Memory(n) => send.args(["send", &addr, &n.to_string()]),
        RawSource::Files(files) => send.args(["send-file", &addr]).args(*files),
    };
    let sent = run(&mut send)?;
    let mut received = String::new();
    let mut rest = Vec::new();
    for line in lines {
        let line = line?;
        if line.starts_with("RECEIVED") {
            received = line.clone();
        }
        rest.push(line);
    }
    listener.wait()?;
    let (recv_cpu, recv_setup_cpu) = cpu_line(rest.iter().map(String::as_str))?;
    let (send_cpu, send_setup_cpu) = cpu_line(sent.lines())?;
    // RECEIVED <bytes> <seconds>: first byte to end of stream, receiver side.
    let f: Vec<&str> = received.split_whitespace().collect();
    let (got, secs): (u64, f64) = match f.as_slice() {
        [_, b, s, ..] => (b.parse()?, s.parse()?),
        _ => bail!("rawstream printed {received:?} (sender: {sent:?})"),
    };
    if got != bytes {
        bail!("rawstream received {got} of {bytes}");
    }
    Ok(Raw {
        mb_s: bytes as f64 / 1e6 / secs,
        recv_cpu,
        send_cpu,
        recv_setup_cpu,
        send_setup_cpu,
    })
}

/// One lanseed fetch, timed.
struct Fetched {
    /// MB/s over the whole fetch.
    mb_s: f64,
    /// Seconds from "fetching release" to "transfer done".
    secs: f64,
    /// Of those, the commit after the last piece was written (sync,
    /// renames, index).
    commit_secs: f64,
    /// Fetcher peak RSS, MiB.
    rss: f64,
    /// CPU seconds of the fetcher over the fetch ("fetching release" to
    /// "transfer done", as its log says: `cpu_secs`) and before it
    /// (start-up, connecting); of the seeder from before the fetcher
    /// started to the end (its side of the handshake included).
    fetcher_cpu: f64,
    fetcher_setup_cpu: f64,
    seeder_cpu: f64,
}

/// `perf record` attached to one process until dropped.
struct Perf(Child);

impl Perf {
    fn attach(pid: u32, out: &Path) -> anyhow::Result<Perf> {
        // LANSEED_PERF_ARGS adds to perf's own (e.g. `--call-graph dwarf`).
        let extra = std::env::var("LANSEED_PERF_ARGS").unwrap_or_default();
        let child = Command::new("perf")
            .args(["record", "-F", "1999", "-q", "-o", path(out)])
            .args(extra.split_whitespace())
            .arg("-p")
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("perf (Debian package linux-perf)")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Perf(child))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// One lanseed fetch of the seeder's release into a fresh store under
/// `dir`.
fn lanseed_fetch(
    dir: &Path,
    seeder: &Node,
    trust: &Path,
    bytes: u64,
    perf: Option<(&Path, usize)>,
) -> anyhow::Result<Fetched> {
    let store = tempfile::tempdir_in(dir)?;
    let seeder_pid = seeder.child.id();
    let seeder_cpu0 = cpu_secs(seeder_pid).unwrap_or(0.0);
    let seeder = seeder.addr()?;
    let seeder = seeder.as_str();
    // Profiling: the seeder now; the fetcher as soon as it runs (it
    // starts fetching a moment after it starts).
    let seeder_perf = match perf {
        Some((d, run)) => Some(Perf::attach(
            seeder_pid,
            &d.join(format!("seeder-{run}.data")),
        )?),
        None => None,
    };
    let f = Node::start(
        &store.path().join("f"),
        &["--peer", seeder, "--follow", APP, "--trust", path(trust)],
    )?;
    let fetcher_perf = match perf {
        Some((d, run)) => Some(Perf::attach(
            f.child.id(),
            &d.join(format!("fetcher-{run}.data")),
        )?),
        None => None,
    };
    let start = f.wait_line("fetching release", Duration::from_secs(30))?;
    let done = f.wait_line("transfer done", Duration::from_secs(600))?;
    let fetcher_process_cpu = cpu_secs(f.child.id()).unwrap_or(f64::NAN);
    let fetcher_cpu = log_field(&done, "cpu_secs")
        .filter(|s| s.is_finite())
        .context("the fetcher's \"transfer done\" gave no cpu_secs (its CPU-time clock)")?;
    drop((fetcher_perf, seeder_perf));
    let commit_secs = log_field(&done, "commit_secs")
        .filter(|s| s.is_finite())
        .context("the fetcher's \"transfer done\" gave no commit_secs")?;
    let secs = (log_time_us(&done) - log_time_us(&start)) as f64 / 1e6;
    let fetched = Fetched {
        mb_s: bytes as f64 / 1e6 / secs,
        secs,
        commit_secs,
        rss: f.peak_rss_mib(),
        fetcher_cpu,
        fetcher_setup_cpu: fetcher_process_cpu - fetcher_cpu,
        seeder_cpu: cpu_secs(seeder_pid).unwrap_or(f64::NAN) - seeder_cpu0,
    };
    // Deleting 200 MB makes the file system free (and, mounted with
    // `discard`, trim) its blocks at its next journal commit: let that
    // happen here, not during the next run's measurement.
    drop(f);
    store.close()?;
    run(Command::new("sync").arg("-f").arg(path(dir)))?;
    Ok(fetched)
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; use --release for figures");
    }
    let base = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let root = base.path();
    let key = root.join("publisher.key");
    run(Command::new(lanseed_bin()).args(["keygen", "--out", path(&key)]))?;
    let trust = root.join("publisher.key.pub");

    let only = a.only.as_deref();
    if only != Some("memory") {
        throughput(&a, root, &key, &trust)?;
    }
    if only != Some("throughput") {
        many_peers(&a, root, &key, &trust)?;
    }
    Ok(())
}

/// Parts 1 to 3: raw stream vs lanseed fetch, side by side, and the
/// fetcher's memory against bundle size.
fn throughput(a: &Args, root: &Path, key: &Path, trust: &Path) -> anyhow::Result<()> {
    // 1 + 2: raw stream vs lanseed fetch, same size, side by side.
    let bytes_target = a.mb << 20;
    let build = root.join("build");
    media_build(&build, bytes_target, 1)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&build)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let bytes: u64 = files
        .iter()
        .map(std::fs::metadata)
        .map(|m| m.map(|m| m.len()))
        .sum::<Result<u64, _>>()?;
    let seeder_store = root.join("seeder");
    pack(&build, &seeder_store, key, "1.0.0")?;
    let seeder = Node::start(&seeder_store, &[])?;
    println!("CPU: {}", cpu_model());
    if let Some(warning) = page_reporting_warning() {
        println!("{warning}");
    }
    println!(
        "bundle: {:.1} MB of incompressible files; stores in {}",
        bytes as f64 / 1e6,
        root.display()
    );
    let (mut raw, mut fetch, mut rss_big, mut no_commit) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Per-run ratios of the runs the host left alone.
    let mut quiet = Vec::new();
    // CPU seconds per GB: raw receiver, raw sender, raw file sender,
    // fetcher, seeder.
    let mut cpu: [Vec<f64>; 5] = Default::default();
    // CPU seconds outside each transfer: raw receiver, raw sender, fetcher.
    let mut setup: [Vec<f64>; 3] = Default::default();
    let gb = bytes as f64 / 1e9;
    for run in 0..a.runs {
        let steal0 = Steal::now();
        let raw_run = raw_stream(bytes, &RawSource::Memory(bytes))?;
        let steal_raw = steal0.share_since();
        let raw_files = raw_stream(bytes, &RawSource::Files(&files))?;
        let r = raw_run.mb_s;
        let steal0 = Steal::now();
        let f = lanseed_fetch(
            root,
            &seeder,
            trust,
            bytes,
            a.perf.as_deref().map(|d| (d, run)),
        )?;
        let steal_fetch = steal0.share_since();
        let per_gb = [
            raw_run.recv_cpu / gb,
            raw_run.send_cpu / gb,
            raw_files.send_cpu / gb,
            f.fetcher_cpu / gb,
            f.seeder_cpu / gb,
        ];
        println!(
            "run {run}: CPU s/GB: raw receiver {:.2}, raw sender {:.2}, raw file sender {:.2} | fetcher {:.2}, seeder {:.2}",
            per_gb[0], per_gb[1], per_gb[2], per_gb[3], per_gb[4]
        );
        for (v, x) in cpu.iter_mut().zip(per_gb) {
            v.push(x);
        }
        let before = [
            raw_run.recv_setup_cpu,
            raw_run.send_setup_cpu,
            f.fetcher_setup_cpu,
        ];
        for (v, x) in setup.iter_mut().zip(before) {
            v.push(x);
        }
        let pieces_mb_s = bytes as f64 / 1e6 / (f.secs - f.commit_secs);
        println!(
            "run {run}: raw stream {r:.0} MB/s | lanseed fetch {:.0} MB/s ({:.2} s, {:.0} %), of which commit {:.1} ms; without the commit {pieces_mb_s:.0} MB/s ({:.0} %) | fetcher peak RSS {:.1} MiB | stolen by the host: raw {:.0} %, fetch {:.0} %",
            f.mb_s,
            f.secs,
            100.0 * f.mb_s / r,
            1e3 * f.commit_secs,
            100.0 * pieces_mb_s / r,
            f.rss,
            100.0 * steal_raw,
            100.0 * steal_fetch
        );
        if steal_raw.max(steal_fetch) <= QUIET_STEAL {
            quiet.push(f.mb_s / r);
        }
        raw.push(r);
        fetch.push(f.mb_s);
        no_commit.push(pieces_mb_s);
        rss_big.push(f.rss);
    }
    let (raw_m, fetch_m, pieces_m) = (median(raw), median(fetch), median(no_commit));
    println!(
        "median: raw stream {raw_m:.0} MB/s, lanseed fetch {fetch_m:.0} MB/s = {:.0} % of raw (target >= 80 %); before the commit {pieces_m:.0} MB/s = {:.0} %",
        100.0 * fetch_m / raw_m,
        100.0 * pieces_m / raw_m
    );
    let runs = a.runs;
    match quiet.len() {
        0 => println!(
            "runs where the host stole at most {:.0} % of the time during both the raw stream and the fetch: none of {runs}",
            100.0 * QUIET_STEAL
        ),
        n => println!(
            "runs where the host stole at most {:.0} % of the time during both the raw stream and the fetch: {n} of {runs}, their median ratio {:.0} %",
            100.0 * QUIET_STEAL,
            100.0 * median(quiet)
        ),
    }
    let [recv, send, send_files, fetcher, seeder_c] = cpu.map(median);
    println!(
        "median CPU s/GB: raw receiver {recv:.2}, raw sender {send:.2}; fetcher {fetcher:.2} = {:.2} x the receiver (target <= 1.3), seeder {seeder_c:.2} = {:.2} x the sender (target <= 1.3)",
        fetcher / recv,
        seeder_c / send
    );
    println!(
        "median CPU s/GB of the raw stream reading the bundle's files as it sends: {send_files:.2} = {:.2} x the raw sender (reading files); seeder = {:.2} x the raw file sender (lanseed's own)",
        send_files / send,
        seeder_c / send_files
    );
    let [recv_setup, send_setup, fetcher_setup] = setup.map(median);
    println!(
        "median CPU outside the transfer (process start-up, connecting; the fetcher's also what it did after \"transfer done\" until read; not in the figures per GB): raw receiver {:.1} ms, raw sender {:.1} ms, fetcher {:.1} ms",
        1e3 * recv_setup,
        1e3 * send_setup,
        1e3 * fetcher_setup
    );
    println!(
        "seeder peak RSS while serving: {:.1} MiB",
        seeder.peak_rss_mib()
    );
    drop(seeder);

    // 3: fetcher memory against bundle size.
    let small_build = root.join("build-small");
    media_build(&small_build, bytes_target / 4, 2)?;
    let small_store = root.join("seeder-small");
    pack(&small_build, &small_store, key, "1.0.0")?;
    let small_seeder = Node::start(&small_store, &[])?;
    let rss_small = lanseed_fetch(root, &small_seeder, trust, bytes / 4, None)?.rss;
    drop(small_seeder);
    println!(
        "fetcher peak RSS: {rss_small:.1} MiB for {:.0} MB, {:.1} MiB for {:.0} MB (flat in bundle size if equal)",
        bytes as f64 / 4e6,
        median(rss_big),
        bytes as f64 / 1e6
    );

    Ok(())
}

/// Where the kernel reports free memory to a hypervisor (virtio-balloon
/// free page reporting), a warning: the host takes such memory back, and
/// the next first touch of each page costs a fault on the host, charged to
/// whichever process writes it. Only the fetcher writes new pages (the
/// bundle, into the page cache), so its CPU then depends on how much memory
/// was freed before the run (docs/PERF.md, issue 17).
fn page_reporting_warning() -> Option<String> {
    const ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";
    let order: u32 = std::fs::read_to_string(ORDER).ok()?.trim().parse().ok()?;
    // Blocks of 2^order pages are reported; none are at or above 11 on
    // x86-64 (the largest is 2^10).
    (order <= 10).then(|| {
        format!(
            "warning: free page reporting is on (order {order}): memory this VM frees goes back to its host, and a page \
             touched again is faulted in on the host at the toucher's cost. A fetch's page-cache writes can then cost \
             several times more (runs of the fetcher at twice its usual CPU). For lanseed's own cost: \
             echo 11 > {ORDER} (restore with echo {order} > …)"
        )
    })
}

/// Part 4: a seeder's memory with many releases and many peers.
fn many_peers(a: &Args, root: &Path, key: &Path, trust: &Path) -> anyhow::Result<()> {
    // 4: a seeder with many releases and many peers.
    let many = root.join("seeder-many");
    let tiny = root.join("build-tiny");
    lanseed_tests::generate_build(&tiny, 40, 400_000, 3);
    let t = Instant::now();
    for i in 0..a.releases {
        std::fs::write(tiny.join("version.txt"), format!("{i}"))?;
        pack(&tiny, &many, key, &format!("1.0.{i}"))?;
    }
    println!(
        "packed {} releases in {:.1} s",
        a.releases,
        t.elapsed().as_secs_f64()
    );
    let seeder = Node::start(&many, &[])?;
    let addr = seeder.addr()?;
    let mut followers = Vec::new();
    for i in 0..a.peers {
        followers.push(Node::start(
            &root.join(format!("peer-{i}")),
            &["--peer", &addr, "--follow", APP, "--trust", path(trust)],
        )?);
    }
    for f in &followers {
        f.wait_line("transfer done", Duration::from_secs(120))?;
    }
    let status = run(Command::new(lanseed_bin()).args([
        "status",
        "--store",
        path(&seeder.store),
        "--json",
    ]))?;
    let st: serde_json::Value = serde_json::from_str(&status)?;
    let connected = st["peers"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count());
    let held = st["releases"].as_array().map_or(0, Vec::len);
    let kib = |key| proc_status_kib(seeder.child.id(), key) as f64 / 1024.0;
    println!(
        "seeder with {held} releases and {connected} connected peers (each fetched the newest): peak RSS {:.1} MiB, now {:.1} MiB: {:.1} MiB heap and stacks, {:.1} MiB mapped files (target <= 40 MB)",
        seeder.peak_rss_mib(),
        kib("VmRSS:"),
        kib("RssAnon:"),
        kib("RssFile:"),
    );
    Ok(())
}
