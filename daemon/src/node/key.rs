//! The node's libp2p identity, kept in the store (`node.key`, mode 0600).
//!
//! The key is written once, at the node's first start, atomically and
//! durably (temp file created 0600, `fsync`, rename, `fsync` of the store
//! directory): a crash or power cut at any instant leaves either no key
//! (the next start makes one) or the whole key, never an empty or
//! truncated one. A temp file a crash left behind holds a secret, so the
//! next start removes it. An empty `node.key` can only be a write that
//! never finished (earlier versions wrote it without a sync): it is
//! replaced, not refused.

use std::path::Path;

use lanseed_protocol::Store;
use lanseed_protocol::store::durable;
use libp2p::identity::Keypair;

/// Name of the key file in the store.
pub const FILE: &str = "node.key";

/// The crash points of the key's write, in order.
const CRASH_POINTS: [&str; 4] = [
    "node key: written",
    "node key: synced",
    "node key: renamed",
    "node key: directory synced",
];

/// What went wrong with the node key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file exists but holds no key.
    #[error("{path} is not a node key ({reason}); delete it to make a new one")]
    NotAKey {
        /// The key file.
        path: std::path::PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("cannot {action} the node key {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The key file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The node's identity: read from the store, or made and written there.
pub fn identity(store: &Store) -> Result<Keypair, KeyError> {
    let path = store.root().join(FILE);
    // A collection of the store removes temp files in its root that no
    // lock holder owns: hold the lock while the key's temp file exists.
    let _guard = store.read_guard().map_err(|e| KeyError::Io {
        action: "lock the store for",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    load_or_create(&path)
}

fn load_or_create(path: &Path) -> Result<Keypair, KeyError> {
    let io = |action| {
        move |source| KeyError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    remove_leftovers(path);
    match std::fs::read(path) {
        Ok(bytes) if !bytes.is_empty() => {
            return Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::NotAKey {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
        Ok(_) => tracing::warn!(path = %path.display(), "empty node key replaced"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read")(e)),
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| io("encode")(std::io::Error::other(e)))?;
    durable::write_atomic_mode(path, &bytes, 0o600, CRASH_POINTS).map_err(io("write"))?;
    Ok(key)
}

/// Removes temp files of key writes that a crash interrupted
/// (`.node.key.PID.tmp`): each may hold a secret key, and none is used.
fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&prefix) && n.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn first_start_writes_a_private_key_that_later_starts_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let made = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = load_or_create(&path).unwrap();
        assert_eq!(made.public(), read.public());
    }

    #[test]
    fn leftover_temp_files_are_removed_and_do_not_stop_a_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let own = durable::temp_path(&path);
        let other = dir.path().join(".node.key.1.tmp");
        for leftover in [&own, &other] {
            std::fs::write(leftover, b"half a key").unwrap();
            std::fs::set_permissions(leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let key = load_or_create(&path).unwrap();
        assert!(!own.exists() && !other.exists());
        assert_eq!(load_or_create(&path).unwrap().public(), key.public());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_empty_key_is_replaced_and_a_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, b"").unwrap();
        let key = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap().public(), key.public());

        std::fs::write(&path, b"garbage").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyError::NotAKey { .. }), "{err}");
        assert!(err.to_string().contains("delete it"), "{err}");
    }
}
