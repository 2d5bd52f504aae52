//! The wire protocol between lanseed nodes: `/lanseed/bundle/4`.
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
//! Pieces also go over a second protocol, [`LINE_PROTOCOL`]
//! (`/lanseed/pieces/1`): one long-lived stream per pair of peers (a
//! *line*), opened by the fetcher, on which it writes `GetPieces` frames
//! one after the other, up to 8 ahead of their answers, and the seeder
//! writes one answer per request, in the order asked (the same frames as
//! above). A line saves opening, negotiating and closing a stream for
//! every piece, and its flow-control window grows with use. Only
//! `GetPieces` is valid on a line; a node that does not speak it is asked
//! with request-response as before.
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

use crate::limits::{
    MAX_APP_LEN, MAX_CHANNEL_LEN, MAX_MANIFEST_BYTES, MAX_SIGNED_RELEASE_BYTES, MAX_VERSION_LEN,
    PIECE_SIZE,
};
use crate::report::{DeviceReport, MAX_DEVICE_ID_LEN, MAX_NAME_LEN};

/// The protocol id.
pub const PROTOCOL: &str = "/lanseed/bundle/4";

/// The protocol id of a line: a long-lived stream of `GetPieces` requests
/// and their answers, in order (see the module docs).
pub const LINE_PROTOCOL: &str = "/lanseed/pieces/1";

/// Most releases one announcement carries (a node with more sends several,
/// each within [`MAX_ANNOUNCE_BYTES`]).
pub const MAX_ANNOUNCED: usize = 256;

/// Most bytes of records one announcement carries: a request is read
/// whole before it is decoded, so this (not the count) bounds what a
/// stream may make a node buffer. Releases are a few hundred bytes; one
/// with the longest notes still fits, alone.
pub const MAX_ANNOUNCE_BYTES: usize = 4 * MAX_SIGNED_RELEASE_BYTES;

/// Most bytes of one `Have` bitfield (2^20 pieces: a terabyte).
pub const MAX_BITFIELD_BYTES: usize = 1 << 17;

/// Most bytes (unpacked) one `GetPieces` may ask for: one piece, or many
/// small ones.
pub const MAX_BATCH_BYTES: u64 = PIECE_SIZE;

/// Most pieces one `GetPieces` may name.
pub const MAX_BATCH_PIECES: usize = 4096;

/// Largest request, in bytes: a `Have` with the longest record and
/// bitfields (an announcement is smaller, and so is the largest
/// `GetPieces`, [`MAX_BATCH_PIECES`] × 37 bytes).
pub const MAX_REQUEST_BYTES: usize = MAX_SIGNED_RELEASE_BYTES + 2 * MAX_BITFIELD_BYTES + 64;

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
    /// "This device runs this" (see [`crate::report`]).
    Report(DeviceReport),
}

/// `records` as announcements: each within [`MAX_ANNOUNCED`] records and
/// [`MAX_ANNOUNCE_BYTES`] bytes of them (a record larger than that goes
/// alone).
pub fn announcements(records: &[Vec<u8>]) -> Vec<Request> {
    let mut out = Vec::new();
    let mut releases: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    for r in records {
        if !releases.is_empty()
            && (releases.len() == MAX_ANNOUNCED || bytes + r.len() > MAX_ANNOUNCE_BYTES)
        {
            out.push(Request::Announce {
                releases: std::mem::take(&mut releases),
            });
            bytes = 0;
        }
        bytes += r.len();
        releases.push(r.clone());
    }
    if !releases.is_empty() {
        out.push(Request::Announce { releases });
    }
    out
}

/// The least input [`looks_random`] judges: fewer bytes cannot tell
/// random data from text by their frequencies.
const JUDGED_FROM: usize = 4096;

