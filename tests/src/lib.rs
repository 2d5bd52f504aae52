//! Shared helpers of lanseed's integration tests and benchmarks: finding
//! the `lanseed` binary, running it, generating web builds, crafting zips
//! ([`zipcraft`]) and fetching over plain HTTP ([`http_get`]).

pub mod baseline;
pub mod capgo;
pub mod devloop;
pub mod liar;
pub mod net;
pub mod netrun;
pub mod origin_server;
pub mod sim;
pub mod zipcraft;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `lanseed` binary built next to the running test or benchmark
/// (`$LANSEED_BIN` overrides).
pub fn lanseed_bin() -> PathBuf {
    bin_named("lanseed", "LANSEED_BIN")
}

/// The binary `name` built next to the running test or benchmark (in the
/// same profile); the environment variable `env` overrides it.
pub fn bin_named(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/test-123 or target/<profile>/lanseed-bench
    let mut dir = exe.parent().expect("exe dir").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it first, in the same profile (`cargo build --workspace --all-targets`)",
        bin.display()
    );
    bin
}

/// A `lanseed` command with a quiet log.
pub fn lanseed() -> Command {
    let mut cmd = Command::new(lanseed_bin());
    cmd.env("RUST_LOG", "warn").env_remove("LANSEED_STORE");
    cmd
}

fn joined<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
}

