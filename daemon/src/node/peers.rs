//! The peer book: who the node knows, how to reach them, when to dial
//! them again, and how each has behaved. Pure bookkeeping (callers pass
//! `now`), tested on its own below; the node does the dialling.
//!
//! Anything on the LAN can put names in it (mDNS records are unsigned, and
//! inbound peer ids are free to make), so every part is bounded:
//! - at most [`MAX_PEERS`] entries; a newcomer evicts the entry least
//!   worth keeping (not connected, most failed dials, oldest), and is
//!   refused when every entry is connected;
//! - at most [`MAX_ADDRS`] addresses per peer, the newest kept, each
//!   forgotten [`ADDR_TTL`] after it was last seen (addresses given with
//!   `--peer` never expire);
//! - dials back off exponentially from [`DIAL_BASE`] to [`DIAL_MAX`], and a
//!   peer that failed [`FORGET_AFTER`] dials in a row with no connection is
//!   forgotten; the node dials at most [`DIALS_PER_SEC`] a second;
//! - what a peer may make the node do (announcements, `Have`s) is rate
//!   limited per peer ([`Bucket`]), and what it did wrong is kept (a ban
//!   with a reason and an end, or a note) for `lanseed status`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use lanseed_protocol::ReleaseId;
use libp2p::{Multiaddr, PeerId};

/// Most peers known at once.
pub const MAX_PEERS: usize = 256;
/// Most addresses kept per peer.
pub const MAX_ADDRS: usize = 8;
/// How long an address is kept after it was last seen.
pub const ADDR_TTL: Duration = Duration::from_secs(600);
/// First wait before dialling a peer again.
pub const DIAL_BASE: Duration = Duration::from_secs(3);
/// Longest wait between dials of one peer.
pub const DIAL_MAX: Duration = Duration::from_secs(300);
/// Failed dials in a row after which a peer is forgotten.
pub const FORGET_AFTER: u32 = 6;
/// Most dials a second, all peers together.
pub const DIALS_PER_SEC: f64 = 10.0;
/// How long a ban lasts.
pub const BAN_TIME: Duration = Duration::from_secs(900);
/// Most peers banned at once (those whose ban ends soonest make room).
pub const MAX_BANS: usize = 1024;
/// Releases remembered per peer as announced by it.
pub const MAX_ANNOUNCED_PER_PEER: usize = 4096;
/// Misbehaving peers remembered for `status` (newest kept).
pub const MAX_RECORDS: usize = 256;

/// A token bucket: `rate` a second, bursts of `burst`.
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
            rate,
            burst,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Announcements a peer may send: 2 a second, bursts of 16 (a node sends
/// one on connecting and one per release it gains).
fn announce_bucket(now: Instant) -> Bucket {
    Bucket::new(2.0, 16.0, now)
}

/// `Have`s a peer may send: 20 a second (one per fetch every 100 ms, for
/// two fetches), bursts of 40.
fn have_bucket(now: Instant) -> Bucket {
    Bucket::new(20.0, 40.0, now)
}

/// Device reports a peer may send: 1 a second, bursts of 8 (a device
/// reports on each change of state and every 30 s).
fn report_bucket(now: Instant) -> Bucket {
    Bucket::new(1.0, 8.0, now)
}

/// What a peer did that the node holds against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// It sent bad data: no more dealings until the ban ends.
    Banned,
    /// It did not answer, or too slowly: asked again later, with backoff.
    SetAside,
    /// It sent more than it may: the rest was dropped.
    RateLimited,
    /// It sent a malformed frame: the stream was closed.
    Closed,
    /// It offered a release that was refused (untrusted, older, forged).
    Refused,
}

