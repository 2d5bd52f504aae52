//! The Capgo gateway's cache: what it derives from a store's bundles, kept
//! in the store so it is made once and collected with the store.
//!
//! ```text
//! STORE/cache/gateway/
//!   zip/<bundle id>.zip       the bundle as a deterministic zip
//!                             ([`crate::zip::write`])
//!   zip/<bundle id>.sha256    that zip's SHA-256 in hex: the checksum the
//!                             plugin checks (written after the zip)
//!   br/<sha256 hex>.br        a file of a bundle, Brotli-compressed, when
//!                             that saves at least a tenth of its bytes
//!   br/<sha256 hex>.raw       empty: Brotli does not pay for this file
//! ```
//!
//! Every entry is derived from verified blobs and can be made again, so a
//! missing or damaged entry costs time, never correctness: a zip without
//! its checksum file is made again. Entries are written to a temp file and
//! renamed, under the store's read guard, so a collection (which holds the
//! guard exclusively) never sees a half-written entry; it removes the
//! entries of bundles and files that no kept release needs, and leftover
//! temp files ([`collect`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Store, StoreError, durable};
use crate::hash::BundleId;
use crate::release_file::{ReleaseFileError, export_bundle_zip};

/// A bundle's zip in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedZip {
    /// Where it is.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its length in bytes.
    pub len: u64,
}

/// What the cache holds for one file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Brotli {
    /// Not decided yet.
    Unknown,
    /// Compressed, at this path, this many bytes.
    Smaller(PathBuf, u64),
    /// Not worth it: served as is.
    NotWorth,
}

impl Store {
    /// `STORE/cache/gateway`.
    pub fn gateway_cache(&self) -> PathBuf {
        self.root().join("cache").join("gateway")
    }

    /// Where bundle `id`'s zip lives (made or not).
    pub fn zip_path(&self, id: &BundleId) -> PathBuf {
        self.gateway_cache().join("zip").join(format!("{id}.zip"))
    }

    fn zip_sum_path(&self, id: &BundleId) -> PathBuf {
        self.gateway_cache()
            .join("zip")
            .join(format!("{id}.sha256"))
    }

    /// Bundle `id`'s zip, if the cache holds it whole.
    pub fn cached_zip(&self, id: &BundleId) -> Option<CachedZip> {
        let text = std::fs::read_to_string(self.zip_sum_path(id)).ok()?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut sha256).ok()?;
        let path = self.zip_path(id);
        let len = std::fs::metadata(&path).ok()?.len();
        Some(CachedZip { path, sha256, len })
    }

    /// Removes bundle `id`'s cached zip and checksum file (so the next
    /// [`Store::cached_zip`] finds none and it is made again).
    pub fn forget_zip(&self, id: &BundleId) {
        let _ = std::fs::remove_file(self.zip_sum_path(id));
        let _ = std::fs::remove_file(self.zip_path(id));
    }

    /// Makes bundle `id`'s zip and its checksum file (the bundle must be
    /// complete in the store). Blocking; callers make one at a time per
    /// bundle.
    pub fn make_zip(&self, id: &BundleId) -> Result<CachedZip, ReleaseFileError> {
        let dir = self.gateway_cache().join("zip");
        std::fs::create_dir_all(&dir).map_err(StoreError::io("cannot create", &dir))?;
        let _guard = self.read_guard()?;
        let path = self.zip_path(id);
        let sha256 = export_bundle_zip(self, id, &path)?;
        let sum = self.zip_sum_path(id);
        durable::write_atomic(&sum, hex::encode(sha256).as_bytes())
            .map_err(StoreError::io("cannot write", &sum))?;
        let len = std::fs::metadata(&path)
            .map_err(StoreError::io("cannot read", &path))?
            .len();
        Ok(CachedZip { path, sha256, len })
    }

    /// Where the Brotli variant of the file with SHA-256 `sha256` lives.
    pub fn brotli_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.gateway_cache()
            .join("br")
            .join(format!("{}.br", hex::encode(sha256)))
    }

    fn raw_marker(&self, sha256: &[u8; 32]) -> PathBuf {
        self.gateway_cache()
            .join("br")
            .join(format!("{}.raw", hex::encode(sha256)))
    }

    /// What the cache holds for the file with SHA-256 `sha256`.
    pub fn cached_brotli(&self, sha256: &[u8; 32]) -> Brotli {
        let path = self.brotli_path(sha256);
        if let Ok(m) = std::fs::metadata(&path) {
            return Brotli::Smaller(path, m.len());
        }
        if self.raw_marker(sha256).exists() {
            return Brotli::NotWorth;
        }
        Brotli::Unknown
    }

    /// Records the Brotli variant of the file with SHA-256 `sha256`:
    /// `Some(bytes)` to keep, `None` when it is not worth it.
    pub fn put_brotli(
        &self,
        sha256: &[u8; 32],
        bytes: Option<&[u8]>,
    ) -> Result<Brotli, StoreError> {
        let dir = self.gateway_cache().join("br");
        std::fs::create_dir_all(&dir).map_err(StoreError::io("cannot create", &dir))?;
        let _guard = self.read_guard()?;
        let (path, data) = match bytes {
            Some(b) => (self.brotli_path(sha256), b),
            None => (self.raw_marker(sha256), &[][..]),
        };
        durable::write_atomic(&path, data).map_err(StoreError::io("cannot write", &path))?;
        Ok(self.cached_brotli(sha256))
    }
}

