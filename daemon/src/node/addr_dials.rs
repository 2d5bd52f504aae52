//! `--peer` addresses given without `/p2p/<id>`: the node cannot put them
//! in the peer book (which is keyed by peer id) until one answers, so they
//! are dialled by address from here, again and again with a doubling wait
//! ([`FIRST`] to [`MAX`]) while nothing answers there. Once a dial connects,
//! the peer behind it joins the peer book as a `--peer` (never evicted,
//! redialled by the book) and the address leaves this list. Pure: the
//! node dials and passes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::swarm::ConnectionId;

/// First wait after a failed dial.
pub const FIRST: Duration = Duration::from_secs(1);
/// Longest wait between dials of one address.
pub const MAX: Duration = Duration::from_secs(30);

struct Entry {
    addr: Multiaddr,
    due: Instant,
    wait: Duration,
    dialing: Option<ConnectionId>,
}

/// The addresses still to reach.
#[derive(Default)]
pub struct AddrDials {
    entries: Vec<Entry>,
}

impl AddrDials {
    /// Adds `addr`, due at once.
    pub fn add(&mut self, addr: Multiaddr, now: Instant) {
        self.entries.push(Entry {
            addr,
            due: now,
            wait: FIRST,
            dialing: None,
        });
    }

    /// The addresses to dial now (not being dialled, wait over).
    pub fn due(&self, now: Instant) -> Vec<Multiaddr> {
        (self.entries.iter())
            .filter(|e| e.dialing.is_none() && e.due <= now)
            .map(|e| e.addr.clone())
            .collect()
    }

    /// A dial of `addr` started as connection `id`.
    pub fn dialing(&mut self, addr: &Multiaddr, id: ConnectionId) {
        if let Some(e) = self.entries.iter_mut().find(|e| &e.addr == addr) {
            e.dialing = Some(id);
        }
    }

    /// Connection `id` failed (or could not start, `id` of a dial never
    /// made: pass the address's own); true when it was one of ours.
    pub fn failed(&mut self, id: ConnectionId, now: Instant) -> bool {
        let Some(e) = self.entries.iter_mut().find(|e| e.dialing == Some(id)) else {
            return false;
        };
        e.dialing = None;
        e.due = now + e.wait;
        e.wait = (e.wait * 2).min(MAX);
        true
    }

    /// Connection `id` is up: its address, which leaves the list.
    pub fn connected(&mut self, id: ConnectionId) -> Option<Multiaddr> {
        let i = self.entries.iter().position(|e| e.dialing == Some(id))?;
        Some(self.entries.remove(i).addr)
    }

    /// Waits before the next dial of each address, for `status`.
    pub fn waiting(&self, now: Instant) -> HashMap<String, Duration> {
        (self.entries.iter())
            .map(|e| (e.addr.to_string(), e.due.saturating_duration_since(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_does_not_answer_is_dialled_again_with_a_doubling_wait() {
        let t0 = Instant::now();
        let addr: Multiaddr = "/ip4/10.0.0.5/tcp/4001".parse().unwrap();
        let mut d = AddrDials::default();
        d.add(addr.clone(), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert_eq!(d.due(now), std::slice::from_ref(&addr));
            let id = ConnectionId::new_unchecked(waits.len());
            d.dialing(&addr, id);
            assert!(d.due(now).is_empty(), "not twice at once");
            assert!(d.failed(id, now));
            let wait = d.waiting(now)[&addr.to_string()];
            waits.push(wait.as_secs());
            assert!(d.due(now + wait - Duration::from_millis(1)).is_empty());
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        let id = ConnectionId::new_unchecked(99);
        d.dialing(&addr, id);
        assert!(!d.failed(ConnectionId::new_unchecked(98), now), "not ours");
        assert_eq!(d.connected(id), Some(addr));
        assert!(d.due(now + MAX).is_empty(), "reached: the peer book has it");
    }
}
