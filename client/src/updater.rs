//! The updater's rules, as @capgo/capacitor-updater applies them in cloud
//! mode (see `../shared/SPEC.md`):
//!
//! - a verified release is refused when its app or channel is not the
//!   device's, its sequence number is at or below the one installed (no
//!   downgrade by replay), it has expired, it needs a newer native app, the
//!   device is outside its rollout, or its bundle failed here before (on
//!   channel `dev` a republished bundle with a newer sequence may retry);
//! - an accepted bundle is materialised (`pending`), scheduled (`next`),
//!   and becomes `current` on trial at the next start (`next-start`), at
//!   once (`immediate`), or when the host calls [`Updater::reload`];
//! - the trial ends with `success` when the page served from that very
//!   bundle calls `notifyAppReady` within `appReadyTimeout` (a page of the
//!   outgoing bundle never counts), else with `error`: the device goes
//!   back to the last good bundle or the builtin one, emits
//!   `updateFailed`, and never installs that bundle again. A restart during
//!   a trial counts as a failed try;
//! - a change of native version resets to the builtin bundle and drops the
//!   downloaded ones (Capgo's `resetWhenUpdate`);
//! - failed bundles and the one before the last good one are deleted
//!   (`autoDeleteFailed`, `autoDeletePrevious`), never one that is current,
//!   next, or the fallback of a trial.
//!
//! Time is a parameter: the trial deadline is a `tokio::time::Instant`,
//! so tests run with paused time.

use std::path::PathBuf;
use std::time::Duration;

use lanseed_protocol::{BundleId, Release, Store, VerifiedRelease};
use serde::Serialize;
use tokio::time::Instant;

use crate::install::{self, InstallError};
use crate::state::{BUILTIN, BundleRecord, BundleStatus, DeviceState, Phase};

/// When a scheduled bundle becomes current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// At the next start of the agent, or when the host calls reload.
    NextStart,
    /// At once (the open page reloads).
    Immediate,
    /// At the next moment inside a daily maintenance window, in minutes of
    /// the local day (`end` may be past midnight: 22:00-02:00).
    Window {
        /// First minute of the window.
        start: u16,
        /// First minute after it.
        end: u16,
    },
}

impl ApplyMode {
    /// Parses `HH:MM-HH:MM` as a maintenance window.
    pub fn window(text: &str) -> Result<ApplyMode, String> {
        let bad = || format!("`{text}` is not a window such as 02:00-04:00");
        let minutes = |hm: &str| -> Option<u16> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(bad());
        }
        Ok(ApplyMode::Window { start, end })
    }
}

/// Whether `minute` (of the day) falls in the window `start..end`, which
/// may wrap past midnight.
pub fn in_window(minute: u16, start: u16, end: u16) -> bool {
    if start < end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}

/// The channel of a device that was never told one.
pub const DEFAULT_CHANNEL: &str = "production";

/// How the updater behaves.
#[derive(Clone, Debug)]
pub struct UpdaterConfig {
    /// The app id.
    pub app: String,
    /// The channel to follow: `Some` overrides the stored choice (and is
    /// saved); `None` keeps it (`production` on a first start).
    pub channel: Option<String>,
    /// Override of the device id (else made on first start and kept).
    pub device_id: Option<String>,
    /// The native app's version.
    pub native_version: String,
    /// The builtin bundle's directory.
    pub builtin: PathBuf,
    /// How long a new bundle has to call notifyAppReady (at least 1 s).
    pub app_ready_timeout: Duration,
    /// When scheduled bundles become current.
    pub apply: ApplyMode,
    /// Delete bundles that failed.
    pub auto_delete_failed: bool,
    /// Delete the bundle before the last good one.
    pub auto_delete_previous: bool,
}

/// An updater event, with Capgo's names.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// Download progress.
    Download {
        /// Bundle id.
        bundle: String,
        /// 0..=100.
        percent: u8,
    },
    /// A newer release is available and accepted.
    UpdateAvailable {
        /// Bundle id.
        bundle: String,
        /// Version.
        version: String,
    },
    /// The bundle is verified and on disk.
    DownloadComplete {
        /// Bundle id.
        bundle: String,
        /// Version.
        version: String,
    },
    /// The bundle could not be installed.
    DownloadFailed {
        /// Bundle id.
        bundle: String,
        /// Version.
        version: String,
        /// Why.
        reason: String,
    },
    /// A bundle became current.
    Set {
        /// Bundle id.
        bundle: String,
        /// Version.
        version: String,
    },
    /// A trial failed and was rolled back.
    UpdateFailed {
        /// Bundle id.
        bundle: String,
        /// Version.
        version: String,
    },
    /// The page should reload (a new bundle is current).
    AppReloaded {
        /// Bundle id now current.
        bundle: String,
    },
    /// notifyAppReady confirmed a bundle.
    AppReady {
        /// Bundle id.
        bundle: String,
    },
}

/// Why a release is not installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another app's release.
    #[error("it is a release of {0}, not of this app")]
    OtherApp(String),
    /// Another channel's release.
    #[error("it is on channel {0}, not the device's")]
    OtherChannel(String),
    /// Sequence at or below the installed one.
    #[error("its sequence {seq} is not above the installed {installed} (no downgrade by replay)")]
    NotNewer {
        /// The release's.
        seq: u64,
        /// The installed one.
        installed: u64,
    },
    /// Past its expiry.
    #[error("it expired")]
    Expired,
    /// Needs a newer native app.
    #[error("it needs native version {min}, the device has {have}")]
    NativeTooOld {
        /// Required.
        min: String,
        /// The device's.
        have: String,
    },
    /// Outside the rollout.
    #[error("the device is outside its rollout")]
    OutsideRollout,
    /// Failed here before.
    #[error("its bundle failed on this device before")]
    FailedBefore,
}

