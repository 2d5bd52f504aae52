//! The index: the list of releases a store holds, and its commit record.
//!
//! One file, rewritten whole and replaced atomically on every change
//! ([`super::durable::write_atomic`]), under the exclusive `index.lock`.
//! Readers need no lock: they see the old index or the new one.
//!
//! ```text
//! magic     8 bytes "LSINDEX1"
//! count     u32
//! records   count × (u32 length + signed release record)
//! checksum  32 bytes: BLAKE3 of everything before it
//! ```
//!
//! The checksum turns a truncated or damaged index into a clear error
//! instead of a silently shorter list.

use std::io::ErrorKind;
use std::path::Path;

use crate::canonical::{Reader, Writer};
use crate::hash::Hash;
use crate::limits::{MAX_INDEX_RELEASES, MAX_SIGNED_RELEASE_BYTES};
use crate::release::SignedRelease;

use super::{StoreError, durable, read_bounded};

const MAGIC: &[u8; 8] = b"LSINDEX1";
/// Name of the index file in the store.
pub const FILE: &str = "index";
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Reads the index of the store at `root`; a store without one is empty.
pub fn read(root: &Path) -> Result<Vec<SignedRelease>, StoreError> {
    let path = root.join(FILE);
    let bytes = match read_bounded(&path, MAX_INDEX_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            return Err(StoreError::CorruptIndex {
                path,
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(StoreError::io("cannot read", &path)(e)),
    };
    decode(&bytes).map_err(|reason| StoreError::CorruptIndex { path, reason })
}

fn decode(bytes: &[u8]) -> Result<Vec<SignedRelease>, String> {
    let body_len = bytes
        .len()
        .checked_sub(Hash::LEN)
        .ok_or("shorter than its checksum")?;
    let (body, sum) = bytes.split_at(body_len);
    if Hash::of(body).as_bytes() != sum {
        return Err("checksum mismatch: truncated or damaged".into());
    }
    let mut r = Reader::new(body);
    r.magic(MAGIC, "store index").map_err(|e| e.to_string())?;
    let count = r.u32("release count").map_err(|e| e.to_string())? as usize;
    if count > MAX_INDEX_RELEASES || count * 4 > r.remaining() {
        return Err(format!("implausible release count {count}"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let rec = r
            .bytes32(MAX_SIGNED_RELEASE_BYTES, "release record")
            .map_err(|e| e.to_string())?;
        out.push(SignedRelease::from_bytes(rec).map_err(|e| format!("release {i}: {e}"))?);
    }
    r.finish("store index").map_err(|e| e.to_string())?;
    Ok(out)
}

/// Encodes `releases` as an index file.
pub fn encode(releases: &[SignedRelease]) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(MAGIC);
    w.u32(releases.len() as u32);
    for r in releases {
        w.bytes32(&r.to_bytes());
    }
    let mut bytes = w.into_bytes();
    let sum = Hash::of(&bytes);
    bytes.extend_from_slice(sum.as_bytes());
    bytes
}

/// Replaces the index of the store at `root` atomically and durably.
/// Callers hold the store's index lock.
pub fn write(root: &Path, releases: &[SignedRelease]) -> Result<(), StoreError> {
    write_labeled(
        root,
        releases,
        [
            "commit: temp written",
            "commit: temp synced",
            "commit: renamed",
            "commit: directory synced",
        ],
    )
}

/// [`write`], naming its crash points after the caller's phase.
pub fn write_labeled(
    root: &Path,
    releases: &[SignedRelease],
    labels: [&'static str; 4],
) -> Result<(), StoreError> {
    if releases.len() > MAX_INDEX_RELEASES {
        return Err(StoreError::IndexFull(releases.len()));
    }
    let path = root.join(FILE);
    let bytes = encode(releases);
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        // Never write an index that could not be read back.
        return Err(StoreError::IndexFull(releases.len()));
    }
    durable::write_atomic_labeled(&path, &bytes, labels)
        .map_err(StoreError::io("cannot write", &path))
}