impl Mark {
    /// What the node did, for the log.
    pub fn verb(self) -> &'static str {
        match self {
            Mark::Banned => "banned peer",
            Mark::SetAside => "set peer aside",
            Mark::RateLimited => "rate-limited peer",
            Mark::Closed => "closed a malformed stream",
            Mark::Refused => "refused announced release",
        }
    }

    /// The name shown by `status`.
    pub fn name(self) -> &'static str {
        match self {
            Mark::Banned => "banned",
            Mark::SetAside => "set_aside",
            Mark::RateLimited => "rate_limited",
            Mark::Closed => "closed",
            Mark::Refused => "refused",
        }
    }
}

/// One thing a peer did wrong, kept for `status`.
#[derive(Clone, Debug)]
pub struct Record {
    /// The peer.
    pub peer: PeerId,
    /// What it got.
    pub mark: Mark,
    /// Why, in words.
    pub reason: String,
    /// How many times.
    pub count: u64,
    /// When last.
    pub last: Instant,
}

/// One known peer.
#[derive(Debug)]
pub struct Peer {
    /// Addresses, newest first, with when each was last seen (`None`:
    /// given with `--peer`, kept for good).
    addrs: VecDeque<(Multiaddr, Option<Instant>)>,
    /// How it was found: `mdns`, `peer-flag` or `inbound`.
    pub found_by: &'static str,
    /// Whether a connection is open.
    pub connected: bool,
    /// Releases it announced whole (bounded).
    pub announced: HashSet<ReleaseId>,
    failures: u32,
    next_dial: Instant,
    /// Malformed frames it sent.
    strikes: u64,
    announces: Bucket,
    haves: Bucket,
    reports: Bucket,
}

impl Peer {
    fn new(found_by: &'static str, now: Instant) -> Peer {
        Peer {
            addrs: VecDeque::new(),
            found_by,
            connected: false,
            announced: HashSet::new(),
            failures: 0,
            next_dial: now,
            strikes: 0,
            announces: announce_bucket(now),
            haves: have_bucket(now),
            reports: report_bucket(now),
        }
    }

    /// Its addresses, newest first.
    pub fn addrs(&self) -> impl Iterator<Item = &Multiaddr> {
        self.addrs.iter().map(|(a, _)| a)
    }

    /// Whether it was given with `--peer` (kept for good).
    fn permanent(&self) -> bool {
        self.addrs.iter().any(|(_, seen)| seen.is_none())
    }
}

/// Counters of what was refused, for `status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Dropped {
    /// Announcements dropped (rate limit, or from a banned peer).
    pub announcements: u64,
    /// `Have`s dropped.
    pub haves: u64,
    /// Device reports dropped (rate limit).
    pub reports: u64,
    /// Names refused because the book was full of connected peers.
    pub peers_refused: u64,
    /// Peers forgotten after failed dials, or evicted for newcomers.
    pub peers_forgotten: u64,
    /// Streams closed for a malformed frame.
    pub malformed_frames: u64,
    /// Releases refused (untrusted, out of scope, forged, older).
    pub releases_refused: u64,
    /// Dials started (not a refusal: shows the dial rate).
    pub dials: u64,
}

/// The book.
pub struct PeerBook {
    peers: HashMap<PeerId, Peer>,
    /// Banned peers, until when: kept apart from the book, so that banned
    /// strangers take no room from honest peers.
    bans: HashMap<PeerId, Instant>,
    records: VecDeque<Record>,
    dial_tokens: Bucket,
    /// What was dropped.
    pub dropped: Dropped,
}

impl PeerBook {
    /// An empty book.
    pub fn new(now: Instant) -> PeerBook {
        PeerBook {
            peers: HashMap::new(),
            bans: HashMap::new(),
            records: VecDeque::new(),
            dial_tokens: Bucket::new(DIALS_PER_SEC, DIALS_PER_SEC, now),
            dropped: Dropped::default(),
        }
    }

    /// A peer, if known.
    #[cfg(test)]
    pub fn get(&self, peer: &PeerId) -> Option<&Peer> {
        self.peers.get(peer)
    }

