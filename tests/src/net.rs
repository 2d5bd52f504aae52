//! Network namespaces and node processes for multi-node tests.
//!
//! Every test runs its nodes in network namespaces it makes (`ip netns
//! add`, loopback up), so tests running side by side never see each
//! other's mDNS records, and nothing leaves the machine. Namespaces are
//! deleted and nodes killed on drop; their names start with the run's
//! prefix ([`crate::netrun::run_prefix`]), so a benchmark can also tear
//! them down on a signal ([`crate::netrun::install_teardown`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::lanseed_bin;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of this test, with loopback up.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// A fresh namespace.
    pub fn new() -> Netns {
        let name = format!(
            "{}{}",
            crate::netrun::run_prefix(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Bytes received and sent on interface `dev` in this namespace, as
    /// the kernel counts them (whole frames, headers included).
    pub fn iface_bytes(&self, dev: &str) -> (u64, u64) {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j", "-s", "link", "show", "dev", dev])
            .output()
            .expect("spawn ip");
        assert!(out.status.success(), "ip link show {dev} failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
        let stats = &v[0]["stats64"];
        (
            stats["rx"]["bytes"].as_u64().expect("rx bytes"),
            stats["tx"]["bytes"].as_u64().expect("tx bytes"),
        )
    }

    /// A TCP connection to `addr` made from inside the namespace (by a
    /// thread that enters it just for that; the socket stays in it).
    pub fn connect(&self, addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
        let path = Path::new("/var/run/netns").join(&self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path)?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                std::net::TcpStream::connect(addr)
            })
            .join()
            .expect("the connecting thread does not panic")
        })
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs iproute2's `tool ARGS` (`tc`, say) inside the namespace.
    pub fn ip_tool(&self, tool: &str, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, tool])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {} in {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by veth pairs to a bridge in a third: a small LAN
/// (10.77.N.0/24, addresses .1 and .2), multicast included.
pub struct Lan {
    /// The hosts.
    pub hosts: Vec<Netns>,
    /// Their addresses.
    pub addrs: Vec<String>,
    /// The namespace holding the bridge and its ports (`s0`, `s1`, …).
    pub switch: Netns,
}

impl Lan {
    /// The name of host `i`'s interface (inside its namespace).
    pub fn dev(i: usize) -> String {
        format!("h{i}")
    }

    /// Bytes received and sent by host `i`, counted on its interface.
    pub fn bytes(&self, i: usize) -> (u64, u64) {
        self.hosts[i].iface_bytes(&Self::dev(i))
    }

    /// Builds the LAN with `n` hosts.
    pub fn new(n: usize) -> Lan {
        let switch = Netns::new();
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let net = COUNTER.fetch_add(1, Ordering::SeqCst) % 200 + 20;
        let mut hosts = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let host = Netns::new();
            let (a, b) = (format!("h{i}"), format!("s{i}"));
            switch.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            switch.ip(&["link", "set", &b, "master", "br0"]);
            switch.ip(&["link", "set", &b, "up"]);
            switch.ip(&["link", "set", &a, "netns", &host.name]);
            let addr = format!("10.77.{net}.{}", i + 1);
            host.ip(&["addr", "add", &format!("{addr}/24"), "dev", &a]);
            host.ip(&["link", "set", &a, "up"]);
            host.ip(&["link", "set", &a, "multicast", "on"]);
            hosts.push(host);
            addrs.push(addr);
        }
        Lan {
            hosts,
            addrs,
            switch,
        }
    }

    /// Caps host `i`'s link at `mbit` megabits per second in both
    /// directions: a token bucket (`tc tbf`) on the host's end of its veth
    /// (what it sends) and on the bridge's port (what it receives). The
    /// bucket holds a 64 KiB segment whole (veth passes GSO segments that
    /// size; a smaller bucket would drop them) and queues up to 50 ms.
    pub fn shape(&self, i: usize, mbit: u32) {
        let rate = format!("{mbit}mbit");
        let tbf = ["rate", &rate, "burst", "160kb", "latency", "50ms"];
        let host_end = Self::dev(i);
        let port = format!("s{i}");
        for (ns, dev) in [
            (&self.hosts[i], host_end.as_str()),
            (&self.switch, port.as_str()),
        ] {
            let mut args = vec!["qdisc", "replace", "dev", dev, "root", "tbf"];
            args.extend_from_slice(&tbf);
            ns.ip_tool("tc", &args);
        }
    }

    /// Caps every host's link at `mbit` megabits per second both ways.
    pub fn shape_all(&self, mbit: u32) {
        for i in 0..self.hosts.len() {
            self.shape(i, mbit);
        }
    }
}

/// A `lanseed seed` process with its log.
pub struct NodeProc {
    child: Child,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its store.
    pub store: PathBuf,
}

