//! Piece hashes: the pieces of a file larger than one piece are hashed as
//! the subtrees of the file's own BLAKE3 tree.
//!
//! BLAKE3 hashes 1 KiB chunks into a binary tree. A piece of
//! [`PIECE_SIZE`] (1,024 chunks) at a multiple of [`PIECE_SIZE`] is a whole
//! subtree of that tree, so its *chaining value* (the subtree's node
//! value, not a root hash) is computed from the piece alone, given its
//! offset; and the chaining values of a file's pieces, merged the way
//! BLAKE3 merges subtrees, give the file's BLAKE3.
//!
//! That is what a manifest's piece hashes are, and why they serve twice:
//! - a piece that arrives is hashed once, against its chaining value;
//! - a manifest is checked when decoded: its piece hashes must merge to
//!   the file's BLAKE3 (a few hundred compressions for a 100 MiB file).
//!
//! So a file whose every piece matches *is* the blob of that BLAKE3, with
//! no second pass over the bytes, and a manifest cannot name one blob's
//! address with another content's pieces (the BLAKE3 paper, section 6.4,
//! and the Bao verified-streaming format rely on the same property).
//!
//! A file of at most one piece has no piece hashes: its one piece is
//! checked against the file's BLAKE3 itself.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::hash::Hash;
use crate::limits::PIECE_SIZE;

/// The chaining value of piece `index` of a file of more than one piece:
/// `data` is the piece's bytes (all [`PIECE_SIZE`] of them, or the rest of
/// the file for its last piece; never empty).
pub fn piece_hash(index: u64, data: &[u8]) -> Hash {
    let mut hasher = PieceHasher::new(index);
    hasher.update(data);
    hasher.chaining_value().expect("a piece is never empty")
}

/// A piece hasher fed as bytes stream past: it gives the piece's
/// chaining value and, for piece 0, the root hash it would have as a whole
/// file of one piece.
pub struct PieceHasher {
    hasher: blake3::Hasher,
    index: u64,
}

impl PieceHasher {
    /// A hasher for piece `index`.
    pub fn new(index: u64) -> PieceHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(index * PIECE_SIZE);
        PieceHasher { hasher, index }
    }

    /// Feeds bytes of the piece.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.hasher.count()
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The piece's chaining value (`None` for an empty piece).
    pub fn chaining_value(&self) -> Option<Hash> {
        (!self.is_empty()).then(|| Hash::from_bytes(self.hasher.finalize_non_root()))
    }

    /// For piece 0, the root hash of its bytes alone: the file's BLAKE3
    /// when it has no second piece.
    pub fn root(&self) -> Option<Hash> {
        (self.index == 0).then(|| Hash::from_bytes(*self.hasher.finalize().as_bytes()))
    }
}

/// The file's BLAKE3 from the chaining values of its pieces, in order;
/// `None` for fewer than two (a file of one piece has no piece hashes).
pub fn root_of(pieces: &[Hash]) -> Option<Hash> {
    if pieces.len() < 2 {
        return None;
    }
    let cvs: Vec<ChainingValue> = pieces.iter().map(|h| *h.as_bytes()).collect();
    let (left, right) = cvs.split_at(left_len(cvs.len()));
    let root = merge_subtrees_root(&merge(left), &merge(right), Mode::Hash);
    Some(Hash::from_bytes(*root.as_bytes()))
}

/// Merges the chaining values of consecutive pieces into their subtree's.
fn merge(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = cvs.split_at(left_len(cvs.len()));
    merge_subtrees_non_root(&merge(left), &merge(right), Mode::Hash)
}

/// How many of `n ≥ 2` pieces go into the left subtree: BLAKE3's left
/// subtree is the largest power of two of chunks smaller than the whole,
/// which for whole pieces followed by a last, possibly shorter one, is the
/// largest power of two of pieces smaller than `n`.
fn left_len(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn pieces_merge_to_the_files_blake3() {
        let p = PIECE_SIZE as usize;
        for len in [
            p + 1,
            2 * p,
            2 * p + 1024,
            3 * p - 1,
            3 * p,
            4 * p + 1,
            5 * p,
            7 * p + 3,
            8 * p,
            9 * p + 100,
        ] {
            let bytes = data(len);
            let pieces: Vec<Hash> = bytes
                .chunks(p)
                .enumerate()
                .map(|(i, c)| piece_hash(i as u64, c))
                .collect();
            assert_eq!(root_of(&pieces), Some(Hash::of(&bytes)), "{len} bytes");
            // Streamed in odd slices, the same values.
            let mut streamed = Vec::new();
            for (i, c) in bytes.chunks(p).enumerate() {
                let mut h = PieceHasher::new(i as u64);
                for s in c.chunks(4097) {
                    h.update(s);
                }
                let (cv, root) = (h.chaining_value(), h.root());
                streamed.push(cv.unwrap());
                assert_eq!(root.is_some(), i == 0);
                if i == 0 {
                    assert_eq!(root, Some(Hash::of(c)));
                }
            }
            assert_eq!(streamed, pieces);
        }
    }

    /// Example 3 of `protocol/FORMATS.md`.
    #[test]
    fn formats_example_3() {
        let file: Vec<u8> = (0..2 * PIECE_SIZE + 1).map(|i| (i % 251) as u8).collect();
        let p = PIECE_SIZE as usize;
        let hex: Vec<String> = file
            .chunks(p)
            .enumerate()
            .map(|(i, c)| piece_hash(i as u64, c).to_hex())
            .collect();
        assert_eq!(
            hex,
            [
                "8a576541118ebf5fad8d683c09b63402288a71616ecc72514abf780822136023",
                "e01e387e729abf35ba39644daebfa3a124ab9fee5a6445295e0309cc4fda53a7",
                "2d586961f786914acc39350552b657390728ba0ae871563a7eac61ed6d5caacd",
            ]
        );
        let pieces: Vec<Hash> = file
            .chunks(p)
            .enumerate()
            .map(|(i, c)| piece_hash(i as u64, c))
            .collect();
        let whole = "52dc212cb4cc61cb94d25bd7b1d47b256e4c3a6d68956df50c235c37a2aeacd7";
        assert_eq!(Hash::of(&file).to_hex(), whole);
        assert_eq!(root_of(&pieces).map(|h| h.to_hex()), Some(whole.into()));
    }

    #[test]
    fn a_piece_hash_depends_on_its_place_and_every_byte() {
        let piece = data(PIECE_SIZE as usize);
        assert_ne!(piece_hash(1, &piece), piece_hash(2, &piece));
        assert_ne!(piece_hash(0, &piece), Hash::of(&piece), "not a root hash");
        let mut other = piece.clone();
        other[PIECE_SIZE as usize / 2] ^= 1;
        assert_ne!(piece_hash(1, &piece), piece_hash(1, &other));
        // Swapping two pieces breaks the root.
        let a = piece_hash(0, &piece);
        let b = piece_hash(1, &other);
        let c = piece_hash(2, &piece[..10]);
        assert_ne!(root_of(&[a, b, c]), root_of(&[b, a, c]));
        assert_eq!(root_of(&[a]), None);
        assert_eq!(left_len(2), 1);
        assert_eq!(left_len(3), 2);
        assert_eq!(left_len(4), 2);
        assert_eq!(left_len(5), 4);
        assert_eq!(left_len(9), 8);
    }
}
