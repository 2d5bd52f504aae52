//! Garbage collection: drop releases by a rule, then every manifest and
//! blob that no kept release needs, and leftovers of interrupted writes
//! (staging left in `tmp/`, and the pieces of fetches that are not running
//! in `partial/`).
//!
//! Two rules: [`Store::gc`] keeps the newest releases of each app and
//! channel (`lanseed store gc --keep N`); [`Store::gc_by`] keeps whatever
//! its caller's predicate says (the device agent's own rule). Both run the
//! same collection.
//!
//! GC takes `gc.lock` exclusively, so it waits for running batches (which
//! hold it shared) and none starts while it runs; everything under `tmp/`
//! is then a leftover of a dead process. The index is rewritten first
//! (atomically), files are deleted after: a crash in between leaves only
//! orphans, which the next run removes. A dry run changes no file of the
//! store, not even a lock file: it only counts what would go.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use crate::hash::{BundleId, Hash};
use crate::release::SignedRelease;

use super::verify::walk_two_levels;
use super::{Store, StoreError, index};

/// How much to keep.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Releases kept per app and channel, the highest sequence numbers; at
    /// least 1 ([`StoreError::KeepNone`] otherwise).
    pub keep: usize,
    /// Report what would go, change nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            keep: 3,
            dry_run: false,
        }
    }
}

/// What [`Store::gc`] removed (or would remove, in a dry run).
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Releases dropped from the index.
    pub dropped: Vec<SignedRelease>,
    /// Releases kept.
    pub kept: usize,
    /// Manifests deleted.
    pub manifests_removed: usize,
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Bytes of blobs (and of partial fetches) deleted.
    pub bytes_freed: u64,
    /// Leftovers of interrupted writes deleted.
    pub leftovers_removed: usize,
    /// Entries of the Capgo gateway's cache deleted (see [`super::cache`]).
    pub cache_removed: usize,
}

impl Store {
    /// Keeps the `opts.keep` newest releases (by sequence number) of each
    /// app and channel and deletes what no kept release needs.
    pub fn gc(&self, opts: GcOptions) -> Result<GcReport, StoreError> {
        if opts.keep == 0 {
            return Err(StoreError::KeepNone);
        }
        self.collect(|all| retain(all, opts.keep), opts.dry_run, true)
            .map(|r| r.expect("a waiting collection always runs"))
    }

    /// Keeps the releases for which `keep` is true and deletes what no kept
    /// release needs: the index is rewritten first, then manifests, blobs
    /// and leftovers go, as in [`Store::gc`]. `keep` sees the index as it
    /// is under the collection's locks.
    pub fn gc_by(
        &self,
        keep: impl Fn(&SignedRelease) -> bool,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        self.collect(|all| all.into_iter().partition(|r| keep(r)), dry_run, true)
            .map(|r| r.expect("a waiting collection always runs"))
    }

    /// [`Store::gc_by`] if no one holds the store's locks now (a fetch,
    /// a pack, a reader), `None` otherwise, at once: a caller that must
    /// not wait behind a long fetch (a device) tries again later.
    pub fn try_gc_by(
        &self,
        keep: impl Fn(&SignedRelease) -> bool,
    ) -> Result<Option<GcReport>, StoreError> {
        self.collect(|all| all.into_iter().partition(|r| keep(r)), false, false)
    }

