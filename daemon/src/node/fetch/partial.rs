//! A fetch's pieces on disk, so that a crash or restart loses none of them.
//!
//! ```text
//! STORE/partial/<bundle id>/
//!   manifest          the canonical manifest (checked against the id on reuse)
//!   <blob blake3>     one file per blob the store lacks, filled piece by
//!                     piece at its offset (pwrite), from any thread
//! ```
//!
//! Nothing here is trusted: when a fetch starts over (after a restart, or
//! when a release is announced again), every piece already on disk is
//! read back and hashed against the signed manifest, and only matching
//! ones count. So the files need no sync while being filled; the store's
//! batch syncs them once, when the release is committed and they move
//! into `blobs/`. The kernel is asked to start writing each piece out as
//! it lands ([`durable::start_writeback`]), so that sync finds little left
//! to do.
//!
//! While a fetch runs, each piece is verified in memory before it is
//! written and is not read back: bytes changed on disk under a running
//! fetch (by anything but lanseed) are found when the fetch starts over,
//! by a peer they are served to (which drops this node), or by
//! `lanseed store verify` once committed. Reading every piece back would
//! cost a second pass over the bundle for a fault the disk itself guards
//! against.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lanseed_protocol::hash::{BundleId, Hash};
use lanseed_protocol::limits::PIECE_SIZE;
use lanseed_protocol::pieces::{Bitfield, PieceMap, piece_offset};
use lanseed_protocol::store::{CommitOutcome, StoreError, durable};
use lanseed_protocol::{Store, VerifiedRelease};

/// The partial folder of one bundle.
#[derive(Clone, Debug)]
pub struct Partial {
    dir: PathBuf,
}

const MANIFEST: &str = "manifest";

impl Partial {
    /// The folder of `bundle` (not created yet).
    pub fn of(store: &Store, bundle: &BundleId) -> Partial {
        Partial {
            dir: store.partial_dir().join(bundle.to_string()),
        }
    }

    /// The manifest a previous run saved, if it is the bundle's.
    pub fn saved_manifest(&self, bundle: &BundleId) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.dir.join(MANIFEST)).ok()?;
        (Hash::of(&bytes) == bundle.0).then_some(bytes)
    }

    /// Creates the folder and saves the manifest (already checked against
    /// the bundle id).
    pub fn save_manifest(&self, bytes: &[u8]) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(StoreError::io("cannot create", &self.dir))?;
        let path = self.dir.join(MANIFEST);
        std::fs::write(&path, bytes).map_err(StoreError::io("cannot write", &path))
    }

    /// Where the blob `hash` is being filled.
    pub fn blob_path(&self, hash: &Hash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// The pieces already held: those of blobs the store has, and those on
    /// disk here that match their signed hash (read back and hashed).
    /// Returns the bitfield, how many bytes on disk here were reused, and
    /// per blob whether the store has it (one look, used from then on).
    /// A partial file longer than its blob is cut to size first: nothing
    /// past the blob's end may ever reach the store.
    pub fn scan(&self, store: &Store, map: &PieceMap) -> (Bitfield, u64, Vec<bool>) {
        let mut have = Bitfield::new(map.len());
        let mut reused = 0;
        let mut in_store = Vec::with_capacity(map.blobs().len());
        let mut buf = Vec::with_capacity(PIECE_SIZE as usize);
        for (i, blob) in map.blobs().iter().enumerate() {
            let pieces = map.pieces_of(i);
            let stored = store.has_blob(&blob.entry.blake3);
            in_store.push(stored);
            if stored {
                pieces.for_each(|n| have.set(n));
                continue;
            }
            let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.blob_path(&blob.entry.blake3))
            else {
                continue;
            };
            if file.metadata().is_ok_and(|m| m.len() > blob.entry.size)
                && file.set_len(blob.entry.size).is_err()
            {
                continue;
            }
            for n in pieces {
                buf.clear();
                let index = map.locate(n).index;
                if read_piece(&file, index, map.piece_len(n), &mut buf).is_ok()
                    && map.is_piece(n, &buf)
                {
                    have.set(n);
                    reused += buf.len() as u64;
                }
            }
        }
        (have, reused, in_store)
    }

    /// Removes the folder.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Moves every blob into the store and commits `release` (and `also`,
    /// releases of the same bundle) through a batch: one sync, renames,
    /// one sync, index commit. Then removes the folder.
    ///
    /// A release that needs another bundle still missing (a Capgo payload)
    /// is not committed: the blobs and manifest go into place, and the
    /// answer says so, so that the node fetches the rest. The same for
    /// each of `also`.
    pub fn commit(
        &self,
        store: &Store,
        manifest: &lanseed_protocol::Manifest,
        map: &PieceMap,
        release: &VerifiedRelease,
        also: &[VerifiedRelease],
    ) -> Result<Committed, StoreError> {
        let batch = store.begin()?;
        let fetched = batch.put_manifest(manifest)?;
        for f in manifest.files().iter().filter(|f| f.size == 0) {
            batch.put_blob(&f.blake3, &[])?;
        }
        for blob in map.blobs() {
            batch.stage_file(self.blob_path(&blob.entry.blake3), &blob.entry.blake3)?;
        }
        let lacks_other = |r: &VerifiedRelease| {
            r.release()
                .bundles()
                .any(|b| b != fetched && store.check_complete(&b).is_err())
        };
        let outcome = if lacks_other(release) {
            // The batch holds the collection off until the files are in
            // place; the fetch of the rest holds it off from its start.
            batch.publish()?;
            None
        } else {
            Some(batch.commit(release)?)
        };
        let mut waiting = Vec::new();
        for r in also {
            if lacks_other(r) {
                waiting.push(r.clone());
            } else {
                store.add_release(r)?;
            }
        }
        self.remove();
        Ok(Committed { outcome, waiting })
    }
}

/// What a [`Partial::commit`] did.
#[derive(Debug)]
pub struct Committed {
    /// The release committed (and whether the store held it already), or
    /// `None`: it needs another bundle, still to fetch.
    pub outcome: Option<CommitOutcome>,
    /// Releases of `also` that need another bundle, still to fetch.
    pub waiting: Vec<VerifiedRelease>,
}

/// Writes `data` as piece `index` of the blob filled at `path`.
pub fn write_piece(path: &Path, index: u32, data: &[u8]) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.write_all_at(data, piece_offset(index))?;
    durable::start_writeback(&file, piece_offset(index), data.len() as u64);
    Ok(())
}

/// Appends the `len` bytes of piece `index` of `file` to `out` (read into
/// spare capacity, no zero-filling); on error or a short file `out` is left
/// as it was.
pub fn read_piece(file: &File, index: u32, len: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let at = out.len();
    out.reserve(len as usize);
    let mut f = file;
    let read = f
        .seek(SeekFrom::Start(piece_offset(index)))
        .and_then(|_| f.take(len).read_to_end(out));
    match read {
        Ok(n) if n as u64 == len => Ok(()),
        Ok(_) => {
            out.truncate(at);
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
        Err(e) => {
            out.truncate(at);
            Err(e)
        }
    }
}
