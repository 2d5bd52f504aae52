//! Checking a blob downloaded from the origin before it enters the store:
//! its size and BLAKE3 must be the verified manifest's. A gzip blob is
//! decompressed (never past the size the manifest gives) while it is
//! hashed, into the store's staging writer. Blocking file I/O: called off
//! the async threads.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use lanseed_protocol::Hash;

/// Read size.
const BUF: usize = 256 * 1024;

/// Why a downloaded blob is refused.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Not the size the manifest gives.
    #[error("is {got} bytes{}, the manifest says {want}", if *.gzip { " once decompressed" } else { "" })]
    Size {
        /// Bytes found (when decompressing, at most `want + 1`).
        got: u64,
        /// Bytes the manifest gives.
        want: u64,
        /// Whether it was decompressed.
        gzip: bool,
    },
    /// The bytes do not hash to the blob's address.
    #[error("does not match its BLAKE3 hash (tampered or damaged)")]
    Hash,
    /// Not valid gzip.
    #[error("is not valid gzip: {0}")]
    Gzip(std::io::Error),
    /// Reading or writing failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Checks that the file at `path` is the blob `hash` of `size` bytes.
pub fn check_plain(path: &Path, hash: &Hash, size: u64) -> Result<(), BlobError> {
    let io = |source| BlobError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let got = file.metadata().map_err(io)?.len();
    if got != size {
        return Err(BlobError::Size {
            got,
            want: size,
            gzip: false,
        });
    }
    let digest = hash_reader(file.take(size), &mut std::io::sink()).map_err(io)?;
    check_digest(digest, hash, size, false)
}

/// Decompresses the gzip file at `path` into `out`, checking that it holds
/// the blob `hash` of `size` bytes; never writes more than `size + 1`.
pub fn inflate_into(
    path: &Path,
    hash: &Hash,
    size: u64,
    out: &mut impl Write,
) -> Result<(), BlobError> {
    let file = std::fs::File::open(path).map_err(|source| BlobError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    })?;
    let reader = flate2::read::GzDecoder::new(std::io::BufReader::new(file)).take(size + 1);
    let digest = hash_reader(reader, out).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::UnexpectedEof => BlobError::Gzip(e),
        _ => BlobError::Io {
            action: "cannot decompress",
            path: path.to_owned(),
            source: e,
        },
    })?;
    check_digest(digest, hash, size, true)
}

fn check_digest(
    (got, digest): (u64, Hash),
    hash: &Hash,
    size: u64,
    gzip: bool,
) -> Result<(), BlobError> {
    if got != size {
        return Err(BlobError::Size {
            got,
            want: size,
            gzip,
        });
    }
    if digest != *hash {
        return Err(BlobError::Hash);
    }
    Ok(())
}

/// Copies `reader` to `out`, hashing; returns the length and the hash.
fn hash_reader(mut reader: impl Read, out: &mut impl Write) -> std::io::Result<(u64, Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, Hash::from(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_blobs_are_checked_by_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 300_000];
        let p = dir.path().join("b");
        for (len, ok) in [
            (0, true),
            (1, true),
            (BUF - 1, true),
            (BUF, true),
            (BUF + 1, true),
        ] {
            std::fs::write(&p, &data[..len]).unwrap();
            assert_eq!(
                check_plain(&p, &Hash::of(&data[..len]), len as u64).is_ok(),
                ok
            );
        }
        std::fs::write(&p, &data).unwrap();
        assert!(matches!(
            check_plain(&p, &Hash::of(&data), data.len() as u64 + 1),
            Err(BlobError::Size { .. })
        ));
        let mut tampered = data.clone();
        tampered[1000] ^= 1;
        std::fs::write(&p, &tampered).unwrap();
        assert!(matches!(
            check_plain(&p, &Hash::of(&data), data.len() as u64),
            Err(BlobError::Hash)
        ));
    }

    #[test]
    fn gzip_blobs_inflate_within_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.gz");
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, gzip(&data)).unwrap();
        let mut out = Vec::new();
        inflate_into(&p, &Hash::of(&data), data.len() as u64, &mut out).unwrap();
        assert_eq!(out, data);

        // A bomb: the manifest says 10 bytes; no more than 11 come out.
        let mut out = Vec::new();
        let err = inflate_into(&p, &Hash::of(&data[..10]), 10, &mut out).unwrap_err();
        assert!(matches!(err, BlobError::Size { got: 11, .. }), "{err}");
        assert_eq!(out.len(), 11);

        // Cut short: not valid gzip.
        let whole = gzip(&data);
        std::fs::write(&p, &whole[..whole.len() / 2]).unwrap();
        let err = inflate_into(&p, &Hash::of(&data), data.len() as u64, &mut Vec::new());
        assert!(matches!(err, Err(BlobError::Gzip(_))), "{err:?}");

        // Valid gzip of other bytes of the same size.
        let mut other = data.clone();
        other[0] ^= 1;
        std::fs::write(&p, gzip(&other)).unwrap();
        let err = inflate_into(&p, &Hash::of(&data), data.len() as u64, &mut Vec::new());
        assert!(matches!(err, Err(BlobError::Hash)));
    }
}
