//! Writing to a store: stage blobs and a manifest, then commit a release.
//!
//! A [`Batch`] owns a private directory under `tmp/`. Staging writes files
//! there (from any number of threads); [`Batch::commit`] makes them durable
//! and renames them into place in the order [`super::durable`] documents,
//! then adds the release to the index. A batch dropped without commit
//! removes its staging directory; one killed mid-way leaves it behind for
//! `lanseed store gc`, and nothing in it is ever read.
//!
//! Locks: a batch holds `gc.lock` shared for its whole life, so garbage
//! collection (which takes it exclusively) never deletes a blob that a
//! running batch has published but not yet committed. Index changes take
//! `index.lock` exclusively around their read-modify-write.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::crashpoint;
use crate::hash::{BundleId, Hash};
use crate::manifest::Manifest;
use crate::release::{SignedRelease, VerifiedRelease};

use super::{Store, StoreError, durable, index};

/// Suffix of files being staged; a name with it is never read, and one
/// left behind by a crash is removed by `lanseed store gc`.
pub const TEMP_SUFFIX: &str = ".tmp";

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The release is new in this store.
    Added,
    /// The store already held this exact release.
    AlreadyPresent,
}

/// Staged writes to a store, committed together.
pub struct Batch {
    store: Store,
    dir: PathBuf,
    nonce: String,
    fanout_ready: [AtomicBool; 256],
    fanout_created: [AtomicBool; 256],
    counter: AtomicU64,
    staged: Mutex<Vec<Staged>>,
    /// Blobs staged by this batch: a build with two identical files stages
    /// the bytes once.
    claimed: Mutex<HashSet<Hash>>,
    _gc_guard: File,
}

struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    /// Written by the batch (else adopted with [`Batch::stage_file`]: an
    /// abandoned batch leaves such a file where it found it).
    owned: bool,
}

/// A blob being written whose hash is known only at the end.
pub struct BlobWriter {
    file: File,
    tmp: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Where the bytes are going.
    pub fn path(&self) -> &Path {
        &self.tmp
    }
}

impl Store {
    /// Starts a batch of writes.
    pub fn begin(&self) -> Result<Batch, StoreError> {
        let guard = self.read_guard()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let nonce = format!("{}-{nanos}", std::process::id());
        let dir = self.root.join("tmp").join(format!("batch-{nonce}"));
        std::fs::create_dir_all(&dir).map_err(StoreError::io("cannot create", &dir))?;
        Ok(Batch {
            store: self.clone(),
            dir,
            nonce,
            fanout_ready: std::array::from_fn(|_| AtomicBool::new(false)),
            fanout_created: std::array::from_fn(|_| AtomicBool::new(false)),
            counter: AtomicU64::new(0),
            staged: Mutex::new(Vec::new()),
            claimed: Mutex::new(HashSet::new()),
            _gc_guard: guard,
        })
    }

    /// Adds a release whose bundle is already complete in the store (for
    /// example a new rollout statement for a bundle the store holds).
    pub fn add_release(&self, release: &VerifiedRelease) -> Result<CommitOutcome, StoreError> {
        let _guard = self.read_guard()?;
        self.commit_release(release)
    }

    /// Holds `gc.lock` shared until dropped: garbage collection waits, so
    /// nothing the holder reads is deleted meanwhile (verify, export,
    /// serving peers).
    pub fn read_guard(&self) -> Result<File, StoreError> {
        let guard = self.lock_file("gc.lock")?;
        guard
            .lock_shared()
            .map_err(StoreError::io("cannot lock", &self.root.join("gc.lock")))?;
        Ok(guard)
    }

    fn commit_release(&self, release: &VerifiedRelease) -> Result<CommitOutcome, StoreError> {
        self.commit_release_with(|_| Ok::<_, StoreError>(release.clone()))
            .map(|(_, outcome)| outcome)
    }

