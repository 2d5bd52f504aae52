//! Releases: signed statements that a bundle is a version of an app on a
//! channel.
//!
//! A [`Release`] is encoded in its own canonical layout and signed with
//! Ed25519 over [`SIGNING_CONTEXT`] followed by those bytes, so a signature
//! made for anything else can never pass for a release. A [`SignedRelease`]
//! is what travels and what a store holds; a [`VerifiedRelease`] exists only
//! after the signature checked out against a [`TrustList`] that covers the
//! release's app and channel, and installing code takes nothing else.
//!
//! Release layout (all integers little-endian; see `protocol/FORMATS.md`):
//!
//! ```text
//! magic               8 bytes  "LSRELEA1"
//! app                 u16 length + UTF-8
//! channel             u16 length + UTF-8
//! version             u16 length + UTF-8 (semver)
//! bundle id           32 bytes
//! seq                 u64
//! created             u64 (Unix seconds)
//! min native version  tag u8, then u16 length + UTF-8 if tag = 1
//! rollout             u16 basis points (0..=10000; 10000 = every device)
//! expires             tag u8, then u64 Unix seconds if tag = 1
//! notes               tag u8, then u32 length + UTF-8 if tag = 1
//! ```
//!
//! A release with a Capgo section (see [`crate::capgo`]) is written as
//! `"LSRELEA2"`: the same fields, then the section. A release without one
//! is written as `"LSRELEA1"`, byte for byte as before, so every older
//! release, id and signature stays as it was, and older nodes (which read
//! only `LSRELEA1`) keep taking every release that has no section:
//!
//! ```text
//! capgo bundle id     32 bytes (the payload bundle)
//! key id              u16 length + ASCII, 1..=64 bytes
//! iv                  16 bytes
//! encrypted AES key   u16 length + bytes, 1..=1024
//! encrypted checksum  u16 length + bytes, 1..=1024
//! ```
//!
//! Signed record: `"LSSIGRL1"`, u32 length + release bytes, 32-byte public
//! key, 64-byte signature.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use crate::canonical::{DecodeError, Reader, Writer};
use crate::capgo::{CapgoSection, SessionKey};
use crate::hash::{BundleId, Hash, ReleaseId};
use crate::keys::{PublicKey, SecretKey};
use crate::limits::{
    MAX_APP_LEN, MAX_CHANNEL_LEN, MAX_NOTES_LEN, MAX_RELEASE_BYTES, MAX_SIGNED_RELEASE_BYTES,
    MAX_VERSION_LEN,
};
use crate::trust::{TrustError, TrustList};

const MAGIC: &[u8; 8] = b"LSRELEA1";
/// The layout of a release with a Capgo section.
const MAGIC_CAPGO: &[u8; 8] = b"LSRELEA2";
/// What every release layout's magic starts with; the last byte is its
/// version.
const MAGIC_STEM: &[u8; 7] = b"LSRELEA";

/// Longest key id of a Capgo section.
pub const MAX_CAPGO_KEY_ID_LEN: usize = 64;
/// Longest RSA block of a Capgo section (an 8,192-bit key).
pub const MAX_CAPGO_BLOCK_LEN: usize = 1024;
const SIGNED_MAGIC: &[u8; 8] = b"LSSIGRL1";

/// Domain-separation prefix of every release signature.
pub const SIGNING_CONTEXT: &[u8] = b"lanseed/release-signature/v1\0";

/// The channel a release goes to when none is named.
pub const DEFAULT_CHANNEL: &str = "production";

/// A share of devices, in basis points (hundredths of a percent).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rollout(u16);

impl Rollout {
    /// Every device.
    pub const FULL: Rollout = Rollout(10_000);

    /// From basis points; `None` above 10,000.
    pub fn from_basis_points(bp: u16) -> Option<Self> {
        (bp <= 10_000).then_some(Rollout(bp))
    }