    /// The collection: `split` divides the index into kept and dropped.
    fn collect(
        &self,
        split: impl FnOnce(Vec<SignedRelease>) -> (Vec<SignedRelease>, Vec<SignedRelease>),
        dry_run: bool,
        wait: bool,
    ) -> Result<Option<GcReport>, StoreError> {
        let Some(_gc_lock) = self.gc_lock("gc.lock", dry_run, wait)? else {
            return Ok(None);
        };
        let Some(_index_lock) = self.gc_lock("index.lock", dry_run, wait)? else {
            return Ok(None);
        };

        let (kept, dropped) = split(self.releases()?);
        let mut report = GcReport {
            kept: kept.len(),
            ..GcReport::default()
        };
        if !dry_run && !dropped.is_empty() {
            index::write_labeled(
                &self.root,
                &kept,
                [
                    "collect: index written",
                    "collect: index synced",
                    "collect: index renamed",
                    "collect: directory synced",
                ],
            )?;
        }
        report.dropped = dropped;

        let mut bundles: HashSet<BundleId> = HashSet::new();
        let mut blobs: HashSet<Hash> = HashSet::new();
        let mut sha256s: HashSet<[u8; 32]> = HashSet::new();
        for r in &kept {
            // Its own bundle and its Capgo payload, if any.
            for bundle in r.release().bundles() {
                if bundles.insert(bundle) {
                    // A kept release whose manifest cannot be read stops the
                    // collection: its blobs are unknown, so none may go.
                    let m = self.read_manifest(&bundle)?;
                    blobs.extend(m.files().iter().map(|f| f.blake3));
                    sha256s.extend(m.files().iter().map(|f| f.sha256));
                }
            }
        }

        // Every deletion goes through here, so a dry run deletes nothing.
        let remove = |path: &Path| -> Result<(), StoreError> {
            if dry_run {
                return Ok(());
            }
            let res = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            res.map_err(StoreError::io("cannot remove", path))?;
            crate::crashpoint::hit("collect: removed");
            Ok(())
        };

        let dir = self.root.join("manifests");
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io("cannot read", &dir))? {
            let entry = entry.map_err(StoreError::io("cannot read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name
                .parse::<BundleId>()
                .is_ok_and(|id| !bundles.contains(&id))
            {
                remove(&entry.path())?;
                report.manifests_removed += 1;
            }
        }
        for (path, name) in walk_two_levels(&self.root.join("blobs"))? {
            if name.ends_with(super::batch::TEMP_SUFFIX) {
                remove(&path)?;
                report.leftovers_removed += 1;
            } else if name.parse::<Hash>().is_ok_and(|h| !blobs.contains(&h)) {
                report.bytes_freed += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                remove(&path)?;
                report.blobs_removed += 1;
            }
        }
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(StoreError::io("cannot read", &tmp))? {
            let entry = entry.map_err(StoreError::io("cannot read", &tmp))?;
            remove(&entry.path())?;
            report.leftovers_removed += 1;
        }
        // Pieces of fetches that are not running (a running fetch holds
        // gc.lock shared, so none is while this runs): resumable, but
        // garbage to a collection.
        let partial = self.partial_dir();
        if let Ok(dir) = std::fs::read_dir(&partial) {
            for entry in dir {
                let entry = entry.map_err(StoreError::io("cannot read", &partial))?;
                report.bytes_freed += dir_size(&entry.path());
                remove(&entry.path())?;
                report.leftovers_removed += 1;
            }
        }
        report.cache_removed = super::cache::collect(self, &bundles, &sha256s, &remove)?;
        for entry in
            std::fs::read_dir(&self.root).map_err(StoreError::io("cannot read", &self.root))?
        {
            let entry = entry.map_err(StoreError::io("cannot read", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                remove(&entry.path())?;
                report.leftovers_removed += 1;
            }
        }
        Ok(Some(report))
    }

    /// Takes the lock file `name` exclusively. A dry run does not create a
    /// missing one: with no lock file, no batch has ever run to wait for,
    /// and a dry run only counts.
    /// Locks `name` exclusively: `Some(Some(file))` held, `Some(None)` no
    /// lock file (a dry run creates none), `None` held by another and
    /// `wait` is false.
    fn gc_lock(
        &self,
        name: &str,
        dry_run: bool,
        wait: bool,
    ) -> Result<Option<Option<File>>, StoreError> {
        let path = self.root.join(name);
        let file = if dry_run {
            match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Some(None)),
                Err(e) => return Err(StoreError::io("cannot open lock file", &path)(e)),
            }
        } else {
            self.lock_file(name)?
        };
        if wait {
            file.lock().map_err(StoreError::io("cannot lock", &path))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::io("cannot lock", &path)(e));
                }
            }
        }
        Ok(Some(Some(file)))
    }
}

