//! The kiosk server of `lanseed device` over plain HTTP/1.1, each test
//! with an agent of its own in a namespace of its own, serving its builtin
//! bundle: byte ranges of a 50 MB video (206, 416), the whole of it
//! streamed to a slow reader in flat memory, ETag revalidation (304, a
//! page's cookie kept), and the Host and Origin guards.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lanseed_protocol::Hash;
use lanseed_tests::net::{Netns, NodeProc};
use lanseed_tests::{Rng, keygen, path_str};

const VIDEO_LEN: usize = 50_000_000;
const MIB: u64 = 1024 * 1024;
const INDEX: &str = "<!doctype html><h1>builtin</h1>";

/// A device agent serving a builtin bundle, in its own namespace.
struct Agent {
    node: NodeProc,
    ns: Netns,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The builtin bundle: `index.html`, `app.js`, and `video.mp4` when given.
fn agent(port: u16, video: Option<&[u8]>, extra: &[&str]) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let builtin = dir.path().join("builtin");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("index.html"), INDEX).unwrap();
    std::fs::write(builtin.join("app.js"), "console.log('app');").unwrap();
    if let Some(v) = video {
        std::fs::write(builtin.join("video.mp4"), v).unwrap();
    }
    let serve = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--app",
        "com.example.kiosk",
        "--trust",
        &trust,
        "--builtin",
        path_str(&builtin),
        "--serve",
        &serve,
        "--no-mdns",
    ];
    args.extend_from_slice(extra);
    let ns = Netns::new();
    let node = NodeProc::start_cmd(&ns, "device", &dir.path().join("device"), &args);
    node.wait_log("serving the active bundle", Duration::from_secs(20));
    Agent {
        node,
        ns,
        port,
        _dir: dir,
    }
}

fn video() -> Vec<u8> {
    let mut rng = Rng::new(50);
    let mut v = Vec::with_capacity(VIDEO_LEN + 8);
    while v.len() < VIDEO_LEN {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(VIDEO_LEN);
    v
}

/// A response: status, header lines, body.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    /// The value of header `name` (the first, case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.parse().ok()
    }
}

impl Agent {
    /// Sends a request (with `Host: 127.0.0.1:PORT` unless `headers` name
    /// one, and `Connection: close`); returns the connection, its head read.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (BufReader<TcpStream>, u16, String) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut s = self.ns.connect(addr).expect("connect to the agent");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req += &format!("Host: 127.0.0.1:{}\r\n", self.port);
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        if !body.is_empty() {
            req += &format!("Content-Length: {}\r\n", body.len());
        }
        req += "Connection: close\r\n\r\n";
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "headers end: {head}");
            if line == "\r\n" {
                break;
            }
            head += &line;
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (r, status, head)
    }

    /// The whole exchange; the body is read to its Content-Length.
    fn ask(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let (mut r, status, head) = self.send(method, path, headers, body);
        let mut reply = Reply {
            status,
            head,
            body: Vec::new(),
        };
        if status != 304 && method != "HEAD" {
            let n = reply.content_length().expect("a Content-Length");
            reply.body.resize(n, 0);
            r.read_exact(&mut reply.body).unwrap();
        }
        reply
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.ask("GET", path, headers, b"")
    }
}

fn quoted_hash(bytes: &[u8]) -> String {
    format!("\"{}\"", Hash::of(bytes).to_hex())
}

#[test]
fn byte_ranges_of_a_large_file_get_206_and_past_the_end_416() {
    let v = video();
    let a = agent(8791, Some(&v), &[]);
    let etag = quoted_hash(&v);

    let r = a.get("/video.mp4", &[("Range", "bytes=0-99")]);
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.header("content-range"), Some("bytes 0-99/50000000"));
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.body, &v[..100]);

    let r = a.get("/video.mp4", &[("Range", "bytes=49000000-")]);
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 49000000-49999999/50000000")
    );
    assert_eq!(r.content_length(), Some(1_000_000));
    assert!(r.body == v[49_000_000..], "the tail differs");

    let r = a.get("/video.mp4", &[("Range", "bytes=60000000-")]);
    assert_eq!(r.status, 416, "{}", r.head);
    assert_eq!(r.header("content-range"), Some("bytes */50000000"));
    assert!(r.body.is_empty());

    // A range of what the client no longer has (If-Range names other
    // bytes): the whole file; checked with HEAD, which sends no body.
    let r = a.ask(
        "HEAD",
        "/video.mp4",
        &[("Range", "bytes=0-99"), ("If-Range", "\"old\"")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.content_length(), Some(VIDEO_LEN));
    // If-Range naming the current tag: the range.
    let r = a.get(
        "/video.mp4",
        &[("Range", "bytes=10-19"), ("If-Range", etag.as_str())],
    );
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.body, &v[10..20]);

    // Several ranges: the whole file (small one here).
    let r = a.get("/index.html", &[("Range", "bytes=0-1,5-6")]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, INDEX.as_bytes());
}

