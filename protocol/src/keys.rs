//! Publisher keys: Ed25519 key pairs and their text forms.
//!
//! The public key is one copy-pasteable line, `lanseed-pub-ed25519:` and 64
//! hex digits, which is also a valid line of a trust file. The secret key
//! file holds `lanseed-secret-ed25519:` and the 32-byte seed in hex; it is
//! created with mode 0600 and never overwritten unless asked.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Prefix of a public key's text form.
pub const PUBLIC_PREFIX: &str = "lanseed-pub-ed25519:";
/// Prefix of a secret key file's content.
pub const SECRET_PREFIX: &str = "lanseed-secret-ed25519:";

/// An Ed25519 public key of a publisher.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

/// An Ed25519 secret key of a publisher.
pub struct SecretKey(SigningKey);

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not the text form of a public key.
    #[error(
        "`{0}` is not a lanseed public key: expected `{PUBLIC_PREFIX}` followed by 64 hex digits"
    )]
    BadPublic(String),
    /// The 32 bytes are not a valid Ed25519 point.
    #[error("public key {0} is not a valid Ed25519 key")]
    InvalidPoint(String),
    /// The secret key file's content is not a secret key.
    #[error(
        "{0} is not a lanseed secret key file (expected one line `{SECRET_PREFIX}` + 64 hex digits)"
    )]
    BadSecret(PathBuf),
    /// The file already exists.
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    /// The system random source failed.
    #[error("the system random source failed: {0}")]
    Random(String),
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl PublicKey {
    /// The raw 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A key from raw bytes, refusing invalid points and weak (small-order)
    /// keys, for which signatures prove nothing.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        match VerifyingKey::from_bytes(bytes) {
            Ok(k) if !k.is_weak() => Ok(PublicKey(k)),
            _ => Err(KeyError::InvalidPoint(hex::encode(bytes))),
        }
    }

    /// Checks an Ed25519 signature over `message` (strict: no malleable or
    /// small-order signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok()
    }

    /// A short form for logs: the first 12 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.to_bytes()[..6])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyError::BadPublic(s.chars().take(100).collect());
        let hex_part = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut bytes).is_err() {
            return Err(bad());
        }
        PublicKey::from_bytes(&bytes)
    }
}

impl SecretKey {
    /// A new key from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// A key from its 32-byte seed (tests and fixtures).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Reads a secret key file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bad = || KeyError::BadSecret(path.to_owned());
        let hex_part = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
        let mut seed = [0u8; 32];
        if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut seed).is_err() {
            return Err(bad());
        }
        Ok(SecretKey::from_seed(&seed))
    }

    /// Writes the secret key to `path` (mode 0600) and the public key line
    /// to `path.pub`. Refuses to replace existing files unless `force`.
    /// Returns the path of the public key file.
    pub fn write(&self, path: &Path, force: bool) -> Result<PathBuf, KeyError> {
        let mut pub_path = path.as_os_str().to_owned();
        pub_path.push(".pub");
        let pub_path = PathBuf::from(pub_path);
        if !force {
            for p in [path, pub_path.as_path()] {
                if p.exists() {
                    return Err(KeyError::Exists(p.to_owned()));
                }
            }
        }
        let secret = format!("{SECRET_PREFIX}{}\n", hex::encode(self.0.to_bytes()));
        write_file(path, secret.as_bytes(), 0o600, force)?;
        write_file(
            &pub_path,
            format!("{}\n", self.public()).as_bytes(),
            0o644,
            force,
        )?;
        Ok(pub_path)
    }
}

fn write_file(path: &Path, content: &[u8], mode: u32, force: bool) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(mode);
        let mut f = opts.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_owned()),
            _ => io(e),
        })?;
        // An existing file keeps its old mode on open; set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
        f.write_all(content).map_err(io)?;
        f.sync_all().map_err(io)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(content).map_err(io)?;
        f.sync_all().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let k = SecretKey::from_seed(&[7; 32]);
        let line = k.public().to_string();
        assert!(line.starts_with(PUBLIC_PREFIX));
        assert_eq!(line.parse::<PublicKey>().unwrap(), k.public());
        assert!("lanseed-pub-ed25519:00".parse::<PublicKey>().is_err());
        assert!(line[1..].parse::<PublicKey>().is_err());
    }

    #[test]
    fn weak_keys_and_malleable_signatures_are_refused() {
        // The identity point: with R = identity and s = 0, the plain
        // Ed25519 equation holds for every message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(&identity).is_err());
        let raw = VerifyingKey::from_bytes(&identity).unwrap();
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        // Plain verification accepts this forgery; ours must not.
        use ed25519_dalek::Verifier;
        assert!(raw.verify(b"anything", &sig).is_ok());
        assert!(!PublicKey(raw).verify(b"anything", &sig.to_bytes()));

        // A signature with s + L (non-canonical s) is refused.
        let k = SecretKey::from_seed(&[5; 32]);
        let mut good = k.sign(b"msg");
        assert!(k.public().verify(b"msg", &good));
        // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(good[32 + i]) + u16::from(l[i]) + carry;
            good[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(!k.public().verify(b"msg", &good));
    }

    #[test]
    fn keygen_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publisher.key");
        let k = SecretKey::generate().unwrap();
        let pub_path = k.write(&path, false).unwrap();
        assert_eq!(pub_path, dir.path().join("publisher.key.pub"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(SecretKey::read(&path).unwrap().public(), k.public());
        let text = std::fs::read_to_string(&pub_path).unwrap();
        assert_eq!(text.trim().parse::<PublicKey>().unwrap(), k.public());
        assert!(matches!(
            SecretKey::generate().unwrap().write(&path, false),
            Err(KeyError::Exists(_))
        ));
        assert_eq!(SecretKey::read(&path).unwrap().public(), k.public());
        let k2 = SecretKey::generate().unwrap();
        k2.write(&path, true).unwrap();
        assert_eq!(SecretKey::read(&path).unwrap().public(), k2.public());
    }
}