    /// Basis points, 0..=10,000.
    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// As a percentage, 0.0..=100.0.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// SPEC's rollout draw: the device is inside when
    /// `BLAKE3(app ‖ 0 ‖ bundle_id ‖ 0 ‖ device_id)`, read as a big-endian
    /// number, mod 10,000 is below the basis points. The bundle id is its
    /// 64-digit hex text. Raising the share for one bundle only adds devices.
    pub fn includes(self, app: &str, bundle: &BundleId, device_id: &str) -> bool {
        let mut h = blake3::Hasher::new();
        h.update(app.as_bytes());
        h.update(&[0]);
        h.update(bundle.to_string().as_bytes());
        h.update(&[0]);
        h.update(device_id.as_bytes());
        let draw = h
            .finalize()
            .as_bytes()
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % 10_000);
        draw < u32::from(self.0)
    }
}

impl FromStr for Rollout {
    type Err = String;
    /// Parses a percentage such as `25` or `12.5` (two decimals at most).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a percentage from 0 to 100 with at most two decimals");
        let (whole, frac) = s
            .trim()
            .trim_end_matches('%')
            .split_once('.')
            .unwrap_or((s.trim().trim_end_matches('%'), ""));
        if whole.is_empty()
            || frac.len() > 2
            || !(whole.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        let bp = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)?;
        u16::try_from(bp)
            .ok()
            .and_then(Rollout::from_basis_points)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(100) {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
        }
    }
}

impl fmt::Debug for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A release statement, before or after signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// App id (reverse DNS, the Capacitor `appId`).
    pub app: String,
    /// Channel name.
    pub channel: String,
    /// Version (semver), for people.
    pub version: String,
    /// The bundle this release points to.
    pub bundle_id: BundleId,
    /// Order of releases of one app and channel; only grows.
    pub seq: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Lowest native app version that may install this bundle.
    pub min_native_version: Option<String>,
    /// Share of devices that install it.
    pub rollout: Rollout,
    /// Time after which devices no longer install it, Unix seconds.
    pub expires: Option<u64>,
    /// Release notes.
    pub notes: Option<String>,
    /// Capgo encryption v2 artefacts and the bundle that carries the
    /// encrypted zip (written as layout `LSRELEA2`).
    pub capgo: Option<CapgoSection>,
}

/// Why a release statement is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    /// The bytes do not decode.
    #[error("release does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The app id is not reverse DNS.
    #[error(
        "`{0}` is not an app id: use reverse DNS like com.example.app (letters, digits, `-`, `_`, dots between)"
    )]
    BadApp(String),
    /// The channel name is not allowed.
    #[error(
        "`{0}` is not a channel name: use 1 to {MAX_CHANNEL_LEN} letters, digits, `-`, `_` or `.`"
    )]
    BadChannel(String),
    /// The version is not semver.
    #[error("`{0}` is not a semantic version such as 1.2.3")]
    BadVersion(String),
    /// The minimum native version is not semver.
    #[error("minimum native version `{0}` is not a semantic version such as 1.2.3")]
    BadNativeVersion(String),
    /// Rollout above 100 %.
    #[error("rollout of {0} basis points is above 100%")]
    BadRollout(u16),
    /// Notes too long.
    #[error("release notes are {0} bytes, more than the limit of {MAX_NOTES_LEN}")]
    NotesTooLong(usize),
    /// The embedded public key is not a valid key.
    #[error("release carries an invalid public key")]
    BadKey,
    /// A release layout of a later lanseed.
    #[error(
        "the release uses layout {0}, which this lanseed does not read; upgrade lanseed to take it"
    )]
    UnknownLayout(String),
    /// The Capgo section is invalid.
    #[error("the release's Capgo section is invalid: {0}")]
    BadCapgo(&'static str),
}

/// Why a signed release is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature does not match the statement and key.
    #[error("the signature of release {app} {version} ({channel}) does not verify")]
    BadSignature {
        /// App id.
        app: String,
        /// Channel.
        channel: String,
        /// Version.
        version: String,
    },
    /// The key is not trusted for this release.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
}

fn check_app(app: &str) -> Result<(), ReleaseError> {
    let ok = !app.is_empty()
        && app.len() <= MAX_APP_LEN
        && app.contains('.')
        && app.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    ok.then_some(())
        .ok_or_else(|| ReleaseError::BadApp(app.into()))
}

