//! Capgo RSA keys, as `@capgo/cli key create` writes them, and the key id
//! the plugin derives from the public key.
//!
//! `.capgo_key_v2` is a PKCS#1 PEM private key (`-----BEGIN RSA PRIVATE
//! KEY-----`), `.capgo_key_v2.pub` and the app's `capacitor.config` hold the
//! PKCS#1 PEM public key (`-----BEGIN RSA PUBLIC KEY-----`), as Node's
//! `generateKeyPairSync('rsa', { modulusLength: 2048 })` exports them. The
//! plugin accepts only 2048-bit keys: it refuses a checksum that is not 256
//! bytes long.
//!
//! "Private encrypt" is RSA with PKCS#1 v1.5 type-1 padding (`00 01 FF…FF
//! 00 data`), the signing primitive applied to raw bytes with no digest
//! prefix: the `rsa` crate's `Pkcs1v15Sign::new_unprefixed()`. "Public
//! decrypt" is its inverse, the raw public operation followed by the
//! padding check, as OpenSSL's `RSA_public_decrypt` does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, Pkcs1v15Sign};

use super::CapgoError;

/// The only RSA size the Capgo plugin accepts.
pub const KEY_BITS: usize = 2048;

/// Bytes of every RSA block the plugin reads: the encrypted AES key and the
/// encrypted checksum.
pub const BLOCK_LEN: usize = KEY_BITS / 8;

/// Length of a key id (shorter only for a shorter key text).
pub const KEY_ID_LEN: usize = 20;

const PRIVATE_BEGIN: &str = "-----BEGIN RSA PRIVATE KEY-----";
const PRIVATE_END: &str = "-----END RSA PRIVATE KEY-----";
const PUBLIC_BEGIN: &str = "-----BEGIN RSA PUBLIC KEY-----";
const PUBLIC_END: &str = "-----END RSA PUBLIC KEY-----";

/// The DER bytes between a PEM's `begin` and `end` lines.
fn pem_body(text: &str, begin: &str, end: &str) -> Option<Vec<u8>> {
    let rest = text.trim_start().strip_prefix(begin)?;
    let (body, _) = rest.split_once(end)?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

/// Node's PEM: 64 characters a line, with a final newline.
fn to_pem(der: &[u8], begin: &str, end: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("{begin}\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(end);
    out.push('\n');
    out
}

/// The key id the plugin sends (`key_id`) for the public key text
/// `public_pem`: its first 20 characters once the PEM lines and every
/// whitespace are removed (the plugin's `calcKeyId`, on any text).
pub fn key_id(public_pem: &str) -> String {
    let cleaned: String = public_pem
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .replace("-----BEGINRSAPUBLICKEY-----", "")
        .replace("-----ENDRSAPUBLICKEY-----", "");
    cleaned.chars().take(KEY_ID_LEN).collect()
}

/// A Capgo public key: what the app holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapgoPublicKey {
    key: rsa::PublicKey,
    der: Vec<u8>,
}

impl CapgoPublicKey {
    /// Reads a PKCS#1 PEM public key (`-----BEGIN RSA PUBLIC KEY-----`), the
    /// only form the plugin reads.
    pub fn from_pem(text: &str) -> Result<Self, CapgoError> {
        let der = pem_body(text, PUBLIC_BEGIN, PUBLIC_END).ok_or(CapgoError::NotAPublicKey)?;
        let key = rsa::PublicKey::from_pkcs1_der(&der).map_err(|_| CapgoError::NotAPublicKey)?;
        Ok(CapgoPublicKey { key, der })
    }

    fn from_key(key: rsa::PublicKey) -> Result<Self, CapgoError> {
        let der = key
            .to_pkcs1_der()
            .map_err(|_| CapgoError::NotAPrivateKey)?
            .as_bytes()
            .to_vec();
        Ok(CapgoPublicKey { key, der })
    }

    /// The PEM text, as `@capgo/cli key create` writes it.
    pub fn to_pem(&self) -> String {
        to_pem(&self.der, PUBLIC_BEGIN, PUBLIC_END)
    }

    /// The key id the plugin derives from this key (see [`key_id`]).
    pub fn key_id(&self) -> String {
        key_id(&self.to_pem())
    }

    /// Size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.key.size() * 8
    }

    /// "Public decrypt": the raw RSA public operation on `block`, then the
    /// PKCS#1 v1.5 type-1 padding removed. `block` must be exactly as long
    /// as the modulus.
    pub fn public_decrypt(&self, block: &[u8]) -> Result<Vec<u8>, CapgoError> {
        let k = self.key.size();
        if block.len() != k {
            return Err(CapgoError::BadBlock);
        }
        let c = BoxedUint::from_be_slice(block, self.key.n_bits_precision())
            .map_err(|_| CapgoError::BadBlock)?;
        if c >= *self.key.n().as_ref() {
            return Err(CapgoError::BadBlock);
        }
        let m = rsa::hazmat::rsa_encrypt(&self.key, &c).map_err(|_| CapgoError::BadBlock)?;
        let bytes = m.to_be_bytes();
        // Left-pad or trim the storage width to the modulus length.
        let em: Vec<u8> = if bytes.len() >= k {
            let (extra, em) = bytes.split_at(bytes.len() - k);
            if extra.iter().any(|&b| b != 0) {
                return Err(CapgoError::BadBlock);
            }
            em.to_vec()
        } else {
            let mut em = vec![0; k - bytes.len()];
            em.extend_from_slice(&bytes);
            em
        };
        // 00 01 FF{8,} 00 data
        if em.len() < 11 || em[0] != 0 || em[1] != 1 {
            return Err(CapgoError::BadBlock);
        }
        let ffs = em[2..].iter().take_while(|&&b| b == 0xff).count();
        let sep = 2 + ffs;
        if ffs < 8 || em.get(sep) != Some(&0) {
            return Err(CapgoError::BadBlock);
        }
        Ok(em[sep + 1..].to_vec())
    }
}

