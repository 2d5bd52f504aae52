//! The BLAKE3 of each served file, for its `ETag`.
//!
//! A file of an installed bundle has its hash in the bundle's manifest in
//! the store (checked when the bundle was fetched and installed); the
//! manifest is read once and its path → hash map kept for the
//! [`MANIFESTS`] most recently served bundles, so a request does not parse
//! a 20,000-file manifest. A file of the builtin bundle (a plain folder),
//! or one a manifest does not list, is hashed on its first request, on a
//! blocking thread, and its hash kept for the [`COMPUTED`] most recently
//! served files, keyed by path, length and modification time (so an edited
//! file is hashed again). Concurrent first requests wait for one read.

use std::collections::HashMap;
use std::hash::Hash as StdHash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lanseed_protocol::{BundleId, Hash, Store};
use tokio::sync::OnceCell;

/// How many bundles' path → hash maps are kept.
pub const MANIFESTS: usize = 4;
/// How many hashes of files no manifest lists are kept.
pub const COMPUTED: usize = 4096;

/// A map that keeps its `cap` most recently used entries.
struct Recent<K, V> {
    cap: usize,
    tick: u64,
    entries: HashMap<K, (V, u64)>,
}

impl<K: StdHash + Eq + Clone, V: Clone> Recent<K, V> {
    fn new(cap: usize) -> Self {
        Recent {
            cap: cap.max(1),
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The value of `key`, made by `make` when it is missing (evicting the
    /// least recently used entry when full).
    fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> V {
        self.tick += 1;
        if let Some((v, used)) = self.entries.get_mut(key) {
            *used = self.tick;
            return v.clone();
        }
        if self.entries.len() >= self.cap
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        let v = make();
        self.entries.insert(key.clone(), (v.clone(), self.tick));
        v
    }
}

type PathHashes = Option<Arc<HashMap<Box<str>, Hash>>>;
type FileKey = (PathBuf, u64, Option<SystemTime>);

/// The hashes of served files (see the module docs).
pub struct Hashes {
    manifests: Mutex<Recent<String, Arc<OnceCell<PathHashes>>>>,
    computed: Mutex<Recent<FileKey, Arc<OnceCell<Option<Hash>>>>>,
}

impl Default for Hashes {
    fn default() -> Self {
        Hashes {
            manifests: Mutex::new(Recent::new(MANIFESTS)),
            computed: Mutex::new(Recent::new(COMPUTED)),
        }
    }
}

impl Hashes {
    /// The BLAKE3 of file `rel` (a bundle path) of bundle `bundle`, found
    /// at `file` with metadata `meta`; `store_root` holds the manifests.
    /// `None` when it cannot be read.
    pub async fn of(
        &self,
        store_root: &Path,
        bundle: &str,
        rel: &str,
        file: &Path,
        meta: &std::fs::Metadata,
    ) -> Option<Hash> {
        if let Ok(id) = bundle.parse::<BundleId>() {
            let listed = self.manifest(store_root, id).await;
            if let Some(h) = listed.as_ref().and_then(|m| m.get(rel)) {
                return Some(*h);
            }
        }
        self.computed(file, meta).await
    }

    /// Reads bundle `id`'s manifest ahead of its first request (the agent
    /// just made it current: the page's reload comes next).
    pub async fn warm(&self, store_root: &Path, id: BundleId) {
        self.manifest(store_root, id).await;
    }

    async fn manifest(&self, store_root: &Path, id: BundleId) -> PathHashes {
        let cell = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(&id.to_string(), Default::default);
        let root = store_root.to_owned();
        cell.get_or_init(|| async move {
            let read = tokio::task::spawn_blocking(move || {
                let manifest = Store::open(&root)?.read_manifest(&id)?;
                let map: HashMap<Box<str>, Hash> = manifest
                    .files()
                    .iter()
                    .map(|f| (Box::from(f.path.as_str()), f.blake3))
                    .collect();
                anyhow::Ok(map)
            })
            .await;
            match read {
                Ok(Ok(map)) => Some(Arc::new(map)),
                Ok(Err(e)) => {
                    tracing::warn!(bundle = %id, "no file hashes from the manifest: {e:#}");
                    None
                }
                Err(e) => {
                    tracing::warn!(bundle = %id, "reading the manifest failed: {e}");
                    None
                }
            }
        })
        .await
        .clone()
    }

    async fn computed(&self, file: &Path, meta: &std::fs::Metadata) -> Option<Hash> {
        let key = (file.to_owned(), meta.len(), meta.modified().ok());
        let cell = self
            .computed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(&key, Default::default);
        let path = file.to_owned();
        *cell
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || hash_file(&path))
                    .await
                    .ok()
                    .and_then(|r| {
                        r.map_err(|e| tracing::warn!("cannot hash a served file: {e}"))
                            .ok()
                    })
            })
            .await
    }
}

