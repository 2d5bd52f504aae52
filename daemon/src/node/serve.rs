//! The server: answering peers. Who may be served now (`--max-uploads`,
//! decided by [`Uploads`]), which answers are being prepared or sent, what
//! was served (counters for `status`), and reading and packing what peers
//! asked for ([`Server`] owns that state; the node routes to it). Large
//! pieces that may not compress are answered on the node's thread,
//! read from their files as the answer is written ([`answer`],
//! [`FileBody`]); a read that would wait, and compression, run in the
//! blocking pool. A peer without an upload slot is told
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
//! [`SAMPLE`] from its middle, and a blob one of whose pieces did not
//! shrink whole is remembered ([`Incompressible`]) and not tried again.

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

use super::codec::Reply;
use super::fetch::partial::read_piece;
use super::filebody::FileBody;
use super::nowait;

/// A request being answered: one that came by request-response, or on a
/// line (numbered by the line's module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AskId {
    /// By request-response.
    Rr(InboundRequestId),
    /// On a line.
    Line(u64),
}

/// The server's state; `I` identifies a request ([`AskId`] in the node, a
/// number in tests).
pub struct Server<I = AskId> {
    uploads: Uploads,
    /// Answers being prepared or sent, by request: to whom, and the
    /// pieces held back for it.
    serving: HashMap<I, (PeerId, Vec<seeding::Piece>)>,
    seeding: Seeding,
    incompressible: Incompressible,
    answers: u64,
    bytes: u64,
    limit: Option<u64>,
    max: usize,
}

