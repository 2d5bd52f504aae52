//! Crafted frames of `/lanseed/bundle/4`: the byte-level lies the liar
//! sends, built by hand on the bincode 2 standard layout.
//!
//! Layout reminder (what [`lanseed_protocol::wire`] writes): integers are
//! varints (below 251 one byte; else a tag 251, 252 or 253 and a u16, u32
//! or u64 little-endian); an enum variant is its index as a varint; a
//! `Vec` or byte string is a varint length then its items; `[u8; 32]` is 32
//! raw bytes. A frame is a `u32` little-endian length, then the message.
//!
//! Every length field and count of every message is declared huge (2^40,
//! `u64::MAX`, `u32::MAX`) or "just over the bytes present" inside an
//! otherwise honest frame; the outer length prefix is lied about on its
//! own (beyond the limits, larger than the bytes then sent, truncated).
//! Honest control frames (`ok.*`) prove the encoding itself is right: the
//! node must answer them.

use lanseed_protocol::limits::MAX_SIGNED_RELEASE_BYTES;
use lanseed_protocol::wire::{self, Packed, Request, Response};

/// One crafted frame: its name, the exact bytes written on a fresh
/// stream (length prefix included), and whether the liar then closes its
/// half of the stream (`eof`) or keeps it open (`hold`).
#[derive(Clone, Debug)]
pub struct Frame {
    /// Stable name, e.g. `have.release_len.2^40`.
    pub name: String,
    /// What is written, prefix included.
    pub bytes: Vec<u8>,
    /// Close the write half after writing (the honest request-response
    /// client does; only truncated frames need the difference).
    pub half_close: bool,
}

/// A bincode varint.
pub fn varint(v: u64) -> Vec<u8> {
    if v < 251 {
        vec![v as u8]
    } else if v <= u64::from(u16::MAX) {
        let mut out = vec![251];
        out.extend_from_slice(&(v as u16).to_le_bytes());
        out
    } else if v <= u64::from(u32::MAX) {
        let mut out = vec![252];
        out.extend_from_slice(&(v as u32).to_le_bytes());
        out
    } else {
        let mut out = vec![253];
        out.extend_from_slice(&v.to_le_bytes());
        out
    }
}

