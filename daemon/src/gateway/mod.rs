//! The Capgo-compatible HTTP gateway: a stock Capacitor app with
//! `@capgo/capacitor-updater`, its `updateUrl`, `statsUrl` and `channelUrl`
//! pointed at a node started with `--http ADDR`, updates from the LAN.
//!
//! Paths are Capgo's own ([`http`] has the handlers):
//!
//! | request | answer |
//! |---|---|
//! | `POST /updates` | `{version, url, checksum, session_key?, manifest?}`, or `200 {kind, error, message}` (`up_to_date`, `blocked`, `failed`), `429` + `Retry-After` |
//! | `POST /updates/manifest_size` | `{totalSize, knownFiles, unknownFiles, files}` |
//! | `POST /stats` | `{status: "ok"}`; the events go to the node's devices table |
//! | `GET/PUT/POST/DELETE /channel_self` | list, read, set, unset the device's channel |
//! | `GET /capgo/zip/<sha256>.zip` | a bundle's deterministic zip |
//! | `GET /capgo/file/<sha256>[.br]` | one file (manifest mode), `.br` Brotli |
//! | `GET /metrics` | the node's Prometheus metrics ([`crate::metrics`]) |
//!
//! The gateway offers only what the node holds whole in its store: the
//! node hands it its releases as they change (a [`Links`] watch), and it
//! passes the plugin's stats back to the node's devices table (a bounded
//! channel; stats beyond it are dropped, never queued without end). Which
//! release a device gets is [`choose`]; what is downloaded is
//! [`artifacts`], made as soon as a release arrives (`prepare`); [`ratelimit`], [`overrides`] and [`stats`] hold the
//! rest of the bookkeeping. With `--tls-cert` and `--tls-key` it speaks
//! HTTPS ([`tls`]).
//!
//! The same server answers `GET /` with the node's live status page
//! ([`page`]), read-only and open to whoever reaches it.
//!
//! Every byte from the network is hostile: bodies are bounded per path,
//! JSON is read field by field ([`wire`]), bad input is a `4xx` with
//! `error` and `message`, and every table a client can grow is bounded.

pub mod artifacts;
pub mod choose;
mod http;
pub mod listen;
pub mod overrides;
pub mod page;
pub mod ratelimit;
pub mod stats;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use lanseed_protocol::report::DeviceReport;
use lanseed_protocol::store::channels::Channels;
use lanseed_protocol::{SignedRelease, Store};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::artifacts::{Artifacts, Snapshot};
use self::overrides::Overrides;
use self::ratelimit::Limiter;

/// Stats events queued for the node at most (more are dropped).
pub const STATS_QUEUE: usize = 4096;
/// Connections waiting to be accepted at most. A fleet checks in at once
/// (every kiosk starting with the shop's power): the default of 128 (the
/// standard library's and tokio's) made some of 200 simultaneous checks
/// wait a second for a SYN to be sent again (see docs/PERF.md).
const BACKLOG: u32 = 1024;
/// How long answers in progress (a slow download) may hold a stop up.
const GRACE: Duration = Duration::from_secs(5);
/// How often the channel settings file is looked at for changes.
const CHANNELS_EVERY: Duration = Duration::from_secs(1);

/// Why the gateway cannot run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The address cannot be listened on.
    #[error("cannot listen on --http {addr}: {source}; pick another address")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS files are not usable.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// Serving failed.
    #[error("the gateway stopped: {0}")]
    Serve(std::io::Error),
}

/// How the gateway is started (`--http`, `--tls-cert`, `--tls-key`).
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Certificate chain and key files (PEM), for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// What the node and the gateway exchange.
pub struct Links {
    /// The releases the node holds (whole, in its store), as they change.
    pub releases: watch::Receiver<Arc<Vec<SignedRelease>>>,
    /// Where stats become rows of the devices table.
    pub stats: mpsc::Sender<DeviceReport>,
    /// The node's metrics, for `/metrics` and the gateway's own counters.
    pub metrics: crate::metrics::Handle,
    /// Asks the node for its status, for the status page ([`page`]).
    pub status: crate::node::control::StatusHandle,
}

