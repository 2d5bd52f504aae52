//! The updater as an actor: one thread owns the [`Updater`]; the HTTP
//! server, the control socket and the node talk to it through a
//! [`Handle`], and read what to serve from a `watch` of its [`View`].
//!
//! Nothing waits on the disk while holding the updater: materialising a
//! bundle (hard links plus a file-system sync) and collecting the store
//! run on threads of their own and report back as messages, so a page
//! load, a `ready` or a `lanseed device list` is answered while a bundle
//! of 20,000 files installs. The rules stay in `lanseed-client`; this
//! module only schedules them:
//!
//! - **Offers.** Whenever the store's index changes, the channel changes,
//!   or a retry falls due, the releases of the app and channel in the
//!   store are verified (each once) and [`Updater::pick`] chooses the one
//!   to install. Nothing is marked "seen": a release skipped today is
//!   offered again when the reason goes away.
//! - **Retries.** An install that failed on the disk (full, read-only) is
//!   tried again after a doubling backoff ([`Backoff`]).
//! - **What the node fetches.** The node follows the app's current channel
//!   only; a switch switches it.
//! - **Collection.** After every change of what the device runs, the
//!   store is collected by the device's own rule ([`KeepRule`]), which a
//!   running collection reads under the store's locks, so a channel switch
//!   while it runs cannot make it drop the new channel's releases. A
//!   collection never waits behind a transfer (it tries again later).
//! - **One job at a time.** Removing directories, installing and
//!   collecting take turns on a background thread, so an install never
//!   meets a collection or the removal of its own directory.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant as StdInstant};

use crate::node::retry::Backoff;

use lanseed_client::install::{self, InstallError};
use lanseed_client::updater::UpdaterError;
use lanseed_client::{Event, Updater};
use lanseed_protocol::report::DeviceReport;
use lanseed_protocol::{BundleId, ReleaseId, SignedRelease, Store, TrustList, VerifiedRelease};
use tokio::sync::{broadcast, oneshot, watch};

use super::control::DeviceRequest;
use crate::node::{self, Follow};

/// How often trials, the maintenance window, the store and retries are
/// looked at.
const TICK: Duration = Duration::from_millis(20);
/// Messages waiting for the actor; more are refused (HTTP answers 503).
const QUEUE: usize = 256;
/// Events kept for `status`.
const RECENT: usize = 50;
/// Verified releases remembered (so each signature is checked once).
const MAX_VERIFIED: usize = 4096;

/// What the HTTP server needs to answer a request, published after every
/// change.
#[derive(Clone, Debug)]
pub struct View {
    /// The current bundle's id ([`lanseed_client::state::BUILTIN`] for the builtin one).
    pub current: String,
    /// Its version.
    pub version: String,
    /// Its status (`success`, `trial`, …).
    pub status: String,
    /// The directory to serve.
    pub serve_dir: PathBuf,
    /// The store's directory (bundle directories of pinned pages).
    pub store_root: PathBuf,
    /// The updater's part of `lanseed status`.
    pub status_json: serde_json::Value,
}

/// Why the actor did not take a request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Too many requests are waiting.
    #[error("the device agent is busy; try again")]
    Busy,
    /// The actor stopped.
    #[error("the device agent stopped")]
    Gone,
    /// The updater refused or failed.
    #[error("{0}")]
    Updater(String),
}

enum Msg {
    Ready(String, oneshot::Sender<Result<bool, AgentError>>),
    Control(DeviceRequest, oneshot::Sender<serde_json::Value>),
    Progress(Box<node::Progress>),
    Materialized(Box<VerifiedRelease>, Result<(), InstallError>),
    /// `None`: the store was busy.
    Collected(Result<Option<lanseed_protocol::store::GcReport>, String>),
    Removed(Vec<(String, std::io::Result<()>)>),
}

/// How to talk to the actor; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: SyncSender<Msg>,
    view: watch::Receiver<Arc<View>>,
    events: broadcast::Sender<Event>,
}

