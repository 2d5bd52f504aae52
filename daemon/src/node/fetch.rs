//! One fetch: a verified release whose bundle the node does not hold yet.
//!
//! The manifest comes first and is checked against the signed bundle id;
//! then every file the store lacks is fetched piece by piece, each piece
//! checked against the manifest before it is written, each file against
//! its BLAKE3 when complete. The batch commits the release when all files
//! are in. A provider that answers with anything wrong, or not at all
//! within the timeout, is dropped from this fetch and not asked again.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::time::Instant;

use lanseed_protocol::hash::{BundleId, Hash};
use lanseed_protocol::manifest::{FileDigester, FileEntry, Manifest, piece_count};
use lanseed_protocol::store::batch::BlobWriter;
use lanseed_protocol::store::{Batch, CommitOutcome, StoreError};
use lanseed_protocol::wire::{Request, Response};
use lanseed_protocol::{Store, VerifiedRelease};
use libp2p::PeerId;

/// What a peer did wrong.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The bytes do not match what the signed manifest says.
    #[error("sent data that does not match its hash")]
    BadData,
    /// It does not have what it announced.
    #[error("does not have what it announced")]
    NotFound,
    /// An answer to another question.
    #[error("answered with the wrong kind of message")]
    Unexpected,
    /// The request failed or timed out.
    #[error("did not answer: {0}")]
    NoAnswer(String),
}

struct Current {
    entry: FileEntry,
    next: u64,
    writer: BlobWriter,
    digester: FileDigester,
}

/// The state of one fetch.
pub struct Fetch {
    /// The release being fetched.
    pub release: VerifiedRelease,
    providers: Vec<PeerId>,
    bad: HashSet<PeerId>,
    manifest: Option<Manifest>,
    batch: Batch,
    queue: VecDeque<FileEntry>,
    current: Option<Current>,
    /// The one request in flight, if any: answers to anything else are
    /// ignored.
    pub outstanding: Option<libp2p::request_response::OutboundRequestId>,
    /// Other verified releases of the same bundle, committed with it.
    pub also: Vec<VerifiedRelease>,
    stalled_since: Option<Instant>,
    /// Bytes verified so far.
    pub bytes_done: u64,
    /// Bytes to fetch (known once the manifest is in).
    pub bytes_total: u64,
    /// When it started.
    pub started: Instant,
}

/// What to do next.
pub enum Next {
    /// Send this request to this peer.
    Ask(PeerId, Request),
    /// Every file is in: commit.
    Complete,
    /// No provider left to ask.
    Stalled,
}

impl Fetch {
    /// Starts fetching `release`, first from `provider`.
    pub fn new(
        store: &Store,
        release: VerifiedRelease,
        provider: PeerId,
    ) -> Result<Fetch, StoreError> {
        Ok(Fetch {
            release,
            providers: vec![provider],
            bad: HashSet::new(),
            manifest: None,
            batch: store.begin()?,
            queue: VecDeque::new(),
            current: None,
            outstanding: None,
            also: Vec::new(),
            stalled_since: None,
            bytes_done: 0,
            bytes_total: 0,
            started: Instant::now(),
        })
    }

    /// The bundle being fetched.
    pub fn bundle(&self) -> BundleId {
        self.release.release().bundle_id
    }

    /// Another peer that announced the release.
    pub fn add_provider(&mut self, peer: PeerId) {
        if !self.providers.contains(&peer) && !self.bad.contains(&peer) {
            self.providers.push(peer);
        }
    }

    /// Peers still usable.
    pub fn providers(&self) -> usize {
        self.providers.len()
    }

