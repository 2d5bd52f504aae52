//! The wire protocol between lanseed nodes: `/lanseed/bundle/2`.
//!
//! One request-response protocol carries everything, over libp2p streams
//! (TCP + noise + yamux). Message flow:
//!
//! ```text
//! on connect, and whenever its store gains a release:
//!   A -> B  Announce { releases }        signed release records A holds whole
//!   B -> A  Ack
//! while B fetches a release, at most every 100 ms when it gained pieces
//! (the signed record in the first one to each peer only):
//!   B -> C  Have { bundle, release, bits, fetching }
//!                                        the pieces B holds, and those it is
//!                                        asking for now (see pieces.rs)
//!   C -> B  Ack
//! for a release B follows and trusts, and does not hold:
//!   B -> A  GetManifest { bundle }       A: Manifest(packed), NotFound or Busy
//!   B -> A  GetPieces { pieces }         A: Pieces(packed), NotFound or Busy
//! ```
//!
//! Goals: a node learns of new releases at once; it fetches only what it
//! lacks, from every peer that has it, and serves what it has verified
//! while it fetches the rest. A `GetPieces` names pieces by (blob, index),
//! so answering needs no manifest; small files are asked for together (up
//! to [`MAX_BATCH_BYTES`] of them) and compressed together, which is where
//! compression gains most. Non-goals: trust. Peers are never trusted; a
//! record is checked against the trust list, a manifest against the signed
//! bundle id, a piece against the manifest.
//!
//! Compression ([`Packed`]): zstd, level [`ZSTD_LEVEL`], over the whole
//! answer; kept only when it saves at least 1/32 of the bytes, so media
//! goes as it is. zstd rather than deflate: at the same ratio it
//! compresses several times faster and decompresses faster still, which
//! matters when a seeder serves a LAN at 100+ MB/s; and unlike per-file
//! deflate in a zip, one compressed answer spans many small files.
//!
//! Encoding: each message is a `u32` little-endian length, then the
//! message in bincode 2 (standard configuration). Lengths are checked
//! against [`MAX_REQUEST_BYTES`] / [`MAX_RESPONSE_BYTES`] before reading,
//! and a packed answer's unpacked length before unpacking.
//! Variants are only ever added at the end; numbers are never reused.
//! What is hashed or signed (records, manifests) travels as its canonical
//! bytes, so changing this codec never changes an id.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_MANIFEST_BYTES, MAX_SIGNED_RELEASE_BYTES, PIECE_SIZE};

/// The protocol id.
pub const PROTOCOL: &str = "/lanseed/bundle/2";

/// Most releases one announcement carries (a node with more sends several).
pub const MAX_ANNOUNCED: usize = 256;

/// Most bytes (unpacked) one `GetPieces` may ask for: one piece, or many
/// small ones.
pub const MAX_BATCH_BYTES: u64 = PIECE_SIZE;

/// Most pieces one `GetPieces` may name.
pub const MAX_BATCH_PIECES: usize = 4096;

/// Largest request, in bytes.
pub const MAX_REQUEST_BYTES: usize = MAX_ANNOUNCED * (MAX_SIGNED_RELEASE_BYTES + 8) + 64;

/// Largest response, in bytes: a manifest.
pub const MAX_RESPONSE_BYTES: usize = MAX_MANIFEST_BYTES + 64;

/// Largest answer to a piece request, in bytes.
pub const MAX_PIECE_RESPONSE_BYTES: usize = MAX_BATCH_BYTES as usize + 64;

/// zstd level of packed answers.
pub const ZSTD_LEVEL: i32 = 3;

/// What one node asks another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "I hold these releases whole" (signed release records).
    Announce {
        /// Signed release records, canonical bytes.
        releases: Vec<Vec<u8>>,
    },
    /// The canonical manifest of a bundle.
    GetManifest {
        /// Bundle id.
        bundle: [u8; 32],
    },
    /// Pieces, answered in the order asked, concatenated.
    GetPieces {
        /// (blob BLAKE3, piece index) pairs; pieces are [`PIECE_SIZE`]
        /// bytes, the last of a blob shorter.
        pieces: Vec<([u8; 32], u32)>,
    },
    /// "I hold these pieces of this release's bundle" (a node that is
    /// still fetching it).
    Have {
        /// Bundle id.
        bundle: [u8; 32],
        /// The signed release record being fetched, in the first `Have`
        /// to a peer; empty in later ones.
        #[serde(with = "serde_bytes")]
        release: Vec<u8>,
        /// [`crate::pieces::Bitfield`] over the bundle's numbered pieces:
        /// those it holds, verified.
        #[serde(with = "serde_bytes")]
        bits: Vec<u8>,
        /// The same over the pieces it is asking peers for right now, so
        /// that others prefer pieces nobody is fetching yet.
        #[serde(with = "serde_bytes")]
        fetching: Vec<u8>,
    },
}

/// How a [`Packed`] body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// As it is.
    Raw,
    /// zstd.
    Zstd,
}