impl Handle {
    /// What to serve now.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// What to serve, as it changes.
    pub fn views(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// A new receiver of updater events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn send(&self, msg: Msg) -> Result<(), AgentError> {
        self.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => AgentError::Busy,
            TrySendError::Disconnected(_) => AgentError::Gone,
        })
    }

    /// notifyAppReady from a page served from `bundle`; whether it ended a
    /// trial.
    pub async fn ready(&self, bundle: String) -> Result<bool, AgentError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Ready(bundle, reply))?;
        rx.await.map_err(|_| AgentError::Gone)?
    }

    /// A request of `lanseed device …`; the status, or `{"error": …}`.
    pub async fn control(&self, req: DeviceRequest) -> serde_json::Value {
        let (reply, rx) = oneshot::channel();
        if let Err(e) = self.send(Msg::Control(req, reply)) {
            return serde_json::json!({ "error": e.to_string() });
        }
        rx.await
            .unwrap_or_else(|_| serde_json::json!({ "error": AgentError::Gone.to_string() }))
    }

    /// Fetch progress from the node (dropped when the actor is busy).
    pub fn progress(&self, p: node::Progress) {
        let _ = self.send(Msg::Progress(Box::new(p)));
    }
}

/// The device's collection rule: which releases of the store stay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepRule {
    /// The device's app.
    pub app: String,
    /// Its channel.
    pub channel: String,
    /// Bundles the updater keeps ([`Updater::keeps`]).
    pub bundles: BTreeSet<BundleId>,
    /// The sequence number installed on the channel.
    pub installed: u64,
}

impl KeepRule {
    /// The rule for the updater's state now.
    pub fn of(u: &Updater) -> KeepRule {
        let channel = u.state().channel.clone();
        KeepRule {
            app: u.app().to_owned(),
            installed: u.state().installed_seq.get(&channel).copied().unwrap_or(0),
            channel,
            bundles: u.keeps().iter().filter_map(|id| id.parse().ok()).collect(),
        }
    }

    /// Whether `r` stays: a release of another app (not the device's
    /// business), of a bundle the updater keeps, or of the device's channel
    /// newer than what is installed (about to be installed, or one the
    /// device refused that peers may still want). Everything else goes:
    /// older releases of the channel, and every release of other channels.
    pub fn keeps(&self, r: &SignedRelease) -> bool {
        let rel = r.release();
        rel.app != self.app
            || self.bundles.contains(&rel.bundle_id)
            || (rel.channel == self.channel && rel.seq > self.installed)
    }
}

/// What the actor's one background job is doing. One at a time, so an
/// install never meets a collection or a removal of its own directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    /// Materialising this bundle.
    Installing(BundleId),
    /// Collecting the store.
    Collecting,
    /// Removing bundle directories the state no longer names.
    Removing,
}

/// How long a collection that found the store busy (a fetch running)
/// waits before trying again.
const COLLECT_RETRY: Duration = Duration::from_secs(5);

