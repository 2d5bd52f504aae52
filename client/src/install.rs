//! Materialising bundles and switching the active one — the one place
//! that says in which order the device's writes reach the disk.
//!
//! Install (a bundle into its own directory, `STORE/device/bundles/<id>`):
//! 1. every file is hard-linked from the store's blob (or copied and
//!    `fsync`ed where links are impossible) into a fresh temp directory;
//! 2. the new directory entries are made durable (the blobs' bytes
//!    already are: the store synced them): each new directory synced, or
//!    one file-system sync for a bundle of many directories;
//! 3. the temp directory is renamed to its final name, and the parent
//!    directory synced. A bundle directory therefore only ever exists
//!    whole; it is never written again.
//!
//! Switch: the active bundle is named by the device state file
//! ([`crate::state`]), replaced by write-temp, `fsync`, rename, `fsync`
//! of the directory. A crash before the rename leaves the old bundle
//! active, after it the new one: never a mix, since both directories are
//! whole and immutable.

use std::path::{Path, PathBuf};

use lanseed_protocol::store::{StoreError, durable};
use lanseed_protocol::{BundleId, Store};

/// Why a bundle could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The store lacks part of the bundle.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the bundle directory failed.
    #[error("cannot install into {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Where bundle `id` is materialised in the store at `root`.
pub fn bundle_dir(root: &Path, id: &str) -> PathBuf {
    root.join("device").join("bundles").join(id)
}

/// Materialises bundle `id` from `store` (see the module docs); returns
/// its directory. A bundle already materialised is left as it is.
pub fn materialize(store: &Store, id: &BundleId) -> Result<PathBuf, InstallError> {
    let root = store.root();
    let dest = bundle_dir(root, &id.to_string());
    if dest.is_dir() {
        return Ok(dest);
    }
    // Held until the directory is whole: a collection of the store waits,
    // so no blob is deleted between the check and its link.
    let _guard = store.read_guard()?;
    let manifest = store.check_complete(id)?;
    let parent = dest.parent().expect("bundle dirs have a parent").to_owned();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InstallError::Io { path, source }
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = parent.join(format!(".tmp-{id}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    // Every directory made, so that their new entries can be synced.
    let mut dirs: std::collections::BTreeSet<PathBuf> = [tmp.clone()].into();
    for f in manifest.files() {
        let mut target = tmp.clone();
        target.extend(f.path.components());
        if let Some(dir) = target.parent()
            && !dirs.contains(dir)
        {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            for d in dir.ancestors().take_while(|d| *d != tmp) {
                dirs.insert(d.to_owned());
            }
        }
        let blob = store.blob_path(&f.blake3);
        lanseed_protocol::crashpoint::hit("materialise: file");
        if std::fs::hard_link(&blob, &target).is_err() {
            std::fs::copy(&blob, &target).map_err(io(&target))?;
            std::fs::File::open(&target)
                .and_then(|file| file.sync_all())
                .map_err(io(&target))?;
        }
    }
    // The links are new names in those directories (a copied file's
    // bytes were synced above): syncing the directories makes them durable,
    // and for a small bundle costs less than a sync of the file system.
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    durable::sync_names(root, &dirs).map_err(io(&tmp))?;
    lanseed_protocol::crashpoint::hit("materialise: synced");
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    durable::sync_dir(&parent).map_err(io(&parent))?;
    lanseed_protocol::crashpoint::hit("materialise: renamed");
    Ok(dest)
}

/// Removes a materialised bundle and leftovers of interrupted installs.
pub fn remove(root: &Path, id: &str) -> std::io::Result<()> {
    let dir = bundle_dir(root, id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The bundle ids materialised in the store at `root`.
pub fn materialized(root: &Path) -> std::io::Result<Vec<String>> {
    let dir = root.join("device").join("bundles");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.parse::<BundleId>().is_ok() {
            ids.push(name);
        }
    }
    Ok(ids)
}

/// Removes temp directories of installs a crash interrupted.
pub fn clean_leftovers(root: &Path) -> std::io::Result<()> {
    let dir = root.join("device").join("bundles");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}