/// Whether `bytes` (at least [`JUDGED_FROM`] of them) have the byte
/// frequencies of random data: an entropy estimate from their histogram
/// within twice its expected shortfall of 8 bits a byte. Counting costs a
/// tenth of what zstd spends failing on the same bytes. Text, code, JSON,
/// base64 and most binary formats are well below (4–6.5 bits); JPEG and
/// PNG data sit near 7.9–7.97 and are left to zstd. The estimate sees
/// byte frequencies only (order 0), so data whose frequencies are flat
/// but whose order is not random is misjudged and sent raw: a byte ramp
/// or table (`i as u8`), or a random block repeated at a period of 8 KiB
/// or more within the input. A missed saving, never a wrong byte.
pub fn looks_random(bytes: &[u8]) -> bool {
    if bytes.len() < JUDGED_FROM {
        return false;
    }
    // Four tables, so that runs of one byte value do not wait on each
    // other's increments.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = bytes.chunks_exact(4);
    for q in &mut quads {
        counts[0][q[0] as usize] += 1;
        counts[1][q[1] as usize] += 1;
        counts[2][q[2] as usize] += 1;
        counts[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        counts[0][b as usize] += 1;
    }
    let n = bytes.len() as f64;
    let sum: f64 = (0..256)
        .map(|v| f64::from(counts[0][v] + counts[1][v] + counts[2][v] + counts[3][v]))
        .filter(|&c| c > 0.0)
        .map(|c| c * c.log2())
        .sum();
    let entropy = n.log2() - sum / n;
    // The plug-in estimate falls short of 8 for uniform bytes by about
    // 255 / (2 n ln 2) (0.011 bits at 16 KiB, with a spread of 0.001).
    let shortfall = 255.0 / (2.0 * n * std::f64::consts::LN_2);
    entropy > 8.0 - 2.0 * shortfall
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

    /// Whether [`Packed::compress`] would keep `bytes` compressed, as far
    /// as a sample can tell: the test a sample of a large piece takes
    /// before all of it is tried. Bytes whose byte frequencies are those
    /// of random data ([`looks_random`]: encrypted, already compressed,
    /// most media) are taken not to shrink without asking zstd, which
    /// spent longer failing on them than on anything else (the rare data
    /// with flat frequencies that zstd would shrink is sent raw). The rest are tried: one
    /// compression context and output buffer per thread serve every test
    /// (a context made for each 16 KiB sample, its tables allocated and
    /// cleared, cost more than compressing the sample did).
    pub fn shrinks(bytes: &[u8]) -> bool {
        if looks_random(bytes) {
            return false;
        }
        use std::cell::RefCell;
        thread_local! {
            static TRIAL: RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> =
                const { RefCell::new(None) };
        }
        // Room for exactly what would be kept: a larger result does not
        // fit, and zstd says so rather than writing it.
        if bytes.len() < 32 {
            return Packed::compress(bytes.to_vec()).is_compressed();
        }
        let room = bytes.len() - bytes.len() / 32 - 1;
        TRIAL.with(|t| {
            let mut t = t.borrow_mut();
            if t.is_none() {
                *t = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                    .ok()
                    .map(|c| (c, Vec::new()));
            }
            let Some((ctx, out)) = t.as_mut() else {
                return false;
            };
            if out.len() < room {
                out.resize(room, 0);
            }
            ctx.compress_to_buffer(bytes, &mut out[..room]).is_ok()
        })
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
    /// A declared length or count beyond its limit or beyond the bytes
    /// present.
    #[error("{what} declares {declared}, more than {max} allowed")]
    Declared {
        /// Which field.
        what: &'static str,
        /// What the bytes declared.
        declared: u64,
        /// The most allowed there (limit or bytes present).
        max: u64,
    },
    /// Not a valid encoding.
    #[error("message does not decode: {0}")]
    Decode(String),
    /// A message kind this version does not know (kinds are only ever
    /// added: maybe a newer node's).
    #[error("message kind {0} is unknown to this version")]
    UnknownKind(u32),
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

/// Reads the bincode encoding of the messages by hand, so that every
/// declared length and count is checked against its limit *and* against
/// the bytes actually left before anything is allocated. Only canonical
/// (shortest) varints are accepted, so a message decodes from exactly one
/// byte string: the one [`encode_request`] / [`encode_response`] write.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.bytes.len() {
            return Err(WireError::Declared {
                what,
                declared: n as u64,
                max: self.bytes.len() as u64,
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// bincode's varint: below 251 one byte; 251, 252, 253 then a u16,
    /// u32, u64 (little-endian), each only for values the shorter forms
    /// cannot hold.
    fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let first = self.take(1, what)?[0];
        let (len, min) = match first {
            0..=250 => return Ok(u64::from(first)),
            251 => (2, 251),
            252 => (4, 1 << 16),
            253 => (8, 1 << 32),
            _ => {
                return Err(WireError::Decode(format!(
                    "{what}: bad varint marker {first}"
                )));
            }
        };
        let mut le = [0u8; 8];
        le[..len].copy_from_slice(self.take(len, what)?);
        let v = u64::from_le_bytes(le);
        if v < min {
            return Err(WireError::Decode(format!("{what}: non-canonical varint")));
        }
        Ok(v)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| WireError::Declared {
            what,
            declared: v,
            max: u64::from(u32::MAX),
        })
    }

    fn array32(&mut self, what: &'static str) -> Result<[u8; 32], WireError> {
        Ok(self.take(32, what)?.try_into().expect("32 bytes"))
    }

    /// A declared count of items at least `unit` bytes each: at most `max`,
    /// and no more than the bytes left can hold.
    fn count(&mut self, what: &'static str, max: usize, unit: usize) -> Result<usize, WireError> {
        let n = self.varint(what)?;
        let fits = (self.bytes.len() / unit.max(1)).min(max) as u64;
        if n > fits {
            return Err(WireError::Declared {
                what,
                declared: n,
                max: fits,
            });
        }
        Ok(n as usize)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, WireError> {
        let n = self.count(what, max, 1)?;
        Ok(self.take(n, what)?.to_vec())
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    fn string(&mut self, what: &'static str, max: usize) -> Result<String, WireError> {
        let n = self.count(what, max, 1)?;
        let raw = self.take(n, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| WireError::Decode(format!("{what}: not UTF-8")))
    }

    /// An `Option`'s tag: whether a value follows.
    fn some(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.take(1, what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(WireError::Decode(format!("{what}: bad option tag {t}"))),
        }
    }

    fn variant(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.u32(what)
    }

    fn end(self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(WireError::Decode(format!(
                "{} trailing bytes",
                self.bytes.len()
            )))
        }
    }
}

/// Smallest encoding of one `(blob, index)` pair of a `GetPieces`.
const PIECE_REF_MIN: usize = 33;

/// Decodes a request, refusing one over [`MAX_REQUEST_BYTES`], and any
/// declared length or count over its limit or over the bytes present,
/// before allocating for it.
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(WireError::TooLarge(bytes.len(), MAX_REQUEST_BYTES));
    }
    let mut r = Reader { bytes };
    let request = match r.variant("request kind")? {
        0 => {
            let n = r.count("announced releases", MAX_ANNOUNCED, 1)?;
            let mut releases = Vec::with_capacity(n);
            let mut total = 0;
            for _ in 0..n {
                let record = r.bytes("release record", MAX_SIGNED_RELEASE_BYTES)?;
                total += record.len();
                if total > MAX_ANNOUNCE_BYTES {
                    return Err(WireError::Declared {
                        what: "announced records",
                        declared: total as u64,
                        max: MAX_ANNOUNCE_BYTES as u64,
                    });
                }
                releases.push(record);
            }
            Request::Announce { releases }
        }
        1 => Request::GetManifest {
            bundle: r.array32("bundle id")?,
        },
        2 => {
            let n = r.count("pieces asked", MAX_BATCH_PIECES, PIECE_REF_MIN)?;
            let mut pieces = Vec::with_capacity(n);
            for _ in 0..n {
                pieces.push((r.array32("blob hash")?, r.u32("piece index")?));
            }
            Request::GetPieces { pieces }
        }
        3 => Request::Have {
            bundle: r.array32("bundle id")?,
            release: r.bytes("release record", MAX_SIGNED_RELEASE_BYTES)?,
            bits: r.bytes("bitfield", MAX_BITFIELD_BYTES)?,
            fetching: r.bytes("bitfield", MAX_BITFIELD_BYTES)?,
        },
        4 => Request::Report(DeviceReport {
            device_id: r.string("device id", MAX_DEVICE_ID_LEN)?,
            app: r.string("app", MAX_APP_LEN)?,
            channel: r.string("channel", MAX_CHANNEL_LEN)?,
            bundle: match r.some("bundle")? {
                true => Some(r.array32("bundle id")?),
                false => None,
            },
            version: r.string("version", MAX_VERSION_LEN)?,
            seq: r.varint("sequence")?,
            native_version: r.string("native version", MAX_VERSION_LEN)?,
            status: r.string("status", MAX_NAME_LEN)?,
            event: match r.some("event")? {
                true => Some(r.string("event", MAX_NAME_LEN)?),
                false => None,
            },
            time: r.varint("time")?,
            failed: match r.some("failed bundle")? {
                true => Some(r.array32("failed bundle id")?),
                false => None,
            },
        }),
        v => return Err(WireError::UnknownKind(v)),
    };
    r.end()?;
    Ok(request)
}

fn encoding(r: &mut Reader<'_>) -> Result<Encoding, WireError> {
    match r.variant("encoding")? {
        0 => Ok(Encoding::Raw),
        1 => Ok(Encoding::Zstd),
        v => Err(WireError::Decode(format!("no encoding {v}"))),
    }
}

/// Decodes a response, refusing one over [`MAX_RESPONSE_BYTES`] (and a
/// body longer than the bytes present, before allocating for it).
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(WireError::TooLarge(bytes.len(), MAX_RESPONSE_BYTES));
    }
    let mut r = Reader { bytes };
    let response = match r.variant("response kind")? {
        0 => Response::Ack,
        v @ (MANIFEST_VARIANT | PIECES_VARIANT) => {
            let encoding = encoding(&mut r)?;
            let raw_len = r.u32("unpacked length")?;
            let data = r.bytes("body", MAX_RESPONSE_BYTES)?;
            let packed = Packed {
                encoding,
                raw_len,
                data,
            };
            if v == PIECES_VARIANT {
                Response::Pieces(packed)
            } else {
                Response::Manifest(packed)
            }
        }
        3 => Response::NotFound,
        4 => Response::Busy,
        v => return Err(WireError::UnknownKind(v)),
    };
    r.end()?;
    checked(response)
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
    let head = DataHead {
        pieces: variant == PIECES_VARIANT,
        encoding: p.encoding,
        raw_len: p.raw_len,
        body_len: p.data.len() as u64,
    };
    Some((head.encode(), &p.data))
}

