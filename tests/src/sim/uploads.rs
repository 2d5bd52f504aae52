//! Upload slots, as the node's server keeps them (daemon/src/node/serve.rs,
//! `Uploads`): at most `max` peers served at once (`--max-uploads`); a peer
//! keeps its slot while an answer to it is prepared or sent and for
//! [`LINGER`] after, and has at most [`PER_PEER`] answers at once; a peer
//! without a slot when all are taken is told Busy. The daemon is a binary
//! crate, and its `serve.rs` needs the node's I/O types, so this is a copy
//! of its rules over host numbers (keep the two alike).

use std::collections::HashMap;

use super::events::{MS, Nanos};

/// How long a peer keeps its slot after its last answer (serve.rs LINGER).
pub const LINGER: Nanos = 1000 * MS;
/// Most answers in preparation or in flight to one peer (serve.rs PER_PEER).
pub const PER_PEER: usize = 8;
/// `--max-uploads` by default (daemon/src/cli.rs).
pub const DEFAULT_MAX_UPLOADS: usize = 8;

struct Slot {
    serving: usize,
    last: Nanos,
}

/// One node's upload slots.
pub struct Uploads {
    max: usize,
    slots: HashMap<u32, Slot>,
    /// Most peers served at once so far.
    pub peak: usize,
}

impl Uploads {
    /// At most `max` peers served at once.
    pub fn new(max: usize) -> Self {
        Uploads {
            max: max.max(1),
            slots: HashMap::new(),
            peak: 0,
        }
    }

    /// Whether `peer` may be served now; if so it holds a slot until
    /// [`Uploads::done`] (and [`LINGER`] after).
    pub fn admit(&mut self, peer: u32, now: Nanos) -> bool {
        self.slots
            .retain(|_, s| s.serving > 0 || now.saturating_sub(s.last) < LINGER);
        // As in serve.rs: no more answers wait for their turn than slots.
        let waiting: usize = self.slots.values().map(|s| s.serving).sum();
        let ok = waiting < self.max.max(PER_PEER)
            && match self.slots.get(&peer) {
                Some(s) => s.serving < PER_PEER,
                None => self.slots.len() < self.max,
            };
        if !ok {
            return false;
        }
        let slot = self.slots.entry(peer).or_insert(Slot {
            serving: 0,
            last: now,
        });
        slot.serving += 1;
        slot.last = now;
        self.peak = self.peak.max(self.slots.len());
        true
    }

    /// One answer to `peer` was sent (or failed).
    pub fn done(&mut self, peer: u32, now: Nanos) {
        if let Some(s) = self.slots.get_mut(&peer) {
            s.serving = s.serving.saturating_sub(1);
            s.last = now;
        }
    }

    /// `peer` is gone: its slot is free at once.
    pub fn forget(&mut self, peer: u32) {
        self.slots.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fill_then_busy_then_free_after_linger() {
        let mut u = Uploads::new(2);
        assert!(u.admit(1, 0));
        assert!(u.admit(2, 0));
        assert!(!u.admit(3, 0), "all slots taken");
        assert!(u.admit(1, 0), "a peer holding a slot pipelines");
        u.done(1, 10);
        u.done(1, 10);
        u.done(2, 10);
        assert!(!u.admit(3, 10 + LINGER - 1), "still lingering");
        assert!(u.admit(3, 10 + LINGER));
        assert_eq!(u.peak, 2);
    }

    #[test]
    fn one_peer_has_at_most_per_peer_answers() {
        let mut u = Uploads::new(4);
        for _ in 0..PER_PEER {
            assert!(u.admit(7, 0));
        }
        assert!(!u.admit(7, 0));
        u.forget(7);
        assert!(u.admit(7, 0));
    }
}