/// Starts the actor over `updater`; `follow` gets the node's follow list
/// whenever the channel changes; rollbacks are counted in `metrics`.
pub fn start(
    updater: Updater,
    store: Store,
    trust: TrustList,
    follow: watch::Sender<Vec<Follow>>,
    report: watch::Sender<Option<DeviceReport>>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Handle {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let (events, _) = broadcast::channel(256);
    // The bundle whose trial failed last: the newest release's among
    // those the state marks failed (from then on, each failure as it
    // comes, whatever its channel and sequence number).
    let last_failed = updater
        .state()
        .failed
        .iter()
        .max_by_key(|(_, seq)| **seq)
        .and_then(|(id, _)| id.parse::<BundleId>().ok());
    let mut actor = Actor {
        updater,
        store,
        trust,
        follow,
        report,
        last_event: None,
        last_failed,
        tx: tx.clone(),
        view: None,
        events: events.clone(),
        recent: VecDeque::new(),
        verified: HashMap::new(),
        told: Default::default(),
        stamp: None,
        job: None,
        offer_wanted: true,
        retries: HashMap::new(),
        collect_at: Some(StdInstant::now()),
        rule: Arc::new(std::sync::Mutex::new(KeepRule::default())),
        progress: HashMap::new(),
        events_seen: 0,
        unsent: Vec::new(),
        last_seen: None,
        metrics,
    };
    actor.updater.defer_removals();
    actor.set_follow();
    let (view_tx, view_rx) = watch::channel(Arc::new(actor.make_view()));
    actor.view = Some(view_tx);
    std::thread::Builder::new()
        .name("lanseed-updater".into())
        .spawn(move || actor.run(rx))
        .expect("cannot start the updater thread");
    Handle {
        tx,
        view: view_rx,
        events,
    }
}

struct Actor {
    updater: Updater,
    store: Store,
    trust: TrustList,
    follow: watch::Sender<Vec<Follow>>,
    /// The device's report to its peers (sent by the node).
    report: watch::Sender<Option<DeviceReport>>,
    /// The last updater event, by Capgo's stats action name.
    last_event: Option<String>,
    /// The bundle whose trial failed last (the report's `failed`).
    last_failed: Option<BundleId>,
    tx: SyncSender<Msg>,
    view: Option<watch::Sender<Arc<View>>>,
    events: broadcast::Sender<Event>,
    /// Events drained from the updater, sent to the pages once the view
    /// shows what they tell (a page reloading on `appReloaded` must be
    /// served the new bundle).
    unsent: Vec<Event>,
    recent: VecDeque<Event>,
    /// Releases of the app checked against the trust list, by id.
    verified: HashMap<ReleaseId, Option<VerifiedRelease>>,
    /// Releases whose refusal was logged.
    told: std::collections::HashSet<ReleaseId>,
    /// The index file's stamp when last read.
    stamp: crate::node::watch::Stamp,
    /// The background job running, if any.
    job: Option<Job>,
    offer_wanted: bool,
    retries: HashMap<BundleId, Backoff>,
    /// When to collect the store next, if wanted.
    collect_at: Option<StdInstant>,
    /// The collection rule, read by a running collection under the
    /// store's locks, so that it always sees the state of now.
    rule: Arc<std::sync::Mutex<KeepRule>>,
    /// Last download percent reported per bundle.
    progress: HashMap<BundleId, u8>,
    /// Events emitted so far.
    events_seen: u64,
    /// What the last publication was made of.
    last_seen: Option<Seen>,
    /// Where rollbacks are counted.
    metrics: Arc<crate::metrics::Metrics>,
}

/// What the published report, rule and view are made of.
#[derive(PartialEq)]
struct Seen {
    state: lanseed_client::DeviceState,
    job: Option<Job>,
    retries: Vec<(BundleId, Backoff)>,
    events: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Actor {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut last_tick = StdInstant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(msg) => self.on_msg(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= TICK {
                last_tick = StdInstant::now();
                self.tick();
            }
            self.publish();
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Ready(bundle, reply) => {
                let r = self.updater.notify_app_ready(&bundle);
                if let Ok(true) = r {
                    tracing::info!(%bundle, "notifyAppReady");
                    self.want_collection();
                }
                let _ = reply.send(r.map_err(|e| AgentError::Updater(e.to_string())));
            }
            Msg::Control(req, reply) => {
                let _ = reply.send(self.control(req));
            }
            Msg::Progress(p) if p.committed => {
                // A release just entered the store: look now, not at the
                // next tick.
                self.offer_wanted = true;
                self.stamp = crate::node::watch::stamp(&self.store);
                self.next_job(StdInstant::now());
            }
            Msg::Progress(p) => {
                let id = p.release.release().bundle_id;
                let percent = (p.done * 100)
                    .checked_div(p.total)
                    .map_or(100, |x| x.min(99) as u8);
                if self.progress.insert(id, percent) != Some(percent) {
                    self.updater.download_progress(&p.release, percent);
                }
                if self.progress.len() > 64 {
                    self.progress.clear();
                }
            }
            Msg::Materialized(release, done) => self.on_materialized(*release, done),
            Msg::Collected(result) => {
                self.job = None;
                match result {
                    Ok(None) => {
                        tracing::debug!("the store is busy (a transfer runs); collecting later");
                        self.collect_at = Some(StdInstant::now() + COLLECT_RETRY);
                    }
                    Ok(Some(r)) if !r.dropped.is_empty() || r.blobs_removed > 0 => tracing::info!(
                        releases_dropped = r.dropped.len(),
                        releases_kept = r.kept,
                        blobs_removed = r.blobs_removed,
                        bytes_freed = r.bytes_freed,
                        "store collected"
                    ),
                    Ok(Some(_)) => {}
                    Err(e) => {
                        tracing::warn!("cannot collect the store: {e}");
                        self.collect_at = Some(StdInstant::now() + COLLECT_RETRY);
                    }
                }
            }
            Msg::Removed(results) => {
                self.job = None;
                for (id, r) in results {
                    if let Err(e) = r {
                        tracing::warn!(bundle = %id, "cannot remove the bundle's directory: {e}; it goes at the next start");
                    }
                }
            }
        }
    }

    /// Collects the store soon (after the current job).
    fn want_collection(&mut self) {
        let now = StdInstant::now();
        self.collect_at = Some(self.collect_at.map_or(now, |t| t.min(now)));
    }

    fn control(&mut self, req: DeviceRequest) -> serde_json::Value {
        let result = match &req {
            DeviceRequest::Reset => self.updater.reset(),
            DeviceRequest::Channel { name } => lanseed_protocol::release::check_channel(name)
                .map_err(|e| UpdaterError::Unknown(e.to_string()))
                .and_then(|()| self.updater.set_channel(name))
                .map(|()| {
                    self.set_follow();
                    self.offer_wanted = true;
                    // Backoffs of the old channel's bundles no longer matter.
                    self.retries.clear();
                }),
            DeviceRequest::Delete { id } => self.updater.delete(id),
            DeviceRequest::Reload => self.updater.reload(),
            DeviceRequest::List => Ok(()),
        };
        match result {
            Ok(()) => {
                if !matches!(req, DeviceRequest::List) {
                    self.want_collection();
                }
                self.drain_events();
                self.status_json()
            }
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }
    }

    fn tick(&mut self) {
        if let Err(e) = self.updater.check_timeout(tokio::time::Instant::now()) {
            tracing::error!("cannot roll back: {e}");
        }
        match self.updater.apply_in_window(local_minute()) {
            Ok(true) => self.want_collection(),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot apply the next bundle: {e}"),
        }
        let stamp = crate::node::watch::stamp(&self.store);
        if stamp != self.stamp {
            self.stamp = stamp;
            self.offer_wanted = true;
        }
        let now = StdInstant::now();
        if self.retries.values().any(|b| b.due <= now) {
            self.offer_wanted = true;
        }
        self.next_job(now);
    }

    /// Starts the next background job if none runs: directories to
    /// remove first (an install may need the name back), then an install,
    /// then a collection.
    fn next_job(&mut self, now: StdInstant) {
        if self.job.is_some() {
            return;
        }
        let removals = self.updater.take_removals();
        if !removals.is_empty() {
            let root = self.store.root().to_owned();
            let tx = self.tx.clone();
            self.spawn_job(Job::Removing, move || {
                let results = removals
                    .iter()
                    .map(|r| (r.id.clone(), r.run(&root)))
                    .collect();
                let _ = tx.send(Msg::Removed(results));
            });
            return;
        }
        if self.offer_wanted {
            self.offer_wanted = false;
            self.offer(now);
            if self.job.is_some() {
                return;
            }
        }
        if self.collect_at.is_some_and(|t| t <= now) {
            self.collect_at = None;
            self.collect();
        }
    }

    /// Runs `f` as the background job `job` on a thread of its own.
    fn spawn_job(&mut self, job: Job, f: impl FnOnce() + Send + 'static) -> bool {
        match std::thread::Builder::new()
            .name("lanseed-device-job".into())
            .spawn(f)
        {
            Ok(_) => {
                self.job = Some(job);
                true
            }
            Err(e) => {
                tracing::error!("cannot start a thread for {job:?}: {e}; trying again shortly");
                false
            }
        }
    }

    /// Offers the store's releases of the app and channel to the updater.
    fn offer(&mut self, now: StdInstant) {
        let releases = match self.store.releases() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the store: {e}");
                return;
            }
        };
        let app = self.updater.app().to_owned();
        let channel = self.updater.state().channel.clone();
        if self.verified.len() > MAX_VERIFIED {
            self.verified.clear();
        }
        let mut candidates = Vec::new();
        for r in releases {
            let rel = r.release();
            if rel.app != app || rel.channel != channel {
                continue;
            }
            let trust = &self.trust;
            let v = self.verified.entry(r.id()).or_insert_with(|| {
                r.verify(trust)
                    .map_err(|e| {
                        tracing::warn!(version = %r.release().version, seq = r.release().seq, "release not installed: {e}")
                    })
                    .ok()
            });
            let Some(v) = v else { continue };
            if self
                .retries
                .get(&v.release().bundle_id)
                .is_some_and(|b| b.due > now)
            {
                continue;
            }
            candidates.push(v.clone());
        }
        // Why a release newer than the installed one is skipped, once each.
        for v in &candidates {
            if let Err(why) = self.updater.check(v, unix_now())
                && !matches!(why, lanseed_client::Refusal::NotNewer { .. })
                && self.told.insert(v.id())
            {
                tracing::info!(version = %v.release().version, seq = v.release().seq, "not installed: {why}");
            }
        }
        if self.told.len() > MAX_VERIFIED {
            self.told.clear();
        }
        let Some(pick) = self.updater.pick(&candidates, unix_now()).cloned() else {
            return;
        };
        match self.updater.begin_install(&pick, unix_now()) {
            Ok(lanseed_client::Begun::Materialize) => {}
            Ok(lanseed_client::Begun::AlreadyInstalled) => {
                self.offer_wanted = true;
                return;
            }
            Err(e) => {
                tracing::info!(version = %pick.release().version, "not installed: {e}");
                return;
            }
        }
        let bundle = pick.release().bundle_id;
        tracing::info!(version = %pick.release().version, seq = pick.release().seq, %bundle, "installing");
        let (store, tx) = (self.store.clone(), self.tx.clone());
        if !self.spawn_job(Job::Installing(bundle), move || {
            let done = install::materialize(&store, &bundle).map(|_| ());
            let _ = tx.send(Msg::Materialized(Box::new(pick), done));
        }) {
            self.offer_wanted = true;
        }
    }

    fn on_materialized(&mut self, release: VerifiedRelease, done: Result<(), InstallError>) {
        self.job = None;
        self.offer_wanted = true;
        let bundle = release.release().bundle_id;
        let version = release.release().version.clone();
        match self.updater.finish_install(&release, done, unix_now()) {
            Ok(()) => {
                self.retries.remove(&bundle);
                self.want_collection();
            }
            Err(UpdaterError::Refused(why)) => {
                tracing::info!(%version, "not installed: {why}");
            }
            Err(e) => {
                let b =
                    Backoff::after_failure(self.retries.get(&bundle).copied(), StdInstant::now());
                let wait = b.due.saturating_duration_since(StdInstant::now());
                tracing::warn!(%version, %bundle, "install failed: {e}; trying again in {}s", wait.as_secs().max(1));
                self.retries.insert(bundle, b);
            }
        }
    }

    /// Collects the store by the device's [`KeepRule`], on a thread of its
    /// own; a store busy with a transfer is collected later.
    fn collect(&mut self) {
        *self.rule.lock().unwrap_or_else(|e| e.into_inner()) = KeepRule::of(&self.updater);
        let (store, tx, rule) = (self.store.clone(), self.tx.clone(), self.rule.clone());
        if !self.spawn_job(Job::Collecting, move || {
            let result = store
                .try_gc_by(|r| rule.lock().unwrap_or_else(|e| e.into_inner()).keeps(r))
                .map_err(|e| e.to_string());
            let _ = tx.send(Msg::Collected(result));
        }) {
            self.want_collection();
        }
    }

    /// Sets the node's follow list to the app's current channel.
    fn set_follow(&mut self) {
        let channel = self.updater.state().channel.clone();
        let follow = vec![Follow {
            app: self.updater.app().to_owned(),
            // Releases at or below the installed one are refused: the node
            // need not fetch them (nor fetch again what a collection drops).
            above: self
                .updater
                .state()
                .installed_seq
                .get(&channel)
                .copied()
                .unwrap_or(0),
            channel: Some(channel),
        }];
        self.follow.send_if_modified(|f| {
            let changed = *f != follow;
            *f = follow;
            changed
        });
    }

    fn drain_events(&mut self) {
        for e in self.updater.drain_events() {
            self.events_seen += 1;
            let json = serde_json::to_string(&e).unwrap_or_default();
            tracing::info!(target: "lanseed::events", "{json}");
            if let Event::UpdateFailed { bundle, .. } = &e {
                self.last_failed = bundle.parse().ok().or(self.last_failed);
                self.metrics.rollback();
                self.want_collection();
            }
            let name = serde_json::to_value(&e).ok().and_then(|v| {
                v["event"]
                    .as_str()
                    .and_then(lanseed_protocol::report::capgo_action)
            });
            // A reload follows a `set` or an `update_fail`: the outcome is
            // what the report's last event tells.
            if let Some(action) = name.filter(|a| *a != "app_reloaded") {
                self.last_event = Some(action.to_owned());
            }
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(e.clone());
            self.unsent.push(e);
        }
    }

    /// Sends the drained events to the pages (after the view is updated).
    fn send_events(&mut self) {
        for e in self.unsent.drain(..) {
            let _ = self.events.send(e);
        }
    }

    /// Publishes the report, the collection rule and the view, when what
    /// they are made of changed since the last time (not on every tick:
    /// building the status is the costly part); then the events, so that
    /// a page told of a new bundle is served it.
    fn publish(&mut self) {
        self.drain_events();
        self.publish_state();
        self.send_events();
    }

    fn publish_state(&mut self) {
        let mut retries: Vec<(BundleId, Backoff)> =
            self.retries.iter().map(|(b, r)| (*b, *r)).collect();
        retries.sort_by_key(|(b, _)| *b);
        let seen = Seen {
            state: self.updater.state().clone(),
            job: self.job,
            retries,
            events: self.events_seen,
        };
        if self.last_seen.as_ref() == Some(&seen) {
            return;
        }
        self.last_seen = Some(seen);
        let report = self.make_report();
        self.report.send_if_modified(|old| {
            // A change of state, not of the time alone.
            let changed = old.as_ref().is_none_or(|o| {
                DeviceReport {
                    time: report.time,
                    ..o.clone()
                } != report
            });
            if changed {
                *old = Some(report);
            }
            changed
        });
        self.set_follow();
        let rule = KeepRule::of(&self.updater);
        {
            let mut shared = self.rule.lock().unwrap_or_else(|e| e.into_inner());
            if *shared != rule {
                *shared = rule;
            }
        }
        let view = self.make_view();
        if let Some(tx) = &self.view {
            tx.send_if_modified(|v| {
                let changed = v.current != view.current
                    || v.status != view.status
                    || v.status_json != view.status_json;
                if changed {
                    *v = Arc::new(view);
                }
                changed
            });
        }
    }

    /// What the device reports to its peers now.
    fn make_report(&self) -> DeviceReport {
        let u = &self.updater;
        let (current, version, status) = u.current();
        let seq = u.state().bundles.get(&current).map_or(0, |b| b.seq);
        DeviceReport {
            device_id: u.device_id().to_owned(),
            app: u.app().to_owned(),
            channel: u.state().channel.clone(),
            bundle: current.parse::<BundleId>().ok().map(|b| *b.0.as_bytes()),
            version,
            seq,
            native_version: u.state().native_version.clone(),
            status,
            event: self.last_event.clone(),
            time: unix_now(),
            failed: self
                .last_failed
                .filter(|b| u.state().failed.contains_key(&b.to_string()))
                .map(|b| *b.0.as_bytes()),
        }
    }

    fn make_view(&self) -> View {
        let (current, version, status) = self.updater.current();
        View {
            current,
            version,
            status,
            serve_dir: self.updater.serve_dir(),
            store_root: self.updater.store_root().to_owned(),
            status_json: self.status_json(),
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let u = &self.updater;
        let (id, version, status) = u.current();
        serde_json::json!({
            "device_id": u.device_id(),
            "channel": u.state().channel,
            "current": { "bundle_id": id, "version": version, "status": status },
            "next": u.state().next,
            "fallback": u.state().fallback,
            "installing": match self.job {
                Some(Job::Installing(b)) => Some(b.to_string()),
                _ => None,
            },
            "retrying": self.retries.iter().map(|(b, r)| serde_json::json!({
                "bundle_id": b.to_string(),
                "in_secs": r.due.saturating_duration_since(StdInstant::now()).as_secs(),
            })).collect::<Vec<_>>(),
            "bundles": u.list().into_iter().map(|(id, b)| serde_json::json!({
                "bundle_id": id, "version": b.version, "channel": b.channel, "seq": b.seq, "status": b.status,
            })).collect::<Vec<_>>(),
            "recent_events": self.recent,
        })
    }
}

