//! Release files: one release, its manifest and its blobs in one file, to
//! carry on a USB stick into an offline site (`lanseed export` / `import`).
//!
//! The file is a zip with, in order: `release` (the signed record),
//! `manifest` (canonical bytes), for a release with Capgo artefacts
//! `capgo-manifest` (its payload bundle's manifest), then `blobs/<blake3
//! hex>` for each distinct file of the bundle(s). Its comment is `lanseed release file 1 blake3=` and
//! the BLAKE3 (hex) of every byte of the file before the comment, so that
//! changing any byte of the file, even one no entry depends on, is refused.
//! On import the checksum is checked first, then the zip is read with
//! [`SafeZip`], the signature is checked against the trust list and every
//! blob against its hash before anything is committed: an unsigned,
//! tampered, truncated or untrusted file changes nothing. Every check up to
//! the blobs also runs on bytes in memory ([`ReleaseFile::from_bytes`]),
//! with no file or store involved.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::hash::{BundleId, Hash};
use crate::limits::{MAX_MANIFEST_BYTES, MAX_SIGNED_RELEASE_BYTES};
use crate::manifest::{FileDigest, FileDigester, Manifest, ManifestError};
use crate::release::{ReleaseError, SignedRelease, VerifiedRelease, VerifyError};
use crate::store::{CommitOutcome, Store, StoreError, durable};
use crate::trust::TrustList;
use crate::zip::write::{BUNDLE_LEVEL, RELEASE_FILE_LEVEL, Source, write_zip};
use crate::zip::{Layout, SafeZip, ZipError, ZipLimits};

/// The zip comment that marks a release file, before the checksum.
pub const COMMENT_PREFIX: &str = "lanseed release file 1 blake3=";
const COMMENT_LEN: usize = COMMENT_PREFIX.len() + 64;
/// The entry that holds the Capgo payload bundle's manifest.
const CAPGO_MANIFEST: &str = "capgo-manifest";

/// Why a release file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseFileError {
    /// The zip was refused.
    #[error(transparent)]
    Zip(#[from] ZipError),
    /// The release record is invalid.
    #[error("the release file's release record is invalid: {0}")]
    Release(#[from] ReleaseError),
    /// The release does not verify.
    #[error("the release file is refused: {0}")]
    Verify(#[from] VerifyError),
    /// The layout is not a release file's.
    #[error("{0} is not a lanseed release file: {1}")]
    Malformed(String, String),
    /// The manifest does not match the release.
    #[error("the release file's manifest does not match its release (tampered?)")]
    ManifestMismatch,
    /// The manifest is invalid.
    #[error("the release file's manifest is invalid: {0}")]
    Manifest(#[from] ManifestError),
    /// A blob's bytes do not match its name.
    #[error("file {0} in the release file does not match its hash (tampered or damaged)")]
    BlobMismatch(Hash),
    /// A blob the bundle does not list.
    #[error("the release file holds {0}, which its bundle does not list")]
    UnexpectedBlob(String),
    /// Files neither in the release file nor in the store.
    #[error("the release file lacks {0} of the bundle's files (truncated?)")]
    Missing(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The whole-file checksum does not match.
    #[error(
        "the release file's checksum does not match its content: it was changed or damaged after export"
    )]
    Tampered,
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Writing the file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    /// Distinct files written.
    pub blobs: usize,
    /// Bytes of those files, before compression.
    pub bytes: u64,
    /// Size of the release file.
    pub file_size: u64,
}

/// Writes `release` of `store`, with its manifest and blobs, to `out`
/// (atomically: a temp file renamed into place).
pub fn export(
    store: &Store,
    release: &SignedRelease,
    out: &Path,
) -> Result<Exported, ReleaseFileError> {
    let _guard = store.read_guard()?;
    let manifest = store.check_complete(&release.release().bundle_id)?;
    let payload = match &release.release().capgo {
        Some(c) => Some(store.check_complete(&c.bundle_id)?),
        None => None,
    };
    let mut seen = HashSet::new();
    let mut entries = vec![
        ("release".to_owned(), Source::Bytes(release.to_bytes())),
        ("manifest".to_owned(), Source::Bytes(manifest.to_bytes())),
    ];
    if let Some(p) = &payload {
        entries.push((CAPGO_MANIFEST.to_owned(), Source::Bytes(p.to_bytes())));
    }
    let mut bytes = 0;
    for f in manifest
        .files()
        .iter()
        .chain(payload.iter().flat_map(|p| p.files()))
    {
        if seen.insert(f.blake3) {
            bytes += f.size;
            entries.push((
                format!("blobs/{}", f.blake3),
                Source::File(store.blob_path(&f.blake3)),
            ));
        }
    }
    let blobs = seen.len();
    let placeholder = format!("{COMMENT_PREFIX}{}", "0".repeat(64));
    write_atomically(out, |file| {
        write_zip(&mut *file, entries, RELEASE_FILE_LEVEL, Some(&placeholder))
            .map_err(std::io::Error::other)?;
        seal(file)
    })?;
    let file_size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Exported {
        blobs,
        bytes,
        file_size,
    })
}

/// Replaces the placeholder checksum at the end of a written release file
/// with the BLAKE3 of every byte before the comment.
fn seal(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let covered = len - COMMENT_LEN as u64;
    file.seek(SeekFrom::Start(0))?;
    let sum = hash_prefix(file, covered)?;
    file.seek(SeekFrom::Start(covered + COMMENT_PREFIX.len() as u64))?;
    file.write_all(sum.to_hex().as_bytes())
}

/// BLAKE3 of the first `n` bytes read from `r`.
fn hash_prefix<R: Read>(r: &mut R, n: u64) -> std::io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    let copied = std::io::copy(&mut r.take(n), &mut hasher)?;
    if copied != n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(hasher.finalize().into())
}

