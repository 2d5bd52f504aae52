//! Packing: a web build folder into a store, as a bundle and a signed
//! release.
//!
//! The folder is walked, every file is hashed (BLAKE3, SHA-256, pieces) and
//! staged as a blob by a small pool of threads, the manifest is built, the
//! release is signed and verified against the signing key, and the batch is
//! committed (see [`crate::store::durable`] for the write order). The same
//! folder always gives the same bundle id: only paths and bytes count, not
//! modification times, permissions or the order files were created in.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::capgo::{self, CapgoPrivateKey, payload::PayloadError};
use crate::keys::SecretKey;
use crate::limits::{MAX_FILE_SIZE, MAX_FILES, PIECE_SIZE};
use crate::manifest::{FileDigest, FileDigester, FileEntry, Manifest, ManifestError};
use crate::path::{BundlePath, PathError};
use crate::release::{Release, ReleaseError, Rollout, VerifiedRelease, VerifyError};
use crate::store::{Batch, CommitOutcome, Store, StoreError, next_seq};
use crate::zip::{SafeZip, ZipError};

/// Files up to this size are read whole and hashed in memory; larger ones
/// stream through a fixed buffer.
const IN_MEMORY_MAX: u64 = 4 * PIECE_SIZE;

/// What a release made by [`pack_dir`] says besides its bundle.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// Version (semver).
    pub version: String,
    /// Sequence number; `None` takes the store's default.
    pub seq: Option<u64>,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Lowest native version that may install it.
    pub min_native_version: Option<String>,
    /// Share of devices.
    pub rollout: Rollout,
    /// Expiry, Unix seconds.
    pub expires: Option<u64>,
    /// Release notes.
    pub notes: Option<String>,
    /// A Capgo private key: the release then carries the Capgo encryption
    /// v2 artefacts of its bundle (see [`crate::capgo`]).
    pub capgo: Option<CapgoPrivateKey>,
}

/// What [`pack_dir`] made.
#[derive(Debug)]
pub struct Packed {
    /// The signed, verified release.
    pub release: VerifiedRelease,
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// Whether the store already held it.
    pub outcome: CommitOutcome,
}

