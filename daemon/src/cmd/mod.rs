//! The subcommands, one module each.

mod capgo;
mod channel;
mod demo;
mod dev;
mod device;
mod export;
mod keygen;
mod pack;
mod releases;
mod rollout;
mod seed;
mod store;

use std::path::PathBuf;

use anyhow::Context;
use lanseed_protocol::Store;

use lanseed_protocol::zip::ZipLimits;

use crate::cli::{ChannelCommand, Cli, Command, StoreArg, StoreCommand, ZipLimitArgs};

pub(crate) use keygen::write_fleet_key;
pub(crate) use seed::shutdown_signal;

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Pack(args) => pack::run(args),
        Command::CapgoEncrypt(args) => capgo::encrypt(args),
        Command::Releases(args) => releases::run(args),
        Command::Export(args) => export::export(args),
        Command::Import(args) => export::import(args),
        Command::PublishStatic(args) => export::publish_static(args),
        Command::Seed(args) => seed::seed(args),
        Command::Status(args) => seed::status(args),
        Command::Device(args) => device::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Fleet(args) => seed::fleet(args),
        Command::Config(crate::cli::ConfigCommand::Check) => {
            crate::config::check(cli.config.as_deref(), cli.no_config)
        }
        Command::Store(StoreCommand::Verify(args)) => store::verify(args),
        Command::Store(StoreCommand::Gc(args)) => store::gc(args),
        Command::Channel(ChannelCommand::Set(args)) => channel::set(args),
        Command::Channel(ChannelCommand::List(args)) => channel::list(args),
    }
}

impl StoreArg {
    /// The store directory: `--store`, `$LANSEED_STORE`, or the default
    /// under the user's data directory.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.store {
            Some(p) => Ok(p.clone()),
            None => dirs::data_dir()
                .map(|d| d.join("lanseed").join("store"))
                .context("cannot find your data directory; pass --store DIR"),
        }
    }

    /// Opens an existing store.
    pub fn open(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.path()?)?)
    }

    /// Opens the store, creating it if needed.
    pub fn create(&self) -> anyhow::Result<Store> {
        Ok(Store::create(&self.path()?)?)
    }
}

impl ZipLimitArgs {
    /// The limits for the zip reader.
    pub fn limits(&self) -> ZipLimits {
        ZipLimits {
            max_total: self.max_unzipped_size,
            max_ratio: self.max_ratio,
            ..ZipLimits::default()
        }
    }
}

/// Seconds since the Unix epoch now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The runtime a node runs on: one thread for the event loop and every
/// connection's task, beside tokio's blocking pool for disk work.
///
/// On the 2 vCPUs the node was measured on, a multi-thread runtime handed
/// each piece between its workers and the loop (futex wake-ups, run queues
/// stolen back and forth) and cost the fetcher 15 % more CPU per byte for
/// no throughput; a small kiosk has fewer cores still. The pieces' reads,
/// hashes and writes still run on the blocking pool, off this thread.
/// `multi` keeps the multi-thread runtime where a part of the node needs
/// `block_in_place` (the site cache's staging of a downloaded blob).
pub fn node_runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if multi {
        tokio::runtime::Runtime::new()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}
