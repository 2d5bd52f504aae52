//! The store: a directory of content-addressed blobs, manifests and signed
//! releases; the same format on a publisher, a seeder and a device.
//!
//! ```text
//! STORE/
//!   lanseed-store        format marker: "lanseed store 2"
//!   index                every release the store holds (see [`index`]);
//!                        the commit record: a release exists once it is here
//!   manifests/<bundle id>            canonical manifest bytes
//!   blobs/<2 hex>/<64 hex blake3>    file contents, each once across bundles
//!   tmp/                 staging of unfinished writes; never read
//!   partial/<bundle id>/ a node's fetch in progress: the manifest and the
//!                        blobs being filled piece by piece; every piece is
//!                        re-verified before reuse, so nothing there is
//!                        trusted (see the node's `fetch::partial`)
//!   index.lock, gc.lock  advisory locks (see [`batch`] and [`gc`])
//!   channels.json        channel settings (see [`channels`])
//!   cache/gateway/       what the Capgo gateway derives from bundles: zips
//!                        and Brotli variants, rebuilt when missing (see
//!                        [`cache`])
//! ```
//!
//! Writes go through a [`Batch`]: blobs and the manifest are staged in
//! `tmp/`, made durable with one file-system sync, renamed into place, synced
//! again, and only then is the release added to the index by an atomic
//! rename. A crash at any instant leaves a store that opens, whose every
//! blob matches its hash, and that holds the whole new release or none of it.

pub mod batch;
pub mod cache;
pub mod channels;
pub mod durable;
pub mod gc;
pub mod index;
pub mod verify;

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

pub use batch::{Batch, CommitOutcome};
pub use gc::{GcOptions, GcReport};
pub use verify::{Problem, VerifyReport};

use crate::hash::{BundleId, Hash};
use crate::limits::MAX_MANIFEST_BYTES;
use crate::manifest::{Manifest, ManifestError};
use crate::release::{ReleaseError, SignedRelease};

const MARKER_FILE: &str = "lanseed-store";
const MARKER: &str = "lanseed store 2\n";

/// A store directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// What went wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory is not a store.
    #[error(
        "{0} is not a lanseed store (no lanseed-store marker file); create one with `lanseed pack --store {0}`"
    )]
    NotAStore(PathBuf),
    /// The directory is a store of another format version.
    #[error(
        "{path} is a store of an unknown format ({found:?}); it was written by another lanseed version"
    )]
    UnknownFormat {
        /// The store.
        path: PathBuf,
        /// The marker's content.
        found: String,
    },
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The index is damaged.
    #[error("the store index {path} is damaged ({reason}); run `lanseed store verify`")]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest is damaged.
    #[error("manifest {id} in the store is damaged: {reason}")]
    CorruptManifest {
        /// Which.
        id: BundleId,
        /// What is wrong.
        reason: String,
    },
    /// A manifest is missing.
    #[error("the store has no manifest for bundle {0}")]
    MissingManifest(BundleId),
    /// A blob that a release needs is missing.
    #[error("the store lacks file {path} ({hash}) of bundle {bundle}")]
    MissingBlob {
        /// The bundle.
        bundle: BundleId,
        /// The file's path in the bundle.
        path: String,
        /// Its hash.
        hash: Hash,
    },
    /// Another release already has this app, channel and sequence number.
    #[error(
        "the store already holds a different release of {app} on {channel} with sequence {seq}; pass a higher --seq"
    )]
    SeqConflict {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// Sequence number.
        seq: u64,
    },
    /// The index holds an invalid release.
    #[error("the store index holds an invalid release: {0}")]
    BadRelease(#[from] ReleaseError),
    /// A collection was asked to keep no release at all.
    #[error("keeping 0 releases would drop every release of the store; keep at least 1")]
    KeepNone,
    /// The index is full.
    #[error("the store holds {0} releases, the most one index may hold; run `lanseed store gc`")]
    IndexFull(usize),
}

impl StoreError {
    /// Wraps an I/O error with what was being done to which path.
    pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}

impl Store {
    /// Opens the store at `root`, creating it (and its parents) if the
    /// directory does not exist or is empty.
    pub fn create(root: &Path) -> Result<Store, StoreError> {
        if !root.join(MARKER_FILE).exists() && is_fresh(root)? {
            create_private_dir(root)?;
            for dir in ["blobs", "manifests", "tmp"] {
                let p = root.join(dir);
                std::fs::create_dir_all(&p).map_err(StoreError::io("cannot create", &p))?;
            }
            durable::write_atomic(&root.join(MARKER_FILE), MARKER.as_bytes())
                .map_err(StoreError::io("cannot write", &root.join(MARKER_FILE)))?;
        }
        Store::open(root)
    }