/// The BLAKE3 of the file at `path`, read in pieces.
fn hash_file(path: &Path) -> std::io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_most_recently_used() {
        let mut r: Recent<&str, u32> = Recent::new(2);
        let mut made = 0;
        let mut get = |r: &mut Recent<&str, u32>, k| {
            r.get_or_insert_with(&k, || {
                made += 1;
                made
            })
        };
        assert_eq!(get(&mut r, "a"), 1);
        assert_eq!(get(&mut r, "b"), 2);
        assert_eq!(get(&mut r, "a"), 1); // a is now newer than b
        assert_eq!(get(&mut r, "c"), 3); // evicts b
        assert_eq!(get(&mut r, "a"), 1);
        assert_eq!(get(&mut r, "b"), 4); // b was evicted, made again
        assert_eq!(r.entries.len(), 2);
    }

    #[tokio::test]
    async fn unlisted_files_are_hashed_and_rehashed_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let hashes = Hashes::default();
        let meta = std::fs::metadata(&p).unwrap();
        let got = hashes.of(dir.path(), "builtin", "a.bin", &p, &meta).await;
        assert_eq!(got, Some(Hash::of(&bytes)));
        // Cached: the same key answers without reading the (now changed) file.
        std::fs::write(&p, b"changed").unwrap();
        let again = hashes.of(dir.path(), "builtin", "a.bin", &p, &meta).await;
        assert_eq!(again, Some(Hash::of(&bytes)));
        // A new length is a new key.
        let meta = std::fs::metadata(&p).unwrap();
        let changed = hashes.of(dir.path(), "builtin", "a.bin", &p, &meta).await;
        assert_eq!(changed, Some(Hash::of(b"changed")));
    }

    #[tokio::test]
    async fn listed_files_take_their_hash_from_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        std::fs::create_dir_all(build.join("assets")).unwrap();
        std::fs::write(build.join("index.html"), b"<h1>hi</h1>").unwrap();
        std::fs::write(build.join("assets/app.js"), b"app").unwrap();
        let manifest = lanseed_protocol::pack::manifest_of_dir(&build, &|_| {}).unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        std::fs::write(store.manifest_path(&manifest.id()), manifest.to_bytes()).unwrap();
        // The served copy differs from what the manifest lists: the
        // manifest answers, the file is not read.
        let served = build.join("assets/app.js");
        std::fs::write(&served, b"edited").unwrap();
        let meta = std::fs::metadata(&served).unwrap();
        let hashes = Hashes::default();
        let id = manifest.id().to_string();
        let got = hashes
            .of(store.root(), &id, "assets/app.js", &served, &meta)
            .await;
        assert_eq!(got, Some(Hash::of(b"app")));
        // A file the manifest does not list is hashed.
        std::fs::write(build.join("extra.txt"), b"extra").unwrap();
        let extra = build.join("extra.txt");
        let meta = std::fs::metadata(&extra).unwrap();
        let got = hashes
            .of(store.root(), &id, "extra.txt", &extra, &meta)
            .await;
        assert_eq!(got, Some(Hash::of(b"extra")));
    }

    #[tokio::test]
    async fn a_bundle_without_a_readable_manifest_falls_back_to_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.js");
        std::fs::write(&p, b"x").unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        let id = Hash::of(b"no such manifest").to_hex();
        let got = Hashes::default()
            .of(dir.path(), &id, "x.js", &p, &meta)
            .await;
        assert_eq!(got, Some(Hash::of(b"x")));
    }
}
