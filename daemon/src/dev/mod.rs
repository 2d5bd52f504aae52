//! `lanseed dev`: the dev loop. A node seeding a dev store, a watch of the
//! build folder, and a packer: each time the bundler is done writing (the
//! folder quiet for `--quiet`, with `index.html`), what changed is packed
//! ([`lanseed_protocol::pack_cache`]), signed with the dev key and
//! published on channel `dev`; the node announces it at once, and devices
//! fetch only the changed files. Device reports are printed as they
//! arrive, with the time since the save that caused them.
//!
//! - [`config`]: the Capacitor project's `appId` and `webDir`.
//! - [`quiet`]: when a burst of writes is over (pure).

pub mod config;
pub mod quiet;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanseed_protocol::pack::{PackError, PackOptions};
use lanseed_protocol::pack_cache::{CachedPack, PackCache};
use lanseed_protocol::release::Rollout;
use lanseed_protocol::report::DeviceReport;
use lanseed_protocol::{SecretKey, SignedRelease, Store};
use tokio::sync::mpsc;

use crate::node::{self, NodeConfig};

/// The channel dev releases go to.
pub const CHANNEL: &str = "dev";

/// Everything the loop needs.
pub struct DevConfig {
    /// The node (seeding the dev store).
    pub node: NodeConfig,
    /// The build folder.
    pub dir: PathBuf,
    /// App id.
    pub app: String,
    /// The dev key.
    pub key: Arc<SecretKey>,
    /// Dev releases kept.
    pub keep: usize,
    /// How long the folder must be quiet before a pack.
    pub quiet: Duration,
}

/// A published build, waiting for device reports.
struct Published {
    bundle: [u8; 32],
    version: String,
    /// The first write of the burst it came from.
    saved: Instant,
    /// Devices that reported on it already.
    told: HashMap<String, &'static str>,
}

/// Runs the loop until `shutdown` resolves.
pub async fn run(
    cfg: DevConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let DevConfig {
        node: mut node_cfg,
        dir,
        app,
        key,
        keep,
        quiet,
    } = cfg;
    let store = node_cfg.store.clone();
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    node_cfg.device_events = Some(reports_tx);
    // The node announces a pack as soon as it is committed.
    let packed = Arc::new(tokio::sync::Notify::new());
    node_cfg.store_changed = Some(packed.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut node = tokio::spawn(node::run(node_cfg, async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    }));

    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel();
    std::fs::create_dir_all(&dir)?;
    let watched = std::fs::canonicalize(&dir)?;
    let for_events = watched.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // The parent is watched only to see the folder itself come back
        // (deleted and made again by a build tool).
        let inside = ev.paths.iter().any(|p| p.starts_with(&for_events));
        let recreated = matches!(ev.kind, notify::EventKind::Create(_))
            && ev.paths.iter().any(|p| p == &for_events);
        if inside {
            let _ = fs_tx.send((Instant::now(), recreated));
        }
    })?;
    watch(&mut watcher, &watched)?;
    if let Some(parent) = watched.parent() {
        let _ = notify::Watcher::watch(&mut watcher, parent, notify::RecursiveMode::NonRecursive);
    }
    eprintln!(
        "watching {} for {} (channel {CHANNEL}); Ctrl-C stops",
        dir.display(),
        app
    );

    let cache = Arc::new(Mutex::new(PackCache::default()));
    // A first pack of what is there now.
    let mut burst = quiet::Burst::default();
    burst.write(Instant::now());
    let mut rebuilds = 0u64;
    let mut published: Option<Published> = None;
    let mut waiting_for_index = false;
    tokio::pin!(shutdown);
    let result = loop {
        let due = burst.due(quiet);
        tokio::select! {
            Some((at, recreated)) = fs_rx.recv() => {
                if recreated && let Err(e) = watch(&mut watcher, &watched) {
                    eprintln!("{e}");
                }
                burst.write(at);
            }
            _ = sleep_until(due), if due.is_some() => {
                let Some(first) = burst.take() else { continue };
                if !dir.join("index.html").is_file() {
                    if !waiting_for_index {
                        eprintln!("waiting for the build: {} has no index.html yet", dir.display());
                        waiting_for_index = true;
                    }
                    continue;
                }
                waiting_for_index = false;
                tracing::info!(quiet_for_ms = first.elapsed().as_millis() as u64, "packing");
                match pack(&cache, &store, &dir, &app, &key).await {
                    Ok(p) => {
                        packed.notify_one();
                        rebuilds += 1;
                        let ms = first.elapsed().as_secs_f64() * 1e3;
                        let r = p.packed.release.release();
                        if p.hashed == 0 && p.packed.outcome == lanseed_protocol::store::CommitOutcome::AlreadyPresent {
                            continue;
                        }
                        eprintln!(
                            "rebuild {rebuilds}: {} changed ({}), {} kept; published {} as {} in {ms:.0} ms",
                            plural(p.hashed, "file"),
                            bytes(p.hashed_bytes),
                            p.reused,
                            &r.bundle_id.to_string()[..12],
                            r.version,
                        );
                        published = Some(Published {
                            bundle: *r.bundle_id.0.as_bytes(),
                            version: r.version.clone(),
                            saved: first,
                            told: HashMap::new(),
                        });
                        collect(&store, &app, keep);
                    }
                    Err(PackError::Changed(path)) => {
                        // Still being written: pack when it is quiet again.
                        tracing::debug!("{} changed while packing; waiting", path.display());
                        burst.write(Instant::now());
                    }
                    Err(e) => eprintln!("build not published: {e}"),
                }
            }
            Some(report) = reports_rx.recv() => {
                if let Some(p) = published.as_mut() {
                    on_report(p, &report);
                }
            }
            r = &mut node => break match r {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("the node task failed: {e}")),
            },
            _ = &mut shutdown => break Ok(()),
        }
    };
    drop(watcher);
    let _ = stop_tx.send(true);
    if !node.is_finished() {
        let _ = node.await;
    }
    result
}

