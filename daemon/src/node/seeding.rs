//! Initial seeding ("super-seeding", as BitTorrent calls it): a node that
//! holds a blob whole sends each of its pieces to one peer, and while that
//! copy is on its way, and for [`WINDOW`] after it arrived, tells the
//! other peers asking for the same piece Busy (for longer when the
//! answer took longer: a slow or crowded link passes it on slower): they
//! get it from the peer
//! that has it (its `Have` reaches them within a tenth of a second), and
//! the source's uplink, the scarce link of a fan-out, carries each piece
//! about once instead of to every follower that asked for it at once.
//!
//! The fetch side's peer-first choice (`fetch::sched`) already asks a
//! source only for pieces no follower holds or fetches; what it cannot see
//! is the race of two followers asking for the same piece before either's
//! `Have` says so, and the followers whose patience ran out. This is the
//! source's half of the same rule, decided where the duplicate would be
//! sent.
//!
//! Only while the uplink has answers to others to send: a piece is held
//! back to save the uplink's time, and an idle uplink sends the copy at
//! no cost in time (with few followers, holding back would leave it idle
//! while they rest the source).
//!
//! A peer that takes pieces and never passes them on (a liar, or a node
//! that just left) can hold a piece back from the others at most once,
//! and only by being sent it: a piece is recorded when an answer carrying
//! it is on its way (not when it is asked for), is held back for at most
//! [`MAX_WINDOW`] on its way (a reader that trickles it in frees it then)
//! and one window after, then is served to anyone who asks (a liar asking
//! for the same piece again does not hold it back again). The pieces of a
//! peer that disconnects are freed at once.
//!
//! A pure decision over piece keys, peer ids and instants: the server
//! (`serve.rs`) keeps one, and the simulator (`tests/src/sim`) compiles
//! this file by path.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lanseed_protocol::Hash;
use libp2p::PeerId;

/// How long after a piece reached a peer others asking for it are told
/// Busy, at least: a `Have` every 100 ms and a follower's queue of
/// answers take this long to pass it on, at worst, on a shared 50 Mbit/s
/// link. An answer that took longer than half of it (queued behind
/// others, or on a slower link) gets twice its own time.
pub const WINDOW: Duration = Duration::from_secs(2);
/// The longest window, whatever the answer took.
pub const MAX_WINDOW: Duration = Duration::from_secs(20);

/// Most pieces tracked (about 64 GiB of bundles at 1 MiB a piece); past
/// it, the freed and expired ones are dropped (each may then be held back
/// once more, by a peer that is sent it again), and while it is still
/// full, no more pieces are held back.
pub const MAX_TRACKED: usize = 1 << 16;

/// A piece: its blob and index.
pub type Piece = (Hash, u32);

#[derive(Clone, Copy)]
enum State {
    /// On its way to `peer` since `since` (`until: None`), or arrived
    /// there and held back from others until `until`.
    Held {
        peer: PeerId,
        since: Instant,
        until: Option<Instant>,
    },
    /// Held back once already: served to anyone.
    Free,
}

/// Which pieces are held back, for whom.
#[derive(Default)]
pub struct Seeding {
    pieces: HashMap<Piece, State>,
    /// Requests told Busy because of a held-back piece (for `status`).
    pub held_back: u64,
}

impl Seeding {
    /// Whether `peer`'s request for `pieces` should be told Busy: one of
    /// them is on its way to, or just went to, another peer, and the
    /// uplink is `busy` with answers to others.
    pub fn hold_back(&mut self, peer: &PeerId, pieces: &[Piece], busy: bool, now: Instant) -> bool {
        let held = busy
            && pieces.iter().any(|p| match self.pieces.get(p) {
                Some(s @ State::Held { peer: to, .. }) => to != peer && holds(s, now),
                _ => false,
            });
        if held {
            self.held_back += 1;
        }
        held
    }