/// Why an updater operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdaterError {
    /// The release is refused.
    #[error("release refused: {0}")]
    Refused(#[from] Refusal),
    /// Installing failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The state file failed.
    #[error("device state: {0}")]
    State(#[from] std::io::Error),
    /// No such bundle.
    #[error("no bundle {0} on this device")]
    Unknown(String),
    /// A bundle that must stay.
    #[error("bundle {0} is current, next, or the fallback of a trial; it cannot be deleted")]
    InUse(String),
}

/// The device updater over one store.
pub struct Updater {
    store: Store,
    cfg: UpdaterConfig,
    state: DeviceState,
    deadline: Option<Instant>,
    events: Vec<Event>,
    /// Bundle directories to delete once the state that no longer needs
    /// them is durable (deleting first could leave a state pointing at a
    /// missing directory after a crash).
    to_delete: Vec<String>,
    /// Whether directories are removed by the host ([`Updater::defer_removals`]).
    defer_removals: bool,
    removals: Vec<Removal>,
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = *blake3::hash(format!("{:?}", std::time::SystemTime::now()).as_bytes())
            .as_bytes()
            .first_chunk()
            .expect("32 bytes");
    }
    hex::encode(b)
}

/// What [`Updater::begin_install`] leaves to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begun {
    /// Materialise the bundle, then [`Updater::finish_install`].
    Materialize,
    /// Nothing: the bundle is already current or next, and the release
    /// was recorded as installed.
    AlreadyInstalled,
}