    /// Opens an existing store.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let marker = root.join(MARKER_FILE);
        let found = match std::fs::read_to_string(&marker) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::NotAStore(root.to_owned()));
            }
            Err(e) => return Err(StoreError::io("cannot read", &marker)(e)),
        };
        if found != MARKER {
            return Err(StoreError::UnknownFormat {
                path: root.to_owned(),
                found: found.chars().take(40).collect(),
            });
        }
        let store = Store {
            root: root.to_owned(),
        };
        // Directories a crash or a hand may have removed are made again; the
        // index decides what the store holds.
        for dir in ["blobs", "manifests", "tmp"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(StoreError::io("cannot create", &p))?;
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where fetches in progress keep their pieces.
    pub fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// Where the blob with `hash` lives.
    pub fn blob_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    /// Whether the blob with `hash` is present.
    pub fn has_blob(&self, hash: &Hash) -> bool {
        self.blob_path(hash).is_file()
    }

    /// Where the manifest of `id` lives.
    pub fn manifest_path(&self, id: &BundleId) -> PathBuf {
        self.root.join("manifests").join(id.to_string())
    }

    /// Reads the manifest of `id`, checking that its bytes hash to `id`.
    pub fn read_manifest(&self, id: &BundleId) -> Result<Manifest, StoreError> {
        let path = self.manifest_path(id);
        let bytes = match read_bounded(&path, MAX_MANIFEST_BYTES as u64) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::MissingManifest(*id));
            }
            Err(e) => return Err(StoreError::io("cannot read", &path)(e)),
        };
        if Hash::of(&bytes) != id.0 {
            return Err(StoreError::CorruptManifest {
                id: *id,
                reason: "its bytes do not hash to its id".into(),
            });
        }
        Manifest::from_bytes(&bytes).map_err(|e: ManifestError| StoreError::CorruptManifest {
            id: *id,
            reason: e.to_string(),
        })
    }

    /// Every release the store holds, in index order (oldest commit first).
    pub fn releases(&self) -> Result<Vec<SignedRelease>, StoreError> {
        index::read(&self.root)
    }

    /// The sequence number a new release of `app` on `channel` takes by
    /// default: max(highest held + 1, `now`), so a fresh store never
    /// restarts at 1.
    pub fn default_seq(&self, app: &str, channel: &str, now: u64) -> Result<u64, StoreError> {
        Ok(next_seq(&self.releases()?, app, channel, now))
    }

    /// Checks that the manifest of `id` and every blob it lists are present
    /// with the right size (not their hashes: see [`verify`]).
    pub fn check_complete(&self, id: &BundleId) -> Result<Manifest, StoreError> {
        let manifest = self.read_manifest(id)?;
        for f in manifest.files() {
            let present = std::fs::metadata(self.blob_path(&f.blake3))
                .map(|m| m.is_file() && m.len() == f.size)
                .unwrap_or(false);
            if !present {
                return Err(StoreError::MissingBlob {
                    bundle: *id,
                    path: f.path.to_string(),
                    hash: f.blake3,
                });
            }
        }
        Ok(manifest)
    }

    fn lock_file(&self, name: &str) -> Result<File, StoreError> {
        let path = self.root.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("cannot open lock file", &path))
    }
}

/// SPEC's default sequence number among `releases`: max(highest held for
/// `app` and `channel` + 1, `now`).
pub fn next_seq(releases: &[SignedRelease], app: &str, channel: &str, now: u64) -> u64 {
    let highest = releases
        .iter()
        .map(SignedRelease::release)
        .filter(|r| r.app == app && r.channel == channel)
        .map(|r| r.seq)
        .max();
    highest.map_or(now, |h| now.max(h.saturating_add(1)))
}

/// Creates `root` (and its missing parents) if it does not exist; `root`
/// itself with mode 0700 on Unix (the store holds the node's secret key,
/// and what a device installs). An existing directory keeps its mode.
fn create_private_dir(root: &Path) -> Result<(), StoreError> {
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(StoreError::io("cannot create", parent))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && root.is_dir() => Ok(()),
        Err(e) => Err(StoreError::io("cannot create", root)(e)),
    }
}

/// Whether `root` is missing, empty, or holds only what an interrupted
/// [`Store::create`] leaves behind, so creating the store there is safe.
fn is_fresh(root: &Path) -> Result<bool, StoreError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::io("cannot read", root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(StoreError::io("cannot read", root))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = matches!(name.as_ref(), "blobs" | "manifests" | "tmp")
            || name.starts_with(".lanseed-store.");
        if !ours
            || (entry.path().is_dir()
                && std::fs::read_dir(entry.path()).map_or(true, |mut d| d.next().is_some()))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads a whole file, refusing one larger than `max` bytes before reading.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("file is {len} bytes, more than the limit of {max}"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "file grew while read",
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_new_store_directory_is_private_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("parent").join("store");
        Store::create(&new).unwrap();
        assert_eq!(mode(&new), 0o700);

        let existing = dir.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o750)).unwrap();
        Store::create(&existing).unwrap();
        assert_eq!(mode(&existing), 0o750);
    }
}