/// Reads a data answer's head from the first bytes of a frame (at most
/// [`MAX_DATA_HEAD`]; fewer when the frame is shorter): the head and how
/// many bytes it took, or `None` when the answer carries no data (decode
/// the whole frame with [`decode_response`] then).
pub fn decode_data_head(prefix: &[u8]) -> Result<Option<(DataHead, usize)>, WireError> {
    let mut r = Reader { bytes: prefix };
    let variant = r.variant("response kind")?;
    if variant != MANIFEST_VARIANT && variant != PIECES_VARIANT {
        return Ok(None);
    }
    let encoding = encoding(&mut r)?;
    let raw_len = r.u32("unpacked length")?;
    let body_len = r.varint("body length")?;
    let head = DataHead {
        pieces: variant == PIECES_VARIANT,
        encoding,
        raw_len,
        body_len,
    };
    Ok(Some((head, prefix.len() - r.bytes.len())))
}

impl DataHead {
    /// The head of `Pieces` whose `len` bytes go raw.
    pub fn raw_pieces(len: usize) -> Result<DataHead, WireError> {
        let raw_len =
            u32::try_from(len).map_err(|_| WireError::TooLarge(len, u32::MAX as usize))?;
        Ok(DataHead {
            pieces: true,
            encoding: Encoding::Raw,
            raw_len,
            body_len: len as u64,
        })
    }

