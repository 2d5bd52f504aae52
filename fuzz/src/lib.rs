//! What each fuzz target checks, one function per target.
//!
//! Each function takes the fuzzer's bytes, runs one decoder or reader of
//! lanseed over them in memory, and panics when a promise of that code is
//! broken (a round trip that differs, a limit exceeded, a path that leaves
//! the bundle). A panic of the code itself is a finding too. The targets in
//! `fuzz_targets/` call these, and so does the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`, which includes this file as a module), so
//! the committed corpus is checked by `cargo test` without a fuzzer.

use std::io::Cursor;
use std::sync::OnceLock;

use lanseed_client::serve::{self, Kind, Resolved};
use lanseed_protocol::release_file::{COMMENT_PREFIX, ReleaseFile, ReleaseFileError};
use lanseed_protocol::wire::{self, MAX_DATA_HEAD, Packed, Request, Response};
use lanseed_protocol::zip::{Layout, SafeZip, ZipError, ZipLimits};
use lanseed_protocol::{Hash, Manifest, Release, SecretKey, SignedRelease, TrustList};

/// Seed of the publisher key that signs the seed corpus's release files;
/// the `release_file` target trusts it, so mutations get past the
/// signature to the layout, manifest and blob checks.
pub const FUZZ_KEY_SEED: [u8; 32] = [0x5e; 32];

/// The publisher key of the seed corpus.
pub fn fuzz_key() -> SecretKey {
    SecretKey::from_seed(&FUZZ_KEY_SEED)
}

fn fuzz_trust() -> &'static TrustList {
    static TRUST: OnceLock<TrustList> = OnceLock::new();
    TRUST.get_or_init(|| {
        TrustList::parse(&fuzz_key().public().to_string()).expect("a key line parses")
    })
}

/// Limits of the zip targets: small enough that a bomb is cut off in
/// milliseconds, with the ratio cap reached by modest entries.
pub const ZIP_LIMITS: ZipLimits = ZipLimits {
    max_total: 4 << 20,
    max_ratio: 100,
    ratio_floor: 64 << 10,
    max_entries: 200_000,
};

/// Most bytes the `zip_read` target lets one entry inflate to.
pub const ZIP_ENTRY_MAX: u64 = 1 << 20;

/// Most bytes the `wire_response` target lets a packed body unpack to.
pub const UNPACK_MAX: usize = 1 << 20;

/// `wire_request`: a request that decodes is within its limits, encodes
/// back to exactly the input (the decoder accepts one encoding per
/// message) and decodes again to itself.
pub fn wire_request(data: &[u8]) {
    let Ok(request) = wire::decode_request(data) else {
        return;
    };
    assert!(data.len() <= wire::MAX_REQUEST_BYTES);
    match &request {
        Request::Announce { releases } => {
            assert!(releases.len() <= wire::MAX_ANNOUNCED);
            assert!(releases.iter().all(|r| r.len() <= MAX_RECORD));
            let bytes: usize = releases.iter().map(Vec::len).sum();
            assert!(bytes <= wire::MAX_ANNOUNCE_BYTES);
        }
        Request::GetPieces { pieces } => assert!(pieces.len() <= wire::MAX_BATCH_PIECES),
        Request::Have {
            release,
            bits,
            fetching,
            ..
        } => {
            assert!(release.len() <= MAX_RECORD);
            assert!(bits.len() <= wire::MAX_BITFIELD_BYTES);
            assert!(fetching.len() <= wire::MAX_BITFIELD_BYTES);
        }
        Request::GetManifest { .. } => {}
        Request::Report(r) => {
            assert!(data.len() <= lanseed_protocol::report::MAX_REPORT_BYTES);
            assert!(r.device_id.len() <= lanseed_protocol::report::MAX_DEVICE_ID_LEN);
        }
    }
    let encoded = wire::encode_request(&request);
    assert_eq!(encoded, data, "one encoding per request");
    let again = wire::decode_request(&encoded).expect("an encoded request decodes");
    assert_eq!(again, request);
}

const MAX_RECORD: usize = lanseed_protocol::limits::MAX_SIGNED_RELEASE_BYTES;

/// Unpacks a body with the target's cap: never more than the cap, and
/// exactly the length the body declares.
fn check_unpack(p: &Packed) {
    let Ok(raw) = p.clone().unpack(UNPACK_MAX) else {
        return;
    };
    assert!(raw.len() <= UNPACK_MAX && raw.len() == p.raw_len as usize);
    let borrowed = p.unpacked(UNPACK_MAX).expect("unpack and unpacked agree");
    assert_eq!(&*borrowed, &raw[..]);
}