/// Why a folder could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The source is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// No `index.html` at the root of the build.
    #[error(
        "{0} has no index.html at its root; point lanseed at the web build folder (Capacitor's webDir, e.g. ./dist)"
    )]
    NoIndexHtml(PathBuf),
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A name that is not UTF-8.
    #[error("{0} has a name that is not valid UTF-8; rename it")]
    NotUtf8(PathBuf),
    /// A path a bundle cannot hold.
    #[error("{path}: {source}")]
    BadPath {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PathError,
    },
    /// Something that is neither a file nor a directory.
    #[error(
        "{0} is not a regular file or directory (a symlink to a directory, socket or device); remove it from the build"
    )]
    NotRegular(PathBuf),
    /// A symlink whose target does not exist.
    #[error("{0} is a broken symlink; remove it or fix its target")]
    BrokenLink(PathBuf),
    /// A symlink to a file outside the build folder.
    #[error(
        "{0} is a symlink to {1}, outside the build folder; copy the file into the build instead"
    )]
    LinkOutside(PathBuf, PathBuf),
    /// A file larger than a bundle may hold.
    #[error("{path} is {size} bytes, more than the limit of {MAX_FILE_SIZE} for one file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// More files than a bundle may hold.
    #[error("the build has more than {MAX_FILES} files")]
    TooManyFiles,
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The release statement is invalid.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The fresh signature did not verify (a broken key file).
    #[error("the new release does not verify with its own key: {0}")]
    Verify(#[from] VerifyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The zip was refused.
    #[error(transparent)]
    Zip(#[from] ZipError),
    /// A file changed while it was read (a build still being written).
    #[error("{0} changed while it was packed; the build is still being written")]
    Changed(PathBuf),
    /// The Capgo artefacts could not be made.
    #[error("cannot make the Capgo encryption artefacts: {0}")]
    Capgo(#[from] PayloadError),
}

/// One file found in the build folder.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: BundlePath,
    pub(crate) file: PathBuf,
}

/// Lists the regular files under `dir`, sorted by bundle path.
pub(crate) fn walk(dir: &Path) -> Result<Vec<Source>, PackError> {
    if !dir.is_dir() {
        return Err(PackError::NotADirectory(dir.to_owned()));
    }
    if !dir.join("index.html").is_file() {
        return Err(PackError::NoIndexHtml(dir.to_owned()));
    }
    let root = std::fs::canonicalize(dir).map_err(|source| PackError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        let read = |source| PackError::Read {
            path: abs.clone(),
            source,
        };
        for entry in std::fs::read_dir(&abs).map_err(read)? {
            let entry = entry.map_err(read)?;
            let file = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| PackError::NotUtf8(file.clone()))?;
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().map_err(|source| PackError::Read {
                path: file.clone(),
                source,
            })?;
            if kind.is_dir() {
                stack.push((file, rel_path));
                continue;
            }
            if kind.is_symlink() {
                check_link(&root, &file)?;
            } else if !kind.is_file() {
                return Err(PackError::NotRegular(file));
            }
            let path = BundlePath::new(&rel_path).map_err(|source| PackError::BadPath {
                path: file.clone(),
                source,
            })?;
            out.push(Source { path, file });
            if out.len() > MAX_FILES {
                return Err(PackError::TooManyFiles);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A symlink counts as the file it points to, if that is a regular file
/// inside the build folder: a link must not smuggle in a file from
/// elsewhere on the publisher's disk, nor loop through directories.
fn check_link(root: &Path, link: &Path) -> Result<(), PackError> {
    let target = std::fs::canonicalize(link).map_err(|_| PackError::BrokenLink(link.to_owned()))?;
    if !target.starts_with(root) {
        return Err(PackError::LinkOutside(link.to_owned(), target));
    }
    if !target.is_file() {
        return Err(PackError::NotRegular(link.to_owned()));
    }
    Ok(())
}

/// Hashes one file and, with a batch, stages it as a blob.
fn digest_file(
    src: &Source,
    batch: Option<&Batch>,
    buf: &mut Vec<u8>,
    done: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<FileEntry, PackError> {
    let read_err = |source| PackError::Read {
        path: src.file.clone(),
        source,
    };
    let mut file = std::fs::File::open(&src.file).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_FILE_SIZE {
        return Err(PackError::TooLarge {
            path: src.file.clone(),
            size,
        });
    }
    let digest = if size <= IN_MEMORY_MAX {
        // Exactly the size the file had when opened: one read, no probing.
        buf.resize(size as usize, 0);
        file.read_exact(buf).map_err(read_err)?;
        let digest = FileDigest::of_bytes(buf);
        if let Some(batch) = batch {
            batch.put_blob(&digest.blake3, buf)?;
        }
        digest
    } else {
        stream_file(&mut file, batch, buf, &src.file)?
    };
    if digest.size > MAX_FILE_SIZE {
        return Err(PackError::TooLarge {
            path: src.file.clone(),
            size: digest.size,
        });
    }
    progress(done.fetch_add(digest.size, Ordering::Relaxed) + digest.size);
    Ok(digest.into_entry(src.path.clone()))
}

fn stream_file(
    file: &mut std::fs::File,
    batch: Option<&Batch>,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<FileDigest, PackError> {
    use std::io::Write;
    let read_err = |source| PackError::Read {
        path: path.to_owned(),
        source,
    };
    buf.resize(PIECE_SIZE as usize, 0);
    let mut digester = FileDigester::new();
    let mut writer = batch.map(Batch::blob_writer).transpose()?;
    loop {
        let n = file.read(buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
        if let Some(w) = writer.as_mut() {
            w.write_all(&buf[..n])
                .map_err(StoreError::io("cannot write", w.path()))?;
        }
        if digester.size() > MAX_FILE_SIZE {
            // The file grew past the limit while being read.
            return Err(PackError::TooLarge {
                path: path.to_owned(),
                size: digester.size(),
            });
        }
    }
    let digest = digester.finish();
    if let (Some(batch), Some(w)) = (batch, writer) {
        batch.finish_blob(w, &digest.blake3)?;
    }
    Ok(digest)
}

/// Hashes every file with a few threads; stages blobs when given a batch.
pub(crate) fn digest_all(
    sources: &[Source],
    batch: Option<&Batch>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<FileEntry>, PackError> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8)
        .min(sources.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let results: Mutex<Vec<Option<FileEntry>>> = Mutex::new(vec![None; sources.len()]);
    let first_error: Mutex<Option<PackError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = Vec::new();
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= sources.len() {
                        break;
                    }
                    match digest_file(&sources[i], batch, &mut buf, &done, progress) {
                        Ok(entry) => mine.push((i, entry)),
                        Err(e) => {
                            // Stop every worker at its next file.
                            next.store(sources.len(), Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                            break;
                        }
                    }
                }
                let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                for (i, entry) in mine {
                    results[i] = Some(entry);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|e| e.expect("every file was digested"))
        .collect())
}

/// The manifest of a web build folder, without touching any store.
pub fn manifest_of_dir(dir: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<Manifest, PackError> {
    let sources = walk(dir)?;
    Ok(Manifest::new(digest_all(&sources, None, progress)?)?)
}

/// Packs the web build in `dir` into `store` as a release signed by `key`.
/// `progress` is called with the bytes hashed so far.
pub fn pack_dir(
    store: &Store,
    dir: &Path,
    opts: &PackOptions,
    key: &SecretKey,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Packed, PackError> {
    pack_scanned(store, scan_dir(dir)?, opts, key, progress)
}

/// A build folder whose files were listed and whose paths all passed the
/// checks (see [`scan_dir`]); nothing is read or written yet.
#[derive(Debug)]
pub struct ScannedDir {
    sources: Vec<Source>,
}

impl ScannedDir {
    /// Total size of the files, for a progress bar.
    pub fn total_size(&self) -> u64 {
        self.sources
            .iter()
            .filter_map(|s| std::fs::metadata(&s.file).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Lists and checks the build folder `dir` (index.html, paths, links),
/// so that a bad folder fails before any store is touched.
pub fn scan_dir(dir: &Path) -> Result<ScannedDir, PackError> {
    Ok(ScannedDir {
        sources: walk(dir)?,
    })
}

/// [`pack_dir`] for a folder [`scan_dir`] already checked.
pub fn pack_scanned(
    store: &Store,
    scanned: ScannedDir,
    opts: &PackOptions,
    key: &SecretKey,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Packed, PackError> {
    let sources = scanned.sources;
    // Check the statement before the slow part, so a typo fails at once.
    draft(opts, 0).check()?;
    let batch = store.begin()?;
    let started = std::time::Instant::now();
    let files = digest_all(&sources, Some(&batch), progress)?;
    tracing::debug!(
        files = sources.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "hashed and staged"
    );
    finish(batch, files, opts, key)
}

/// Packs the web build inside a zip (checked by [`SafeZip::open`]) into
/// `store`, like [`pack_dir`]. A zip refused while inflating leaves the
/// store as it was.
pub fn pack_zip(
    store: &Store,
    mut zip: SafeZip,
    opts: &PackOptions,
    key: &SecretKey,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Packed, PackError> {
    use std::io::Write;
    draft(opts, 0).check()?;
    let batch = store.begin()?;
    let mut files = Vec::with_capacity(zip.entries().len());
    let mut done = 0u64;
    let mut buf = Vec::new();
    for i in 0..zip.entries().len() {
        let entry = zip.entries()[i].clone();
        let digest = if entry.declared_size <= IN_MEMORY_MAX {
            // Grows with the bytes actually inflated, never from the
            // declared size.
            buf.clear();
            zip.read(i, Some(IN_MEMORY_MAX), &mut |chunk| {
                buf.extend_from_slice(chunk);
                Ok(())
            })?;
            let digest = FileDigest::of_bytes(&buf);
            batch.put_blob(&digest.blake3, &buf)?;
            digest
        } else {
            let mut digester = FileDigester::new();
            let mut writer = batch.blob_writer()?;
            zip.read(i, Some(MAX_FILE_SIZE), &mut |chunk| {
                digester.update(chunk);
                writer.write_all(chunk)
            })?;
            let digest = digester.finish();
            batch.finish_blob(writer, &digest.blake3)?;
            digest
        };
        done += digest.size;
        progress(done);
        files.push(digest.into_entry(entry.path));
    }
    finish(batch, files, opts, key)
}

fn draft(opts: &PackOptions, seq: u64) -> Release {
    Release {
        app: opts.app.clone(),
        channel: opts.channel.clone(),
        version: opts.version.clone(),
        bundle_id: crate::BundleId(crate::Hash::from_bytes([0; 32])),
        seq,
        created: opts.created,
        min_native_version: opts.min_native_version.clone(),
        rollout: opts.rollout,
        expires: opts.expires,
        notes: opts.notes.clone(),
        capgo: None,
    }
}

/// Builds the manifest, signs the release and commits the batch.
pub(crate) fn finish(
    batch: Batch,
    files: Vec<FileEntry>,
    opts: &PackOptions,
    key: &SecretKey,
) -> Result<Packed, PackError> {
    let manifest = Manifest::new(files)?;
    let bundle_id = batch.put_manifest(&manifest)?;
    let capgo = match &opts.capgo {
        Some(key) => {
            // The bundle's zip is made from the store: its files go into
            // place first (the batch holds the collection off meanwhile).
            batch.publish()?;
            Some(capgo::payload::make_section(
                batch.store(),
                &batch,
                &bundle_id,
                key,
            )?)
        }
        None => None,
    };
    let started = std::time::Instant::now();
    // The sequence number is chosen under the index lock, so two packs at
    // once never pick the same one.
    let (release, outcome) = batch.commit_with(|held| {
        let seq = opts
            .seq
            .unwrap_or_else(|| next_seq(held, &opts.app, &opts.channel, opts.created));
        Release {
            bundle_id,
            capgo,
            ..draft(opts, seq)
        }
        .sign_verified::<PackError>(key)
    })?;
    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "committed");
    Ok(Packed {
        release,
        manifest,
        outcome,
    })
}