/// Watches the build folder and everything under it.
fn watch(watcher: &mut notify::RecommendedWatcher, dir: &std::path::Path) -> anyhow::Result<()> {
    notify::Watcher::watch(watcher, dir, notify::RecursiveMode::Recursive)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Packs the folder off the async threads.
async fn pack(
    cache: &Arc<Mutex<PackCache>>,
    store: &Store,
    dir: &std::path::Path,
    app: &str,
    key: &Arc<SecretKey>,
) -> Result<CachedPack, PackError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let opts = PackOptions {
        app: app.to_owned(),
        channel: CHANNEL.into(),
        version: format!("0.0.0-dev.{}", now.as_millis()),
        seq: None,
        created: now.as_secs(),
        min_native_version: None,
        rollout: Rollout::FULL,
        expires: None,
        notes: None,
        capgo: None,
    };
    let (cache, store, dir, key) = (cache.clone(), store.clone(), dir.to_owned(), key.clone());
    tokio::task::spawn_blocking(move || {
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.pack(&store, &dir, &opts, &key)
    })
    .await
    .unwrap_or_else(|e| {
        Err(PackError::Read {
            path: PathBuf::from("(pack task)"),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Keeps the `keep` newest dev releases of `app` (others of the store are
/// left alone); skipped while the store is busy.
fn collect(store: &Store, app: &str, keep: usize) {
    let (store, app) = (store.clone(), app.to_owned());
    tokio::task::spawn_blocking(move || {
        let Ok(releases) = store.releases() else {
            return;
        };
        let mut seqs: Vec<u64> = releases
            .iter()
            .map(SignedRelease::release)
            .filter(|r| r.app == app && r.channel == CHANNEL)
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&floor) = seqs.get(keep.saturating_sub(1)) else {
            return;
        };
        let keep = |r: &SignedRelease| {
            let r = r.release();
            r.app != app || r.channel != CHANNEL || r.seq >= floor
        };
        if let Err(e) = store.try_gc_by(keep) {
            tracing::warn!("cannot collect the dev store: {e}");
        }
    });
}

/// Prints a device's `set` or `update_fail` of the newest build, once.
fn on_report(p: &mut Published, r: &DeviceReport) {
    let seen = p.told.get(&r.device_id).copied();
    let outcome = match r.event.as_deref() {
        // Rolled back from the build it was seen running.
        Some("update_fail") if seen == Some("set") && r.bundle != Some(p.bundle) => "update_fail",
        _ if r.bundle == Some(p.bundle) && matches!(r.status.as_str(), "trial" | "success") => {
            "set"
        }
        _ => return,
    };
    if seen == Some(outcome) || seen == Some("update_fail") {
        return;
    }
    p.told.insert(r.device_id.clone(), outcome);
    let ms = p.saved.elapsed().as_secs_f64() * 1e3;
    match outcome {
        "set" => eprintln!(
            "  {}: set {} ({ms:.0} ms after the save)",
            r.device_id, p.version
        ),
        _ => eprintln!(
            "  {}: update_fail, back on {} ({ms:.0} ms after the save)",
            r.device_id, r.version
        ),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn bytes(n: u64) -> String {
    if n < 10_000 {
        format!("{n} B")
    } else if n < 10_000_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else {
        format!("{:.1} MB", n as f64 / 1e6)
    }
}