/// The gateway's state, shared by its handlers.
pub(crate) struct Gateway {
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
    artifacts: Artifacts,
    limiter: Mutex<Limiter>,
    /// Stats events the node may still take ([`stats::Budget`]).
    stats_budget: Mutex<stats::Budget>,
    overrides: Mutex<Overrides>,
    overrides_changed: Notify,
    /// The releases changed: make their zips before devices ask.
    releases_changed: Notify,
    channels: RwLock<Arc<Channels>>,
    stats: mpsc::Sender<DeviceReport>,
    /// `http` or `https`, for the links it gives out.
    scheme: &'static str,
    /// Its own address, for links when a request names no usable host.
    local: SocketAddr,
    /// The node's metrics.
    metrics: crate::metrics::Handle,
    /// The status page's streams and latest snapshot.
    page: Arc<page::Page>,
}

/// A bound gateway, ready to serve.
pub struct Bound {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Loads the TLS files and binds the address: every mistake in the
/// gateway's flags shows before the node starts.
pub async fn bind(opts: &Options) -> Result<Bound, GatewayError> {
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let bind_err = |source| GatewayError::Bind {
        addr: opts.addr,
        source,
    };
    let socket = match opts.addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(bind_err)?;
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.bind(opts.addr).map_err(bind_err)?;
    let listener = socket.listen(BACKLOG).map_err(bind_err)?;
    Ok(Bound { listener, tls })
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    bound: Bound,
    store: Store,
    mut links: Links,
    stop: CancellationToken,
) -> Result<(), GatewayError> {
    let local = bound.listener.local_addr().map_err(GatewayError::Serve)?;
    let first = links.releases.borrow_and_update().clone();
    let for_build = store.clone();
    let snapshot = tokio::task::spawn_blocking(move || {
        Snapshot::build(&for_build, &first, &Snapshot::default())
    })
    .await
    .unwrap_or_default();
    let for_load = store.clone();
    let (overrides, channels) = tokio::task::spawn_blocking(move || {
        let channels = for_load.channels().unwrap_or_else(|e| {
            tracing::warn!("the gateway starts with no channel settings: {e}");
            Channels::default()
        });
        (overrides::load(for_load.root()), channels)
    })
    .await
    .unwrap_or_default();
    let (page, page_tx) = page::Page::new();
    let page = Arc::new(page);
    let gw = Arc::new(Gateway {
        artifacts: Artifacts::new(store.clone()),
        store,
        snapshot: RwLock::new(Arc::new(snapshot)),
        limiter: Mutex::new(Limiter::default()),
        stats_budget: Mutex::new(stats::Budget::new(std::time::Instant::now())),
        overrides: Mutex::new(overrides),
        overrides_changed: Notify::new(),
        releases_changed: Notify::new(),
        channels: RwLock::new(Arc::new(channels)),
        stats: links.stats,
        scheme: if bound.tls.is_some() { "https" } else { "http" },
        local,
        metrics: links.metrics,
        page: page.clone(),
    });
    {
        let (gw, snap) = (gw.clone(), gw.snapshot());
        let _ = tokio::task::spawn_blocking(move || gw.artifacts.retain(&snap)).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(follow_releases(gw.clone(), links.releases, stop.clone()));
    tasks.spawn(follow_channels(gw.clone(), stop.clone()));
    tasks.spawn(save_overrides(gw.clone(), stop.clone()));
    tasks.spawn(prepare(gw.clone(), stop.clone()));
    tasks.spawn(page::feed(page, links.status, page_tx, stop.clone()));
    gw.releases_changed.notify_one();
    tracing::info!(address = %local, scheme = gw.scheme, releases = gw.snapshot().held.len(), "capgo gateway listening");
    let counters = gw.metrics.metrics.clone();
    let app = http::router(gw.clone()).layer(axum::middleware::from_fn_with_state(
        counters.clone(),
        crate::metrics::count_requests,
    ));
    listen::serve(bound.listener, bound.tls, app, counters, stop.clone()).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

impl Gateway {
    /// What may be offered now.
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The channel settings now.
    fn channels(&self) -> Arc<Channels> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Takes the node's releases as they change.
async fn follow_releases(
    gw: Arc<Gateway>,
    mut rx: watch::Receiver<Arc<Vec<SignedRelease>>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        let releases = rx.borrow_and_update().clone();
        let for_build = gw.clone();
        let built = tokio::task::spawn_blocking(move || {
            let snap = Snapshot::build(&for_build.store, &releases, &for_build.snapshot());
            for_build.artifacts.retain(&snap);
            snap
        })
        .await;
        if let Ok(snap) = built {
            tracing::debug!(releases = snap.held.len(), "gateway releases updated");
            *gw.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
            gw.releases_changed.notify_one();
        }
    }
}

/// Makes, as soon as a release arrives, what devices will download: the
/// zip of the newest release of each app and channel, and its Brotli
/// variants on manifest-mode channels; so the first devices to check do
/// not wait for them (they would wait on this same build if they came
/// first: one build per bundle either way).
async fn prepare(gw: Arc<Gateway>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = gw.releases_changed.notified() => {}
            _ = stop.cancelled() => return,
        }
        let snap = gw.snapshot();
        let mut newest: std::collections::HashMap<(&str, &str), &SignedRelease> =
            std::collections::HashMap::new();
        for h in &snap.held {
            let r = h.release.release();
            let e = newest.entry((&r.app, &r.channel)).or_insert(&h.release);
            if r.seq > e.release().seq {
                *e = &h.release;
            }
        }
        let channels = gw.channels();
        for ((app, channel), release) in newest {
            if stop.is_cancelled() {
                return;
            }
            if let Err(e) = gw.artifacts.zip_for(release, false).await {
                tracing::warn!("{e}");
            }
            let bundle = release.release().bundle_id;
            let manifest_mode = channels.get(app, channel).is_some_and(|c| c.capgo_manifest);
            if let (true, Some(m)) = (manifest_mode, snap.manifests.get(&bundle))
                && let Err(e) = gw.artifacts.brotli_for(bundle, m.clone()).await
            {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Reloads the channel settings when their file changes (`lanseed
/// channel set` while the node runs).
async fn follow_channels(gw: Arc<Gateway>, stop: CancellationToken) {
    let path = gw.store.channels_path();
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(CHANNELS_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match gw.store.channels() {
            Ok(c) => {
                tracing::info!(channels = c.channels.len(), "channel settings reloaded");
                *gw.channels.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
                gw.releases_changed.notify_one(); // a channel may have turned to manifest mode
            }
            Err(e) => tracing::warn!("channel settings kept as they were: {e}"),
        }
    }
}

/// Writes the overrides after changes, at most once per
/// [`overrides::SAVE_EVERY`], and once more at the end.
async fn save_overrides(gw: Arc<Gateway>, stop: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = gw.overrides_changed.notified() => false,
            _ = stop.cancelled() => true,
        };
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(overrides::SAVE_EVERY) => {}
                _ = stop.cancelled() => {}
            }
        }
        let bytes = {
            let mut o = gw.overrides.lock().unwrap_or_else(|e| e.into_inner());
            o.dirty.then(|| o.snapshot())
        };
        if let Some(bytes) = bytes {
            let path = overrides::path(gw.store.root());
            let written = tokio::task::spawn_blocking(move || {
                lanseed_protocol::store::durable::write_atomic(&path, &bytes)
            })
            .await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::warn!("cannot write the channel overrides; kept in memory");
            }
        }
        if stopping || stop.is_cancelled() {
            return;
        }
    }
}