/// A body, maybe compressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    /// How `data` is encoded.
    pub encoding: Encoding,
    /// Length once unpacked.
    pub raw_len: u32,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Packed {
    /// `raw` as it is.
    pub fn raw(raw: Vec<u8>) -> Packed {
        Packed {
            encoding: Encoding::Raw,
            raw_len: raw.len() as u32,
            data: raw,
        }
    }

    /// `raw`, compressed when that saves at least 1/32 of it.
    pub fn compress(raw: Vec<u8>) -> Packed {
        match zstd::bulk::compress(&raw, ZSTD_LEVEL) {
            Ok(z) if z.len() < raw.len() - raw.len() / 32 => Packed {
                encoding: Encoding::Zstd,
                raw_len: raw.len() as u32,
                data: z,
            },
            _ => Packed::raw(raw),
        }
    }

    /// Whether compression was kept.
    pub fn is_compressed(&self) -> bool {
        self.encoding == Encoding::Zstd
    }

    /// The unpacked bytes, refusing more than `max` (checked before any
    /// work) or a body that does not unpack to exactly `raw_len`.
    pub fn unpack(self, max: usize) -> Result<Vec<u8>, WireError> {
        let len = self.raw_len as usize;
        if len > max {
            return Err(WireError::TooLarge(len, max));
        }
        match self.encoding {
            Encoding::Raw if self.data.len() == len => Ok(self.data),
            Encoding::Raw => Err(WireError::Decode("raw body of the wrong length".into())),
            Encoding::Zstd => {
                let out = zstd::bulk::decompress(&self.data, len)
                    .map_err(|e| WireError::Decode(format!("zstd: {e}")))?;
                if out.len() != len {
                    return Err(WireError::Decode(
                        "compressed body of the wrong length".into(),
                    ));
                }
                Ok(out)
            }
        }
    }
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// An announcement was received.
    Ack,
    /// Canonical manifest bytes.
    Manifest(Packed),
    /// The pieces asked for, concatenated in the order asked.
    Pieces(Packed),
    /// The node does not hold (all of) what was asked for.
    NotFound,
    /// The node serves as many peers as it will (`--max-uploads`): ask
    /// others, or again later.
    Busy,
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Larger than allowed.
    #[error("message of {0} bytes is larger than the limit of {1}")]
    TooLarge(usize, usize),
    /// Not a valid encoding.
    #[error("message does not decode: {0}")]
    Decode(String),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a request (without the length prefix).
pub fn encode_request(r: &Request) -> Vec<u8> {
    bincode::serde::encode_to_vec(r, config()).expect("requests encode")
}

/// Encodes a response (without the length prefix).
pub fn encode_response(r: &Response) -> Vec<u8> {
    bincode::serde::encode_to_vec(r, config()).expect("responses encode")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge(bytes.len(), max));
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| WireError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Decodes a request, refusing one over [`MAX_REQUEST_BYTES`].
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    let r: Request = decode(bytes, MAX_REQUEST_BYTES)?;
    match &r {
        Request::Announce { releases } if releases.len() > MAX_ANNOUNCED => {
            return Err(WireError::TooLarge(releases.len(), MAX_ANNOUNCED));
        }
        Request::GetPieces { pieces } if pieces.len() > MAX_BATCH_PIECES => {
            return Err(WireError::TooLarge(pieces.len(), MAX_BATCH_PIECES));
        }
        _ => {}
    }
    Ok(r)
}

/// Decodes a response, refusing one over [`MAX_RESPONSE_BYTES`].
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let r: Response = decode(bytes, MAX_RESPONSE_BYTES)?;
    if let Response::Pieces(p) = &r
        && p.raw_len as u64 > MAX_BATCH_BYTES
    {
        return Err(WireError::TooLarge(
            p.raw_len as usize,
            MAX_BATCH_BYTES as usize,
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let msgs = [
            Request::Announce {
                releases: vec![vec![1, 2, 3]],
            },
            Request::GetManifest { bundle: [7; 32] },
            Request::GetPieces {
                pieces: vec![([9; 32], 3), ([8; 32], 0)],
            },
            Request::Have {
                bundle: [1; 32],
                release: vec![4; 40],
                bits: vec![0b101],
                fetching: vec![0b010],
            },
        ];
        for m in msgs {
            assert_eq!(decode_request(&encode_request(&m)).unwrap(), m);
        }
        let too_many = Request::GetPieces {
            pieces: vec![([0; 32], 0); MAX_BATCH_PIECES + 1],
        };
        assert!(decode_request(&encode_request(&too_many)).is_err());
        let big = Response::Pieces(Packed::raw(vec![0; MAX_BATCH_BYTES as usize + 1]));
        assert!(decode_response(&encode_response(&big)).is_err());
        let ok = Response::Pieces(Packed::raw(vec![5; 1000]));
        assert_eq!(decode_response(&encode_response(&ok)).unwrap(), ok);
        assert!(decode_request(&[0xff; 10]).is_err());
        let mut bytes = encode_response(&Response::Ack);
        bytes.push(0);
        assert!(decode_response(&bytes).is_err());
    }

    #[test]
    fn text_is_compressed_media_is_not() {
        let text = b"function render(){ return document.querySelector('#app'); }\n".repeat(500);
        let p = Packed::compress(text.clone());
        assert!(p.is_compressed() && p.data.len() * 5 < text.len());
        assert_eq!(p.unpack(text.len()).unwrap(), text);
        let mut noise = vec![0u8; 100_000];
        let mut x = 1u64;
        for b in &mut noise {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (x >> 56) as u8;
        }
        let p = Packed::compress(noise.clone());
        assert!(!p.is_compressed());
        assert_eq!(p.unpack(noise.len()).unwrap(), noise);
    }

    #[test]
    fn unpacking_is_bounded_and_exact() {
        let text = vec![b'a'; 10_000];
        let p = Packed::compress(text);
        assert!(matches!(
            p.clone().unpack(9_999),
            Err(WireError::TooLarge(..))
        ));
        let mut lying = p.clone();
        lying.raw_len = 20_000;
        assert!(lying.unpack(1 << 20).is_err());
        let mut short = p;
        short.raw_len = 5_000;
        assert!(short.unpack(1 << 20).is_err());
        let mut raw = Packed::raw(vec![1; 10]);
        raw.raw_len = 11;
        assert!(raw.unpack(100).is_err());
    }
}
