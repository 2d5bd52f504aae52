//! The gateway's handlers, one per Capgo path (the table is in the module
//! above). Each reads its body within its path's limit, decides with the
//! pure parts ([`super::choose`], [`super::ratelimit`], [`super::stats`])
//! and answers JSON; downloads are streamed from the store with byte
//! ranges and a strong `ETag` by the device server's
//! [`files::respond`](crate::device::files::respond).
//!
//! Request bodies replayed in the tests come from plugin 8.51's
//! `CapgoUpdater.java` (`getLatest`, `setChannel`, `getChannel`,
//! `listChannels`, `sendStats`); `manifest_size` from Capgo's backend
//! (`supabase/functions/_backend/plugins/updates.ts` and
//! `utils/manifest_size.ts`: `{…info, manifest | files, version?}` →
//! `{totalSize, knownFiles, unknownFiles, files}`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lanseed_protocol::store::cache::Brotli;
use serde_json::{Value, json};

use super::Gateway;
use super::artifacts::capgo_key_matches;
use super::choose::{self, Choice, Device};
use super::ratelimit::Verdict;
use super::stats;
use super::wire::{BadRequest, Info, NoOffer, Offer, text};
use crate::device::files;
use crate::metrics::Answered;

/// Largest body of an update check or a channel request.
pub const MAX_SMALL_BODY: usize = 64 << 10;
/// Largest `manifest_size` body.
pub const MAX_MANIFEST_SIZE_BODY: usize = 4 << 20;
/// Most files one `manifest_size` request may ask about.
pub const MAX_MANIFEST_SIZE_FILES: usize = 50_000;
/// JSON values a file entry of a `manifest_size` request takes at most
/// (an object, three keys and values, a comma): the bound on a body's
/// structural bytes.
const MANIFEST_SIZE_VALUES_PER_FILE: usize = 8;
/// `manifest_size` bodies parsed at once (each may take tens of MB).
static MANIFEST_SIZE_PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The routes.
pub(crate) fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/updates",
            post(updates).layer(DefaultBodyLimit::max(MAX_SMALL_BODY)),
        )
        .route(
            "/updates/manifest_size",
            post(manifest_size).layer(DefaultBodyLimit::max(MAX_MANIFEST_SIZE_BODY)),
        )
        .route(
            "/stats",
            post(stats_posted).layer(DefaultBodyLimit::max(stats::MAX_BODY)),
        )
        .route(
            "/channel_self",
            get(channel_list)
                .put(channel_read)
                .post(channel_set)
                .delete(channel_unset)
                .layer(DefaultBodyLimit::max(MAX_SMALL_BODY)),
        )
        .route("/capgo/zip/{name}", get(zip))
        .route("/capgo/file/{name}", get(file))
        .route("/metrics", get(metrics))
        .route("/", get(super::page::index))
        .route("/status", get(super::page::index))
        .route("/status.json", get(super::page::snapshot))
        .route("/status/events", get(super::page::events))
        .fallback(not_found)
        .with_state(gw)
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn bad_request(b: BadRequest) -> Response {
    json_response(StatusCode::BAD_REQUEST, &b)
}

fn error(status: StatusCode, error: &'static str, message: impl Into<String>) -> Response {
    json_response(
        status,
        &json!({ "error": error, "message": message.into() }),
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path on this gateway",
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Gateway {
    /// `429` with `Retry-After` when `device` checks too often.
    fn rate_limited(&self, device: &str) -> Option<Response> {
        let verdict = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(device, Instant::now());
        let Verdict::Wait(secs) = verdict else {
            return None;
        };
        let mut r = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "error": "too_many_requests",
                "message": format!("more than one check a second; try again in {secs}s"),
                "kind": "failed",
            }),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        Some(r)
    }

    /// The channel `info`'s device follows.
    fn channel_of(&self, info: &Info) -> String {
        let o = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        choose::channel_for(
            o.get(&info.app_id, &info.device_id),
            info.default_channel.as_deref(),
        )
        .to_owned()
    }

    /// `scheme://host` for links: the request's `Host` when it is a plain
    /// host name or address (with a port), else the gateway's own address.
    fn base_url(&self, headers: &HeaderMap) -> String {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
            });
        match host {
            Some(h) => format!("{}://{h}", self.scheme),
            None => format!("{}://{}", self.scheme, self.local),
        }
    }
}

