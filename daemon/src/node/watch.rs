//! The store watch: notices, off the node's event loop, when the store's
//! index changed (a release packed or imported by another process, one the
//! node committed, or a collection), and hands the releases it now holds
//! to the node. Looking every [`EVERY`] costs one `stat`; the index is
//! read only when its size, inode or time changed. The node asks for a
//! look at once after it changed the store itself ([`Watch::kick`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanseed_protocol::{SignedRelease, Store};
use tokio::sync::{Notify, mpsc};

/// How often the index is looked at.
pub const EVERY: Duration = Duration::from_millis(20);

/// What identifies a version of the index file.
pub type Stamp = Option<(u64, u64, SystemTime)>;

/// The index's stamp now.
pub fn stamp(store: &Store) -> Stamp {
    let index = store.root().join(lanseed_protocol::store::index::FILE);
    std::fs::metadata(index).ok().and_then(|m| {
        use std::os::unix::fs::MetadataExt;
        Some((m.len(), m.ino(), m.modified().ok()?))
    })
}

/// What a look found: the releases held, or why they could not be read.
pub type Found = Result<Vec<SignedRelease>, String>;

/// A running watch.
pub struct Watch {
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Watches `store`, whose index the node read at `seen`; what changes
    /// goes to `found`. A notification on `kick` makes it look at once.
    pub fn start(
        store: Store,
        mut seen: Stamp,
        found: mpsc::Sender<Found>,
        kick: Arc<Notify>,
    ) -> Watch {
        let kicked = kick.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = kicked.notified() => {}
                }
                let s = store.clone();
                let look = tokio::task::spawn_blocking(move || {
                    let now = stamp(&s);
                    if now == seen {
                        return None;
                    }
                    Some((now, s.releases().map_err(|e| e.to_string())))
                });
                let Ok(Some((now, releases))) = look.await else {
                    continue;
                };
                // An index that cannot be read is read again when it
                // changes, not every tick (one warning per version).
                seen = now;
                if found.send(releases).await.is_err() {
                    return;
                }
            }
        });
        Watch { kick, task }
    }

    /// Looks at once (the node changed the store).
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
