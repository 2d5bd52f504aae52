//! Which pieces to ask which peer for: the piece picker of one fetch, and
//! the one place that knows its sources (whole or partial, resting, set
//! aside with a backoff that doubles, or never again after bad data).
//!
//! Modelled on BitTorrent's and Kraken's schedulers:
//! - **every peer that has a piece** is a source; peers that hold the
//!   release whole count for every piece, peers still fetching it for the
//!   pieces their last `Have` listed;
//! - **a small pipeline per peer**: up to [`depth`] requests in flight,
//!   more for peers that have proved fast (about a tenth of a second of their
//!   measured rate), so no peer idles for a round trip between answers;
//! - **rarest first**, then pieces fewest other followers are fetching
//!   right now, ties in a per-fetch random order: followers of one seeder
//!   ask it for different pieces and can then feed each other;
//! - **small pieces together**: a request takes the picked piece and the
//!   next wanted ones until [`MAX_BATCH_BYTES`], so a build of many small
//!   files moves in few requests, compressed together;
//! - **endgame**: once every missing piece has been asked for, those whose
//!   every request is late are asked again of a peer with no late request
//!   of its own (a silent peer must not take them from one that answers),
//!   and the first good answer wins.
//!
//! A piece asked for stays asked until its answer is verified (then held)
//! or fails (then it may be asked again). Pure logic: no I/O, no clock
//! (callers pass `now`), tested on its own below.

use std::collections::{HashMap, HashSet};
use std::hash::Hash as StdHash;
use std::time::Instant;

use lanseed_protocol::pieces::Bitfield;
use lanseed_protocol::wire::{MAX_BATCH_BYTES, MAX_BATCH_PIECES};
use libp2p::PeerId;

/// Most requests in flight to one peer.
pub const MAX_DEPTH: usize = 8;
/// Requests in flight to a peer not yet measured.
const START_DEPTH: usize = 2;
/// How much of a peer's measured rate to keep in flight.
const PIPELINE_TIME: f64 = 0.1;
/// How far past the picked piece a request looks for more small ones.
const BATCH_SCAN: u32 = 8192;
/// How long a fetch with nothing in flight waits at least on the followers
/// that hold or fetch what it lacks before asking a whole source for it
/// too (longer when the sources' measured rate says that what followers
/// fetch from them takes longer to come, up to [`MAX_PATIENCE`]).
pub const SOURCE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// The most a fetch waits on followers' claims, however slow its sources.
pub const MAX_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A `Have`'s bitfields as they came: held, fetching.
type Said = (Vec<u8>, Vec<u8>);

struct PeerState {
    /// `None`: holds every piece.
    bits: Option<Bitfield>,
    /// Its last `Have` as it came, kept until the pieces are numbered
    /// ([`Sched::open`]).
    said: Option<Said>,
    /// What it said it is fetching now (a peer still fetching).
    fetching: Option<Bitfield>,
    inflight: usize,
    /// Measured bytes per second of its answers (0 until measured).
    rate: f64,
    last_answer: Option<Instant>,
    resting_until: Option<Instant>,
}

impl PeerState {
    fn new(bits: Option<Bitfield>) -> Self {
        PeerState {
            bits,
            said: None,
            fetching: None,
            inflight: 0,
            rate: 0.0,
            last_answer: None,
            resting_until: None,
        }
    }
}

struct Asked {
    peer: PeerId,
    pieces: Vec<u32>,
    bytes: u64,
    sent: Instant,
}

/// Most peers remembered as set aside, banned or lacking, per fetch.
const MAX_REMEMBERED: usize = 4096;

/// Most bytes of a `Have` bitfield kept from a peer before the pieces are
/// numbered (2^19 pieces: half a terabyte).
const MAX_SAID_BYTES: usize = 1 << 16;

/// The piece picker of one fetch, and the one place that knows its
/// sources: who may be asked (whole, or holding which pieces), who rests,
/// who was set aside and until when, who sent bad data. It exists from
/// the fetch's start; the per-piece state comes with the manifest
/// ([`Sched::open`]). `K` names a request.
pub struct Sched<K> {
    /// Whether the pieces are numbered (the manifest is in).
    opened: bool,
    have: Bitfield,
    /// Requests outstanding per piece (more than one only in the endgame).
    asked: Vec<u8>,
    /// Pieces whose answer arrived and is being verified: never asked
    /// again meanwhile.
    verifying: Vec<bool>,
    /// Per piece: peers still fetching that list it.
    avail: Vec<u16>,
    /// Per piece: peers that said they are fetching it now.
    elsewhere: Vec<u16>,
    peers: HashMap<PeerId, PeerState>,
    /// Peers that sent bad data: never asked again.
    bad: HashSet<PeerId>,
    /// Peers set aside (silent, or lying): until when, and how often.
    aside: HashMap<PeerId, (Instant, u32)>,
    /// Times each peer lacked what its `Have` listed.
    lacked: HashMap<PeerId, u32>,
    requests: HashMap<K, Asked>,
    /// When a request was last sent or answered.
    last_activity: Option<Instant>,
    /// Whether any request was sent.
    asked_any: bool,
    /// Followers whose word on what they fetch is no longer believed.
    unbelieved: HashSet<PeerId>,
    seed: u64,
}