/// Checks a channel name: 1..=64 of `[A-Za-z0-9._-]`.
pub fn check_channel(channel: &str) -> Result<(), ReleaseError> {
    let ok = !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_LEN
        && channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then_some(())
        .ok_or_else(|| ReleaseError::BadChannel(channel.into()))
}

/// Checks an app id: reverse DNS, 1..=255 bytes.
pub fn check_app_id(app: &str) -> Result<(), ReleaseError> {
    check_app(app)
}

fn is_semver(v: &str) -> bool {
    v.len() <= MAX_VERSION_LEN && semver::Version::parse(v).is_ok()
}

impl Release {
    /// Checks every field.
    pub fn check(&self) -> Result<(), ReleaseError> {
        check_app(&self.app)?;
        check_channel(&self.channel)?;
        if !is_semver(&self.version) {
            return Err(ReleaseError::BadVersion(self.version.clone()));
        }
        if let Some(v) = &self.min_native_version
            && !is_semver(v)
        {
            return Err(ReleaseError::BadNativeVersion(v.clone()));
        }
        if self.rollout.0 > 10_000 {
            return Err(ReleaseError::BadRollout(self.rollout.0));
        }
        if let Some(n) = &self.notes
            && n.len() > MAX_NOTES_LEN
        {
            return Err(ReleaseError::NotesTooLong(n.len()));
        }
        if let Some(c) = &self.capgo {
            check_capgo(c, &self.bundle_id)?;
        }
        Ok(())
    }

    /// Whether this statement makes `older` moot, for every device: it is
    /// of the same app and channel, at least as new, and either reaches
    /// every device (its whole share, no minimum native version, no
    /// expiry) or is a later statement of the same bundle (a new share of
    /// it: only the newest statement of a bundle counts). A newer release
    /// that reaches only some devices does not: the others still need the
    /// older one.
    pub fn supersedes(&self, older: &Release) -> bool {
        let everyone = self.rollout == Rollout::FULL
            && self.min_native_version.is_none()
            && self.expires.is_none();
        self.app == older.app
            && self.channel == older.channel
            && self.seq >= older.seq
            && (everyone || self.bundle_id == older.bundle_id)
    }