/// Checks the whole-file checksum of the release file read from `file`
/// (named `shown` in errors).
fn check_seal<R: Read + Seek>(file: &mut R, shown: &str) -> Result<(), ReleaseFileError> {
    let io = |source| ReleaseFileError::Io {
        path: shown.to_owned(),
        source,
    };
    let malformed = |why: &str| ReleaseFileError::Malformed(shown.to_owned(), why.to_owned());
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    let Some(covered) = len.checked_sub(COMMENT_LEN as u64) else {
        return Err(malformed("it is too short (truncated?)"));
    };
    file.seek(SeekFrom::Start(covered)).map_err(io)?;
    let mut comment = String::new();
    file.read_to_string(&mut comment)
        .map_err(|_| malformed("it does not end with a release file's checksum (truncated?)"))?;
    let claimed = comment
        .strip_prefix(COMMENT_PREFIX)
        .and_then(|hex| hex.parse::<Hash>().ok())
        .ok_or_else(|| malformed("it does not end with a release file's checksum (truncated?)"))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    if hash_prefix(file, covered).map_err(io)? != claimed {
        return Err(ReleaseFileError::Tampered);
    }
    Ok(())
}

/// Writes a file through `write`, into a temp file synced and renamed over
/// `out`.
pub(crate) fn write_atomically(
    out: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), ReleaseFileError> {
    write_renamed(out, true, write)
}

/// Writes a file through `write` into a temp file renamed over `out`;
/// with `sync`, the file and its directory are made durable first.
pub(crate) fn write_renamed(
    out: &Path,
    sync: bool,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), ReleaseFileError> {
    let err = |source| ReleaseFileError::Write {
        path: out.display().to_string(),
        source,
    };
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        write(&mut file)?;
        file.flush()?;
        if sync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, out)?;
        if !sync {
            return Ok(());
        }
        durable::sync_dir(
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// What an import did.
#[derive(Debug)]
pub struct Imported {
    /// The verified release.
    pub release: VerifiedRelease,
    /// Whether the store already held it.
    pub outcome: CommitOutcome,
    /// Files taken from the release file.
    pub blobs: usize,
    /// Bytes of those files.
    pub bytes: u64,
}

/// A release file whose release verified and whose manifest matches it;
/// its blobs are checked by [`ReleaseFile::import`]. Read from `R`: a
/// buffered file, or bytes in memory ([`ReleaseFile::from_bytes`]).
pub struct ReleaseFile<R: Read + Seek = BufReader<File>> {
    zip: SafeZip<R>,
    names: Vec<String>,
    release: VerifiedRelease,
    manifest: Manifest,
    /// The Capgo payload's manifest, for a release with one.
    payload: Option<Manifest>,
}

impl ReleaseFile {
    /// Opens `path`, checks its layout, verifies the release against
    /// `trust` and the manifest against the release. Writes nothing.
    pub fn open(
        path: &Path,
        trust: &TrustList,
        limits: ZipLimits,
    ) -> Result<Self, ReleaseFileError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| ReleaseFileError::Io {
            path: shown.clone(),
            source,
        })?;
        ReleaseFile::from_reader(BufReader::new(file), &shown, trust, limits)
    }
}

impl<'a> ReleaseFile<Cursor<&'a [u8]>> {
    /// [`ReleaseFile::open`] for a release file held in memory: the same
    /// checks, no file and no store touched.
    pub fn from_bytes(
        bytes: &'a [u8],
        trust: &TrustList,
        limits: ZipLimits,
    ) -> Result<Self, ReleaseFileError> {
        ReleaseFile::from_reader(Cursor::new(bytes), "the release file", trust, limits)
    }
}

