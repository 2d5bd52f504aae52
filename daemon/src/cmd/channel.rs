//! `lanseed channel set` / `list`: the channel settings kept in the store
//! (`STORE/channels.json`), which a node's Capgo gateway reads (and reloads
//! within a second when they change).

use lanseed_protocol::store::channels::ChannelSettings;

use crate::cli::{ChannelListArgs, ChannelSetArgs};
use crate::output::print_json;

pub fn set(args: ChannelSetArgs) -> anyhow::Result<()> {
    let store = args.store.create()?;
    let mut channels = store.channels()?;
    let settings = ChannelSettings {
        app: args.app,
        name: args.name,
        public: args.public,
        self_assign: args.self_assign,
        capgo_manifest: args.capgo_manifest,
    };
    channels.set(settings.clone())?;
    store.write_channels(&channels)?;
    eprintln!(
        "channel {} of {}: {}",
        settings.name,
        settings.app,
        describe(&settings)
    );
    Ok(())
}

pub fn list(args: ChannelListArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let channels = store.channels()?;
    if args.json {
        return print_json(&channels.channels);
    }
    if channels.channels.is_empty() {
        eprintln!(
            "No channel settings in {}; every channel is private, not self-assignable, zip mode.",
            store.root().display()
        );
    }
    for c in &channels.channels {
        println!("{} {}: {}", c.app, c.name, describe(c));
    }
    Ok(())
}

fn describe(c: &ChannelSettings) -> String {
    format!(
        "{}, {}, {}",
        if c.public { "public" } else { "private" },
        if c.self_assign {
            "self-assignable"
        } else {
            "not self-assignable"
        },
        if c.capgo_manifest {
            "Capgo manifest mode"
        } else {
            "zip mode"
        }
    )
}
