//! Capgo encryption v2, made on the publisher's machine.
//!
//! A stock Capacitor app with `@capgo/capacitor-updater` and a Capgo public
//! key configured takes only encrypted updates: its update answer carries
//! `session_key` (`base64(iv):base64(AES key, RSA "private encrypted")`),
//! the zip it downloads is AES-128-CBC encrypted, and `checksum` is the
//! SHA-256 of the plain zip, RSA "private encrypted", in hex. The plugin
//! also sends `key_id` (the first 20 characters of its public key's base64)
//! in every update check, so a server can tell a device with another key.
//!
//! The private key never reaches the LAN: `lanseed pack --capgo-key` or
//! `lanseed capgo-encrypt` encrypts the release's bundle (as the
//! deterministic zip any gateway serves, [`crate::release_file::export_bundle_zip`])
//! and puts the artefacts in the signed release: its [`CapgoSection`]
//! names a second bundle, the *payload*, whose `bundle.zip.enc` holds the
//! encrypted zip ([`payload`]). Seeders carry and serve the payload like
//! any bundle; a gateway serves it with the section's strings
//! ([`payload::served`]) and never holds the key.
//!
//! Modules: [`key`] reads keys and computes key ids, [`cipher`] encrypts
//! and decrypts, [`payload`] stores and finds the encrypted zip,
//! [`publish`] adds artefacts to a release already packed.
//! Test vectors: `protocol/tests/data/capgo/` (the plugin's own contract
//! vectors, and output of the real CLI).

pub mod cipher;
pub mod key;
pub mod payload;
pub mod publish;

pub use cipher::{Encrypted, SessionKey, checksum_hex, decrypt_checksum, decrypt_zip, open};
pub use key::{CapgoPrivateKey, CapgoPublicKey, key_id};
pub use payload::{CapgoSection, Served};

/// What went wrong with Capgo keys or artefacts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapgoError {
    /// The key file is not a PKCS#1 PEM private key.
    #[error(
        "not a Capgo private key: expected a PEM file starting with -----BEGIN RSA PRIVATE KEY----- (the .capgo_key_v2 that `npx @capgo/cli key create` writes)"
    )]
    NotAPrivateKey,
    /// The public key was given where the private one is needed.
    #[error(
        "this is the Capgo public key; pass the private key (.capgo_key_v2, not .capgo_key_v2.pub)"
    )]
    PublicKeyGiven,
    /// The key has another size than the plugin accepts.
    #[error(
        "the Capgo key is {0}-bit, but the Capgo plugin accepts only 2048-bit keys; make one with `npx @capgo/cli key create`"
    )]
    KeySize(usize),
    /// The key file could not be read.
    #[error("cannot read the Capgo key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// A public key that does not load.
    #[error("not a Capgo public key: expected PEM starting with -----BEGIN RSA PUBLIC KEY-----")]
    NotAPublicKey,
    /// An RSA operation failed.
    #[error("RSA operation failed: {0}")]
    Rsa(String),
    /// An RSA block that is not a type-1 PKCS#1 v1.5 block of this key.
    #[error("the RSA block does not decrypt with this public key")]
    BadBlock,
    /// The session key is not `iv:key` in base64.
    #[error("the session key is not base64(iv):base64(key)")]
    BadSessionKey,
    /// The IV is not 16 bytes.
    #[error("the session key's IV is not 16 bytes")]
    BadIv,
    /// The AES key does not decrypt with the public key.
    #[error("the session key does not decrypt with this public key (another Capgo key?)")]
    SessionKeyDecrypt,
    /// The decrypted AES key is not 16 bytes.
    #[error("the session key decrypts to a key that is not 16 bytes")]
    BadSessionKeyLength,
    /// Nothing to decrypt.
    #[error("the encrypted zip is empty")]
    EmptyInput,
    /// The zip does not decrypt (bad length or padding).
    #[error("the zip does not decrypt with the session key")]
    ZipDecrypt,
    /// The checksum is not one RSA-2048 block.
    #[error(
        "the checksum is not encrypted ({0} bytes, not 256): the bundle must be encrypted with the Capgo key"
    )]
    ChecksumNotEncrypted(usize),
    /// The checksum does not decrypt with the public key.
    #[error("the checksum does not decrypt with this public key")]
    ChecksumDecrypt,
    /// The decrypted zip is not the one the checksum names.
    #[error(
        "checksum mismatch: the decrypted zip's SHA-256 is {actual}, the checksum says {expected}"
    )]
    ChecksumMismatch {
        /// What the checksum says.
        expected: String,
        /// What the zip hashes to.
        actual: String,
    },
}

/// An I/O error that compares by its kind and text (so [`CapgoError`] can
/// be compared in tests).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub std::io::Error);

impl PartialEq for ReadError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for ReadError {}
