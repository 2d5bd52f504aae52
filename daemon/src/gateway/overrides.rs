//! Per-device channel overrides, set by devices through `/channel_self`:
//! a bounded table ([`MAX_OVERRIDES`], the least recently set going first)
//! kept in the store as `STORE/gateway-overrides.json`, so a restart keeps
//! every device on the channel it chose.
//!
//! The table itself is pure (tested below); the gateway writes a snapshot
//! after changes, off the async runtime and at most once per
//! [`SAVE_EVERY`], so a flood of `POST /channel_self` costs one small
//! atomic write a second, not one per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most overrides kept.
pub const MAX_OVERRIDES: usize = 10_000;
/// Largest overrides file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// How often changes are written at most.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The file's name in the store.
pub const FILE: &str = "gateway-overrides.json";

/// One override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// App id.
    pub app: String,
    /// Device id.
    pub device_id: String,
    /// The channel it chose.
    pub channel: String,
    /// A counter of when it was set (higher is later), for eviction.
    pub set: u64,
}

/// The table.
#[derive(Default)]
pub struct Overrides {
    map: HashMap<(String, String), (String, u64)>,
    counter: u64,
    /// Changed since the last [`Overrides::snapshot`].
    pub dirty: bool,
}

impl Overrides {
    /// The table in a file's bytes (entries beyond the cap, and invalid
    /// ones, are left out).
    pub fn from_json(bytes: &[u8]) -> Overrides {
        let list: Vec<Override> = serde_json::from_slice(bytes).unwrap_or_default();
        let mut o = Overrides::default();
        let mut list = list;
        list.sort_by_key(|e| e.set);
        for e in list {
            if lanseed_protocol::release::check_channel(&e.channel).is_ok() {
                o.set(&e.app, &e.device_id, &e.channel);
            }
        }
        o.dirty = false;
        o
    }

    /// The channel `device` of `app` chose, if it did.
    pub fn get(&self, app: &str, device: &str) -> Option<&str> {
        self.map
            .get(&(app.to_owned(), device.to_owned()))
            .map(|(c, _)| c.as_str())
    }

    /// Sets `device`'s channel.
    pub fn set(&mut self, app: &str, device: &str, channel: &str) {
        let key = (app.to_owned(), device.to_owned());
        if !self.map.contains_key(&key) && self.map.len() >= MAX_OVERRIDES {
            let oldest = (self.map.iter())
                .min_by_key(|(_, (_, set))| *set)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.counter += 1;
        self.map.insert(key, (channel.to_owned(), self.counter));
        self.dirty = true;
    }

    /// Removes `device`'s override; whether it had one.
    pub fn unset(&mut self, app: &str, device: &str) -> bool {
        let had = self
            .map
            .remove(&(app.to_owned(), device.to_owned()))
            .is_some();
        self.dirty |= had;
        had
    }

    /// The table as file bytes; clears `dirty`.
    pub fn snapshot(&mut self) -> Vec<u8> {
        self.dirty = false;
        let mut list: Vec<Override> = (self.map.iter())
            .map(|((app, device_id), (channel, set))| Override {
                app: app.clone(),
                device_id: device_id.clone(),
                channel: channel.clone(),
                set: *set,
            })
            .collect();
        list.sort_by_key(|e| e.set);
        serde_json::to_vec(&list).unwrap_or_default()
    }

    /// Entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Where the overrides of the store at `root` live.
pub fn path(root: &Path) -> PathBuf {
    root.join(FILE)
}

/// Reads the overrides of the store at `root` (none when missing or
/// unreadable: they are a convenience the devices set again).
pub fn load(root: &Path) -> Overrides {
    let p = path(root);
    match std::fs::File::open(&p) {
        Ok(f) => {
            use std::io::Read;
            let mut bytes = Vec::new();
            if f.take(MAX_FILE_BYTES).read_to_end(&mut bytes).is_err() {
                return Overrides::default();
            }
            Overrides::from_json(&bytes)
        }
        Err(_) => Overrides::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_survive_a_round_trip_and_the_oldest_go_first() {
        let mut o = Overrides::default();
        o.set("app", "d1", "beta");
        o.set("app", "d2", "dev");
        o.set("app", "d1", "qa"); // refreshed: now the newest
        assert!(o.unset("app", "d2"));
        assert!(!o.unset("app", "d2"));
        let back = Overrides::from_json(&o.snapshot());
        assert_eq!(back.get("app", "d1"), Some("qa"));
        assert_eq!(back.get("app", "d2"), None);
        assert_eq!(back.get("other", "d1"), None);

        let mut o = Overrides::default();
        for i in 0..(MAX_OVERRIDES + 10) {
            o.set("app", &format!("d{i}"), "beta");
        }
        assert_eq!(o.len(), MAX_OVERRIDES);
        assert_eq!(o.get("app", "d0"), None);
        assert_eq!(
            o.get("app", &format!("d{}", MAX_OVERRIDES + 9)),
            Some("beta")
        );
    }

    #[test]
    fn damaged_files_and_bad_channels_are_left_out() {
        assert_eq!(Overrides::from_json(b"{").len(), 0);
        let o = Overrides::from_json(
            br#"[{"app":"a","device_id":"d","channel":"bad name","set":1},
                 {"app":"a","device_id":"e","channel":"beta","set":2}]"#,
        );
        assert_eq!((o.len(), o.get("a", "e")), (1, Some("beta")));
    }
}
