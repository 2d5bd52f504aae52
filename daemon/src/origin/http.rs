//! The origin over HTTP(S): a reqwest client (rustls; proxies from the
//! environment; `--origin-header` on every request), conditional GETs of
//! `index.json`, bounded reads of small files, and blob downloads to a
//! file that resume with `Range` where an earlier one stopped, all under
//! `--origin-rate`.
//!
//! Every length the origin declares or sends is checked against the most
//! the cache asked for before it is stored; nothing read here is trusted
//! (the caller verifies every byte against a hash).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use tokio::io::AsyncWriteExt;

use super::plan::{self, Resume};
use crate::node::limit::Limiter;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the origin may stay silent in the middle of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the origin.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request failed (connection, TLS, timeout, cut short).
    #[error("GET {url} failed: {reason}")]
    Request {
        /// The URL.
        url: Url,
        /// The error and its causes, on one line.
        reason: String,
    },
    /// An answer other than the one asked for.
    #[error("GET {url} returned {status}")]
    Status {
        /// The URL.
        url: Url,
        /// The status code.
        status: u16,
    },
    /// The answer is larger than the file may be.
    #[error("GET {url} is larger than the {max} bytes it may be")]
    TooLarge {
        /// The URL.
        url: Url,
        /// The most it may be.
        max: u64,
    },
    /// A path of the tree does not make a URL under the origin.
    #[error("{path} is not a path under the origin {base}")]
    BadPath {
        /// The origin.
        base: Url,
        /// The path.
        path: String,
    },
    /// Writing the download failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// `If-None-Match` / `If-Modified-Since` material of an earlier answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<HeaderValue>,
    /// `Last-Modified`.
    pub last_modified: Option<HeaderValue>,
}

/// A small file's answer.
pub enum Small {
    /// `304 Not Modified`: the earlier copy stands.
    NotModified {
        /// Its `Cache-Control`.
        cache_control: Option<String>,
    },
    /// The file.
    Body {
        /// Its bytes (at most the bound asked for).
        bytes: Vec<u8>,
        /// For the next conditional GET.
        validators: Validators,
        /// Its `Cache-Control`.
        cache_control: Option<String>,
    },
}

/// A static origin.
pub struct Origin {
    client: reqwest::Client,
    base: Url,
    limiter: Option<Limiter>,
    fetched: Arc<AtomicU64>,
}

/// Parses `--origin-header 'Name: value'`.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("--origin-header {text:?} is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("--origin-header {:?} is not a header name", name.trim()))?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("--origin-header {name}: the value is not a header value"))?;
    // Credentials stay out of debug logs.
    value.set_sensitive(true);
    Ok((name, value))
}

