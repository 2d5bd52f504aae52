//! The live status page, on the gateway's server (`--http`): read-only,
//! one embedded HTML file with its CSS and script inline (no external
//! assets), fed by Server-Sent Events.
//!
//! | request | answer |
//! |---|---|
//! | `GET /`, `GET /status` | the page ([`PAGE`]) |
//! | `GET /status/events` | `text/event-stream`: the status as JSON (`data:`) whenever it changes, a `heartbeat` event every [`HEARTBEAT`]; `503` beyond [`MAX_CLIENTS`] streams |
//! | `GET /status.json` | one snapshot (at most [`FRESH`] old) |
//!
//! The data is what `lanseed status --json` shows, as [`view`] cuts it
//! for the LAN: one feed task asks the node's event loop for its status
//! through a [`StatusHandle`] (the command the control socket sends) only
//! while someone watches, at most once per [`PACE`] (longer for a larger
//! status: [`pace_for`]), and hands every stream the same serialized
//! snapshot through a `watch`. However many clients, the node builds at
//! most two statuses a second; each stream ends after [`MAX_LIFE`] (the
//! browser's `EventSource` connects again by itself), so no client holds
//! a slot for ever.
//!
//! The page is readable by anyone who can reach `--http`: it shows no
//! key material and nothing only a local operator should see.

pub mod clients;
pub mod rollout;
pub mod view;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::clients::Clients;
use self::view::PageStatus;
use super::Gateway;
use crate::node::control::StatusHandle;

/// The page: HTML, CSS and script in one file.
pub const PAGE: &str = include_str!("status.html");
/// Live streams at most, all clients together.
pub const MAX_CLIENTS: usize = 16;
/// Shortest time between two statuses asked of the node.
pub const PACE: Duration = Duration::from_millis(500);
/// Serialized status bytes a second the feed makes at most: a larger
/// status is asked for less often ([`pace_for`]).
pub const BYTES_PER_SEC: usize = 256 << 10;
/// A heartbeat event on an idle stream this often.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest life of one stream.
pub const MAX_LIFE: Duration = Duration::from_secs(600);
/// How old a snapshot `/status.json` answers with may be.
pub const FRESH: Duration = Duration::from_secs(1);
/// How long the node may take to give its status.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// What the browser is told to wait before it connects again.
const RETRY: Duration = Duration::from_secs(2);
/// The page's Content-Security-Policy: nothing from elsewhere, its own
/// inline style and script, connections to its own origin only.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One status, serialized once for every client.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The [`PageStatus`] as JSON.
    json: String,
    /// Counts changes: equal numbers, equal statuses (but for `now`).
    version: u64,
    /// When it was asked of the node.
    at: Instant,
}

/// The page's share of the gateway's state.
pub(crate) struct Page {
    clients: Clients,
    /// Someone wants a status: the feed asks the node.
    wake: Notify,
    latest: watch::Receiver<Option<Arc<Snapshot>>>,
}

impl Page {
    /// The page's state, and the sender the [`feed`] publishes with.
    pub(crate) fn new() -> (Page, watch::Sender<Option<Arc<Snapshot>>>) {
        let (tx, latest) = watch::channel(None);
        let page = Page {
            clients: Clients::new(MAX_CLIENTS),
            wake: Notify::new(),
            latest,
        };
        (page, tx)
    }
}

/// How long to wait after making `len` bytes of status before asking
/// again: [`PACE`], or longer so that at most [`BYTES_PER_SEC`] are made.
pub fn pace_for(len: usize) -> Duration {
    PACE.max(Duration::from_secs_f64(len as f64 / BYTES_PER_SEC as f64))
}