impl NodeProc {
    /// Starts `lanseed seed --store STORE ARGS` inside `ns`.
    pub fn start(ns: &Netns, store: &Path, args: &[&str]) -> NodeProc {
        Self::start_cmd(ns, "seed", store, args)
    }

    /// Starts `lanseed SUBCOMMAND --store STORE ARGS` inside `ns`.
    pub fn start_cmd(ns: &Netns, subcommand: &str, store: &Path, args: &[&str]) -> NodeProc {
        Self::spawn(ns.command(&lanseed_bin()), subcommand, store, args)
    }

    /// [`NodeProc::start_cmd`] logging at `filter` (`RUST_LOG`, e.g.
    /// `lanseed=info`: a benchmark's nodes need not pay for debug lines).
    pub fn start_cmd_logging(
        ns: &Netns,
        subcommand: &str,
        store: &Path,
        args: &[&str],
        filter: &str,
    ) -> NodeProc {
        let mut cmd = ns.command(&lanseed_bin());
        cmd.env("RUST_LOG", filter);
        Self::spawn_env(cmd, subcommand, store, args)
    }

    /// Starts `lanseed SUBCOMMAND --store STORE ARGS` in the test's own
    /// network namespace (for nodes that find each other only through
    /// `--peer` and `--no-mdns`, on loopback ports of their own, so that
    /// the test can reach them directly).
    pub fn start_here(subcommand: &str, store: &Path, args: &[&str]) -> NodeProc {
        Self::spawn(Command::new(lanseed_bin()), subcommand, store, args)
    }

    fn spawn(mut cmd: Command, subcommand: &str, store: &Path, args: &[&str]) -> NodeProc {
        cmd.env(
            "RUST_LOG",
            std::env::var("LANSEED_LOG").unwrap_or_else(|_| "lanseed=debug".into()),
        );
        Self::spawn_env(cmd, subcommand, store, args)
    }

    /// Spawns `cmd` (its `RUST_LOG` set) and waits for its start.
    fn spawn_env(mut cmd: Command, subcommand: &str, store: &Path, args: &[&str]) -> NodeProc {
        let log = store.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        cmd.args([subcommand, "--store", store.to_str().unwrap()])
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().expect("spawn lanseed seed");
        let node = NodeProc {
            child,
            log,
            store: store.to_owned(),
        };
        node.wait_log("node started", Duration::from_secs(20));
        node
    }

    /// The log so far, without colour codes.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        strip_ansi(&raw)
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log_text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                start.elapsed() < timeout,
                "no `{needle}` in {} after {timeout:?}:\n{}",
                self.log.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id (`ip netns exec` execs, so it is lanseed's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its resident memory now and at its peak (`VmRSS`, `VmHWM`), in
    /// bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Kills it with SIGKILL (no chance to clean up) and waits.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes it (SIGSTOP): its connections stay open, nothing is read.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// Stops with SIGTERM (as a service manager would) and waits.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value a log line gives as `name=` (tracing's `key=value` fields).
pub fn log_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The number a log line gives as `name=`.
pub fn log_field(line: &str, name: &str) -> Option<f64> {
    log_value(line, name)?.parse().ok()
}

/// The timestamp at the start of a log line, in microseconds since the
/// Unix epoch (tracing's RFC 3339 UTC format).
pub fn log_time_us(line: &str) -> i64 {
    let ts = line.split_whitespace().next().expect("timestamp");
    // 2026-11-27T03:47:26.794837Z
    let (date, time) = ts.trim_end_matches('Z').split_once('T').expect("T");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let micros: i64 = format!("{frac:0<6}")[..6].parse().unwrap();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000) + micros
}

/// Headless Chromium (Debian's `chromium`) with a fresh profile.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

/// The flags every test browser runs with.
pub const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    // A headless page counts as hidden: without these, Chromium lowers
    // its renderer's priority and throttles it as a background tab's,
    // which a kiosk's page never is.
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
];

/// Debian's `chromium`, found on `PATH` ([`crate::baseline::require`])
/// before a namespace's `ip netns exec` would fail on it where no one sees.
fn chromium() -> std::path::PathBuf {
    crate::baseline::require("chromium").unwrap_or_else(|e| panic!("{e} (.ci/run installs it)"))
}

