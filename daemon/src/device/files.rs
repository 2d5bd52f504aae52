//! One file of a bundle as an HTTP response: validators, conditional
//! requests, byte ranges, and a body streamed from disk.
//!
//! - Every answer carries `Cache-Control: no-cache` and, when the file's
//!   hash is known, a strong `ETag`: the browser may keep a copy but asks
//!   each time, and a matching `If-None-Match` gets `304` with no body.
//! - `Accept-Ranges: bytes`. A single satisfiable range gets `206` with
//!   `Content-Range`; a range past the end gets `416` with
//!   `Content-Range: bytes */LEN`. A request for several ranges gets the
//!   whole file (`200`), as RFC 9110 allows (no `multipart/byteranges`);
//!   so does a malformed `Range`, and an `If-Range` that does not name the
//!   current `ETag` (the client's copy is of other bytes).
//! - The body is read from the open file in [`CHUNK`]-sized pieces as the
//!   client takes them, so memory stays flat whatever the file's size, and
//!   `Content-Length` is exact.
//!
//! The decision is the pure [`plan`]; [`respond`] carries it out. Ranges
//! are parsed by the `http-range-header` crate, which also backs
//! tower-http's `ServeFile`; `ServeFile` itself is not used because it
//! answers multi-range and malformed requests with 416, ignores
//! `If-Range`, and has no `ETag`.

use std::io::SeekFrom;
use std::ops::RangeInclusive;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use http_range_header::RangeUnsatisfiableError;
use lanseed_protocol::Hash;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// The size of the pieces a body is read in.
pub const CHUNK: usize = 64 * 1024;

/// How to answer a request for a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// `304`: the client's copy is current.
    NotModified,
    /// `200` with the whole file.
    Full,
    /// `206` with these bytes.
    Partial(RangeInclusive<u64>),
    /// `416`: no requested byte exists.
    Unsatisfiable,
}

/// The request headers [`plan`] reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conditions<'a> {
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
    /// `Range`.
    pub range: Option<&'a str>,
}

impl<'a> Conditions<'a> {
    /// The conditions in `headers` (values that are not text are ignored).
    pub fn of(headers: &'a HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        Conditions {
            if_none_match: text(header::IF_NONE_MATCH),
            if_range: text(header::IF_RANGE),
            range: text(header::RANGE),
        }
    }
}