/// `wire_response`: the whole-frame decoder and the head-then-body
/// decoder (what a node's codec does: the head from the first
/// [`MAX_DATA_HEAD`] bytes, then the body read into a buffer of its own)
/// agree on every input; a decoded answer encodes back to the input and is
/// within its kind's limits; unpacking a body never gives more than the
/// cap asked for.
pub fn wire_response(data: &[u8]) {
    let whole = wire::decode_response(data);
    if let Ok(r) = &whole {
        assert_eq!(wire::encode_response(r), data, "one encoding per response");
        if let Response::Pieces(p) = r {
            assert!(u64::from(p.raw_len) <= wire::MAX_BATCH_BYTES);
        }
    }
    let head = wire::decode_data_head(&data[..data.len().min(MAX_DATA_HEAD)]);
    let split = match head {
        Ok(Some((head, used))) => {
            assert!(used <= data.len().min(MAX_DATA_HEAD));
            let split = head.into_response(data[used..].to_vec());
            if let Ok(r) = &split {
                let (h, body) = wire::encode_data_head(r).expect("a data answer has a head");
                assert_eq!(h, data[..used]);
                assert_eq!(body, &data[used..]);
            }
            Some(split)
        }
        Ok(None) => None,
        Err(_) => {
            assert!(whole.is_err(), "a frame whose head does not decode");
            return;
        }
    };
    match (&whole, split) {
        (Ok(r @ (Response::Manifest(_) | Response::Pieces(_))), Some(Ok(s))) => assert_eq!(r, &s),
        (Ok(Response::Manifest(_) | Response::Pieces(_)), other) => {
            panic!("the whole frame decodes, its head and body do not: {other:?}")
        }
        (Ok(_), None) | (Err(_), None) => {}
        (Ok(r), Some(s)) => panic!("{r:?} decoded, and as a data answer {s:?}"),
        (Err(e), Some(Ok(s))) => panic!("head and body decode ({s:?}), the frame does not: {e}"),
        (Err(_), Some(Err(_))) => {}
    }
    if let Ok(Response::Manifest(p) | Response::Pieces(p)) = &whole {
        check_unpack(p);
    }
}

/// `manifest`: a manifest that decodes is canonical: it encodes back to
/// exactly the input, its id is the input's BLAKE3, and building it again
/// from its files gives the same manifest.
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::from_bytes(data) else {
        return;
    };
    assert_eq!(
        m.to_bytes(),
        data,
        "a decoded manifest re-encodes as its input"
    );
    assert_eq!(
        m.id().0,
        Hash::of(data),
        "the bundle id is the input's hash"
    );
    assert_eq!(Manifest::new(m.files().to_vec()).as_ref(), Ok(&m));
    assert!(m.get("index.html").is_some());
    for f in m.files() {
        let last = lanseed_protocol::manifest::piece_count(f.size) - 1;
        assert!(f.piece_hash(last).is_some() && f.piece_hash(last + 1).is_none());
        assert_eq!(f.piece_range(last).end, f.size);
    }
}

/// `release`: a signed record or a release statement that decodes is
/// canonical: it encodes back to exactly the input. Checking the signature
/// of one never panics, and verifies only against the key it carries.
pub fn release(data: &[u8]) {
    if let Ok(r) = Release::from_canonical_bytes(data) {
        assert_eq!(
            r.canonical_bytes().as_deref(),
            Ok(data),
            "statement round trip"
        );
    }
    if let Ok(s) = SignedRelease::from_bytes(data) {
        assert_eq!(s.to_bytes(), data, "signed record round trip");
        let statement = s
            .release()
            .canonical_bytes()
            .expect("a decoded release encodes");
        assert_eq!(s.id().0, Hash::of(&statement));
        let signed = s.check_signature().is_ok();
        let trusted = s.verify(fuzz_trust());
        if trusted.is_ok() {
            assert!(signed && s.publisher() == fuzz_key().public());
        }
    }
}

/// `zip_read`: the safe zip reader over bytes, in both layouts. What it
/// accepts has safe paths (and an `index.html` in the bundle layout); every
/// entry is read in full, and no entry ever delivers more than its cap,
/// the ratio cap or the archive's total.
pub fn zip_read(data: &[u8]) {
    for layout in [Layout::Raw, Layout::Bundle] {
        let Ok(mut zip) = SafeZip::from_reader(Cursor::new(data), "fuzz.zip", ZIP_LIMITS, layout)
        else {
            continue;
        };
        let entries = zip.entries().to_vec();
        for e in &entries {
            assert_safe_path(e.path.as_str());
            assert!(e.name.ends_with(e.path.as_str()));
        }
        if layout == Layout::Bundle {
            assert!(entries.iter().any(|e| e.path.as_str() == "index.html"));
        }
        let mut total = 0u64;
        for (i, e) in entries.iter().enumerate() {
            let mut delivered = 0u64;
            let result = zip.read(i, Some(ZIP_ENTRY_MAX), &mut |chunk| {
                delivered += chunk.len() as u64;
                Ok(())
            });
            total += delivered;
            assert!(delivered <= ZIP_ENTRY_MAX, "entry cap");
            let ratio_cap = ZIP_LIMITS
                .max_ratio
                .saturating_mul(e.compressed_size.max(1))
                .max(ZIP_LIMITS.ratio_floor);
            assert!(delivered <= ratio_cap, "ratio cap");
            assert!(total <= ZIP_LIMITS.max_total, "total cap");
            match result {
                Ok(n) => assert!(n == delivered && n == e.declared_size),
                Err(ZipError::TotalTooLarge(_)) => break,
                Err(_) => {}
            }
        }
    }
}