    /// Adds the release `make` returns to the index. `make` runs under the
    /// index lock and sees the releases already held, so it can choose a
    /// sequence number no concurrent writer takes. A release equal to a
    /// held one in app, channel, sequence, bundle and publisher counts as
    /// already present (a re-run of the same pack), whatever its time.
    pub fn commit_release_with<E: From<StoreError>>(
        &self,
        make: impl FnOnce(&[SignedRelease]) -> Result<VerifiedRelease, E>,
    ) -> Result<(VerifiedRelease, CommitOutcome), E> {
        let lock = self.lock_file("index.lock")?;
        lock.lock()
            .map_err(StoreError::io("cannot lock", &self.root.join("index.lock")))?;
        let mut all = index::read(&self.root)?;
        let release = make(&all)?;
        for bundle in release.release().bundles() {
            self.check_complete(&bundle)?;
        }
        let new = release.release();
        for held in &all {
            let r = held.release();
            if r.app != new.app || r.channel != new.channel || r.seq != new.seq {
                continue;
            }
            if held.id() == release.id()
                || (r.bundle_id == new.bundle_id && held.publisher() == release.publisher())
            {
                return Ok((release, CommitOutcome::AlreadyPresent));
            }
            return Err(StoreError::SeqConflict {
                app: new.app.clone(),
                channel: new.channel.clone(),
                seq: new.seq,
            }
            .into());
        }
        all.push(release.signed().clone());
        index::write(&self.root, &all)?;
        Ok((release, CommitOutcome::Added))
    }
}

impl Batch {
    fn tmp_path(&self) -> PathBuf {
        self.dir
            .join(self.counter.fetch_add(1, Ordering::Relaxed).to_string())
    }

    /// The store this batch writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stages a blob whose bytes the caller has hashed. Does nothing when
    /// the store already has it.
    pub fn put_blob(&self, hash: &Hash, data: &[u8]) -> Result<(), StoreError> {
        if self.store.has_blob(hash) || !self.claim(hash) {
            return Ok(());
        }
        // Staged next to its final name (`<hash>.<nonce>.tmp`), so the
        // rename stays within one directory, the cheapest kind.
        let dest = self.store.blob_path(hash);
        let parent = dest.parent().expect("blob paths have a parent");
        let slot = usize::from(hash.as_bytes()[0]);
        if !self.fanout_ready[slot].load(Ordering::Relaxed) {
            match std::fs::create_dir(parent) {
                Ok(()) => self.fanout_created[slot].store(true, Ordering::Relaxed),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("cannot create", parent)(e)),
            }
            self.fanout_ready[slot].store(true, Ordering::Relaxed);
        }
        let tmp = parent.join(format!("{hash}.{}{TEMP_SUFFIX}", self.nonce));
        std::fs::write(&tmp, data).map_err(StoreError::io("cannot write", &tmp))?;
        crashpoint::hit("stage: blob written");
        self.push(tmp, dest, true);
        Ok(())
    }

    /// A writer for a blob whose hash is known only once all bytes are in;
    /// finish it with [`Batch::finish_blob`].
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = self.tmp_path();
        let file = File::create(&tmp).map_err(StoreError::io("cannot create", &tmp))?;
        Ok(BlobWriter { file, tmp })
    }

    /// Stages what `writer` wrote as the blob `hash`; the caller computed
    /// `hash` from exactly those bytes.
    pub fn finish_blob(&self, writer: BlobWriter, hash: &Hash) -> Result<(), StoreError> {
        let BlobWriter { file, tmp } = writer;
        drop(file);
        if self.store.has_blob(hash) || !self.claim(hash) {
            std::fs::remove_file(&tmp).map_err(StoreError::io("cannot remove", &tmp))?;
            return Ok(());
        }
        crashpoint::hit("stage: blob written");
        self.push(tmp, self.store.blob_path(hash), true);
        Ok(())
    }

    /// Stages a file already written inside the store (a fetch's verified
    /// partial blob, see the node's `fetch::partial`): publishing moves it
    /// into place. The caller checked it holds exactly the blob `hash`.
    /// When the store or this batch already has the blob, the file is
    /// left where it is.
    pub fn stage_file(&self, path: PathBuf, hash: &Hash) -> Result<(), StoreError> {
        if self.store.has_blob(hash) || !self.claim(hash) {
            return Ok(());
        }
        self.push(path, self.store.blob_path(hash), false);
        Ok(())
    }

    /// Stages a manifest; returns its bundle id.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<BundleId, StoreError> {
        let bytes = manifest.to_bytes();
        let id = BundleId(Hash::of(&bytes));
        let dest = self.store.manifest_path(&id);
        if !dest.is_file() {
            let tmp = self.tmp_path();
            std::fs::write(&tmp, &bytes).map_err(StoreError::io("cannot write", &tmp))?;
            crashpoint::hit("stage: manifest written");
            self.push(tmp, dest, true);
        }
        Ok(id)
    }

    /// Whether this batch has not staged `hash` yet (and now has).
    fn claim(&self, hash: &Hash) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*hash)
    }

    /// Stages `tmp` to become `dest`; `owned` when the batch wrote it.
    fn push(&self, tmp: PathBuf, dest: PathBuf, owned: bool) {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Staged { tmp, dest, owned });
    }

    /// Makes staged files durable, moves them into place, and adds
    /// `release` to the index (see [`super::durable`] for the order).
    /// Fails, committing nothing, when a bundle of the release (its own, or
    /// its Capgo payload) is not complete.
    pub fn commit(self, release: &VerifiedRelease) -> Result<CommitOutcome, StoreError> {
        self.publish()?;
        self.store.commit_release(release)
    }

    /// Like [`Batch::commit`], with the release made under the index lock
    /// by `make` (see [`Store::commit_release_with`]).
    pub fn commit_with<E: From<StoreError>>(
        self,
        make: impl FnOnce(&[SignedRelease]) -> Result<VerifiedRelease, E>,
    ) -> Result<(VerifiedRelease, CommitOutcome), E> {
        self.publish()?;
        self.store.commit_release_with(make)
    }

    /// Steps 2 to 4 of [`super::durable`]: sync, rename, sync.
    pub fn publish(&self) -> Result<(), StoreError> {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|e| e.into_inner()));
        if staged.is_empty() {
            return Ok(());
        }
        let root = self.store.root();
        crashpoint::hit("sync: before data sync");
        let started = std::time::Instant::now();
        let tmps: Vec<&Path> = staged.iter().map(|s| s.tmp.as_path()).collect();
        durable::sync_data(root, &tmps).map_err(StoreError::io("cannot sync", root))?;
        let synced = started.elapsed();
        crashpoint::hit("sync: data synced");
        let mut dirs: Vec<&Path> = staged
            .iter()
            .map(|s| s.dest.parent().expect("store paths have a parent"))
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(StoreError::io("cannot create", d))?;
        }
        rename_all(&staged)?;
        let renamed = started.elapsed();
        durable::sync_names(root, &dirs).map_err(StoreError::io("cannot sync", root))?;
        crashpoint::hit("publish: names synced");
        tracing::debug!(
            files = staged.len(),
            data_sync_ms = synced.as_secs_f64() * 1e3,
            rename_ms = (renamed - synced).as_secs_f64() * 1e3,
            name_sync_ms = (started.elapsed() - renamed).as_secs_f64() * 1e3,
            "staged files published"
        );
        Ok(())
    }
}

