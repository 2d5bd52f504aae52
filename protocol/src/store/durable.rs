//! Durability: the one place that says in which order the store's writes
//! reach the disk.
//!
//! The order, for one batch (a pack, an import, a fetched bundle):
//!
//! 1. Blobs and the manifest are written to fresh files under `tmp/`.
//! 2. [`sync_data`]: their bytes are made durable: one `fsync` each for a
//!    batch of at most [`SYNC_ONE_BY_ONE`] files, else one file-system sync
//!    (`syncfs` on Linux: one call for the batch instead of one `fsync`
//!    per small file; elsewhere, one `fsync` per file).
//! 3. Each staged file is renamed to its content address. A name under
//!    `blobs/` or `manifests/` therefore only ever points at complete,
//!    durable bytes that match it.
//! 4. [`sync_names`]: a second sync makes the renames durable.
//! 5. The index, rewritten with the new release, goes through
//!    [`write_atomic`]: temp file, `fsync`, rename over the old index,
//!    `fsync` of the directory. This is the commit point: before it the
//!    release is not in the store, after it all its pieces are.
//!
//! The guarantees below hold on Linux, the platform lanseed nodes and
//! kiosks run on. Elsewhere each file is `fsync`ed instead of one `syncfs`,
//! and directory syncs are best effort (macOS would need `F_FULLFSYNC`,
//! Windows cannot open a directory for syncing).
//!
//! A process crash (SIGKILL) loses nothing already written; a power cut can
//! lose steps not yet synced, and every step above is harmless to lose or
//! redo: leftovers in `tmp/` are never read, and an orphan blob is garbage
//! that `lanseed store gc` removes.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::crashpoint;

/// Before step 1 is over: asks the kernel to start writing `len` bytes of
/// `file` at `offset` to the disk now, without waiting. Data that trickles
/// in (a fetch writing pieces as they arrive) is then mostly on the disk
/// by the time [`sync_data`] runs, instead of all of it being written
/// while the commit waits. A hint: errors are ignored, and elsewhere than
/// Linux it does nothing.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    start_writeback_linux(file, offset, len);
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback_linux(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain integers and a file descriptor that `file` keeps open
    // for the whole call; no memory is passed to the kernel.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// At most this many files or directories are synced one by one; more
/// take one `syncfs` of the whole file system. A small batch (the one file
/// a developer saved, a fetch of one changed file) then waits only for its
/// own bytes, not for whatever else the file system has to write.
pub const SYNC_ONE_BY_ONE: usize = 16;

/// Step 2: makes the data of `staged` files durable (an empty list: the
/// whole file system).
pub fn sync_data(root: &Path, staged: &[&Path]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if staged.is_empty() || staged.len() > SYNC_ONE_BY_ONE {
        rustix::fs::syncfs(File::open(root)?)?;
        return Ok(());
    }
    let _ = root;
    for p in staged {
        File::open(p)?.sync_all()?;
    }
    Ok(())
}

/// Step 4: makes new names in `dirs` durable (an empty list: the whole
/// file system).
pub fn sync_names(root: &Path, dirs: &[&Path]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if dirs.is_empty() || dirs.len() > SYNC_ONE_BY_ONE {
        rustix::fs::syncfs(File::open(root)?)?;
        return Ok(());
    }
    let _ = root;
    for d in dirs {
        sync_dir(d)?;
    }
    Ok(())
}

/// Makes a directory's entries durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically and durably: temp file in the
/// same directory, `fsync`, rename, `fsync` of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_labeled(
        path,
        bytes,
        [
            "commit: temp written",
            "commit: temp synced",
            "commit: renamed",
            "commit: directory synced",
        ],
    )
}

/// [`write_atomic`], naming its four crash points after the caller's
/// phase (the device updater's switch, trial, rollback...).
pub fn write_atomic_labeled(
    path: &Path,
    bytes: &[u8],
    labels: [&'static str; 4],
) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o666, labels)
}

/// The temp file [`write_atomic_mode`] writes before renaming it to
/// `path`: `.NAME.PID.tmp` next to it (a leftover of a crash is
/// overwritten by a later write of the same process id, and ignored
/// otherwise).
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// [`write_atomic_labeled`] with the temp file (and so the result)
/// created with `mode` (less the umask, on Unix): 0o600 for secrets,
/// which are then never readable by others, not even for an instant.
pub fn write_atomic_mode(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    labels: [&'static str; 4],
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp)?;
    // A leftover of the same name may predate this write with a wider mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if f.metadata()?.permissions().mode() & 0o777 & !mode != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
    }
    f.write_all(bytes)?;
    crashpoint::hit(labels[0]);
    f.sync_all()?;
    drop(f);
    crashpoint::hit(labels[1]);
    std::fs::rename(&tmp, path)?;
    crashpoint::hit(labels[2]);
    sync_dir(dir)?;
    crashpoint::hit(labels[3]);
    Ok(())
}
