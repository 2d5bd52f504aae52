//! Encryption v2 itself: the session key, the encrypted zip and the
//! encrypted checksum, made as `@capgo/cli bundle encrypt` makes them, and
//! undone as the plugin undoes them.
//!
//! Publisher side ([`encrypt_zip`]): a random 16-byte AES key and IV; the
//! zip AES-128-CBC encrypted with PKCS#7 padding; the AES key "private
//! encrypted"; `session_key` = `base64(iv) ":" base64(encrypted key)`; the
//! checksum = SHA-256 of the plain zip, "private encrypted", in lowercase
//! hex (the CLI's "V3" checksum, the one plugins 5.30.0, 6.30.0, 7.30.0 and
//! every 8.x read; older plugins took base64 of a mangled input and are
//! not supported).
//!
//! Device side ([`decrypt_zip`], [`decrypt_checksum`], [`open`]), written
//! from the plugin's `CryptoCipher`: split the session key at its one
//! `:`, require a 16-byte IV, "public decrypt" the AES key and require 16
//! bytes, decrypt the zip (an empty or unpadded one is an error); for the
//! checksum, take hex (or base64, for old uploads), require exactly 256
//! bytes, "public decrypt" them and compare the hex with the SHA-256 of the
//! decrypted zip.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{Array, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::CapgoError;
use super::key::{BLOCK_LEN, CapgoPrivateKey, CapgoPublicKey};

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// The `session_key` of an update answer: the IV and the encrypted AES key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKey {
    /// The AES-CBC initialisation vector.
    pub iv: [u8; 16],
    /// The AES key, "private encrypted" (one RSA block).
    pub encrypted_key: Vec<u8>,
}

impl SessionKey {
    /// Parses `base64(iv):base64(encrypted key)`, as the plugin does: one
    /// `:`, both parts non-empty and base64, a 16-byte IV.
    pub fn parse(text: &str) -> Result<Self, CapgoError> {
        if !is_valid_session_key(text) {
            return Err(CapgoError::BadSessionKey);
        }
        let (iv, key) = text.split_once(':').ok_or(CapgoError::BadSessionKey)?;
        let iv = STANDARD.decode(iv).map_err(|_| CapgoError::BadSessionKey)?;
        let iv: [u8; 16] = iv.try_into().map_err(|_| CapgoError::BadIv)?;
        let encrypted_key = STANDARD
            .decode(key)
            .map_err(|_| CapgoError::BadSessionKey)?;
        Ok(SessionKey { iv, encrypted_key })
    }

    /// The AES key, "public decrypted" with `public`: exactly 16 bytes.
    pub fn aes_key(&self, public: &CapgoPublicKey) -> Result<[u8; 16], CapgoError> {
        let key = public
            .public_decrypt(&self.encrypted_key)
            .map_err(|_| CapgoError::SessionKeyDecrypt)?;
        key.try_into().map_err(|_| CapgoError::BadSessionKeyLength)
    }
}

impl std::fmt::Display for SessionKey {
    /// `base64(iv):base64(encrypted key)`, standard base64 with padding (as
    /// Node's `Buffer.toString('base64')`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}",
            STANDARD.encode(self.iv),
            STANDARD.encode(&self.encrypted_key)
        )
    }
}

/// The plugin's `isValidSessionKey`: exactly two non-empty parts around
/// one `:`.
pub fn is_valid_session_key(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty())
}

/// What the publisher makes from a zip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    /// The update answer's `session_key`.
    pub session_key: SessionKey,
    /// The SHA-256 of the plain zip, "private encrypted" (one RSA block);
    /// the answer's `checksum` is its lowercase hex ([`checksum_hex`]).
    pub encrypted_checksum: Vec<u8>,
    /// The zip, AES-128-CBC encrypted: what the device downloads.
    pub encrypted_zip: Vec<u8>,
}

/// Encrypts `zip` with a fresh random AES key and IV.
pub fn encrypt_zip(key: &CapgoPrivateKey, zip: &[u8]) -> Result<Encrypted, CapgoError> {
    let mut aes_key = [0u8; 16];
    let mut iv = [0u8; 16];
    getrandom::fill(&mut aes_key).map_err(|e| CapgoError::Rsa(e.to_string()))?;
    getrandom::fill(&mut iv).map_err(|e| CapgoError::Rsa(e.to_string()))?;
    encrypt_zip_with(key, zip, aes_key, iv)
}

