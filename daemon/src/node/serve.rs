//! The server: answering peers. Who may be served now (`--max-uploads`,
//! decided by [`Uploads`]), which answers are being prepared or sent, what
//! was served (counters for `status`), and reading and packing what peers
//! asked for, off the node's event loop ([`Server`] owns that state; the
//! node routes to it). A peer without an upload slot is told
//! [`Response::Busy`]; one peer has at most
//! [`PER_PEER`](super::uploads::PER_PEER) answers in preparation, which
//! bounds the memory answers can take to `max_uploads × PER_PEER` pieces.
//!
//! A node that holds a blob whole sends each piece to one peer at a time
//! ([`Seeding`], initial seeding): others asking for a piece on its way
//! are told Busy and get it from the peer that has it.
//!
//! Pieces are read from the store, or from the partial folder of a fetch
//! in progress (a node seeds what it has verified while it downloads).
//! Answers are compressed ([`Packed::compress`]) unless the blob is known
//! not to shrink: the first piece of a blob that did not compress marks the
//! blob, and its other pieces go as they are without trying.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lanseed_protocol::Hash;
use lanseed_protocol::limits::PIECE_SIZE;
use lanseed_protocol::pieces::piece_offset;
use lanseed_protocol::wire::{Packed, Response};
use libp2p::PeerId;
use libp2p::request_response::InboundRequestId;

use super::seeding::{self, Seeding};
use super::status::UploadStatus;
use super::uploads::Uploads;

use super::fetch::partial::read_piece;

/// The server's state.
pub struct Server {
    uploads: Uploads,
    /// Answers being prepared or sent, by request: to whom, and the
    /// pieces held back for it.
    serving: HashMap<InboundRequestId, (PeerId, Vec<seeding::Piece>)>,
    seeding: Seeding,
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
            seeding: Seeding::default(),
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
        self.serving.insert(id, (peer, Vec::new()));
        true
    }

    /// Whether `peer`'s request for `pieces` waits: one of them is on its
    /// way to another peer, which will pass it on, and the uplink has
    /// answers to others to send (told Busy).
    pub fn hold_back(&mut self, peer: &PeerId, pieces: &[seeding::Piece], now: Instant) -> bool {
        let busy = self.uploads.busy_with_others(peer);
        self.seeding.hold_back(peer, pieces, busy, now)
    }

    /// Admitted request `id` carries `whole`, pieces of blobs this node
    /// holds whole: held back from others until it is answered (and
    /// [`seeding::WINDOW`] after).
    pub fn sends_whole(&mut self, id: &InboundRequestId, whole: Vec<seeding::Piece>, now: Instant) {
        if let Some((peer, held)) = self.serving.get_mut(id) {
            self.seeding.sending(*peer, &whole, now);
            *held = whole;
        }
    }

    /// `peer` disconnected: nothing waits for it to pass pieces on.
    pub fn forget(&mut self, peer: &PeerId) {
        self.seeding.forget(peer);
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
        if let Some((peer, held)) = self.serving.remove(id) {
            self.uploads.done(&peer, now);
            self.seeding.arrived(&peer, &held, now);
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
            held_back: self.seeding.held_back,
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
