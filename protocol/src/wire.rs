//! The wire protocol between lanseed nodes: `/lanseed/bundle/3`.
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
pub const PROTOCOL: &str = "/lanseed/bundle/3";

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
        if self.encoding == Encoding::Raw {
            self.unpacked(max)?;
            return Ok(self.data);
        }
        self.unpacked(max).map(std::borrow::Cow::into_owned)
    }

    /// The unpacked bytes, borrowed when they went as they are (the body
    /// stays with `self`, for its buffer to be reused); same checks as
    /// [`Packed::unpack`].
    pub fn unpacked(&self, max: usize) -> Result<std::borrow::Cow<'_, [u8]>, WireError> {
        let len = self.raw_len as usize;
        if len > max {
            return Err(WireError::TooLarge(len, max));
        }
        match self.encoding {
            Encoding::Raw if self.data.len() == len => Ok(self.data.as_slice().into()),
            Encoding::Raw => Err(WireError::Decode("raw body of the wrong length".into())),
            Encoding::Zstd => {
                let out = zstd::bulk::decompress(&self.data, len)
                    .map_err(|e| WireError::Decode(format!("zstd: {e}")))?;
                if out.len() != len {
                    return Err(WireError::Decode(
                        "compressed body of the wrong length".into(),
                    ));
                }
                Ok(out.into())
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
    checked(decode(bytes, MAX_RESPONSE_BYTES)?)
}

/// Most bytes of a data answer's head ([`DataHead`]): the variant, the
/// encoding, the unpacked length and the body's length, each a varint.
pub const MAX_DATA_HEAD: usize = 1 + 1 + 5 + 9;

/// Variant numbers of the answers that carry data.
const MANIFEST_VARIANT: u32 = 1;
const PIECES_VARIANT: u32 = 2;

/// What precedes the body of an answer carrying data (`Manifest` or
/// `Pieces`): the same bytes [`encode_response`] writes, split so that a
/// codec writes the body from where it lies and reads it straight into a
/// buffer of its own (a megabyte answer is not copied once more to be
/// framed, nor decoded out of the frame into another buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHead {
    /// `Pieces` (else `Manifest`).
    pub pieces: bool,
    /// How the body is packed.
    pub encoding: Encoding,
    /// Length once unpacked.
    pub raw_len: u32,
    /// Length of the body that follows.
    pub body_len: u64,
}

/// The head of `r` and its body, when `r` carries data; `head ++ body`
/// is exactly `encode_response(r)`.
pub fn encode_data_head(r: &Response) -> Option<(Vec<u8>, &[u8])> {
    let (variant, p) = match r {
        Response::Manifest(p) => (MANIFEST_VARIANT, p),
        Response::Pieces(p) => (PIECES_VARIANT, p),
        _ => return None,
    };
    let head = (variant, p.encoding, p.raw_len, p.data.len() as u64);
    let bytes = bincode::serde::encode_to_vec(head, config()).expect("heads encode");
    Some((bytes, &p.data))
}

/// Reads a data answer's head from the first bytes of a frame (at most
/// [`MAX_DATA_HEAD`]; fewer when the frame is shorter): the head and how
/// many bytes it took, or `None` when the answer carries no data (decode
/// the whole frame with [`decode_response`] then).
pub fn decode_data_head(prefix: &[u8]) -> Result<Option<(DataHead, usize)>, WireError> {
    let bad = |e: bincode::error::DecodeError| WireError::Decode(e.to_string());
    let (variant, _): (u32, usize) =
        bincode::serde::decode_from_slice(prefix, config()).map_err(bad)?;
    if variant != MANIFEST_VARIANT && variant != PIECES_VARIANT {
        return Ok(None);
    }
    let ((_, encoding, raw_len, body_len), used): ((u32, Encoding, u32, u64), usize) =
        bincode::serde::decode_from_slice(prefix, config()).map_err(bad)?;
    let head = DataHead {
        pieces: variant == PIECES_VARIANT,
        encoding,
        raw_len,
        body_len,
    };
    Ok(Some((head, used)))
}

impl DataHead {
    /// The answer, with the body read after the head.
    pub fn into_response(self, body: Vec<u8>) -> Result<Response, WireError> {
        if body.len() as u64 != self.body_len {
            return Err(WireError::Decode("body of the wrong length".into()));
        }
        let packed = Packed {
            encoding: self.encoding,
            raw_len: self.raw_len,
            data: body,
        };
        checked(if self.pieces {
            Response::Pieces(packed)
        } else {
            Response::Manifest(packed)
        })
    }
}

/// A decoded answer within the limits of its kind.
fn checked(r: Response) -> Result<Response, WireError> {
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
    fn data_heads_split_the_same_bytes() {
        for len in [0usize, 1, 250, 251, 65_535, 65_536, 1 << 20] {
            for (encoding, raw_len) in [(Encoding::Raw, len as u32), (Encoding::Zstd, u32::MAX)] {
                let p = Packed {
                    encoding,
                    raw_len,
                    data: vec![7; len],
                };
                for r in [Response::Manifest(p.clone()), Response::Pieces(p.clone())] {
                    let whole = encode_response(&r);
                    let (head, body) = encode_data_head(&r).unwrap();
                    assert!(head.len() <= MAX_DATA_HEAD);
                    assert_eq!([head.as_slice(), body].concat(), whole);
                    let prefix = &whole[..whole.len().min(MAX_DATA_HEAD)];
                    let (h, used) = decode_data_head(prefix).unwrap().unwrap();
                    assert_eq!(used, head.len());
                    assert_eq!(h.body_len, len as u64);
                    let back = h.into_response(body.to_vec());
                    if matches!(r, Response::Pieces(_)) && raw_len as u64 > MAX_BATCH_BYTES {
                        assert!(back.is_err(), "pieces over the batch limit");
                    } else {
                        assert_eq!(back.unwrap(), r);
                    }
                    assert!(h.into_response(vec![0; len + 1]).is_err());
                }
            }
        }
        for r in [Response::Ack, Response::NotFound, Response::Busy] {
            assert!(encode_data_head(&r).is_none());
            assert_eq!(decode_data_head(&encode_response(&r)).unwrap(), None);
        }
        assert!(decode_data_head(&[]).is_err());
        assert!(decode_data_head(&[2, 0]).is_err(), "a truncated head");
        assert!(decode_data_head(&[2, 9, 0, 0]).is_err(), "no such encoding");
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
        assert!(
            matches!(raw.unpacked(10), Ok(std::borrow::Cow::Borrowed(b)) if b == [1; 10]),
            "a raw body is lent, not copied"
        );
        raw.raw_len = 11;
        assert!(raw.unpack(100).is_err());
    }
}
