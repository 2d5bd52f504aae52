//! The workload: a web-like bundle cut into pieces as lanseed cuts it, and
//! the fluid lower bound of a fan-out.
//!
//! The bundle of the namespace benchmark is mostly incompressible media
//! plus many small JS and CSS files. Pieces are [`PIECE_SIZE`] (1 MiB); a
//! file smaller than that is one piece of its own. Media go over the wire
//! as they are; text shrinks by `text_ratio` (zstd on a batch of small
//! files). Files are in a seeded random order, as a build's paths mix
//! scripts and images.

use lanseed_protocol::limits::PIECE_SIZE;

use crate::Rng;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Bytes of the whole bundle.
    pub bytes: u64,
    /// Bytes of it that are text (JS and CSS).
    pub text_bytes: u64,
    /// How many text files.
    pub text_files: u32,
    /// How many media files.
    pub media_files: u32,
    /// Wire bytes over raw bytes for text (1.0: no compression).
    pub text_ratio: f64,
    /// Seeds the sizes and the order.
    pub seed: u64,
}

/// A bundle as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// Raw bytes of each piece.
    pub piece_len: Vec<u64>,
    /// Bytes of each piece on the wire.
    pub wire_len: Vec<u64>,
    /// Bytes of the manifest on the wire.
    pub manifest_bytes: u64,
    /// Raw bytes in all.
    pub bytes: u64,
}

/// Bytes of a manifest entry (path, hash, size, piece hashes of a small
/// file), about what lanseed's manifest takes per file.
const MANIFEST_ENTRY: u64 = 110;

/// Splits `total` into `n` sizes around `total / n` (from half to one and a
/// half of it), summing to `total` exactly.
pub fn spread(total: u64, n: u32, rng: &mut Rng) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    let weights: Vec<u64> = (0..n).map(|_| 500 + rng.below(1001)).collect();
    let sum: u64 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights.iter().map(|w| total * w / sum).collect();
    let short = total - sizes.iter().sum::<u64>();
    sizes[0] += short;
    sizes
}

/// Pieces of a file of `len` bytes: full pieces, then the rest.
pub fn pieces_of(len: u64) -> Vec<u64> {
    let mut out = vec![PIECE_SIZE; (len / PIECE_SIZE) as usize];
    if !len.is_multiple_of(PIECE_SIZE) || len == 0 {
        out.push(len % PIECE_SIZE);
    }
    out
}

impl Bundle {
    /// The bundle `spec` describes.
    pub fn generate(spec: &Spec) -> Bundle {
        let mut rng = Rng::new(spec.seed);
        let text_bytes = spec.text_bytes.min(spec.bytes);
        let mut files: Vec<(u64, bool)> = (spread(text_bytes, spec.text_files, &mut rng))
            .into_iter()
            .map(|n| (n, true))
            .chain(
                spread(spec.bytes - text_bytes, spec.media_files, &mut rng)
                    .into_iter()
                    .map(|n| (n, false)),
            )
            .collect();
        for i in (1..files.len()).rev() {
            files.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let (mut piece_len, mut wire_len) = (Vec::new(), Vec::new());
        for (len, text) in &files {
            for p in pieces_of(*len) {
                piece_len.push(p);
                let ratio = if *text { spec.text_ratio } else { 1.0 };
                wire_len.push(((p as f64 * ratio).ceil() as u64).max(1));
            }
        }
        Bundle {
            manifest_bytes: MANIFEST_ENTRY * files.len() as u64,
            bytes: piece_len.iter().sum(),
            piece_len,
            wire_len,
        }
    }

    /// How many pieces.
    pub fn pieces(&self) -> u32 {
        self.piece_len.len() as u32
    }
}

/// The fluid lower bound of sending `bytes` from a source of upload
/// `source_up` to `n` nodes of download `down` and upload `up` each
/// (bytes a second): `max(F/u_s, F/d, n·F/(u_s + n·u))`.
pub fn bound(bytes: f64, n: usize, source_up: f64, up: f64, down: f64) -> f64 {
    let f = bytes;
    (f / source_up)
        .max(f / down)
        .max(n as f64 * f / (source_up + n as f64 * up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_slowest_of_source_download_and_aggregate_upload() {
        // One node: the source's upload or the node's download.
        assert_eq!(bound(100.0, 1, 10.0, 10.0, 20.0), 10.0);
        assert_eq!(bound(100.0, 1, 20.0, 10.0, 10.0), 10.0);
        // Many nodes whose upload is small: the aggregate upload.
        let b = bound(100.0, 9, 10.0, 1.0, 100.0);
        assert!((b - 900.0 / 19.0).abs() < 1e-9, "{b}");
        // Equal links, many nodes: about F/d.
        let b = bound(100.0, 16, 10.0, 10.0, 10.0);
        assert_eq!(b, 10.0);
    }

    #[test]
    fn files_become_pieces_of_at_most_a_mebibyte() {
        let m = PIECE_SIZE;
        let table = [
            (0, vec![0]),
            (1, vec![1]),
            (m - 1, vec![m - 1]),
            (m, vec![m]),
            (m + 1, vec![m, 1]),
            (3 * m + 5, vec![m, m, m, 5]),
        ];
        for (len, want) in table {
            assert_eq!(pieces_of(len), want, "{len}");
        }
    }

    #[test]
    fn a_generated_bundle_has_its_bytes_and_compresses_its_text_only() {
        let spec = Spec {
            bytes: 20_000_000,
            text_bytes: 4_000_000,
            text_files: 500,
            media_files: 20,
            text_ratio: 0.25,
            seed: 3,
        };
        let b = Bundle::generate(&spec);
        assert_eq!(b.bytes, 20_000_000);
        assert!(b.pieces() >= 520, "{}", b.pieces());
        let wire: u64 = b.wire_len.iter().sum();
        let expect = 16_000_000.0 + 4_000_000.0 * 0.25;
        assert!((wire as f64 - expect).abs() / expect < 0.01, "{wire}");
        assert!(b.piece_len.iter().all(|&l| l <= PIECE_SIZE));
        // The same spec, the same bundle.
        assert_eq!(Bundle::generate(&spec).piece_len, b.piece_len);
    }
}
