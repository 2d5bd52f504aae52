//! The local control sockets of a node (`control.sock`, for `lanseed
//! status`) and of a device agent (`device.sock`, for `lanseed device
//! list | reset | ...`): where they live, how they are bound, and who may
//! use them. The requests they carry are the node's and the device's own.
//!
//! Where: a directory per store under the runtime directory, named by the
//! first 16 hex digits of the BLAKE3 hash of the store's canonical path:
//!
//! ```text
//! /run/lanseed/<hash>/control.sock        a node running as root
//! $XDG_RUNTIME_DIR/lanseed/<hash>/...     as another user
//! /tmp/lanseed-<uid>/<hash>/...           when XDG_RUNTIME_DIR is unset
//! ```
//!
//! so a client finds the socket from the store's path alone, without
//! reading the store, and the path stays short (a Unix socket path has at
//! most 107 bytes) however long the store's path is.
//!
//! Who: the socket is mode 0600 in a directory of mode 0700, and every
//! connection's peer credentials are checked ([`access`]): the server's
//! user and root are served; with `--control-group GROUP` the directory is
//! 0750 and the socket 0660, both of that group, and its members are
//! served too. Anyone else gets one JSON line `{"error": ...}` and is
//! closed.
//!
//! A socket nobody answers on is stale (its server died) and is replaced;
//! one that answers belongs to a server still running, and binding fails
//! saying so.

pub mod access;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub use self::access::Access;

/// The node's socket (`lanseed status`).
pub const NODE: &str = "control.sock";
/// The device agent's socket (`lanseed device ...`).
pub const DEVICE: &str = "device.sock";

/// The longest path a Unix socket can be bound at (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What went wrong with a control socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another server answers on the socket.
    #[error(
        "another lanseed {what} is running on store {store} (its control socket {path} answers); stop it first or use another --store"
    )]
    Running {
        /// `node` or `device agent`.
        what: &'static str,
        /// The store.
        store: PathBuf,
        /// The socket.
        path: PathBuf,
    },
    /// The socket's directory is not safe to use.
    #[error(
        "{path} is not a safe place for control sockets ({reason}); remove it or set XDG_RUNTIME_DIR to a private directory"
    )]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The process on the socket is run by a user the client does not
    /// trust with its requests.
    #[error(
        "the control socket {path} is served by user {uid}, not by you, root or the store's owner; not talking to it"
    )]
    Impostor {
        /// The socket.
        path: PathBuf,
        /// The serving process's user.
        uid: u32,
    },
    /// The socket path is too long for a Unix socket.
    #[error(
        "the control socket path {0} is longer than the 107 bytes a Unix socket allows; set XDG_RUNTIME_DIR to a shorter directory"
    )]
    TooLong(PathBuf),
    /// A file system step failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// No server listens for this store.
    #[error(
        "no lanseed {what} is running on store {store} (no control socket at {path}); start one with `lanseed {command} --store {store}`"
    )]
    NotRunning {
        /// `node` or `device agent`.
        what: &'static str,
        /// The command that starts one.
        command: &'static str,
        /// The store.
        store: PathBuf,
        /// Where the socket was looked for.
        path: PathBuf,
    },
    /// The client may not open the socket.
    #[error(
        "permission denied on the control socket {0}: only the node's user, root, and members of its --control-group may use it"
    )]
    Denied(PathBuf),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_owned();
    move |source| SocketError::Io {
        action,
        path,
        source,
    }
}

/// The effective uid of this process.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Where the control sockets of processes running as `uid` live: see the
/// module's doc.
fn runtime_base(uid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/run/lanseed");
    }
    match xdg_runtime_dir {
        Some(x) if x.is_absolute() => x.join("lanseed"),
        _ => PathBuf::from(format!("/tmp/lanseed-{uid}")),
    }
}

fn xdg_runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
}

/// The store's path as the hash sees it: canonical, or, when that fails
/// (a client that cannot traverse it), absolute and lexically normalised.
fn store_key(store: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(store) {
        return c;
    }
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(store))
        .unwrap_or_else(|_| store.to_owned());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The name of the store's socket directory: 16 hex digits of BLAKE3 of
/// its path.
fn store_hash(store: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let hash = blake3::hash(store_key(store).as_os_str().as_bytes());
    hash.to_hex()[..16].to_owned()
}

/// Where a server of this process's user binds its socket `name` (e.g.
/// [`NODE`]) for `store`.
pub fn socket_path(store: &Path, name: &str) -> PathBuf {
    runtime_base(euid(), xdg_runtime_dir().as_deref())
        .join(store_hash(store))
        .join(name)
}

