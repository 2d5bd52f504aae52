//! The baselines the fan-out benchmark runs lanseed against, on the same
//! namespace LAN: an HTTP update server (Debian's `nginx-light`, fetched
//! with `curl`) and BitTorrent (`aria2c` on every host, `opentracker` on
//! the publisher's, the torrent made by `mktorrent`).
//!
//! Each starts its servers in the hosts' namespaces and its clients all
//! at once, and reports when each client was done, from the moment it
//! started them, and the CPU seconds all their processes used. What is
//! "done": for HTTP, the client has the whole file and `sha256sum` of it
//! matches; for BitTorrent, `aria2c` has every piece (each checked against
//! the torrent's SHA-1) and says so through `--on-bt-download-complete`.
//! Clients go on seeding until the last one is done, as a swarm would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::net::{Lan, Netns};
use crate::netrun::{Daemon, Job, poll};

/// What went wrong in a baseline.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A tool is not installed.
    #[error("`{tool}` is missing: install Debian's `{package}` (apt-get install {package})")]
    Missing {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran but did not do its part.
    #[error("{what}: {detail}")]
    Failed {
        /// What was being done.
        what: String,
        /// What it said, or what was wrong.
        detail: String,
    },
    /// Not done in time.
    #[error("timed out after {secs:.0} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The time allowed.
        secs: f64,
    },
}

type Result<T> = std::result::Result<T, BaselineError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BaselineError {
    let what = what.into();
    move |source| BaselineError::Io { what, source }
}

/// The tools each baseline needs, with their Debian packages.
pub const TOOLS: [(&str, &str); 5] = [
    ("nginx", "nginx-light"),
    ("curl", "curl"),
    ("aria2c", "aria2"),
    ("opentracker", "opentracker"),
    ("mktorrent", "mktorrent"),
];

/// The path of `tool` (searched in `$PATH`, then `/usr/sbin` and `/sbin`,
/// where Debian puts nginx), or [`BaselineError::Missing`].
pub fn require(tool: &'static str) -> Result<PathBuf> {
    let package = TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or(tool, |(_, p)| *p);
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(BaselineError::Missing { tool, package })
}

/// When each client was done (seconds from the start of all of them, in
/// host order) and the CPU seconds used by the servers and the clients.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Seconds to each client's end.
    pub done_secs: Vec<f64>,
    /// CPU seconds of every process of the baseline over the run.
    pub cpu_secs: f64,
}

impl Finished {
    /// The time to the last client.
    pub fn last(&self) -> f64 {
        self.done_secs.iter().copied().fold(0.0, f64::max)
    }
}

/// The lowercase hex SHA-256 of `file`.
pub fn sha256_hex(file: &Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(file).map_err(io(format!("read {}", file.display())))?;
    Ok(hex(&sha2::Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes `dir` (and its parents) readable by every user: opentracker
/// reads its whitelist as `nobody`.
fn world_readable_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", dir.display())))
}

/// nginx serving the files of one folder over HTTP/1.1, in a namespace.
pub struct Nginx {
    daemon: Daemon,
    /// `http://ADDR:PORT/`.
    pub base_url: String,
}

impl Nginx {
    /// The port it listens on (its own namespace has no other server).
    pub const PORT: u16 = 8080;

    /// Starts nginx in `ns` on `addr`, serving `root`, with its config,
    /// log and temporary files in `dir`; returns once it accepts.
    pub fn start(ns: &Netns, addr: &str, root: &Path, dir: &Path) -> Result<Nginx> {
        let nginx = require("nginx")?;
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let d = dir.display();
        let port = Self::PORT;
        // Debian's defaults for a file server (sendfile, auto workers);
        // `user root` because the files sit in the run's private folder.
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes auto;\nuser root;\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
             \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 types {{ application/zip zip; }}\n\
             \x20 server {{ listen {addr}:{port}; root {}; }}\n}}\n",
            root.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(io("write nginx.conf"))?;
        let mut daemon = Daemon::spawn(
            ns.command(&nginx)
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log")),
            "nginx",
            &dir.join("nginx.out"),
        )
        .map_err(io("spawn nginx"))?;
        let sock: std::net::SocketAddr =
            format!("{addr}:{port}")
                .parse()
                .map_err(|e| BaselineError::Failed {
                    what: "nginx address".into(),
                    detail: format!("{e}"),
                })?;
        let up = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            ns.connect(sock).ok()
        });
        if up.is_none() {
            daemon.check_running().map_err(io("nginx"))?;
            return Err(BaselineError::Timeout {
                what: format!("nginx on {sock}"),
                secs: 10.0,
            });
        }
        Ok(Nginx {
            daemon,
            base_url: format!("http://{addr}:{port}/"),
        })
    }

    /// CPU seconds of nginx (master and workers) so far.
    pub fn cpu_secs(&self) -> f64 {
        self.daemon.cpu_secs()
    }
}