/// Bytes of the files directly in `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Splits releases into kept and dropped: the `keep` (at least 1) highest
/// sequence numbers of each app and channel are kept, in their index order.
fn retain(all: Vec<SignedRelease>, keep: usize) -> (Vec<SignedRelease>, Vec<SignedRelease>) {
    let mut seqs: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
    for r in &all {
        let rel = r.release();
        seqs.entry((&rel.app, &rel.channel))
            .or_default()
            .push(rel.seq);
    }
    let cutoff: HashMap<(String, String), u64> = seqs
        .into_iter()
        .map(|((app, channel), mut s)| {
            s.sort_unstable_by(|a, b| b.cmp(a));
            let min_kept = s[keep.saturating_sub(1).min(s.len() - 1)];
            ((app.to_owned(), channel.to_owned()), min_kept)
        })
        .collect();
    all.into_iter().partition(|r| {
        let rel = r.release();
        rel.seq >= cutoff[&(rel.app.clone(), rel.channel.clone())]
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::SystemTime;

    use super::*;
    use crate::keys::SecretKey;
    use crate::pack::{PackOptions, pack_dir};
    use crate::release::Rollout;
    use crate::store::cache;

    /// A store in `dir` holding, for each `(app, version, seq, page)`, a
    /// release whose bundle is an index.html of `page` and a shared file.
    fn store_with(dir: &Path, releases: &[(&str, &str, u64, &str)]) -> Store {
        let store = Store::create(&dir.join("store")).unwrap();
        let key = SecretKey::from_seed(&[7; 32]);
        for (i, (app, version, seq, page)) in releases.iter().enumerate() {
            let build = dir.join(format!("build{i}"));
            std::fs::create_dir_all(&build).unwrap();
            std::fs::write(build.join("index.html"), page).unwrap();
            std::fs::write(build.join("shared.js"), "shared by every bundle").unwrap();
            let opts = PackOptions {
                app: (*app).to_owned(),
                channel: "production".to_owned(),
                version: (*version).to_owned(),
                seq: Some(*seq),
                created: 1_700_000_000,
                min_native_version: None,
                rollout: Rollout::FULL,
                expires: None,
                notes: None,
                capgo: None,
            };
            pack_dir(&store, &build, &opts, &key, &|_| {}).unwrap();
        }
        store
    }

    const THREE: [(&str, &str, u64, &str); 3] = [
        ("com.example.a", "1.0.0", 1, "one"),
        ("com.example.a", "1.1.0", 2, "two"),
        ("com.example.b", "2.0.0", 1, "three"),
    ];

    /// Every file and folder under `root` with its size and mtime.
    fn snapshot(root: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_owned()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    todo.push(e.path());
                }
                out.push((e.path(), meta.len(), meta.modified().unwrap()));
            }
        }
        out.sort();
        out
    }

    fn versions(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store
            .releases()
            .unwrap()
            .iter()
            .map(|r| r.release().version.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_dry_run_changes_no_file_but_counts_what_would_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        let fetch = store.partial_dir().join("a-fetch");
        std::fs::create_dir_all(&fetch).unwrap();
        std::fs::write(fetch.join("piece"), [1u8; 100]).unwrap();
        std::fs::write(store.root().join("tmp").join("staged"), b"left").unwrap();
        let before = snapshot(store.root());

        let report = store
            .gc(GcOptions {
                keep: 1,
                dry_run: true,
            })
            .unwrap();

        assert_eq!(snapshot(store.root()), before);
        assert_eq!(report.dropped.len(), 1);
        assert_eq!(report.kept, 2);
        assert_eq!(report.manifests_removed, 1);
        assert_eq!(report.leftovers_removed, 2, "{report:?}");
        assert!(report.bytes_freed >= 100);
    }

    #[test]
    fn the_gateway_cache_of_dropped_bundles_goes_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        let rels = store.releases().unwrap();
        let bundle = |v: &str| {
            (rels.iter())
                .find(|r| r.release().version == v)
                .unwrap()
                .release()
                .bundle_id
        };
        let (old, kept) = (bundle("1.0.0"), bundle("1.1.0"));
        let old_zip = store.make_zip(&old).unwrap();
        let kept_zip = store.make_zip(&kept).unwrap();
        let sha =
            |b: BundleId, path: &str| store.read_manifest(&b).unwrap().get(path).unwrap().sha256;
        // "one" is only in the dropped bundle; shared.js is in every one.
        let (gone, shared) = (sha(old, "index.html"), sha(old, "shared.js"));
        store.put_brotli(&gone, Some(b"x")).unwrap();
        store.put_brotli(&shared, None).unwrap();
        let leftover = store.gateway_cache().join("zip").join(".x.zip.1.tmp");
        std::fs::write(&leftover, b"half").unwrap();

        let report = store
            .gc(GcOptions {
                keep: 1,
                dry_run: false,
            })
            .unwrap();

        assert_eq!(report.cache_removed, 4, "{report:?}"); // zip, checksum, .br, temp
        assert_eq!(store.cached_zip(&old), None);
        assert!(!old_zip.path.exists() && !leftover.exists());
        assert_eq!(store.cached_zip(&kept), Some(kept_zip));
        assert_eq!(store.cached_brotli(&gone), cache::Brotli::Unknown);
        assert_eq!(store.cached_brotli(&shared), cache::Brotli::NotWorth);
    }

    #[test]
    fn a_dry_run_creates_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        for name in ["gc.lock", "index.lock"] {
            std::fs::remove_file(store.root().join(name)).unwrap();
        }
        let before = snapshot(store.root());
        store
            .gc_by(|_| false, true)
            .expect("a dry run without lock files");
        assert_eq!(snapshot(store.root()), before);
    }

    #[test]
    fn a_real_run_removes_partial_folders_and_old_releases() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        std::fs::create_dir_all(store.partial_dir().join("a-fetch")).unwrap();
        let report = store
            .gc(GcOptions {
                keep: 1,
                dry_run: false,
            })
            .unwrap();
        assert_eq!(versions(&store), ["1.1.0", "2.0.0"]);
        assert_eq!(report.leftovers_removed, 1);
        assert!(!store.partial_dir().join("a-fetch").exists());
        assert_eq!(store.verify(None, &|_| {}).unwrap().unreferenced_blobs, 0);
    }

    #[test]
    fn keeping_no_release_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        let before = snapshot(store.root());
        for dry_run in [false, true] {
            let err = store.gc(GcOptions { keep: 0, dry_run }).unwrap_err();
            assert!(matches!(err, StoreError::KeepNone), "{err}");
            assert!(err.to_string().contains("keep at least 1"), "{err}");
        }
        assert_eq!(snapshot(store.root()), before);
    }

    #[test]
    fn gc_by_keeps_what_its_rule_keeps_and_collects_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        let report = store
            .gc_by(|r| r.release().app == "com.example.b", false)
            .unwrap();
        assert_eq!(versions(&store), ["2.0.0"]);
        assert_eq!(report.kept, 1);
        assert_eq!(report.dropped.len(), 2);
        assert_eq!(report.manifests_removed, 2);
        // Each dropped bundle had its own index.html; shared.js stays.
        assert_eq!(report.blobs_removed, 2);
        let left = store.verify(None, &|_| {}).unwrap();
        assert!(left.is_ok(), "{:?}", left.problems);
        assert_eq!(
            (left.manifests, left.blobs, left.unreferenced_blobs),
            (1, 2, 0)
        );
    }

    #[test]
    fn try_gc_by_does_not_wait_for_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        let before = snapshot(store.root());
        let reader = store.read_guard().unwrap();
        assert!(store.try_gc_by(|_| false).unwrap().is_none());
        assert_eq!(snapshot(store.root()), before, "nothing changed");
        drop(reader);
        let report = store.try_gc_by(|_| false).unwrap().expect("runs now");
        assert_eq!(report.dropped.len(), 3);
    }

    #[test]
    fn gc_by_keeping_everything_removes_no_release_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        let report = store.gc_by(|_| true, false).unwrap();
        assert_eq!(report.kept, 3);
        assert!(report.dropped.is_empty());
        assert_eq!((report.manifests_removed, report.blobs_removed), (0, 0));
        assert_eq!(versions(&store), ["1.0.0", "1.1.0", "2.0.0"]);
    }

    #[test]
    fn retention_keeps_the_highest_sequences_of_each_app_and_channel() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &THREE);
        for (keep, left) in [
            (1, vec!["1.1.0", "2.0.0"]),
            (2, vec!["1.0.0", "1.1.0", "2.0.0"]),
            (5, vec!["1.0.0", "1.1.0", "2.0.0"]),
        ] {
            let report = store
                .gc(GcOptions {
                    keep,
                    dry_run: true,
                })
                .unwrap();
            let mut kept: Vec<String> = store
                .releases()
                .unwrap()
                .iter()
                .filter(|r| !report.dropped.contains(r))
                .map(|r| r.release().version.to_string())
                .collect();
            kept.sort();
            assert_eq!(kept, left, "keep {keep}");
        }
    }
}
