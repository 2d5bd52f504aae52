//! A small static HTTP/1.1 server for the site cache's tests: serves a
//! folder (a `publish-static` tree) on loopback with `ETag` /
//! `If-None-Match`, `Range` (`bytes=N-` and `bytes=N-M`), a log of the
//! requests and the bytes sent, and a switch that cuts blob answers short
//! after some bytes (the full `Content-Length` announced, the connection
//! closed mid-file), as a dropped WAN link does.
//!
//! One connection per request (`Connection: close`), a thread each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Served {
    /// The path asked for, without the leading `/`.
    pub path: String,
    /// Its `Range` header.
    pub range: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
}

#[derive(Default)]
struct State {
    log: Mutex<Vec<Served>>,
    /// Bytes written to connections, headers included.
    wire_bytes: AtomicU64,
    /// Cut answers under `blobs/` after this many body bytes (`u64::MAX`:
    /// never).
    cut_after: AtomicU64,
    stop: AtomicBool,
}

/// A running server; stops when dropped.
pub struct OriginServer {
    port: u16,
    state: Arc<State>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OriginServer {
    /// Serves `root` on 127.0.0.1, a port the system picks.
    pub fn start(root: &Path) -> OriginServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            cut_after: AtomicU64::new(u64::MAX),
            ..State::default()
        });
        let root = root.to_owned();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            while !st.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, root) = (st.clone(), root.clone());
                        std::thread::spawn(move || {
                            let _ = answer(conn, &root, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        OriginServer {
            port,
            state,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Cuts every answer under `blobs/` after `bytes` body bytes from now
    /// on; `None` serves them whole again.
    pub fn cut_blobs_after(&self, bytes: Option<u64>) {
        self.state
            .cut_after
            .store(bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Every request answered so far.
    pub fn served(&self) -> Vec<Served> {
        self.state.log.lock().unwrap().clone()
    }

    /// Bytes written to connections so far, headers included.
    pub fn wire_bytes(&self) -> u64 {
        self.state.wire_bytes.load(Ordering::Relaxed)
    }

    /// Body bytes sent for paths under `blobs/` so far.
    pub fn blob_body_bytes(&self) -> u64 {
        self.served()
            .iter()
            .filter(|s| s.path.starts_with("blobs/"))
            .map(|s| s.body_bytes)
            .sum()
    }
}

impl Drop for OriginServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The file's strong validator: its size and modification time.
fn etag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("\"{:x}-{:x}\"", meta.len(), mtime.as_nanos())
}

/// The first and last byte a `Range` header asks of a file of `len` bytes;
/// `None` when it cannot be satisfied.
fn range_of(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => len.checked_sub(1)?,
        e => e.parse::<u64>().ok()?.min(len.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

fn answer(conn: TcpStream, root: &Path, st: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (mut range, mut if_none_match) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_owned()),
                "if-none-match" => if_none_match = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    let path = target.trim_start_matches('/').to_owned();
    let file: Option<PathBuf> = (!path.split('/').any(|c| c == ".." || c.is_empty()))
        .then(|| root.join(&path))
        .filter(|p| p.is_file());
    let mut out = conn;
    let mut send = |status: u16, headers: &[(&str, String)], body: &[u8], st: &State| {
        let reason = match status {
            200 => "OK",
            206 => "Partial Content",
            304 => "Not Modified",
            404 => "Not Found",
            _ => "Range Not Satisfiable",
        };
        let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        out.write_all(body)?;
        st.wire_bytes
            .fetch_add((head.len() + body.len()) as u64, Ordering::Relaxed);
        std::io::Result::Ok(())
    };
    let log = |status, body_bytes| {
        st.log.lock().unwrap().push(Served {
            path: path.clone(),
            range: range.clone(),
            status,
            body_bytes,
        })
    };
    let Some(file) = file else {
        log(404, 0);
        return send(404, &[("Content-Length", "0".into())], b"", st);
    };
    let meta = std::fs::metadata(&file)?;
    let tag = etag(&meta);
    if if_none_match.as_deref() == Some(tag.as_str()) {
        log(304, 0);
        return send(304, &[("ETag", tag)], b"", st);
    }
    let len = meta.len();
    let (status, start, end) = match &range {
        None => (200, 0, len),
        Some(r) => match range_of(r, len) {
            Some((a, b)) => (206, a, b + 1),
            None => {
                log(416, 0);
                let cr = ("Content-Range", format!("bytes */{len}"));
                return send(416, &[cr, ("Content-Length", "0".into())], b"", st);
            }
        },
    };
    let mut data = Vec::new();
    let mut f = std::fs::File::open(&file)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start))?;
    f.take(end - start).read_to_end(&mut data)?;
    let mut headers = vec![
        ("Content-Length", (end - start).to_string()),
        ("ETag", tag),
        ("Accept-Ranges", "bytes".into()),
    ];
    if status == 206 {
        headers.push(("Content-Range", format!("bytes {start}-{}/{len}", end - 1)));
    }
    let cut = st.cut_after.load(Ordering::Relaxed);
    let body = if path.starts_with("blobs/") && (data.len() as u64) > cut {
        &data[..cut as usize]
    } else {
        &data[..]
    };
    log(status, body.len() as u64);
    send(status, &headers, body, st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(range_of("bytes=0-", 10), Some((0, 9)));
        assert_eq!(range_of("bytes=4-", 10), Some((4, 9)));
        assert_eq!(range_of("bytes=4-5", 10), Some((4, 5)));
        assert_eq!(range_of("bytes=4-99", 10), Some((4, 9)));
        assert_eq!(range_of("bytes=10-", 10), None);
        assert_eq!(range_of("bytes=0-", 0), None);
        assert_eq!(range_of("lines=0-", 10), None);
    }
}
