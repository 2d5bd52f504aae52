//! Checking a store: every blob against its hash, every manifest against
//! its id, every release's signature, and that each release's bundle is
//! complete.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::hash::{BundleId, Hash};
use crate::release::SignedRelease;
use crate::trust::TrustList;

use super::{Store, StoreError};

/// One thing wrong with a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The index cannot be read.
    Index(String),
    /// A release's signature does not verify, or its key is not trusted.
    Release {
        /// Which release (app, channel, version).
        release: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest is missing or damaged.
    Manifest {
        /// The bundle.
        id: BundleId,
        /// What is wrong.
        reason: String,
    },
    /// A blob that a bundle needs is missing or has the wrong size.
    MissingBlob {
        /// The bundle.
        bundle: BundleId,
        /// Path in the bundle.
        path: String,
        /// The blob's hash.
        hash: Hash,
    },
    /// A blob's bytes do not match its name.
    BadBlob {
        /// The file.
        file: PathBuf,
    },
    /// A file that has no business in the store's directories.
    Stray {
        /// The file.
        file: PathBuf,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Index(reason) => write!(f, "index: {reason}"),
            Problem::Release { release, reason } => write!(f, "release {release}: {reason}"),
            Problem::Manifest { id, reason } => write!(f, "manifest {id}: {reason}"),
            Problem::MissingBlob { bundle, path, hash } => {
                write!(
                    f,
                    "bundle {bundle}: file {path} ({hash}) is missing or has the wrong size"
                )
            }
            Problem::BadBlob { file } => {
                write!(f, "blob {} does not match its hash", file.display())
            }
            Problem::Stray { file } => write!(f, "unexpected file {}", file.display()),
        }
    }
}