/// Encrypts `zip` with the given AES key and IV (tests and vectors; use
/// [`encrypt_zip`]).
pub fn encrypt_zip_with(
    key: &CapgoPrivateKey,
    zip: &[u8],
    aes_key: [u8; 16],
    iv: [u8; 16],
) -> Result<Encrypted, CapgoError> {
    let encrypted_key = key.private_encrypt(&aes_key)?;
    let encrypted_zip =
        Aes128CbcEnc::new(&aes_key.into(), &iv.into()).encrypt_padded_vec::<Pkcs7>(zip);
    Ok(Encrypted {
        session_key: SessionKey { iv, encrypted_key },
        encrypted_checksum: encrypt_checksum(key, &Sha256::digest(zip).into())?,
        encrypted_zip,
    })
}

/// AES-128-CBC with PKCS#7 padding over a stream: the same bytes as
/// [`encrypt_zip_with`]'s, without holding the zip in memory.
pub struct CbcStream {
    enc: Aes128CbcEnc,
    /// Bytes of an unfinished block (fewer than 16).
    pending: Vec<u8>,
}

impl CbcStream {
    /// Starts with `aes_key` and `iv`.
    pub fn new(aes_key: &[u8; 16], iv: &[u8; 16]) -> Self {
        CbcStream {
            enc: Aes128CbcEnc::new(aes_key.into(), iv.into()),
            pending: Vec::with_capacity(16),
        }
    }

    /// Encrypts `data`, appending every whole block done to `out`.
    pub fn update(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        let whole = self.pending.len() / 16 * 16;
        let start = out.len();
        out.extend(self.pending.drain(..whole));
        let (blocks, rest) = Array::slice_as_chunks_mut(&mut out[start..]);
        debug_assert!(rest.is_empty());
        self.enc.encrypt_blocks(blocks);
    }

    /// Pads (PKCS#7: 1 to 16 bytes, each their count) and encrypts the
    /// last block into `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        let pad = 16 - self.pending.len();
        let fill = std::iter::repeat_n(pad as u8, pad);
        let mut last = std::mem::take(&mut self.pending);
        last.extend(fill);
        self.update(&last, out);
    }
}

/// The SHA-256 `sha256` of a zip, "private encrypted".
pub fn encrypt_checksum(key: &CapgoPrivateKey, sha256: &[u8; 32]) -> Result<Vec<u8>, CapgoError> {
    key.private_encrypt(sha256)
}

/// The `checksum` string of an update answer: lowercase hex.
pub fn checksum_hex(encrypted_checksum: &[u8]) -> String {
    hex::encode(encrypted_checksum)
}

/// Decrypts an encrypted zip with the `session_key` string and the app's
/// public key, as the plugin does before it checks the checksum.
pub fn decrypt_zip(
    public: &CapgoPublicKey,
    session_key: &str,
    encrypted: &[u8],
) -> Result<Vec<u8>, CapgoError> {
    let session = SessionKey::parse(session_key)?;
    let aes_key = session.aes_key(public)?;
    if encrypted.is_empty() {
        return Err(CapgoError::EmptyInput);
    }
    Aes128CbcDec::new(&aes_key.into(), &session.iv.into())
        .decrypt_padded_vec::<Pkcs7>(encrypted)
        .map_err(|_| CapgoError::ZipDecrypt)
}

/// The plugin's `decryptChecksum`: the expected SHA-256 (lowercase hex) of
/// the decrypted zip, from the `checksum` string (hex, or base64 as old
/// uploads sent it).
pub fn decrypt_checksum(public: &CapgoPublicKey, checksum: &str) -> Result<String, CapgoError> {
    let is_hex = !checksum.is_empty() && checksum.bytes().all(|b| b.is_ascii_hexdigit());
    let block = if is_hex {
        hex::decode(checksum).map_err(|_| CapgoError::ChecksumNotEncrypted(checksum.len() / 2))?
    } else {
        STANDARD
            .decode(checksum)
            .map_err(|_| CapgoError::ChecksumNotEncrypted(0))?
    };
    if block.len() != BLOCK_LEN {
        return Err(CapgoError::ChecksumNotEncrypted(block.len()));
    }
    let plain = public
        .public_decrypt(&block)
        .map_err(|_| CapgoError::ChecksumDecrypt)?;
    Ok(hex::encode(plain))
}

