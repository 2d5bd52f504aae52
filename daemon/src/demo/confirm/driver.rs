//! The built-in page driver, for machines without Chromium: a thread per
//! device that does what the kiosk's browser would. It watches the
//! device's current bundle (`/__lanseed/current`); on every change (a
//! switch, a rollback) it loads the page, then every script the page
//! references, and only if they all load does it call the confirmation
//! endpoint `client.js` calls (`POST /__lanseed/ready` with the bundle id
//! of the page's own response, from `Server-Timing`). It runs no
//! JavaScript: a page whose scripts all load counts as healthy.
//!
//! The parsing is pure ([`script_srcs`], [`resolve`], [`page_bundle`],
//! [`Response::parse`]); the HTTP is a bare HTTP/1.0 exchange with the
//! device on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::demo::error::DemoError;

/// How often the driver looks at the device's current bundle.
const POLL: Duration = Duration::from_millis(100);

/// The most a response may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes a response may have.
const MAX_RESPONSE: u64 = 16 << 20;

/// A running driver; stopped on drop.
pub struct Driver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Driver {
    /// Starts following the page served at `addr` (on loopback).
    pub fn start(addr: SocketAddr) -> Result<Driver, DemoError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("page-driver".into())
            .spawn(move || follow(addr, &flag))
            .map_err(|source| DemoError::Spawn {
                name: "the page driver".into(),
                program: "a thread".into(),
                source,
            })?;
        Ok(Driver {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loads the page whenever the device's current bundle changes.
fn follow(addr: SocketAddr, stop: &AtomicBool) {
    let mut loaded: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let current = get(addr, "/__lanseed/current")
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| v["bundle_id"].as_str().map(str::to_owned));
        if let Some(current) = current
            && loaded.as_ref() != Some(&current)
            && load_page(addr).is_some()
        {
            loaded = Some(current);
        }
        std::thread::sleep(POLL);
    }
}

/// Loads `/` and its scripts; confirms the page's bundle when every
/// script loaded. `None` when the page itself could not be loaded.
fn load_page(addr: SocketAddr) -> Option<()> {
    let page = get(addr, "/").ok().filter(|r| r.status == 200)?;
    let html = String::from_utf8_lossy(&page.body);
    let all_load = script_srcs(&html).iter().all(|src| {
        resolve("/", src)
            .and_then(|path| get(addr, &path).ok())
            .is_some_and(|r| r.status == 200)
    });
    if let (true, Some(bundle)) = (all_load, page.header("server-timing").and_then(page_bundle)) {
        let body = serde_json::json!({ "bundle": bundle }).to_string();
        let _ = request(addr, "POST", "/__lanseed/ready", Some(&body));
    }
    Some(())
}

/// An HTTP response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// Parses a whole HTTP/1.x response (the connection closed after it).
    pub fn parse(raw: &[u8]) -> Option<Response> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&raw[..split]).ok()?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    }

    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(addr, "GET", path, None)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let body = json.unwrap_or("");
    let head = match json {
        Some(_) => format!(
            "Content-Type: application/json\r\nOrigin: http://{addr}\r\nContent-Length: {}\r\n",
            body.len()
        ),
        None => String::new(),
    };
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{head}\r\n{body}"
    )?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw)?;
    Response::parse(&raw).ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

/// The bundle id in a `Server-Timing` header (`lanseed;desc="ID"`).
pub fn page_bundle(server_timing: &str) -> Option<String> {
    server_timing.split(',').find_map(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        if parts.next()? != "lanseed" {
            return None;
        }
        parts.find_map(|p| {
            p.strip_prefix("desc=")
                .map(|d| d.trim_matches('"').to_owned())
        })
    })
}

/// The `src` of every `<script>` in `html`, in order (comments skipped).
pub fn script_srcs(html: &str) -> Vec<String> {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<!--") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("-->")
            .map_or("", |end| &rest[start + end + 3..]);
    }
    text.push_str(rest);
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = lower[at..].find("<script") {
        let tag_start = at + open;
        let Some(close) = lower[tag_start..].find('>') else {
            break;
        };
        let tag = &text[tag_start..tag_start + close];
        if let Some(src) = attribute(tag, "src") {
            out.push(src);
        }
        at = tag_start + close;
    }
    out
}

/// The value of attribute `name` in the start tag `tag`.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let pos = from + i;
        from = pos + name.len();
        let before = lower[..pos].chars().last();
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let after = tag[from..].trim_start();
        let Some(value) = after.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        return Some(match value.chars().next()? {
            q @ ('"' | '\'') => value[1..].split(q).next()?.to_owned(),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()?
                .trim_end_matches('/')
                .to_owned(),
        });
    }
    None
}

/// The path on the device that `src`, referenced from the page at
/// `base` (a path), names; `None` for a script on another host (the
/// driver stays on loopback, so such a page does not count as loaded).
pub fn resolve(base: &str, src: &str) -> Option<String> {
    if src.contains("://") || src.starts_with("//") || src.is_empty() {
        return None;
    }
    let src = src.split(['?', '#']).next().unwrap_or("");
    let joined = if src.starts_with('/') {
        src.to_owned()
    } else {
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{src}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_of_the_example_page() {
        let html = String::from_utf8(
            crate::demo::app::Build::V1
                .files()
                .into_iter()
                .find(|(p, _)| *p == "index.html")
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(
            script_srcs(&html),
            ["/__lanseed/client.js", "assets/app.js"]
        );
    }

    #[test]
    fn script_tags_in_their_many_forms() {
        let html = r#"<SCRIPT SRC='a.js'></SCRIPT>
            <script type="module" src = "/b.js?v=1"></script>
            <script data-src="no.js">inline()</script>
            <!-- <script src="commented.js"></script> -->
            <script src=c.js></script>
            <script async src="d.js"/>"#;
        assert_eq!(script_srcs(html), ["a.js", "/b.js?v=1", "c.js", "d.js"]);
        assert!(script_srcs("<script>inline</script>").is_empty());
        assert!(script_srcs("<script src=").is_empty());
    }

    #[test]
    fn paths_resolve_against_the_page() {
        assert_eq!(
            resolve("/", "assets/app.js").as_deref(),
            Some("/assets/app.js")
        );
        assert_eq!(resolve("/a/b.html", "c.js").as_deref(), Some("/a/c.js"));
        assert_eq!(resolve("/a/b.html", "../c.js").as_deref(), Some("/c.js"));
        assert_eq!(resolve("/", "/x.js?v=2#h").as_deref(), Some("/x.js"));
        assert_eq!(resolve("/", "../../etc.js").as_deref(), Some("/etc.js"));
        assert_eq!(resolve("/", "https://cdn.example/x.js"), None);
        assert_eq!(resolve("/", "//cdn.example/x.js"), None);
    }

    #[test]
    fn the_page_names_its_bundle_in_server_timing() {
        assert_eq!(
            page_bundle("lanseed;desc=\"ab12\"").as_deref(),
            Some("ab12")
        );
        assert_eq!(
            page_bundle("db;dur=2, lanseed;desc=\"cd\"").as_deref(),
            Some("cd")
        );
        assert_eq!(page_bundle("db;desc=\"x\""), None);
    }

    #[test]
    fn responses_parse() {
        let r = Response::parse(b"HTTP/1.1 404 Not Found\r\nServer-Timing: x\r\n\r\nnope").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("server-timing"), Some("x"));
        assert_eq!(r.body, b"nope");
        assert_eq!(Response::parse(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