impl<R: Read + Seek> ReleaseFile<R> {
    /// [`ReleaseFile::open`] over any seekable reader; `shown` names the
    /// file in errors.
    pub fn from_reader(
        mut reader: R,
        shown: &str,
        trust: &TrustList,
        limits: ZipLimits,
    ) -> Result<Self, ReleaseFileError> {
        let malformed = |why: &str| ReleaseFileError::Malformed(shown.to_owned(), why.to_owned());
        check_seal(&mut reader, shown)?;
        let mut zip = SafeZip::from_reader(reader, shown, limits, Layout::Raw)?;
        let names: Vec<String> = zip.entries().iter().map(|e| e.name.clone()).collect();
        if names.first().map(String::as_str) != Some("release")
            || names.get(1).map(String::as_str) != Some("manifest")
        {
            return Err(malformed("it does not start with a release and a manifest"));
        }
        let record = zip.read_to_vec(0, MAX_SIGNED_RELEASE_BYTES as u64)?;
        let release = SignedRelease::from_bytes(&record)?.verify(trust)?;
        let manifest_bytes = zip.read_to_vec(1, MAX_MANIFEST_BYTES as u64)?;
        if BundleId(Hash::of(&manifest_bytes)) != release.release().bundle_id {
            return Err(ReleaseFileError::ManifestMismatch);
        }
        let manifest = Manifest::from_bytes(&manifest_bytes)?;
        let payload = match &release.release().capgo {
            Some(c) => {
                if names.get(2).map(String::as_str) != Some(CAPGO_MANIFEST) {
                    return Err(malformed(
                        "its release has Capgo artefacts but it holds no capgo-manifest",
                    ));
                }
                let bytes = zip.read_to_vec(2, MAX_MANIFEST_BYTES as u64)?;
                if BundleId(Hash::of(&bytes)) != c.bundle_id {
                    return Err(ReleaseFileError::ManifestMismatch);
                }
                Some(Manifest::from_bytes(&bytes)?)
            }
            None => None,
        };
        // From here every blob is read with its signed size as its maximum.
        zip.bounded_by_signed_sizes();
        Ok(ReleaseFile {
            zip,
            names,
            release,
            manifest,
            payload,
        })
    }

    /// The verified release inside.
    pub fn release(&self) -> &VerifiedRelease {
        &self.release
    }

    /// Checks every blob against its hash while staging it into `store`,
    /// then commits; on any error the store is left as it was.
    pub fn import(mut self, store: &Store) -> Result<Imported, ReleaseFileError> {
        let sizes: HashMap<Hash, u64> = self
            .manifest
            .files()
            .iter()
            .chain(self.payload.iter().flat_map(|p| p.files()))
            .map(|f| (f.blake3, f.size))
            .collect();
        let batch = store.begin()?;
        let mut taken = HashSet::new();
        let mut bytes = 0;
        let first_blob = if self.payload.is_some() { 3 } else { 2 };
        for (i, name) in self.names.iter().enumerate().skip(first_blob) {
            let hash: Hash = name
                .strip_prefix("blobs/")
                .and_then(|h| h.parse().ok())
                .ok_or_else(|| ReleaseFileError::UnexpectedBlob(name.clone()))?;
            let size = *sizes
                .get(&hash)
                .ok_or_else(|| ReleaseFileError::UnexpectedBlob(name.clone()))?;
            if !taken.insert(hash) {
                return Err(ReleaseFileError::UnexpectedBlob(format!("{name} twice")));
            }
            let digest = if size <= IN_MEMORY_MAX {
                let data = self.zip.read_to_vec(i, size)?;
                let digest = FileDigest::of_bytes(&data);
                if digest.blake3 == hash {
                    batch.put_blob(&hash, &data)?;
                }
                digest
            } else {
                let mut digester = FileDigester::new();
                let mut writer = batch.blob_writer()?;
                self.zip.read(i, Some(size), &mut |chunk| {
                    digester.update(chunk);
                    writer.write_all(chunk)
                })?;
                let digest = digester.finish();
                if digest.blake3 == hash {
                    batch.finish_blob(writer, &hash)?;
                }
                digest
            };
            if digest.blake3 != hash || digest.size != size {
                return Err(ReleaseFileError::BlobMismatch(hash));
            }
            bytes += size;
        }
        let missing = sizes
            .keys()
            .filter(|h| !taken.contains(*h) && !store.has_blob(h))
            .count();
        if missing > 0 {
            return Err(ReleaseFileError::Missing(missing));
        }
        batch.put_manifest(&self.manifest)?;
        if let Some(p) = &self.payload {
            batch.put_manifest(p)?;
        }
        let outcome = batch.commit(&self.release)?;
        Ok(Imported {
            release: self.release,
            outcome,
            blobs: taken.len(),
            bytes,
        })
    }
}

/// Files up to this size are checked in memory, larger ones streamed.
const IN_MEMORY_MAX: u64 = 4 << 20;