impl Origin {
    /// A client of the origin at `base`, sending `headers` with every
    /// request and reading at most `rate` bytes per second of bodies.
    pub fn new(
        base: Url,
        headers: Vec<(HeaderName, HeaderValue)>,
        rate: Option<u64>,
    ) -> Result<Origin, String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(k, v);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("lanseed/", env!("CARGO_PKG_VERSION")))
            .default_headers(map)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make the HTTP client: {}", chain(&e)))?;
        let mut base = base;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Origin {
            client,
            base,
            limiter: rate.map(|r| Limiter::new(Some(r))),
            fetched: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The origin's root URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Body bytes received so far, all files together.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The URL of `path` in the tree.
    pub fn url(&self, path: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::BadPath {
            base: self.base.clone(),
            path: path.chars().take(200).collect(),
        };
        let url = self.base.join(path).map_err(|_| bad())?;
        if !url.as_str().starts_with(self.base.as_str()) {
            return Err(bad());
        }
        Ok(url)
    }

    async fn send(&self, url: &Url, headers: HeaderMap) -> Result<reqwest::Response, HttpError> {
        self.client
            .get(url.clone())
            .headers(headers)
            .send()
            .await
            .map_err(|e| HttpError::Request {
                url: url.clone(),
                reason: chain(&e.without_url()),
            })
    }

    /// Reads one chunk of `resp`'s body under the rate limit.
    async fn chunk(
        &self,
        url: &Url,
        resp: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, HttpError> {
        let chunk = resp.chunk().await.map_err(|e| HttpError::Request {
            url: url.clone(),
            reason: chain(&e.without_url()),
        })?;
        if let Some(c) = &chunk {
            self.fetched.fetch_add(c.len() as u64, Ordering::Relaxed);
            if let Some(l) = &self.limiter {
                l.took(c.len()).await;
            }
        }
        Ok(chunk)
    }

    /// GETs `path`, at most `max` bytes.
    pub async fn get(&self, path: &str, max: u64) -> Result<Vec<u8>, HttpError> {
        match self.get_small(path, max, None).await? {
            Small::Body { bytes, .. } => Ok(bytes),
            // Only a conditional GET takes a 304 (see get_small).
            Small::NotModified { .. } => Err(HttpError::Status {
                url: self.url(path)?,
                status: 304,
            }),
        }
    }

    /// GETs `path`, at most `max` bytes, conditionally on `validators`.
    pub async fn get_small(
        &self,
        path: &str,
        max: u64,
        validators: Option<&Validators>,
    ) -> Result<Small, HttpError> {
        let url = self.url(path)?;
        let mut headers = HeaderMap::new();
        if let Some(v) = validators {
            if let Some(e) = &v.etag {
                headers.insert(header::IF_NONE_MATCH, e.clone());
            }
            if let Some(m) = &v.last_modified {
                headers.insert(header::IF_MODIFIED_SINCE, m.clone());
            }
        }
        let mut resp = self.send(&url, headers).await?;
        let cache_control = resp
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        if resp.status() == StatusCode::NOT_MODIFIED && validators.is_some() {
            return Ok(Small::NotModified { cache_control });
        }
        if resp.status() != StatusCode::OK {
            return Err(HttpError::Status {
                url,
                status: resp.status().as_u16(),
            });
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(HttpError::TooLarge { url, max });
        }
        let validators = Validators {
            etag: resp.headers().get(header::ETAG).cloned(),
            last_modified: resp.headers().get(header::LAST_MODIFIED).cloned(),
        };
        let mut bytes = Vec::new();
        while let Some(c) = self.chunk(&url, &mut resp).await? {
            if (bytes.len() + c.len()) as u64 > max {
                return Err(HttpError::TooLarge { url, max });
            }
            bytes.extend_from_slice(&c);
        }
        Ok(Small::Body {
            bytes,
            validators,
            cache_control,
        })
    }

    /// Downloads `path` into `dest`, at most `max` bytes, continuing a
    /// partial download already there with `Range`. What arrived stays in
    /// `dest` when the download fails, for the next try to continue.
    pub async fn download(&self, path: &str, dest: &Path, max: u64) -> Result<(), HttpError> {
        let url = self.url(path)?;
        let io = |source| HttpError::Io {
            path: dest.to_owned(),
            source,
        };
        let have = match tokio::fs::metadata(dest).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(e)),
        };
        let mut start = match plan::resume(have, max) {
            Resume::Complete => return Ok(()),
            Resume::Fresh => 0,
            Resume::From(n) => n,
        };
        let mut headers = HeaderMap::new();
        if start > 0 {
            let range = HeaderValue::from_str(&format!("bytes={start}-")).expect("ascii");
            headers.insert(header::RANGE, range);
        }
        let mut resp = self.send(&url, headers).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT if start > 0 => {
                let from = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(plan::content_range_start);
                if from != Some(start) {
                    // Not the range asked for: what is there cannot be
                    // continued; the next try starts afresh.
                    let _ = tokio::fs::remove_file(dest).await;
                    return Err(HttpError::Status { url, status: 206 });
                }
            }
            StatusCode::OK => start = 0,
            StatusCode::RANGE_NOT_SATISFIABLE if start > 0 => {
                let len = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(plan::unsatisfied_length);
                if len == Some(start) {
                    // What we hold is the whole file (a compressed blob is
                    // shorter than the bound it was asked with).
                    return Ok(());
                }
                // The file is shorter than what we hold: what we hold is
                // not it. The next try starts afresh.
                let _ = tokio::fs::remove_file(dest).await;
                return Err(HttpError::Status { url, status: 416 });
            }
            s => {
                return Err(HttpError::Status {
                    url,
                    status: s.as_u16(),
                });
            }
        }
        if resp
            .content_length()
            .is_some_and(|n| n.saturating_add(start) > max)
        {
            return Err(HttpError::TooLarge { url, max });
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(start == 0)
            .append(start > 0)
            .open(dest)
            .await
            .map_err(io)?;
        let mut written = start;
        let result = loop {
            match self.chunk(&url, &mut resp).await {
                Ok(Some(c)) => {
                    written += c.len() as u64;
                    if written > max {
                        drop(file);
                        let _ = tokio::fs::remove_file(dest).await;
                        return Err(HttpError::TooLarge { url, max });
                    }
                    if let Err(e) = file.write_all(&c).await {
                        break Err(io(e));
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        // Kept even on failure: the next try continues from here.
        file.flush().await.map_err(io)?;
        result
    }
}

/// An error and its causes on one line (reqwest's own text names only the
/// outermost, e.g. "error sending request").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_headers_parse() {
        let (k, v) = parse_header("Authorization: Bearer abc").unwrap();
        assert_eq!(k, header::AUTHORIZATION);
        assert_eq!(v.to_str().unwrap(), "Bearer abc");
        assert!(v.is_sensitive());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("X-Ok: line\nbreak").is_err());
    }

    #[test]
    fn paths_stay_under_the_origin() {
        let o = Origin::new(Url::parse("http://h/tree").unwrap(), Vec::new(), None).unwrap();
        assert_eq!(o.base().as_str(), "http://h/tree/");
        assert_eq!(
            o.url("blobs/ab/cd").unwrap().as_str(),
            "http://h/tree/blobs/ab/cd"
        );
        assert!(o.url("../secret").is_err());
        assert!(o.url("http://elsewhere/x").is_err());
        assert!(o.url("/abs").is_err());
    }
}