/// Every host in `clients` fetches `url` at once with curl into its own
/// folder under `dir` and checks the SHA-256 of what it got against
/// `sha256`. The clock starts as the first client is started; returns
/// when the last is done.
pub fn http_fetch_all(
    lan: &Lan,
    clients: &[usize],
    url: &str,
    sha256: &str,
    dir: &Path,
    timeout: Duration,
) -> Result<Finished> {
    let curl = require("curl")?;
    let mut jobs = Vec::new();
    let mut files = Vec::new();
    for &i in clients {
        let d = dir.join(format!("client-{i}"));
        std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
        files.push(d.join("download"));
    }
    let start = Instant::now();
    for (&i, file) in clients.iter().zip(&files) {
        // The device's own work: the download and the check of its hash.
        let script = format!(
            "{} -sS --fail --noproxy '*' -o '{f}' '{url}' && sha256sum '{f}'",
            curl.display(),
            f = file.display()
        );
        let job = Job::spawn(lan.hosts[i].command(Path::new("sh")).args(["-c", &script]))
            .map_err(io("spawn curl"))?;
        jobs.push(Some(job));
    }
    let mut done = vec![None; clients.len()];
    let mut cpu = 0.0;
    while done.iter().any(Option::is_none) {
        if start.elapsed() > timeout {
            return Err(BaselineError::Timeout {
                what: "every HTTP client".into(),
                secs: timeout.as_secs_f64(),
            });
        }
        for (k, slot) in jobs.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(Job::exited) {
                let t = start.elapsed().as_secs_f64();
                let ended = slot.take().expect("a job").finish().map_err(io("curl"))?;
                let out = String::from_utf8_lossy(&ended.output.stdout);
                let got = out.split_whitespace().next().unwrap_or("");
                if !ended.output.status.success() || got != sha256 {
                    return Err(BaselineError::Failed {
                        what: format!("HTTP client on host {}", clients[k]),
                        detail: format!(
                            "{}; sha256 {got:?}, wanted {sha256}; {}",
                            ended.output.status,
                            String::from_utf8_lossy(&ended.output.stderr)
                        ),
                    });
                }
                cpu += ended.cpu_secs;
                done[k] = Some(t);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Finished {
        done_secs: done.into_iter().flatten().collect(),
        cpu_secs: cpu,
    })
}

/// Plain TCP goodput from `ns` fetching `url` (curl into `/dev/null`, as
/// curl times it from its request to the last byte), in bytes/s.
pub fn http_goodput(ns: &Netns, url: &str) -> Result<f64> {
    let curl = require("curl")?;
    let out = ns
        .command(&curl)
        .args(["-sS", "--fail", "--noproxy", "*", "-o", "/dev/null", "-w"])
        .arg("%{size_download} %{time_total} %{time_starttransfer}")
        .arg(url)
        .output()
        .map_err(io("run curl"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match f.as_slice() {
        [bytes, total, first, ..] if out.status.success() && total > first => {
            Ok(bytes / (total - first))
        }
        _ => Err(BaselineError::Failed {
            what: format!("curl {url}"),
            detail: format!("{text:?} {}", String::from_utf8_lossy(&out.stderr)),
        }),
    }
}

/// A torrent file and its info-hash.
#[derive(Clone, Debug)]
pub struct Torrent {
    /// The `.torrent` file.
    pub file: PathBuf,
    /// Its info-hash, 40 lowercase hex digits.
    pub info_hash: String,
}

/// Makes a torrent of `data` with 1 MiB pieces announcing to `announce`
/// (`mktorrent`), and reads its info-hash (`aria2c -S`).
pub fn make_torrent(data: &Path, announce: &str, out: &Path) -> Result<Torrent> {
    let mktorrent = require("mktorrent")?;
    let aria2c = require("aria2c")?;
    let _ = std::fs::remove_file(out);
    let made = Command::new(mktorrent)
        .args(["-l", "20", "-a", announce, "-o"])
        .arg(out)
        .arg(data)
        .output()
        .map_err(io("run mktorrent"))?;
    if !made.status.success() {
        return Err(BaselineError::Failed {
            what: "mktorrent".into(),
            detail: String::from_utf8_lossy(&made.stderr).into_owned(),
        });
    }
    let shown = Command::new(aria2c)
        .arg("-S")
        .arg(out)
        .output()
        .map_err(io("run aria2c -S"))?;
    let text = String::from_utf8_lossy(&shown.stdout);
    let info_hash = info_hash_of(&text).ok_or_else(|| BaselineError::Failed {
        what: "aria2c -S".into(),
        detail: format!("no info hash in {text:?}"),
    })?;
    Ok(Torrent {
        file: out.to_owned(),
        info_hash,
    })
}

/// The `Info Hash:` of `aria2c -S`'s output, checked to be 40 hex digits.
fn info_hash_of(shown: &str) -> Option<String> {
    let h = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("Info Hash:"))?
        .trim()
        .to_ascii_lowercase();
    (h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
}

/// An info-hash as the tracker protocol puts it in a URL (every byte
/// percent-encoded).
fn url_encoded_hash(info_hash: &str) -> String {
    info_hash
        .as_bytes()
        .chunks(2)
        .map(|c| format!("%{}", String::from_utf8_lossy(c).to_ascii_uppercase()))
        .collect()
}

/// The `complete` count (seeders) in a tracker's bencoded scrape reply.
fn scrape_complete(reply: &[u8]) -> Option<u64> {
    let key = b"8:completei";
    let at = reply.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = reply[at..]
        .iter()
        .take(20)
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// opentracker on the publisher's host, serving only one torrent (its
/// `-w` whitelist).
pub struct Tracker {
    daemon: Daemon,
    addr: std::net::SocketAddr,
    /// Its announce URL.
    pub announce: String,
}

impl Tracker {
    /// The port it listens on (TCP and UDP).
    pub const PORT: u16 = 6969;

    /// The announce URL of a tracker on `addr`.
    pub fn announce_url(addr: &str) -> String {
        format!("http://{addr}:{}/announce", Self::PORT)
    }

    /// Starts opentracker in `ns` on `addr`, whitelisting `info_hash`;
    /// its files in `dir` (which it chroots to, as `nobody`).
    pub fn start(ns: &Netns, addr: &str, info_hash: &str, dir: &Path) -> Result<Tracker> {
        let bin = require("opentracker")?;
        world_readable_dir(dir)?;
        let list = dir.join("whitelist");
        std::fs::write(&list, format!("{info_hash}\n")).map_err(io("write the whitelist"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&list, std::fs::Permissions::from_mode(0o644))
                .map_err(io("chmod the whitelist"))?;
        }
        let port = Self::PORT.to_string();
        let mut cmd = ns.command(&bin);
        cmd.current_dir(dir)
            .args(["-i", addr, "-p", &port, "-P", &port, "-d"])
            .arg(dir)
            .args(["-w", "whitelist"]);
        let daemon = Daemon::spawn(&mut cmd, "opentracker", &dir.join("log"))
            .map_err(io("spawn opentracker"))?;
        let addr: std::net::SocketAddr =
            format!("{addr}:{port}")
                .parse()
                .map_err(|e| BaselineError::Failed {
                    what: "tracker address".into(),
                    detail: format!("{e}"),
                })?;
        let announce = format!("http://{addr}/announce");
        let mut t = Tracker {
            daemon,
            addr,
            announce,
        };
        let up = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            ns.connect(addr).ok()
        });
        if up.is_none() {
            t.daemon.check_running().map_err(io("opentracker"))?;
            return Err(BaselineError::Timeout {
                what: format!("opentracker on {addr}"),
                secs: 10.0,
            });
        }
        Ok(t)
    }

    /// Seeders of `info_hash` the tracker knows (a scrape, from `ns`).
    pub fn seeders(&self, ns: &Netns, info_hash: &str) -> Option<u64> {
        use std::io::{Read, Write};
        let mut s = ns.connect(self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /scrape?info_hash={} HTTP/1.0\r\n\r\n",
            url_encoded_hash(info_hash)
        )
        .ok()?;
        let mut reply = Vec::new();
        s.take(64 * 1024).read_to_end(&mut reply).ok()?;
        scrape_complete(&reply)
    }

    /// CPU seconds of the tracker so far.
    pub fn cpu_secs(&self) -> f64 {
        self.daemon.cpu_secs()
    }
}

/// `aria2c` on one host, seeding or downloading one torrent.
pub struct Aria2 {
    daemon: Daemon,
    dir: PathBuf,
}

impl Aria2 {
    /// Starts `aria2c` in `ns` on `torrent`, downloading into (or seeding
    /// from) `dir`. DHT and local peer discovery are off; it seeds until
    /// killed (`--seed-ratio=0.0`), and stops with this process.
    /// `seeding`: `dir` holds the whole file already (taken as it is,
    /// unverified, as a publisher's own copy).
    pub fn start(ns: &Netns, torrent: &Torrent, dir: &Path, seeding: bool) -> Result<Aria2> {
        let bin = require("aria2c")?;
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let hook = dir.join("done.sh");
        std::fs::write(&hook, "#!/bin/sh\n: > \"$3.done\"\n").map_err(io("write the hook"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
                .map_err(io("chmod the hook"))?;
        }
        let mut cmd = ns.command(&bin);
        cmd.args([
            "--no-conf=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--disable-ipv6=true",
            "--seed-ratio=0.0",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--file-allocation=none",
        ])
        .arg(format!("--stop-with-process={}", std::process::id()))
        .arg(format!("--on-bt-download-complete={}", hook.display()))
        .arg("-d")
        .arg(dir);
        if seeding {
            cmd.arg("--bt-seed-unverified=true");
        }
        cmd.arg(&torrent.file);
        let daemon = Daemon::spawn(&mut cmd, "aria2c", &dir.join("aria2c.log"))
            .map_err(io("spawn aria2c"))?;
        Ok(Aria2 {
            daemon,
            dir: dir.to_owned(),
        })
    }

    /// Whether it has the whole torrent, the file `name` (its hook ran).
    fn done(&self, name: &str) -> bool {
        self.dir.join(format!("{name}.done")).exists()
    }

    /// CPU seconds of it (and its hook runs) so far.
    pub fn cpu_secs(&self) -> f64 {
        self.daemon.cpu_secs()
    }
}

/// The BitTorrent baseline: opentracker and a seeding `aria2c` on host
/// `publisher` (holding `data`), then an `aria2c` on every host in
/// `clients`, all at once. The clock starts when the clients are
/// started; making the torrent and the tracker and seeder's start are
/// not counted.
pub fn torrent_fan_out(
    lan: &Lan,
    publisher: usize,
    clients: &[usize],
    data: &Path,
    dir: &Path,
    timeout: Duration,
) -> Result<Finished> {
    let addr = &lan.addrs[publisher];
    let pub_ns = &lan.hosts[publisher];
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir).map_err(io("create the seed folder"))?;
    let name = data
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BaselineError::Failed {
            what: "torrent data".into(),
            detail: format!("{} has no UTF-8 file name", data.display()),
        })?
        .to_owned();
    let seeded = seed_dir.join(&name);
    std::fs::copy(data, &seeded).map_err(io("copy the data to the seed folder"))?;
    let torrent = make_torrent(
        &seeded,
        &Tracker::announce_url(addr),
        &dir.join("t.torrent"),
    )?;
    let tracker = Tracker::start(pub_ns, addr, &torrent.info_hash, &dir.join("tracker"))?;
    let seeder = Aria2::start(pub_ns, &torrent, &seed_dir, true)?;
    let seen = poll(Duration::from_secs(30), Duration::from_millis(100), || {
        tracker
            .seeders(pub_ns, &torrent.info_hash)
            .filter(|&n| n >= 1)
    });
    if seen.is_none() {
        return Err(BaselineError::Timeout {
            what: "the seeder's announce".into(),
            secs: 30.0,
        });
    }
    let cpu0 = tracker.cpu_secs() + seeder.cpu_secs();
    let start = Instant::now();
    let mut peers = Vec::new();
    for &i in clients {
        peers.push(Aria2::start(
            &lan.hosts[i],
            &torrent,
            &dir.join(format!("client-{i}")),
            false,
        )?);
    }
    let mut done = vec![None; clients.len()];
    while done.iter().any(Option::is_none) {
        if start.elapsed() > timeout {
            let have = done.iter().flatten().count();
            return Err(BaselineError::Timeout {
                what: format!("every BitTorrent client ({have} of {} done)", clients.len()),
                secs: timeout.as_secs_f64(),
            });
        }
        for (slot, peer) in done.iter_mut().zip(&peers) {
            if slot.is_none() && peer.done(&name) {
                *slot = Some(start.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu = tracker.cpu_secs() + seeder.cpu_secs() - cpu0
        + peers.iter().map(Aria2::cpu_secs).sum::<f64>();
    // Each client's file, checked once more whole (not timed).
    let want = sha256_hex(data)?;
    for &i in clients {
        let got = sha256_hex(&dir.join(format!("client-{i}")).join(&name))?;
        if got != want {
            return Err(BaselineError::Failed {
                what: format!("BitTorrent client on host {i}"),
                detail: format!("sha256 {got}, wanted {want}"),
            });
        }
    }
    Ok(Finished {
        done_secs: done.into_iter().flatten().collect(),
        cpu_secs: cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_hash_is_read_from_aria2s_listing_and_checked() {
        let shown = "Mode: single\nInfo Hash: DB7E8D7DD6811EC6B30DB926CD700C97145AD893\nPiece Length: 1.0MiB\n";
        assert_eq!(
            info_hash_of(shown).as_deref(),
            Some("db7e8d7dd6811ec6b30db926cd700c97145ad893")
        );
        assert_eq!(info_hash_of("Info Hash: abc\n"), None);
        assert_eq!(
            info_hash_of(&format!("Info Hash: {}\n", "g".repeat(40))),
            None
        );
        assert_eq!(info_hash_of("nothing"), None);
    }

    #[test]
    fn a_hash_is_percent_encoded_byte_by_byte() {
        assert_eq!(url_encoded_hash("db7e00"), "%DB%7E%00");
    }

    #[test]
    fn the_seeder_count_is_read_from_a_scrape_reply() {
        let reply = b"HTTP/1.1 200 OK\r\n\r\nd5:filesd20:\xdb~\x8d}\xd6\x81\x1e\xc6\xb3\r\xb9&\xcdp\x0c\x97\x14Z\xd8\x93d8:completei12e10:downloadedi0e10:incompletei3eeee";
        assert_eq!(scrape_complete(reply), Some(12));
        assert_eq!(scrape_complete(b"d5:filesdee"), None);
        // A count too long to be one is refused, not overflowed.
        let long = format!("8:completei{}e", "9".repeat(40));
        assert_eq!(scrape_complete(long.as_bytes()), None);
    }

    #[test]
    fn a_missing_tool_names_its_debian_package() {
        let e = BaselineError::Missing {
            tool: "opentracker",
            package: "opentracker",
        };
        assert!(e.to_string().contains("apt-get install opentracker"));
        let e = require("lanseed-no-such-tool").unwrap_err();
        assert!(matches!(
            e,
            BaselineError::Missing {
                tool: "lanseed-no-such-tool",
                ..
            }
        ));
    }
}
