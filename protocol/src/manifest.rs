//! The manifest: every file of a web build, and the bundle id.
//!
//! A manifest lists each file's normalized path, size, BLAKE3 hash (the
//! blob's address), SHA-256 (what the Capgo plugin checks in manifest mode)
//! and, for files larger than one [`PIECE_SIZE`], the hash of each piece
//! (its chaining value in the file's BLAKE3 tree, see [`crate::piecehash`]),
//! so a receiver can verify any piece on its own before writing it; a
//! decoder checks that the piece hashes merge to the file's BLAKE3.
//! Files are sorted by the bytes of their path. The bundle id is the BLAKE3
//! hash of the canonical bytes ([`Manifest::to_bytes`]).
//!
//! Layout (all integers little-endian; see `protocol/FORMATS.md`):
//!
//! ```text
//! magic    8 bytes  "LSMANIF2"
//! count    u32      number of files
//! per file, in ascending path order:
//!   path   u16 length + UTF-8 bytes
//!   size   u64
//!   blake3 32 bytes
//!   sha256 32 bytes
//!   pieces 32 bytes × ceil(size / PIECE_SIZE), only when size > PIECE_SIZE
//! ```

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::canonical::{DecodeError, Reader, Writer};
use crate::hash::{BundleId, Hash};
use crate::limits::{MAX_FILE_SIZE, MAX_FILES, MAX_MANIFEST_BYTES, MAX_PATH_LEN, PIECE_SIZE};
use crate::path::{BundlePath, PathError};
use crate::piecehash::{self, PieceHasher};

const MAGIC: &[u8; 8] = b"LSMANIF2";

/// The smallest encoded file entry: an empty path is refused, so 1 byte of
/// path plus the fixed fields. Used to bound allocation before decoding.
const MIN_ENTRY_BYTES: usize = 2 + 1 + 8 + 32 + 32;

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Where the file lives in the bundle.
    pub path: BundlePath,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE3 of its bytes: the blob's address.
    pub blake3: Hash,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
    /// The chaining value of each piece in the file's BLAKE3 tree when the
    /// file has more than one piece (see [`crate::piecehash`]); empty
    /// otherwise (a single piece is verified by `blake3`).
    pub pieces: Vec<Hash>,
}

/// Why a manifest is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The bytes do not decode.
    #[error("manifest does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A path is not allowed.
    #[error("manifest has a bad path: {0}")]
    Path(#[from] PathError),
    /// Two files have the same path.
    #[error("manifest lists `{0}` twice")]
    Duplicate(String),
    /// Two paths differ only by letter case or Unicode normalization; they
    /// would collide on a case-insensitive or normalizing file system
    /// (Android and iOS devices included).
    #[error("paths `{0}` and `{1}` differ only by letter case or Unicode normalization")]
    CaseCollision(String, String),
    /// A file is also used as a folder.
    #[error("`{0}` is a file, but `{1}` uses it as a folder")]
    FileIsFolder(String, String),
    /// Files are not in canonical order.
    #[error("manifest files are not sorted (at `{0}`)")]
    NotSorted(String),
    /// No `index.html` at the root.
    #[error("bundle has no index.html at its root")]
    NoIndexHtml,
    /// Too many files.
    #[error("bundle has {0} files, more than the limit of {MAX_FILES}")]
    TooManyFiles(usize),
    /// A file is too large.
    #[error("file `{path}` is {size} bytes, more than the limit of {MAX_FILE_SIZE}")]
    FileTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The piece hashes do not match the size.
    #[error("file `{0}` has the wrong number of piece hashes for its size")]
    PieceCount(String),
    /// Piece hashes that do not merge to the file's BLAKE3.
    #[error("the piece hashes of `{0}` do not add up to its BLAKE3")]
    PieceHashes(String),
    /// An empty file with the hashes of some content.
    #[error("empty file `{0}` does not carry the hashes of empty content")]
    EmptyFileHash(String),
    /// The encoding is larger than allowed.
    #[error("manifest is {0} bytes, more than the limit of {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
}

/// Number of pieces a file of `size` bytes has (at least one).
pub fn piece_count(size: u64) -> u64 {
    size.div_ceil(PIECE_SIZE).max(1)
}

