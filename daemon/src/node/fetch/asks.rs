//! The manifest requests of one fetch: whom to ask next, and when to give
//! up on a peer. Pure logic (callers pass `now`), tested below.
//!
//! One peer is asked first; while no answer comes, more are asked, in
//! rounds of [`FAILOVER`]: up to 3 asks in all, then 7, 15, ... (at most
//! [`MAX_IN_FLIGHT`] waiting at once), so that however many silent peers
//! announce a release, one that answers is asked within seconds. A peer
//! that leaves its request unanswered for [`GIVE_UP`] is given up on (the
//! fetch sets it aside), but its request stays known: a slow but honest
//! answer that arrives later is still taken.

use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a manifest request may go unanswered before more peers are
/// asked.
pub const FAILOVER: Duration = Duration::from_millis(500);
/// How long a peer may leave a manifest request unanswered before it is
/// given up on.
pub const GIVE_UP: Duration = Duration::from_secs(3);
/// Most manifest requests waiting at once (not given up on); what their
/// answers may make the node hold is bounded by the codec's manifest
/// budget.
pub const MAX_IN_FLIGHT: usize = 16;

struct Ask<K> {
    key: K,
    peer: PeerId,
    at: Instant,
    given_up: bool,
}

/// The manifest requests of one fetch; `K` names a request.
pub struct Asks<K> {
    list: Vec<Ask<K>>,
    /// When the first was sent, and how many were sent since.
    first: Option<(Instant, u32)>,
}

impl<K: Copy + Eq> Default for Asks<K> {
    fn default() -> Self {
        Asks {
            list: Vec::new(),
            first: None,
        }
    }
}

impl<K: Copy + Eq> Asks<K> {
    /// Whether another request may go now.
    pub fn room(&self, now: Instant) -> bool {
        let allowed = self.first.map_or(1, |(t, _)| {
            let rounds = (now.duration_since(t).as_secs_f64() / FAILOVER.as_secs_f64()) as u32;
            (1u32 << (rounds + 1).min(16)) - 1
        });
        let made = self.first.map_or(0, |(_, n)| n);
        let waiting = self.list.iter().filter(|a| !a.given_up).count();
        waiting < MAX_IN_FLIGHT && made < allowed
    }

    /// Whether `peer` was asked already.
    pub fn asked(&self, peer: &PeerId) -> bool {
        self.list.iter().any(|a| a.peer == *peer)
    }

    /// Request `key` went to `peer`.
    pub fn sent(&mut self, key: K, peer: PeerId, now: Instant) {
        self.list.push(Ask {
            key,
            peer,
            at: now,
            given_up: false,
        });
        let (_, made) = self.first.get_or_insert((now, 0));
        *made += 1;
    }

    /// The answer to `key` came (or the request failed): its peer, if it
    /// was one of these requests.
    pub fn answered(&mut self, key: &K) -> Option<PeerId> {
        let i = self.list.iter().position(|a| a.key == *key)?;
        Some(self.list.swap_remove(i).peer)
    }

    /// Peers whose request has waited longer than [`GIVE_UP`]; they are
    /// given up on (returned once).
    pub fn overdue(&mut self, now: Instant) -> Vec<PeerId> {
        let mut out = Vec::new();
        for a in &mut self.list {
            if !a.given_up && now.duration_since(a.at) > GIVE_UP {
                a.given_up = true;
                out.push(a.peer);
            }
        }
        out
    }

    /// Forgets `peer`'s requests (it sent bad data).
    pub fn drop_peer(&mut self, peer: &PeerId) {
        self.list.retain(|a| a.peer != *peer);
    }

    /// Gives up on `peer`'s requests (set aside), keeping them known.
    pub fn give_up(&mut self, peer: &PeerId) {
        for a in self.list.iter_mut().filter(|a| a.peer == *peer) {
            a.given_up = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_peers_are_asked_the_longer_none_answers() {
        let t = Instant::now();
        let mut a: Asks<u32> = Asks::default();
        let peers: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
        let mut key = 0;
        let mut send_all = |a: &mut Asks<u32>, now: Instant| {
            let mut n = 0;
            for p in &peers {
                if !a.room(now) {
                    break;
                }
                if !a.asked(p) {
                    key += 1;
                    a.sent(key, *p, now);
                    n += 1;
                }
            }
            n
        };
        assert_eq!(send_all(&mut a, t), 1, "one first");
        assert_eq!(send_all(&mut a, t + FAILOVER / 2), 0);
        assert_eq!(send_all(&mut a, t + FAILOVER), 2, "3 in all");
        assert_eq!(send_all(&mut a, t + FAILOVER * 2), 4, "7 in all");
        assert_eq!(send_all(&mut a, t + FAILOVER * 3), 8, "15 in all");
        assert_eq!(send_all(&mut a, t + FAILOVER * 4), 1, "at most 16 waiting");
        // The first are given up on; that makes room, and they are
        // reported once.
        let late = t + GIVE_UP + Duration::from_millis(1);
        assert_eq!(a.overdue(late).len(), 1);
        assert!(a.overdue(late).is_empty());
        assert_eq!(send_all(&mut a, late), 1);
        // A given-up peer's answer is still taken.
        assert_eq!(a.answered(&1), Some(peers[0]));
        assert_eq!(a.answered(&1), None, "answered once");
        // A peer that sent bad data is forgotten.
        a.drop_peer(&peers[1]);
        assert_eq!(a.answered(&2), None);
        a.give_up(&peers[2]);
        assert_eq!(a.answered(&3), Some(peers[2]));
    }
}
