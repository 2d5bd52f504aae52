//! The device updater: the rules @capgo/capacitor-updater applies in cloud
//! mode, applied to releases that arrive from the LAN.
//!
//! - [`state`]: what the device holds and runs, persisted in the store.
//! - [`install`]: a bundle materialised into a directory of its own, and
//!   the durable switch of the active bundle.
//! - [`updater`]: the rules — which releases are accepted, the trial of a
//!   new bundle, `notifyAppReady`, rollback, resets — and the events they
//!   emit, with Capgo's names.
//!
//! The updater takes verified releases from the store and does not care
//! how they got there (fetched by the node, imported from a USB stick).
//!
//! The API a native host calls, with Capgo's names: [`Updater::notify_app_ready`],
//! [`Updater::set_next`] (`next`), [`Updater::set`], [`Updater::reload`],
//! [`Updater::reset`], [`Updater::list`], [`Updater::current`],
//! [`Updater::delete`], [`Updater::set_channel`] (`channel`); events come
//! from [`Updater::drain_events`].

pub mod install;
pub mod serve;
pub mod state;
pub mod updater;

pub use state::{BundleStatus, DeviceState};
pub use updater::{ApplyMode, Begun, Event, Refusal, Updater, UpdaterConfig};
