//! The kiosk server: the active bundle over HTTP, plus `/__lanseed/…`.
//!
//! - Only requests naming a served host are answered, and state changes
//!   only from the server's own origin ([`host`]).
//! - `/` and extension-less paths that match no file get `index.html`
//!   (client-side routing); other missing paths are 404. Which file
//!   answers is decided by [`lanseed_client::serve`]; this module only
//!   asks the file system what exists.
//! - Files are streamed from disk with byte ranges, `Cache-Control:
//!   no-cache` and a strong `ETag` (the file's BLAKE3), so the browser
//!   revalidates every use and a `304` saves the bytes ([`files`],
//!   [`super::etag`]).
//! - A page stays on the bundle it was served from: every HTML response
//!   sets a cookie naming its bundle, and the page's other requests are
//!   answered from that bundle while it exists, so a swap never mixes two
//!   bundles in one page. A file's `ETag` is its content's hash, so a copy
//!   the browser revalidates is the same bytes whichever bundle it came
//!   from; a page's `ETag` also names its bundle, so a page never
//!   revalidates into another bundle's. The HTML response also carries
//!   the bundle id in a `Server-Timing` entry, which `client.js` reads, so
//!   notifyAppReady confirms exactly the bundle the page came from; a
//!   `304` for a page carries both again.
//! - `/__lanseed/client.js`, `POST /__lanseed/ready`, `/__lanseed/current`,
//!   `/__lanseed/events` (server-sent events: first a `current` event
//!   naming the current bundle, then the updater's), `/__lanseed/status`;
//!   these answers are `Cache-Control: no-store`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Extension, Router, middleware};
use futures::StreamExt;
use lanseed_client::install::bundle_dir;
use lanseed_client::serve::{self, Kind};

use super::agent::{AgentError, Handle};
use super::etag::Hashes;
use super::files;
use super::host::{self, Hosts};

const CLIENT_JS: &str = include_str!("client.js");
const COOKIE: &str = "lanseed_bundle";

/// Serves until `shutdown` resolves, answering to loopback names, to
/// `serve_names` and to the listener's own address (see [`host`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    agent: Handle,
    serve_names: Vec<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let hosts = Arc::new(Hosts::new(&serve_names, listener.local_addr()?.ip()));
    let hashes = Arc::new(Hashes::default());
    // A bundle made current is reloaded by its pages at once: its file
    // hashes (the ETags) are read before their first request.
    let (warm, mut views) = (hashes.clone(), agent.views());
    tokio::spawn(async move {
        loop {
            let v = views.borrow_and_update().clone();
            if let Ok(id) = v.current.parse::<lanseed_protocol::BundleId>() {
                warm.warm(&v.store_root, id).await;
            }
            if views.changed().await.is_err() {
                return;
            }
        }
    });
    let app = Router::new()
        .route("/__lanseed/client.js", get(client_js))
        .route("/__lanseed/ready", post(ready))
        .route("/__lanseed/current", get(current))
        .route("/__lanseed/events", get(events))
        .route("/__lanseed/status", get(status))
        .fallback(get(file))
        .with_state(agent)
        .layer(Extension(hashes))
        .layer(middleware::from_fn_with_state(hosts, host::guard))
        .layer(middleware::from_fn(log_request));
    // No Nagle: a file's body follows its headers in a second write, which
    // would otherwise wait for the page's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Logs each request as it arrives (debug level: the dev-loop benchmark
/// times a page's requests by these lines).
async fn log_request(req: axum::extract::Request, next: middleware::Next) -> Response {
    tracing::debug!(method = %req.method(), path = %req.uri().path(), "request");
    next.run(req).await
}

