//! The server: answering peers. Who may be served now (`--max-uploads`),
//! which answers are being prepared or sent, what was served (counters for
//! `status`), and reading and packing what peers asked for, off the node's
//! event loop ([`Server`] owns that state; the node routes to it).
//!
//! A peer holds an upload slot while an answer to it is being sent, and
//! for [`LINGER`] after, so that a downloader keeps its slot between two
//! requests of its pipeline; a peer without a slot, when all are taken,
//! is told [`Response::Busy`] at once (it asks others, and this node again
//! later) rather than queued into its timeout. One peer has at most
//! [`PER_PEER`] answers in preparation: that bounds the memory answers can
//! take to `max_uploads × PER_PEER` pieces.
//!
//! Pieces are read from the store, or from the partial folder of a fetch
//! in progress (a node seeds what it has verified while it downloads).
//! Answers are compressed ([`Packed::compress`]) unless the blob is known
//! not to shrink: the first piece of a blob that did not compress marks the
//! blob, and its other pieces go as they are without trying.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanseed_protocol::Hash;
use lanseed_protocol::limits::PIECE_SIZE;
use lanseed_protocol::pieces::piece_offset;
use lanseed_protocol::wire::{Packed, Response};
use libp2p::PeerId;
use libp2p::request_response::InboundRequestId;

use super::status::UploadStatus;

use super::fetch::partial::read_piece;

/// How long a peer keeps its slot after its last answer.
pub const LINGER: Duration = Duration::from_secs(1);
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

    /// Peers holding a slot now.
    pub fn active(&self) -> usize {
        self.slots.len()
    }
}

/// The server's state.
pub struct Server {
    uploads: Uploads,
    /// Answers being prepared or sent, by request.
    serving: HashMap<InboundRequestId, PeerId>,
    incompressible: Incompressible,
    answers: u64,
    bytes: u64,
    limit: Option<u64>,
    max: usize,
}

impl Server {
    /// A server of at most `max_uploads` peers at once, within `limit`
    /// bytes a second (for `status`; the codec applies it).
    pub fn new(max_uploads: usize, limit: Option<u64>) -> Server {
        Server {
            uploads: Uploads::new(max_uploads),
            serving: HashMap::new(),
            incompressible: Incompressible::default(),
            answers: 0,
            bytes: 0,
            limit,
            max: max_uploads,
        }
    }

    /// Whether request `id` of `peer` may be served now (else the peer is
    /// told Busy); if so, it holds an upload slot until [`Server::finished`].
    pub fn admit(&mut self, peer: PeerId, id: InboundRequestId, now: Instant) -> bool {
        if !self.uploads.admit(peer, now) {
            return false;
        }
        self.serving.insert(id, peer);
        true
    }

    /// The work of answering a `GetPieces` from `sources`, to run off the
    /// loop.
    pub fn pieces_job(
        &self,
        sources: Vec<(Hash, Source)>,
    ) -> impl FnOnce() -> Response + Send + use<> {
        let incompressible = self.incompressible.clone();
        move || pieces(sources, &incompressible)
    }

    /// An answer is about to be sent (counted).
    pub fn sending(&mut self, response: &Response) {
        if let Response::Pieces(p) | Response::Manifest(p) = response {
            self.answers += 1;
            self.bytes += p.data.len() as u64;
        }
    }

    /// Request `id` was answered, or failed: its slot is released.
    pub fn finished(&mut self, id: &InboundRequestId, now: Instant) {
        if let Some(peer) = self.serving.remove(id) {
            self.uploads.done(&peer, now);
        }
    }

    /// What `status` shows.
    pub fn status(&self) -> UploadStatus {
        UploadStatus {
            limit_bytes_per_sec: self.limit,
            max_peers: self.max,
            active_peers: self.uploads.active(),
            peak_peers: self.uploads.peak,
            refused: self.uploads.refused,
            answers: self.answers,
            bytes: self.bytes,
        }
    }
}

/// Where one asked-for piece is.
pub enum Source {
    /// In the store: blob `hash`, piece `index`.
    Store(PathBuf, u32),
    /// In a fetch's partial folder: file, piece index, length.
    Partial(PathBuf, u32, u64),
}

/// Blobs whose pieces do not compress, shared by serving jobs.
#[derive(Clone, Default)]
pub struct Incompressible(Arc<Mutex<HashSet<Hash>>>);

impl Incompressible {
    fn contains(&self, h: &Hash) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(h)
    }

    fn insert(&self, h: Hash) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= 1 << 16 {
            set.clear();
        }
        set.insert(h);
    }
}

/// Reads and packs the pieces asked for; `NotFound` when any is missing.
pub fn pieces(sources: Vec<(Hash, Source)>, incompressible: &Incompressible) -> Response {
    // A buffer of the answer's size, not a recycled megabyte: a seeder
    // with many peers has many answers in flight, most of them small.
    let mut out = Vec::new();
    for (_, source) in &sources {
        let ok = match source {
            Source::Store(path, index) => read_store_piece(path, *index, &mut out),
            Source::Partial(path, index, len) => std::fs::File::open(path)
                .and_then(|f| read_piece(&f, *index, *len, &mut out))
                .is_ok(),
        };
        if !ok || out.len() as u64 > lanseed_protocol::wire::MAX_BATCH_BYTES {
            return Response::NotFound;
        }
    }
    let single = match sources.as_slice() {
        [(hash, _)] => Some(*hash),
        _ => None,
    };
    if single.is_some_and(|h| incompressible.contains(&h)) {
        return Response::Pieces(Packed::raw(out));
    }
    let packed = Packed::compress(out);
    if let Some(h) = single
        && !packed.is_compressed()
        && packed.raw_len as u64 == PIECE_SIZE
    {
        incompressible.insert(h);
    }
    Response::Pieces(packed)
}

/// Appends piece `index` of the store blob at `path` (its length from the
/// blob's size).
fn read_store_piece(path: &PathBuf, index: u32, out: &mut Vec<u8>) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(size) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let start = piece_offset(index);
    start < size && read_piece(&file, index, (size - start).min(PIECE_SIZE), out).is_ok()
}

/// Packs a manifest.
pub fn manifest(bytes: &[u8]) -> Response {
    Response::Manifest(Packed::compress(bytes.to_vec()))
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
