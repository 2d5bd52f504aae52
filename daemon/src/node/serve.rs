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
//! Answers are compressed ([`Packed::compress`]) unless no piece in them
//! may shrink: a piece of at least [`SAMPLED_FROM`] is first tried on a
//! [`SAMPLE`] from its middle, and a blob whose sample did not shrink is
//! remembered ([`Incompressible`]); its pieces then go as they are, to
//! every asker, without trying.

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

/// The least piece tried on a sample first, and whose sample's failure
/// to compress marks its blob: a smaller one says too little about the
/// rest of the blob, and costs little to try whole.
pub const SAMPLED_FROM: usize = 64 * 1024;

/// Reads and packs the pieces asked for; `NotFound` when any is missing.
pub fn pieces(sources: Vec<(Hash, Source)>, incompressible: &Incompressible) -> Response {
    // A buffer of the answer's size, not a recycled megabyte: a seeder
    // with many peers has many answers in flight, most of them small.
    let mut out = Vec::new();
    let mut ends = Vec::with_capacity(sources.len());
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
        ends.push(out.len());
    }
    if !worth_trying(&sources, &ends, &out, incompressible) {
        return Response::Pieces(Packed::raw(out));
    }
    Response::Pieces(Packed::compress(out))
}

/// Whether compressing the answer `data` (piece `i` ending at `ends[i]`)
/// may pay: some piece is small, or of a blob not known not to shrink
/// whose [`SAMPLE`] from the middle shrinks. A piece whose sample does not
/// shrink marks its blob: most of the bytes of a fan-out are media, sent
/// by each node about once, so remembering alone would try them all.
fn worth_trying(
    sources: &[(Hash, Source)],
    ends: &[usize],
    data: &[u8],
    known: &Incompressible,
) -> bool {
    let mut start = 0;
    let mut worth = false;
    for ((hash, _), &end) in sources.iter().zip(ends) {
        let piece = &data[start..end];
        start = end;
        if piece.len() < SAMPLED_FROM {
            worth = true;
        } else if !known.contains(hash) {
            let mid = (piece.len() - SAMPLE) / 2;
            if Packed::compress(piece[mid..mid + SAMPLE].to_vec()).is_compressed() {
                worth = true;
            } else {
                known.insert(*hash);
            }
        }
    }
    worth
}

/// The bytes of a large piece tried before all of it.
pub const SAMPLE: usize = 16 * 1024;

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

    fn blob(dir: &std::path::Path, name: &str, bytes: &[u8]) -> (Hash, Source) {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        (Hash::of(bytes), Source::Store(path, 0))
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        getrandom::fill(&mut v).unwrap();
        v
    }

    fn compressed(r: Response) -> bool {
        match r {
            Response::Pieces(p) => p.is_compressed(),
            _ => panic!("not pieces"),
        }
    }

    #[test]
    fn blobs_whose_sample_does_not_shrink_are_remembered_and_text_is_still_packed() {
        let dir = tempfile::tempdir().unwrap();
        let known = Incompressible::default();
        let text = blob(dir.path(), "text", &b"let x = 1;\n".repeat(10_000));
        let (m1, m2) = (noise(300_000), noise(300_000));
        let (a, b) = (blob(dir.path(), "a", &m1), blob(dir.path(), "b", &m2));
        let tiny = blob(dir.path(), "tiny", &noise(1000));
        let hashes = [text.0, a.0, b.0, tiny.0];
        let get = |i: usize| {
            let (h, s) = [&text, &a, &b, &tiny][i];
            let Source::Store(p, n) = s else {
                unreachable!()
            };
            (*h, Source::Store(p.clone(), *n))
        };
        assert!(compressed(pieces(vec![get(0)], &known)));
        // Two media pieces in one answer: their samples do not shrink,
        // both are marked; the tiny one says too little to be marked.
        assert!(!compressed(pieces(vec![get(1), get(2), get(3)], &known)));
        assert!(known.contains(&hashes[1]) && known.contains(&hashes[2]));
        assert!(!known.contains(&hashes[3]) && !known.contains(&hashes[0]));
        // Text next to a known media piece is still compressed.
        assert!(compressed(pieces(vec![get(1), get(0)], &known)));
        assert!(!known.contains(&hashes[0]));
        // A single media piece marks its blob at once.
        let c = blob(dir.path(), "c", &noise(100_000));
        let hc = c.0;
        assert!(!compressed(pieces(vec![c], &known)));
        assert!(known.contains(&hc));
    }
}