/// How long a peer set aside `strikes` times stays aside: 3 s, doubling,
/// at most 5 minutes.
pub fn aside_time(strikes: u32) -> std::time::Duration {
    std::time::Duration::from_secs(3)
        .saturating_mul(1 << strikes.saturating_sub(1).min(7))
        .min(std::time::Duration::from_secs(300))
}

/// Requests a peer may have in flight, from its measured rate.
pub fn depth(rate: f64) -> usize {
    let per_request = MAX_BATCH_BYTES as f64;
    (1 + (rate * PIPELINE_TIME / per_request).ceil() as usize).clamp(START_DEPTH, MAX_DEPTH)
}

/// Adds (or takes) one per piece set in `bits`.
fn count(counts: &mut [u16], bits: &Bitfield, add: bool) {
    for n in 0..bits.len() {
        if bits.get(n) {
            let c = &mut counts[n as usize];
            *c = if add {
                c.saturating_add(1)
            } else {
                c.saturating_sub(1)
            };
        }
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: a cheap, well-spread order per fetch.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

impl<K: Copy + Eq + StdHash> Sched<K> {
    /// A picker whose pieces are not numbered yet; `seed` orders ties
    /// (random per fetch).
    pub fn new(seed: u64) -> Self {
        Sched {
            opened: false,
            have: Bitfield::new(0),
            asked: Vec::new(),
            verifying: Vec::new(),
            avail: Vec::new(),
            elsewhere: Vec::new(),
            peers: HashMap::new(),
            bad: HashSet::new(),
            aside: HashMap::new(),
            lacked: HashMap::new(),
            requests: HashMap::new(),
            last_activity: None,
            asked_any: false,
            unbelieved: HashSet::new(),
            seed,
        }
    }

    /// The pieces are numbered: `have.len()` of them, `have` already
    /// held. What peers said in their `Have`s so far is read against them.
    pub fn open(&mut self, have: Bitfield) {
        let n = have.len() as usize;
        self.have = have;
        self.asked = vec![0; n];
        self.verifying = vec![false; n];
        self.avail = vec![0; n];
        self.elsewhere = vec![0; n];
        self.opened = true;
        let said: Vec<(PeerId, Said)> = (self.peers.iter_mut())
            .filter_map(|(id, p)| Some((*id, p.said.take()?)))
            .collect();
        for (peer, (bits, fetching)) in said {
            let len = self.have.len();
            match Bitfield::from_bytes(&bits, len) {
                Some(b) => self.set_bits(peer, b, Bitfield::from_bytes(&fetching, len)),
                None => {
                    self.peers.remove(&peer);
                }
            }
        }
    }

    /// A peer that announced the release whole; ignored when it sent bad
    /// data, or is set aside at `now`.
    pub fn add_whole(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.bad.contains(&peer) || self.aside.get(&peer).is_some_and(|(t, _)| *t > now) {
            return false;
        }
        // Patience with followers counts from the first source.
        self.last_activity.get_or_insert(now);
        self.set_full(peer);
        true
    }

    /// A peer still fetching, holding the pieces in `bits` and fetching
    /// those in `fetching` (raw `Have` bitfields); ignored when it sent
    /// bad data or is whole, and for bitfields longer than any the bundle
    /// can have.
    pub fn add_partial(&mut self, peer: PeerId, bits: Vec<u8>, fetching: Vec<u8>) -> bool {
        if self.bad.contains(&peer) || self.is_whole(&peer) {
            return false;
        }
        let max = if self.opened {
            (self.have.len() as usize).div_ceil(8)
        } else {
            MAX_SAID_BYTES
        };
        if bits.len() > max || fetching.len() > max {
            return false;
        }
        if self.opened {
            let len = self.have.len();
            let Some(b) = Bitfield::from_bytes(&bits, len) else {
                return false;
            };
            self.set_bits(peer, b, Bitfield::from_bytes(&fetching, len));
        } else {
            let p =
                (self.peers.entry(peer)).or_insert_with(|| PeerState::new(Some(Bitfield::new(0))));
            p.said = Some((bits, fetching));
        }
        true
    }

    /// Whether `peer` holds every piece.
    pub fn is_whole(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.bits.is_none())
    }

    /// How many peers may be asked (now or later).
    pub fn providers(&self) -> usize {
        self.peers.len()
    }

    /// Never asks `peer` again (it sent bad data).
    pub fn ban(&mut self, peer: PeerId) {
        self.remove_peer(&peer);
        if self.bad.len() >= MAX_REMEMBERED {
            self.bad.clear(); // the node's own bans still hold them
        }
        self.bad.insert(peer);
    }

    /// Sets `peer` aside (it did not answer, or left): an announcement
    /// from it brings it back once the returned time is over.
    pub fn set_aside(&mut self, peer: PeerId, now: Instant) -> std::time::Duration {
        self.remove_peer(&peer);
        // Peers that come and go under fresh ids must not grow these
        // without end: past the bound, those whose time is over go, and
        // if that is not enough, all (a forgotten strike costs one more
        // silent request).
        if self.aside.len() >= MAX_REMEMBERED {
            self.aside.retain(|_, (t, _)| *t > now);
            if self.aside.len() >= MAX_REMEMBERED {
                self.aside.clear();
            }
        }
        let strikes = self.aside.get(&peer).map_or(0, |(_, n)| *n) + 1;
        let wait = aside_time(strikes);
        self.aside.insert(peer, (now + wait, strikes));
        wait
    }

    /// Counts one more time `peer` lacked what it listed; returns how many
    /// times so far.
    pub fn lacked(&mut self, peer: PeerId) -> u32 {
        if self.lacked.len() >= MAX_REMEMBERED && !self.lacked.contains_key(&peer) {
            self.lacked.clear();
        }
        let n = self.lacked.entry(peer).or_default();
        *n += 1;
        *n
    }

    /// Peers that may be asked for the manifest at `now`: not resting,
    /// those holding the release whole first.
    pub fn askable(&self, now: Instant) -> impl Iterator<Item = PeerId> + '_ {
        let ready = move |p: &PeerState| p.resting_until.is_none_or(|t| t <= now);
        let whole = (self.peers.iter()).filter(move |(_, p)| p.bits.is_none() && ready(p));
        let partial = (self.peers.iter()).filter(move |(_, p)| p.bits.is_some() && ready(p));
        whole.chain(partial).map(|(id, _)| *id)
    }

    /// The pieces held.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every piece is held.
    pub fn complete(&self) -> bool {
        self.have.is_full()
    }

    /// Sources: peers that can be asked for something now or later.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// `peer` holds every piece.
    pub fn set_full(&mut self, peer: PeerId) {
        match self.peers.get_mut(&peer) {
            Some(p) => {
                if let Some(old) = p.bits.take() {
                    count(&mut self.avail, &old, false);
                }
                if let Some(f) = p.fetching.take() {
                    count(&mut self.elsewhere, &f, false);
                }
            }
            None => {
                self.peers.insert(peer, PeerState::new(None));
            }
        }
    }

    /// `peer` holds the pieces in `bits` and is fetching those in
    /// `fetching` (a `Have`). A peer once whole stays whole; bitfields of
    /// the wrong length are ignored.
    pub fn set_bits(&mut self, peer: PeerId, bits: Bitfield, fetching: Option<Bitfield>) {
        if bits.len() != self.have.len() {
            return;
        }
        if bits.is_full() {
            return self.set_full(peer);
        }
        let fetching = fetching
            .filter(|f| f.len() == self.have.len())
            .filter(|_| !self.unbelieved.contains(&peer));
        let state = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerState::new(Some(Bitfield::new(bits.len()))));
        let Some(old) = state.bits.replace(bits.clone()) else {
            state.bits = None;
            return;
        };
        let old_fetching = std::mem::replace(&mut state.fetching, fetching.clone());
        count(&mut self.avail, &old, false);
        count(&mut self.avail, &bits, true);
        if let Some(f) = old_fetching {
            count(&mut self.elsewhere, &f, false);
        }
        if let Some(f) = fetching {
            count(&mut self.elsewhere, &f, true);
        }
    }

    /// Stops asking `peer` (gone, banned, or set aside). Its requests in
    /// flight are forgotten: their pieces may be asked of others at once.
    pub fn remove_peer(&mut self, peer: &PeerId) {
        let Some(p) = self.peers.remove(peer) else {
            return;
        };
        if let Some(b) = p.bits {
            count(&mut self.avail, &b, false);
        }
        if let Some(f) = p.fetching {
            count(&mut self.elsewhere, &f, false);
        }
        let gone: Vec<K> = self
            .requests
            .iter()
            .filter(|(_, a)| a.peer == *peer)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(a) = self.requests.remove(&k) {
                self.unask(&a.pieces);
            }
        }
    }

    /// Do not ask `peer` anything until `until` (it said it is busy, or
    /// lacked something).
    pub fn rest(&mut self, peer: &PeerId, until: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.resting_until = Some(until);
        }
    }

    fn unask(&mut self, pieces: &[u32]) {
        for &n in pieces {
            self.asked[n as usize] = self.asked[n as usize].saturating_sub(1);
        }
    }

    fn peer_has(bits: &Option<Bitfield>, n: u32) -> bool {
        bits.as_ref().is_none_or(|b| b.get(n))
    }

    /// Whether every missing piece has been asked for at least once.
    fn endgame(&self) -> bool {
        (0..self.have.len()).all(|n| self.have.get(n) || self.asked[n as usize] > 0)
    }

    /// The next request for `peer`, if its pipeline has room and it has
    /// something wanted: piece numbers, in order, at most
    /// [`MAX_BATCH_BYTES`] in all. `len` gives a piece's length.
    pub fn pick(&self, peer: &PeerId, now: Instant, len: impl Fn(u32) -> u64) -> Option<Vec<u32>> {
        let p = self.peers.get(peer)?;
        // Peer-first: next to other followers, a whole source is asked
        // only for pieces none of them holds or is fetching, one request
        // at a time, so that it sends each piece about once, its queue
        // stays short, and the followers feed each other the rest; unless
        // this fetch has been left with nothing to do (the followers it
        // waits on are slow, or lie about what they fetch).
        let source_only = p.bits.is_none() && self.has_followers() && !self.starved(now, &len);
        // A peer yet to answer anything gets one request: a silent one
        // then holds up one request's pieces, not a pipeline's.
        let room = if p.last_answer.is_some() && !source_only {
            depth(p.rate)
        } else {
            1
        };
        if p.resting_until.is_some_and(|t| t > now) || p.inflight >= room {
            return None;
        }
        // In the endgame, pieces asked once may be asked again, of another
        // peer, when their request is late.
        let mut endgame: Option<HashSet<u32>> = None;
        let wanted = |n: u32, endgame: &Option<HashSet<u32>>| {
            !self.have.get(n)
                && !self.verifying[n as usize]
                && Self::peer_has(&p.bits, n)
                && (!source_only
                    || (self.avail[n as usize] == 0 && self.elsewhere[n as usize] == 0))
                && match endgame {
                    None => self.asked[n as usize] == 0,
                    Some(late) => late.contains(&n),
                }
        };
        let mut best = self.rarest(|n| wanted(n, &endgame));
        if best.is_none() && self.endgame() {
            endgame = Some(self.late_pieces(peer, now));
            best = self.rarest(|n| wanted(n, &endgame));
        }
        let first = best?;
        let mut pieces = vec![first];
        let mut bytes = len(first);
        if !self.asked_any {
            // The first request of a fetch goes out before any follower's
            // `Have` says what it fetches: one piece, picked at random
            // among the rarest, is rarely the one another follower just
            // asked a source for (a batch filled from it would overlap
            // theirs, and the source would send those pieces twice).
            return Some(pieces);
        }
        // Fill up with the wanted pieces after it, then before it: small
        // files next to each other in the manifest travel together.
        let end = self.have.len().min(first.saturating_add(BATCH_SCAN));
        let after = (first + 1..end).map(Some);
        let before = (first.saturating_sub(BATCH_SCAN)..first).rev().map(Some);
        let mut turned = false;
        for n in after.chain([None]).chain(before) {
            let Some(n) = n else {
                turned = true;
                continue;
            };
            if pieces.len() >= MAX_BATCH_PIECES || bytes >= MAX_BATCH_BYTES {
                break;
            }
            if !wanted(n, &endgame) {
                continue;
            }
            let l = len(n);
            if bytes + l > MAX_BATCH_BYTES {
                if turned {
                    break;
                }
                // Nothing more fits this way: try before it.
                continue;
            }
            pieces.push(n);
            bytes += l;
        }
        pieces.sort_unstable();
        Some(pieces)
    }

    /// Whether this fetch has nothing in flight and has neither asked nor
    /// heard anything for its patience (at least [`SOURCE_PATIENCE`]):
    /// then a whole source may be asked for pieces others hold or fetch
    /// too.
    fn starved(&self, now: Instant, len: impl Fn(u32) -> u64) -> bool {
        let Some(idle) = (self.last_activity).map(|t| now.duration_since(t)) else {
            return false;
        };
        if !self.requests.is_empty() || idle < SOURCE_PATIENCE {
            return false;
        }
        // Patience for as long as the sources take to send what followers
        // fetch and nobody holds yet, at the best rate a source answered
        // this fetch (its answers go out one after the other): on a slow
        // link a source's queue takes longer than SOURCE_PATIENCE.
        let rate = (self.peers.values())
            .filter(|p| p.bits.is_none())
            .map(|p| p.rate)
            .fold(0.0, f64::max);
        if rate <= 0.0 {
            return true;
        }
        let waiting: u64 = (0..self.have.len())
            .filter(|&n| {
                !self.have.get(n) && self.elsewhere[n as usize] > 0 && self.avail[n as usize] == 0
            })
            .map(&len)
            .sum();
        let patience = std::time::Duration::from_secs_f64(waiting as f64 / rate)
            .clamp(SOURCE_PATIENCE, MAX_PATIENCE);
        idle >= patience
    }

    /// What followers say they fetch now is not believed again during
    /// this fetch: this fetch starved waiting on it.
    fn disbelieve_claims(&mut self) {
        let claiming: Vec<PeerId> = (self.peers.iter())
            .filter(|(_, p)| p.fetching.is_some())
            .map(|(id, _)| *id)
            .collect();
        if self.unbelieved.len() + claiming.len() > MAX_REMEMBERED {
            self.unbelieved.clear();
        }
        for id in claiming {
            if let Some(f) = self.peers.get_mut(&id).and_then(|p| p.fetching.take()) {
                count(&mut self.elsewhere, &f, false);
            }
            self.unbelieved.insert(id);
        }
    }

    /// Whether some source is another follower (holds part of the bundle).
    fn has_followers(&self) -> bool {
        self.peers.values().any(|p| p.bits.is_some())
    }

    /// Peers that have never answered, whose oldest request in flight
    /// has waited longer than `after`.
    pub fn silent(&self, now: Instant, after: std::time::Duration) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = (self.requests.values())
            .filter(|a| now.duration_since(a.sent) > after)
            .filter(|a| (self.peers.get(&a.peer)).is_some_and(|p| p.last_answer.is_none()))
            .map(|a| a.peer)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether a request is late: older than four times what its peer's
    /// measured rate says it should take (a quarter second at least; half
    /// a second for a peer not measured yet).
    fn is_late(&self, a: &Asked, now: Instant) -> bool {
        let rate = self.peers.get(&a.peer).map_or(0.0, |p| p.rate);
        let due = if rate > 0.0 {
            (4.0 * a.bytes as f64 / rate).max(0.25)
        } else {
            0.5
        };
        now.duration_since(a.sent).as_secs_f64() > due
    }

    /// The pieces `peer` may ask again in the endgame: those whose every
    /// request is late (a capped seeder's queue is not late, and
    /// duplicating it would only waste its upload), not asked of `peer`
    /// already; none when `peer` has a late request of its own (a peer
    /// that is slow, or silent, must not take them away from one that
    /// answers).
    fn late_pieces(&self, peer: &PeerId, now: Instant) -> HashSet<u32> {
        let mut late = HashSet::new();
        let mut on_time = HashSet::new();
        for a in self.requests.values() {
            let is_late = self.is_late(a, now);
            if a.peer == *peer {
                if is_late {
                    return HashSet::new();
                }
                on_time.extend(a.pieces.iter().copied());
            } else if is_late {
                late.extend(a.pieces.iter().copied());
            } else {
                on_time.extend(a.pieces.iter().copied());
            }
        }
        late.retain(|n| !on_time.contains(n));
        late
    }

    /// The wanted piece with the fewest holders; among those, one fewest
    /// peers are fetching right now (their `Have` says so); ties in this
    /// fetch's random order. Followers of one seeder thus ask it for
    /// different pieces, and can then feed each other.
    fn rarest(&self, wanted: impl Fn(u32) -> bool) -> Option<u32> {
        (0..self.have.len())
            .filter(|&n| wanted(n))
            .min_by_key(|&n| {
                (
                    self.avail[n as usize],
                    self.elsewhere[n as usize],
                    mix(u64::from(n) ^ self.seed),
                )
            })
    }

    /// The pieces asked for and not yet held: what a `Have` says this
    /// node is fetching.
    pub fn fetching(&self) -> Bitfield {
        let mut b = Bitfield::new(self.have.len());
        for n in 0..self.have.len() {
            if !self.have.get(n) && (self.asked[n as usize] > 0 || self.verifying[n as usize]) {
                b.set(n);
            }
        }
        b
    }

    /// Records that `pieces` were asked of `peer` as request `key`.
    pub fn sent(&mut self, key: K, peer: PeerId, pieces: Vec<u32>, bytes: u64, now: Instant) {
        for &n in &pieces {
            self.asked[n as usize] = self.asked[n as usize].saturating_add(1);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.inflight += 1;
        }
        let claimed = |n: &u32| self.avail[*n as usize] > 0 || self.elsewhere[*n as usize] > 0;
        if self.is_whole(&peer) && self.has_followers() && pieces.iter().any(claimed) {
            // Starved: asked a source for what a follower holds or fetches.
            self.disbelieve_claims();
        }
        self.last_activity = Some(now);
        self.asked_any = true;
        self.requests.insert(
            key,
            Asked {
                peer,
                pieces,
                bytes,
                sent: now,
            },
        );
    }

    /// Request `key` was answered with `wire_bytes` (or failed, with 0):
    /// returns its peer and pieces, which stay asked until
    /// [`Sched::verified`] or [`Sched::failed`]. `None` for requests it
    /// no longer tracks (its peer was removed).
    pub fn answered(
        &mut self,
        key: &K,
        wire_bytes: u64,
        now: Instant,
    ) -> Option<(PeerId, Vec<u32>)> {
        let a = self.requests.remove(key)?;
        self.last_activity = Some(now);
        if wire_bytes > 0 {
            for &n in &a.pieces {
                self.verifying[n as usize] = true;
            }
        }
        if let Some(p) = self.peers.get_mut(&a.peer) {
            p.inflight = p.inflight.saturating_sub(1);
            if wire_bytes > 0 {
                let since = p.last_answer.map_or(a.sent, |t| t.max(a.sent));
                let secs = now.duration_since(since).as_secs_f64().max(1e-4);
                let sample = a.bytes.max(wire_bytes) as f64 / secs;
                p.rate = if p.rate == 0.0 {
                    sample
                } else {
                    0.7 * p.rate + 0.3 * sample
                };
                p.last_answer = Some(now);
            }
        }
        Some((a.peer, a.pieces))
    }

    /// `pieces` were verified and written: held now.
    pub fn verified(&mut self, pieces: &[u32]) {
        for &n in pieces {
            self.have.set(n);
            self.asked[n as usize] = 0;
            self.verifying[n as usize] = false;
        }
    }

    /// The answer carrying `pieces` was no good: they may be asked again.
    pub fn failed(&mut self, pieces: &[u32]) {
        for &n in pieces {
            self.verifying[n as usize] = false;
        }
        let missing: Vec<u32> = pieces
            .iter()
            .copied()
            .filter(|&n| !self.have.get(n))
            .collect();
        self.unask(&missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    impl<K: Copy + Eq + StdHash> Sched<K> {
        fn opened(have: Bitfield, seed: u64) -> Self {
            let mut s = Sched::new(seed);
            s.open(have);
            s
        }
    }

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn small_pieces_are_asked_together_big_ones_alone() {
        // 4 big pieces, then 600 small ones of 4 KiB.
        let len = |n: u32| if n < 4 { MIB } else { 4096 };
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(604), 1);
        let a = peer();
        s.set_full(a);
        let now = Instant::now();
        let mut seen = Vec::new();
        let mut key = 0;
        while let Some(pieces) = s.pick(&a, now, len) {
            let bytes: u64 = pieces.iter().map(|&n| len(n)).sum();
            assert!(bytes <= MAX_BATCH_BYTES);
            seen.extend(pieces.iter().copied());
            s.sent(key, a, pieces, bytes, now);
            key += 1;
        }
        assert_eq!(key, 1, "one request to a peer yet to answer");
        for k in 0..key {
            let (_, p) = s.answered(&k, 1, now).unwrap();
            s.verified(&p);
        }
        while let Some(pieces) = s.pick(&a, now, len) {
            let bytes: u64 = pieces.iter().map(|&n| len(n)).sum();
            seen.extend(pieces.iter().copied());
            s.sent(key, a, pieces, bytes, now);
            let (_, p) = s.answered(&key, 1, now).unwrap();
            s.verified(&p);
            key += 1;
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 604);
        assert!(s.complete());
        // 4 big requests, and 600 × 4 KiB in a few more.
        assert!(key <= 4 + 4, "{key} requests");
    }

    #[test]
    fn rarest_pieces_first_and_only_from_peers_that_have_them() {
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(10), 7);
        let (full, part1, part2) = (peer(), peer(), peer());
        s.set_full(full);
        let mut b = Bitfield::new(10);
        (0..5).for_each(|n| b.set(n));
        s.set_bits(part1, b.clone(), None);
        s.set_bits(part2, b, None);
        let now = Instant::now();
        // Pieces 5..10 are held by the full peer alone: asked of it first.
        let first = s.pick(&full, now, |_| MIB).unwrap();
        assert!(first.iter().all(|&n| n >= 5), "{first:?}");
        // Partial peers are only asked for what they listed.
        let p = s.pick(&part1, now, |_| MIB).unwrap();
        assert!(p.iter().all(|&n| n < 5));
        // Removing a peer forgets what it listed.
        s.remove_peer(&part1);
        s.remove_peer(&part2);
        assert!(s.avail.iter().all(|&a| a == 0));
        // What others are fetching is avoided when there is a choice.
        let other = peer();
        let mut fetching = Bitfield::new(10);
        (0..10).filter(|&n| n != 7).for_each(|n| fetching.set(n));
        s.set_bits(other, Bitfield::new(10), Some(fetching));
        assert_eq!(s.pick(&full, now, |_| MIB).unwrap()[0], 7);
        s.remove_peer(&other);
        assert!(s.elsewhere.iter().all(|&a| a == 0));
        assert_eq!(s.peers().count(), 1);
    }

    #[test]
    fn a_source_is_asked_only_for_what_no_follower_holds_or_fetches() {
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(8), 3);
        let (source, follower) = (peer(), peer());
        s.set_full(source);
        // The follower holds 0..3 and is fetching 3..6.
        let (mut held, mut fetching) = (Bitfield::new(8), Bitfield::new(8));
        (0..3).for_each(|n| held.set(n));
        (3..6).for_each(|n| fetching.set(n));
        s.set_bits(follower, held, Some(fetching));
        let t0 = Instant::now();
        let mut key = 0;
        let mut from_source = Vec::new();
        while let Some(p) = s.pick(&source, t0, |_| MIB) {
            from_source.extend(p.iter().copied());
            s.sent(key, source, p, MIB, t0);
            key += 1;
            let (_, p) = s.answered(&(key - 1), MIB, t0).unwrap();
            s.verified(&p);
        }
        from_source.sort_unstable();
        assert_eq!(
            from_source,
            [6, 7],
            "only what the follower neither holds nor fetches"
        );
        // What the follower holds is asked of it.
        let p = s.pick(&follower, t0, |_| MIB).unwrap();
        assert!(p.iter().all(|&n| n < 3), "{p:?}");
        s.sent(key, follower, p.clone(), MIB, t0);
        // Still nothing more from the source while that is in flight...
        let later = t0 + SOURCE_PATIENCE * 4;
        assert_eq!(s.pick(&source, later, |_| MIB), None);
        // ...nor right after it is answered...
        s.answered(&key, MIB, later).unwrap();
        s.verified(&p);
        assert_eq!(s.pick(&source, later, |_| MIB), None);
        // ...but once the fetch has waited SOURCE_PATIENCE with nothing in
        // flight (the follower says it fetches 3..6 and never gets them),
        // the source is asked for them too.
        let starved = later + SOURCE_PATIENCE;
        let p = s.pick(&source, starved, |_| MIB).unwrap();
        assert!(p.iter().all(|&n| (3..6).contains(&n)), "{p:?}");
        s.sent(key + 1, source, p, MIB, starved);
        // The follower whose claims starved this fetch is not believed
        // any more: what it said it fetches comes from the source, one
        // request at a time; what followers hold is still asked of them.
        let (_, p) = s.answered(&(key + 1), MIB, starved).unwrap();
        s.verified(&p);
        let rest = s.pick(&source, starved, |_| MIB).unwrap();
        assert!(rest.iter().all(|&n| (3..6).contains(&n)), "{rest:?}");
        s.sent(key + 2, source, rest, MIB, starved);
        assert_eq!(s.pick(&source, starved, |_| MIB), None, "one at a time");
    }

    #[test]
    fn patience_with_followers_lasts_as_long_as_a_slow_source_needs() {
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(4), 9);
        let (source, follower) = (peer(), peer());
        let t0 = Instant::now();
        assert!(s.add_whole(source, t0));
        // The source sent this fetch 1 MiB in 4 s (a slow link).
        let p = s.pick(&source, t0, |_| MIB).unwrap();
        s.sent(0, source, p.clone(), MIB, t0);
        let t1 = t0 + Duration::from_secs(4);
        s.answered(&0, MIB, t1).unwrap();
        s.verified(&p);
        // A follower fetches the other three from it: 3 MiB, about 12 s.
        let mut fetching = Bitfield::new(4);
        (0..4).filter(|&n| n != p[0]).for_each(|n| fetching.set(n));
        s.set_bits(follower, Bitfield::new(4), Some(fetching));
        assert_eq!(s.pick(&source, t1 + SOURCE_PATIENCE, |_| MIB), None);
        assert_eq!(s.pick(&source, t1 + Duration::from_secs(11), |_| MIB), None);
        assert!(
            s.pick(&source, t1 + Duration::from_secs(13), |_| MIB)
                .is_some()
        );
    }

    #[test]
    fn a_fetch_that_found_only_claimed_pieces_asks_the_source_after_its_patience() {
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(4), 5);
        let (source, liar) = (peer(), peer());
        let t0 = Instant::now();
        assert!(s.add_whole(source, t0));
        // A follower says it fetches everything, and never holds a thing.
        let mut all = Bitfield::new(4);
        (0..4).for_each(|n| all.set(n));
        s.set_bits(liar, Bitfield::new(4), Some(all));
        assert_eq!(s.pick(&source, t0, |_| MIB), None);
        assert_eq!(s.pick(&liar, t0, |_| MIB), None);
        let starved = t0 + SOURCE_PATIENCE;
        let p = s.pick(&source, starved, |_| MIB).unwrap();
        assert_eq!(p.len(), 1);
        s.sent(0, source, p, MIB, starved);
        // Its word is not taken again in this fetch, whatever it repeats.
        let mut all = Bitfield::new(4);
        (0..4).for_each(|n| all.set(n));
        s.set_bits(liar, Bitfield::new(4), Some(all));
        assert!(s.elsewhere.iter().all(|&c| c == 0));
        let (_, p) = s.answered(&0, MIB, starved + SOURCE_PATIENCE).unwrap();
        s.verified(&p);
        assert!(
            s.pick(&source, starved + SOURCE_PATIENCE, |_| MIB)
                .is_some()
        );
    }

    #[test]
    fn followers_of_one_seeder_pick_different_pieces() {
        // Two fetches (different seeds) of 64 pieces from one full peer.
        let seeder = peer();
        let firsts: Vec<Vec<u32>> = [11u64, 12, 13, 14]
            .iter()
            .map(|&seed| {
                let mut s: Sched<u32> = Sched::opened(Bitfield::new(64), seed);
                s.set_full(seeder);
                s.pick(&seeder, Instant::now(), |_| MIB).unwrap()
            })
            .collect();
        let mut all: Vec<u32> = firsts.concat();
        all.sort_unstable();
        all.dedup();
        assert!(all.len() >= 3, "{firsts:?}");
    }

    #[test]
    fn endgame_asks_a_second_peer_and_failures_free_pieces() {
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(2), 3);
        let (a, b) = (peer(), peer());
        s.set_full(a);
        s.set_full(b);
        let t = Instant::now();
        let pa = s.pick(&a, t, |_| MIB).unwrap();
        s.sent(1, a, pa.clone(), MIB, t);
        let pb = s.pick(&b, t, |_| MIB).unwrap();
        s.sent(2, b, pb.clone(), MIB, t);
        assert_ne!(pa, pb);
        // a answers; b's request is late: endgame asks a for it too.
        let now = t + Duration::from_millis(300);
        let (_, p) = s.answered(&1, MIB, now).unwrap();
        s.verified(&p);
        assert!(s.pick(&a, now, |_| MIB).is_none(), "b is not late yet");
        let now = t + Duration::from_secs(2);
        let pa2 = s.pick(&a, now, |_| MIB).unwrap();
        assert_eq!(pa2, pb);
        s.sent(3, a, pa2, MIB, now);
        // b, whose own request is late, takes nothing.
        assert!(s.pick(&b, now, |_| MIB).is_none());
        // b's answer is bad: its piece is still asked of a (request 3).
        let (_, p) = s.answered(&2, 0, now).unwrap();
        s.failed(&p);
        assert_eq!(s.asked[pb[0] as usize], 1);
        let (_, p) = s.answered(&3, MIB, now).unwrap();
        s.verified(&p);
        assert!(s.complete());
    }

    #[test]
    fn an_honest_peer_gets_the_pieces_of_twenty_silent_ones() {
        let n = 16;
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(n), 9);
        let silent: Vec<PeerId> = (0..20).map(|_| peer()).collect();
        let honest = peer();
        for p in &silent {
            s.set_full(*p);
        }
        s.set_full(honest);
        let t0 = Instant::now();
        let mut key = 0;
        // Every peer's pipeline is filled, silent ones first.
        for p in silent.iter().chain([&honest]) {
            while let Some(pieces) = s.pick(p, t0, |_| MIB) {
                key += 1;
                s.sent(key, *p, pieces, MIB, t0);
            }
        }
        // The honest peer answers all it has; a second later, the silent
        // peers' pieces are late, and all of them go to the honest peer.
        let mut now = t0;
        for _ in 0..200 {
            now += Duration::from_millis(100);
            let mine: Vec<u32> = (s.requests.iter())
                .filter(|(_, a)| a.peer == honest)
                .map(|(k, _)| *k)
                .collect();
            for k in mine {
                let (_, p) = s.answered(&k, MIB, now).unwrap();
                s.verified(&p);
            }
            // Every peer is offered requests each round, in any order:
            // silent ones, with room in their pipeline, must not take the
            // endgame's second asks away from the one that answers.
            for p in silent.iter().chain([&honest]) {
                while let Some(pieces) = s.pick(p, now, |_| MIB) {
                    key += 1;
                    s.sent(key, *p, pieces, MIB, now);
                }
            }
            if s.complete() {
                break;
            }
        }
        assert!(s.complete(), "have {:?}", s.have);
        assert!(
            now.duration_since(t0) < Duration::from_secs(4),
            "{:?}",
            now.duration_since(t0)
        );
    }

    #[test]
    fn sources_are_known_before_the_pieces_and_read_against_them_after() {
        let t = Instant::now();
        let mut s: Sched<u32> = Sched::new(5);
        let (whole, partial, liar, silent) = (peer(), peer(), peer(), peer());
        assert!(s.add_whole(whole, t));
        // A Have before the manifest: kept as it came.
        assert!(s.add_partial(partial, vec![0b0000_0101], vec![0b0000_0010]));
        assert!(!s.add_partial(partial, vec![0; MAX_SAID_BYTES + 1], vec![]));
        assert!(s.add_whole(liar, t));
        assert!(s.add_whole(silent, t));
        assert_eq!(s.providers(), 4);
        // The manifest asks go to whole peers first, never to resting ones.
        s.rest(&whole, t + Duration::from_secs(1));
        let askable: Vec<PeerId> = s.askable(t).collect();
        assert_eq!(askable.len(), 3);
        assert_eq!(askable.last(), Some(&partial));
        // Bad data: never again; silence: back after a doubling backoff.
        s.ban(liar);
        assert!(!s.add_whole(liar, t + Duration::from_secs(3600)));
        assert_eq!(s.set_aside(silent, t), aside_time(1));
        assert!(!s.add_whole(silent, t + Duration::from_secs(1)));
        assert!(s.add_whole(silent, t + aside_time(1)));
        assert_eq!(s.set_aside(silent, t), aside_time(2));
        assert_eq!(aside_time(2), aside_time(1) * 2);
        assert_eq!(aside_time(30), Duration::from_secs(300));
        // The pieces are numbered: the partial peer holds 0 and 2.
        s.open(Bitfield::new(4));
        assert!(s.is_whole(&whole) && !s.is_whole(&partial));
        let picked = s.pick(&partial, t, |_| MIB).unwrap();
        assert!(picked.iter().all(|n| [0, 2].contains(n)), "{picked:?}");
        assert_eq!(s.providers(), 2);
        // A Have longer than the bundle's bitfield is not kept.
        assert!(!s.add_partial(partial, vec![0xff; 2], vec![]));
        assert_eq!(s.lacked(partial), 1);
        assert_eq!(s.lacked(partial), 2);
        // Fresh ids coming and going do not grow what is remembered.
        for _ in 0..MAX_REMEMBERED + 100 {
            let p = peer();
            s.set_aside(p, t);
            s.ban(peer());
            s.lacked(p);
        }
        assert!(s.aside.len() <= MAX_REMEMBERED);
        assert!(s.bad.len() <= MAX_REMEMBERED);
        assert!(s.lacked.len() <= MAX_REMEMBERED);
    }

    #[test]
    fn a_piece_being_verified_is_not_asked_again() {
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(1), 3);
        let (a, b) = (peer(), peer());
        s.set_full(a);
        s.set_full(b);
        let now = Instant::now();
        let p = s.pick(&a, now, |_| MIB).unwrap();
        s.sent(1, a, p, MIB, now);
        s.answered(&1, MIB, now).unwrap();
        assert!(s.pick(&a, now, |_| MIB).is_none());
        assert!(s.pick(&b, now, |_| MIB).is_none(), "not even in endgame");
        s.failed(&[0]);
        assert!(
            s.pick(&b, now, |_| MIB).is_some(),
            "a failed piece is wanted again"
        );
    }

    #[test]
    fn a_resting_or_removed_peer_is_not_asked() {
        let mut s: Sched<u32> = Sched::opened(Bitfield::new(4), 3);
        let a = peer();
        s.set_full(a);
        let now = Instant::now();
        s.rest(&a, now + Duration::from_secs(1));
        assert!(s.pick(&a, now, |_| MIB).is_none());
        assert!(s.pick(&a, now + Duration::from_secs(2), |_| MIB).is_some());
        let p = s.pick(&a, now, |_| MIB);
        assert!(p.is_none());
        let p = s.pick(&a, now + Duration::from_secs(2), |_| MIB).unwrap();
        s.sent(9, a, p.clone(), MIB, now);
        s.remove_peer(&a);
        assert!(
            s.asked.iter().all(|&x| x == 0),
            "removed peer's pieces are free"
        );
        assert!(s.answered(&9, MIB, now).is_none());
    }

    #[test]
    fn depth_grows_with_measured_rate() {
        assert_eq!(depth(0.0), START_DEPTH);
        assert_eq!(depth(1e6), START_DEPTH);
        assert_eq!(depth(8.0 * MIB as f64), 2);
        assert_eq!(depth(40.0 * MIB as f64), 5);
        assert_eq!(depth(1e9), MAX_DEPTH);
    }
}
