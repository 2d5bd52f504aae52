//! One fetch: a verified release whose bundle the node does not hold yet.
//!
//! The manifest comes first (from the partial folder of an earlier run,
//! or from a peer) and is checked against the signed bundle id; that, and
//! finding the pieces already held, runs off the node's event loop
//! ([`OpenJob`]: resuming a large fetch reads back all it had). Then the
//! pieces the store lacks are asked of every peer that has them, as
//! [`sched`] decides; each answer is verified piece by piece against the
//! signed manifest and written at its offset in [`partial`], off the node's
//! event loop ([`WriteJob`]). A blob whose every piece matched is the blob
//! (piece hashes are subtrees of the file's BLAKE3, which the manifest's
//! decoder checked: `lanseed_protocol::piecehash`), so nothing is read back.
//! The release is committed when every piece is in
//! ([`partial::Partial::commit`]).
//!
//! Who may be asked, and what each holds, is the scheduler's to know
//! ([`Sched`], from the fetch's start). A peer that sends anything wrong
//! is dropped from this fetch for good (and
//! banned by the node); one that does not answer is set aside, and taken
//! back when it announces the release again after a backoff that doubles
//! each time ([`sched::aside_time`]); one that is busy or lacks a piece rests a
//! moment. The manifest is asked of one peer, then of more the longer no
//! answer comes ([`asks`]), and a peer that has not answered within
//! [`asks::GIVE_UP`] is set aside ([`Fetch::overdue_manifest_peers`]; its
//! answer is still taken if it comes): silent peers cost seconds, however
//! many announce the release. A peer that has answered no piece request
//! within [`SILENT_AFTER`] is set aside too ([`Fetch::silent_peers`]); a
//! silent peer's pieces are asked of others long before that, once late
//! ([`sched`]).

pub mod asks;
pub mod partial;
pub mod sched;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use either::Either;
use lanseed_protocol::hash::{BundleId, Hash};
use lanseed_protocol::limits::MAX_MANIFEST_BYTES;
use lanseed_protocol::manifest::Manifest;
use lanseed_protocol::pieces::{Bitfield, PieceMap};
use lanseed_protocol::store::StoreError;
use lanseed_protocol::wire::{MAX_BATCH_BYTES, Packed, Request, Response};
use lanseed_protocol::{Store, VerifiedRelease};
use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;

use self::asks::Asks;
use self::partial::Partial;
use self::sched::Sched;
use super::buffers;

/// Names one request of a fetch: libp2p's id of one sent by
/// request-response, or the node's number of one sent on a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReqId {
    /// Sent by request-response.
    Rr(OutboundRequestId),
    /// Sent on a line.
    Line(u64),
}

/// What a peer did wrong.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The bytes do not match what the signed manifest says.
    #[error("sent data that does not match its hash")]
    BadData,
    /// It does not have what it said it has.
    #[error("does not have what it announced")]
    NotFound,
    /// It serves as many peers as it will.
    #[error("is busy serving others")]
    Busy,
    /// An answer to another question.
    #[error("answered with the wrong kind of message")]
    Unexpected,
    /// The request failed or timed out.
    #[error("did not answer: {0}")]
    NoAnswer(String),
    /// The answer broke the wire's rules (over its limits, or not a
    /// message).
    #[error("sent a malformed answer: {0}")]
    Malformed(String),
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failed {
    /// The answer broke the wire's rules.
    Malformed(String),
    /// None came (timeout, closed connection, ...).
    NoAnswer(String),
}