    /// Every bundle the release needs whole: its own, then the Capgo
    /// payload if it has one.
    pub fn bundles(&self) -> impl Iterator<Item = BundleId> + '_ {
        std::iter::once(self.bundle_id).chain(self.capgo.as_ref().map(|c| c.bundle_id))
    }

    /// The canonical bytes, after checking every field.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ReleaseError> {
        self.check()?;
        let mut w = Writer::new();
        w.raw(if self.capgo.is_some() {
            MAGIC_CAPGO
        } else {
            MAGIC
        });
        w.str16(&self.app);
        w.str16(&self.channel);
        w.str16(&self.version);
        w.raw(self.bundle_id.0.as_bytes());
        w.u64(self.seq);
        w.u64(self.created);
        match &self.min_native_version {
            None => w.u8(0),
            Some(v) => {
                w.u8(1);
                w.str16(v);
            }
        }
        w.u16(self.rollout.0);
        match self.expires {
            None => w.u8(0),
            Some(t) => {
                w.u8(1);
                w.u64(t);
            }
        }
        match &self.notes {
            None => w.u8(0),
            Some(n) => {
                w.u8(1);
                w.str32(n);
            }
        }
        if let Some(c) = &self.capgo {
            w.raw(c.bundle_id.0.as_bytes());
            w.str16(&c.key_id);
            w.raw(&c.session_key.iv);
            w.u16(c.session_key.encrypted_key.len() as u16);
            w.raw(&c.session_key.encrypted_key);
            w.u16(c.encrypted_checksum.len() as u16);
            w.raw(&c.encrypted_checksum);
        }
        Ok(w.into_bytes())
    }

    /// Decodes and checks canonical bytes.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, ReleaseError> {
        let mut r = Reader::new(bytes);
        let magic: [u8; 8] = r.array("release")?;
        let with_capgo = match &magic {
            m if m == MAGIC => false,
            m if m == MAGIC_CAPGO => true,
            m if m.starts_with(MAGIC_STEM) => {
                return Err(ReleaseError::UnknownLayout(
                    String::from_utf8_lossy(m).into_owned(),
                ));
            }
            _ => return Err(DecodeError::BadMagic { what: "release" }.into()),
        };
        let app = r.str16(MAX_APP_LEN, "app id")?.to_owned();
        let channel = r.str16(MAX_CHANNEL_LEN, "channel")?.to_owned();
        let version = r.str16(MAX_VERSION_LEN, "version")?.to_owned();
        let bundle_id = BundleId(Hash::from_bytes(r.array("bundle id")?));
        let seq = r.u64("seq")?;
        let created = r.u64("created")?;
        let min_native_version = if r.tag("min native version")? {
            Some(r.str16(MAX_VERSION_LEN, "min native version")?.to_owned())
        } else {
            None
        };
        let bp = r.u16("rollout")?;
        let rollout = Rollout::from_basis_points(bp).ok_or(ReleaseError::BadRollout(bp))?;
        let expires = if r.tag("expires")? {
            Some(r.u64("expires")?)
        } else {
            None
        };
        let notes = if r.tag("notes")? {
            Some(r.str32(MAX_NOTES_LEN, "notes")?.to_owned())
        } else {
            None
        };
        let capgo = if with_capgo {
            Some(read_capgo(&mut r)?)
        } else {
            None
        };
        r.finish("release")?;
        let release = Release {
            app,
            channel,
            version,
            bundle_id,
            seq,
            created,
            min_native_version,
            rollout,
            expires,
            notes,
            capgo,
        };
        release.check()?;
        Ok(release)
    }

    /// Signs the statement with `key`.
    pub fn sign(self, key: &SecretKey) -> Result<SignedRelease, ReleaseError> {
        let bytes = self.canonical_bytes()?;
        let signature = key.sign(&signing_message(&bytes));
        Ok(SignedRelease {
            release: self,
            bytes,
            key: key.public(),
            signature,
        })
    }

    /// Signs with `key` and checks the new signature with that key alone:
    /// what a publisher's own tools (pack, rollout, capgo-encrypt) commit.
    pub fn sign_verified<E: From<ReleaseError> + From<VerifyError>>(
        self,
        key: &SecretKey,
    ) -> Result<VerifiedRelease, E> {
        Ok(self.sign(key)?.verify(&TrustList::single(key.public()))?)
    }
}

fn check_capgo(c: &CapgoSection, main: &BundleId) -> Result<(), ReleaseError> {
    let bad = ReleaseError::BadCapgo;
    if c.key_id.is_empty()
        || c.key_id.len() > MAX_CAPGO_KEY_ID_LEN
        || !c.key_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad("its key id is not 1 to 64 printable ASCII characters"));
    }
    let block_ok = |b: &[u8]| !b.is_empty() && b.len() <= MAX_CAPGO_BLOCK_LEN;
    if !block_ok(&c.session_key.encrypted_key) {
        return Err(bad("its encrypted AES key is not 1 to 1024 bytes"));
    }
    if !block_ok(&c.encrypted_checksum) {
        return Err(bad("its encrypted checksum is not 1 to 1024 bytes"));
    }
    if c.bundle_id == *main {
        return Err(bad("its payload bundle is the release's own bundle"));
    }
    Ok(())
}

fn read_capgo(r: &mut Reader<'_>) -> Result<CapgoSection, ReleaseError> {
    let bundle_id = BundleId(Hash::from_bytes(r.array("capgo bundle id")?));
    let key_id = r.str16(MAX_CAPGO_KEY_ID_LEN, "capgo key id")?.to_owned();
    let iv = r.array("capgo iv")?;
    let mut block = |what| -> Result<Vec<u8>, DecodeError> {
        let len = usize::from(r.u16(what)?);
        if len > MAX_CAPGO_BLOCK_LEN {
            return Err(DecodeError::TooLarge {
                what,
                len: len as u64,
                max: MAX_CAPGO_BLOCK_LEN as u64,
            });
        }
        Ok(r.take(len, what)?.to_vec())
    };
    let encrypted_key = block("capgo encrypted key")?;
    let encrypted_checksum = block("capgo encrypted checksum")?;
    Ok(CapgoSection {
        bundle_id,
        key_id,
        session_key: SessionKey { iv, encrypted_key },
        encrypted_checksum,
    })
}