/// Runs `lanseed ARGS` and returns its output, panicking with its stderr
/// when it fails.
pub fn run_ok<S: AsRef<str>>(args: &[S]) -> Output {
    let out = lanseed()
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .expect("spawn lanseed");
    assert!(
        out.status.success(),
        "lanseed {} failed: {}",
        joined(args),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `lanseed ARGS` expecting failure; returns its stderr.
pub fn run_err<S: AsRef<str>>(args: &[S]) -> String {
    let out = lanseed()
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .expect("spawn lanseed");
    assert!(
        !out.status.success(),
        "lanseed {} should have failed but printed: {}",
        joined(args),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `lanseed pack BUILD --app APP --version VERSION --key KEY --store STORE`
/// and `extra`, as arguments for [`run_ok`] or [`run_err`].
pub fn pack_args(
    build: &Path,
    app: &str,
    version: &str,
    key: &Path,
    store: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "pack",
        path_str(build),
        "--app",
        app,
        "--version",
        version,
        "--key",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend([
        path_str(key).to_owned(),
        "--store".into(),
        path_str(store).to_owned(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// A test path as a command-line argument.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `lanseed status --json` of the node running on `store`.
pub fn node_status(store: &Path) -> serde_json::Value {
    json(&run_ok(&["status", "--store", path_str(store), "--json"]))
}

/// `lanseed releases --json` of `store`.
pub fn store_releases(store: &Path) -> Vec<serde_json::Value> {
    json(&run_ok(&["releases", "--store", path_str(store), "--json"]))
        .as_array()
        .expect("releases --json prints an array")
        .clone()
}

/// `lanseed store verify` of `store` against the trust file `trust`
/// (panics when it finds a problem).
pub fn verify_store(store: &Path, trust: &str) {
    run_ok(&[
        "store",
        "verify",
        "--store",
        path_str(store),
        "--trust",
        trust,
    ]);
}

/// Parses stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Makes a publisher key pair in `dir`; returns the secret key path.
pub fn keygen(dir: &Path) -> PathBuf {
    let key = dir.join("publisher.key");
    run_ok(&["keygen", "--out", key.to_str().unwrap()]);
    key
}

/// A small deterministic pseudo-random generator (SplitMix64), so generated
/// builds are the same on every run.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Writes `files` incompressible files `media-N.bin` of `total / files`
/// bytes together under `dir`, from `seed` (the same arguments give the
/// same bytes).
pub fn generate_media(dir: &Path, files: usize, total: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..files {
        let data: Vec<u8> = (0..total / files as u64 / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        std::fs::write(dir.join(format!("media-{i}.bin")), data).unwrap();
    }
}

/// Generates a web build under `dir`: `index.html` plus `files - 1` files
/// in nested folders, about `total_bytes` in all, sizes spread like a real
/// build (many small files, a few large ones), half text-like and half
/// incompressible. The same arguments give the same bytes.
pub fn generate_build(dir: &Path, files: usize, total_bytes: u64, seed: u64) {
    generate_build_in(dir, files, total_bytes, seed, |i| {
        format!("assets/{}/{}", i % 17, i % 5)
    });
}

/// [`generate_build`] laid out as vite lays out a build: scripts, styles
/// and data in `assets/`, images in `assets/img/` (three folders in all,
/// where [`generate_build`] makes about a hundred).
pub fn generate_vite_build(dir: &Path, files: usize, total_bytes: u64, seed: u64) {
    generate_build_in(dir, files, total_bytes, seed, |i| {
        if i % 4 == 2 { "assets/img" } else { "assets" }.to_owned()
    });
}

fn generate_build_in(
    dir: &Path,
    files: usize,
    total_bytes: u64,
    seed: u64,
    folder_of: impl Fn(usize) -> String,
) {
    let mut rng = Rng::new(seed);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("index.html"),
        format!("<!doctype html><title>build {seed}</title><script src=\"app.js\"></script>"),
    )
    .unwrap();
    // Sizes follow a rough power law; scale them to the total.
    let raw: Vec<f64> = (1..files)
        .map(|_| {
            let u = (rng.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
            u.powf(-1.2).min(2_000.0)
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    for (i, w) in raw.iter().enumerate() {
        let size = ((w / sum) * total_bytes as f64) as usize;
        let folder = folder_of(i);
        std::fs::create_dir_all(dir.join(&folder)).unwrap();
        let path = dir.join(format!(
            "{folder}/file-{i}.{}",
            ["js", "css", "png", "json"][i % 4]
        ));
        std::fs::write(path, content(&mut rng, size, i % 2 == 0)).unwrap();
    }
}

fn content(rng: &mut Rng, size: usize, text: bool) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "function ",
        "return ",
        "const ",
        "let x = ",
        "{ ",
        "}; ",
        "\n",
        "value",
    ];
    let mut out = Vec::with_capacity(size + 16);
    while out.len() < size {
        if text {
            out.extend_from_slice(WORDS[rng.below(8) as usize].as_bytes());
        } else {
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
    }
    out.truncate(size);
    out
}

/// Copies a directory tree (files and folders only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Fetches `http://127.0.0.1:PORT/PATH` with a bare HTTP/1.0 GET; returns
/// the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

/// Every regular file under `dir` with its size, for before/after
/// comparisons (sorted, paths relative to `dir`).
pub fn listing(dir: &Path) -> Vec<(String, u64)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push((format!("{}/", p.strip_prefix(base).unwrap().display()), 0));
                walk(base, &p, out);
            } else {
                let len = std::fs::metadata(&p).unwrap().len();
                out.push((p.strip_prefix(base).unwrap().display().to_string(), len));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// CPU time process `pid` has used so far (user and system, all its
/// threads, those that ended included), in seconds; `None` when the
/// process is gone (it can still be read once the process has ended, until
/// it is reaped). Read from the process's CPU-time clock (nanoseconds, the
/// scheduler's own count); only where that clock cannot be read, from
/// `/proc/PID/stat`, whose clock ticks (usually 10 ms) are too coarse for
/// a transfer of a fraction of a second.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    process_clock_secs(pid).or_else(|| stat_cpu_secs(pid))
}

/// `clock_gettime` of the CPU-time clock of process `pid`.
#[allow(unsafe_code)]
fn process_clock_secs(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id to be written.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid place for the time to be written.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// Process `pid`'s user and system time from `/proc/PID/stat`.
fn stat_cpu_secs(pid: u32) -> Option<f64> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// The CPU model, as `/proc/cpuinfo` names it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it gives a value; panics after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// POSTs a JSON `body` to `http://127.0.0.1:PORT/PATH` (HTTP/1.0);
/// returns the status code and the body.
pub fn http_post(port: u16, path: &str, body: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "POST /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let code = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, raw[split + 4..].to_vec())
}

#[cfg(test)]
mod cpu_time_tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_finer_than_clock_ticks_and_agrees_with_them() {
        let me = std::process::id();
        let before = cpu_secs(me).unwrap();
        // About 3 ms of CPU: under one clock tick.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(3) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let spent = cpu_secs(me).unwrap() - before;
        assert!(spent > 0.001 && spent < 0.5, "{spent}");
        // Both readings count the same thing (ticks lag by up to one).
        let (clock, ticks) = (cpu_secs(me).unwrap(), stat_cpu_secs(me).unwrap());
        assert!((clock - ticks).abs() < 0.05, "{clock} against {ticks}");
    }

    #[test]
    fn no_cpu_time_for_a_process_that_does_not_exist() {
        // Above the kernel's largest pid (4,194,304).
        assert_eq!(cpu_secs(5_000_000), None);
    }
}