/// Removes (through `remove`, which a dry run makes a no-op) the cache
/// entries of bundles not in `bundles` and of files whose SHA-256 is not
/// in `files`, and leftover temp files; returns how many.
pub(crate) fn collect(
    store: &Store,
    bundles: &HashSet<BundleId>,
    files: &HashSet<[u8; 32]>,
    remove: &dyn Fn(&Path) -> Result<(), StoreError>,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    let mut sweep = |dir: PathBuf, keep: &dyn Fn(&str) -> bool| -> Result<(), StoreError> {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(()); // no cache yet
        };
        for entry in entries {
            let entry = entry.map_err(StoreError::io("cannot read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let temp = name.starts_with('.') && name.ends_with(".tmp");
            if temp || !keep(&name) {
                remove(&entry.path())?;
                removed += 1;
            }
        }
        Ok(())
    };
    let cache = store.gateway_cache();
    sweep(cache.join("zip"), &|name| {
        let stem = name.split('.').next().unwrap_or("");
        stem.parse::<BundleId>().is_ok_and(|b| bundles.contains(&b))
    })?;
    sweep(cache.join("br"), &|name| {
        let stem = name.split('.').next().unwrap_or("");
        let mut sha = [0u8; 32];
        hex::decode_to_slice(stem, &mut sha).is_ok() && files.contains(&sha)
    })?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zip_without_its_checksum_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let id = BundleId(crate::Hash::of(b"x"));
        std::fs::create_dir_all(store.zip_path(&id).parent().unwrap()).unwrap();
        std::fs::write(store.zip_path(&id), b"zip").unwrap();
        assert_eq!(store.cached_zip(&id), None);
        std::fs::write(store.zip_sum_path(&id), "nothex").unwrap();
        assert_eq!(store.cached_zip(&id), None);
        std::fs::write(store.zip_sum_path(&id), hex::encode([7u8; 32])).unwrap();
        assert_eq!(
            store.cached_zip(&id),
            Some(CachedZip {
                path: store.zip_path(&id),
                sha256: [7; 32],
                len: 3
            })
        );
    }

    #[test]
    fn brotli_entries_say_smaller_not_worth_or_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        assert_eq!(store.cached_brotli(&[1; 32]), Brotli::Unknown);
        assert_eq!(store.put_brotli(&[1; 32], None).unwrap(), Brotli::NotWorth);
        let got = store.put_brotli(&[2; 32], Some(b"abc")).unwrap();
        assert_eq!(got, Brotli::Smaller(store.brotli_path(&[2; 32]), 3));
    }
}