impl<I: std::hash::Hash + Eq> Server<I> {
    /// A server of at most `max_uploads` peers at once, within `limit`
    /// bytes a second (for `status`; the codec applies it).
    pub fn new(max_uploads: usize, limit: Option<u64>) -> Self {
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
    pub fn admit(&mut self, peer: PeerId, id: I, now: Instant) -> bool {
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

    /// Admitted request `id` asks for `whole`, pieces of blobs this node
    /// holds whole: once its answer carries them ([`Server::sending`]),
    /// they are held back from others until it is sent (and a window
    /// after). Not before: a request answered NotFound, or never
    /// answered, holds nothing back.
    pub fn sends_whole(&mut self, id: &I, whole: Vec<seeding::Piece>) {
        if let Some((_, held)) = self.serving.get_mut(id) {
            *held = whole;
        }
    }

    /// `peer` disconnected: nothing waits for it to pass pieces on.
    pub fn forget(&mut self, peer: &PeerId) {
        self.seeding.forget(peer);
    }

    /// The answer to a `GetPieces` for `sources` (see [`answer`]).
    pub fn answer(&self, sources: Vec<(Hash, Source)>) -> Result<Reply, Job> {
        answer(sources, &self.incompressible)
    }

    /// The answer to request `id` is about to be sent: counted, and the
    /// pieces of blobs held whole that it carries are held back.
    pub fn sending(&mut self, id: &I, reply: &Reply, now: Instant) {
        let (data, pieces) = match reply {
            Reply::Message(Response::Pieces(p)) => (Some(p.data.len()), true),
            Reply::Message(Response::Manifest(p)) => (Some(p.data.len()), false),
            Reply::RawPieces(body) => (Some(body.len()), true),
            Reply::Message(_) => (None, false),
        };
        if let Some(len) = data {
            self.answers += 1;
            self.bytes += len as u64;
        }
        if let Some((peer, held)) = self.serving.get_mut(id) {
            if pieces {
                self.seeding.sending(*peer, held, now);
            } else {
                held.clear();
            }
        }
    }

    /// Request `id` was answered, or failed: its slot is released.
    pub fn finished(&mut self, id: &I, now: Instant) {
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
#[derive(Clone)]
pub enum Source {
    /// In the store: blob `hash`, piece `index`.
    Store(PathBuf, u32),
    /// In a fetch's partial folder: file, piece index, length.
    Partial(PathBuf, u32, u64),
}

impl Source {
    /// The file the piece is in.
    fn path(&self) -> &PathBuf {
        match self {
            Source::Store(path, _) | Source::Partial(path, _, _) => path,
        }
    }
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

/// The least piece tried on a [`SAMPLE`] first; a smaller one costs
/// little to try whole.
pub const SAMPLED_FROM: usize = 64 * 1024;

/// The bytes of a large piece tried before all of it.
pub const SAMPLE: usize = 16 * 1024;

const _: () = assert!(SAMPLED_FROM >= SAMPLE);

/// Work for the blocking pool that makes an answer.
pub type Job = Box<dyn FnOnce() -> Response + Send>;

/// The answer to a `GetPieces` for `sources`, at once (`Ok`) or as the
/// work left for the blocking pool (`Err`), as [`plan`] decides:
/// - large pieces none of which may shrink: read from their files as the
///   answer is written;
/// - pieces that may shrink, in the page cache: read here, compressed in
///   the pool;
/// - the rest in the pool: reading what is not cached, or telling what
///   is missing.
pub fn answer(sources: Vec<(Hash, Source)>, incompressible: &Incompressible) -> Result<Reply, Job> {
    let incompressible = incompressible.clone();
    match plan(&sources, &incompressible) {
        Plan::FromFiles(body) => Ok(Reply::RawPieces(body)),
        Plan::Compress => match read(&sources, Wait::No) {
            Read::Pieces(out, _) => Err(Box::new(move || compress(&sources, out, &incompressible))),
            Read::Missing | Read::WouldWait => {
                Err(Box::new(move || pieces(sources, &incompressible)))
            }
        },
        Plan::Pool => Err(Box::new(move || pieces(sources, &incompressible))),
    }
}

/// How an answer is made.
enum Plan {
    /// Read from its files as it is written.
    FromFiles(FileBody),
    /// Compressed, if that pays: a piece is small, or its sample shrinks.
    Compress,
    /// Read and decided in the pool: a piece is missing or its sample is
    /// not in the page cache, the answer is too large, or the bodies hold
    /// all the open files they may.
    Pool,
}

/// Decides how to answer `sources`, reading only each large piece's
/// [`SAMPLE`] (from the page cache, never waiting) when its blob is not
/// known not to shrink.
fn plan(sources: &[(Hash, Source)], incompressible: &Incompressible) -> Plan {
    if sources.is_empty() {
        return Plan::Pool;
    }
    let mut ranges = Vec::with_capacity(sources.len());
    let mut total = 0u64;
    let mut sample = Vec::new();
    for (hash, source) in sources {
        let Ok((file, index, len)) = open(source) else {
            return Plan::Pool;
        };
        total += len;
        if total > lanseed_protocol::wire::MAX_BATCH_BYTES {
            return Plan::Pool;
        }
        let len = len as usize;
        if len < SAMPLED_FROM {
            return Plan::Compress;
        }
        let offset = piece_offset(index);
        if !incompressible.contains(hash) {
            sample.clear();
            let at = offset + sample_at(len) as u64;
            match nowait::read_cached(&file, at, SAMPLE, &mut sample) {
                Ok(true) if Packed::shrinks(&sample) => return Plan::Compress,
                Ok(true) => {}
                Ok(false) | Err(_) => return Plan::Pool,
            }
        }
        ranges.push((source.path().clone(), file, offset, len));
    }
    FileBody::new(ranges).map_or(Plan::Pool, Plan::FromFiles)
}

/// Where the [`SAMPLE`] of a piece of `len` bytes (at least
/// [`SAMPLED_FROM`]) begins: in its middle.
fn sample_at(len: usize) -> usize {
    (len - SAMPLE) / 2
}

/// Reads and packs the pieces asked for; `NotFound` when any is missing.
pub fn pieces(sources: Vec<(Hash, Source)>, incompressible: &Incompressible) -> Response {
    match read(&sources, Wait::Yes) {
        Read::Pieces(out, ends) if !worth_trying(&sources, &ends, &out, incompressible) => {
            Response::Pieces(Packed::raw(out))
        }
        Read::Pieces(out, _) => compress(&sources, out, incompressible),
        Read::Missing | Read::WouldWait => Response::NotFound,
    }
}

/// Whether a read may wait on the disk.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    Yes,
    No,
}

/// What reading an answer's pieces gave.
enum Read {
    /// The pieces one after the other, and where each ends.
    Pieces(Vec<u8>, Vec<usize>),
    /// One is missing, or they are more than an answer may carry.
    Missing,
    /// One is not in the page cache (reading with [`Wait::No`] only).
    WouldWait,
}

/// Reads the pieces of `sources`, into a buffer of the answer's size (not
/// a recycled megabyte: a seeder with many peers has many answers in
/// flight, most of them small).
fn read(sources: &[(Hash, Source)], wait: Wait) -> Read {
    let mut out = Vec::new();
    let mut ends = Vec::with_capacity(sources.len());
    for (_, source) in sources {
        let Ok((file, index, len)) = open(source) else {
            return Read::Missing;
        };
        let read = match wait {
            Wait::Yes => read_piece(&file, index, len, &mut out).map(|()| true),
            Wait::No => usize::try_from(len)
                .map_err(|_| std::io::ErrorKind::InvalidData.into())
                .and_then(|len| nowait::read_cached(&file, piece_offset(index), len, &mut out)),
        };
        match read {
            Ok(true) => {}
            Ok(false) => return Read::WouldWait,
            Err(_) => return Read::Missing,
        }
        if out.len() as u64 > lanseed_protocol::wire::MAX_BATCH_BYTES {
            return Read::Missing;
        }
        ends.push(out.len());
    }
    Read::Pieces(out, ends)
}

/// The pieces `out` of `sources`, compressed if that pays; a whole piece
/// that did not shrink marks its blob.
fn compress(sources: &[(Hash, Source)], out: Vec<u8>, incompressible: &Incompressible) -> Response {
    let packed = Packed::compress(out);
    if let [(hash, _)] = sources
        && !packed.is_compressed()
        && packed.raw_len as usize >= SAMPLED_FROM
    {
        incompressible.insert(*hash);
    }
    Response::Pieces(packed)
}

/// Whether compressing the answer `data` (piece `i` ending at `ends[i]`)
/// may pay: some piece is small, or of a blob not known not to shrink
/// and its [`SAMPLE`] from the middle shrinks. Most of a fan-out's bytes
/// are media, each piece sent by a node about once: remembering blobs
/// alone would still try every one whole. A sample that does not shrink
/// decides this answer only, not the blob (a piece may mix data and text).
fn worth_trying(
    sources: &[(Hash, Source)],
    ends: &[usize],
    data: &[u8],
    known: &Incompressible,
) -> bool {
    let mut start = 0;
    for ((hash, _), &end) in sources.iter().zip(ends) {
        let piece = &data[start..end];
        start = end;
        if piece.len() < SAMPLED_FROM {
            return true;
        }
        if !known.contains(hash) {
            let mid = sample_at(piece.len());
            if Packed::shrinks(&piece[mid..mid + SAMPLE]) {
                return true;
            }
        }
    }
    false
}

/// The file that holds a piece, its index and its length (a store blob's
/// last piece is as long as what is left of the blob).
fn open(source: &Source) -> std::io::Result<(std::fs::File, u32, u64)> {
    match source {
        Source::Store(path, index) => {
            let file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            let start = piece_offset(*index);
            if start >= size {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok((file, *index, (size - start).min(PIECE_SIZE)))
        }
        Source::Partial(path, index, len) => {
            let file = std::fs::File::open(path)?;
            if file.metadata()?.len() < piece_offset(*index) + len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok((file, *index, *len))
        }
    }
}

/// Packs a manifest.
pub fn manifest(bytes: &[u8]) -> Response {
    Response::Manifest(Packed::compress(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        getrandom::fill(&mut v).unwrap();
        v
    }

    fn text(len: usize) -> Vec<u8> {
        b"let x = 1;\n".iter().copied().cycle().take(len).collect()
    }

    /// `pieces` of one answer, each its own blob in `dir`.
    fn answer(dir: &std::path::Path, pieces: &[&[u8]]) -> Vec<(Hash, Source)> {
        (pieces.iter())
            .map(|bytes| {
                let hash = Hash::of(bytes);
                let path = dir.join(hash.to_string());
                std::fs::write(&path, bytes).unwrap();
                (hash, Source::Store(path, 0))
            })
            .collect()
    }

    fn worth(sources: &[(Hash, Source)], known: &Incompressible) -> bool {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for (_, s) in sources {
            let Source::Store(path, _) = s else {
                unreachable!()
            };
            data.extend(std::fs::read(path).unwrap());
            ends.push(data.len());
        }
        worth_trying(sources, &ends, &data, known)
    }

    fn compressed(r: Response) -> bool {
        match r {
            Response::Pieces(p) => p.is_compressed(),
            _ => panic!("not pieces"),
        }
    }

    #[test]
    fn only_pieces_an_answer_carries_are_held_back_for_its_peer() {
        let (liar, busy, y) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t = Instant::now();
        let mut server: Server<u32> = Server::new(8, None);
        let keys: Vec<seeding::Piece> = (0..4).map(|n| (Hash::of(b"blob"), n)).collect();
        // Another peer's answer keeps the uplink busy throughout.
        assert!(server.admit(busy, 0, t));
        // Asked for with a piece the node lacks: answered NotFound, sent
        // nothing, holds nothing back.
        assert!(server.admit(liar, 1, t));
        server.sends_whole(&1, keys.clone());
        assert!(!server.hold_back(&y, &keys, t));
        server.sending(&1, &Reply::Message(Response::NotFound), t);
        server.finished(&1, t);
        assert!(!server.hold_back(&y, &keys, t));
        // Sent: held back from y while on its way and just after.
        assert!(server.admit(liar, 2, t));
        server.sends_whole(&2, keys.clone());
        server.sending(
            &2,
            &Reply::Message(Response::Pieces(Packed::raw(vec![0; 4]))),
            t,
        );
        assert!(server.hold_back(&y, &keys[..1], t));
        server.finished(&2, t);
        assert!(server.hold_back(&y, &keys[3..], t));
        assert_eq!(server.status().held_back, 2);
        // An answer read from its files is counted and holds back alike.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other");
        std::fs::write(&path, [7u8; 10]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let body = FileBody::new(vec![(path, file, 0, 10)]).unwrap();
        let other: Vec<seeding::Piece> = vec![(Hash::of(b"other"), 0)];
        assert!(server.admit(liar, 3, t));
        server.sends_whole(&3, other.clone());
        assert!(!server.hold_back(&y, &other, t));
        server.sending(&3, &Reply::RawPieces(body), t);
        assert!(server.hold_back(&y, &other, t));
        let status = server.status();
        assert_eq!((status.answers, status.bytes), (2, 14));
    }

    #[test]
    fn large_pieces_are_tried_on_a_sample_and_blobs_remembered_only_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let known = Incompressible::default();
        let media = noise(300_000);
        // Media go raw without being tried whole, and are not remembered
        // from the sample alone.
        assert!(!worth(&answer(dir, &[&media, &noise(200_000)]), &known));
        assert!(!compressed(pieces(answer(dir, &[&media]), &known)));
        assert!(!known.contains(&Hash::of(&media)));
        // Text, or a small piece next to media, is tried...
        assert!(worth(&answer(dir, &[&text(200_000)]), &known));
        assert!(compressed(pieces(answer(dir, &[&text(200_000)]), &known)));
        assert!(worth(&answer(dir, &[&media, &noise(1000)]), &known));
        // ...and a piece whose middle shrinks but whole does not: tried
        // once, then its blob is remembered and not tried again.
        let mut mixed = noise(300_000);
        mixed[148_000..152_000].copy_from_slice(&text(4_000));
        let sources = answer(dir, &[&mixed]);
        assert!(worth(&sources, &known));
        assert!(!compressed(pieces(answer(dir, &[&mixed]), &known)));
        assert!(known.contains(&Hash::of(&mixed)));
        assert!(!worth(&sources, &known));
    }

    /// Media are answered at once, read from their files as they are
    /// written, with the bytes the pool would answer; what may compress,
    /// or is missing, is left to the pool.
    #[tokio::test]
    async fn media_are_answered_at_once_and_the_rest_left_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let known = Incompressible::default();
        let (media, more) = (noise(300_000), noise(1_200_000));
        // Two pieces of one blob: the second is the blob's last, shorter.
        let hash = Hash::of(&more);
        std::fs::write(dir.join("more"), &more).unwrap();
        let sources = vec![
            answer(dir, &[&media]).remove(0),
            (hash, Source::Store(dir.join("more"), 1)),
        ];
        let Ok(Reply::RawPieces(now)) = super::answer(sources.clone(), &known) else {
            panic!("cached media were not answered from their files");
        };
        let Response::Pieces(pool) = pieces(sources, &known) else {
            panic!("the pool did not answer");
        };
        assert!(!pool.is_compressed());
        let (mut streamed, mut chunk) = (Vec::new(), Vec::new());
        while streamed.len() < now.len() {
            if !now.read_cached(streamed.len(), &mut chunk).unwrap() {
                now.read_waiting(streamed.len(), &mut chunk).await.unwrap();
            }
            streamed.extend_from_slice(&chunk);
        }
        assert_eq!(streamed, pool.data);
        let mut want = media.clone();
        want.extend_from_slice(&more[PIECE_SIZE as usize..]);
        assert_eq!(streamed, want);
        // A small piece beside them may compress: read here, compressed
        // (or not) in the pool.
        let with_small = answer(dir, &[&media, &noise(1000)]);
        let Err(job) = super::answer(with_small, &known) else {
            panic!("a small piece that may compress was answered on the loop");
        };
        assert!(!compressed(job()));
        // Text is read here and compressed in the pool, not read again.
        let Err(job) = super::answer(answer(dir, &[&text(200_000)]), &known) else {
            panic!("text that may compress was answered on the loop");
        };
        assert!(compressed(job()));
        let missing = vec![(hash, Source::Store(dir.join("none"), 0))];
        assert!(super::answer(missing, &known).is_err());
        let past_the_end = vec![(hash, Source::Store(dir.join("more"), 2))];
        assert!(super::answer(past_the_end, &known).is_err());
    }
}
