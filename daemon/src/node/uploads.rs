//! Upload slots: who may be served now (`--max-uploads`). A peer holds a
//! slot while an answer to it is being prepared or sent, and for
//! [`LINGER`] after, so that a downloader keeps its slot between two
//! requests of its pipeline; a peer without a slot, when all are taken, is
//! told Busy at once (it asks others, and this node again later) rather
//! than queued into its timeout. One peer has at most [`PER_PEER`] answers
//! in preparation, and no more answers wait for their turn on the uplink
//! than there are slots.
//!
//! A pure decision over peer ids and instants: the server (`serve.rs`)
//! keeps one, and the simulator (`tests/src/sim`) compiles this file by
//! path, so that it follows every change.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a peer keeps its slot after its last answer.
pub const LINGER: Duration = Duration::from_secs(1);
/// `--max-uploads` by default.
pub const DEFAULT_MAX: usize = 8;
/// Most answers in preparation or in flight to one peer.
pub const PER_PEER: usize = 8;

struct Slot {
    serving: usize,
    last: Instant,
}

/// Upload slots.
pub struct Uploads {
    max: usize,
    slots: HashMap<PeerId, Slot>,
    /// Most peers served at once so far.
    pub peak: usize,
    /// Answers refused with Busy.
    pub refused: u64,
}

impl Uploads {
    /// At most `max` peers served at once.
    pub fn new(max: usize) -> Uploads {
        Uploads {
            max: max.max(1),
            slots: HashMap::new(),
            peak: 0,
            refused: 0,
        }
    }

    /// Whether `peer` may be served now; if so it holds a slot until
    /// [`Uploads::done`] (and [`LINGER`] after).
    pub fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        self.slots
            .retain(|_, s| s.serving > 0 || now.duration_since(s.last) < LINGER);
        // Answers take turns on the uplink: more of them waiting than
        // slots (or than one peer's pipeline) would only wait into their
        // askers' timeouts on a slow link, and be sent for nothing.
        let waiting: usize = self.slots.values().map(|s| s.serving).sum();
        let ok = waiting < self.max.max(PER_PEER)
            && match self.slots.get(&peer) {
                Some(s) => s.serving < PER_PEER,
                None => self.slots.len() < self.max,
            };
        if !ok {
            self.refused += 1;
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
    pub fn done(&mut self, peer: &PeerId, now: Instant) {
        if let Some(s) = self.slots.get_mut(peer) {
            s.serving = s.serving.saturating_sub(1);
            s.last = now;
        }
    }

    /// Whether answers to peers other than `peer` are being prepared or
    /// sent: the uplink has other work.
    pub fn busy_with_others(&self, peer: &PeerId) -> bool {
        self.slots.iter().any(|(p, s)| p != peer && s.serving > 0)
    }

    /// Peers holding a slot now.
    pub fn active(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_linger() {
        let mut u = Uploads::new(2);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t = Instant::now();
        assert!(u.admit(a, t));
        assert!(u.admit(b, t));
        assert!(!u.admit(c, t), "third peer is busy");
        assert!(u.admit(a, t), "a peer with a slot asks again");
        u.done(&a, t);
        u.done(&a, t);
        assert!(!u.admit(c, t + LINGER / 2), "a's slot lingers");
        u.done(&b, t);
        assert!(u.admit(c, t + LINGER * 2), "slots free up");
        assert_eq!(u.peak, 2);
        assert_eq!(u.refused, 2);
        for _ in 0..PER_PEER - 1 {
            assert!(u.admit(c, t + LINGER * 2));
        }
        assert!(
            !u.admit(c, t + LINGER * 2),
            "one peer's answers are bounded"
        );
    }

    #[test]
    fn answers_waiting_for_their_turn_are_bounded_in_all() {
        let mut u = Uploads::new(16);
        let t = Instant::now();
        let peers: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
        for p in &peers[..8] {
            assert!(u.admit(*p, t));
            assert!(u.admit(*p, t));
        }
        // As many answers wait as there are slots: a ninth peer is told
        // Busy until some are sent.
        assert!(!u.admit(peers[8], t), "no more answers than slots wait");
        for p in &peers[..8] {
            u.done(p, t);
        }
        assert!(u.admit(peers[8], t));
    }
}