/// `POST /updates`: the update check.
async fn updates(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let info = match Info::from_json(&body) {
        Ok(i) => i,
        Err(b) => return bad_request(b),
    };
    if let Some(r) = gw.rate_limited(&info.device_id) {
        return r;
    }
    let snap = gw.snapshot();
    let channel = gw.channel_of(&info);
    let candidates = snap.candidates();
    let device = Device {
        id: &info.device_id,
        app: &info.app_id,
        channel: &channel,
        version_name: &info.version_name,
        version_build: &info.version_build,
    };
    let i = match choose::choose(&candidates, &device, unix_now()) {
        Choice::UnknownApp => {
            return no_offer(NoOffer {
                kind: "failed",
                error: "unknown_app",
                message: format!("this gateway holds no release of {}", info.app_id),
            });
        }
        Choice::UpToDate => {
            return no_offer(NoOffer::up_to_date(format!(
                "no newer release of {} on channel {channel} for this device",
                info.app_id
            )));
        }
        Choice::Offer(i) => i,
    };
    let held = &snap.held[i];
    if let Some(key_id) = &info.key_id
        && !capgo_key_matches(&held.release, key_id)
    {
        return no_offer(NoOffer {
            kind: "blocked",
            error: "key_id_mismatch",
            message: format!(
                "release {} is not encrypted for this app's public key",
                held.display
            ),
        });
    }
    // An app with a Capgo public key (it sends its key id) takes only the
    // encrypted zip made for that key; one without, the plain zip.
    let encrypted = info.key_id.is_some();
    let zip = match gw.artifacts.zip_for(&held.release, encrypted).await {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!("{e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "bundle_unavailable",
                "the bundle cannot be read from the store now",
            );
        }
    };
    let base = gw.base_url(&headers);
    let bundle = held.release.release().bundle_id;
    let settings = gw.channels();
    let manifest_mode = settings
        .get(&info.app_id, &channel)
        .is_some_and(|c| c.capgo_manifest);
    // Manifest mode sends plain files: never to an app that decrypts.
    let manifest = match (manifest_mode && !encrypted, snap.manifests.get(&bundle)) {
        (true, Some(m)) => match gw
            .artifacts
            .manifest_for(&held.release, m.clone(), &base)
            .await
        {
            Ok(entries) => Some(entries),
            Err(e) => {
                tracing::warn!("{e}");
                None // the zip still serves
            }
        },
        _ => None,
    };
    tracing::info!(device = %info.device_id, app = %info.app_id, %channel, version = %held.display, manifest = manifest.is_some(), "gateway offered an update");
    let mut r = json_response(
        StatusCode::OK,
        &Offer {
            version: held.display.clone(),
            url: format!("{base}/capgo/zip/{}.zip", hex::encode(zip.sha256)),
            checksum: zip.checksum,
            session_key: zip.session_key,
            manifest,
        },
    );
    r.extensions_mut().insert(Answered("update"));
    r
}

/// An update check's answer without an update, marked with its `kind` for
/// the request counter.
fn no_offer(n: NoOffer) -> Response {
    let kind = n.kind;
    let mut r = json_response(StatusCode::OK, &n);
    r.extensions_mut().insert(Answered(kind));
    r
}

/// `GET /metrics`: the node's metrics, in OpenMetrics for a scraper that
/// asks for it, else in the classic text format.
async fn metrics(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let openmetrics = crate::metrics::wants_openmetrics(accept);
    match gw.metrics.render(openmetrics).await {
        Ok(text) => {
            let mut r = text.into_response();
            let ct = HeaderValue::from_static(crate::metrics::content_type(openmetrics));
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_unavailable",
            e.to_string(),
        ),
    }
}

