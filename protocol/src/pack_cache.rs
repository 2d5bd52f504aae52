//! Packing the same build folder again and again (`lanseed dev`): only
//! files whose size, modification time or inode changed since the last
//! pack are read and hashed again; the others keep their digest, as long
//! as the store still holds their blob.
//!
//! A build tool may still be writing while a pack runs. Every file hashed
//! is looked at again afterwards: if its size, time or inode moved, the
//! pack fails with [`PackError::Changed`] and nothing is committed, so a
//! half-written file is never published.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use crate::keys::SecretKey;
use crate::manifest::FileEntry;
use crate::pack::{PackError, PackOptions, Packed, Source, digest_all, finish, walk};
use crate::path::BundlePath;
use crate::store::Store;

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    modified: SystemTime,
    inode: u64,
    device: u64,
}

fn stamp(path: &Path) -> Result<Stamp, PackError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|source| PackError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Stamp {
        size: m.len(),
        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        inode: m.ino(),
        device: m.dev(),
    })
}

/// Digests of the last pack, by bundle path.
#[derive(Debug, Default)]
pub struct PackCache {
    files: HashMap<BundlePath, (Stamp, FileEntry)>,
}

/// A pack through the cache.
#[derive(Debug)]
pub struct CachedPack {
    /// What was packed.
    pub packed: Packed,
    /// Files read and hashed.
    pub hashed: usize,
    /// Their bytes.
    pub hashed_bytes: u64,
    /// Files whose digest was kept.
    pub reused: usize,
}

impl PackCache {
    /// Packs `dir` into `store` like [`crate::pack::pack_dir`], hashing
    /// only what changed since the last call.
    pub fn pack(
        &mut self,
        store: &Store,
        dir: &Path,
        opts: &PackOptions,
        key: &SecretKey,
    ) -> Result<CachedPack, PackError> {
        let sources = walk(dir)?;
        // Held from here to the commit: no collection removes a blob a
        // kept digest names.
        let batch = store.begin()?;
        let mut entries: Vec<Option<FileEntry>> = Vec::with_capacity(sources.len());
        let mut to_hash: Vec<(usize, Stamp)> = Vec::new();
        for (i, src) in sources.iter().enumerate() {
            let now = stamp(&src.file)?;
            match self.files.get(&src.path) {
                Some((was, entry)) if *was == now && store.has_blob(&entry.blake3) => {
                    entries.push(Some(entry.clone()));
                }
                _ => {
                    entries.push(None);
                    to_hash.push((i, now));
                }
            }
        }
        let reused = sources.len() - to_hash.len();
        let picked: Vec<Source> = to_hash
            .iter()
            .map(|(i, _)| Source {
                path: sources[*i].path.clone(),
                file: sources[*i].file.clone(),
            })
            .collect();
        let hashed = digest_all(&picked, Some(&batch), &|_| {})?;
        let mut hashed_bytes = 0;
        for ((i, before), entry) in to_hash.iter().zip(hashed) {
            let after = stamp(&sources[*i].file)?;
            if after != *before || after.size != entry.size {
                return Err(PackError::Changed(sources[*i].file.clone()));
            }
            hashed_bytes += entry.size;
            entries[*i] = Some(entry);
        }
        let files: Vec<FileEntry> = entries
            .into_iter()
            .map(|e| e.expect("every file has a digest"))
            .collect();
        let mut next = HashMap::with_capacity(files.len());
        for (src, entry) in sources.iter().zip(&files) {
            let s = stamp(&src.file)?;
            next.insert(src.path.clone(), (s, entry.clone()));
        }
        let packed = finish(batch, files, opts, key)?;
        self.files = next;
        Ok(CachedPack {
            packed,
            hashed: to_hash.len(),
            hashed_bytes,
            reused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Rollout;

    fn opts() -> PackOptions {
        PackOptions {
            app: "com.example.kiosk".into(),
            channel: "dev".into(),
            version: "0.0.0-dev.1".into(),
            seq: None,
            created: 1_800_000_000,
            min_native_version: None,
            rollout: Rollout::FULL,
            expires: None,
            notes: None,
            capgo: None,
        }
    }

    #[test]
    fn only_changed_files_are_hashed_and_the_bundle_is_the_same_as_a_full_pack() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        std::fs::create_dir_all(build.join("assets")).unwrap();
        std::fs::write(build.join("index.html"), "<h1>1</h1>").unwrap();
        for i in 0..10 {
            std::fs::write(build.join(format!("assets/{i}.js")), format!("file {i}")).unwrap();
        }
        let store = Store::create(&dir.path().join("store")).unwrap();
        let key = SecretKey::from_seed(&[9; 32]);
        let mut cache = PackCache::default();
        let first = cache.pack(&store, &build, &opts(), &key).unwrap();
        assert_eq!((first.hashed, first.reused), (11, 0));
        std::fs::write(build.join("assets/3.js"), "changed, longer").unwrap();
        let second = cache.pack(&store, &build, &opts(), &key).unwrap();
        assert_eq!((second.hashed, second.reused), (1, 10));
        assert_eq!(second.hashed_bytes, 15);
        let full = crate::pack::manifest_of_dir(&build, &|_| {}).unwrap();
        assert_eq!(
            second.packed.manifest, full,
            "the same bundle as a full pack"
        );
        // A file removed and one added.
        std::fs::remove_file(build.join("assets/4.js")).unwrap();
        std::fs::write(build.join("assets/new.js"), "new").unwrap();
        let third = cache.pack(&store, &build, &opts(), &key).unwrap();
        assert_eq!((third.hashed, third.reused), (1, 10));
        assert_eq!(
            third.packed.manifest,
            crate::pack::manifest_of_dir(&build, &|_| {}).unwrap()
        );
    }

    #[test]
    fn a_kept_digest_whose_blob_the_store_lost_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("index.html"), "<h1>1</h1>").unwrap();
        let key = SecretKey::from_seed(&[9; 32]);
        let mut cache = PackCache::default();
        let store1 = Store::create(&dir.path().join("s1")).unwrap();
        cache.pack(&store1, &build, &opts(), &key).unwrap();
        let store2 = Store::create(&dir.path().join("s2")).unwrap();
        let again = cache.pack(&store2, &build, &opts(), &key).unwrap();
        assert_eq!(again.hashed, 1);
        assert!(
            store2
                .check_complete(&again.packed.release.release().bundle_id)
                .is_ok()
        );
    }
}