/// `release_file`: a release file parsed from bytes, as `lanseed import`
/// does before it touches the store. The whole-file checksum decides
/// first (a file whose checksum does not match is refused as tampered);
/// the input is then resealed with its true checksum, so that mutations
/// reach the zip, the signed record (trusting [`fuzz_key`]) and the
/// manifest. What opens was signed by the trusted key.
pub fn release_file(data: &[u8]) {
    let open = |bytes: &[u8]| {
        ReleaseFile::from_bytes(bytes, fuzz_trust(), ZIP_LIMITS)
            .map(|f| f.release().signed().clone())
    };
    let comment_len = COMMENT_PREFIX.len() + 64;
    let Some(covered) = data.len().checked_sub(comment_len) else {
        assert!(matches!(open(data), Err(ReleaseFileError::Malformed(..))));
        return;
    };
    let (tail, claimed) = data[covered..].split_at(COMMENT_PREFIX.len());
    let claimed = std::str::from_utf8(claimed)
        .ok()
        .and_then(|hex| hex.parse::<Hash>().ok());
    if tail != COMMENT_PREFIX.as_bytes() || claimed.is_none() {
        assert!(matches!(open(data), Err(ReleaseFileError::Malformed(..))));
        if tail != COMMENT_PREFIX.as_bytes() {
            return;
        }
    }
    let truth = Hash::of(&data[..covered]);
    let result = if claimed == Some(truth) {
        open(data)
    } else {
        if claimed.is_some() {
            assert!(matches!(open(data), Err(ReleaseFileError::Tampered)));
        }
        let mut sealed = data.to_vec();
        sealed[covered + COMMENT_PREFIX.len()..].copy_from_slice(truth.to_hex().as_bytes());
        open(&sealed)
    };
    match result {
        Ok(release) => {
            assert_eq!(release.publisher(), fuzz_key().public());
            assert!(release.check_signature().is_ok());
        }
        Err(e) => assert!(!matches!(e, ReleaseFileError::Tampered)),
    }
}

/// The bundle the `device_path` target serves from.
const FILES: &[&str] = &[
    "index.html",
    "app.js",
    "assets/app.js",
    "assets/img/logo.png",
    "v1.2/notes.txt",
    "..a/b..",
    "caf\u{e9}.js",
    "a b/c%20d",
];

fn assert_safe_path(p: &str) {
    assert!(!p.is_empty() && !p.starts_with('/'), "{p:?}");
    assert!(
        p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
        "{p:?}"
    );
    assert!(!p.contains('\\'), "{p:?}");
}

fn kind_in(files: &[&str], rel: &str) -> Kind {
    assert_safe_path(rel);
    if files.contains(&rel) {
        Kind::File
    } else if files
        .iter()
        .any(|f| f.len() > rel.len() && f.starts_with(rel) && f.as_bytes()[rel.len()] == b'/')
    {
        Kind::Dir
    } else {
        Kind::Missing
    }
}

fn check_resolve(path: &str, files: &[&str]) {
    let got = serve::resolve(path, |rel| kind_in(files, rel));
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let climbs = components
        .iter()
        .any(|c| *c == "." || *c == ".." || c.contains('\\'));
    assert_eq!(got == Resolved::Refused, climbs, "{path:?}: {got:?}");
    if !climbs && files.contains(&components.join("/").as_str()) {
        assert_eq!(got, Resolved::File(components.join("/")), "{path:?}");
    }
    if let Resolved::File(p) = &got {
        assert_eq!(p, &components.join("/"));
    }
    if let Some(f) = got.file() {
        assert_safe_path(f);
        assert!(files.contains(&f), "{path:?} gave {f:?}, not a file");
    }
}

/// `device_path`: the kiosk server's choice of file for a request path
/// (the bytes as UTF-8, lossily), before and after percent-decoding, over
/// a small bundle with and without `index.html`. The answer is one of the
/// bundle's files, never a path with a `.`/`..` component or a leading
/// `/`, and a path with such a component is refused.
pub fn device_path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let decoded = serve::decode_path(&raw);
    if let Some(d) = &decoded {
        assert!(d.len() <= raw.len());
    }
    if !raw.contains('%') {
        assert_eq!(decoded.as_deref(), Some(&*raw));
    }
    for files in [FILES, &FILES[1..]] {
        check_resolve(&raw, files);
        if let Some(d) = &decoded {
            check_resolve(d, files);
        }
    }
}