impl Browser {
    /// Opens `url` in a browser that stays open (inside `ns`).
    pub fn open(ns: &Netns, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // LANSEED_CHROMIUM_LOG=FILE keeps the browser's log, with the
        // pages' console messages, for looking into a page's timing.
        let log = std::env::var_os("LANSEED_CHROMIUM_LOG").map(|f| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .expect("LANSEED_CHROMIUM_LOG is writable")
        });
        let mut cmd = ns.command(&chromium());
        // A process group of its own, so that its renderer and helpers die
        // with it (they wrote into the removed profile folder otherwise).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()));
        if log.is_some() {
            cmd.arg("--enable-logging=stderr");
        }
        let child = cmd
            .arg(url)
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from))
            .spawn()
            .expect("chromium (Debian package `chromium`)");
        Browser {
            child,
            _profile: profile,
        }
    }

    /// Loads `url`, lets it run for `ms` milliseconds, and returns the DOM.
    pub fn dump_dom(ns: &Netns, url: &str, ms: u32) -> String {
        let profile = tempfile::tempdir().unwrap();
        let out = ns
            .command(Path::new("timeout"))
            .arg("30")
            .arg(chromium())
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--timeout={ms}"))
            .arg("--dump-dom")
            .arg(url)
            .stderr(Stdio::null())
            .output()
            .expect("chromium (Debian package `chromium`)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Browser {
    /// Opens `url` in a `width` x `height` window of a browser that stays
    /// open (inside `ns`), driven through the DevTools protocol on
    /// `debug_port` (in `ns`): for pages whose content arrives after
    /// their load event, which `--dump-dom` does not wait for.
    pub fn open_devtools(
        ns: &Netns,
        url: &str,
        (width, height): (u32, u32),
        debug_port: u16,
    ) -> (Browser, DevTools) {
        let profile = tempfile::tempdir().unwrap();
        let child = ns
            .command(&chromium())
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("--hide-scrollbars")
            .arg(format!("--remote-debugging-port={debug_port}"))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (Debian package `chromium`)");
        let browser = Browser {
            child,
            _profile: profile,
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], debug_port));
        let start = Instant::now();
        let ws = loop {
            let page = ns.connect(addr).ok().and_then(|mut s| {
                use std::io::{Read, Write};
                write!(
                    s,
                    "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                .ok()?;
                // DevTools keeps the connection open: read until the
                // body is whole JSON.
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
                let list: serde_json::Value = loop {
                    let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
                    raw.extend_from_slice(&buf[..n]);
                    let at = raw.windows(4).position(|w| w == b"\r\n\r\n");
                    if let Some(v) = at.and_then(|i| serde_json::from_slice(&raw[i + 4..]).ok()) {
                        break v;
                    }
                };
                list.as_array()?
                    .iter()
                    .find(|t| t["type"] == "page" && t["url"] == url)?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(str::to_owned)
            });
            if let Some(ws) = page {
                break ws;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no DevTools page on port {debug_port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let at = ws.find("/devtools/");
        let path = &ws[at.unwrap_or_else(|| panic!("not a DevTools URL: {ws}"))..];
        let devtools = DevTools::connect(ns.connect(addr).expect("DevTools"), path);
        (browser, devtools)
    }
}

/// A DevTools protocol session with one page, over a minimal WebSocket
/// client (text frames; what Chromium sends back unmasked).
pub struct DevTools {
    stream: std::net::TcpStream,
    next_id: u64,
}

impl DevTools {
    fn connect(mut stream: std::net::TcpStream, path: &str) -> DevTools {
        use std::io::{Read, Write};
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream
                .read_exact(&mut byte)
                .expect("the WebSocket handshake");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        DevTools { stream, next_id: 1 }
    }

    /// Calls `method` with `params`; its `result`.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::json!({ "id": id, "method": method, "params": params }).to_string();
        let len = text.len();
        let mut frame = vec![0x81u8];
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len < 1 << 16 {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        frame.extend_from_slice(&[0; 4]); // a zero mask leaves the text as it is
        frame.extend_from_slice(text.as_bytes());
        self.stream.write_all(&frame).unwrap();
        loop {
            let reply: serde_json::Value =
                serde_json::from_slice(&self.message()).expect("DevTools sends JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of the JavaScript expression `expr` in the page.
    pub fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expr, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// One whole message (its frames joined).
    fn message(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.stream.read_exact(&mut h).expect("a DevTools frame");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).unwrap();
            if h[0] & 0x0f == 0x9 || h[0] & 0x0f == 0xa {
                continue; // ping, pong
            }
            out.extend_from_slice(&payload);
            if h[0] & 0x80 != 0 {
                return out;
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and every process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_number_is_read_by_its_name_and_only_by_it() {
        let line = "2026-12-03T23:42:28.088088Z  INFO lanseed::node: transfer done bytes=209715211 \
                    secs=0.451933155 cpu_secs=0.3125 rate_mb_s=464.0";
        assert_eq!(log_field(line, "cpu_secs"), Some(0.3125));
        assert_eq!(log_field(line, "secs"), Some(0.451933155));
        assert_eq!(log_field(line, "bytes"), Some(209715211.0));
        assert_eq!(log_field(line, "cpu"), None);
        assert_eq!(
            log_field("x cpu_secs=NaN", "cpu_secs").map(f64::is_nan),
            Some(true)
        );
        assert_eq!(log_field("x cpu_secs=", "cpu_secs"), None);
        assert_eq!(log_value(line, "secs"), Some("0.451933155"));
    }
}