/// The strong validator of a file with BLAKE3 `hash`. A page also names
/// the `bundle` it was served from: its response sets the bundle cookie
/// and `Server-Timing`, so the same bytes from another bundle are another
/// response, and must not be revalidated into the old one.
pub fn etag(hash: &Hash, page_bundle: Option<&str>) -> String {
    match page_bundle {
        Some(b) => format!("\"{}-{b}\"", hash.to_hex()),
        None => format!("\"{}\"", hash.to_hex()),
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison:
/// `W/` prefixes are ignored; `*` matches any).
fn none_match_hits(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// How to answer a request with `cond` for a file of `len` bytes whose
/// validator is `etag` (`None` when unknown: no conditional answers).
pub fn plan(cond: Conditions<'_>, etag: Option<&str>, len: u64) -> Plan {
    if let (Some(inm), Some(tag)) = (cond.if_none_match, etag)
        && none_match_hits(inm, tag)
    {
        return Plan::NotModified;
    }
    let Some(range) = cond.range else {
        return Plan::Full;
    };
    // If-Range: ranges only of the representation the client has; a date
    // never matches (no Last-Modified is sent), a weak tag never does.
    if let Some(if_range) = cond.if_range
        && etag != Some(if_range.trim())
    {
        return Plan::Full;
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Plan::Full;
    };
    match parsed.validate(len) {
        Ok(ranges) if ranges.len() == 1 => Plan::Partial(ranges[0].clone()),
        // Several ranges, or an empty file (its only satisfiable range is
        // the whole of it): the whole file.
        Ok(_) => Plan::Full,
        Err(RangeUnsatisfiableError::Unsatisfiable) => Plan::Unsatisfiable,
        // Too many or overlapping ranges: ignored, as the RFC allows.
        Err(_) => Plan::Full,
    }
}

/// The answer to a request with `headers` for the open `file` of `len`
/// bytes, of type `content_type`, with validator `etag`.
pub async fn respond(
    mut file: tokio::fs::File,
    len: u64,
    content_type: &str,
    etag: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let planned = plan(Conditions::of(headers), etag, len);
    let (status, body, length) = match &planned {
        Plan::NotModified => (StatusCode::NOT_MODIFIED, Body::empty(), None),
        Plan::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, Body::empty(), Some(0)),
        Plan::Full => {
            let stream = ReaderStream::with_capacity(file.take(len), CHUNK);
            (StatusCode::OK, Body::from_stream(stream), Some(len))
        }
        Plan::Partial(r) => {
            let n = r.end() - r.start() + 1;
            if file.seek(SeekFrom::Start(*r.start())).await.is_err() {
                return plain(StatusCode::INTERNAL_SERVER_ERROR);
            }
            let stream = ReaderStream::with_capacity(file.take(n), CHUNK);
            (
                StatusCode::PARTIAL_CONTENT,
                Body::from_stream(stream),
                Some(n),
            )
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert(header::ETAG, v);
    }
    if planned != Plan::NotModified
        && let Ok(v) = HeaderValue::from_str(content_type)
    {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(n) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let content_range = match &planned {
        Plan::Partial(r) => Some(format!("bytes {}-{}/{len}", r.start(), r.end())),
        Plan::Unsatisfiable => Some(format!("bytes */{len}")),
        _ => None,
    };
    if let Some(v) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

fn plain(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"abc\"";

    fn with<'a>(
        range: Option<&'a str>,
        if_range: Option<&'a str>,
        if_none_match: Option<&'a str>,
    ) -> Conditions<'a> {
        Conditions {
            if_none_match,
            if_range,
            range,
        }
    }

    fn ranged(range: &str, len: u64) -> Plan {
        plan(with(Some(range), None, None), Some(TAG), len)
    }

    #[test]
    fn single_ranges_of_every_shape() {
        let len = 1000;
        assert_eq!(ranged("bytes=0-99", len), Plan::Partial(0..=99));
        assert_eq!(ranged("bytes=0-0", len), Plan::Partial(0..=0));
        assert_eq!(ranged("bytes=990-", len), Plan::Partial(990..=999));
        assert_eq!(ranged("bytes=999-", len), Plan::Partial(999..=999));
        assert_eq!(ranged("bytes=-10", len), Plan::Partial(990..=999));
        // A suffix longer than the file, or an end past it: clamped.
        assert_eq!(ranged("bytes=-5000", len), Plan::Partial(0..=999));
        assert_eq!(ranged("bytes=500-5000", len), Plan::Partial(500..=999));
        assert_eq!(ranged("bytes=0-999", len), Plan::Partial(0..=999));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(ranged("bytes=1000-", 1000), Plan::Unsatisfiable);
        assert_eq!(ranged("bytes=6000-7000", 1000), Plan::Unsatisfiable);
        assert_eq!(ranged("bytes=-0", 1000), Plan::Unsatisfiable);
        assert_eq!(ranged("bytes=0-", 0), Plan::Unsatisfiable);
    }

    #[test]
    fn several_or_malformed_ranges_get_the_whole_file() {
        let len = 1000;
        assert_eq!(ranged("bytes=0-9,20-29", len), Plan::Full);
        assert_eq!(ranged("bytes=0-9, 500-", len), Plan::Full);
        assert_eq!(ranged("bytes=5-1", len), Plan::Full);
        assert_eq!(ranged("items=0-9", len), Plan::Full);
        assert_eq!(ranged("bytes=abc", len), Plan::Full);
        assert_eq!(ranged("bytes=", len), Plan::Full);
        assert_eq!(ranged("bytes=0-1,0-2,0-3,0-4", len), Plan::Full);
        // An empty file: the one satisfiable form selects all of nothing.
        assert_eq!(ranged("bytes=-5", 0), Plan::Full);
        assert_eq!(plan(with(None, None, None), Some(TAG), len), Plan::Full);
    }

    #[test]
    fn a_matching_if_none_match_is_not_modified() {
        let p = |inm| plan(with(None, None, Some(inm)), Some(TAG), 10);
        assert_eq!(p("\"abc\""), Plan::NotModified);
        assert_eq!(p("W/\"abc\""), Plan::NotModified);
        assert_eq!(p("\"x\", \"abc\""), Plan::NotModified);
        assert_eq!(p("*"), Plan::NotModified);
        assert_eq!(p("\"abcd\""), Plan::Full);
        assert_eq!(p("abc"), Plan::Full);
        // It wins over a range.
        let r = plan(with(Some("bytes=0-1"), None, Some(TAG)), Some(TAG), 10);
        assert_eq!(r, Plan::NotModified);
        // With no validator nothing is conditional.
        assert_eq!(plan(with(None, None, Some("*")), None, 10), Plan::Full);
    }

    #[test]
    fn if_range_must_name_the_current_strong_tag() {
        let p = |if_range| plan(with(Some("bytes=0-1"), Some(if_range), None), Some(TAG), 10);
        assert_eq!(p("\"abc\""), Plan::Partial(0..=1));
        assert_eq!(p("\"old\""), Plan::Full);
        assert_eq!(p("W/\"abc\""), Plan::Full);
        assert_eq!(p("Wed, 21 Oct 2015 07:28:00 GMT"), Plan::Full);
        let unknown = plan(with(Some("bytes=0-1"), Some(TAG), None), None, 10);
        assert_eq!(unknown, Plan::Full);
    }

    #[test]
    fn pages_name_their_bundle_in_the_tag() {
        let h = Hash::of(b"x");
        assert_eq!(etag(&h, None), format!("\"{}\"", h.to_hex()));
        assert_eq!(
            etag(&h, Some("builtin")),
            format!("\"{}-builtin\"", h.to_hex())
        );
    }

    async fn response(len: usize, headers: &[(&'static str, &str)]) -> (Response, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let file = tokio::fs::File::open(&p).await.unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        let resp = respond(file, len as u64, "video/mp4", Some(TAG), &map).await;
        (resp, bytes)
    }

    async fn body(resp: Response) -> Vec<u8> {
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn bodies_are_the_planned_bytes_across_chunk_sizes() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let (resp, bytes) = response(len, &[]).await;
            assert_eq!(resp.status(), StatusCode::OK);
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_LENGTH], len.to_string());
            assert_eq!(h[header::CONTENT_TYPE], "video/mp4");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert_eq!(h[header::ACCEPT_RANGES], "bytes");
            assert_eq!(h[header::ETAG], TAG);
            assert_eq!(body(resp).await, bytes, "len {len}");
            if len < 2 {
                continue;
            }
            let (resp, bytes) = response(len, &[("range", "bytes=1-")]).await;
            assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(
                resp.headers()[header::CONTENT_RANGE],
                format!("bytes 1-{}/{len}", len - 1)
            );
            assert_eq!(
                resp.headers()[header::CONTENT_LENGTH],
                (len - 1).to_string()
            );
            assert_eq!(body(resp).await, &bytes[1..], "len {len}");
        }
    }

    #[tokio::test]
    async fn not_modified_and_unsatisfiable_have_no_body() {
        let (resp, _) = response(100, &[("if-none-match", TAG)]).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(resp.headers()[header::ETAG], TAG);
        assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
        assert!(body(resp).await.is_empty());
        let (resp, _) = response(100, &[("range", "bytes=100-")]).await;
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes */100");
        assert!(body(resp).await.is_empty());
    }
}
