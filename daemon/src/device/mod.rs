//! `lanseed device`: the node (fetching and seeding like `seed`) plus the
//! updater of `lanseed-client`, serving the active bundle over HTTP for a
//! WebView or kiosk browser.
//!
//! One process, a few tasks sharing one [`Shared`] updater: the node; a
//! watch of the store that offers every new release of the app to the
//! updater (verified against the trust file first); a timer that ends
//! trials nobody confirmed; the HTTP server ([`http`]); and the local
//! control socket ([`control`]). Updater events go to the pages (server-sent
//! events), to the log as JSON lines, and to `lanseed status`.

pub mod control;
pub mod etag;
pub mod files;
pub mod host;
pub mod http;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanseed_client::{Event, Updater, UpdaterConfig};
use lanseed_protocol::{ReleaseId, Store, TrustList};
use tokio::sync::{broadcast, watch};

use crate::node::{self, Follow, NodeConfig};

/// The updater and its event fan-out, shared by the agent's tasks.
pub struct Shared {
    updater: Mutex<Updater>,
    events: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
}

impl Shared {
    /// Runs `f` on the updater, then publishes the events it emitted.
    pub fn with<R>(&self, f: impl FnOnce(&mut Updater) -> R) -> R {
        let mut u = self.updater.lock().unwrap_or_else(|e| e.into_inner());
        let result = f(&mut u);
        let events = u.drain_events();
        drop(u);
        for e in events {
            let json = serde_json::to_string(&e).unwrap_or_default();
            tracing::info!(target: "lanseed::events", "{json}");
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == 50 {
                recent.pop_front();
            }
            recent.push_back(e.clone());
            let _ = self.events.send(e);
        }
        result
    }

    /// A new receiver of updater events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The updater's state for `lanseed status`.
    pub fn status(&self) -> serde_json::Value {
        let recent: Vec<Event> = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        self.with(|u| {
            let (id, version, status) = u.current();
            serde_json::json!({
                "device_id": u.device_id(),
                "channel": u.state().channel,
                "current": { "bundle_id": id, "version": version, "status": status },
                "next": u.state().next,
                "fallback": u.state().fallback,
                "bundles": u.list().into_iter().map(|(id, b)| serde_json::json!({
                    "bundle_id": id, "version": b.version, "channel": b.channel, "seq": b.seq, "status": b.status,
                })).collect::<Vec<_>>(),
                "recent_events": recent,
            })
        })
    }
}

/// Everything `lanseed device` needs.
pub struct DeviceConfig {
    /// The node's configuration (its follow list is set from the app).
    pub node: NodeConfig,
    /// The updater's.
    pub updater: UpdaterConfig,
    /// Where to serve the active bundle.
    pub serve: SocketAddr,
    /// Host names the kiosk server answers to besides loopback ones.
    pub serve_names: Vec<String>,
}

/// Runs the device agent until `shutdown` resolves.
pub async fn run(
    mut cfg: DeviceConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = cfg.node.store.clone();
    let trust = cfg.node.trust.clone();
    let app = cfg.updater.app.clone();
    let updater = Updater::open(store.clone(), cfg.updater)?;
    let (events, _) = broadcast::channel(256);
    let shared = Arc::new(Shared {
        updater: Mutex::new(updater),
        events,
        recent: Mutex::new(VecDeque::new()),
    });
    shared.with(|u| tracing::info!(device = %u.device_id(), serving = %u.serve_dir().display(), "device started"));
    // Every channel of the app: the updater picks its own, which can change.
    cfg.node.follow = vec![Follow {
        app: app.clone(),
        channel: None,
    }];
    let for_status = shared.clone();
    cfg.node.extra_status = Some(Arc::new(move || for_status.status()));
    let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
    cfg.node.progress = Some(progress_tx);

    let listener = tokio::net::TcpListener::bind(cfg.serve)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot serve on {}: {e}; pick another with --serve",
                cfg.serve
            )
        })?;
    tracing::info!(address = %listener.local_addr()?, "serving the active bundle");
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut node = tokio::spawn(node::run(cfg.node, stopped(stop_rx.clone())));
    let http = tokio::spawn(http::serve(
        listener,
        shared.clone(),
        cfg.serve_names,
        stopped(stop_rx.clone()),
    ));
    let control = tokio::spawn(control::serve(store.root().to_owned(), shared.clone()));
    let offers = tokio::spawn(offer_loop(store.clone(), trust, app, shared.clone()));
    let timer = tokio::spawn(trial_timer(shared.clone()));
    let progress = tokio::spawn(progress_events(progress_rx, shared.clone()));

    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut node => Some(r),
    };
    let _ = stop_tx.send(true);
    offers.abort();
    timer.abort();
    progress.abort();
    control.abort();
    let _ = std::fs::remove_file(control::socket_path(store.root()));
    let _ = http.await;
    let result = match early {
        Some(r) => r,
        None => node.await,
    };
    match result {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("the node task failed: {e}")),
    }
}

/// Offers every new verified release of the app in the store to the
/// updater (the node puts fetched ones there; `import` and `pack` too).
async fn offer_loop(store: Store, trust: TrustList, app: String, shared: Arc<Shared>) {
    let mut seen: std::collections::HashSet<ReleaseId> = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let Ok(releases) = store.releases() else {
            continue;
        };
        let mut fresh: Vec<_> = releases
            .into_iter()
            .filter(|r| seen.insert(r.id()))
            .collect();
        fresh.sort_by_key(|r| r.release().seq);
        for r in fresh {
            if r.release().app != app {
                continue;
            }
            let verified = match r.verify(&trust) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(version = %r.release().version, "release not installed: {e}");
                    continue;
                }
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let shared = shared.clone();
            let result = tokio::task::spawn_blocking(move || {
                shared.with(|u| {
                    let channel = u.state().channel.clone();
                    if verified.release().channel != channel {
                        return Ok(());
                    }
                    u.install(&verified, now)
                })
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::info!(version = %r.release().version, seq = r.release().seq, "not installed: {e}")
                }
                Err(e) => tracing::error!("install task failed: {e}"),
            }
        }
    }
}

/// Turns the node's fetch progress into Capgo's `download` events (at most
/// one per percent), for releases the updater would install.
async fn progress_events(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<node::Progress>,
    shared: Arc<Shared>,
) {
    let mut last: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    while let Some(p) = rx.recv().await {
        let id = p.release.release().bundle_id.to_string();
        let percent = (p.done * 100)
            .checked_div(p.total)
            .map_or(100, |x| x.min(99) as u8);
        if last.get(&id) == Some(&percent) {
            continue;
        }
        last.insert(id.clone(), percent);
        shared.with(|u| u.download_progress(&p.release, percent));
    }
}

/// Ends trials whose appReadyTimeout passed.
async fn trial_timer(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        if let Err(e) = shared.with(|u| u.check_timeout(now)) {
            tracing::error!("cannot roll back: {e}");
        }
        if let Err(e) = shared.with(|u| u.apply_in_window(local_minute())) {
            tracing::error!("cannot apply the next bundle: {e}");
        }
    }
}

/// The minute of the local day (for the maintenance window).
fn local_minute() -> u16 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    (now.hour() * 60 + now.minute()) as u16
}