    /// An answer carrying `pieces` is on its way to `peer`: each one never
    /// sent before is held back from the others until
    /// [`Seeding::arrived`] and a window after; one whose hold has passed
    /// is freed.
    pub fn sending(&mut self, peer: PeerId, pieces: &[Piece], now: Instant) {
        if self.pieces.len() + pieces.len() > MAX_TRACKED {
            self.pieces.retain(|_, s| holds(s, now));
        }
        for p in pieces {
            if let Some(state) = self.pieces.get_mut(p) {
                if !holds(state, now) {
                    *state = State::Free;
                }
            } else if self.pieces.len() < MAX_TRACKED {
                let held = State::Held {
                    peer,
                    since: now,
                    until: None,
                };
                self.pieces.insert(*p, held);
            }
        }
    }

    /// The answer carrying `pieces` to `peer` was sent (or failed): their
    /// window starts, twice as long as the answer took (one that took
    /// longer than [`MAX_WINDOW`] is freed).
    pub fn arrived(&mut self, peer: &PeerId, pieces: &[Piece], now: Instant) {
        for p in pieces {
            if let Some(state) = self.pieces.get_mut(p)
                && let State::Held {
                    peer: to,
                    since,
                    until: None,
                } = *state
                && to == *peer
            {
                let took = now.saturating_duration_since(since);
                *state = if took > MAX_WINDOW {
                    State::Free
                } else {
                    State::Held {
                        peer: to,
                        since,
                        until: Some(now + (2 * took).clamp(WINDOW, MAX_WINDOW)),
                    }
                };
            }
        }
    }

    /// `peer` is gone: what was held back for it is free.
    pub fn forget(&mut self, peer: &PeerId) {
        for s in self.pieces.values_mut() {
            if matches!(s, State::Held { peer: to, .. } if to == peer) {
                *s = State::Free;
            }
        }
    }
}

