//! Channel settings kept in the store: `STORE/channels.json`, written by
//! `lanseed channel set` and read by the Capgo-compatible gateway.
//!
//! One entry per app and channel: whether the channel is *public* (listed
//! to devices, and the one a device falls back to when it asks for it),
//! whether devices may *self-assign* it (Capgo's `allow_self_set`), and
//! whether the gateway answers on it in Capgo's *manifest* (delta) mode
//! instead of with one zip. A channel with no entry has every flag off.
//!
//! The file is small JSON (`{"channels":[{app, name, public,
//! self_assign, capgo_manifest}]}`), bounded by [`MAX_CHANNELS_BYTES`]
//! and [`MAX_CHANNELS`], replaced atomically ([`super::durable`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, durable};
use crate::release::{check_app_id, check_channel};

/// The file's name in the store.
pub const CHANNELS_FILE: &str = "channels.json";
/// Largest channels file read.
pub const MAX_CHANNELS_BYTES: u64 = 1 << 20;
/// Most channel entries.
pub const MAX_CHANNELS: usize = 4096;

/// The settings of one channel of one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSettings {
    /// App id.
    pub app: String,
    /// Channel name.
    pub name: String,
    /// Listed to devices (Capgo's `public`).
    #[serde(default)]
    pub public: bool,
    /// Devices may switch themselves to it (Capgo's `allow_self_set`).
    #[serde(default)]
    pub self_assign: bool,
    /// The gateway answers with a per-file manifest (Capgo's delta mode).
    #[serde(default)]
    pub capgo_manifest: bool,
}

/// Every channel's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    /// By app, then name.
    pub channels: Vec<ChannelSettings>,
}

/// Why a channels file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ChannelsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is not what `lanseed channel set` writes.
    #[error("{path} is damaged ({reason}); fix or remove it and set the channels again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An app id or channel name is not valid.
    #[error("{0}")]
    Invalid(String),
    /// Too many entries.
    #[error("a store holds at most {MAX_CHANNELS} channel settings")]
    Full,
}

impl Channels {
    /// The settings of `app`'s `name`, if any.
    pub fn get(&self, app: &str, name: &str) -> Option<&ChannelSettings> {
        self.channels
            .iter()
            .find(|c| c.app == app && c.name == name)
    }

    /// The settings of `app`'s channels.
    pub fn of_app<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a ChannelSettings> {
        self.channels.iter().filter(move |c| c.app == app)
    }

    /// Sets (replaces) one channel's settings, keeping the list sorted.
    pub fn set(&mut self, settings: ChannelSettings) -> Result<(), ChannelsError> {
        check(&settings)?;
        let full = self.channels.len() >= MAX_CHANNELS;
        match (self.channels.iter_mut()).find(|c| c.app == settings.app && c.name == settings.name)
        {
            Some(c) => *c = settings,
            None if full => return Err(ChannelsError::Full),
            None => self.channels.push(settings),
        }
        self.channels
            .sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
        Ok(())
    }

    /// Parses the file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Channels, String> {
        let c: Channels = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if c.channels.len() > MAX_CHANNELS {
            return Err(format!("more than {MAX_CHANNELS} entries"));
        }
        for s in &c.channels {
            check(s).map_err(|e| e.to_string())?;
        }
        Ok(c)
    }
}

fn check(s: &ChannelSettings) -> Result<(), ChannelsError> {
    check_app_id(&s.app).map_err(|e| ChannelsError::Invalid(e.to_string()))?;
    check_channel(&s.name).map_err(|e| ChannelsError::Invalid(e.to_string()))
}

impl Store {
    /// Where the channel settings live.
    pub fn channels_path(&self) -> PathBuf {
        self.root().join(CHANNELS_FILE)
    }

    /// The channel settings (none when the file does not exist).
    pub fn channels(&self) -> Result<Channels, ChannelsError> {
        read(&self.channels_path())
    }

    /// Replaces the channel settings atomically.
    pub fn write_channels(&self, channels: &Channels) -> Result<(), ChannelsError> {
        let path = self.channels_path();
        let bytes = serde_json::to_vec_pretty(channels).map_err(|e| ChannelsError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        durable::write_atomic(&path, &bytes).map_err(StoreError::io("cannot write", &path))?;
        Ok(())
    }
}

fn read(path: &Path) -> Result<Channels, ChannelsError> {
    let bytes = match super::read_bounded(path, MAX_CHANNELS_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Channels::default()),
        Err(e) => return Err(StoreError::io("cannot read", path)(e).into()),
    };
    Channels::from_json(&bytes).map_err(|reason| ChannelsError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beta() -> ChannelSettings {
        ChannelSettings {
            app: "com.example.app".into(),
            name: "beta".into(),
            public: false,
            self_assign: true,
            capgo_manifest: false,
        }
    }

    #[test]
    fn settings_round_trip_through_the_store_and_replace_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        assert_eq!(store.channels().unwrap(), Channels::default());
        let mut c = Channels::default();
        c.set(beta()).unwrap();
        let mut again = beta();
        again.capgo_manifest = true;
        c.set(again.clone()).unwrap();
        assert_eq!(c.channels, vec![again.clone()]);
        store.write_channels(&c).unwrap();
        assert_eq!(
            store.channels().unwrap().get("com.example.app", "beta"),
            Some(&again)
        );
    }

    #[test]
    fn bad_names_and_damaged_files_are_refused() {
        let mut bad = beta();
        bad.name = "no spaces".into();
        assert!(matches!(
            Channels::default().set(bad),
            Err(ChannelsError::Invalid(_))
        ));
        assert!(Channels::from_json(b"{\"channels\":[{\"app\":\"x\"}]}").is_err());
        assert!(Channels::from_json(b"[]").is_err());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        std::fs::write(store.channels_path(), b"{").unwrap();
        assert!(matches!(
            store.channels(),
            Err(ChannelsError::Corrupt { .. })
        ));
    }
}