/// What [`Store::verify`] found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Releases in the index.
    pub releases: usize,
    /// Manifests checked.
    pub manifests: usize,
    /// Blobs hashed.
    pub blobs: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Blobs no release needs (harmless; `store gc` removes them).
    pub unreferenced_blobs: usize,
    /// Leftovers of interrupted writes in `tmp/` (harmless; `store gc`
    /// removes them).
    pub leftovers: usize,
    /// What is wrong; empty for a sound store.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks the whole store. With `trust`, releases must also verify
    /// against it. `progress` is called with the bytes hashed so far.
    pub fn verify(
        &self,
        trust: Option<&TrustList>,
        progress: &dyn Fn(u64),
    ) -> Result<VerifyReport, StoreError> {
        // Shared with writers, exclusive of gc: nothing is deleted under us.
        let _guard = self.read_guard()?;
        let mut report = VerifyReport::default();
        let releases = match self.releases() {
            Ok(r) => r,
            Err(StoreError::CorruptIndex { reason, .. }) => {
                report.problems.push(Problem::Index(reason));
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        report.releases = releases.len();
        let mut needed: HashSet<Hash> = HashSet::new();
        let mut bundles: HashSet<BundleId> = HashSet::new();
        for r in &releases {
            self.verify_release(r, trust, &mut bundles, &mut needed, &mut report);
        }
        self.verify_blobs(&needed, progress, &mut report)?;
        self.verify_manifest_files(&bundles, &mut report)?;
        report.leftovers += std::fs::read_dir(self.root.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        Ok(report)
    }

    fn verify_release(
        &self,
        r: &SignedRelease,
        trust: Option<&TrustList>,
        bundles: &mut HashSet<BundleId>,
        needed: &mut HashSet<Hash>,
        report: &mut VerifyReport,
    ) {
        let rel = r.release();
        let name = format!(
            "{} {} ({}, seq {})",
            rel.app, rel.version, rel.channel, rel.seq
        );
        let checked = match trust {
            Some(t) => r.verify(t).map(|_| ()),
            None => r.check_signature(),
        };
        if let Err(e) = checked {
            report.problems.push(Problem::Release {
                release: name,
                reason: e.to_string(),
            });
        }
        // Its own bundle and its Capgo payload, if any.
        for bundle in rel.bundles() {
            if !bundles.insert(bundle) {
                continue;
            }
            match self.read_manifest(&bundle) {
                Ok(m) => {
                    report.manifests += 1;
                    for f in m.files() {
                        needed.insert(f.blake3);
                        let size_ok = std::fs::metadata(self.blob_path(&f.blake3))
                            .map(|md| md.is_file() && md.len() == f.size)
                            .unwrap_or(false);
                        if !size_ok {
                            report.problems.push(Problem::MissingBlob {
                                bundle,
                                path: f.path.to_string(),
                                hash: f.blake3,
                            });
                        }
                    }
                }
                Err(e) => report.problems.push(Problem::Manifest {
                    id: bundle,
                    reason: e.to_string(),
                }),
            }
        }
    }

    fn verify_blobs(
        &self,
        needed: &HashSet<Hash>,
        progress: &dyn Fn(u64),
        report: &mut VerifyReport,
    ) -> Result<(), StoreError> {
        let blobs = self.root.join("blobs");
        let mut buf = vec![0u8; 1 << 20];
        for (path, name) in walk_two_levels(&blobs)? {
            if name.ends_with(super::batch::TEMP_SUFFIX) {
                report.leftovers += 1;
                continue;
            }
            let hash = match name.parse::<Hash>() {
                Ok(h) if self.blob_path(&h) == path => h,
                _ => {
                    report.problems.push(Problem::Stray { file: path });
                    continue;
                }
            };
            report.blobs += 1;
            if !needed.contains(&hash) {
                report.unreferenced_blobs += 1;
            }
            match hash_file(&path, &mut buf) {
                Ok((h, n)) => {
                    report.bytes += n;
                    progress(report.bytes);
                    if h != hash {
                        report.problems.push(Problem::BadBlob { file: path });
                    }
                }
                Err(e) => return Err(StoreError::io("cannot read", &path)(e)),
            }
        }
        Ok(())
    }

    fn verify_manifest_files(
        &self,
        referenced: &HashSet<BundleId>,
        report: &mut VerifyReport,
    ) -> Result<(), StoreError> {
        let dir = self.root.join("manifests");
        let entries = std::fs::read_dir(&dir).map_err(StoreError::io("cannot read", &dir))?;
        for entry in entries {
            let entry = entry.map_err(StoreError::io("cannot read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.parse::<BundleId>() {
                Ok(id) if !referenced.contains(&id) => {
                    // Referenced ones were read and checked above.
                    if let Err(e) = self.read_manifest(&id) {
                        report.problems.push(Problem::Manifest {
                            id,
                            reason: e.to_string(),
                        });
                    }
                }
                Ok(_) => {}
                Err(_) => report.problems.push(Problem::Stray { file: entry.path() }),
            }
        }
        Ok(())
    }
}

/// BLAKE3 of a file's bytes, and how many there were.
pub(crate) fn hash_file(path: &Path, buf: &mut [u8]) -> std::io::Result<(Hash, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = file.read(buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().into(), total))
}

/// Files two levels below `dir` (`blobs/ab/abcd…`), with their names. Files
/// directly in `dir` are returned too, so strays are reported.
pub(crate) fn walk_two_levels(dir: &Path) -> Result<Vec<(PathBuf, String)>, StoreError> {
    let mut out = Vec::new();
    let top = std::fs::read_dir(dir).map_err(StoreError::io("cannot read", dir))?;
    for sub in top {
        let sub = sub.map_err(StoreError::io("cannot read", dir))?;
        let path = sub.path();
        if !path.is_dir() {
            out.push((path, String::new()));
            continue;
        }
        let inner = std::fs::read_dir(&path).map_err(StoreError::io("cannot read", &path))?;
        for entry in inner {
            let entry = entry.map_err(StoreError::io("cannot read", &path))?;
            out.push((
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    out.sort();
    Ok(out)
}
