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

pub mod install;
pub mod state;
pub mod updater;

pub use state::{BundleStatus, DeviceState};
pub use updater::{ApplyMode, Event, Refusal, Updater, UpdaterConfig};
