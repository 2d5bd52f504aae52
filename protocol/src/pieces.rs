//! The pieces of a bundle, numbered, and the bitfield that says which of
//! them a node holds.
//!
//! Numbering: walk the manifest's files in order, skip empty files and
//! blobs seen before; each remaining blob contributes its pieces
//! ([`PIECE_SIZE`] bytes, the last shorter) with consecutive numbers. Both
//! sides compute it from the same signed manifest, so a node that is still
//! fetching can say "I hold pieces 3, 17 and 18" in a few bytes
//! ([`Bitfield`]), and its peers can ask it for exactly those.

use std::collections::HashMap;
use std::ops::Range;

use crate::hash::Hash;
use crate::limits::PIECE_SIZE;
use crate::manifest::{FileEntry, Manifest, piece_count};

/// One blob of a bundle and where its pieces fall in the numbering.
#[derive(Clone, Debug)]
pub struct BlobPieces {
    /// The file entry (first occurrence of the blob).
    pub entry: FileEntry,
    /// Number of its first piece.
    pub first: u32,
    /// How many pieces it has.
    pub count: u32,
}

/// The numbered pieces of a bundle.
#[derive(Clone, Debug)]
pub struct PieceMap {
    blobs: Vec<BlobPieces>,
    by_hash: HashMap<Hash, usize>,
    total: u32,
}

/// Where a numbered piece is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceRef {
    /// Index of its blob in [`PieceMap::blobs`].
    pub blob: usize,
    /// Its index within the blob.
    pub index: u32,
}

impl PieceMap {
    /// Numbers the pieces of `manifest`.
    pub fn of(manifest: &Manifest) -> PieceMap {
        let mut blobs = Vec::new();
        let mut by_hash = HashMap::new();
        let mut total = 0u32;
        for f in manifest.files() {
            if f.size == 0 || by_hash.contains_key(&f.blake3) {
                continue;
            }
            // The manifest's limits keep the count of pieces far below u32.
            let count = piece_count(f.size) as u32;
            by_hash.insert(f.blake3, blobs.len());
            blobs.push(BlobPieces {
                entry: f.clone(),
                first: total,
                count,
            });
            total += count;
        }
        PieceMap {
            blobs,
            by_hash,
            total,
        }
    }

    /// Number of pieces.
    pub fn len(&self) -> u32 {
        self.total
    }

    /// Whether the bundle has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The blobs, in numbering order.
    pub fn blobs(&self) -> &[BlobPieces] {
        &self.blobs
    }

    /// The blob with this hash.
    pub fn blob_index(&self, hash: &Hash) -> Option<usize> {
        self.by_hash.get(hash).copied()
    }

    /// Where piece `n` is (`n < len()`).
    pub fn locate(&self, n: u32) -> PieceRef {
        let blob = self.blobs.partition_point(|b| b.first + b.count <= n);
        PieceRef {
            blob,
            index: n - self.blobs[blob].first,
        }
    }

    /// Byte range of piece `n` within its blob.
    pub fn range(&self, n: u32) -> Range<u64> {
        let r = self.locate(n);
        self.blobs[r.blob].entry.piece_range(u64::from(r.index))
    }

    /// Length of piece `n`.
    pub fn piece_len(&self, n: u32) -> u64 {
        let r = self.range(n);
        r.end - r.start
    }

    /// Whether `data` is piece `n` (checked against the signed manifest).
    pub fn is_piece(&self, n: u32, data: &[u8]) -> bool {
        let r = self.locate(n);
        self.blobs[r.blob].entry.is_piece(u64::from(r.index), data)
    }

    /// The numbers of blob `blob`'s pieces.
    pub fn pieces_of(&self, blob: usize) -> Range<u32> {
        let b = &self.blobs[blob];
        b.first..b.first + b.count
    }
}

/// Which pieces a node holds: bit `n` (least significant first within
/// each byte) is piece `n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
}

impl Bitfield {
    /// No pieces of `len`.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
        }
    }

    /// All pieces of `len`.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for n in 0..len {
            b.set(n);
        }
        b
    }

    /// Reads the wire form; `None` when it is not `len` pieces long or
    /// sets bits past the end.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Option<Bitfield> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        if !len.is_multiple_of(8) && bytes.last().is_some_and(|last| last >> (len % 8) != 0) {
            return None;
        }
        Some(Bitfield {
            bits: bytes.to_vec(),
            len,
        })
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of pieces it covers.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether it covers no pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether piece `n` is held.
    pub fn get(&self, n: u32) -> bool {
        n < self.len && self.bits[(n / 8) as usize] & (1 << (n % 8)) != 0
    }

    /// Marks piece `n` held.
    pub fn set(&mut self, n: u32) {
        if n < self.len {
            self.bits[(n / 8) as usize] |= 1 << (n % 8);
        }
    }

    /// Marks piece `n` not held.
    pub fn unset(&mut self, n: u32) {
        if n < self.len {
            self.bits[(n / 8) as usize] &= !(1 << (n % 8));
        }
    }

    /// Number of pieces held.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every piece is held.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }
}

/// Bytes of a piece's blob: [`PIECE_SIZE`] for all but the last.
pub fn piece_offset(index: u32) -> u64 {
    u64::from(index) * PIECE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileDigest;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileDigest::of_bytes(data).into_entry(crate::BundlePath::new(path).unwrap())
    }

    #[test]
    fn numbering_skips_empty_and_duplicate_blobs() {
        let big = vec![7u8; (2 * PIECE_SIZE + 5) as usize];
        let m = Manifest::new(vec![
            entry("a.js", b"hello"),
            entry("b.bin", &big),
            entry("c.js", b"hello"),
            entry("d.txt", b""),
            entry("e.css", b"body{}"),
            entry("index.html", b"<p>"),
        ])
        .unwrap();
        let map = PieceMap::of(&m);
        // Files are sorted by path in a manifest: a.js, b.bin, c.js (same
        // blob as a.js), d.txt (empty), e.css, index.html.
        assert_eq!(map.blobs().len(), 4);
        assert_eq!(map.len(), 1 + 3 + 1 + 1);
        assert_eq!(map.locate(0), PieceRef { blob: 0, index: 0 });
        assert_eq!(map.locate(3), PieceRef { blob: 1, index: 2 });
        assert_eq!(map.locate(4), PieceRef { blob: 2, index: 0 });
        assert_eq!(map.piece_len(3), 5);
        assert_eq!(map.piece_len(1), PIECE_SIZE);
        assert!(map.is_piece(0, b"hello") && !map.is_piece(0, b"hellO"));
        assert_eq!(map.pieces_of(1), 1..4);
        assert_eq!(map.blob_index(&Hash::of(b"body{}")), Some(2));
    }

    #[test]
    fn bitfield_round_trips_and_refuses_stray_bits() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        b.set(10); // past the end: ignored
        assert!(b.get(9) && !b.get(8) && !b.get(10));
        b.set(3);
        b.unset(3);
        assert!(!b.get(3));
        assert_eq!(b.count(), 2);
        let back = Bitfield::from_bytes(b.as_bytes(), 10).unwrap();
        assert_eq!(back, b);
        assert!(Bitfield::from_bytes(&[0, 0b100], 10).is_none());
        assert!(Bitfield::from_bytes(&[0], 10).is_none());
        assert!(Bitfield::full(10).is_full());
        assert!(Bitfield::new(0).is_full());
    }
}