/// Where a client looks for the socket `name` of `store`, first match
/// wins: its own user's place, then root's, then that of the store's
/// owner (a node run by another user for a group).
fn candidates(store: &Path, name: &str) -> Vec<PathBuf> {
    let me = euid();
    let hash = store_hash(store);
    let mut bases = vec![runtime_base(me, xdg_runtime_dir().as_deref())];
    bases.push(runtime_base(0, None));
    if let Ok(owner) = std::fs::metadata(store).map(|m| m.uid())
        && owner != me
    {
        let theirs = PathBuf::from(format!("/run/user/{owner}"));
        bases.push(runtime_base(owner, Some(&theirs)));
        bases.push(runtime_base(owner, None));
    }
    bases.dedup();
    bases
        .into_iter()
        .map(|b| b.join(&hash).join(name))
        .collect()
}

/// A bound control socket; the socket file goes when it is dropped.
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    access: Access,
    me: u32,
}

impl ControlListener {
    /// Binds the socket `name` of `store` for a `what` (`node`, `device
    /// agent`) with `access`.
    pub async fn bind(
        store: &Path,
        name: &str,
        what: &'static str,
        access: Access,
    ) -> Result<ControlListener, SocketError> {
        let path = socket_path(store, name);
        let dir = path.parent().unwrap_or(Path::new("/"));
        prepare_dir(dir, access)?;
        bind_at(&path, store, what, access).await
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection of a peer allowed to use the socket; others are
    /// answered with a one-line JSON error and closed, off this call.
    pub async fn accept(&self) -> std::io::Result<UnixStream> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let cred = stream.peer_cred().ok();
            if cred
                .as_ref()
                .is_some_and(|c| self.access.allows(self.me, c))
            {
                return Ok(stream);
            }
            let line = serde_json::json!({ "error": self.access.refusal(self.me, cred.as_ref()) });
            tokio::spawn(refuse(stream, line.to_string()));
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Empty once both sockets of a device agent are gone.
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Reads the refused peer's request (so it is not cut off mid-write),
/// briefly and bounded, then answers `line` and closes.
async fn refuse(stream: UnixStream, line: String) {
    let (read, mut write) = stream.into_split();
    let mut request = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        BufReader::new(read.take(64 << 10)).read_line(&mut request),
    )
    .await;
    let _ = write.write_all(format!("{line}\n").as_bytes()).await;
}

/// Makes the socket's directory (and the runtime base above it) and gives
/// it the owner, group and mode `access` calls for.
fn prepare_dir(dir: &Path, access: Access) -> Result<(), SocketError> {
    let me = euid();
    if let Some(base) = dir.parent() {
        // Traversable by all, so that a group can reach its store's
        // directory; writable by its owner only.
        make_dir(base, 0o755)?;
        check_owned(base, me, true)?;
    }
    make_dir(dir, 0o700)?;
    check_owned(dir, me, false)?;
    let (gid, mode) = match access.group {
        Some(g) => (g, 0o750),
        None => (rustix::process::getegid().as_raw(), 0o700),
    };
    std::os::unix::fs::chown(dir, None, Some(gid)).map_err(io("set the group of", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of", dir))
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), SocketError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create", dir)(e)),
    }
}

/// Refuses a directory that another user owns, that is a symbolic link,
/// or (`shared`) that others may write to.
fn check_owned(dir: &Path, me: u32, shared: bool) -> Result<(), SocketError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io("inspect", dir))?;
    let unsafe_because = |reason: String| SocketError::Unsafe {
        path: dir.to_owned(),
        reason,
    };
    if !meta.is_dir() {
        return Err(unsafe_because("not a directory".into()));
    }
    if meta.uid() != me {
        return Err(unsafe_because(format!(
            "owned by uid {}, not {me}",
            meta.uid()
        )));
    }
    if shared && meta.mode() & 0o022 != 0 {
        return Err(unsafe_because(format!(
            "mode {:o}: others may write to it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// Binds `path` (in a directory [`prepare_dir`] made), replacing a stale
/// socket and refusing a live one.
async fn bind_at(
    path: &Path,
    store: &Path,
    what: &'static str,
    access: Access,
) -> Result<ControlListener, SocketError> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SocketError::TooLong(path.to_owned()));
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::Running {
                what,
                store: store.to_owned(),
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io("remove the stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io("bind the control socket", path))?;
    let listener = ControlListener {
        listener,
        path: path.to_owned(),
        access,
        me: euid(),
    };
    let mode = match access.group {
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g)).map_err(io("set the group of", path))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of", path))?;
    Ok(listener)
}

/// Connects to the socket `name` of the server running on `store`; `what`
/// and `command` name that server in errors (`node`, `seed`).
pub async fn connect(
    store: &Path,
    name: &str,
    what: &'static str,
    command: &'static str,
) -> Result<UnixStream, SocketError> {
    let all = candidates(store, name);
    let mut denied = None;
    let mut found = None;
    for p in &all {
        match std::fs::symlink_metadata(p) {
            Ok(_) => {
                found = Some(p);
                break;
            }
            // A directory kept from us: a socket may well be in there.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied.get_or_insert(p);
            }
            Err(_) => {}
        }
    }
    let found = match (found, denied) {
        (Some(p), _) => p,
        (None, Some(p)) => return Err(SocketError::Denied(p.clone())),
        (None, None) => &all[0],
    };
    let stream = UnixStream::connect(found)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => SocketError::Denied(found.clone()),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                SocketError::NotRunning {
                    what,
                    command,
                    store: store.to_owned(),
                    path: found.clone(),
                }
            }
            _ => io("connect to", found)(e),
        })?;
    // Whoever could make the directory could serve a socket in it: talk
    // only to a server run by this user, root, or the store's owner.
    let uid = stream
        .peer_cred()
        .map_err(io("read the credentials of", found))?
        .uid();
    let owner = std::fs::metadata(store).map(|m| m.uid()).ok();
    if uid != euid() && uid != 0 && Some(uid) != owner {
        return Err(SocketError::Impostor {
            path: found.clone(),
            uid,
        });
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_short_and_the_same_for_every_spelling_of_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a".repeat(120)).join("b".repeat(120));
        std::fs::create_dir_all(&deep).unwrap();
        let path = socket_path(&deep, NODE);
        assert!(path.as_os_str().len() <= 80, "{}", path.display());
        let other = deep.join("..").join("b".repeat(120)).join(".");
        assert_eq!(socket_path(&other, NODE), path);
        assert_ne!(socket_path(dir.path(), NODE), path);
        assert_eq!(socket_path(&deep, DEVICE).parent(), path.parent());
    }

    #[test]
    fn a_store_that_cannot_be_resolved_is_normalised_lexically() {
        let missing = Path::new("/no/such/./store/../store");
        assert_eq!(store_key(missing), Path::new("/no/such/store"));
        assert_eq!(
            store_hash(missing),
            store_hash(Path::new("/no/such/store/"))
        );
    }

    #[test]
    fn runtime_bases_follow_the_user() {
        assert_eq!(runtime_base(0, None), Path::new("/run/lanseed"));
        assert_eq!(
            runtime_base(0, Some(Path::new("/run/user/0"))),
            Path::new("/run/lanseed")
        );
        assert_eq!(
            runtime_base(1000, Some(Path::new("/run/user/1000"))),
            Path::new("/run/user/1000/lanseed")
        );
        assert_eq!(runtime_base(1000, None), Path::new("/tmp/lanseed-1000"));
        assert_eq!(
            runtime_base(1000, Some(Path::new("relative"))),
            Path::new("/tmp/lanseed-1000")
        );
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sockets = dir.path().join("s");
        prepare_dir(&sockets, Access::default()).unwrap();
        let mode = std::fs::metadata(&sockets).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let path = sockets.join(NODE);
        // A socket whose server died: bound, then its listener dropped
        // without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let store = dir.path().join("store");
        let live = bind_at(&path, &store, "node", Access::default())
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let err = bind_at(&path, &store, "node", Access::default())
            .await
            .err()
            .expect("a live socket is not replaced");
        assert!(matches!(err, SocketError::Running { .. }), "{err}");
        assert!(err.to_string().contains("another lanseed node is running"));

        // The owner is served.
        let client = UnixStream::connect(&path).await.unwrap();
        let served = live.accept().await.unwrap();
        drop((client, served));
        drop(live);
        assert!(!path.exists(), "the socket goes with its listener");
    }

    #[test]
    fn a_socket_directory_owned_by_someone_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(euid() + 1), None).unwrap_or(());
        if std::fs::metadata(&theirs).unwrap().uid() == euid() {
            return; // not root: cannot give a directory away
        }
        let err = prepare_dir(&theirs.join("s"), Access::default()).unwrap_err();
        assert!(matches!(err, SocketError::Unsafe { .. }), "{err}");
    }

    #[test]
    fn too_long_a_socket_path_is_a_clear_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let long = PathBuf::from("/tmp").join("x".repeat(120)).join(NODE);
        let err = rt
            .block_on(bind_at(&long, Path::new("/s"), "node", Access::default()))
            .err()
            .unwrap();
        assert!(matches!(err, SocketError::TooLong(_)), "{err}");
        assert!(err.to_string().contains("XDG_RUNTIME_DIR"), "{err}");
    }
}