/// A Capgo private key: stays on the publisher's machine.
#[derive(Clone)]
pub struct CapgoPrivateKey {
    key: rsa::PrivateKey,
    public: CapgoPublicKey,
}

impl std::fmt::Debug for CapgoPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CapgoPrivateKey({})", self.public.key_id())
    }
}

impl CapgoPrivateKey {
    /// Reads a PKCS#1 PEM private key (`-----BEGIN RSA PRIVATE KEY-----`, as
    /// in `.capgo_key_v2`) of 2048 bits.
    pub fn from_pem(text: &str) -> Result<Self, CapgoError> {
        if text.trim_start().starts_with(PUBLIC_BEGIN) {
            return Err(CapgoError::PublicKeyGiven);
        }
        let der = pem_body(text, PRIVATE_BEGIN, PRIVATE_END).ok_or(CapgoError::NotAPrivateKey)?;
        let key = rsa::PrivateKey::from_pkcs1_der(&der).map_err(|_| CapgoError::NotAPrivateKey)?;
        let bits = key.size() * 8;
        if bits != KEY_BITS {
            return Err(CapgoError::KeySize(bits));
        }
        let public = CapgoPublicKey::from_key(key.to_public_key())?;
        Ok(CapgoPrivateKey { key, public })
    }

    /// Reads the key file at `path` (see [`CapgoPrivateKey::from_pem`]).
    pub fn read(path: &std::path::Path) -> Result<Self, CapgoError> {
        let read_error = |source| CapgoError::Read {
            path: path.display().to_string(),
            source: super::ReadError(source),
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if meta.len() > 64 << 10 {
            return Err(CapgoError::NotAPrivateKey);
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::from_pem(&text)
    }

    /// The matching public key.
    pub fn public(&self) -> &CapgoPublicKey {
        &self.public
    }

    /// "Private encrypt": `data` with PKCS#1 v1.5 type-1 padding, through
    /// the RSA private operation (blinded). Deterministic: the same key and
    /// data give the same block.
    pub fn private_encrypt(&self, data: &[u8]) -> Result<Vec<u8>, CapgoError> {
        self.key
            .sign(Pkcs1v15Sign::new_unprefixed(), data)
            .map_err(|e| CapgoError::Rsa(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLI_KEY: &str = include_str!("../../tests/data/capgo/cli-key.pem");
    const CLI_PUB: &str = include_str!("../../tests/data/capgo/cli-key.pub");

    fn rsa_vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/data/capgo/crypto-rsa.json")).unwrap()
    }

    #[test]
    fn key_ids_match_the_plugin_vectors() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/capgo/crypto.json")).unwrap();
        let fixture = v["publicKeyPem"].as_str().unwrap();
        for case in v["keyId"].as_array().unwrap() {
            let input = case["input"]["publicKey"].as_str().unwrap_or(fixture);
            assert_eq!(
                key_id(input),
                case["expect"]["keyId"].as_str().unwrap(),
                "{}",
                case["id"]
            );
        }
        for case in rsa_vectors()["calcKeyId"].as_array().unwrap() {
            let pem = case["input"]["publicKeyPem"].as_str().unwrap();
            let want = case["expect"]["keyId"].as_str().unwrap();
            assert_eq!(key_id(pem), want);
            // Parsed and written again, the key gives the same id.
            assert_eq!(CapgoPublicKey::from_pem(pem).unwrap().key_id(), want);
        }
    }

    #[test]
    fn public_keys_load_as_the_plugin_loads_them() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/capgo/crypto.json")).unwrap();
        let fixture = v["publicKeyPem"].as_str().unwrap();
        for case in v["publicKeyValid"].as_array().unwrap() {
            let input = case["input"]["publicKey"].as_str().unwrap_or(fixture);
            let want = case["expect"]["valid"].as_bool().unwrap();
            assert_eq!(
                CapgoPublicKey::from_pem(input).is_ok(),
                want,
                "{}",
                case["id"]
            );
        }
        for case in rsa_vectors()["rsaPublicKeyLoad"].as_array().unwrap() {
            let input = case["input"]["publicKeyPem"].as_str().unwrap();
            let want = case["expect"]["loads"].as_bool().unwrap();
            assert_eq!(CapgoPublicKey::from_pem(input).is_ok(), want);
        }
    }

    #[test]
    fn public_decrypt_matches_the_plugin_vectors() {
        let v = rsa_vectors();
        let key = CapgoPublicKey::from_pem(v["publicKeyPem"].as_str().unwrap()).unwrap();
        for case in v["rsaPublicDecrypt"].as_array().unwrap() {
            let block = hex::decode(case["input"]["ciphertextHex"].as_str().unwrap()).unwrap();
            assert_eq!(
                hex::encode(key.public_decrypt(&block).unwrap()),
                case["expect"]["plaintextHex"].as_str().unwrap()
            );
        }
        // Not a type-1 block, and not a block of the key's size.
        assert_eq!(key.public_decrypt(&[0xff; 256]), Err(CapgoError::BadBlock));
        assert_eq!(key.public_decrypt(&[0; 255]), Err(CapgoError::BadBlock));
        assert_eq!(key.public_decrypt(&[0; 256]), Err(CapgoError::BadBlock));
    }

    #[test]
    fn the_cli_key_pair_reads_and_matches() {
        let key = CapgoPrivateKey::from_pem(CLI_KEY).unwrap();
        assert_eq!(key.public().to_pem(), CLI_PUB);
        assert_eq!(key.public().key_id(), key_id(CLI_PUB));
        assert_eq!(key.public().bits(), 2048);
        let block = key.private_encrypt(b"sixteen bytes!!!").unwrap();
        assert_eq!(block.len(), BLOCK_LEN);
        assert_eq!(block, key.private_encrypt(b"sixteen bytes!!!").unwrap());
        let public = CapgoPublicKey::from_pem(CLI_PUB).unwrap();
        assert_eq!(public.public_decrypt(&block).unwrap(), b"sixteen bytes!!!");
    }

    #[test]
    fn wrong_key_files_are_refused_with_what_they_are() {
        assert_eq!(
            CapgoPrivateKey::from_pem(CLI_PUB).unwrap_err(),
            CapgoError::PublicKeyGiven
        );
        assert_eq!(
            CapgoPrivateKey::from_pem("lanseed-secret-ed25519:00").unwrap_err(),
            CapgoError::NotAPrivateKey
        );
        assert_eq!(
            CapgoPrivateKey::from_pem(include_str!("../../tests/data/capgo/rsa-1024.pem"))
                .unwrap_err(),
            CapgoError::KeySize(1024)
        );
        let garbled = CLI_KEY.replacen("MII", "MIJ", 1);
        assert_eq!(
            CapgoPrivateKey::from_pem(&garbled).unwrap_err(),
            CapgoError::NotAPrivateKey
        );
    }
}