    /// How long it has had no peer to ask (zero while it has one).
    pub fn stalled_for(&mut self) -> std::time::Duration {
        if self.providers.is_empty() {
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
        self.manifest.is_some()
    }

    /// Drops `peer` from this fetch for good (it sent bad data).
    pub fn ban(&mut self, peer: PeerId) {
        self.providers.retain(|p| *p != peer);
        self.bad.insert(peer);
    }

    /// Sets `peer` aside (it did not answer); a new announcement from it
    /// brings it back.
    pub fn set_aside(&mut self, peer: PeerId) {
        self.providers.retain(|p| *p != peer);
    }

    /// The next request, or whether the fetch is complete or stalled.
    pub fn next(&mut self, store: &Store) -> Result<Next, StoreError> {
        let Some(&peer) = self.providers.first() else {
            return Ok(Next::Stalled);
        };
        if self.manifest.is_none() {
            return Ok(Next::Ask(
                peer,
                Request::GetManifest {
                    bundle: *self.bundle().0.as_bytes(),
                },
            ));
        }
        loop {
            if let Some(c) = &self.current {
                return Ok(Next::Ask(
                    peer,
                    Request::GetPiece {
                        blob: *c.entry.blake3.as_bytes(),
                        index: c.next as u32,
                    },
                ));
            }
            let Some(entry) = self.queue.pop_front() else {
                return Ok(Next::Complete);
            };
            if entry.size == 0 || store.has_blob(&entry.blake3) {
                if entry.size == 0 {
                    self.batch.put_blob(&entry.blake3, &[])?;
                }
                continue;
            }
            self.current = Some(Current {
                writer: self.batch.blob_writer()?,
                digester: FileDigester::new(),
                next: 0,
                entry,
            });
        }
    }

    /// Takes an answer from `peer`; a fault means the peer must be dropped.
    pub fn on_response(&mut self, store: &Store, response: Response) -> Result<(), FetchError> {
        match (self.manifest.is_some(), response) {
            (_, Response::NotFound) => Err(Fault::NotFound.into()),
            (false, Response::Manifest(bytes)) => {
                if Hash::of(&bytes) != self.bundle().0 {
                    return Err(Fault::BadData.into());
                }
                let manifest = Manifest::from_bytes(&bytes).map_err(|_| Fault::BadData)?;
                let mut seen = HashSet::new();
                for f in manifest.files() {
                    if seen.insert(f.blake3) && !store.has_blob(&f.blake3) {
                        self.bytes_total += f.size;
                        self.queue.push_back(f.clone());
                    }
                }
                self.batch.put_manifest(&manifest)?;
                self.manifest = Some(manifest);
                Ok(())
            }
            (true, Response::Piece(bytes)) => {
                let c = self.current.as_mut().ok_or(Fault::Unexpected)?;
                let range = c.entry.piece_range(c.next);
                let expected = c.entry.piece_hash(c.next).ok_or(Fault::Unexpected)?;
                if bytes.len() as u64 != range.end - range.start || Hash::of(&bytes) != expected {
                    return Err(Fault::BadData.into());
                }
                c.writer
                    .write_all(&bytes)
                    .map_err(|e| StoreError::io("cannot write", c.writer.path())(e))?;
                c.digester.update(&bytes);
                c.next += 1;
                self.bytes_done += bytes.len() as u64;
                if c.next == piece_count(c.entry.size) {
                    let c = self.current.take().expect("current file");
                    let digest = c.digester.finish();
                    if digest.blake3 != c.entry.blake3 || digest.size != c.entry.size {
                        // Pieces matched but the whole does not: the
                        // manifest itself is inconsistent (its publisher's
                        // fault); nothing to retry.
                        return Err(FetchError::Inconsistent(c.entry.path.to_string()));
                    }
                    self.batch.finish_blob(c.writer, &c.entry.blake3)?;
                }
                Ok(())
            }
            _ => Err(Fault::Unexpected.into()),
        }
    }

    /// Commits the release, and the other releases of the same bundle
    /// (every file is in).
    pub fn commit(self) -> Result<(VerifiedRelease, CommitOutcome), StoreError> {
        let store = self.batch.store().clone();
        let outcome = self.batch.commit(&self.release)?;
        for r in &self.also {
            store.add_release(r)?;
        }
        Ok((self.release, outcome))
    }
}

/// Why a response was not taken.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The peer misbehaved: drop it and go on with others.
    #[error("peer {0}")]
    Peer(#[from] Fault),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signed manifest contradicts itself.
    #[error("file {0} of the signed manifest contradicts its own piece hashes")]
    Inconsistent(String),
}
