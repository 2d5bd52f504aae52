//! The trust list: which publisher keys a node accepts, and for what.
//!
//! A trust file holds one key per line, as `lanseed keygen` prints it,
//! optionally followed by a scope and a comment:
//!
//! ```text
//! # release key of the museum fleet
//! lanseed-pub-ed25519:3b6a…  apps=com.example.kiosk  channels=production,beta
//! lanseed-pub-ed25519:9f10…  channels=dev   # Alice's dev key
//! ```
//!
//! `apps=` and `channels=` take comma-separated names; an absent scope
//! allows everything. A release is accepted only when its key is listed and
//! a line with that key covers its app and channel.

use std::path::{Path, PathBuf};

use crate::keys::{KeyError, PublicKey};

/// One line of a trust file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustEntry {
    /// The publisher key.
    pub key: PublicKey,
    /// Apps this key may publish; empty means any.
    pub apps: Vec<String>,
    /// Channels this key may publish on; empty means any.
    pub channels: Vec<String>,
}

/// The keys a node trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustList {
    entries: Vec<TrustEntry>,
}

/// Why a trust file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    /// The file could not be read.
    #[error("cannot read trust file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line is not a key with an optional scope.
    #[error("{path}, line {line}: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Why a key may not sign a release.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    /// The key is in no line of the trust list.
    #[error("publisher key {0} is not trusted")]
    UnknownKey(String),
    /// The key is trusted, but not for this app or channel.
    #[error("publisher key {key} is not trusted for app {app} on channel {channel}")]
    OutOfScope {
        /// The key (short form).
        key: String,
        /// The release's app.
        app: String,
        /// The release's channel.
        channel: String,
    },
}

impl TrustEntry {
    fn covers(&self, app: &str, channel: &str) -> bool {
        (self.apps.is_empty() || self.apps.iter().any(|a| a == app))
            && (self.channels.is_empty() || self.channels.iter().any(|c| c == channel))
    }
}

impl TrustList {
    /// A list trusting `key` for everything: only for a publisher checking
    /// the signature it just made. Crate-private, so that no caller can
    /// turn a release into a [`crate::VerifiedRelease`] by trusting the key
    /// the release itself carries.
    pub(crate) fn single(key: PublicKey) -> Self {
        TrustList {
            entries: vec![TrustEntry {
                key,
                apps: vec![],
                channels: vec![],
            }],
        }
    }

    /// The lines of the list.
    pub fn entries(&self) -> &[TrustEntry] {
        &self.entries
    }

    /// Adds a line.
    pub fn push(&mut self, entry: TrustEntry) {
        self.entries.push(entry);
    }

    /// Reads a trust file.
    pub fn read(path: &Path) -> Result<Self, TrustFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| TrustFileError::BadLine {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses trust file text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut list = TrustList::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            list.push(parse_line(line).map_err(|reason| (i + 1, reason))?);
        }
        Ok(list)
    }

    /// Checks that `key` may sign releases of `app` on `channel`.
    pub fn check(&self, key: &PublicKey, app: &str, channel: &str) -> Result<(), TrustError> {
        let mut known = false;
        for e in self.entries.iter().filter(|e| &e.key == key) {
            known = true;
            if e.covers(app, channel) {
                return Ok(());
            }
        }
        if known {
            Err(TrustError::OutOfScope {
                key: key.short(),
                app: app.to_owned(),
                channel: channel.to_owned(),
            })
        } else {
            Err(TrustError::UnknownKey(key.short()))
        }
    }
}

fn parse_line(line: &str) -> Result<TrustEntry, String> {
    let mut words = line.split_whitespace();
    let key = words
        .next()
        .unwrap_or_default()
        .parse::<PublicKey>()
        .map_err(|e: KeyError| e.to_string())?;
    let mut entry = TrustEntry {
        key,
        apps: vec![],
        channels: vec![],
    };
    for word in words {
        let (name, values) = word
            .split_once('=')
            .ok_or_else(|| format!("`{word}` is not a scope: expected apps=A,B or channels=C,D"))?;
        let values: Vec<String> = values
            .split(',')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        if values.is_empty() {
            return Err(format!("scope `{name}=` names nothing"));
        }
        match name {
            "apps" => entry.apps.extend(values),
            "channels" => entry.channels.extend(values),
            _ => {
                return Err(format!(
                    "unknown scope `{name}`: expected apps= or channels="
                ));
            }
        }
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn scopes_are_enforced() {
        let release = SecretKey::from_seed(&[1; 32]).public();
        let dev = SecretKey::from_seed(&[2; 32]).public();
        let stranger = SecretKey::from_seed(&[3; 32]).public();
        let text = format!(
            "# fleet keys\n\n{release} apps=com.example.a,com.example.b\n{dev} channels=dev # alice\n"
        );
        let list = TrustList::parse(&text).unwrap();
        assert_eq!(list.entries().len(), 2);
        assert!(list.check(&release, "com.example.a", "production").is_ok());
        assert!(list.check(&release, "com.example.b", "beta").is_ok());
        assert!(matches!(
            list.check(&release, "com.example.c", "production"),
            Err(TrustError::OutOfScope { .. })
        ));
        assert!(list.check(&dev, "com.example.c", "dev").is_ok());
        assert!(matches!(
            list.check(&dev, "com.example.c", "production"),
            Err(TrustError::OutOfScope { .. })
        ));
        assert!(matches!(
            list.check(&stranger, "com.example.a", "production"),
            Err(TrustError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_lines_name_their_number() {
        let key = SecretKey::from_seed(&[1; 32]).public();
        assert_eq!(TrustList::parse("\nnot-a-key\n").unwrap_err().0, 2);
        assert!(TrustList::parse(&format!("{key} colour=blue")).is_err());
        assert!(TrustList::parse(&format!("{key} apps=")).is_err());
    }
}