impl Updater {
    /// Opens the updater: loads or makes the state, applies a native
    /// version change, counts a trial interrupted by a restart as failed,
    /// and (in `next-start` mode) switches to the scheduled bundle.
    pub fn open(store: Store, mut cfg: UpdaterConfig) -> Result<Updater, UpdaterError> {
        cfg.app_ready_timeout = cfg.app_ready_timeout.max(Duration::from_secs(1));
        let root = store.root().to_owned();
        install::clean_leftovers(&root)?;
        DeviceState::clean_leftovers(&root)?;
        let mut state = match DeviceState::load(&root)? {
            Some(s) => s,
            None => DeviceState::new(
                cfg.device_id.clone().unwrap_or_else(random_id),
                cfg.native_version.clone(),
                cfg.channel
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CHANNEL.into()),
            ),
        };
        if let Some(id) = &cfg.device_id {
            state.device_id = id.clone();
        }
        if let Some(channel) = &cfg.channel
            && *channel != state.channel
        {
            tracing::info!(from = %state.channel, to = %channel, "channel set by --channel");
            state.channel = channel.clone();
        }
        let mut u = Updater {
            store,
            cfg,
            state,
            deadline: None,
            events: Vec::new(),
            to_delete: Vec::new(),
            defer_removals: false,
            removals: Vec::new(),
        };
        u.repair_bundles();
        if u.state.native_version != u.cfg.native_version {
            tracing::info!(from = %u.state.native_version, to = %u.cfg.native_version, "native version changed: back to the builtin bundle");
            u.drop_all_bundles()?;
            u.state.native_version = u.cfg.native_version.clone();
        }
        let mut phase = Phase::State;
        if let Some(id) = u.state.trial().map(str::to_owned) {
            tracing::warn!(bundle = %id, "restarted during a trial: counted as failed");
            u.fail_trial(&id)?;
            phase = Phase::Rollback;
        }
        if u.state.next.is_some() && !matches!(u.cfg.apply, ApplyMode::Window { .. }) {
            u.switch_to_next()?;
            phase = Phase::Switch;
        }
        u.save(phase)?;
        // Directories whose deletion a crash interrupted (the state that
        // stopped naming them was saved first).
        let keep = u.keeps();
        for id in install::materialized(&root)? {
            if !keep.contains(&id) && !u.state.bundles.contains_key(&id) {
                tracing::info!(bundle = %id, "removing a bundle directory no state names");
                install::remove(&root, &id)?;
            }
        }
        Ok(u)
    }

    /// Makes whole again the directories of the bundles the state names
    /// (current, next, fallback) that a power cut left without some of
    /// their entries ([`install::repair`]). A bundle that cannot be
    /// repaired is left to the rules that meet a missing directory.
    fn repair_bundles(&self) {
        let s = &self.state;
        let named = [Some(&s.current), s.next.as_ref(), Some(&s.fallback)];
        for id in named.into_iter().flatten() {
            let Ok(bundle) = id.parse::<BundleId>() else {
                continue;
            };
            match install::repair(&self.store, &bundle) {
                Ok(true) => {
                    tracing::warn!(bundle = %id, "bundle directory was incomplete after a crash: made whole again from the store")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(bundle = %id, "cannot repair the bundle's directory: {e}"),
            }
        }
    }

    /// The store's directory.
    pub fn store_root(&self) -> &std::path::Path {
        self.store.root()
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.state.device_id
    }

    /// The persisted state.
    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The directory to serve now.
    pub fn serve_dir(&self) -> PathBuf {
        if self.state.current == BUILTIN {
            self.cfg.builtin.clone()
        } else {
            install::bundle_dir(self.store.root(), &self.state.current)
        }
    }

    /// The current bundle: id, version, status.
    pub fn current(&self) -> (String, String, String) {
        match self.state.bundles.get(&self.state.current) {
            Some(b) => (
                self.state.current.clone(),
                b.version.clone(),
                serde_json::to_value(b.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
            None => (BUILTIN.into(), BUILTIN.into(), "success".into()),
        }
    }

    /// When the running trial fails unless confirmed.
    pub fn trial_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether `release` would be installed (see the module docs).
    pub fn check(&self, release: &VerifiedRelease, now_unix: u64) -> Result<(), Refusal> {
        let r = release.release();
        if r.app != self.cfg.app {
            return Err(Refusal::OtherApp(r.app.clone()));
        }
        if r.channel != self.state.channel {
            return Err(Refusal::OtherChannel(r.channel.clone()));
        }
        let installed = self
            .state
            .installed_seq
            .get(&r.channel)
            .copied()
            .unwrap_or(0);
        if r.seq <= installed {
            return Err(Refusal::NotNewer {
                seq: r.seq,
                installed,
            });
        }
        if r.expires.is_some_and(|e| now_unix >= e) {
            return Err(Refusal::Expired);
        }
        if let Some(min) = &r.min_native_version {
            let newer = match (
                semver::Version::parse(min),
                semver::Version::parse(&self.cfg.native_version),
            ) {
                (Ok(min), Ok(have)) => min > have,
                _ => true,
            };
            if newer {
                return Err(Refusal::NativeTooOld {
                    min: min.clone(),
                    have: self.cfg.native_version.clone(),
                });
            }
        }
        if !r
            .rollout
            .includes(&r.app, &r.bundle_id, &self.state.device_id)
        {
            return Err(Refusal::OutsideRollout);
        }
        if let Some(&failed_seq) = self.state.failed.get(&r.bundle_id.to_string())
            && !(r.channel == "dev" && r.seq > failed_seq)
        {
            return Err(Refusal::FailedBefore);
        }
        Ok(())
    }

    /// Progress of the download of `release` (fetched by the node): a
    /// `download` event for a release this device would install.
    pub fn download_progress(&mut self, release: &VerifiedRelease, percent: u8) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.check(release, now).is_ok() {
            self.events.push(Event::Download {
                bundle: release.release().bundle_id.to_string(),
                percent: percent.min(100),
            });
        }
    }

    /// Of `releases` (verified, in any order), the one to install now:
    /// the newest of the device's channel that [`Updater::check`] accepts.
    /// A newer one refused (outside its rollout, needing a newer native
    /// app, failed here) does not hide an older acceptable one.
    pub fn pick<'a>(
        &self,
        releases: &'a [VerifiedRelease],
        now_unix: u64,
    ) -> Option<&'a VerifiedRelease> {
        // Only the newest statement of a bundle counts: a bundle paused
        // (a new statement at 0 %) is not installed from an older share.
        let moot = |r: &Release| {
            releases.iter().any(|o| {
                let o = o.release();
                o.seq > r.seq && o.bundle_id == r.bundle_id && o.supersedes(r)
            })
        };
        releases
            .iter()
            .filter(|r| !moot(r.release()) && self.check(r, now_unix).is_ok())
            .max_by_key(|r| r.release().seq)
    }

    /// Installs `release` (checked, materialised, scheduled as next); in
    /// `immediate` mode it becomes current at once. The same as
    /// [`Updater::begin_install`], [`install::materialize`] and
    /// [`Updater::finish_install`] in a row; a host that must not wait for
    /// the disk meanwhile calls the three itself.
    pub fn install(
        &mut self,
        release: &VerifiedRelease,
        now_unix: u64,
    ) -> Result<(), UpdaterError> {
        if self.begin_install(release, now_unix)? == Begun::AlreadyInstalled {
            return Ok(());
        }
        let done = install::materialize(&self.store, &release.release().bundle_id).map(|_| ());
        self.finish_install(release, done, now_unix)
    }

    /// First step of an install: checks `release` and announces it
    /// (`updateAvailable`); materialising it comes next, off the updater.
    ///
    /// A release of the bundle the device already runs or has scheduled
    /// (a new rollout share, a `--back-to` onto the bundle it is on) is
    /// only recorded: its sequence becomes the installed one, and there
    /// is no event, no new trial, no reload ([`Begun::AlreadyInstalled`]).
    pub fn begin_install(
        &mut self,
        release: &VerifiedRelease,
        now_unix: u64,
    ) -> Result<Begun, UpdaterError> {
        self.check(release, now_unix)?;
        let r = release.release();
        let id = r.bundle_id.to_string();
        if id == self.state.current || self.state.next.as_ref() == Some(&id) {
            if let Some(b) = self.state.bundles.get_mut(&id) {
                b.seq = r.seq;
                b.version = r.version.clone();
            }
            self.state.installed_seq.insert(r.channel.clone(), r.seq);
            self.save(Phase::State)?;
            tracing::info!(bundle = %id, version = %r.version, seq = r.seq, "a new release of the bundle already installed: recorded, nothing to do");
            return Ok(Begun::AlreadyInstalled);
        }
        self.events.push(Event::UpdateAvailable {
            bundle: id,
            version: r.version.clone(),
        });
        Ok(Begun::Materialize)
    }

    /// Last step of an install, once materialising `release` ended with
    /// `done`: the bundle is scheduled as next (in `immediate` mode it
    /// becomes current at once), unless something changed meanwhile that
    /// refuses it (another channel chosen, a newer release installed).
    pub fn finish_install(
        &mut self,
        release: &VerifiedRelease,
        done: Result<(), InstallError>,
        now_unix: u64,
    ) -> Result<(), UpdaterError> {
        let r = release.release();
        let id = r.bundle_id.to_string();
        if let Err(e) = done {
            self.events.push(Event::DownloadFailed {
                bundle: id,
                version: r.version.clone(),
                reason: e.to_string(),
            });
            return Err(e.into());
        }
        if let Err(refusal) = self.check(release, now_unix) {
            // Materialised for nothing: the directory goes unless in use.
            if !self.state.bundles.contains_key(&id) {
                self.to_delete.push(id);
            }
            self.save(Phase::State)?;
            return Err(refusal.into());
        }
        self.events.push(Event::Download {
            bundle: id.clone(),
            percent: 100,
        });
        self.events.push(Event::DownloadComplete {
            bundle: id.clone(),
            version: r.version.clone(),
        });
        self.state.failed.remove(&id);
        // A previously scheduled bundle that never ran is superseded.
        if let Some(old) = self.state.next.take()
            && let Some(b) = self.state.bundles.get_mut(&old)
        {
            b.status = BundleStatus::Pending;
        }
        self.state.bundles.insert(
            id.clone(),
            BundleRecord {
                version: r.version.clone(),
                channel: r.channel.clone(),
                seq: r.seq,
                status: BundleStatus::Next,
            },
        );
        self.state.next = Some(id);
        self.state.installed_seq.insert(r.channel.clone(), r.seq);
        if self.cfg.apply == ApplyMode::Immediate {
            self.switch_to_next()?;
            return self.save(Phase::Switch);
        }
        self.save(Phase::Download)
    }

    /// The bundles whose releases a collection of the store keeps: the
    /// current one, the next, the fallback, and every downloaded bundle
    /// the deletion rules kept (`autoDeletePrevious` off keeps the earlier
    /// good ones; `autoDeleteFailed` off keeps failed ones). The builtin
    /// bundle is not in the store.
    pub fn keeps(&self) -> std::collections::BTreeSet<String> {
        let s = &self.state;
        let mut keep: std::collections::BTreeSet<String> = s
            .bundles
            .iter()
            .filter(|(_, b)| b.status != BundleStatus::Error || !self.cfg.auto_delete_failed)
            .map(|(id, _)| id.clone())
            .collect();
        keep.extend([s.current.clone(), s.fallback.clone()]);
        keep.extend(s.next.clone());
        keep.remove(BUILTIN);
        keep
    }

    /// In `Window` mode, switches to the scheduled bundle when `minute`
    /// (of the local day) is inside the window; returns whether it did.
    pub fn apply_in_window(&mut self, minute: u16) -> Result<bool, UpdaterError> {
        match self.cfg.apply {
            ApplyMode::Window { start, end }
                if self.state.next.is_some() && in_window(minute, start, end) =>
            {
                self.switch_to_next()?;
                self.save(Phase::Switch)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Capgo's `next({ id })`: schedules a downloaded bundle for the next
    /// switch (a failed one is refused).
    pub fn set_next(&mut self, id: &str) -> Result<(), UpdaterError> {
        match self.state.bundles.get(id).map(|b| b.status) {
            None => return Err(UpdaterError::Unknown(id.to_owned())),
            Some(BundleStatus::Error) => return Err(Refusal::FailedBefore.into()),
            Some(_) => {}
        }
        if !install::bundle_dir(self.store.root(), id).is_dir() {
            return Err(UpdaterError::Unknown(id.to_owned()));
        }
        if let Some(old) = self.state.next.replace(id.to_owned())
            && let Some(b) = self.state.bundles.get_mut(&old)
        {
            b.status = BundleStatus::Pending;
        }
        if let Some(b) = self.state.bundles.get_mut(id) {
            b.status = BundleStatus::Next;
        }
        self.save(Phase::Download)
    }

    /// Capgo's `set({ id })`: makes a downloaded bundle current now, on
    /// trial like any new bundle.
    pub fn set(&mut self, id: &str) -> Result<(), UpdaterError> {
        self.set_next(id)?;
        self.reload()
    }

    /// Switches to the scheduled bundle now (the host's `reload`).
    pub fn reload(&mut self) -> Result<(), UpdaterError> {
        if self.state.next.is_some() {
            self.switch_to_next()?;
            self.save(Phase::Switch)?;
        }
        Ok(())
    }

    fn switch_to_next(&mut self) -> Result<(), UpdaterError> {
        let Some(id) = self.state.next.take() else {
            return Ok(());
        };
        if !install::bundle_dir(self.store.root(), &id).is_dir() {
            tracing::warn!(bundle = %id, "scheduled bundle is gone; staying on the current one");
            self.state.bundles.remove(&id);
            return Ok(());
        }
        let Some(b) = self.state.bundles.get_mut(&id) else {
            return Ok(());
        };
        b.status = BundleStatus::Trial;
        let version = b.version.clone();
        self.state.current = id.clone();
        self.deadline = Some(Instant::now() + self.cfg.app_ready_timeout);
        tracing::info!(bundle = %id, %version, "bundle set, on trial");
        self.events.push(Event::Set {
            bundle: id.clone(),
            version,
        });
        self.events.push(Event::AppReloaded { bundle: id });
        Ok(())
    }

    /// The page served from `bundle` confirms it is healthy. Counts only
    /// for the bundle on trial; returns whether it ended a trial.
    pub fn notify_app_ready(&mut self, bundle: &str) -> Result<bool, UpdaterError> {
        if self.state.trial() != Some(bundle) {
            return Ok(false);
        }
        let previous = std::mem::replace(&mut self.state.fallback, bundle.to_owned());
        if let Some(b) = self.state.bundles.get_mut(bundle) {
            b.status = BundleStatus::Success;
        }
        self.deadline = None;
        tracing::info!(%bundle, "notifyAppReady: bundle confirmed");
        self.events.push(Event::AppReady {
            bundle: bundle.to_owned(),
        });
        if self.cfg.auto_delete_previous && previous != BUILTIN && previous != bundle {
            self.delete_files(&previous)?;
        }
        self.save(Phase::Trial)?;
        Ok(true)
    }

    /// Ends an expired trial with a rollback; returns whether it did.
    pub fn check_timeout(&mut self, now: Instant) -> Result<bool, UpdaterError> {
        match (self.deadline, self.state.trial().map(str::to_owned)) {
            (Some(d), Some(id)) if now >= d => {
                tracing::warn!(bundle = %id, "notifyAppReady not called in time: rolling back");
                self.fail_trial(&id)?;
                self.save(Phase::Rollback)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn fail_trial(&mut self, id: &str) -> Result<(), UpdaterError> {
        let (version, seq) = match self.state.bundles.get_mut(id) {
            Some(b) => {
                b.status = BundleStatus::Error;
                (b.version.clone(), b.seq)
            }
            None => (String::new(), 0),
        };
        self.state.failed.insert(id.to_owned(), seq);
        self.state.current = self.state.fallback.clone();
        self.deadline = None;
        self.events.push(Event::UpdateFailed {
            bundle: id.to_owned(),
            version,
        });
        self.events.push(Event::AppReloaded {
            bundle: self.state.current.clone(),
        });
        if self.cfg.auto_delete_failed {
            self.delete_files(id)?;
        }
        Ok(())
    }

    fn delete_files(&mut self, id: &str) -> Result<(), UpdaterError> {
        self.to_delete.push(id.to_owned());
        if let Some(b) = self.state.bundles.get(id)
            && b.status != BundleStatus::Error
        {
            self.state.bundles.remove(id);
        }
        Ok(())
    }

    /// Back to the builtin bundle (`lanseed device reset`).
    pub fn reset(&mut self) -> Result<(), UpdaterError> {
        self.state.current = BUILTIN.into();
        self.state.fallback = BUILTIN.into();
        self.state.next = None;
        self.deadline = None;
        self.events.push(Event::AppReloaded {
            bundle: BUILTIN.into(),
        });
        self.save(Phase::State)
    }

    fn drop_all_bundles(&mut self) -> Result<(), UpdaterError> {
        // The directories go once the state that no longer names them is
        // saved (by the caller), never before.
        let ids: Vec<String> = self.state.bundles.keys().cloned().collect();
        self.to_delete.extend(ids);
        self.state.bundles.clear();
        self.state.installed_seq.clear();
        self.state.current = BUILTIN.into();
        self.state.fallback = BUILTIN.into();
        self.state.next = None;
        self.deadline = None;
        Ok(())
    }

    /// Bundles on the device.
    pub fn list(&self) -> Vec<(String, BundleRecord)> {
        self.state
            .bundles
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Deletes a bundle that is not current, next, or a trial's fallback.
    pub fn delete(&mut self, id: &str) -> Result<(), UpdaterError> {
        if !self.state.bundles.contains_key(id) {
            return Err(UpdaterError::Unknown(id.to_owned()));
        }
        let fallback_of_trial = self.state.trial().is_some() && self.state.fallback == id;
        if self.state.current == id || self.state.next.as_deref() == Some(id) || fallback_of_trial {
            return Err(UpdaterError::InUse(id.to_owned()));
        }
        if self.state.fallback == id {
            self.state.fallback = BUILTIN.into();
        }
        self.state.bundles.remove(id);
        self.to_delete.push(id.to_owned());
        self.save(Phase::State)
    }

    /// Follows another channel from now on.
    pub fn set_channel(&mut self, channel: &str) -> Result<(), UpdaterError> {
        if self.state.channel != channel {
            tracing::info!(from = %self.state.channel, to = %channel, "channel changed");
        }
        self.state.channel = channel.to_owned();
        self.save(Phase::State)
    }

    /// The app this updater installs releases of.
    pub fn app(&self) -> &str {
        &self.cfg.app
    }

    fn save(&mut self, phase: Phase) -> Result<(), UpdaterError> {
        self.state.save(self.store.root(), phase)?;
        let label = match phase {
            Phase::Rollback => "rollback: failed bundle removed",
            Phase::Trial => "trial: previous bundle removed",
            _ => "state: bundle removed",
        };
        for id in std::mem::take(&mut self.to_delete) {
            // Never the directory the state now serves or may fall back to.
            if id != self.state.current
                && id != self.state.fallback
                && self.state.next.as_deref() != Some(id.as_str())
            {
                if self.defer_removals {
                    self.removals.push(Removal { id, label });
                } else {
                    Removal { id, label }.run(self.store.root())?;
                }
            }
        }
        Ok(())
    }

    /// From now on, bundle directories the saved state no longer names are
    /// not removed by the updater but handed out by
    /// [`Updater::take_removals`], for a host that removes them off its
    /// updater thread (a 20,000-file directory takes a while). The host
    /// must not install a bundle while its directory is being removed.
    pub fn defer_removals(&mut self) {
        self.defer_removals = true;
    }

    /// Bundle directories to remove (see [`Updater::defer_removals`]).
    pub fn take_removals(&mut self) -> Vec<Removal> {
        std::mem::take(&mut self.removals)
    }
}

/// A bundle directory no saved state names any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The bundle.
    pub id: String,
    /// Its crash point's label.
    label: &'static str,
}

impl Removal {
    /// Removes the directory from the store at `root`.
    pub fn run(&self, root: &std::path::Path) -> std::io::Result<()> {
        install::remove(root, &self.id)?;
        lanseed_protocol::crashpoint::hit(self.label);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanseed_protocol::pack::{PackOptions, pack_dir};
    use lanseed_protocol::release::Rollout;
    use lanseed_protocol::{SecretKey, TrustList};

    const APP: &str = "com.example.kiosk";

    struct World {
        _dir: tempfile::TempDir,
        store: Store,
        key: SecretKey,
        trust: TrustList,
        builtin: PathBuf,
        build: PathBuf,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let key = SecretKey::from_seed(&[3; 32]);
        let trust = TrustList::parse(&key.public().to_string()).unwrap();
        let builtin = dir.path().join("builtin");
        std::fs::create_dir_all(&builtin).unwrap();
        std::fs::write(builtin.join("index.html"), "builtin").unwrap();
        let build = dir.path().join("build");
        std::fs::create_dir_all(&build).unwrap();
        World {
            _dir: dir,
            store,
            key,
            trust,
            builtin,
            build,
        }
    }

    impl World {
        fn release(
            &self,
            version: &str,
            seq: u64,
            channel: &str,
            tweak: impl Fn(&mut PackOptions),
        ) -> VerifiedRelease {
            std::fs::write(self.build.join("index.html"), format!("<h1>{version}</h1>")).unwrap();
            let mut opts = PackOptions {
                app: APP.into(),
                channel: channel.into(),
                version: version.into(),
                seq: Some(seq),
                created: 1_800_000_000,
                min_native_version: None,
                rollout: Rollout::FULL,
                expires: None,
                notes: None,
                capgo: None,
            };
            tweak(&mut opts);
            let packed = pack_dir(&self.store, &self.build, &opts, &self.key, &|_| {}).unwrap();
            packed.release.signed().verify(&self.trust).unwrap()
        }

        fn cfg(&self, apply: ApplyMode) -> UpdaterConfig {
            UpdaterConfig {
                app: APP.into(),
                channel: Some("production".into()),
                device_id: Some("device-1".into()),
                native_version: "1.0.0".into(),
                builtin: self.builtin.clone(),
                app_ready_timeout: Duration::from_secs(10),
                apply,
                auto_delete_failed: true,
                auto_delete_previous: true,
            }
        }

        fn open(&self, apply: ApplyMode) -> Updater {
            Updater::open(self.store.clone(), self.cfg(apply)).unwrap()
        }
    }

    fn id(r: &VerifiedRelease) -> String {
        r.release().bundle_id.to_string()
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                Event::Download { .. } => "download",
                Event::UpdateAvailable { .. } => "updateAvailable",
                Event::DownloadComplete { .. } => "downloadComplete",
                Event::DownloadFailed { .. } => "downloadFailed",
                Event::Set { .. } => "set",
                Event::UpdateFailed { .. } => "updateFailed",
                Event::AppReloaded { .. } => "appReloaded",
                Event::AppReady { .. } => "appReady",
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_bundle_becomes_success_at_next_start() {
        let w = world();
        let mut u = w.open(ApplyMode::NextStart);
        assert_eq!(u.serve_dir(), w.builtin);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        assert_eq!(
            names(&u.drain_events()),
            ["updateAvailable", "download", "downloadComplete"]
        );
        assert_eq!(u.state().bundles[&id(&v1)].status, BundleStatus::Next);
        assert_eq!(
            u.serve_dir(),
            w.builtin,
            "next-start: nothing changes before the restart"
        );

        let mut u = w.open(ApplyMode::NextStart);
        assert_eq!(u.state().trial(), Some(id(&v1).as_str()));
        assert_eq!(names(&u.drain_events()), ["set", "appReloaded"]);
        assert_eq!(
            std::fs::read_to_string(u.serve_dir().join("index.html")).unwrap(),
            "<h1>1.0.0</h1>"
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!u.check_timeout(Instant::now()).unwrap());
        assert!(u.notify_app_ready(&id(&v1)).unwrap());
        assert_eq!(names(&u.drain_events()), ["appReady"]);
        assert_eq!(u.state().bundles[&id(&v1)].status, BundleStatus::Success);
        assert_eq!(u.state().fallback, id(&v1));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            !u.check_timeout(Instant::now()).unwrap(),
            "a confirmed bundle stays"
        );
        assert_eq!(u.current().2, "success");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_release_of_the_running_bundle_is_recorded_without_a_trial() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        assert!(u.notify_app_ready(&id(&v1)).unwrap());
        u.drain_events();
        // The same bundle, signed again with another share (a rollout step).
        let again = w.release("1.0.0", 11, "production", |o| {
            o.rollout = Rollout::from_basis_points(5_000).unwrap();
        });
        assert_eq!(again.release().bundle_id, v1.release().bundle_id);
        if again
            .release()
            .rollout
            .includes(APP, &again.release().bundle_id, "device-1")
        {
            assert_eq!(u.begin_install(&again, 0).unwrap(), Begun::AlreadyInstalled);
        } else {
            assert!(u.check(&again, 0).is_err(), "outside the share: not taken");
        }
        let full = w.release("1.0.0", 12, "production", |_| {});
        u.install(&full, 0).unwrap();
        assert!(u.drain_events().is_empty(), "no event, no reload");
        assert_eq!(u.current().2, "success", "no new trial");
        assert_eq!(u.trial_deadline(), None);
        assert_eq!(u.state().installed_seq["production"], 12);
        assert!(u.check(&full, 0).is_err(), "recorded as installed");

        // During a trial: the trial goes on, untouched.
        let v2 = w.release("2.0.0", 20, "production", |_| {});
        u.install(&v2, 0).unwrap();
        let deadline = u.trial_deadline();
        assert!(deadline.is_some());
        u.drain_events();
        let v2b = w.release("2.0.0", 21, "production", |_| {});
        assert_eq!(u.begin_install(&v2b, 0).unwrap(), Begun::AlreadyInstalled);
        assert_eq!(u.trial_deadline(), deadline);
        assert_eq!(u.state().trial(), Some(id(&v2).as_str()));
        assert!(u.drain_events().is_empty());
        assert!(u.notify_app_ready(&id(&v2)).unwrap());
        drop(u);

        // Scheduled for the next start: stays next, recorded.
        let mut u = w.open(ApplyMode::NextStart);
        let v3 = w.release("3.0.0", 30, "production", |_| {});
        u.install(&v3, 0).unwrap();
        u.drain_events();
        let v3b = w.release("3.0.0", 31, "production", |_| {});
        u.install(&v3b, 0).unwrap();
        assert!(u.drain_events().is_empty());
        assert_eq!(u.state().next.as_deref(), Some(id(&v3).as_str()));
        assert_eq!(u.state().bundles[&id(&v3)].seq, 31);
    }

    #[tokio::test(start_paused = true)]
    async fn names_a_power_cut_lost_are_restored_when_the_updater_opens() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        assert!(u.notify_app_ready(&id(&v1)).unwrap());
        let dir = install::bundle_dir(w.store.root(), &id(&v1));
        let bundle = v1.release().bundle_id;
        assert!(install::is_whole(&w.store, &bundle).unwrap());
        drop(u);

        // A lost entry: the file is gone from the directory, not from the store.
        std::fs::remove_file(dir.join("index.html")).unwrap();
        assert!(!install::is_whole(&w.store, &bundle).unwrap());
        let u = w.open(ApplyMode::Immediate);
        assert_eq!(u.state().current, id(&v1), "no rollback for a lost name");
        assert_eq!(u.current().2, "success");
        assert_eq!(
            std::fs::read_to_string(u.serve_dir().join("index.html")).unwrap(),
            "<h1>1.0.0</h1>"
        );
        drop(u);

        // A lost rename: the whole directory is gone.
        std::fs::remove_dir_all(&dir).unwrap();
        let u = w.open(ApplyMode::Immediate);
        assert!(install::is_whole(&w.store, &bundle).unwrap());
        assert_eq!(
            std::fs::read_to_string(u.serve_dir().join("index.html")).unwrap(),
            "<h1>1.0.0</h1>"
        );

        // A file of the wrong size is not whole either.
        drop(u);
        std::fs::remove_file(dir.join("index.html")).unwrap();
        std::fs::write(dir.join("index.html"), "short").unwrap();
        assert!(!install::is_whole(&w.store, &bundle).unwrap());
        assert!(install::repair(&w.store, &bundle).unwrap());
        assert!(
            !install::repair(&w.store, &bundle).unwrap(),
            "whole: nothing to do"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unconfirmed_bundle_rolls_back_and_never_returns() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        u.notify_app_ready(&id(&v1)).unwrap();
        let bad = w.release("2.0.0", 11, "production", |_| {});
        u.install(&bad, 0).unwrap();
        assert_eq!(u.state().current, id(&bad));
        u.drain_events();
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!u.check_timeout(Instant::now()).unwrap());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(u.check_timeout(Instant::now()).unwrap());
        assert_eq!(names(&u.drain_events()), ["updateFailed", "appReloaded"]);
        assert_eq!(u.state().current, id(&v1), "back to the last good bundle");
        assert_eq!(u.state().bundles[&id(&bad)].status, BundleStatus::Error);
        assert!(
            !install::bundle_dir(w.store.root(), &id(&bad)).exists(),
            "autoDeleteFailed"
        );
        // Announced again, or republished with a higher sequence: refused.
        assert!(matches!(u.check(&bad, 0), Err(Refusal::NotNewer { .. })));
        let again = w.release("2.0.0", 12, "production", |_| {});
        assert_eq!(id(&again), id(&bad));
        assert_eq!(u.check(&again, 0), Err(Refusal::FailedBefore));
    }

    #[tokio::test(start_paused = true)]
    async fn on_dev_a_republished_bundle_may_retry() {
        let w = world();
        let mut cfg = w.cfg(ApplyMode::Immediate);
        cfg.channel = Some("dev".into());
        let mut u = Updater::open(w.store.clone(), cfg).unwrap();
        let bad = w.release("0.1.0", 5, "dev", |_| {});
        u.install(&bad, 0).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(u.check_timeout(Instant::now()).unwrap());
        let republished = w.release("0.1.0", 6, "dev", |_| {});
        assert_eq!(u.check(&republished, 0), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_old_page_cannot_confirm_the_new_bundle() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        u.notify_app_ready(&id(&v1)).unwrap();
        let broken = w.release("2.0.0", 11, "production", |_| {});
        u.install(&broken, 0).unwrap();
        for _ in 0..20 {
            tokio::time::advance(Duration::from_millis(253)).await;
            assert!(
                !u.notify_app_ready(&id(&v1)).unwrap(),
                "a confirmation from the outgoing bundle"
            );
            assert!(!u.notify_app_ready("builtin").unwrap());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(u.check_timeout(Instant::now()).unwrap());
        assert_eq!(u.state().current, id(&v1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_during_a_trial_counts_as_failed() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        assert_eq!(u.state().trial(), Some(id(&v1).as_str()));
        drop(u);
        let mut u = w.open(ApplyMode::Immediate);
        assert_eq!(u.state().current, "builtin");
        assert_eq!(u.state().bundles[&id(&v1)].status, BundleStatus::Error);
        assert_eq!(names(&u.drain_events()), ["updateFailed", "appReloaded"]);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals() {
        let w = world();
        let mut u = w.open(ApplyMode::NextStart);
        let v = w.release("1.0.0", 100, "production", |_| {});
        u.install(&v, 0).unwrap();
        let same_seq = w.release("1.0.1", 100, "beta", |_| {});
        assert!(matches!(
            u.check(&same_seq, 0),
            Err(Refusal::OtherChannel(_))
        ));
        let older = w.release("0.9.0", 99, "production", |o| o.notes = Some("old".into()));
        assert!(matches!(
            u.check(&older, 0),
            Err(Refusal::NotNewer {
                seq: 99,
                installed: 100
            })
        ));
        let expired = w.release("1.1.0", 101, "production", |o| o.expires = Some(1_000));
        assert_eq!(u.check(&expired, 999), Ok(()));
        assert_eq!(u.check(&expired, 1_000), Err(Refusal::Expired));
        let native = w.release("1.2.0", 102, "production", |o| {
            o.min_native_version = Some("2.0.0".into())
        });
        assert!(matches!(
            u.check(&native, 0),
            Err(Refusal::NativeTooOld { .. })
        ));
        let nobody = w.release("1.3.0", 103, "production", |o| {
            o.rollout = "0".parse().unwrap()
        });
        assert_eq!(u.check(&nobody, 0), Err(Refusal::OutsideRollout));
        let everybody = w.release("1.3.0", 104, "production", |o| {
            o.rollout = "100".parse().unwrap()
        });
        assert_eq!(u.check(&everybody, 0), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn native_version_change_resets_to_builtin() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        u.notify_app_ready(&id(&v1)).unwrap();
        drop(u);
        let mut cfg = w.cfg(ApplyMode::Immediate);
        cfg.native_version = "2.0.0".into();
        let u = Updater::open(w.store.clone(), cfg).unwrap();
        assert_eq!(u.serve_dir(), w.builtin);
        assert!(u.list().is_empty());
        assert!(!install::bundle_dir(w.store.root(), &id(&v1)).exists());
        assert_eq!(u.check(&v1, 0), Ok(()), "a reset device may install again");
    }

    #[tokio::test(start_paused = true)]
    async fn deletion_rules() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        u.notify_app_ready(&id(&v1)).unwrap();
        let v2 = w.release("2.0.0", 11, "production", |_| {});
        u.install(&v2, 0).unwrap();
        // v2 on trial: v1 is its fallback, v2 is current.
        assert!(matches!(u.delete(&id(&v1)), Err(UpdaterError::InUse(_))));
        assert!(matches!(u.delete(&id(&v2)), Err(UpdaterError::InUse(_))));
        u.notify_app_ready(&id(&v2)).unwrap();
        assert!(
            !install::bundle_dir(w.store.root(), &id(&v1)).exists(),
            "autoDeletePrevious"
        );
        assert!(install::bundle_dir(w.store.root(), &id(&v2)).exists());
        assert!(matches!(u.delete("nope"), Err(UpdaterError::Unknown(_))));
        u.reset().unwrap();
        assert_eq!(u.serve_dir(), w.builtin);
        u.delete(&id(&v2)).unwrap();
        assert!(u.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn next_and_set_pick_a_downloaded_bundle() {
        let w = world();
        let mut u = w.open(ApplyMode::NextStart);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        u.reload().unwrap();
        u.notify_app_ready(&id(&v1)).unwrap();
        let v2 = w.release("2.0.0", 11, "production", |_| {});
        u.install(&v2, 0).unwrap();
        assert!(matches!(u.set_next("nope"), Err(UpdaterError::Unknown(_))));
        u.set(&id(&v2)).unwrap();
        assert_eq!(u.state().trial(), Some(id(&v2).as_str()));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(u.check_timeout(Instant::now()).unwrap());
        assert!(matches!(
            u.set(&id(&v2)),
            Err(UpdaterError::Refused(Refusal::FailedBefore)) | Err(UpdaterError::Unknown(_))
        ));
        assert_eq!(u.state().current, id(&v1));
    }

    #[tokio::test(start_paused = true)]
    async fn download_progress_only_for_releases_it_would_install() {
        let w = world();
        let mut u = w.open(ApplyMode::NextStart);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.download_progress(&v1, 40);
        assert_eq!(
            u.drain_events(),
            vec![Event::Download {
                bundle: id(&v1),
                percent: 40
            }]
        );
        let beta = w.release("1.0.0", 11, "beta", |_| {});
        u.download_progress(&beta, 40);
        assert!(u.drain_events().is_empty(), "another channel's bundle");
    }

    #[test]
    fn windows_parse_and_wrap() {
        assert_eq!(
            ApplyMode::window("02:00-04:00"),
            Ok(ApplyMode::Window {
                start: 120,
                end: 240
            })
        );
        assert!(ApplyMode::window("2-4").is_err());
        assert!(ApplyMode::window("25:00-01:00").is_err());
        assert!(in_window(120, 120, 240) && in_window(239, 120, 240));
        assert!(!in_window(240, 120, 240) && !in_window(119, 120, 240));
        assert!(in_window(23 * 60, 22 * 60, 120) && in_window(30, 22 * 60, 120));
        assert!(!in_window(12 * 60, 22 * 60, 120));
    }

    #[tokio::test(start_paused = true)]
    async fn window_mode_switches_only_inside_the_window() {
        let w = world();
        let window = ApplyMode::window("02:00-04:00").unwrap();
        let mut u = w.open(window);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        drop(u);
        // A restart outside the window does not switch.
        let mut u = w.open(window);
        assert_eq!(u.state().next.as_deref(), Some(id(&v1).as_str()));
        assert!(!u.apply_in_window(12 * 60).unwrap());
        assert_eq!(u.serve_dir(), w.builtin);
        assert!(u.apply_in_window(2 * 60 + 30).unwrap());
        assert_eq!(u.state().trial(), Some(id(&v1).as_str()));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            u.check_timeout(Instant::now()).unwrap(),
            "the trial rules hold in a window too"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_has_a_floor_of_one_second() {
        let w = world();
        let mut cfg = w.cfg(ApplyMode::Immediate);
        cfg.app_ready_timeout = Duration::from_millis(10);
        let mut u = Updater::open(w.store.clone(), cfg).unwrap();
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!u.check_timeout(Instant::now()).unwrap());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(u.check_timeout(Instant::now()).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn pick_takes_the_newest_acceptable_release_of_the_channel() {
        let w = world();
        let u = w.open(ApplyMode::NextStart);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        let v2 = w.release("2.0.0", 12, "production", |_| {});
        let beta = w.release("3.0.0-beta", 20, "beta", |_| {});
        let nobody = w.release("4.0.0", 30, "production", |o| {
            o.rollout = "0".parse().unwrap()
        });
        let all = [v1.clone(), beta.clone(), nobody, v2.clone()];
        assert_eq!(u.pick(&all, 0).map(id), Some(id(&v2)));
        assert_eq!(u.pick(&all[..1], 0).map(id), Some(id(&v1)));
        assert_eq!(u.pick(&[beta], 0).map(id), None);
        // 2.0.0 paused by a later statement of its bundle at 0 %: the
        // earlier share no longer counts, 1.0.0 is what the device takes.
        let paused = w.release("2.0.0", 13, "production", |o| {
            o.rollout = "0".parse().unwrap()
        });
        assert_eq!(
            paused.release().bundle_id,
            v2.release().bundle_id,
            "one bundle, two statements"
        );
        let all = [v1.clone(), v2.clone(), paused];
        assert_eq!(u.pick(&all, 0).map(id), Some(id(&v1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_channel_overrides_the_stored_one_and_none_keeps_it() {
        let w = world();
        let mut u = w.open(ApplyMode::NextStart);
        u.set_channel("beta").unwrap();
        drop(u);
        let mut cfg = w.cfg(ApplyMode::NextStart);
        cfg.channel = None;
        let u = Updater::open(w.store.clone(), cfg.clone()).unwrap();
        assert_eq!(u.state().channel, "beta", "kept without --channel");
        drop(u);
        cfg.channel = Some("dev".into());
        drop(Updater::open(w.store.clone(), cfg.clone()).unwrap());
        cfg.channel = None;
        let u = Updater::open(w.store.clone(), cfg).unwrap();
        assert_eq!(u.state().channel, "dev", "--channel was saved");
    }

    #[tokio::test(start_paused = true)]
    async fn an_install_overtaken_by_a_channel_switch_is_not_scheduled() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.begin_install(&v1, 0).unwrap();
        let done = install::materialize(&w.store, &v1.release().bundle_id).map(|_| ());
        u.set_channel("beta").unwrap();
        assert!(matches!(
            u.finish_install(&v1, done, 0),
            Err(UpdaterError::Refused(Refusal::OtherChannel(_)))
        ));
        assert_eq!(u.state().current, "builtin");
        assert!(!install::bundle_dir(w.store.root(), &id(&v1)).exists());
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_names_what_the_deletion_rules_kept() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        let v2 = w.release("2.0.0", 11, "production", |_| {});
        let v3 = w.release("3.0.0", 12, "production", |_| {});
        u.install(&v1, 0).unwrap();
        u.notify_app_ready(&id(&v1)).unwrap();
        u.install(&v2, 0).unwrap();
        let on_trial: Vec<String> = u.keeps().into_iter().collect();
        let mut want = vec![id(&v1), id(&v2)];
        want.sort();
        assert_eq!(on_trial, want, "the trial and its fallback");
        u.notify_app_ready(&id(&v2)).unwrap();
        assert_eq!(u.keeps().into_iter().collect::<Vec<_>>(), [id(&v2)]);
        u.install(&v3, 0).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(u.check_timeout(Instant::now()).unwrap());
        assert_eq!(
            u.keeps().into_iter().collect::<Vec<_>>(),
            [id(&v2)],
            "a failed bundle is not kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn directories_go_only_after_the_state_and_orphans_at_the_next_start() {
        let w = world();
        let mut u = w.open(ApplyMode::Immediate);
        let v1 = w.release("1.0.0", 10, "production", |_| {});
        u.install(&v1, 0).unwrap();
        u.notify_app_ready(&id(&v1)).unwrap();
        u.reset().unwrap();
        u.delete(&id(&v1)).unwrap();
        assert!(!install::bundle_dir(w.store.root(), &id(&v1)).exists());
        // A crash between the state and the removal leaves an orphan
        // directory and a state temp file; the next start removes both.
        install::materialize(&w.store, &v1.release().bundle_id).unwrap();
        let tmp = w.store.root().join("device/.state.json.999.tmp");
        std::fs::write(&tmp, "{").unwrap();
        drop(u);
        let _u = w.open(ApplyMode::Immediate);
        assert!(!install::bundle_dir(w.store.root(), &id(&v1)).exists());
        assert!(!tmp.exists());
    }
}