#[test]
fn a_whole_large_file_streams_to_a_slow_reader_in_flat_memory() {
    let v = video();
    let a = agent(8792, Some(&v), &[]);
    let (before, _) = a.node.rss();
    let (mut r, status, head) = a.send("GET", "/video.mp4", &[], b"");
    let reply = Reply {
        status,
        head,
        body: Vec::new(),
    };
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_eq!(reply.content_length(), Some(VIDEO_LEN));
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.header("content-type"), Some("video/mp4"));
    let mut body = Vec::with_capacity(VIDEO_LEN);
    let mut buf = vec![0u8; 16 * 1024];
    let mut peak = 0;
    let mut samples = 0;
    let start = Instant::now();
    let mut reads = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads.is_multiple_of(128) {
            let (rss, _) = a.node.rss();
            peak = peak.max(rss);
            samples += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let (after, hwm) = a.node.rss();
    println!(
        "streamed {} MB in {:.1} s; agent RSS before {} MiB, peak while streaming {} MiB \
         ({samples} samples), after {} MiB, high-water mark {} MiB",
        body.len() / 1_000_000,
        start.elapsed().as_secs_f64(),
        before / MIB,
        peak / MIB,
        after / MIB,
        hwm / MIB
    );
    assert_eq!(body.len(), VIDEO_LEN);
    assert!(Hash::of(&body) == Hash::of(&v), "the body's BLAKE3 differs");
    assert!(samples > 10, "too few RSS samples: {samples}");
    assert!(
        peak < 64 * MIB,
        "the agent's RSS reached {} MiB while streaming",
        peak / MIB
    );
    // The file is 48 MiB: holding it, or most of it, would show.
    assert!(
        peak.saturating_sub(before) < 16 * MIB,
        "the agent's RSS grew by {} MiB while streaming",
        peak.saturating_sub(before) / MIB
    );
}

#[test]
fn revalidation_with_the_etag_gets_304_and_a_page_keeps_its_bundle() {
    let a = agent(8793, None, &[]);
    let r = a.get("/app.js", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    let etag = quoted_hash(b"console.log('app');");
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("content-type"), Some("text/javascript"));

    let r = a.get("/app.js", &[("If-None-Match", etag.as_str())]);
    assert_eq!(r.status, 304, "{}", r.head);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-length"), None);
    let r = a.get("/app.js", &[("If-None-Match", "\"something else\"")]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, b"console.log('app');");

    // A page's tag names its bundle; its 304 still pins the page.
    let r = a.get("/", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    let page_tag = r.header("etag").unwrap().to_owned();
    assert_eq!(
        page_tag,
        format!("\"{}-builtin\"", Hash::of(INDEX.as_bytes()).to_hex())
    );
    let r = a.get("/", &[("If-None-Match", page_tag.as_str())]);
    assert_eq!(r.status, 304, "{}", r.head);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.starts_with("lanseed_bundle=builtin")),
        "{}",
        r.head
    );
    assert_eq!(r.header("server-timing"), Some("lanseed;desc=\"builtin\""));
    // JSON stays out of caches; a missing file too.
    let r = a.get("/__lanseed/current", &[]);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = a.get("/missing.js", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[test]
fn foreign_hosts_and_cross_origin_posts_are_refused() {
    let a = agent(8794, None, &[]);
    let port = a.port;
    assert_eq!(a.get("/", &[]).status, 200);
    assert_eq!(
        a.get("/", &[("Host", &format!("localhost:{port}"))]).status,
        200
    );

    let r = a.get("/", &[("Host", "evil.example")]);
    assert_eq!(r.status, 403, "{}", r.head);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("--serve-name evil.example"), "{text}");
    let r = a.get("/__lanseed/status", &[("Host", "evil.example:8794")]);
    assert_eq!(r.status, 403, "{}", r.head);

    let ready = |headers: &[(&str, &str)]| {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        a.ask("POST", "/__lanseed/ready", &all, br#"{"bundle":"builtin"}"#)
    };
    let r = ready(&[("Origin", "http://evil.example")]);
    assert_eq!(r.status, 403, "{}", r.head);
    let r = ready(&[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(r.status, 403, "{}", r.head);
    let own = format!("http://127.0.0.1:{port}");
    let r = ready(&[("Origin", &own), ("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(String::from_utf8_lossy(&r.body).contains("builtin"));
}

#[test]
fn a_serve_name_is_answered() {
    let a = agent(8795, None, &["--serve-name", "kiosk.local"]);
    let r = a.get("/", &[("Host", "kiosk.local:8787")]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, INDEX.as_bytes());
    let r = a.ask(
        "POST",
        "/__lanseed/ready",
        &[
            ("Host", "kiosk.local:8795"),
            ("Origin", "http://kiosk.local:8795"),
            ("Content-Type", "application/json"),
        ],
        br#"{"bundle":"builtin"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(a.get("/", &[("Host", "other.local")]).status, 403);
}

#[test]
fn the_event_stream_begins_with_the_current_bundle() {
    // A page that connects (or reconnects) while a switch happens is told
    // by this first event, with no request of its own.
    let a = agent(8796, None, &[]);
    let (mut r, status, head) = a.send("GET", "/__lanseed/events", &[], b"");
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        Reply {
            status,
            head,
            body: Vec::new()
        }
        .header("cache-control"),
        Some("no-store")
    );
    let mut lines: Vec<String> = Vec::new();
    while !lines.iter().any(|l| l.starts_with("data:")) {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "ended: {lines:?}");
        lines.push(line.trim_end().to_owned());
    }
    assert!(lines.iter().any(|l| l == "event: current"), "{lines:?}");
    let data = lines.last().unwrap().trim_start_matches("data:").trim();
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["bundle"], "builtin", "{data}");
}