/// `body` behind an honest `u32` little-endian length prefix.
pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// `body` behind the length prefix `len`, whatever the body's length.
pub fn prefixed(len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The declared lengths every length field and count is tried with.
#[derive(Clone, Copy, Debug)]
enum Huge {
    Abs(&'static str, u64),
    /// One more than the items or bytes present.
    OverBy1,
}

const HUGE: [Huge; 4] = [
    Huge::Abs("2^40", 1 << 40),
    Huge::Abs("u64max", u64::MAX),
    Huge::Abs("u32max", u32::MAX as u64),
    Huge::OverBy1,
];

impl Huge {
    fn name(self) -> &'static str {
        match self {
            Huge::Abs(n, _) => n,
            Huge::OverBy1 => "over_by_1",
        }
    }
}

/// What the request frames are built from: a real signed release record
/// when the liar has a store (else junk of a record's size), a bundle id
/// and a blob hash.
#[derive(Clone, Debug)]
pub struct Material {
    /// A signed release record (canonical bytes).
    pub record: Vec<u8>,
    /// A bundle id.
    pub bundle: [u8; 32],
    /// A blob hash.
    pub blob: [u8; 32],
}

impl Material {
    /// Junk material, for a liar without a store.
    pub fn junk() -> Material {
        Material {
            record: (0..160u32).map(|i| (i * 7 + 3) as u8).collect(),
            bundle: [0x42; 32],
            blob: [0x17; 32],
        }
    }
}

/// A length field lie: `head`, then the declared length or count, then
/// `tail` (which holds `present` units) only for "over by one" (a huge
/// declaration is followed by nothing, as in the 42-byte `Have` that
/// crashed the node).
fn length_lies(out: &mut Vec<Frame>, field: &str, head: &[u8], tail: &[u8], present: u64) {
    for h in HUGE {
        let mut body = head.to_vec();
        match h {
            Huge::Abs(_, v) => body.extend(varint(v)),
            Huge::OverBy1 => {
                body.extend(varint(present + 1));
                body.extend_from_slice(tail);
            }
        }
        out.push(Frame {
            name: format!("{field}.{}", h.name()),
            bytes: framed(&body),
            half_close: false,
        });
    }
}

fn frame(name: &str, bytes: Vec<u8>, half_close: bool) -> Frame {
    Frame {
        name: name.to_owned(),
        bytes,
        half_close,
    }
}

/// A signed release record whose statement says layout `LSRELEA9`.
fn later_layout_record() -> Vec<u8> {
    use lanseed_protocol::release::{Release, Rollout};
    let release = Release {
        app: "com.example.later".into(),
        channel: "production".into(),
        version: "9.0.0".into(),
        bundle_id: lanseed_protocol::BundleId(lanseed_protocol::Hash::of(b"later")),
        seq: 9,
        created: 9,
        min_native_version: None,
        rollout: Rollout::FULL,
        expires: None,
        notes: None,
        capgo: None,
    };
    let key = lanseed_protocol::SecretKey::from_seed(&[9; 32]);
    let mut record = release.sign(&key).expect("a valid release").to_bytes();
    // After "LSSIGRL1" and the statement's u32 length: "LSRELEA1".
    assert_eq!(&record[12..20], b"LSRELEA1");
    record[19] = b'9';
    record
}

/// Every request frame the `frames` mode sends, in order.
pub fn request_frames(m: &Material) -> Vec<Frame> {
    let rec = &m.record;
    let mut out = Vec::new();
    let ok = |name: &str, r: &Request| frame(name, framed(&wire::encode_request(r)), false);

    // Honest control frames: the node must understand these.
    out.push(ok(
        "ok.announce",
        &Request::Announce {
            releases: vec![rec.clone()],
        },
    ));
    // A record of a release layout this node does not read (as an older
    // node sees a newer one's `LSRELEA2`): refused, the stream answered.
    let later = later_layout_record();
    out.push(ok(
        "ok.announce.later_release_layout",
        &Request::Announce {
            releases: vec![later],
        },
    ));
    out.push(ok(
        "ok.get_manifest",
        &Request::GetManifest { bundle: m.bundle },
    ));
    out.push(ok(
        "ok.get_pieces",
        &Request::GetPieces {
            pieces: vec![(m.blob, 0)],
        },
    ));
    out.push(ok(
        "ok.have",
        &Request::Have {
            bundle: m.bundle,
            release: Vec::new(),
            bits: vec![1],
            fetching: vec![0],
        },
    ));

    // Announce: the count, the first and the second record's length.
    let mut one = varint(rec.len() as u64);
    one.extend_from_slice(rec);
    length_lies(&mut out, "announce.count", &[0], &one, 1);
    length_lies(
        &mut out,
        "announce.record1_len",
        &[0, 1],
        rec,
        rec.len() as u64,
    );
    let mut head = vec![0, 2];
    head.extend_from_slice(&one);
    length_lies(
        &mut out,
        "announce.record2_len",
        &head,
        rec,
        rec.len() as u64,
    );
    let mut body = vec![0];
    body.extend(varint(wire::MAX_ANNOUNCED as u64 + 1));
    body.extend(std::iter::repeat_n(0u8, wire::MAX_ANNOUNCED + 1));
    out.push(frame("announce.count_over_limit", framed(&body), false));
    // Lengths over their limit with every byte present.
    let long = vec![0x5a; MAX_SIGNED_RELEASE_BYTES + 1];
    out.push(ok(
        "announce.record_len.over_limit",
        &Request::Announce {
            releases: vec![long.clone()],
        },
    ));
    out.push(ok(
        "announce.bytes_over_limit",
        &Request::Announce {
            releases: vec![
                vec![0x5a; MAX_SIGNED_RELEASE_BYTES];
                wire::MAX_ANNOUNCE_BYTES / MAX_SIGNED_RELEASE_BYTES + 1
            ],
        },
    ));
    // One record as large as a frame may be.
    let big = wire::MAX_REQUEST_BYTES - 16;
    let mut body = vec![0, 1];
    body.extend(varint(big as u64));
    body.resize(body.len() + big, 0x5a);
    out.push(frame("announce.record_fills_frame", framed(&body), false));
    // Varints in a longer form than needed (bincode writes the shortest).
    let mut body = vec![251, 1, 0];
    body.extend_from_slice(&m.bundle);
    out.push(frame("varint.noncanonical_variant", framed(&body), false));
    let mut body = vec![0, 251, 1, 0];
    body.extend_from_slice(&one);
    out.push(frame("varint.noncanonical_count", framed(&body), false));

    // GetManifest: a fixed-size body, truncated or followed by more.
    let mut body = vec![1];
    body.extend_from_slice(&m.bundle[..31]);
    out.push(frame("get_manifest.short", framed(&body), false));
    let mut body = vec![1];
    body.extend_from_slice(&m.bundle);
    body.push(0);
    out.push(frame("get_manifest.trailing", framed(&body), false));

    // GetPieces: the count, an index that is no u32, too many pieces.
    let mut item = m.blob.to_vec();
    item.push(0);
    length_lies(&mut out, "get_pieces.count", &[2], &item, 1);
    let mut body = vec![2, 1];
    body.extend_from_slice(&m.blob);
    body.extend(varint(u64::MAX));
    out.push(frame("get_pieces.index_over_u32", framed(&body), false));
    let too_many = Request::GetPieces {
        pieces: vec![(m.blob, 0); wire::MAX_BATCH_PIECES + 1],
    };
    out.push(ok("get_pieces.count_over_limit", &too_many));

    // Have: the release, bits and fetching lengths.
    let mut head = vec![3];
    head.extend_from_slice(&m.bundle);
    length_lies(&mut out, "have.release_len", &head, rec, rec.len() as u64);
    head.push(0);
    length_lies(&mut out, "have.bits_len", &head, &[0xff; 8], 8);
    head.push(0);
    length_lies(&mut out, "have.fetching_len", &head, &[0xff; 8], 8);
    let have = |release: Vec<u8>, bits: usize, fetching: usize| Request::Have {
        bundle: m.bundle,
        release,
        bits: vec![0xff; bits],
        fetching: vec![0; fetching],
    };
    let maxbits = wire::MAX_BITFIELD_BYTES;
    out.push(ok("have.release_len.over_limit", &have(long.clone(), 1, 1)));
    out.push(ok(
        "have.bits_len.over_limit",
        &have(Vec::new(), maxbits + 1, 1),
    ));
    out.push(ok(
        "have.fetching_len.over_limit",
        &have(Vec::new(), 1, maxbits + 1),
    ));
    out.push(ok(
        "have.all_at_limit",
        &have(long[1..].to_vec(), maxbits, maxbits),
    ));
    let fill = wire::MAX_REQUEST_BYTES - rec.len() - 64;
    out.push(ok("have.bits_fills_frame", &have(rec.clone(), fill, 0)));

    // Variants that do not exist, and varint tags that are no integer.
    for (name, v) in [
        ("4", 4u64),
        ("250", 250),
        ("u16", 1000),
        ("u32", 70_000),
        ("u64max", u64::MAX),
    ] {
        let mut body = varint(v);
        body.extend_from_slice(&[0; 8]);
        out.push(frame(&format!("variant.{name}"), framed(&body), false));
    }
    out.push(frame("variant.tag254", framed(&[254, 0, 0]), false));
    out.push(frame("variant.tag255", framed(&[255, 0, 0]), false));

    // The frame itself.
    let mut manifest = vec![1];
    manifest.extend_from_slice(&m.bundle);
    out.push(frame("frame.empty", framed(&[]), false));
    let over = wire::MAX_REQUEST_BYTES as u32 + 1;
    out.push(frame(
        "frame.prefix_over_limit",
        prefixed(over, &manifest),
        false,
    ));
    out.push(frame(
        "frame.prefix_at_limit.hold",
        prefixed(wire::MAX_REQUEST_BYTES as u32, &manifest),
        false,
    ));
    out.push(frame(
        "frame.prefix_u32max",
        prefixed(u32::MAX, &manifest),
        false,
    ));
    let just_over = manifest.len() as u32 + 1;
    out.push(frame(
        "frame.prefix_over_present.hold",
        prefixed(just_over, &manifest),
        false,
    ));
    out.push(frame(
        "frame.prefix_over_present.eof",
        prefixed(just_over, &manifest),
        true,
    ));
    out.push(frame("frame.prefix_truncated.hold", vec![33, 0], false));
    out.push(frame("frame.prefix_truncated.eof", vec![33, 0], true));
    let have = framed(&wire::encode_request(&Request::Have {
        bundle: m.bundle,
        release: rec.clone(),
        bits: vec![1],
        fetching: vec![0],
    }));
    out.push(frame(
        "frame.body_truncated.eof",
        have[..have.len() / 2].to_vec(),
        true,
    ));
    let mut trailing = manifest.clone();
    trailing.extend_from_slice(&[0; 4]);
    out.push(frame("frame.trailing_bytes", framed(&trailing), false));
    let mut two = framed(&manifest);
    two.extend(framed(&manifest));
    out.push(frame("frame.two_requests", two, false));
    out
}

/// Every lying answer the `frames` mode gives, one per request the node
/// sends it, in order.
pub fn response_frames() -> Vec<Frame> {
    let mut out = Vec::new();
    out.push(frame("resp.empty", framed(&[]), false));
    out.push(frame("resp.prefix_u32max", prefixed(u32::MAX, &[3]), false));
    let over = wire::MAX_RESPONSE_BYTES as u32 + 1;
    out.push(frame("resp.prefix_over_limit", prefixed(over, &[3]), false));
    out.push(frame(
        "resp.prefix_over_present.hold",
        prefixed(2, &[3]),
        false,
    ));
    out.push(frame(
        "resp.prefix_over_present.eof",
        prefixed(2, &[3]),
        true,
    ));
    out.push(frame("resp.prefix_truncated.eof", vec![1, 0], true));
    // A data answer's body length: Manifest (1) and Pieces (2), Raw.
    for (kind, variant) in [("manifest", 1u8), ("pieces", 2u8)] {
        let tail = [0x33u8; 16];
        length_lies(
            &mut out,
            &format!("resp.{kind}.body_len"),
            &[variant, 0, 16],
            &tail,
            16,
        );
    }
    let mut body = vec![2, 1];
    body.extend(varint(u64::from(u32::MAX)));
    body.extend(varint(16));
    body.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.push(frame(
        "resp.pieces.raw_len_u32max_zstd",
        framed(&body),
        false,
    ));
    let mut body = vec![1, 0, 10];
    body.extend(varint(20));
    body.extend_from_slice(&[7; 20]);
    out.push(frame(
        "resp.manifest.raw_len_mismatch",
        framed(&body),
        false,
    ));
    let mut body = vec![1, 7, 4, 4];
    body.extend_from_slice(&[1, 2, 3, 4]);
    out.push(frame("resp.encoding_unknown", framed(&body), false));
    // 64 MiB of zeros compress to a few kilobytes: within every limit.
    let bomb = Packed::compress(vec![0; lanseed_protocol::limits::MAX_MANIFEST_BYTES]);
    out.push(frame(
        "resp.manifest.zstd_64MiB_zeros",
        framed(&wire::encode_response(&Response::Manifest(bomb))),
        false,
    ));
    let mut short = Packed::compress(vec![0; 1 << 20]);
    short.raw_len = 1000;
    out.push(frame(
        "resp.pieces.zstd_raw_len_short",
        framed(&wire::encode_response(&Response::Pieces(short))),
        false,
    ));
    for (name, v) in [("5", 5u64), ("250", 250), ("u64max", u64::MAX)] {
        let mut body = varint(v);
        body.extend_from_slice(&[0; 8]);
        out.push(frame(&format!("resp.variant.{name}"), framed(&body), false));
    }
    out.push(frame("resp.trailing_bytes", framed(&[0, 0]), false));
    out
}

/// Just the head of a data answer whose body is declared `body_len` long
/// (as `huge-answer` sends it): variant, encoding Raw, the unpacked
/// length, the body length.
pub fn data_head(pieces: bool, raw_len: u32, body_len: u64) -> Vec<u8> {
    let mut head = vec![if pieces { 2 } else { 1 }, 0];
    head.extend(varint(u64::from(raw_len)));
    head.extend(varint(body_len));
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_bincode() {
        for v in [
            0u64,
            1,
            250,
            251,
            65_535,
            65_536,
            u32::MAX as u64,
            1 << 40,
            u64::MAX,
        ] {
            let ours = varint(v);
            let theirs =
                bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default();
            assert_eq!(ours, theirs, "{v}");
        }
    }

    #[test]
    fn the_crash_frame_is_42_bytes() {
        let frames = request_frames(&Material::junk());
        let f = frames
            .iter()
            .find(|f| f.name == "have.release_len.2^40")
            .unwrap();
        assert_eq!(f.bytes.len(), 4 + 42);
        assert_eq!(&f.bytes[..4], &42u32.to_le_bytes());
        assert_eq!(f.bytes[4], 3);
        assert_eq!(f.bytes[4 + 33], 0xfd);
    }

    /// Whether a frame holds exactly one whole message that decodes.
    fn decodes(f: &Frame, decode: impl Fn(&[u8]) -> bool) -> bool {
        let Some(prefix) = f.bytes.get(..4) else {
            return false;
        };
        let len = u32::from_le_bytes(prefix.try_into().unwrap_or([0; 4])) as usize;
        f.bytes.len() == 4 + len && decode(&f.bytes[4..])
    }

    /// Lies that no decoder can take: the bytes are not there, or the
    /// message is not one. (Limits and canonical forms are the node's
    /// policy, not asserted here.)
    fn impossible(name: &str) -> bool {
        [
            ".2^40",
            ".u64max",
            ".u32max",
            ".over_by_1",
            "variant.",
            "frame.",
            ".short",
            "trailing",
        ]
        .iter()
        .any(|k| name.contains(k))
            && !name.contains("noncanonical")
    }

    #[test]
    fn control_frames_decode_and_impossible_ones_do_not() {
        let frames = request_frames(&Material::junk());
        for f in &frames {
            let ok = decodes(f, |b| wire::decode_request(b).is_ok());
            if f.name.starts_with("ok.") {
                assert!(ok, "{}", f.name);
            }
            if impossible(&f.name) {
                assert!(!ok, "{}", f.name);
            }
        }
        let mut names: Vec<&str> = frames.iter().map(|f| f.name.as_str()).collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all, "names are unique");
    }

    #[test]
    fn impossible_answers_do_not_decode() {
        for f in response_frames() {
            let ok = decodes(&f, |b| wire::decode_response(b).is_ok());
            if impossible(&f.name) || f.name.contains("body_len") {
                assert!(!ok, "{}", f.name);
            }
        }
    }
}