/// `POST /updates/manifest_size`: how many bytes the files a device still
/// needs weigh.
async fn manifest_size(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    // A JSON body of many tiny values (`[[],[],…]`) takes many times its
    // size once parsed: the values are bounded by counting the body's
    // structural bytes before parsing, and parses run a few at a time.
    let values = body
        .iter()
        .filter(|b| matches!(b, b',' | b'[' | b'{' | b':'))
        .count();
    if values > MANIFEST_SIZE_VALUES_PER_FILE * MAX_MANIFEST_SIZE_FILES {
        return bad_request(BadRequest {
            error: "invalid_field",
            message: format!("at most {MAX_MANIFEST_SIZE_FILES} files per request"),
        });
    }
    let Ok(_parsing) = MANIFEST_SIZE_PARSES.try_acquire() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many manifest_size requests at once; try again",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
        return r;
    };
    let info = match Info::from_json(&body) {
        Ok(i) => i,
        Err(b) => return bad_request(b),
    };
    if let Some(r) = gw.rate_limited(&info.device_id) {
        return r;
    }
    let mut info = info;
    let listed = match info.rest.remove("manifest") {
        Some(v) => Some(v),
        None => info.rest.remove("files"),
    };
    let list = match listed {
        Some(Value::Array(a)) if a.len() <= MAX_MANIFEST_SIZE_FILES => a,
        Some(Value::Array(_)) => {
            return bad_request(BadRequest {
                error: "invalid_field",
                message: format!("at most {MAX_MANIFEST_SIZE_FILES} files per request"),
            });
        }
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return bad_request(BadRequest {
                error: "invalid_field",
                message: "manifest must be an array of files".into(),
            });
        }
    };
    let version = text(&info.rest, "version").ok().flatten();
    let snap = gw.snapshot();
    let store = gw.store.clone();
    let app = info.app_id.clone();
    let answer = tokio::task::spawn_blocking(move || {
        // Files of the release named, when the gateway knows it; else of
        // any release it holds.
        let scope: Option<HashSet<[u8; 32]>> = version.as_deref().and_then(|v| {
            let h = (snap.held.iter())
                .filter(|h| h.release.release().app == app && h.display == v)
                .max_by_key(|h| h.release.release().seq)?;
            let m = snap.manifests.get(&h.release.release().bundle_id)?;
            Some(m.files().iter().map(|f| f.sha256).collect())
        });
        let (mut total, mut known, mut unknown) = (0u64, 0u64, 0u64);
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        for entry in list {
            let Value::Object(o) = entry else { continue };
            let s = |k| {
                o.get(k)
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(1024).collect::<String>())
            };
            let (name, hash, url) = (s("file_name"), s("file_hash"), s("download_url"));
            let Some(hash) = hash.filter(|h| !h.is_empty()) else {
                continue;
            };
            if !seen.insert((name.clone(), hash.clone(), url.clone())) {
                continue;
            }
            let mut sha = [0u8; 32];
            let size = hex::decode_to_slice(&hash, &mut sha)
                .ok()
                .filter(|_| scope.as_ref().is_none_or(|s| s.contains(&sha)))
                .and_then(|_| snap.files.get(&sha))
                .map(|f| {
                    let br = [&name, &url]
                        .iter()
                        .any(|t| t.as_deref().is_some_and(|t| t.ends_with(".br")));
                    match (br, store.cached_brotli(&sha)) {
                        (true, Brotli::Smaller(_, len)) => len,
                        _ => f.size,
                    }
                })
                .filter(|n| *n > 0);
            let mut row = json!({ "file_name": name, "file_hash": hash, "download_url": url });
            match size {
                Some(n) => {
                    total += n;
                    known += 1;
                    row["size"] = json!(n);
                }
                None => {
                    unknown += 1;
                    row["error"] = json!("size_unknown");
                }
            }
            files.push(row);
        }
        json!({ "totalSize": total, "knownFiles": known, "unknownFiles": unknown, "files": files })
    })
    .await
    .unwrap_or_else(|_| json!({ "totalSize": 0, "knownFiles": 0, "unknownFiles": 0, "files": [] }));
    json_response(StatusCode::OK, &answer)
}