/// Writes bundle `id` of `store` as a deterministic zip (see
/// [`crate::zip::write`]) to `out`; returns the zip's SHA-256, the checksum
/// the Capgo plugin verifies.
pub fn export_bundle_zip(
    store: &Store,
    id: &BundleId,
    out: &Path,
) -> Result<[u8; 32], ReleaseFileError> {
    use sha2::{Digest, Sha256};
    let _guard = store.read_guard()?;
    let manifest = store.check_complete(id)?;
    let entries = manifest
        .files()
        .iter()
        .map(|f| (f.path.to_string(), Source::File(store.blob_path(&f.blake3))));
    write_atomically(out, |file| {
        write_zip(file, entries, BUNDLE_LEVEL, None)
            .map(|_| ())
            .map_err(std::io::Error::other)
    })?;
    // Hashed as read back, in pieces: a bundle zip may be hundreds of MB.
    let mut hasher = Sha256::new();
    let err = |source| ReleaseFileError::Write {
        path: out.display().to_string(),
        source,
    };
    let mut file = File::open(out).map_err(err)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::manifest::FileDigest;
    use crate::path::BundlePath;
    use crate::release::{Release, Rollout};

    const PAGE: &[u8] = b"<!doctype html><p>hi";

    fn key() -> SecretKey {
        SecretKey::from_seed(&[7; 32])
    }

    fn trust(key: &SecretKey) -> TrustList {
        TrustList::parse(&key.public().to_string()).unwrap()
    }

    /// A release file of a one-page bundle, sealed, built in memory.
    fn release_file(key: &SecretKey) -> (Vec<u8>, SignedRelease) {
        let manifest = Manifest::new(vec![
            FileDigest::of_bytes(PAGE).into_entry(BundlePath::new("index.html").unwrap()),
        ])
        .unwrap();
        let release = Release {
            app: "com.example.app".into(),
            channel: "production".into(),
            version: "1.0.0".into(),
            bundle_id: manifest.id(),
            seq: 1,
            created: 1,
            min_native_version: None,
            rollout: Rollout::FULL,
            expires: None,
            notes: None,
            capgo: None,
        }
        .sign(key)
        .unwrap();
        let entries = vec![
            ("release".to_owned(), Source::Bytes(release.to_bytes())),
            ("manifest".to_owned(), Source::Bytes(manifest.to_bytes())),
            (
                format!("blobs/{}", Hash::of(PAGE)),
                Source::Bytes(PAGE.to_vec()),
            ),
        ];
        let placeholder = format!("{COMMENT_PREFIX}{}", "0".repeat(64));
        let mut bytes = write_zip(
            Cursor::new(Vec::new()),
            entries,
            RELEASE_FILE_LEVEL,
            Some(&placeholder),
        )
        .unwrap()
        .into_inner();
        let covered = bytes.len() - COMMENT_LEN;
        let sum = Hash::of(&bytes[..covered]).to_hex();
        bytes[covered + COMMENT_PREFIX.len()..].copy_from_slice(sum.as_bytes());
        (bytes, release)
    }

    #[test]
    fn a_release_file_in_memory_opens_like_one_on_disk() {
        let (bytes, release) = release_file(&key());
        let opened = ReleaseFile::from_bytes(&bytes, &trust(&key()), ZipLimits::default()).unwrap();
        assert_eq!(opened.release().signed(), &release);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.lanseed");
        std::fs::write(&path, &bytes).unwrap();
        let from_disk = ReleaseFile::open(&path, &trust(&key()), ZipLimits::default()).unwrap();
        assert_eq!(from_disk.release(), opened.release());
    }

    #[test]
    fn in_memory_release_files_are_refused_like_files() {
        let (bytes, _) = release_file(&key());
        let open =
            |b: &[u8], t: &TrustList| ReleaseFile::from_bytes(b, t, ZipLimits::default()).map(drop);
        for at in [0, 40, bytes.len() / 2, bytes.len() - COMMENT_LEN - 1] {
            let mut tampered = bytes.clone();
            tampered[at] ^= 1;
            assert!(
                matches!(
                    open(&tampered, &trust(&key())),
                    Err(ReleaseFileError::Tampered)
                ),
                "byte {at}"
            );
        }
        for cut in [0, COMMENT_LEN - 1, bytes.len() - 1] {
            assert!(
                matches!(
                    open(&bytes[..cut], &trust(&key())),
                    Err(ReleaseFileError::Malformed(..))
                ),
                "cut at {cut}"
            );
        }
        let stranger = SecretKey::from_seed(&[8; 32]);
        assert!(matches!(
            open(&bytes, &trust(&stranger)),
            Err(ReleaseFileError::Verify(VerifyError::Untrusted(_)))
        ));
    }
}