fn signing_message(canonical: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + canonical.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(canonical);
    msg
}

/// A release statement with its publisher key and signature, not yet
/// checked against any trust list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRelease {
    release: Release,
    bytes: Vec<u8>,
    key: PublicKey,
    signature: [u8; 64],
}

impl SignedRelease {
    /// The statement.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// The release id: BLAKE3 of the statement's canonical bytes.
    pub fn id(&self) -> ReleaseId {
        ReleaseId(Hash::of(&self.bytes))
    }

    /// The key that signed it.
    pub fn publisher(&self) -> PublicKey {
        self.key
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The signed record's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(SIGNED_MAGIC);
        w.bytes32(&self.bytes);
        w.raw(&self.key.to_bytes());
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// Decodes a signed record and checks the statement's fields. The
    /// signature is not checked: call [`SignedRelease::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReleaseError> {
        if bytes.len() > MAX_SIGNED_RELEASE_BYTES {
            return Err(DecodeError::TooLarge {
                what: "signed release",
                len: bytes.len() as u64,
                max: MAX_SIGNED_RELEASE_BYTES as u64,
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        r.magic(SIGNED_MAGIC, "signed release")?;
        let statement = r.bytes32(MAX_RELEASE_BYTES, "release statement")?;
        let key =
            PublicKey::from_bytes(&r.array("public key")?).map_err(|_| ReleaseError::BadKey)?;
        let signature = r.array("signature")?;
        r.finish("signed release")?;
        Ok(SignedRelease {
            release: Release::from_canonical_bytes(statement)?,
            bytes: statement.to_vec(),
            key,
            signature,
        })
    }

    /// Checks the signature alone, whoever the publisher is.
    pub fn check_signature(&self) -> Result<(), VerifyError> {
        if self
            .key
            .verify(&signing_message(&self.bytes), &self.signature)
        {
            Ok(())
        } else {
            Err(VerifyError::BadSignature {
                app: self.release.app.clone(),
                channel: self.release.channel.clone(),
                version: self.release.version.clone(),
            })
        }
    }

    /// Checks that `trust` lets its key publish this app on this channel,
    /// then the signature (the cheap lookup first: a record signed by a
    /// key nobody pinned costs no signature check).
    pub fn verify(&self, trust: &TrustList) -> Result<VerifiedRelease, VerifyError> {
        trust.check(&self.key, &self.release.app, &self.release.channel)?;
        self.check_signature()?;
        Ok(VerifiedRelease(self.clone()))
    }
}

/// A release whose signature verified against a trust list covering it.
/// Only [`SignedRelease::verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRelease(SignedRelease);

impl VerifiedRelease {
    /// The signed release underneath.
    pub fn signed(&self) -> &SignedRelease {
        &self.0
    }
}

impl Deref for VerifiedRelease {
    type Target = SignedRelease;
    fn deref(&self) -> &SignedRelease {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Edit = fn(&mut Release);
    type Expect = fn(&ReleaseError) -> bool;

    /// The fixed example of `protocol/FORMATS.md`.
    fn example() -> Release {
        Release {
            app: "com.example.kiosk".into(),
            channel: "production".into(),
            version: "1.2.3".into(),
            bundle_id: BundleId(Hash::from_bytes([0xab; 32])),
            seq: 1_790_000_000,
            created: 1_790_000_000,
            min_native_version: Some("2.0.0".into()),
            rollout: Rollout::from_basis_points(2_500).unwrap(),
            expires: None,
            notes: Some("Faster start".into()),
            capgo: None,
        }
    }

    fn key() -> SecretKey {
        SecretKey::from_seed(&[42; 32])
    }

    /// The fixed example with a Capgo section (`LSRELEA2`, FORMATS.md).
    fn example_capgo() -> Release {
        Release {
            capgo: Some(CapgoSection {
                bundle_id: BundleId(Hash::from_bytes([0xcd; 32])),
                key_id: "MIIBCgKCAQEAtITiB7/j".into(),
                session_key: SessionKey {
                    iv: [0x11; 16],
                    encrypted_key: vec![0x22; 4],
                },
                encrypted_checksum: vec![0x33; 4],
            }),
            ..example()
        }
    }

    #[test]
    fn snapshot_of_the_capgo_layout() {
        let signed = example_capgo().sign(&key()).unwrap();
        let plain = example().canonical_bytes().unwrap();
        assert_eq!(&signed.bytes[..8], b"LSRELEA2");
        assert_eq!(
            &signed.bytes[8..plain.len()],
            &plain[8..],
            "the fields before the section are LSRELEA1's"
        );
        assert_eq!(
            hex::encode(&signed.bytes[plain.len()..]),
            "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd14004d49494243674b43415145417449546942372f6a11111111111111111111111111111111040022222222040033333333"
        );
        assert_eq!(
            signed.id().to_string(),
            "c2856b69470c15d3fad0833f46aa0fa3e4d484cbf44fb592cc1ad388b9803d97"
        );
        assert_eq!(
            hex::encode(signed.signature()),
            "f1fa86f3bdf7a2287f34e284da41d6ed98e7059de11d5240690a9a6001c6f1729da48235ca5f574b6b6a5616be49a5f87ce6b8bee6c0eac98335aeeb44db220d"
        );
        let back = SignedRelease::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(back.release(), &example_capgo());
        assert_eq!(
            back.release().bundles().collect::<Vec<_>>(),
            [
                BundleId(Hash::from_bytes([0xab; 32])),
                BundleId(Hash::from_bytes([0xcd; 32]))
            ]
        );
        assert!(back.verify(&TrustList::single(key().public())).is_ok());
    }

    #[test]
    fn a_later_layout_is_refused_with_a_clear_error() {
        let mut bytes = example().canonical_bytes().unwrap();
        bytes[7] = b'3';
        assert_eq!(
            Release::from_canonical_bytes(&bytes).unwrap_err(),
            ReleaseError::UnknownLayout("LSRELEA3".into())
        );
        assert!(
            ReleaseError::UnknownLayout("LSRELEA3".into())
                .to_string()
                .contains("upgrade lanseed")
        );
        bytes[0] = b'X';
        assert!(matches!(
            Release::from_canonical_bytes(&bytes).unwrap_err(),
            ReleaseError::Decode(DecodeError::BadMagic { .. })
        ));
        // An LSRELEA1 statement with a section's bytes after it has
        // trailing bytes; an LSRELEA2 one without them is truncated.
        let with = example_capgo().canonical_bytes().unwrap();
        let mut v1 = with.clone();
        v1[7] = b'1';
        assert!(Release::from_canonical_bytes(&v1).is_err());
        let mut v2 = example().canonical_bytes().unwrap();
        v2[7] = b'2';
        assert!(Release::from_canonical_bytes(&v2).is_err());
    }

    #[test]
    fn bad_capgo_sections_are_refused() {
        type CapgoEdit = fn(&mut CapgoSection);
        let edits: Vec<CapgoEdit> = vec![
            |c| c.key_id = String::new(),
            |c| c.key_id = "k".repeat(65),
            |c| c.key_id = "has space".into(),
            |c| c.session_key.encrypted_key = Vec::new(),
            |c| c.encrypted_checksum = vec![0; 1025],
            |c| c.bundle_id = BundleId(Hash::from_bytes([0xab; 32])),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut r = example_capgo();
            edit(r.capgo.as_mut().unwrap());
            assert!(
                matches!(r.sign(&key()), Err(ReleaseError::BadCapgo(_))),
                "edit {i}"
            );
        }
    }

    #[test]
    fn snapshot_of_canonical_bytes_id_and_signature() {
        let signed = example().sign(&key()).unwrap();
        assert_eq!(
            key().public().to_string(),
            "lanseed-pub-ed25519:197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"
        );
        assert_eq!(
            hex::encode(&signed.bytes),
            "4c5352454c4541311100636f6d2e6578616d706c652e6b696f736b0a0070726f64756374696f6e0500312e322e33abababababababababababababababababababababababababababababababab803bb16a00000000803bb16a00000000010500322e302e30c40900010c000000466173746572207374617274"
        );
        assert_eq!(
            signed.id().to_string(),
            "b2382f968da082a2710594fab6d31a587d4120341dd6d1d1d7df84f583630f78"
        );
        assert_eq!(
            hex::encode(signed.signature()),
            "51e23def316f6dcef1a74d1ad4db8280b3232742c7fbfe785227d1542f06df36d17bc6800552d5d40a7392088652f939078bf6e1c21d9171e65fb5b195422f08"
        );
    }

    #[test]
    fn verifies_only_with_trusted_key_in_scope() {
        let signed = example().sign(&key()).unwrap();
        let ok = signed.verify(&TrustList::single(key().public())).unwrap();
        assert_eq!(ok.release(), &example());

        let other = SecretKey::from_seed(&[9; 32]).public();
        assert!(matches!(
            signed.verify(&TrustList::single(other)),
            Err(VerifyError::Untrusted(TrustError::UnknownKey(_)))
        ));
        let scoped = TrustList::parse(&format!("{} channels=dev", key().public())).unwrap();
        assert!(matches!(
            signed.verify(&scoped),
            Err(VerifyError::Untrusted(TrustError::OutOfScope { .. }))
        ));
        let scoped =
            TrustList::parse(&format!("{} apps=com.example.other", key().public())).unwrap();
        assert!(matches!(
            signed.verify(&scoped),
            Err(VerifyError::Untrusted(TrustError::OutOfScope { .. }))
        ));
    }

    #[test]
    fn any_tampered_byte_is_refused() {
        let record = example().sign(&key()).unwrap().to_bytes();
        let trust = TrustList::single(key().public());
        for i in 0..record.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = record.clone();
                bad[i] ^= flip;
                let accepted = SignedRelease::from_bytes(&bad)
                    .ok()
                    .and_then(|s| s.verify(&trust).ok());
                assert!(
                    accepted.is_none(),
                    "byte {i} flipped with {flip:#x} was accepted"
                );
            }
        }
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let signed = example().sign(&key()).unwrap();
        let trust = TrustList::single(key().public());
        let edits: Vec<Edit> = vec![
            |r| r.app = "com.example.evil".into(),
            |r| r.channel = "beta".into(),
            |r| r.version = "9.9.9".into(),
            |r| r.bundle_id = BundleId(Hash::of(b"other")),
            |r| r.seq += 1,
            |r| r.created += 1,
            |r| r.min_native_version = None,
            |r| r.rollout = Rollout::FULL,
            |r| r.expires = Some(1),
            |r| r.notes = None,
            |r| r.capgo = example_capgo().capgo,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut r = example();
            edit(&mut r);
            let forged = SignedRelease {
                bytes: r.canonical_bytes().unwrap(),
                release: r,
                ..signed.clone()
            };
            let decoded = SignedRelease::from_bytes(&forged.to_bytes()).unwrap();
            assert!(
                matches!(
                    decoded.verify(&trust),
                    Err(VerifyError::BadSignature { .. })
                ),
                "edit {i} passed"
            );
        }
    }

    #[test]
    fn wrong_signing_prefix_is_refused() {
        let bytes = example().canonical_bytes().unwrap();
        let mut msg = b"lanseed/release-signature/v2\0".to_vec();
        msg.extend_from_slice(&bytes);
        let forged = SignedRelease {
            release: example(),
            bytes: bytes.clone(),
            key: key().public(),
            signature: key().sign(&msg),
        };
        assert!(forged.check_signature().is_err());
        let bare = SignedRelease {
            signature: key().sign(&bytes),
            ..forged
        };
        assert!(bare.check_signature().is_err());
    }

    #[test]
    fn refuses_bad_fields() {
        let cases: Vec<(Edit, Expect)> = vec![
            (
                |r| r.app = "kiosk".into(),
                |e| matches!(e, ReleaseError::BadApp(_)),
            ),
            (
                |r| r.app = "com..x".into(),
                |e| matches!(e, ReleaseError::BadApp(_)),
            ),
            (
                |r| r.channel = "".into(),
                |e| matches!(e, ReleaseError::BadChannel(_)),
            ),
            (
                |r| r.channel = "a/b".into(),
                |e| matches!(e, ReleaseError::BadChannel(_)),
            ),
            (
                |r| r.version = "1.2".into(),
                |e| matches!(e, ReleaseError::BadVersion(_)),
            ),
            (
                |r| r.min_native_version = Some("x".into()),
                |e| matches!(e, ReleaseError::BadNativeVersion(_)),
            ),
            (
                |r| r.notes = Some("n".repeat(MAX_NOTES_LEN + 1)),
                |e| matches!(e, ReleaseError::NotesTooLong(_)),
            ),
        ];
        for (i, (edit, want)) in cases.iter().enumerate() {
            let mut r = example();
            edit(&mut r);
            let err = r.sign(&key()).unwrap_err();
            assert!(want(&err), "case {i}: {err}");
        }
    }

    #[test]
    fn rollout_parsing_and_draw() {
        assert_eq!("25".parse::<Rollout>().unwrap().basis_points(), 2_500);
        assert_eq!("12.5".parse::<Rollout>().unwrap().basis_points(), 1_250);
        assert_eq!("0.01%".parse::<Rollout>().unwrap().basis_points(), 1);
        assert_eq!("100".parse::<Rollout>().unwrap(), Rollout::FULL);
        for bad in ["101", "-1", "1.234", "", "x", "1e2"] {
            assert!(bad.parse::<Rollout>().is_err(), "{bad}");
        }
        let bundle = BundleId(Hash::of(b"b"));
        let devices: Vec<String> = (0..2_000).map(|i| format!("device-{i}")).collect();
        let inside = |p: &str| {
            let r: Rollout = p.parse().unwrap();
            devices
                .iter()
                .filter(|d| r.includes("com.example.app", &bundle, d))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (ten, thirty) = (inside("10"), inside("30"));
        assert!(inside("0").is_empty());
        assert_eq!(inside("100").len(), devices.len());
        assert!((120..=280).contains(&ten.len()), "{}", ten.len());
        assert!(
            ten.iter().all(|d| thirty.contains(d)),
            "raising P only adds devices"
        );
    }

    fn arb_release() -> impl Strategy<Value = Release> {
        (
            ("[a-z]{1,8}\\.[a-z0-9_-]{1,12}", "[A-Za-z0-9._-]{1,16}"),
            (0u64..100, 0u64..100, 0u64..100, any::<[u8; 32]>()),
            (any::<u64>(), any::<u64>(), 0u16..=10_000),
            proptest::option::of(any::<u64>()),
            proptest::option::of("\\PC{0,40}"),
            proptest::option::of((0u64..9, 0u64..9)),
            proptest::option::of((
                any::<[u8; 32]>(),
                "[A-Za-z0-9+/]{1,20}",
                any::<[u8; 16]>(),
                proptest::collection::vec(any::<u8>(), 1..300),
                proptest::collection::vec(any::<u8>(), 1..300),
            )),
        )
            .prop_map(
                |(
                    (app, channel),
                    (a, b, c, id),
                    (seq, created, bp),
                    expires,
                    notes,
                    native,
                    capgo,
                )| {
                    Release {
                        app,
                        channel,
                        version: format!("{a}.{b}.{c}"),
                        bundle_id: BundleId(Hash::from_bytes(id)),
                        seq,
                        created,
                        min_native_version: native.map(|(x, y)| format!("{x}.{y}.0")),
                        rollout: Rollout::from_basis_points(bp).unwrap(),
                        expires,
                        notes,
                        capgo: capgo
                            .map(|(pid, key_id, iv, k, c)| CapgoSection {
                                bundle_id: BundleId(Hash::from_bytes(pid)),
                                key_id,
                                session_key: SessionKey {
                                    iv,
                                    encrypted_key: k,
                                },
                                encrypted_checksum: c,
                            })
                            .filter(|c| c.bundle_id.0.as_bytes() != &id),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips(r in arb_release()) {
            let signed = r.clone().sign(&key()).unwrap();
            let back = SignedRelease::from_bytes(&signed.to_bytes()).unwrap();
            prop_assert_eq!(back.release(), &r);
            prop_assert_eq!(back.id(), signed.id());
            prop_assert!(back.verify(&TrustList::single(key().public())).is_ok());
        }
    }
}