/// Asks the node for its status while someone watches (a stream is open,
/// or a `/status.json` waits), paced by [`pace_for`]; publishes each as a
/// [`Snapshot`]. Ends at `stop` or when the node is gone, which ends
/// every stream.
pub(crate) async fn feed(
    page: Arc<Page>,
    node: StatusHandle,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    stop: CancellationToken,
) {
    let mut last: Option<(String, u64)> = None;
    loop {
        if page.clients.active() == 0 {
            tokio::select! {
                _ = page.wake.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
        let at = Instant::now();
        let status = tokio::select! {
            s = tokio::time::timeout(ASK_TIMEOUT, node.status()) => s,
            _ = stop.cancelled() => return,
        };
        let status = match status {
            Ok(Some(s)) => s,
            Ok(None) => return, // the node stopped
            Err(_) => {
                tracing::debug!("the node gave no status for the status page in time");
                continue;
            }
        };
        let view = PageStatus::new(status, unix_now());
        let Ok(json) = serde_json::to_string(&view) else {
            continue;
        };
        let body = json_without_now(&json).to_owned();
        let version = match &last {
            Some((prev, v)) if *prev == body => *v,
            Some((_, v)) => v + 1,
            None => 1,
        };
        let pace = pace_for(json.len());
        last = Some((body, version));
        tx.send_replace(Some(Arc::new(Snapshot { json, version, at })));
        tokio::select! {
            _ = tokio::time::sleep(pace) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The JSON after its leading `now` field (the rest decides whether the
/// status changed: the clock alone is no change).
fn json_without_now(json: &str) -> &str {
    json.find(",\"peer_id\"").map_or(json, |i| &json[i..])
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /` and `GET /status`: the page.
pub(crate) async fn index() -> Response {
    let mut r =
        no_store(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn unavailable(message: &'static str, retry_secs: u64) -> Response {
    let mut r = no_store(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "unavailable", "message": message })),
        )
            .into_response(),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_secs));
    r
}

/// `GET /status.json`: a snapshot at most [`FRESH`] old.
pub(crate) async fn snapshot(State(gw): State<Arc<Gateway>>) -> Response {
    let mut rx = gw.page.latest.clone();
    let fresh = |s: &Option<Arc<Snapshot>>| s.as_ref().filter(|s| s.at.elapsed() < FRESH).cloned();
    let found = fresh(&rx.borrow_and_update());
    let found = match found {
        Some(s) => Some(s),
        None => {
            gw.page.wake.notify_one();
            tokio::time::timeout(ASK_TIMEOUT, async {
                loop {
                    rx.changed().await.ok()?;
                    if let Some(s) = fresh(&rx.borrow_and_update()) {
                        return Some(s);
                    }
                }
            })
            .await
            .ok()
            .flatten()
        }
    };
    match found {
        Some(s) => {
            no_store(([(header::CONTENT_TYPE, "application/json")], s.json.clone()).into_response())
        }
        None => unavailable("the node gave no status in time", 1),
    }
}

/// `GET /status/events`: the status whenever it changes.
pub(crate) async fn events(State(gw): State<Arc<Gateway>>) -> Response {
    let Some(permit) = gw.page.clients.join() else {
        return unavailable(
            "too many status pages open on this node; try again later",
            10,
        );
    };
    gw.page.wake.notify_one();
    let mut rx = gw.page.latest.clone();
    rx.mark_changed(); // the snapshot there is, at once
    let end = Instant::now() + MAX_LIFE;
    let first = Event::default().retry(RETRY).comment("lanseed status");
    let updates = futures::stream::unfold(
        (rx, permit, 0u64),
        move |(mut rx, permit, sent)| async move {
            loop {
                tokio::time::timeout_at(end, rx.changed())
                    .await
                    .ok()?
                    .ok()?;
                let snap = rx.borrow_and_update().clone();
                if let Some(s) = snap.filter(|s| s.version != sent) {
                    let event = Event::default().event("status").data(s.json.as_str());
                    return Some((event, (rx, permit, s.version)));
                }
            }
        },
    );
    let stream = futures::StreamExt::map(
        futures::StreamExt::chain(futures::stream::once(async { first }), updates),
        Ok::<_, Infallible>,
    );
    let heartbeat = KeepAlive::new()
        .interval(HEARTBEAT)
        .event(Event::default().event("heartbeat").data("{}"));
    no_store(Sse::new(stream).keep_alive(heartbeat).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::node::control::Command;

    /// A node that answers every status request with the same status,
    /// counting them.
    fn fake_node() -> (StatusHandle, Arc<AtomicUsize>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        tokio::spawn(async move {
            while let Some(Command::Status(reply)) = rx.recv().await {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = reply.send(view::tests::status(Vec::new()));
            }
        });
        (StatusHandle::new(tx), asked)
    }

    #[tokio::test(start_paused = true)]
    async fn the_node_is_asked_only_while_watched_and_at_most_twice_a_second() {
        let (node, asked) = fake_node();
        let (page, tx) = Page::new();
        let page = Arc::new(page);
        let stop = CancellationToken::new();
        let task = tokio::spawn(feed(page.clone(), node, tx, stop.clone()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 0, "nobody watches");

        let streams: Vec<_> = (0..MAX_CLIENTS)
            .map(|_| page.clients.join().unwrap())
            .collect();
        page.wake.notify_one();
        tokio::time::sleep(Duration::from_millis(10_001)).await;
        let watched = asked.load(Ordering::SeqCst);
        assert!(
            (20..=21).contains(&watched),
            "{watched} in 10 s, {MAX_CLIENTS} streams"
        );
        let snap = page.latest.borrow().clone().expect("a snapshot");
        assert_eq!(snap.version, 1, "the same status is no change");
        assert!(snap.json.contains("\"peer_id\":\"12D3Self\""));

        drop(streams);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            asked.load(Ordering::SeqCst) <= watched + 1,
            "the feed went idle"
        );

        stop.cancel();
        task.await.unwrap();
        let mut stream = page.latest.clone();
        stream.borrow_and_update();
        assert!(stream.changed().await.is_err(), "streams end with the feed");
    }

    #[test]
    fn pace_is_half_a_second_for_a_small_status_and_longer_for_a_large_one() {
        assert_eq!(pace_for(0), PACE);
        assert_eq!(pace_for(BYTES_PER_SEC / 2), PACE);
        assert_eq!(pace_for(BYTES_PER_SEC), Duration::from_secs(1));
        assert_eq!(pace_for(BYTES_PER_SEC * 4), Duration::from_secs(4));
    }

    #[test]
    fn the_clock_alone_is_no_change() {
        let a = r#"{"now":1,"peer_id":"x","peers":[]}"#;
        let b = r#"{"now":2,"peer_id":"x","peers":[]}"#;
        let c = r#"{"now":2,"peer_id":"y","peers":[]}"#;
        assert_eq!(json_without_now(a), json_without_now(b));
        assert_ne!(json_without_now(b), json_without_now(c));
    }

    #[test]
    fn the_page_is_one_file_with_nothing_from_elsewhere() {
        assert!(PAGE.starts_with("<!doctype html>"));
        for external in [
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(",
        ] {
            assert!(!PAGE.contains(external), "{external}");
        }
        assert!(!PAGE.contains("<link"), "no stylesheet or font links");
        assert!(
            !PAGE.contains("innerHTML"),
            "text from the LAN is set as text only"
        );
        assert!(PAGE.contains("/status/events"));
    }
}