/// `POST /stats`: events into the node's devices table.
async fn stats_posted(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let events = match stats::events(&body) {
        Ok(e) => e,
        Err(b) => return bad_request(b),
    };
    let snap = gw.snapshot();
    let now = unix_now();
    let (mut taken, mut refused) = (0usize, 0usize);
    for obj in events {
        let budget = gw
            .stats_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(std::time::Instant::now());
        let Ok(info) = Info::from_object(obj)
            .map_err(|_| ())
            .and_then(|i| if budget { Ok(i) } else { Err(()) })
        else {
            refused += 1;
            continue;
        };
        let channel = gw.channel_of(&info);
        let known = snap.known(&info.app_id, &info.version_name);
        let sent = stats::to_report(&info, &channel, known, now)
            .is_some_and(|r| gw.stats.try_send(r).is_ok());
        if sent {
            taken += 1;
        } else {
            refused += 1;
        }
    }
    tracing::debug!(taken, refused, "gateway stats");
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// The info object of a `GET` or `DELETE` (query string) or of a body.
fn info_of(query: Vec<(String, String)>, body: &[u8]) -> Result<Info, BadRequest> {
    if body.iter().any(|b| !b.is_ascii_whitespace()) {
        return Info::from_json(body);
    }
    let obj = query
        .into_iter()
        .take(64)
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Info::from_object(obj)
}

/// `GET /channel_self`: the channels a device may see.
async fn channel_list(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let info = match info_of(query, &[]) {
        Ok(i) => i,
        Err(b) => return bad_request(b),
    };
    if let Some(r) = gw.rate_limited(&info.device_id) {
        return r;
    }
    let settings = gw.channels();
    let list: Vec<Value> = settings
        .of_app(&info.app_id)
        .filter(|c| c.public || c.self_assign)
        .enumerate()
        .map(|(i, c)| {
            json!({ "id": i + 1, "name": c.name, "public": c.public, "allow_self_set": c.self_assign })
        })
        .collect();
    json_response(StatusCode::OK, &list)
}

/// `PUT /channel_self`: the device's channel.
async fn channel_read(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let info = match Info::from_json(&body) {
        Ok(i) => i,
        Err(b) => return bad_request(b),
    };
    if let Some(r) = gw.rate_limited(&info.device_id) {
        return r;
    }
    let overridden = gw
        .overrides
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&info.app_id, &info.device_id)
        .map(str::to_owned);
    let channel = choose::channel_for(overridden.as_deref(), info.default_channel.as_deref());
    let allow = gw
        .channels()
        .get(&info.app_id, channel)
        .is_some_and(|c| c.self_assign);
    let status = if overridden.is_some() {
        "override"
    } else {
        "default"
    };
    json_response(
        StatusCode::OK,
        &json!({ "channel": channel, "status": status, "allowSet": allow }),
    )
}

