//! The wire protocol between lanseed nodes: `/lanseed/bundle/1`.
//!
//! One request-response protocol carries everything, over libp2p streams
//! (TCP + noise + yamux). Message flow:
//!
//! ```text
//! on connect, and whenever its store gains a release:
//!   A -> B  Announce { releases }        signed release records A holds
//!   B -> A  Ack
//! for a release B follows and trusts, and does not hold:
//!   B -> A  GetManifest { bundle }       A: Manifest(bytes) or NotFound
//!   B -> A  GetPiece { blob, index }     A: Piece(bytes) or NotFound
//! ```
//!
//! Goals: a node learns of new releases at once, and fetches only what it
//! lacks, piece by piece (at most [`PIECE_SIZE`] each), verifying every
//! piece against the signed manifest before writing it. Non-goals: trust.
//! Peers are never trusted; a record is checked against the trust list,
//! a manifest against the signed bundle id, a piece against the manifest.
//!
//! Encoding: each message is a `u32` little-endian length, then the
//! message in bincode 2 (standard configuration). Lengths are checked
//! against [`MAX_REQUEST_BYTES`] / [`MAX_RESPONSE_BYTES`] before reading.
//! Variants are only ever added at the end; numbers are never reused.
//! What is hashed or signed (records, manifests) travels as its canonical
//! bytes, so changing this codec never changes an id.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_MANIFEST_BYTES, MAX_SIGNED_RELEASE_BYTES, PIECE_SIZE};

/// The protocol id.
pub const PROTOCOL: &str = "/lanseed/bundle/1";

/// Most releases one announcement carries (a node with more sends several).
pub const MAX_ANNOUNCED: usize = 256;

/// Largest request, in bytes.
pub const MAX_REQUEST_BYTES: usize = MAX_ANNOUNCED * (MAX_SIGNED_RELEASE_BYTES + 8) + 64;

/// Largest response, in bytes: a manifest.
pub const MAX_RESPONSE_BYTES: usize = MAX_MANIFEST_BYTES + 64;

/// Largest answer to a piece request, in bytes.
pub const MAX_PIECE_RESPONSE_BYTES: usize = PIECE_SIZE as usize + 64;

/// What one node asks another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "I hold these releases" (signed release records).
    Announce {
        /// Signed release records, canonical bytes.
        releases: Vec<Vec<u8>>,
    },
    /// The canonical manifest of a bundle.
    GetManifest {
        /// Bundle id.
        bundle: [u8; 32],
    },
    /// One piece of a blob.
    GetPiece {
        /// The blob's BLAKE3.
        blob: [u8; 32],
        /// Piece index (pieces are [`PIECE_SIZE`] bytes, the last shorter).
        index: u32,
    },
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// An announcement was received.
    Ack,
    /// Canonical manifest bytes.
    Manifest(Vec<u8>),
    /// The bytes of a piece.
    Piece(Vec<u8>),
    /// The node does not hold what was asked for.
    NotFound,
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
    if let Request::Announce { releases } = &r
        && releases.len() > MAX_ANNOUNCED
    {
        return Err(WireError::TooLarge(releases.len(), MAX_ANNOUNCED));
    }
    Ok(r)
}

/// Decodes a response, refusing one over [`MAX_RESPONSE_BYTES`].
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let r: Response = decode(bytes, MAX_RESPONSE_BYTES)?;
    if let Response::Piece(p) = &r
        && p.len() as u64 > PIECE_SIZE
    {
        return Err(WireError::TooLarge(p.len(), PIECE_SIZE as usize));
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
            Request::GetPiece {
                blob: [9; 32],
                index: 3,
            },
        ];
        for m in msgs {
            assert_eq!(decode_request(&encode_request(&m)).unwrap(), m);
        }
        let piece = Response::Piece(vec![0; PIECE_SIZE as usize + 1]);
        assert!(decode_response(&encode_response(&piece)).is_err());
        let ok = Response::Piece(vec![5; 1000]);
        assert_eq!(decode_response(&encode_response(&ok)).unwrap(), ok);
        assert!(decode_request(&[0xff; 10]).is_err());
        let mut bytes = encode_response(&Response::Ack);
        bytes.push(0);
        assert!(decode_response(&bytes).is_err());
    }
}