impl FileEntry {
    /// The hash piece `index` must have. `None` past the last piece.
    pub fn piece_hash(&self, index: u64) -> Option<Hash> {
        if self.pieces.is_empty() {
            (index == 0).then_some(self.blake3)
        } else {
            self.pieces.get(usize::try_from(index).ok()?).copied()
        }
    }

    /// Whether `data` is piece `index` of this file: its length, and its
    /// hash (the file's BLAKE3 for a file of one piece, else the piece's
    /// chaining value, see [`crate::piecehash`]).
    pub fn is_piece(&self, index: u64, data: &[u8]) -> bool {
        let range = self.piece_range(index);
        if data.len() as u64 != range.end - range.start {
            return false;
        }
        match self.piece_hash(index) {
            Some(want) if self.pieces.is_empty() => Hash::of(data) == want,
            Some(want) => piecehash::piece_hash(index, data) == want,
            None => false,
        }
    }

    /// Byte range of piece `index` within the file.
    pub fn piece_range(&self, index: u64) -> std::ops::Range<u64> {
        let start = (index * PIECE_SIZE).min(self.size);
        start..(start + PIECE_SIZE).min(self.size)
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.size > MAX_FILE_SIZE {
            return Err(ManifestError::FileTooLarge {
                path: self.path.to_string(),
                size: self.size,
            });
        }
        let want = if self.size > PIECE_SIZE {
            piece_count(self.size) as usize
        } else {
            0
        };
        if self.pieces.len() != want {
            return Err(ManifestError::PieceCount(self.path.to_string()));
        }
        if want > 0 && piecehash::root_of(&self.pieces) != Some(self.blake3) {
            return Err(ManifestError::PieceHashes(self.path.to_string()));
        }
        // An empty file has one possible content: a manifest must not name
        // some other blob for it (it would be "fetched" without any bytes).
        if self.size == 0
            && (self.blake3 != Hash::of(b"")
                || self.sha256 != <[u8; 32]>::from(Sha256::digest(b"")))
        {
            return Err(ManifestError::EmptyFileHash(self.path.to_string()));
        }
        Ok(())
    }
}

/// Hashes of one file's bytes, computed as they stream past: SHA-256 of
/// the whole, and the piece hashes, from which the file's BLAKE3 is merged
/// (one BLAKE3 pass, see [`crate::piecehash`]).
pub struct FileDigester {
    sha: Sha256,
    piece: PieceHasher,
    pieces: Vec<Hash>,
    /// Root hash of the first piece alone: the file's BLAKE3 if it has no
    /// second piece.
    first_root: Option<Hash>,
    size: u64,
}

/// What [`FileDigester`] computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    /// Bytes seen.
    pub size: u64,
    /// BLAKE3 of all bytes.
    pub blake3: Hash,
    /// SHA-256 of all bytes.
    pub sha256: [u8; 32],
    /// Piece hashes, empty for a file of one piece.
    pub pieces: Vec<Hash>,
}

impl Default for FileDigester {
    fn default() -> Self {
        Self::new()
    }
}