    /// Every known peer.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.peers.iter()
    }

    /// How many are known.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether `peer` has an open connection.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.connected)
    }

    /// Peers with an open connection.
    pub fn connected(&self) -> Vec<PeerId> {
        (self.peers.iter())
            .filter(|(_, p)| p.connected)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The entry of `peer`, made (evicting another when full) if new;
    /// `None` when the book is full of connected peers.
    fn entry(&mut self, peer: PeerId, found_by: &'static str, now: Instant) -> Option<&mut Peer> {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= MAX_PEERS {
                let victim = (self.peers.iter())
                    .filter(|(_, p)| !p.connected && !p.permanent())
                    .max_by_key(|(_, p)| (p.failures, std::cmp::Reverse(p.newest_seen())))
                    .map(|(id, _)| *id);
                match victim {
                    Some(v) => {
                        self.peers.remove(&v);
                        self.dropped.peers_forgotten += 1;
                    }
                    None => {
                        self.dropped.peers_refused += 1;
                        return None;
                    }
                }
            }
            self.peers.insert(peer, Peer::new(found_by, now));
        }
        self.peers.get_mut(&peer)
    }

    /// Addresses of `peer` were seen (mDNS, `--peer`: `permanent`); returns
    /// whether any was new. Refused (false) when the book is full.
    pub fn found(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        found_by: &'static str,
        permanent: bool,
        now: Instant,
    ) -> bool {
        let Some(p) = self.entry(peer, found_by, now) else {
            return false;
        };
        let mut fresh = false;
        for a in addrs.iter().rev() {
            let old = (p.addrs.iter().position(|(x, _)| x == a)).and_then(|i| p.addrs.remove(i));
            let seen = if permanent || matches!(old, Some((_, None))) {
                None
            } else {
                Some(now)
            };
            fresh |= old.is_none();
            p.addrs.push_front((a.clone(), seen));
        }
        p.addrs.truncate(MAX_ADDRS);
        if fresh {
            p.next_dial = now; // a new address is worth a dial at once
        }
        fresh
    }

    /// A connection to `peer` is open (`addr`: the address dialled).
    /// Returns false when the book had no room (the connection should be
    /// closed).
    pub fn connected_to(&mut self, peer: PeerId, addr: Option<&Multiaddr>, now: Instant) -> bool {
        let Some(p) = self.entry(peer, "inbound", now) else {
            return false;
        };
        p.connected = true;
        p.failures = 0;
        if let Some(a) = addr
            && !p.addrs.iter().any(|(x, _)| x == a)
        {
            p.addrs.push_front((a.clone(), Some(now)));
            p.addrs.truncate(MAX_ADDRS);
        }
        true
    }

    /// The last connection to `peer` closed: its addresses count as seen
    /// now (they were not expired while it was connected).
    pub fn disconnected(&mut self, peer: &PeerId, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.connected = false;
            p.next_dial = now + DIAL_BASE;
            for (_, seen) in &mut p.addrs {
                if seen.is_some() {
                    *seen = Some(now);
                }
            }
        }
    }

    /// A dial of `peer` failed: it waits longer next time, and is
    /// forgotten after [`FORGET_AFTER`] failures in a row (unless a
    /// `--peer`).
    pub fn dial_failed(&mut self, peer: &PeerId, now: Instant) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.connected {
            return;
        }
        p.failures += 1;
        p.next_dial = now + backoff(p.failures);
        if p.failures >= FORGET_AFTER && !p.permanent() {
            self.peers.remove(peer);
            self.dropped.peers_forgotten += 1;
        }
    }

    /// Peers to dial now, with their live addresses: not connected, not
    /// banned, due, within the dial rate. Expired addresses are dropped,
    /// and so are peers left with none.
    pub fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut gone = Vec::new();
        let mut out = Vec::new();
        let mut order: Vec<(&PeerId, &mut Peer)> = self.peers.iter_mut().collect();
        order.sort_by_key(|(_, p)| p.next_dial);
        for (id, p) in order {
            if p.connected {
                continue; // its addresses do not expire while connected
            }
            p.addrs.retain(|(_, seen)| {
                seen.is_none_or(|t| now.saturating_duration_since(t) < ADDR_TTL)
            });
            if self.bans.get(id).is_some_and(|t| *t > now) {
                continue;
            }
            if p.addrs.is_empty() {
                if p.found_by != "inbound" || p.announced.is_empty() {
                    gone.push(*id);
                }
                continue;
            }
            if p.next_dial > now {
                continue;
            }
            if !self.dial_tokens.take(now) {
                break;
            }
            p.next_dial = now + backoff(p.failures + 1);
            self.dropped.dials += 1;
            out.push((*id, p.addrs().cloned().collect()));
        }
        for id in gone {
            self.peers.remove(&id);
            self.dropped.peers_forgotten += 1;
        }
        out
    }

    /// Whether `peer` may send an announcement now (counts those dropped).
    pub fn allow_announce(&mut self, peer: &PeerId, now: Instant) -> bool {
        let ok = self
            .peers
            .get_mut(peer)
            .is_some_and(|p| p.announces.take(now));
        if !ok {
            self.dropped.announcements += 1;
        }
        ok
    }

    /// Whether `peer` may send a device report now (counts those dropped).
    pub fn allow_report(&mut self, peer: &PeerId, now: Instant) -> bool {
        let ok = self
            .peers
            .get_mut(peer)
            .is_some_and(|p| p.reports.take(now));
        if !ok {
            self.dropped.reports += 1;
        }
        ok
    }

    /// Whether `peer` may send a `Have` now (counts those dropped).
    pub fn allow_have(&mut self, peer: &PeerId, now: Instant) -> bool {
        let ok = self.peers.get_mut(peer).is_some_and(|p| p.haves.take(now));
        if !ok {
            self.dropped.haves += 1;
        }
        ok
    }

    /// Notes that `peer` announced release `id` whole (bounded).
    pub fn announced(&mut self, peer: &PeerId, id: ReleaseId) {
        if let Some(p) = self.peers.get_mut(peer)
            && p.announced.len() < MAX_ANNOUNCED_PER_PEER
        {
            p.announced.insert(id);
        }
    }

    /// Counts one more malformed frame from `peer`; returns how many so far
    /// (0 for a peer not in the book).
    pub fn strike(&mut self, peer: &PeerId) -> u64 {
        self.peers.get_mut(peer).map_or(0, |p| {
            p.strikes += 1;
            p.strikes
        })
    }

    /// Bans `peer` for [`BAN_TIME`]: its book entry goes (unless given
    /// with `--peer`). Returns whether it was not banned yet, and the peer
    /// whose ban made room for it, if the list was full (to accept again).
    pub fn ban(&mut self, peer: PeerId, reason: &str, now: Instant) -> (bool, Option<PeerId>) {
        let was = self.is_banned(&peer, now);
        if self.peers.get(&peer).is_some_and(|p| !p.permanent()) {
            self.peers.remove(&peer);
        } else if let Some(p) = self.peers.get_mut(&peer) {
            p.announced.clear();
        }
        let mut evicted = None;
        if !self.bans.contains_key(&peer) && self.bans.len() >= MAX_BANS {
            evicted = (self.bans.iter())
                .min_by_key(|(_, t)| **t)
                .map(|(id, _)| *id);
            if let Some(e) = evicted {
                self.bans.remove(&e);
            }
        }
        self.bans.insert(peer, now + BAN_TIME);
        self.record(peer, Mark::Banned, reason, now);
        (!was, evicted)
    }

    /// Bans whose time is up: the peers to accept again.
    pub fn expired_bans(&mut self, now: Instant) -> Vec<PeerId> {
        let out: Vec<PeerId> = (self.bans.iter())
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &out {
            self.bans.remove(id);
        }
        out
    }

    /// Peers banned at `now`.
    pub fn banned(&self, now: Instant) -> usize {
        self.bans.values().filter(|t| **t > now).count()
    }

    /// Whether `peer` is banned.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.bans.get(peer).is_some_and(|t| *t > now)
    }

    /// Keeps what `peer` did for `status`: the same mark and reason again
    /// counts up; the newest [`MAX_RECORDS`] are kept. Returns whether it
    /// is new (worth a warning in the log).
    pub fn record(&mut self, peer: PeerId, mark: Mark, reason: &str, now: Instant) -> bool {
        match mark {
            Mark::Closed => self.dropped.malformed_frames += 1,
            Mark::Refused => self.dropped.releases_refused += 1,
            _ => {}
        }
        if let Some(i) = (self.records.iter())
            .position(|r| r.peer == peer && r.mark == mark && r.reason == reason)
        {
            let mut r = self.records.remove(i).expect("found");
            r.count += 1;
            r.last = now;
            self.records.push_front(r);
            return false;
        }
        self.records.push_front(Record {
            peer,
            mark,
            reason: reason.to_owned(),
            count: 1,
            last: now,
        });
        self.records.truncate(MAX_RECORDS);
        true
    }

    /// What peers did wrong, newest first.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }
}