/// `POST /channel_self`: a device sets its channel (self-assignable
/// channels only; asking for a public one removes the override).
async fn channel_set(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let info = match Info::from_json(&body) {
        Ok(i) => i,
        Err(b) => return bad_request(b),
    };
    if let Some(r) = gw.rate_limited(&info.device_id) {
        return r;
    }
    let channel = match text(&info.rest, "channel") {
        Ok(Some(c)) if lanseed_protocol::release::check_channel(&c).is_ok() => c,
        Ok(_) => {
            return bad_request(BadRequest {
                error: "invalid_channel",
                message: "channel must be a channel name".into(),
            });
        }
        Err(b) => return bad_request(b),
    };
    let settings = gw.channels();
    let s = settings.get(&info.app_id, &channel);
    let answer = {
        let mut o = gw.overrides.lock().unwrap_or_else(|e| e.into_inner());
        match s {
            Some(s) if s.self_assign => {
                o.set(&info.app_id, &info.device_id, &channel);
                json!({ "status": "ok", "allowSet": true })
            }
            Some(s) if s.public => {
                o.unset(&info.app_id, &info.device_id);
                json!({ "status": "ok", "unset": true, "allowSet": false })
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "channel_self_set_not_allowed",
                    format!(
                        "channel {channel} of {} is not self-assignable; `lanseed channel set {} {channel} --self-assign` allows it",
                        info.app_id, info.app_id
                    ),
                );
            }
        }
    };
    gw.overrides_changed.notify_one();
    tracing::info!(device = %info.device_id, app = %info.app_id, %channel, "device channel set");
    json_response(StatusCode::OK, &answer)
}

/// `DELETE /channel_self`: back to the app's default channel.
async fn channel_unset(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let info = match info_of(query, &body) {
        Ok(i) => i,
        Err(b) => return bad_request(b),
    };
    if let Some(r) = gw.rate_limited(&info.device_id) {
        return r;
    }
    let had = gw
        .overrides
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unset(&info.app_id, &info.device_id);
    if had {
        gw.overrides_changed.notify_one();
    }
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// The SHA-256 named by a download path (`<64 hex><suffix>`).
fn sha_of(name: &str, suffix: &str) -> Option<[u8; 32]> {
    let hex = name.strip_suffix(suffix)?;
    let mut sha = [0u8; 32];
    (hex.len() == 64 && hex::decode_to_slice(hex, &mut sha).is_ok()).then_some(sha)
}

async fn send_file(
    path: &std::path::Path,
    content_type: &str,
    etag: &str,
    headers: &HeaderMap,
) -> Response {
    let Ok(f) = tokio::fs::File::open(path).await else {
        return not_found().await;
    };
    let Ok(meta) = f.metadata().await else {
        return not_found().await;
    };
    files::respond(f, meta.len(), content_type, Some(etag), headers).await
}

/// `GET /capgo/zip/<sha256>.zip`.
async fn zip(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(sha) = sha_of(&name, ".zip") else {
        return not_found().await;
    };
    let Some(path) = gw.artifacts.zip_by_sha(&sha) else {
        return not_found().await;
    };
    let etag = format!("\"{}\"", hex::encode(sha));
    send_file(&path, "application/zip", &etag, &headers).await
}

/// `GET /capgo/file/<sha256>` and `<sha256>.br`.
async fn file(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (sha, br) = match (sha_of(&name, ".br"), sha_of(&name, "")) {
        (Some(s), _) => (s, true),
        (None, Some(s)) => (s, false),
        _ => return not_found().await,
    };
    let Some(f) = gw.snapshot().files.get(&sha).copied() else {
        return not_found().await;
    };
    let hex = hex::encode(sha);
    if br {
        let store = gw.store.clone();
        let cached = tokio::task::spawn_blocking(move || store.cached_brotli(&sha)).await;
        let Ok(Brotli::Smaller(path, _)) = cached else {
            return not_found().await;
        };
        return send_file(
            &path,
            "application/octet-stream",
            &format!("\"{hex}.br\""),
            &headers,
        )
        .await;
    }
    let path = gw.store.blob_path(&f.blake3);
    send_file(
        &path,
        "application/octet-stream",
        &format!("\"{hex}\""),
        &headers,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_64_hex_and_their_suffix() {
        let hex = "ab".repeat(32);
        assert_eq!(sha_of(&format!("{hex}.zip"), ".zip"), Some([0xab; 32]));
        assert_eq!(sha_of(&hex, ".zip"), None);
        assert_eq!(sha_of(&format!("{hex}.br"), ".br"), Some([0xab; 32]));
        assert_eq!(sha_of(&format!("../{hex}"), ""), None);
        assert_eq!(sha_of("zz", ""), None);
    }
}