    /// The head's bytes: what [`encode_response`] writes before the body
    /// of an answer with this head (for a body written from elsewhere,
    /// e.g. read from files as it is sent).
    pub fn encode(&self) -> Vec<u8> {
        let variant = if self.pieces {
            PIECES_VARIANT
        } else {
            MANIFEST_VARIANT
        };
        let head = (variant, self.encoding, self.raw_len, self.body_len);
        bincode::serde::encode_to_vec(head, config()).expect("heads encode")
    }

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

    fn varint(v: u64) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, config()).unwrap()
    }

    /// Frames whose declared lengths or counts lie: for every
    /// length-prefixed field and count of every message, a huge value
    /// (2^40, u64::MAX, u32::MAX) and one just over the bytes present.
    pub(crate) fn lying_frames() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let bundle = [7u8; 32];
        for (label, declared) in [
            ("2^40", 1u64 << 40),
            ("u64::MAX", u64::MAX),
            ("u32::MAX", u64::from(u32::MAX)),
            ("one over", 0),
        ] {
            let len = |present: usize| {
                varint(if declared == 0 {
                    present as u64 + 1
                } else {
                    declared
                })
            };
            // Have: release, bits, fetching.
            for field in 0..3 {
                let mut f = vec![3];
                f.extend_from_slice(&bundle);
                for i in 0..3 {
                    if i == field {
                        f.extend(len(4));
                        f.extend_from_slice(&[1, 2, 3, 4]);
                        break;
                    }
                    f.extend([2, 0xaa, 0xbb]);
                }
                out.push((format!("Have field {field} {label}"), f));
            }
            // Announce: the count, then one record's length.
            let mut f = vec![0];
            f.extend(len(3));
            f.extend([0, 0, 0]);
            out.push((format!("Announce count {label}"), f));
            let mut f = vec![0, 1];
            f.extend(len(5));
            f.extend([9; 5]);
            out.push((format!("Announce record {label}"), f));
            // GetPieces: the count.
            let mut f = vec![2];
            f.extend(len(1));
            f.extend_from_slice(&bundle);
            f.push(0);
            out.push((format!("GetPieces count {label}"), f));
            // GetPieces: a piece index beyond u32.
            let mut f = vec![2, 1];
            f.extend_from_slice(&bundle);
            f.extend(varint(if declared == 0 {
                1 << 32
            } else {
                declared.max(1 << 32)
            }));
            out.push((format!("GetPieces index {label}"), f));
            // Report: device id, app, channel.
            for field in 0..3 {
                let mut f = vec![4];
                for i in 0..3 {
                    if i == field {
                        f.extend(len(4));
                        f.extend_from_slice(b"abcd");
                        break;
                    }
                    f.extend([1, b'a']);
                }
                out.push((format!("Report field {field} {label}"), f));
            }
        }
        out
    }

    fn lying_answers() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (label, declared) in [
            ("2^40", 1u64 << 40),
            ("u64::MAX", u64::MAX),
            ("one over", 0),
        ] {
            for variant in [MANIFEST_VARIANT, PIECES_VARIANT] {
                let mut f = vec![variant as u8, 0, 4];
                f.extend(varint(if declared == 0 { 5 } else { declared }));
                f.extend([1, 2, 3, 4]);
                out.push((format!("answer {variant} body {label}"), f));
            }
            let mut f = vec![PIECES_VARIANT as u8, 0];
            f.extend(varint(declared.max(1 << 32)));
            f.push(0);
            out.push((format!("answer unpacked length {label}"), f));
        }
        out
    }

    #[test]
    fn every_declared_length_is_checked_against_the_bytes_present() {
        // The frame that used to abort a node: 42 bytes declaring 2^40.
        let mut crash = vec![3];
        crash.extend([0u8; 32]);
        crash.extend(varint(1 << 40));
        assert_eq!(crash.len(), 42);
        assert!(matches!(
            decode_request(&crash),
            Err(WireError::Declared { declared, .. }) if declared == 1 << 40
        ));
        for (name, frame) in lying_frames() {
            let e = decode_request(&frame).expect_err(&name);
            assert!(matches!(e, WireError::Declared { .. }), "{name}: {e}");
        }
        for (name, frame) in lying_answers() {
            assert!(decode_response(&frame).is_err(), "{name}");
        }
        // Counts over their limits are refused before any item is read.
        let mut f = vec![0];
        f.extend(varint(MAX_ANNOUNCED as u64 + 1));
        f.extend(vec![0; MAX_ANNOUNCED + 1]);
        assert!(
            matches!(decode_request(&f), Err(WireError::Declared { max, .. }) if max == MAX_ANNOUNCED as u64)
        );
        // Records over the announcement's byte limit, each within its own.
        let over = Request::Announce {
            releases: vec![vec![1; MAX_SIGNED_RELEASE_BYTES]; 5],
        };
        assert!(matches!(
            decode_request(&encode_request(&over)),
            Err(WireError::Declared {
                what: "announced records",
                ..
            })
        ));
        // Non-canonical varints and unknown kinds.
        assert!(decode_request(&[251, 0, 0]).is_err());
        assert!(decode_request(&[9]).is_err());
        assert!(decode_response(&[5]).is_err());
    }

    #[test]
    fn announcements_are_chunked_by_count_and_bytes() {
        let small = vec![vec![1u8; 300]; 600];
        let reqs = announcements(&small);
        assert_eq!(reqs.len(), 3);
        let big = vec![vec![2u8; MAX_SIGNED_RELEASE_BYTES]; 9];
        let reqs = announcements(&big);
        assert_eq!(reqs.len(), 3, "four of the largest per announcement");
        for r in reqs.iter().chain(announcements(&small).iter()) {
            let bytes = encode_request(r);
            assert!(bytes.len() <= MAX_REQUEST_BYTES);
            assert_eq!(&decode_request(&bytes).unwrap(), r);
        }
        assert!(announcements(&[]).is_empty());
    }

    fn arb_request() -> impl proptest::strategy::Strategy<Value = Request> {
        use proptest::collection::vec;
        use proptest::prelude::*;
        prop_oneof![
            vec(vec(any::<u8>(), 0..300), 0..8).prop_map(|releases| Request::Announce { releases }),
            any::<[u8; 32]>().prop_map(|bundle| Request::GetManifest { bundle }),
            vec((any::<[u8; 32]>(), any::<u32>()), 0..20)
                .prop_map(|pieces| Request::GetPieces { pieces }),
            (
                any::<[u8; 32]>(),
                vec(any::<u8>(), 0..300),
                vec(any::<u8>(), 0..70_000),
                vec(any::<u8>(), 0..40)
            )
                .prop_map(|(bundle, release, bits, fetching)| Request::Have {
                    bundle,
                    release,
                    bits,
                    fetching
                }),
            (
                ("\\PC{0,16}", "[a-z.]{1,40}", "[a-z]{1,20}"),
                proptest::option::of(any::<[u8; 32]>()),
                ("\\PC{0,20}", any::<u64>(), "[0-9.]{0,10}", "[a-z]{0,10}"),
                (
                    proptest::option::of("[a-z_]{0,12}"),
                    any::<u64>(),
                    proptest::option::of(any::<[u8; 32]>()),
                ),
            )
                .prop_map(
                    |(
                        (device_id, app, channel),
                        bundle,
                        (version, seq, native_version, status),
                        (event, time, failed),
                    )| {
                        Request::Report(DeviceReport {
                            device_id,
                            app,
                            channel,
                            bundle,
                            version,
                            seq,
                            native_version,
                            status,
                            event,
                            time,
                            failed,
                        })
                    }
                ),
        ]
    }

    fn arb_response() -> impl proptest::strategy::Strategy<Value = Response> {
        use proptest::prelude::*;
        let packed = (
            any::<bool>(),
            0u32..(1 << 20),
            proptest::collection::vec(any::<u8>(), 0..70_000),
        )
            .prop_map(|(z, raw_len, data)| Packed {
                encoding: if z { Encoding::Zstd } else { Encoding::Raw },
                raw_len,
                data,
            });
        prop_oneof![
            Just(Response::Ack),
            Just(Response::NotFound),
            Just(Response::Busy),
            packed.clone().prop_map(Response::Manifest),
            packed.prop_map(Response::Pieces),
        ]
    }

    proptest::proptest! {
        #[test]
        fn hand_decoders_read_exactly_what_bincode_writes(req in arb_request(), res in arb_response()) {
            let bytes = encode_request(&req);
            proptest::prop_assert_eq!(&decode_request(&bytes).unwrap(), &req);
            let bytes = encode_response(&res);
            proptest::prop_assert_eq!(&decode_response(&bytes).unwrap(), &res);
            if let Some((head, body)) = encode_data_head(&res) {
                let (h, used) = decode_data_head(&bytes[..bytes.len().min(MAX_DATA_HEAD)]).unwrap().unwrap();
                proptest::prop_assert_eq!(used, head.len());
                proptest::prop_assert_eq!(h.into_response(body.to_vec()).unwrap(), res);
            }
        }

        #[test]
        fn what_decodes_encodes_back_to_the_same_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(r) = decode_request(&bytes) {
                proptest::prop_assert_eq!(encode_request(&r), bytes.clone());
            }
            if let Ok(r) = decode_response(&bytes) {
                proptest::prop_assert_eq!(encode_response(&r), bytes);
            }
        }
    }

    /// Runs in a child process (see below): decodes random, mutated and
    /// lying frames under an address-space limit of 64 MiB above what the
    /// process had when it started.
    #[test]
    fn decoding_under_an_address_space_limit_child() {
        if std::env::var_os("LANSEED_WIRE_RLIMIT_CHILD").is_none() {
            return;
        }
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
        let limit = pages * 4096 + (64 << 20);
        rustix::process::setrlimit(
            rustix::process::Resource::As,
            rustix::process::Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
        .unwrap();
        let mut seeds: Vec<Vec<u8>> = lying_frames().into_iter().map(|(_, f)| f).collect();
        seeds.extend(lying_answers().into_iter().map(|(_, f)| f));
        seeds.push(encode_request(&Request::Have {
            bundle: [1; 32],
            release: vec![2; 100],
            bits: vec![3; 100],
            fetching: vec![4; 10],
        }));
        seeds.push(encode_response(&Response::Pieces(Packed::raw(vec![
            5;
            1000
        ]))));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let huge = [251u8, 252, 253, 254, 255];
        for i in 0..200_000u64 {
            let mut f = seeds[(next() % seeds.len() as u64) as usize].clone();
            match i % 4 {
                0 => {
                    let n = (next() % 64) as usize;
                    f = (0..n).map(|_| next() as u8).collect();
                }
                1 if !f.is_empty() => {
                    let at = (next() % f.len() as u64) as usize;
                    f[at] = next() as u8;
                }
                2 if !f.is_empty() => {
                    // A huge varint marker and length at a random place.
                    let at = (next() % f.len() as u64) as usize;
                    f[at] = huge[(next() % 5) as usize];
                    f.splice(at + 1..at + 1, (next() | 1 << 62).to_le_bytes());
                }
                _ => f.truncate((next() % (f.len() as u64 + 1)) as usize),
            }
            let _ = decode_request(&f);
            let _ = decode_response(&f);
            if let Ok(Some((head, used))) = decode_data_head(&f[..f.len().min(MAX_DATA_HEAD)])
                && let Ok(Response::Pieces(p) | Response::Manifest(p)) =
                    head.into_response(f[used.min(f.len())..].to_vec())
            {
                let _ = p.unpack(MAX_BATCH_BYTES as usize);
            }
        }
    }

    #[test]
    fn random_and_lying_frames_stay_within_an_address_space_limit() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "wire::tests::decoding_under_an_address_space_limit_child",
                "--test-threads=1",
            ])
            .env("LANSEED_WIRE_RLIMIT_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
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

    /// `shrinks` says what `compress` would do, for each kind of input and
    /// in any order (its context is reused after a result that did not
    /// fit); for data with flat byte frequencies see `looks_random`.
    #[test]
    fn shrinks_agrees_with_compress() {
        let mut random = vec![0u8; 20_000];
        getrandom::fill(&mut random).unwrap();
        let text: Vec<u8> = b"let x = 1;\n"
            .iter()
            .copied()
            .cycle()
            .take(16_384)
            .collect();
        let mut half = random[..8192].to_vec();
        half.extend_from_slice(&text[..8192]);
        let inputs: [&[u8]; 8] = [
            b"",
            b"aaaa",
            &text[..40],
            &random[..16_384],
            &text,
            &random,
            &half,
            &random[..64],
        ];
        for round in 0..2 {
            for (i, input) in inputs.iter().enumerate() {
                assert_eq!(
                    Packed::shrinks(input),
                    Packed::compress(input.to_vec()).is_compressed(),
                    "input {i}, round {round}"
                );
            }
        }
        assert!(Packed::shrinks(&text) && !Packed::shrinks(&random[..16_384]));
    }

    #[test]
    fn random_bytes_are_told_from_everything_that_may_shrink() {
        let mut random = vec![0u8; 1 << 20];
        getrandom::fill(&mut random).unwrap();
        // Random samples of every size judged, far from the threshold.
        for (i, sample) in random.chunks(16_384).enumerate() {
            assert!(looks_random(sample), "random sample {i}");
        }
        assert!(looks_random(&random) && looks_random(&random[..JUDGED_FROM]));
        // Too few bytes to judge.
        assert!(!looks_random(&random[..JUDGED_FROM - 1]));
        // What zstd shrinks is left to zstd: text, base64 of random data,
        // random data with one byte in eight fixed, and a random block
        // repeated (high entropy, but matches for zstd) up to 4 KiB.
        let text: Vec<u8> = b"function f(a, b) { return a + b; }\n"
            .iter()
            .copied()
            .cycle()
            .take(16_384)
            .collect();
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let base64: Vec<u8> = random[..16_384]
            .iter()
            .map(|b| B64[usize::from(b & 63)])
            .collect();
        let mut eighth = random[..16_384].to_vec();
        eighth.iter_mut().step_by(8).for_each(|b| *b = 0);
        let mut cases = vec![("text", text), ("base64", base64), ("one in eight", eighth)];
        for block in [1024, 2048, 4096] {
            let repeated = random[..block]
                .iter()
                .copied()
                .cycle()
                .take(16_384)
                .collect();
            cases.push(("repeated block", repeated));
        }
        for (name, bytes) in &cases {
            assert!(!looks_random(bytes), "{name} ({} bytes)", bytes.len());
            assert!(
                Packed::compress(bytes.clone()).is_compressed(),
                "{name}: zstd shrinks it"
            );
            assert!(Packed::shrinks(bytes), "{name}");
        }
    }
}