/// The whole device side: decrypts `encrypted` and checks it against
/// `checksum`; returns the plain zip.
pub fn open(
    public: &CapgoPublicKey,
    session_key: &str,
    checksum: &str,
    encrypted: &[u8],
) -> Result<Vec<u8>, CapgoError> {
    let zip = decrypt_zip(public, session_key, encrypted)?;
    let expected = decrypt_checksum(public, checksum)?;
    let actual = hex::encode(Sha256::digest(&zip));
    if expected != actual {
        return Err(CapgoError::ChecksumMismatch { expected, actual });
    }
    Ok(zip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/data/capgo/crypto.json")).unwrap()
    }

    fn cli_key() -> CapgoPrivateKey {
        CapgoPrivateKey::from_pem(include_str!("../../tests/data/capgo/cli-key.pem")).unwrap()
    }

    const FIXTURE_ZIP: &[u8] = include_bytes!("../../tests/data/capgo/fixture.zip");
    const FIXTURE_ENC: &[u8] = include_bytes!("../../tests/data/capgo/fixture.zip.enc");

    fn cli_output() -> (String, String) {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/capgo/cli-encrypt.json")).unwrap();
        (
            v["ivSessionKey"].as_str().unwrap().to_owned(),
            v["checksum"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn session_key_validity_matches_the_plugin() {
        for case in vectors()["sessionKeyValid"].as_array().unwrap() {
            let input = case["input"]["sessionKey"].as_str().unwrap();
            let want = case["expect"]["valid"].as_bool().unwrap();
            assert_eq!(is_valid_session_key(input), want, "{}", case["id"]);
        }
    }

    #[test]
    fn sha256_vectors_match() {
        for case in vectors()["checksumFile"].as_array().unwrap() {
            let chunk = hex::decode(case["input"]["contentHex"].as_str().unwrap()).unwrap();
            let data = chunk.repeat(case["input"]["repeat"].as_u64().unwrap() as usize);
            assert_eq!(
                hex::encode(Sha256::digest(&data)),
                case["expect"]["checksum"].as_str().unwrap()
            );
        }
    }

    #[test]
    fn checksum_decryption_matches_the_plugin_vectors() {
        let v = vectors();
        let fixture = CapgoPublicKey::from_pem(v["publicKeyPem"].as_str().unwrap()).unwrap();
        for case in v["decryptChecksum"].as_array().unwrap() {
            let id = case["id"].as_str().unwrap();
            let checksum = case["input"]["checksum"].as_str().unwrap();
            if case["input"]["publicKey"].as_str() == Some("") {
                continue; // no key: the plugin passes the checksum through
            }
            let got = decrypt_checksum(&fixture, checksum);
            match case["expect"]["error"].as_str() {
                None => assert_eq!(
                    got.unwrap(),
                    case["expect"]["checksum"].as_str().unwrap(),
                    "{id}"
                ),
                Some("checksum_not_encrypted") => assert!(
                    matches!(got, Err(CapgoError::ChecksumNotEncrypted(_))),
                    "{id}: {got:?}"
                ),
                Some(_) => assert_eq!(got, Err(CapgoError::ChecksumDecrypt), "{id}"),
            }
        }
        let rsa: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/capgo/crypto-rsa.json")).unwrap();
        let key = CapgoPublicKey::from_pem(rsa["publicKeyPem"].as_str().unwrap()).unwrap();
        for case in rsa["decryptChecksum"].as_array().unwrap() {
            assert_eq!(
                decrypt_checksum(&key, case["input"]["checksumHex"].as_str().unwrap()).unwrap(),
                case["expect"]["decryptedHex"].as_str().unwrap()
            );
        }
        for case in rsa["decryptChecksumInvalid"].as_array().unwrap() {
            assert!(
                decrypt_checksum(&key, case["input"]["checksumHex"].as_str().unwrap()).is_err()
            );
        }
    }

    #[test]
    fn file_decryption_matches_the_plugin_vectors() {
        let v = vectors();
        let fixture_pem = v["publicKeyPem"].as_str().unwrap();
        for case in v["decryptFile"].as_array().unwrap() {
            let id = case["id"].as_str().unwrap();
            let pem = case["input"]["publicKey"].as_str().unwrap_or(fixture_pem);
            let session = case["input"]["sessionKey"].as_str().unwrap();
            let data = hex::decode(case["input"]["ciphertextHex"].as_str().unwrap()).unwrap();
            if pem.is_empty() || !is_valid_session_key(session) {
                // The plugin leaves the file as it is; a lanseed gateway
                // always sends both, so there is nothing of ours to test.
                continue;
            }
            let got = CapgoPublicKey::from_pem(pem).and_then(|k| decrypt_zip(&k, session, &data));
            let want_err = match case["expect"]["error"].as_str() {
                None => {
                    assert_eq!(
                        hex::encode(got.unwrap()),
                        case["expect"]["plaintextHex"].as_str().unwrap(),
                        "{id}"
                    );
                    continue;
                }
                Some("invalid_public_key") => CapgoError::NotAPublicKey,
                Some("invalid_iv") => CapgoError::BadIv,
                Some("session_key_decrypt_failed") => CapgoError::SessionKeyDecrypt,
                Some("invalid_session_key") => CapgoError::BadSessionKeyLength,
                Some("decrypt_failed") => CapgoError::ZipDecrypt,
                Some("empty_input") => CapgoError::EmptyInput,
                Some(other) => panic!("{id}: unknown expected error {other}"),
            };
            assert_eq!(got, Err(want_err), "{id}");
        }
    }

    #[test]
    fn encryption_gives_the_cli_bytes_exactly() {
        let key = cli_key();
        let (session, checksum) = cli_output();
        let parsed = SessionKey::parse(&session).unwrap();
        let aes_key = parsed.aes_key(key.public()).unwrap();
        let ours = encrypt_zip_with(&key, FIXTURE_ZIP, aes_key, parsed.iv).unwrap();
        assert_eq!(ours.session_key.to_string(), session);
        assert_eq!(checksum_hex(&ours.encrypted_checksum), checksum);
        assert_eq!(ours.encrypted_zip, FIXTURE_ENC);
        // And the device side opens the CLI's output.
        assert_eq!(
            open(key.public(), &session, &checksum, FIXTURE_ENC).unwrap(),
            FIXTURE_ZIP
        );
    }

    #[test]
    fn streamed_encryption_gives_the_same_bytes_in_any_chunks() {
        let (key, iv) = ([3u8; 16], [4u8; 16]);
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let want =
                Aes128CbcEnc::new(&key.into(), &iv.into()).encrypt_padded_vec::<Pkcs7>(&data);
            for chunk in [1usize, 5, 16, 17, 64] {
                let mut stream = CbcStream::new(&key, &iv);
                let mut out = Vec::new();
                for part in data.chunks(chunk) {
                    stream.update(part, &mut out);
                }
                stream.finish(&mut out);
                assert_eq!(out, want, "len {len}, chunks of {chunk}");
            }
        }
    }

    #[test]
    fn round_trip_with_fresh_keys_and_sizes() {
        let key = cli_key();
        for len in [0usize, 1, 15, 16, 17, 4096, 100_003] {
            let zip: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let e = encrypt_zip(&key, &zip).unwrap();
            assert_eq!(e.encrypted_zip.len(), (len / 16 + 1) * 16);
            let back = open(
                key.public(),
                &e.session_key.to_string(),
                &checksum_hex(&e.encrypted_checksum),
                &e.encrypted_zip,
            )
            .unwrap();
            assert_eq!(back, zip);
        }
        let a = encrypt_zip(&key, b"zip").unwrap();
        let b = encrypt_zip(&key, b"zip").unwrap();
        assert_ne!(
            a.session_key, b.session_key,
            "a fresh AES key and IV each time"
        );
    }

    #[test]
    fn tampered_checksum_or_zip_and_wrong_key_are_refused() {
        let key = cli_key();
        let (session, checksum) = cli_output();
        let public = key.public();

        // A checksum made for other bytes.
        let other = checksum_hex(&encrypt_checksum(&key, &[7; 32]).unwrap());
        assert!(matches!(
            open(public, &session, &other, FIXTURE_ENC),
            Err(CapgoError::ChecksumMismatch { .. })
        ));
        // A flipped checksum byte no longer decrypts.
        let mut bad = hex::decode(&checksum).unwrap();
        bad[100] ^= 1;
        assert_eq!(
            open(public, &session, &hex::encode(&bad), FIXTURE_ENC),
            Err(CapgoError::ChecksumDecrypt)
        );
        // A changed byte of the encrypted zip: bad padding or another hash.
        let mut zip = FIXTURE_ENC.to_vec();
        zip[10] ^= 1;
        assert!(open(public, &session, &checksum, &zip).is_err());

        // Another key (the plugin vectors' fixture key) opens nothing.
        let v = vectors();
        let wrong = CapgoPublicKey::from_pem(v["publicKeyPem"].as_str().unwrap()).unwrap();
        assert_eq!(
            open(&wrong, &session, &checksum, FIXTURE_ENC),
            Err(CapgoError::SessionKeyDecrypt)
        );
        assert_eq!(
            decrypt_checksum(&wrong, &checksum),
            Err(CapgoError::ChecksumDecrypt)
        );
    }
}