impl Peer {
    fn newest_seen(&self) -> Option<Instant> {
        self.addrs.iter().filter_map(|(_, s)| *s).max()
    }
}

/// Wait before the `failures`-th next dial.
pub fn backoff(failures: u32) -> Duration {
    DIAL_BASE
        .saturating_mul(1 << failures.min(10))
        .min(DIAL_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> Multiaddr {
        format!("/ip4/10.0.{}.{}/tcp/4001", i / 250, i % 250 + 1)
            .parse()
            .unwrap()
    }

    #[test]
    fn the_book_is_capped_and_evicts_the_least_worth_keeping() {
        let t = Instant::now();
        let mut b = PeerBook::new(t);
        let connected: Vec<PeerId> = (0..MAX_PEERS).map(|_| PeerId::random()).collect();
        for (i, p) in connected.iter().enumerate() {
            assert!(b.found(*p, &[addr(i as u32)], "mdns", false, t));
        }
        assert_eq!(b.len(), MAX_PEERS);
        // A --peer entry is never evicted; a dead one is.
        let flag = connected[1];
        b.found(flag, &[addr(1)], "peer-flag", true, t);
        b.dial_failed(&connected[0], t);
        let newcomer = PeerId::random();
        assert!(b.found(newcomer, &[addr(999)], "mdns", false, t));
        assert!(b.get(&connected[0]).is_none());
        assert_eq!(b.len(), MAX_PEERS);
        // With every entry connected, newcomers are refused.
        let all: Vec<PeerId> = b.iter().map(|(id, _)| *id).collect();
        for p in &all {
            b.connected_to(*p, None, t);
        }
        assert!(!b.found(PeerId::random(), &[addr(5)], "mdns", false, t));
        assert!(!b.connected_to(PeerId::random(), None, t));
        assert_eq!(b.dropped.peers_refused, 2);
    }

    #[test]
    fn newest_addresses_are_kept_and_old_ones_expire() {
        let t = Instant::now();
        let mut b = PeerBook::new(t);
        let p = PeerId::random();
        for i in 0..20 {
            b.found(p, &[addr(i)], "mdns", false, t);
        }
        let kept: Vec<Multiaddr> = b.get(&p).unwrap().addrs().cloned().collect();
        assert_eq!(kept.len(), MAX_ADDRS);
        assert_eq!(kept[0], addr(19), "newest first");
        assert!(!kept.contains(&addr(0)), "oldest dropped");
        // Seen again: moves to the front, not duplicated.
        assert!(!b.found(p, &[addr(15)], "mdns", false, t));
        assert_eq!(b.get(&p).unwrap().addrs().next(), Some(&addr(15)));
        // Past the TTL the peer has no address left and is forgotten.
        let later = t + ADDR_TTL + Duration::from_secs(1);
        assert!(b.due(later).is_empty());
        assert!(b.get(&p).is_none());
        // A --peer address never expires.
        let q = PeerId::random();
        b.found(q, &[addr(1)], "peer-flag", true, t);
        assert_eq!(b.due(later).len(), 1);
    }

    #[test]
    fn dials_back_off_are_rate_limited_and_dead_peers_are_forgotten() {
        let t = Instant::now();
        let mut b = PeerBook::new(t);
        let peers: Vec<PeerId> = (0..50).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            b.found(*p, &[addr(i as u32)], "mdns", false, t);
        }
        // At most DIALS_PER_SEC at once, then as tokens come back.
        assert_eq!(b.due(t).len(), DIALS_PER_SEC as usize);
        assert_eq!(b.due(t).len(), 0);
        let n = b.due(t + Duration::from_millis(500)).len();
        assert!((4..=6).contains(&n), "{n} dials after half a second");
        // Backoff grows, and is capped.
        assert_eq!(backoff(1), DIAL_BASE * 2);
        assert_eq!(backoff(30), DIAL_MAX);
        // A peer whose dials keep failing is forgotten.
        let p = peers[0];
        for _ in 0..FORGET_AFTER {
            b.dial_failed(&p, t);
        }
        assert!(b.get(&p).is_none());
        assert!(b.dropped.peers_forgotten >= 1);
    }

    #[test]
    fn floods_are_rate_limited_and_counted() {
        let t = Instant::now();
        let mut b = PeerBook::new(t);
        let p = PeerId::random();
        b.connected_to(p, None, t);
        let ok = (0..100).filter(|_| b.allow_announce(&p, t)).count();
        assert_eq!(ok, 16, "a burst");
        assert_eq!(b.dropped.announcements, 84);
        assert!(b.allow_announce(&p, t + Duration::from_secs(1)));
        let ok = (0..1000).filter(|_| b.allow_have(&p, t)).count();
        assert_eq!(ok, 40);
        // Strangers (not in the book) get nothing.
        assert!(!b.allow_have(&PeerId::random(), t));
    }

    #[test]
    fn bans_end_and_records_count_up() {
        let t = Instant::now();
        let mut b = PeerBook::new(t);
        let p = PeerId::random();
        assert!(b.found(p, &[addr(1)], "mdns", false, t));
        assert!(b.ban(p, "sent data that does not match its hash", t).0);
        assert!(!b.ban(p, "sent data that does not match its hash", t).0);
        assert!(b.is_banned(&p, t));
        assert!(b.iter().next().is_none(), "a banned peer leaves the book");
        assert!(!b.allow_announce(&p, t));
        assert_eq!(b.records().next().unwrap().count, 2);
        assert!(b.expired_bans(t + BAN_TIME / 2).is_empty());
        assert_eq!(b.expired_bans(t + BAN_TIME), vec![p]);
        assert!(!b.is_banned(&p, t + BAN_TIME));
        // Banned strangers take no room in the book, and the ban list is
        // bounded: the ban ending soonest makes room.
        let honest: Vec<PeerId> = (0..MAX_PEERS).map(|_| PeerId::random()).collect();
        for (i, h) in honest.iter().enumerate() {
            b.found(*h, &[addr(i as u32)], "mdns", false, t);
        }
        let first = PeerId::random();
        b.ban(first, "malformed", t);
        for i in 0..MAX_BANS {
            let (_, evicted) = b.ban(
                PeerId::random(),
                "malformed",
                t + Duration::from_millis(1 + i as u64),
            );
            if i + 1 == MAX_BANS {
                assert_eq!(evicted, Some(first));
            } else {
                assert_eq!(evicted, None);
            }
        }
        assert_eq!(b.len(), MAX_PEERS, "honest peers all kept");
        for i in 0..MAX_RECORDS + 10 {
            b.record(PeerId::random(), Mark::Closed, &format!("frame {i}"), t);
        }
        assert_eq!(b.records().count(), MAX_RECORDS);
        assert_eq!(b.dropped.malformed_frames, MAX_RECORDS as u64 + 10);
    }
}