impl FileDigester {
    /// A digester that has seen no bytes.
    pub fn new() -> Self {
        FileDigester {
            sha: Sha256::new(),
            piece: PieceHasher::new(0),
            pieces: Vec::new(),
            first_root: None,
            size: 0,
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        self.sha.update(data);
        while !data.is_empty() {
            let n = ((PIECE_SIZE - self.piece.len()) as usize).min(data.len());
            self.piece.update(&data[..n]);
            if self.piece.len() == PIECE_SIZE {
                self.end_piece();
                self.piece = PieceHasher::new(self.pieces.len() as u64);
            }
            data = &data[n..];
        }
    }

    fn end_piece(&mut self) {
        if let Some(root) = self.piece.root() {
            self.first_root = Some(root);
        }
        self.pieces.extend(self.piece.chaining_value());
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of everything fed.
    pub fn finish(mut self) -> FileDigest {
        if !self.piece.is_empty() || self.size == 0 {
            self.end_piece();
        }
        let blake3 = match piecehash::root_of(&self.pieces) {
            Some(root) => root,
            None => {
                self.pieces.clear();
                self.first_root.expect("the first piece was ended")
            }
        };
        FileDigest {
            size: self.size,
            blake3,
            sha256: self.sha.finalize().into(),
            pieces: self.pieces,
        }
    }
}

impl FileDigest {
    /// Digests of a whole file held in memory. For a file of one piece this
    /// skips the separate piece hash, which would equal `blake3`.
    pub fn of_bytes(data: &[u8]) -> Self {
        if data.len() as u64 > PIECE_SIZE {
            let mut d = FileDigester::new();
            d.update(data);
            return d.finish();
        }
        FileDigest {
            size: data.len() as u64,
            blake3: Hash::of(data),
            sha256: Sha256::digest(data).into(),
            pieces: Vec::new(),
        }
    }

    /// A manifest entry for these digests at `path`.
    pub fn into_entry(self, path: BundlePath) -> FileEntry {
        FileEntry {
            path,
            size: self.size,
            blake3: self.blake3,
            sha256: self.sha256,
            pieces: self.pieces,
        }
    }
}

/// Every file of a bundle, sorted by path, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    files: Vec<FileEntry>,
}

impl Manifest {
    /// Builds a manifest from entries in any order, refusing duplicates,
    /// case collisions, a missing `index.html` and oversized input.
    pub fn new(mut files: Vec<FileEntry>) -> Result<Self, ManifestError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest { files };
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles(self.files.len()));
        }
        // What no reader would accept must not be written either.
        let encoded: usize = MAGIC.len()
            + 4
            + self
                .files
                .iter()
                .map(|f| 2 + f.path.as_str().len() + 8 + 64 + Hash::LEN * f.pieces.len())
                .sum::<usize>();
        if encoded > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(encoded));
        }
        let mut folded: HashMap<String, &str> = HashMap::with_capacity(self.files.len());
        for pair in self.files.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(ManifestError::Duplicate(pair[0].path.to_string()));
            }
            if pair[0].path > pair[1].path {
                return Err(ManifestError::NotSorted(pair[1].path.to_string()));
            }
        }
        for f in &self.files {
            f.check()?;
            // Case folding after NFC: names that one device file system
            // (APFS, ext4 with casefold, FAT on Android storage) would
            // store as one.
            let key: String = f.path.as_str().nfc().collect::<String>().to_lowercase();
            if let Some(other) = folded.insert(key, f.path.as_str()) {
                return Err(ManifestError::CaseCollision(
                    other.to_owned(),
                    f.path.to_string(),
                ));
            }
        }
        // A file cannot also be a folder of another file. In sorted order
        // `a/b` follows `a` after entries such as `a.js`, so look it up.
        for f in &self.files {
            let p = f.path.as_str();
            let mut end = 0;
            while let Some(pos) = p[end..].find('/') {
                end += pos;
                if self.get(&p[..end]).is_some() {
                    return Err(ManifestError::FileIsFolder(
                        p[..end].to_owned(),
                        p.to_owned(),
                    ));
                }
                end += 1;
            }
        }
        if self.get("index.html").is_none() {
            return Err(ManifestError::NoIndexHtml);
        }
        Ok(())
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// The file at `path`.
    pub fn get(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Sum of all file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The canonical bytes, as hashed for the bundle id.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC);
        w.u32(self.files.len() as u32);
        for f in &self.files {
            w.str16(f.path.as_str());
            w.u64(f.size);
            w.raw(f.blake3.as_bytes());
            w.raw(&f.sha256);
            for p in &f.pieces {
                w.raw(p.as_bytes());
            }
        }
        w.into_bytes()
    }

    /// Decodes and validates canonical bytes. Non-canonical encodings (files
    /// out of order, trailing bytes) are refused, so one manifest has exactly
    /// one encoding and one id.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        r.magic(MAGIC, "manifest")?;
        let count = r.u32("file count")? as usize;
        if count > MAX_FILES {
            return Err(ManifestError::TooManyFiles(count));
        }
        if count.saturating_mul(MIN_ENTRY_BYTES) > r.remaining() {
            return Err(DecodeError::Truncated {
                what: "file entries",
            }
            .into());
        }
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            let path = BundlePath::new(r.str16(MAX_PATH_LEN, "file path")?)?;
            let size = r.u64("file size")?;
            if size > MAX_FILE_SIZE {
                return Err(ManifestError::FileTooLarge {
                    path: path.to_string(),
                    size,
                });
            }
            let blake3 = Hash::from_bytes(r.array("file blake3")?);
            let sha256 = r.array("file sha256")?;
            let n = if size > PIECE_SIZE {
                piece_count(size) as usize
            } else {
                0
            };
            if n * Hash::LEN > r.remaining() {
                return Err(DecodeError::Truncated {
                    what: "piece hashes",
                }
                .into());
            }
            let mut pieces = Vec::with_capacity(n);
            for _ in 0..n {
                pieces.push(Hash::from_bytes(r.array("piece hash")?));
            }
            files.push(FileEntry {
                path,
                size,
                blake3,
                sha256,
                pieces,
            });
        }
        r.finish("manifest")?;
        let manifest = Manifest { files };
        manifest.check()?;
        Ok(manifest)
    }

    /// The bundle id: BLAKE3 of the canonical bytes.
    pub fn id(&self) -> BundleId {
        BundleId(Hash::of(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileDigest::of_bytes(data).into_entry(BundlePath::new(path).unwrap())
    }

    /// The fixed example of `protocol/FORMATS.md`.
    pub(crate) fn example() -> Manifest {
        Manifest::new(vec![
            entry("index.html", b"<!doctype html><script src=app.js></script>"),
            entry("app.js", b"console.log('hi')"),
            entry("assets/empty.txt", b""),
        ])
        .unwrap()
    }

    #[test]
    fn snapshot_of_canonical_bytes_and_id() {
        let m = example();
        let bytes = m.to_bytes();
        assert_eq!(
            hex::encode(&bytes),
            "4c534d414e4946320300000006006170702e6a7311000000000000008838f20352bbb0892195164edfd6affae08b22000c19c7aa99be34429710c91bd68859168dc1f70dd438505b7f1e894a89a4a64304f7488fb35affa97cef5fb610006173736574732f656d7074792e7478740000000000000000af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550a00696e6465782e68746d6c2b00000000000000fd3d25a1e3cfcc23f541dca674574caa6d2a61548569f91b2a0e77e060f03dee86055dbc85b848e1bb7e52c752a66317a3e13b7ebb50e7b0cf8b75a0ce183198",
            "protocol/FORMATS.md, example 1"
        );
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            m.id().to_string(),
            "the id is the hash of the canonical bytes"
        );
        assert_eq!(bytes.len(), 8 + 4 + 3 * (2 + 8 + 32 + 32) + 6 + 10 + 16);
        assert_eq!(&bytes[..12], b"LSMANIF2\x03\0\0\0");
        assert_eq!(&bytes[12..20], b"\x06\0app.js");
        assert_eq!(
            m.id().to_string(),
            "98076a762fa1bc5558b6cd56c1545570fb6f1faf67a387842fc375834aa4620c",
            "a changed bundle id for the same content is a broken network"
        );
    }

    #[test]
    fn pieces_verify_each_megabyte() {
        let edge = PIECE_SIZE as usize;
        for size in [0, 1, edge - 1, edge, edge + 1, 3 * edge + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let whole = FileDigest::of_bytes(&data);
            let mut streamed = FileDigester::new();
            for chunk in data.chunks(65_537) {
                streamed.update(chunk);
            }
            assert_eq!(streamed.finish(), whole, "size {size}");
            let e = whole.into_entry(BundlePath::new("f").unwrap());
            e.check().unwrap();
            let mut n = 0;
            while e.piece_hash(n).is_some() {
                let r = e.piece_range(n);
                let piece = &data[r.start as usize..r.end as usize];
                assert!(e.is_piece(n, piece), "size {size} piece {n}");
                let mut bad = piece.to_vec();
                if let Some(b) = bad.last_mut() {
                    *b ^= 1;
                    assert!(!e.is_piece(n, &bad));
                }
                assert!(!e.is_piece(n + 1, piece), "a piece is bound to its place");
                n += 1;
            }
            assert_eq!(n, piece_count(size as u64), "size {size}");
            assert_eq!(e.blake3, Hash::of(&data), "the file's own BLAKE3");
            if e.pieces.len() > 1 {
                // Pieces of other content under this file's address.
                let mut lying = e.clone();
                lying.pieces[1] = Hash::of(b"other");
                assert_eq!(lying.check(), Err(ManifestError::PieceHashes("f".into())));
            }
        }
    }

    #[test]
    fn refuses_bad_manifests() {
        assert_eq!(
            Manifest::new(vec![entry("a.js", b"")]).unwrap_err(),
            ManifestError::NoIndexHtml
        );
        assert_eq!(
            Manifest::new(vec![entry("index.html", b""), entry("index.html", b"x")]).unwrap_err(),
            ManifestError::Duplicate("index.html".into())
        );
        assert!(matches!(
            Manifest::new(vec![entry("index.html", b""), entry("INDEX.html", b"x")]),
            Err(ManifestError::CaseCollision(..))
        ));
        assert!(matches!(
            Manifest::new(vec![
                entry("index.html", b""),
                entry("caf\u{e9}.js", b"1"),
                entry("cafe\u{301}.js", b"2")
            ]),
            Err(ManifestError::CaseCollision(..))
        ));
        assert!(matches!(
            Manifest::new(vec![
                entry("index.html", b""),
                entry("a", b"1"),
                entry("a.js", b"2"),
                entry("a/b", b"3")
            ]),
            Err(ManifestError::FileIsFolder(..))
        ));
        let mut bytes = example().to_bytes();
        bytes.push(0);
        assert!(matches!(
            Manifest::from_bytes(&bytes),
            Err(ManifestError::Decode(DecodeError::TrailingBytes { .. }))
        ));
        let bytes = example().to_bytes();
        for cut in [0, 5, 12, 40, bytes.len() - 1] {
            assert!(Manifest::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A count that promises more entries than bytes remain is refused
        // before anything is allocated.
        let mut huge = b"LSMANIF2".to_vec();
        huge.extend_from_slice(&(MAX_FILES as u32).to_le_bytes());
        assert!(matches!(
            Manifest::from_bytes(&huge),
            Err(ManifestError::Decode(DecodeError::Truncated { .. }))
        ));
    }

    #[test]
    fn refuses_unsorted_encoding() {
        let m = example();
        let mut w = Writer::new();
        w.raw(MAGIC);
        w.u32(3);
        for f in m.files().iter().rev() {
            w.str16(f.path.as_str());
            w.u64(f.size);
            w.raw(f.blake3.as_bytes());
            w.raw(&f.sha256);
        }
        assert!(matches!(
            Manifest::from_bytes(&w.into_bytes()),
            Err(ManifestError::NotSorted(_))
        ));
    }

    fn arb_path() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-zA-Z0-9_é.-]{1,12}", 1..4)
            .prop_map(|c| c.join("/"))
            .prop_filter("no dot components", |p| {
                p.split('/').all(|c| c != "." && c != "..")
            })
    }

    proptest! {
        #[test]
        fn round_trips(
            paths in proptest::collection::btree_set(arb_path(), 0..20),
            sizes in proptest::collection::vec(0u64..(5 * PIECE_SIZE), 20),
            seed in any::<u8>(),
        ) {
            let mut files = vec![entry("index.html", &[seed])];
            for (i, (p, size)) in paths.iter().zip(sizes).enumerate() {
                // A folder of its own per path: no two paths collide.
                let p = format!("d{i}/{p}");
                let pieces: Vec<Hash> = if size > PIECE_SIZE {
                    (0..piece_count(size)).map(|i| Hash::of(&i.to_le_bytes())).collect()
                } else {
                    vec![]
                };
                // Piece hashes must merge to the file's BLAKE3.
                let blake3 = crate::piecehash::root_of(&pieces)
                    .unwrap_or_else(|| Hash::of(p.as_bytes()));
                files.push(FileEntry {
                    path: BundlePath::new(&p).unwrap(),
                    size,
                    blake3,
                    sha256: [seed; 32],
                    pieces,
                });
            }
            let m = Manifest::new(files).unwrap();
            let back = Manifest::from_bytes(&m.to_bytes()).unwrap();
            prop_assert_eq!(back.id(), m.id());
            prop_assert_eq!(back, m);
        }
    }
}