/// Why a fetch cannot go on, or a peer must be dropped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The peer misbehaved: drop it and go on with others.
    #[error("peer {0}")]
    Peer(#[from] Fault),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a peer may leave its first piece request unanswered before it
/// is set aside (long enough for the queue of a seeder capped by
/// `--upload-limit`: its pieces are asked of others once late anyway).
pub const SILENT_AFTER: Duration = Duration::from_secs(10);

/// Most answers of one fetch waiting to be written (about a megabyte
/// each) before it asks for more: a fetcher whose disk or CPU is slower
/// than its peers holds this much, not the bundle.
pub const MAX_WRITING: usize = 8;

/// What a peer still fetching said it holds and is fetching (raw bitfields).
pub type Heard = (Vec<u8>, Vec<u8>);

/// Where a fetch is.
pub enum Stage {
    /// An [`OpenJob`] is running (the manifest requests still waiting are
    /// kept, for when the manifest it opens is no good).
    Opening(Asks<ReqId>),
    /// Waiting for the manifest.
    Manifest(Asks<ReqId>),
    /// Fetching pieces.
    Pieces(Box<Transfer>),
    /// Every piece is in; the commit is running.
    Committing,
}

/// The pieces stage of a fetch.
pub struct Transfer {
    manifest: Arc<Manifest>,
    manifest_bytes: Arc<Vec<u8>>,
    map: Arc<PieceMap>,
    /// Per blob: whether the store held it when the fetch began (its
    /// pieces are served from the store, never from the partial folder).
    in_store: Vec<bool>,
}

/// What to ask for.
pub enum Want {
    /// The manifest.
    Manifest,
    /// These pieces, this many bytes.
    Pieces(Vec<u32>, u64),
}

/// The state of one fetch.
pub struct Fetch {
    /// The release being fetched.
    pub release: VerifiedRelease,
    /// The bundle of it this fetch gets: its own, or its Capgo payload
    /// (fetched once its own is in the store).
    target: BundleId,
    /// Other verified releases of the same bundle, committed with it.
    pub also: Vec<VerifiedRelease>,
    /// Its partial folder.
    pub partial: Partial,
    /// Where it is.
    pub stage: Stage,
    /// Its sources and, once the manifest is in, its pieces.
    sched: Sched<ReqId>,
    stalled_since: Option<Instant>,
    seed: u64,
    /// Bytes held of what the store lacked (verified pieces).
    pub bytes_done: u64,
    /// Bytes the store lacked (known once the manifest is in).
    pub bytes_total: u64,
    /// Bytes found verified on disk from an earlier run.
    pub reused: u64,
    /// When it started.
    pub started: Instant,
    /// The process's CPU seconds when it started ([`crate::cputime`]).
    pub cpu_at_start: Option<f64>,
    /// When every piece was in and the commit was handed out.
    pub commit_started: Option<Instant>,
    /// Pieces gained since peers were last told.
    pub have_changed: bool,
    /// Peers that were sent the release record with a `Have` (later ones
    /// carry only the bitfields).
    pub told: HashSet<PeerId>,
    /// The wire bytes received for it.
    pub wire_bytes: u64,
    /// The wire bytes received from each peer (who served this fetch).
    pub wire_from: BTreeMap<PeerId, u64>,
    /// Whether "stalled" was logged since it last had a peer.
    pub stall_warned: bool,
    /// Answers received and not written yet (their write jobs queue for
    /// the blocking pool, each holding its answer's buffer).
    writing: usize,
    /// `gc.lock` held shared once open: a collection waits for running
    /// fetches (it would delete their pieces, or blobs they count on).
    gc_guard: Option<std::fs::File>,
}

/// `wire_from` for a log line: `PEER=BYTES` pairs joined by commas, in
/// peer id order (`-` when nothing came over the wire).
pub fn wire_from_text(wire_from: &BTreeMap<PeerId, u64>) -> String {
    if wire_from.is_empty() {
        return "-".to_owned();
    }
    let pairs: Vec<String> = wire_from
        .iter()
        .map(|(peer, bytes)| format!("{peer}={bytes}"))
        .collect();
    pairs.join(",")
}

/// Pieces to verify and write, off the event loop.
pub struct WriteJob {
    /// The fetch.
    pub bundle: BundleId,
    /// Who sent them.
    pub peer: PeerId,
    /// Piece numbers.
    pub pieces: Vec<u32>,
    map: Arc<PieceMap>,
    partial: Partial,
    packed: Packed,
}

/// What a [`WriteJob`] found.
pub struct Written {
    /// The fetch.
    pub bundle: BundleId,
    /// Who sent them.
    pub peer: PeerId,
    /// Piece numbers.
    pub pieces: Vec<u32>,
    /// All verified and written, or why not.
    pub result: Result<(), FetchError>,
}

impl WriteJob {
    /// Unpacks, verifies every piece against its signed hash, then writes
    /// them (nothing is written unless all match).
    pub fn run(self) -> Written {
        let WriteJob {
            bundle,
            peer,
            pieces,
            map,
            partial,
            packed,
        } = self;
        let result = verify_and_write(&map, &partial, &pieces, packed);
        Written {
            bundle,
            peer,
            pieces,
            result,
        }
    }
}

/// Unpacks an answer, verifies every piece against its signed hash, then
/// writes them (nothing is written unless all match).
fn verify_and_write(
    map: &PieceMap,
    partial: &Partial,
    pieces: &[u32],
    packed: Packed,
) -> Result<(), FetchError> {
    let expected: u64 = pieces.iter().map(|&n| map.piece_len(n)).sum();
    let result = match packed.unpacked(expected as usize) {
        Ok(data) if data.len() as u64 == expected => write_verified(map, partial, pieces, &data),
        _ => Err(Fault::BadData.into()),
    };
    buffers::give(packed.data);
    result
}

/// Verifies every piece of `data` against its signed hash, then writes
/// them (nothing is written unless all match).
fn write_verified(
    map: &PieceMap,
    partial: &Partial,
    pieces: &[u32],
    data: &[u8],
) -> Result<(), FetchError> {
    let mut at = 0usize;
    let mut slices = Vec::with_capacity(pieces.len());
    for &n in pieces {
        let piece = &data[at..at + map.piece_len(n) as usize];
        if !map.is_piece(n, piece) {
            return Err(Fault::BadData.into());
        }
        slices.push((n, piece));
        at += piece.len();
    }
    for (n, piece) in slices {
        let r = map.locate(n);
        let path = partial.blob_path(&map.blobs()[r.blob].entry.blake3);
        partial::write_piece(&path, r.index, piece)
            .map_err(|e| StoreError::io("cannot write", &path)(e))?;
    }
    Ok(())
}

/// Where an [`OpenJob`] finds the manifest.
enum Source {
    /// In the partial folder of an earlier run, if any.
    Saved,
    /// In this answer from this peer.
    Sent(PeerId, Packed),
}

/// Opening a fetch, off the event loop: the manifest unpacked, checked
/// against the bundle id, decoded and saved for a later resume; its pieces
/// numbered; and those already held found (blobs in the store, and pieces
/// in the partial folder, read back and hashed).
pub struct OpenJob {
    /// The fetch.
    pub bundle: BundleId,
    /// Which `Fetch` of that bundle asked (one may be dropped and another
    /// started while the job runs).
    generation: u64,
    store: Store,
    partial: Partial,
    source: Source,
}

/// What an [`OpenJob`] found.
pub struct Opened {
    /// The fetch.
    pub bundle: BundleId,
    generation: u64,
    /// Who sent the manifest (`None`: read back from disk).
    pub peer: Option<PeerId>,
    /// The fetch's pieces; `Ok(None)` when no earlier run left a manifest.
    pub result: Result<Option<Box<Open>>, FetchError>,
}

/// An opened fetch's manifest and the pieces it holds.
pub struct Open {
    manifest: Manifest,
    bytes: Vec<u8>,
    map: PieceMap,
    have: Bitfield,
    reused: u64,
    in_store: Vec<bool>,
    gc_guard: Option<std::fs::File>,
}

impl OpenJob {
    /// Finds, checks and scans.
    pub fn run(self) -> Opened {
        let peer = match &self.source {
            Source::Saved => None,
            Source::Sent(peer, _) => Some(*peer),
        };
        Opened {
            bundle: self.bundle,
            generation: self.generation,
            peer,
            result: self.open(),
        }
    }

    fn open(self) -> Result<Option<Box<Open>>, FetchError> {
        // Waits while a collection runs (it may remove the partial folder).
        let gc_guard = self.store.read_guard().ok();
        let sent = matches!(self.source, Source::Sent(..));
        let bytes = match self.source {
            Source::Saved => match self.partial.saved_manifest(&self.bundle) {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
            Source::Sent(_, packed) => {
                // A copy of its own: the body's buffer may be a recycled
                // megabyte, kept by the fetch for its whole life otherwise.
                let bytes = packed.unpacked(MAX_MANIFEST_BYTES).map(|b| b.into_owned());
                buffers::give(packed.data);
                let bytes = bytes.map_err(|_| Fault::BadData)?;
                if Hash::of(&bytes) != self.bundle.0 {
                    return Err(Fault::BadData.into());
                }
                bytes
            }
        };
        let manifest = Manifest::from_bytes(&bytes).map_err(|_| Fault::BadData)?;
        if sent {
            self.partial.save_manifest(&bytes)?;
        }
        let map = PieceMap::of(&manifest);
        let (have, reused, in_store) = self.partial.scan(&self.store, &map);
        Ok(Some(Box::new(Open {
            manifest,
            bytes,
            map,
            have,
            reused,
            in_store,
            gc_guard,
        })))
    }
}

/// The commit, off the event loop.
pub struct CommitJob {
    store: Store,
    partial: Partial,
    manifest: Arc<Manifest>,
    map: Arc<PieceMap>,
    release: VerifiedRelease,
    also: Vec<VerifiedRelease>,
}

impl CommitJob {
    /// Moves the blobs into the store and commits the release(s) that
    /// need nothing else.
    pub fn run(self) -> Result<(VerifiedRelease, partial::Committed), StoreError> {
        let outcome = self.partial.commit(
            &self.store,
            &self.manifest,
            &self.map,
            &self.release,
            &self.also,
        )?;
        Ok((self.release, outcome))
    }
}

impl Fetch {
    /// Starts fetching `bundle` of `release` (its own, or its Capgo
    /// payload), opening first what an earlier run left in its partial
    /// folder (the job to run).
    pub fn new(store: &Store, release: VerifiedRelease, bundle: BundleId) -> (Fetch, OpenJob) {
        let partial = Partial::of(store, &bundle);
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let seed = u64::from_le_bytes(seed);
        let open = OpenJob {
            bundle,
            generation: seed,
            store: store.clone(),
            partial: partial.clone(),
            source: Source::Saved,
        };
        let f = Fetch {
            release,
            target: bundle,
            also: Vec::new(),
            partial,
            stage: Stage::Opening(Asks::default()),
            sched: Sched::new(seed),
            stalled_since: None,
            seed,
            bytes_done: 0,
            bytes_total: 0,
            reused: 0,
            started: Instant::now(),
            cpu_at_start: crate::cputime::process_secs(),
            commit_started: None,
            have_changed: false,
            told: HashSet::new(),
            wire_bytes: 0,
            wire_from: BTreeMap::new(),
            stall_warned: false,
            writing: 0,
            gc_guard: None,
        };
        (f, open)
    }

    /// The bundle being fetched.
    pub fn bundle(&self) -> BundleId {
        self.target
    }

    /// Whether it fetches the release's own bundle (not its Capgo payload).
    pub fn is_main(&self) -> bool {
        self.target == self.release.release().bundle_id
    }

    /// A peer that announced the release whole (ignored while it is set
    /// aside, or after bad data).
    pub fn add_whole(&mut self, peer: PeerId, now: Instant) {
        if self.sched.add_whole(peer, now) {
            self.stall_warned = false;
        }
    }

    /// A peer still fetching the release, holding the pieces in
    /// `heard.0` and fetching those in `heard.1`.
    pub fn add_partial(&mut self, peer: PeerId, heard: Heard) {
        if self.sched.add_partial(peer, heard.0, heard.1) {
            self.stall_warned = false;
        }
    }

    /// Whether `peer` announced the release whole.
    pub fn is_whole(&self, peer: &PeerId) -> bool {
        self.sched.is_whole(peer)
    }

    /// Peers it may ask.
    pub fn providers(&self) -> usize {
        self.sched.providers()
    }

    /// How long it has had no peer to ask (zero while it has one).
    pub fn stalled_for(&mut self) -> std::time::Duration {
        if self.providers() == 0 && !matches!(self.stage, Stage::Committing) {
            self.stalled_since
                .get_or_insert_with(Instant::now)
                .elapsed()
        } else {
            self.stalled_since = None;
            std::time::Duration::ZERO
        }
    }

    /// Whether the manifest is in.
    pub fn has_manifest(&self) -> bool {
        matches!(self.stage, Stage::Pieces(_) | Stage::Committing)
    }

    /// The manifest's canonical bytes, once in.
    pub fn manifest_bytes(&self) -> Option<Arc<Vec<u8>>> {
        match &self.stage {
            Stage::Pieces(t) => Some(t.manifest_bytes.clone()),
            _ => None,
        }
    }

    /// The pieces held and those being fetched, as `Have` bitfields.
    pub fn have_bits(&self) -> Option<Heard> {
        match &self.stage {
            Stage::Pieces(_) => Some((
                self.sched.have().as_bytes().to_vec(),
                self.sched.fetching().as_bytes().to_vec(),
            )),
            _ => None,
        }
    }

    /// Where piece `index` of blob `blob` can be read, if it is verified
    /// here (and not yet in the store).
    pub fn piece_source(&self, blob: &Hash, index: u32) -> Option<(PathBuf, u64)> {
        let Stage::Pieces(t) = &self.stage else {
            return None;
        };
        let b = t.map.blob_index(blob)?;
        if t.in_store[b] {
            return None; // served from the store
        }
        let range = t.map.pieces_of(b);
        let n = range
            .start
            .checked_add(index)
            .filter(|n| range.contains(n))?;
        self.sched
            .have()
            .get(n)
            .then(|| (self.partial.blob_path(blob), t.map.piece_len(n)))
    }

    /// Drops `peer` from this fetch for good (it sent bad data).
    pub fn ban(&mut self, peer: PeerId) {
        if let Stage::Manifest(asks) | Stage::Opening(asks) = &mut self.stage {
            asks.drop_peer(&peer);
        }
        self.sched.ban(peer);
    }

    /// Sets `peer` aside (it did not answer, or left): an announcement
    /// from it brings it back once the returned time is over.
    pub fn set_aside(&mut self, peer: PeerId, now: Instant) -> Duration {
        if let Stage::Manifest(asks) | Stage::Opening(asks) = &mut self.stage {
            asks.give_up(&peer);
        }
        self.sched.set_aside(peer, now)
    }

    /// Counts one more time `peer` lacked what it listed; returns how many
    /// times so far.
    pub fn lacked(&mut self, peer: PeerId) -> u32 {
        self.sched.lacked(peer)
    }

    /// Whether every piece is in (the commit is next).
    pub fn is_complete(&self) -> bool {
        matches!(self.stage, Stage::Pieces(_)) && self.sched.complete()
    }

    /// Peers that have answered no piece request, with one waiting for a
    /// second or more (asked at the end of a transfer: those that stayed
    /// silent while others delivered it).
    pub fn unanswered_peers(&self, now: Instant) -> Vec<PeerId> {
        match &self.stage {
            Stage::Pieces(_) => self.sched.silent(now, Duration::from_secs(1)),
            _ => Vec::new(),
        }
    }

    /// Peers that have left a manifest request unanswered for
    /// [`asks::GIVE_UP`] (reported once each).
    pub fn overdue_manifest_peers(&mut self, now: Instant) -> Vec<PeerId> {
        match &mut self.stage {
            Stage::Manifest(asks) => asks.overdue(now),
            _ => Vec::new(),
        }
    }

    /// Peers that have answered no piece request within [`SILENT_AFTER`].
    pub fn silent_peers(&self, now: Instant) -> Vec<PeerId> {
        match &self.stage {
            Stage::Pieces(_) => self.sched.silent(now, SILENT_AFTER),
            _ => Vec::new(),
        }
    }

    /// `peer` disconnected: it is no source until it announces again (its
    /// requests in flight are asked of others).
    pub fn forget_peer(&mut self, peer: &PeerId) {
        self.sched.remove_peer(peer);
    }

    /// Lets `peer` rest until `until` (busy, or lacking a piece).
    pub fn rest(&mut self, peer: &PeerId, until: Instant) {
        self.sched.rest(peer, until);
    }

    /// The next request to send, to `only` if given (else to any peer
    /// with room for one).
    pub fn next_request(
        &self,
        only: Option<PeerId>,
        now: Instant,
    ) -> Option<(PeerId, Request, Want)> {
        match &self.stage {
            Stage::Opening(_) | Stage::Committing => None,
            Stage::Manifest(asks) => {
                if !asks.room(now) {
                    return None;
                }
                let peer = (self.sched.askable(now)).find(|p| !asks.asked(p))?;
                let bundle = *self.bundle().0.as_bytes();
                Some((peer, Request::GetManifest { bundle }, Want::Manifest))
            }
            // Answers arrive faster than they are written: what is
            // asked next waits, rather than piling up in memory.
            Stage::Pieces(_) if self.writing >= MAX_WRITING => None,
            Stage::Pieces(t) => {
                let len = |n: u32| t.map.piece_len(n);
                let peers = match only {
                    Some(p) => Either::Left(std::iter::once(p)),
                    None => Either::Right(self.sched.peers()),
                };
                peers.into_iter().find_map(|peer| {
                    let pieces = self.sched.pick(&peer, now, len)?;
                    let bytes = pieces.iter().map(|&n| len(n)).sum();
                    let ids = pieces
                        .iter()
                        .map(|&n| {
                            let r = t.map.locate(n);
                            (*t.map.blobs()[r.blob].entry.blake3.as_bytes(), r.index)
                        })
                        .collect();
                    Some((
                        peer,
                        Request::GetPieces { pieces: ids },
                        Want::Pieces(pieces, bytes),
                    ))
                })
            }
        }
    }

    /// Records a request sent.
    pub fn sent(&mut self, key: ReqId, peer: PeerId, want: Want, now: Instant) {
        match (&mut self.stage, want) {
            (Stage::Manifest(asks), Want::Manifest) => asks.sent(key, peer, now),
            (Stage::Pieces(_), Want::Pieces(pieces, bytes)) => {
                self.sched.sent(key, peer, pieces, bytes, now)
            }
            _ => {}
        }
    }

    /// Takes the answer to request `key` from `peer` (`Err` when the
    /// request failed). Pieces and manifests come back as a job to run off
    /// the loop.
    pub fn on_answer(
        &mut self,
        store: &Store,
        key: ReqId,
        peer: PeerId,
        answer: Result<Response, Failed>,
        now: Instant,
    ) -> Result<Option<Job>, FetchError> {
        let wire = match &answer {
            Ok(Response::Pieces(p) | Response::Manifest(p)) => p.data.len() as u64,
            _ => 0,
        };
        self.wire_bytes += wire;
        if wire > 0 {
            *self.wire_from.entry(peer).or_default() += wire;
        }
        // Routed by what was asked: an answer of another kind is a fault,
        // and the request it answers is freed either way.
        let fault = |answer: Result<Response, Failed>| match answer {
            Ok(Response::NotFound) => Fault::NotFound,
            Ok(Response::Busy) => Fault::Busy,
            Err(Failed::NoAnswer(e)) => Fault::NoAnswer(e),
            Err(Failed::Malformed(e)) => Fault::Malformed(e),
            Ok(_) => Fault::Unexpected,
        };
        match &mut self.stage {
            Stage::Opening(asks) => {
                // One manifest is being opened; another answer is let go.
                asks.answered(&key);
                Ok(None)
            }
            Stage::Committing => Ok(None),
            Stage::Manifest(asks) => {
                if asks.answered(&key).is_none() {
                    return Ok(None); // not a request of this fetch
                }
                let Ok(Response::Manifest(packed)) = answer else {
                    return Err(fault(answer).into());
                };
                let asks = std::mem::take(asks);
                self.stage = Stage::Opening(asks);
                Ok(Some(Job::Open(OpenJob {
                    bundle: self.bundle(),
                    generation: self.seed,
                    store: store.clone(),
                    partial: self.partial.clone(),
                    source: Source::Sent(peer, packed),
                })))
            }
            Stage::Pieces(t) => {
                let Some((_, pieces)) = self.sched.answered(&key, wire, now) else {
                    return Ok(None); // its peer was dropped meanwhile
                };
                let packed = match answer {
                    Ok(Response::Pieces(p)) if u64::from(p.raw_len) <= MAX_BATCH_BYTES => p,
                    Ok(Response::Pieces(_)) => {
                        self.sched.failed(&pieces);
                        return Err(Fault::BadData.into());
                    }
                    other => {
                        self.sched.failed(&pieces);
                        return Err(fault(other).into());
                    }
                };
                self.writing += 1;
                Ok(Some(Job::Write(WriteJob {
                    bundle: self.target,
                    peer,
                    pieces,
                    map: t.map.clone(),
                    partial: self.partial.clone(),
                    packed,
                })))
            }
        }
    }

    /// Takes the result of an [`OpenJob`]: with the manifest in, the
    /// pieces stage begins (sources heard of meanwhile included).
    pub fn on_opened(&mut self, o: Opened) -> Result<(), FetchError> {
        let Stage::Opening(asks) = &mut self.stage else {
            return Ok(()); // a stale result, maybe of a fetch dropped since
        };
        if o.generation != self.seed {
            return Ok(());
        }
        let asks = std::mem::take(asks);
        let open = match o.result {
            Ok(Some(open)) => open,
            Ok(None) => {
                self.stage = Stage::Manifest(asks);
                return Ok(());
            }
            Err(e) => {
                // The requests still waiting may bring a good one.
                self.stage = Stage::Manifest(asks);
                if o.peer.is_none() {
                    tracing::warn!(bundle = %self.bundle(), "cannot resume: {e}");
                    return Ok(());
                }
                return Err(e);
            }
        };
        let Open {
            manifest,
            bytes,
            map,
            have,
            reused,
            in_store,
            gc_guard,
        } = *open;
        self.sched.open(have);
        self.bytes_total = (map.blobs().iter().zip(&in_store))
            .filter(|(_, stored)| !**stored)
            .map(|(blob, _)| blob.entry.size)
            .sum();
        self.reused = reused;
        self.bytes_done = reused;
        if reused > 0 {
            tracing::info!(bundle = %self.bundle(), reused, "resumed: verified pieces on disk reused");
        }
        self.gc_guard = gc_guard;
        self.stage = Stage::Pieces(Box::new(Transfer {
            manifest: Arc::new(manifest),
            manifest_bytes: Arc::new(bytes),
            map: Arc::new(map),
            in_store,
        }));
        self.have_changed = true;
        Ok(())
    }

    /// Takes the result of a [`WriteJob`].
    pub fn on_written(&mut self, w: Written) -> Result<(), FetchError> {
        self.writing = self.writing.saturating_sub(1);
        let Stage::Pieces(t) = &mut self.stage else {
            return Ok(());
        };
        if let Err(e) = w.result {
            self.sched.failed(&w.pieces);
            return Err(e);
        }
        for &n in &w.pieces {
            if self.sched.have().get(n) {
                continue; // an endgame duplicate
            }
            self.sched.verified(&[n]);
            self.bytes_done += t.map.piece_len(n);
            self.have_changed = true;
        }
        Ok(())
    }

    /// When every piece is in: the commit to run (the fetch is
    /// `Committing` from then on).
    pub fn take_commit(&mut self, store: &Store) -> Option<CommitJob> {
        if !self.is_complete() {
            return None;
        }
        let Stage::Pieces(t) = std::mem::replace(&mut self.stage, Stage::Committing) else {
            unreachable!("checked above");
        };
        self.commit_started = Some(Instant::now());
        Some(CommitJob {
            store: store.clone(),
            partial: self.partial.clone(),
            manifest: t.manifest,
            map: t.map,
            release: self.release.clone(),
            also: self.also.clone(),
        })
    }
}

/// Work a fetch hands out to run off the event loop.
pub enum Job {
    /// Open the fetch with the manifest a peer sent.
    Open(OpenJob),
    /// Verify and write pieces.
    Write(WriteJob),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_served_a_fetch_reads_as_peer_bytes_pairs() {
        let mut from = BTreeMap::new();
        assert_eq!(wire_from_text(&from), "-");
        let (a, b) = (PeerId::random(), PeerId::random());
        from.insert(a, 10);
        from.insert(b, 2_048);
        let text = wire_from_text(&from);
        let mut pairs: Vec<&str> = text.split(',').collect();
        pairs.sort();
        let mut want = vec![format!("{a}=10"), format!("{b}=2048")];
        want.sort();
        assert_eq!(pairs, want);
    }
}
