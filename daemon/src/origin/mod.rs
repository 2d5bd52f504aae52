//! `lanseed seed --origin URL`: a site cache that pulls releases from a
//! static origin (`lanseed publish-static` on any web server) over a slow
//! uplink, and seeds them on the LAN like any node.
//!
//! One task polls the origin (at once, then every `--origin-every`, longer
//! while `Cache-Control` says `index.json` is fresh, sooner after a
//! failure) and runs a [`sync::Pass`]; it commits only verified releases
//! into the store, where the node's store watch finds and announces them.
//! Its state is published on a watch channel that `lanseed status` reads.
//!
//! Parts: [`plan`] decides (pure, tested), [`http`] talks to the origin,
//! [`blob`] checks downloads, [`sync`] runs a pass.

pub mod blob;
pub mod http;
pub mod plan;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use lanseed_protocol::{Store, TrustList};
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::node::Follow;

/// The site cache's settings (`--origin*` flags).
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// The static tree's root.
    pub url: Url,
    /// Time between polls.
    pub every: Duration,
    /// Headers sent with every request (auth).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Cap on what is read from the origin, bytes per second.
    pub rate: Option<u64>,
}

/// What `lanseed status` shows of the site cache.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OriginStatus {
    /// The origin.
    pub url: String,
    /// When the last poll ended (Unix seconds).
    pub last_poll: Option<u64>,
    /// What it did (`up to date`, `not modified`, releases added).
    pub last_result: Option<String>,
    /// Why it failed, when it did.
    pub last_error: Option<String>,
    /// Failed polls in a row.
    pub failures: u32,
    /// Seconds from the last poll to the next.
    pub next_poll_secs: u64,
    /// Bytes of bodies received from the origin since start.
    pub bytes_fetched: u64,
    /// Blobs downloaded and verified since start.
    pub blobs_fetched: u64,
    /// Blobs still to fetch for the releases of the last or current pass.
    pub blobs_pending: u64,
    /// Their size, uncompressed.
    pub bytes_pending: u64,
    /// Releases committed from the origin since start.
    pub releases_added: u64,
    /// The release being synced now.
    pub syncing: Option<String>,
}

/// Reads the site cache's status.
#[derive(Clone)]
pub struct Handle {
    status: watch::Receiver<OriginStatus>,
    origin: Arc<http::Origin>,
}

impl Handle {
    /// The status as `lanseed status --json` shows it.
    pub fn status_json(&self) -> serde_json::Value {
        let mut s = self.status.borrow().clone();
        s.bytes_fetched = self.origin.fetched();
        serde_json::to_value(s).unwrap_or_default()
    }
}

/// Starts the site cache's task; it stops when `cancel` fires (a download
/// in progress stays in `partial-origin/` for the next start).
pub fn spawn(
    cfg: OriginConfig,
    store: Store,
    trust: TrustList,
    follow: Vec<Follow>,
    cancel: CancellationToken,
) -> Result<(Handle, tokio::task::JoinHandle<()>), String> {
    let origin = Arc::new(http::Origin::new(cfg.url, cfg.headers, cfg.rate)?);
    let (tx, rx) = watch::channel(OriginStatus {
        url: origin.base().to_string(),
        ..OriginStatus::default()
    });
    let handle = Handle {
        status: rx,
        origin: origin.clone(),
    };
    let every = cfg.every;
    let task = tokio::spawn(async move {
        let mut validators = None;
        loop {
            let pass = sync::Pass {
                origin: &origin,
                store: &store,
                trust: &trust,
                follow: &follow,
                status: &tx,
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = pass.run(validators.as_ref()) => r,
            };
            let mut wait = Duration::ZERO;
            tx.send_modify(|s| {
                s.last_poll = Some(crate::cmd::now());
                s.syncing = None;
                let fresh = match result {
                    Ok(outcome) => {
                        s.failures = 0;
                        s.last_error = None;
                        s.last_result = Some(match (&outcome.validators, &outcome.added[..]) {
                            (None, _) => "index.json not modified".into(),
                            (Some(_), []) => "up to date".into(),
                            (Some(_), added) => format!("added {}", added.join(", ")),
                        });
                        if let Some(v) = outcome.validators {
                            validators = Some(v);
                        }
                        plan::freshness(outcome.cache_control.as_deref())
                    }
                    Err(e) => {
                        s.failures = s.failures.saturating_add(1);
                        let line = format!("origin: {e}");
                        tracing::warn!("{line}");
                        s.last_error = Some(line);
                        s.last_result = Some("failed".into());
                        // The next pass reads index.json again in full.
                        validators = None;
                        plan::freshness(None)
                    }
                };
                wait = plan::next_poll(every, fresh, s.failures);
                s.next_poll_secs = wait.as_secs();
            });
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    Ok((handle, task))
}
