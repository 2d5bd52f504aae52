//! `lanseed device`: the node (fetching and seeding like `seed`) plus the
//! updater of `lanseed-client`, serving the active bundle over HTTP for a
//! WebView or kiosk browser.
//!
//! One process, a few tasks around one actor ([`agent`]) that owns the
//! updater: the node, which follows the app's current channel only; the
//! HTTP server ([`http`]), which reads what to serve from the actor's
//! view and never waits on an install; and the local control socket
//! ([`control`]). Updater events go to the pages (server-sent events), to
//! the log as JSON lines, and to `lanseed status`.

pub mod agent;
pub mod control;
pub mod etag;
pub mod files;
pub mod host;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use lanseed_client::{Updater, UpdaterConfig};
use tokio::sync::watch;

use crate::node::{self, NodeConfig};

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
    let control_access = cfg.node.control_access;
    // One agent per store, before anything is cleaned or installed: a
    // second one would take the first one's installs for leftovers.
    let _agent_lock = lock_agent(store.root())?;
    let updater = Updater::open(store.clone(), cfg.updater)?;
    tracing::info!(device = %updater.device_id(), channel = %updater.state().channel, serving = %updater.serve_dir().display(), "device started");
    let (follow_tx, follow_rx) = watch::channel(Vec::new());
    let (report_tx, report_rx) = watch::channel(None);
    let agent = agent::start(
        updater,
        store.clone(),
        trust,
        follow_tx,
        report_tx,
        cfg.node.metrics.clone(),
    );
    cfg.node.reports = Some(report_rx);
    // The app's current channel only; the agent changes it on a switch.
    cfg.node.follow = follow_rx.borrow().clone();
    cfg.node.follow_updates = Some(follow_rx);
    let for_status = agent.clone();
    cfg.node.extra_status = Some(Arc::new(move || for_status.view().status_json.clone()));
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
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
        agent.clone(),
        cfg.serve_names,
        stopped(stop_rx.clone()),
    ));
    let control = tokio::spawn(control::serve(
        store.root().to_owned(),
        agent.clone(),
        control_access,
    ));
    let for_progress = agent.clone();
    let progress = tokio::spawn(async move {
        while let Some(p) = progress_rx.recv().await {
            for_progress.progress(p);
        }
    });

    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut node => Some(r),
    };
    let _ = stop_tx.send(true);
    progress.abort();
    control.abort();
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

/// Holds `STORE/device/agent.lock` while the agent runs.
fn lock_agent(root: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let dir = root.join("device");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    if file.try_lock().is_err() {
        anyhow::bail!(
            "another lanseed device agent is running on store {}; stop it first or use another --store",
            root.display()
        );
    }
    Ok(file)
}