/// Renames staged files into place, on a few threads: on a cold disk each
/// rename waits on the file system's journal, and two can wait at once.
fn rename_all(staged: &[Staged]) -> Result<(), StoreError> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let chunk = staged.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = staged
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    for s in part {
                        std::fs::rename(&s.tmp, &s.dest)
                            .map_err(StoreError::io("cannot move into place", &s.dest))?;
                        crashpoint::hit("publish: renamed into place");
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("rename worker panicked"))
    })
}

impl Drop for Batch {
    /// An abandoned batch takes back what it wrote: staged files not yet
    /// published (not files it adopted), its staging folder, and the blob
    /// folders it created that are still empty.
    fn drop(&mut self) {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|e| e.into_inner()));
        for s in staged.iter().filter(|s| s.owned) {
            let _ = std::fs::remove_file(&s.tmp);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for (i, created) in self.fanout_created.iter().enumerate() {
            if created.load(Ordering::Relaxed) {
                let _ =
                    std::fs::remove_dir(self.store.root().join("blobs").join(format!("{i:02x}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_batch_leaves_adopted_files_where_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        // A fetch's partial file, complete, adopted by the batch.
        let outside = dir.path().join("partial-blob");
        std::fs::write(&outside, b"fetched bytes").unwrap();
        let batch = store.begin().unwrap();
        batch
            .stage_file(outside.clone(), &Hash::of(b"fetched bytes"))
            .unwrap();
        batch.put_blob(&Hash::of(b"written"), b"written").unwrap();
        drop(batch);
        assert_eq!(std::fs::read(&outside).unwrap(), b"fetched bytes");
        assert!(!store.has_blob(&Hash::of(b"written")));
        assert!(!store.has_blob(&Hash::of(b"fetched bytes")));
    }
}