/// The minute of the local day (for the maintenance window).
fn local_minute() -> u16 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    (now.hour() * 60 + now.minute()) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanseed_protocol::hash::Hash;
    use lanseed_protocol::keys::SecretKey;
    use lanseed_protocol::release::{Release, Rollout};

    fn signed(app: &str, channel: &str, seq: u64, bundle: u8) -> SignedRelease {
        let r = Release {
            app: app.into(),
            channel: channel.into(),
            version: format!("1.0.{seq}"),
            bundle_id: BundleId(Hash::of(&[bundle])),
            seq,
            created: 1,
            min_native_version: None,
            rollout: Rollout::FULL,
            expires: None,
            notes: None,
            capgo: None,
        };
        r.sign(&SecretKey::from_seed(&[1; 32])).unwrap()
    }

    #[test]
    fn the_rule_keeps_the_devices_bundles_and_newer_releases_of_its_channel() {
        let app = "com.example.kiosk";
        let current = signed(app, "production", 3, 3);
        let rule = KeepRule {
            app: app.into(),
            channel: "production".into(),
            bundles: [current.release().bundle_id].into(),
            installed: 3,
        };
        assert!(rule.keeps(&current));
        assert!(!rule.keeps(&signed(app, "production", 2, 2)), "older: goes");
        assert!(rule.keeps(&signed(app, "production", 4, 4)), "newer: stays");
        assert!(
            !rule.keeps(&signed(app, "dev", 30, 30)),
            "another channel: goes"
        );
        assert!(
            rule.keeps(&signed(app, "dev", 31, 3)),
            "another channel's release of a kept bundle stays"
        );
        assert!(
            rule.keeps(&signed("com.example.other", "dev", 1, 9)),
            "other apps are not ours"
        );
    }
}
