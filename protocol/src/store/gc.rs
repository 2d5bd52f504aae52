//! Garbage collection: drop old releases by a retention rule, then every
//! manifest and blob that no kept release needs, and leftovers of
//! interrupted writes (staging left in `tmp/`, and the pieces of fetches
//! that are not running in `partial/`).
//!
//! GC takes `gc.lock` exclusively, so it waits for running batches (which
//! hold it shared) and none starts while it runs; everything under `tmp/`
//! is then a leftover of a dead process. The index is rewritten first
//! (atomically), files are deleted after: a crash in between leaves only
//! orphans, which the next run removes.

use std::collections::{HashMap, HashSet};

use crate::hash::{BundleId, Hash};
use crate::release::SignedRelease;

use super::verify::walk_two_levels;
use super::{Store, StoreError, index};

/// How much to keep.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Releases kept per app and channel, the highest sequence numbers.
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
    /// Bytes of blobs deleted.
    pub bytes_freed: u64,
    /// Leftovers of interrupted writes deleted.
    pub leftovers_removed: usize,
}

impl Store {
    /// Applies the retention rule and deletes what no kept release needs.
    pub fn gc(&self, opts: GcOptions) -> Result<GcReport, StoreError> {
        let (kept, _) = retain(self.releases()?, opts.keep);
        let kept: HashSet<crate::ReleaseId> = kept.iter().map(SignedRelease::id).collect();
        self.gc_by(|r| kept.contains(&r.id()), opts.dry_run)
    }

    /// Keeps the releases `keep` says, and deletes what no kept release
    /// needs.
    pub fn gc_by(
        &self,
        keep: impl Fn(&SignedRelease) -> bool,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        let opts = GcOptions { keep: 1, dry_run };
        let gc_lock = self.lock_file("gc.lock")?;
        gc_lock
            .lock()
            .map_err(StoreError::io("cannot lock", &self.root.join("gc.lock")))?;
        let index_lock = self.lock_file("index.lock")?;
        index_lock
            .lock()
            .map_err(StoreError::io("cannot lock", &self.root.join("index.lock")))?;

        let all = self.releases()?;
        let (kept, dropped): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| keep(r));
        let mut report = GcReport {
            kept: kept.len(),
            ..GcReport::default()
        };
        if !opts.dry_run && !dropped.is_empty() {
            index::write(&self.root, &kept)?;
        }
        report.dropped = dropped;

        let mut bundles: HashSet<BundleId> = HashSet::new();
        let mut blobs: HashSet<Hash> = HashSet::new();
        for r in &kept {
            if bundles.insert(r.release().bundle_id) {
                // A kept release whose manifest cannot be read stops the
                // collection: its blobs are unknown, so none may go.
                let m = self.read_manifest(&r.release().bundle_id)?;
                blobs.extend(m.files().iter().map(|f| f.blake3));
            }
        }

        let remove = |path: &std::path::Path| -> Result<(), StoreError> {
            if opts.dry_run {
                return Ok(());
            }
            let res = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            res.map_err(StoreError::io("cannot remove", path))
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
                std::fs::remove_dir_all(entry.path())
                    .map_err(StoreError::io("cannot remove", &entry.path()))?;
                report.leftovers_removed += 1;
            }
        }
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
        Ok(report)
    }
}

/// Bytes of the files directly in `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Splits releases into kept and dropped: the `keep` highest sequence
/// numbers of each app and channel are kept, in their index order.
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
            let min_kept = if keep == 0 {
                u64::MAX
            } else {
                s[(keep - 1).min(s.len() - 1)]
            };
            ((app.to_owned(), channel.to_owned()), min_kept)
        })
        .collect();
    all.into_iter().partition(|r| {
        let rel = r.release();
        keep > 0 && rel.seq >= cutoff[&(rel.app.clone(), rel.channel.clone())]
    })
}
