//! Materialising bundles and switching the active one — the one place
//! that says in which order the device's writes reach the disk.
//!
//! Install (a bundle into its own directory, `STORE/device/bundles/<id>`):
//! 1. every file is hard-linked from the store's blob (or copied and
//!    `fsync`ed where links are impossible) into a fresh temp directory;
//! 2. the temp directory is renamed to its final name. A bundle directory
//!    therefore only ever appears whole to a running process; it is never
//!    written again.
//!
//! The directory's entries are not synced: the bytes they name already
//! are (the store synced its blobs, and copies are synced above), and
//! whatever names the directory is. After a power cut the file system may
//! have lost the newest entries, so [`repair`] runs when the updater opens:
//! a bundle the device state names whose directory is missing a file, or
//! is missing, is materialised again from the store and synced then. This
//! keeps one file-system sync (tens of milliseconds on a busy disk) out of
//! every install, which the dev loop feels on each save.
//!
//! Switch: the active bundle is named by the device state file
//! ([`crate::state`]), replaced by write-temp, `fsync`, rename, `fsync`
//! of the directory. A crash before the rename leaves the old bundle
//! active, after it the new one: never a mix, since both directories are
//! whole (or made whole at the next start) and immutable.

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
    for f in manifest.files() {
        let mut target = tmp.clone();
        target.extend(f.path.components());
        if let Some(dir) = target.parent()
            && !dir.is_dir()
        {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
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
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    lanseed_protocol::crashpoint::hit("materialise: renamed");
    Ok(dest)
}

/// Whether bundle `id`'s directory holds every file of its manifest, each
/// a regular file of the manifest's size (a crash can lose names, not the
/// bytes behind them: see the module docs).
pub fn is_whole(store: &Store, id: &BundleId) -> Result<bool, InstallError> {
    let dir = bundle_dir(store.root(), &id.to_string());
    if !dir.is_dir() {
        return Ok(false);
    }
    let manifest = store.read_manifest(id)?;
    Ok(manifest.files().iter().all(|f| {
        let mut path = dir.clone();
        path.extend(f.path.components());
        std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == f.size)
    }))
}

/// Makes bundle `id`'s directory whole again if a crash left it without
/// some of its names (see the module docs), and durable this time;
/// returns whether it had to. A bundle whose files the store no longer
/// holds is left as it is (an error).
pub fn repair(store: &Store, id: &BundleId) -> Result<bool, InstallError> {
    if is_whole(store, id)? {
        return Ok(false);
    }
    let root = store.root();
    let dir = bundle_dir(root, &id.to_string());
    store.check_complete(id)?;
    remove(root, &id.to_string()).map_err(|source| InstallError::Io {
        path: dir.clone(),
        source,
    })?;
    materialize(store, id)?;
    // One sync of the file system: every new name, whatever the count.
    durable::sync_names(root, &[]).map_err(|source| InstallError::Io { path: dir, source })?;
    Ok(true)
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