/// Whether a piece in state `s` is held back at `now`: on its way for
/// less than [`MAX_WINDOW`], or arrived and within its window.
fn holds(s: &State, now: Instant) -> bool {
    match s {
        State::Held {
            since, until: None, ..
        } => now < *since + MAX_WINDOW,
        State::Held { until: Some(u), .. } => now < *u,
        State::Free => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(n: u32) -> Piece {
        (Hash::of(b"blob"), n)
    }

    #[test]
    fn a_piece_goes_to_one_peer_while_it_passes_it_on() {
        let (x, y) = (PeerId::random(), PeerId::random());
        let mut s = Seeding::default();
        let t = Instant::now();
        assert!(!s.hold_back(&x, &[piece(0)], true, t));
        s.sending(x, &[piece(0)], t);
        // On its way to x: y waits, x itself may ask again.
        assert!(s.hold_back(&y, &[piece(0)], true, t));
        assert!(!s.hold_back(&x, &[piece(0)], true, t));
        // A batch with one held-back piece is held back.
        assert!(s.hold_back(&y, &[piece(1), piece(0)], true, t));
        assert!(!s.hold_back(&y, &[piece(1)], true, t));
        // Arrived: held back for the window, then served to anyone.
        let arrived = t + Duration::from_millis(500);
        s.arrived(&x, &[piece(0)], arrived);
        assert!(s.hold_back(&y, &[piece(0)], true, arrived + WINDOW / 2));
        assert!(!s.hold_back(&y, &[piece(0)], true, arrived + WINDOW));
        assert_eq!(s.held_back, 3);
    }

    #[test]
    fn an_idle_uplink_sends_the_copy() {
        let (x, y) = (PeerId::random(), PeerId::random());
        let mut s = Seeding::default();
        let t = Instant::now();
        s.sending(x, &[piece(0)], t);
        assert!(s.hold_back(&y, &[piece(0)], true, t));
        assert!(!s.hold_back(&y, &[piece(0)], false, t));
    }

    #[test]
    fn a_piece_is_held_back_once_so_a_peer_that_never_shares_costs_one_window() {
        let (liar, y) = (PeerId::random(), PeerId::random());
        let mut s = Seeding::default();
        let t = Instant::now();
        s.sending(liar, &[piece(0)], t);
        s.arrived(&liar, &[piece(0)], t);
        // The liar asks again after the window: the piece is not held
        // back from y a second time.
        let later = t + WINDOW;
        s.sending(liar, &[piece(0)], later);
        s.arrived(&liar, &[piece(0)], later);
        assert!(!s.hold_back(&y, &[piece(0)], true, later));
        // And y, served, does not hold it back from the liar either.
        s.sending(y, &[piece(0)], later);
        assert!(!s.hold_back(&liar, &[piece(0)], true, later));
    }

    #[test]
    fn a_slow_answer_gets_a_longer_window() {
        let (x, y) = (PeerId::random(), PeerId::random());
        let mut s = Seeding::default();
        let t = Instant::now();
        s.sending(x, &[piece(0)], t);
        let arrived = t + Duration::from_secs(3);
        s.arrived(&x, &[piece(0)], arrived);
        assert!(s.hold_back(&y, &[piece(0)], true, arrived + Duration::from_secs(5)));
        assert!(!s.hold_back(&y, &[piece(0)], true, arrived + Duration::from_secs(6)));
        // An answer that took longer than MAX_WINDOW frees its piece.
        s.sending(x, &[piece(1)], t);
        s.arrived(&x, &[piece(1)], t + Duration::from_secs(60));
        assert!(!s.hold_back(&y, &[piece(1)], true, t + Duration::from_secs(60)));
    }

    #[test]
    fn a_reader_that_trickles_a_piece_in_holds_it_back_at_most_max_window() {
        let (slow, y) = (PeerId::random(), PeerId::random());
        let mut s = Seeding::default();
        let t = Instant::now();
        s.sending(slow, &[piece(0)], t);
        assert!(s.hold_back(&y, &[piece(0)], true, t + MAX_WINDOW / 2));
        assert!(!s.hold_back(&y, &[piece(0)], true, t + MAX_WINDOW));
        // Arriving after that starts no window.
        s.arrived(&slow, &[piece(0)], t + MAX_WINDOW + WINDOW);
        assert!(!s.hold_back(&y, &[piece(0)], true, t + MAX_WINDOW + WINDOW));
    }

    #[test]
    fn a_peer_that_leaves_frees_its_pieces() {
        let (x, y) = (PeerId::random(), PeerId::random());
        let mut s = Seeding::default();
        let t = Instant::now();
        s.sending(x, &[piece(0), piece(1)], t);
        s.forget(&x);
        assert!(!s.hold_back(&y, &[piece(0), piece(1)], true, t));
    }

    #[test]
    fn the_table_is_bounded() {
        let x = PeerId::random();
        let mut s = Seeding::default();
        let t = Instant::now();
        let many: Vec<Piece> = (0..MAX_TRACKED as u32 + 10).map(piece).collect();
        for chunk in many.chunks(1000) {
            s.sending(x, chunk, t);
            s.arrived(&x, chunk, t);
        }
        assert!(s.pieces.len() <= MAX_TRACKED);
    }

    #[test]
    fn a_full_table_of_pieces_on_their_way_keeps_them_and_holds_no_more() {
        let (x, y) = (PeerId::random(), PeerId::random());
        let mut s = Seeding::default();
        let t = Instant::now();
        let many: Vec<Piece> = (0..MAX_TRACKED as u32).map(piece).collect();
        s.sending(x, &many, t);
        let extra = piece(MAX_TRACKED as u32);
        s.sending(x, &[extra], t);
        assert!(s.hold_back(&y, &[piece(0)], true, t));
        assert!(!s.hold_back(&y, &[extra], true, t));
        // Once their windows passed, room is made again.
        let later = t + MAX_WINDOW;
        s.sending(x, &[extra], later);
        assert!(s.hold_back(&y, &[extra], true, later));
        assert!(s.pieces.len() <= MAX_TRACKED);
    }
}