/// Marks a response (a JSON endpoint's, a 404) as never to be cached.
fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn client_js(State(agent): State<Handle>) -> Response {
    let body = CLIENT_JS.replace("__LANSEED_BUNDLE__", &agent.view().current);
    no_store(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

#[derive(serde::Deserialize)]
struct Ready {
    bundle: String,
}

async fn ready(State(agent): State<Handle>, axum::Json(req): axum::Json<Ready>) -> Response {
    match agent.ready(req.bundle.clone()).await {
        Ok(confirmed) => {
            tracing::info!(bundle = %req.bundle, confirmed, "notifyAppReady");
            no_store(
                axum::Json(serde_json::json!({ "bundle": req.bundle, "confirmed": confirmed }))
                    .into_response(),
            )
        }
        Err(e @ AgentError::Busy) => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn current(State(agent): State<Handle>) -> Response {
    let v = agent.view();
    no_store(
        axum::Json(
            serde_json::json!({ "bundle_id": v.current, "version": v.version, "status": v.status }),
        )
        .into_response(),
    )
}

async fn status(State(agent): State<Handle>) -> Response {
    no_store(axum::Json(agent.view().status_json.clone()).into_response())
}

async fn events(State(agent): State<Handle>) -> Response {
    // Subscribed first, then the view read: a switch after this read is
    // told by its events (sent once the view shows it, by the agent).
    let rx = agent.subscribe();
    let current = serde_json::json!({ "event": "current", "bundle": agent.view().current });
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(
            SseEvent::default()
                .event("current")
                .data(current.to_string()),
        )
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let json = serde_json::to_value(&e).unwrap_or_default();
                    let name = json["event"].as_str().unwrap_or("message").to_owned();
                    let ev = SseEvent::default().event(name).data(json.to_string());
                    return Some((Ok(ev), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    no_store(
        Sse::new(first.chain(stream))
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

/// The file under the bundle folder `root` that answers the decoded
/// request `path` (see [`serve::resolve`]).
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let answer = serve::resolve(path, |rel| {
        let p = root.join(rel);
        if p.is_file() {
            Kind::File
        } else if p.is_dir() {
            Kind::Dir
        } else {
            Kind::Missing
        }
    });
    answer.file().map(|rel| root.join(rel))
}

fn cookie_bundle(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_owned)
        })
}

async fn file(
    State(agent): State<Handle>,
    Extension(hashes): Extension<Arc<Hashes>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(path) = serve::decode_path(uri.path()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let view = agent.view();
    let (current_id, serve_dir, store_root) = (
        view.current.clone(),
        view.serve_dir.clone(),
        view.store_root.clone(),
    );
    // Assets come from the page's bundle while it exists; pages from the current one.
    let pinned = cookie_bundle(&headers)
        .filter(|id| {
            id != &current_id && id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())
        })
        .map(|id| (bundle_dir(&store_root, &id), id))
        .filter(|(dir, _)| dir.is_dir());
    let looks_like_page = {
        let last = path.rsplit('/').next().unwrap_or("");
        last.is_empty() || last.ends_with(".html") || !last.contains('.')
    };
    let (root, bundle) = match pinned {
        Some((dir, id)) if !looks_like_page => (dir, id),
        _ => (serve_dir, current_id),
    };
    let Some(target) = resolve(&root, &path) else {
        return no_store((StatusCode::NOT_FOUND, "not found").into_response());
    };
    let not_found = || no_store((StatusCode::NOT_FOUND, "not found").into_response());
    let Ok(opened) = tokio::fs::File::open(&target).await else {
        return not_found();
    };
    let Ok(meta) = opened.metadata().await else {
        return not_found();
    };
    let mime = mime_guess::from_path(&target).first_or_octet_stream();
    let is_html = mime.essence_str() == "text/html";
    let rel = target
        .strip_prefix(&root)
        .ok()
        .and_then(Path::to_str)
        .unwrap_or("");
    let hash = hashes.of(&store_root, &bundle, rel, &target, &meta).await;
    let etag = hash.map(|h| files::etag(&h, is_html.then_some(bundle.as_str())));
    let mut resp =
        files::respond(opened, meta.len(), mime.as_ref(), etag.as_deref(), &headers).await;
    if is_html {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("lanseed;desc=\"{bundle}\"")) {
            h.insert("server-timing", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={bundle}; Path=/; SameSite=Strict"))
        {
            h.insert(header::SET_COOKIE, v);
        }
        tracing::info!(%bundle, path = %path, status = resp.status().as_u16(), "page served");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_a_spa_server() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "i").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app.js"), "a").unwrap();
        let r = |p| resolve(dir.path(), p).map(|t| t.strip_prefix(dir.path()).unwrap().to_owned());
        assert_eq!(r("/"), Some("index.html".into()));
        assert_eq!(r("/assets/app.js"), Some("assets/app.js".into()));
        assert_eq!(r("/settings/profile"), Some("index.html".into()));
        assert_eq!(r("/assets/missing.js"), None);
        assert_eq!(r("/assets"), Some("index.html".into()));
        assert_eq!(r("/../etc/passwd"), None);
    }
}
