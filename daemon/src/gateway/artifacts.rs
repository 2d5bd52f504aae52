//! What the gateway serves for a release, and where it comes from.
//!
//! - The releases it may offer ([`Snapshot`]): those the node holds whole
//!   in its store (a release being fetched is not in the index yet), with
//!   a valid signature, each with the version string devices see; with
//!   the manifests of their bundles, and every file by its SHA-256.
//! - The zip of a release ([`Artifacts::zip_for`]): the one place that
//!   says what a device downloads in zip mode and which checksum (and,
//!   for an encrypted release, which session key) goes with it. Made once
//!   per bundle off the async runtime, concurrent requests waiting on one
//!   build, and kept in the store's cache (`lanseed_protocol::store::cache`).
//! - The manifest-mode entries of a release ([`Artifacts::manifest_for`]),
//!   with the Brotli variants of its files ([`Artifacts::brotli_for`]):
//!   quality 9, kept when they save at least a tenth of the bytes, decided
//!   once per file and cached likewise.
//! - Whether the app's Capgo key matches a release ([`capgo_key_matches`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lanseed_protocol::capgo::payload;
use lanseed_protocol::manifest::Manifest;
use lanseed_protocol::store::cache::{Brotli, CachedZip};
use lanseed_protocol::{BundleId, Hash, ReleaseId, SignedRelease, Store};
use tokio::sync::OnceCell;

use super::choose::{self, Candidate};
use super::wire::ManifestEntry;

/// Files larger than this are served as they are in manifest mode (a
/// Brotli pass holds the file in memory).
pub const MAX_BROTLI_INPUT: u64 = 16 << 20;
/// Brotli quality.
pub const BROTLI_QUALITY: u32 = 9;

/// Why an artifact could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Making the zip failed.
    #[error("cannot make the zip of bundle {bundle}: {reason}")]
    Zip {
        /// The bundle.
        bundle: BundleId,
        /// Why.
        reason: String,
    },
    /// Making a Brotli variant failed.
    #[error("cannot compress the files of bundle {bundle}: {reason}")]
    Brotli {
        /// The bundle.
        bundle: BundleId,
        /// Why.
        reason: String,
    },
}

/// One release the gateway may offer.
#[derive(Clone, Debug)]
pub struct Held {
    /// The signed statement (its signature checked).
    pub release: SignedRelease,
    /// The version devices see.
    pub display: String,
}

/// A file of the held bundles, by SHA-256.
#[derive(Clone, Copy, Debug)]
pub struct FileRef {
    /// Its blob.
    pub blake3: Hash,
    /// Its size.
    pub size: u64,
}

/// What the gateway may offer now.
#[derive(Default)]
pub struct Snapshot {
    /// Offerable releases.
    pub held: Vec<Held>,
    /// Their bundles' manifests.
    pub manifests: HashMap<BundleId, Arc<Manifest>>,
    /// Every file of those bundles, by SHA-256.
    pub files: HashMap<[u8; 32], FileRef>,
}

impl Snapshot {
    /// Builds the snapshot of `releases` (blocking: reads manifests;
    /// `previous` lends the manifests it already read).
    pub fn build(store: &Store, releases: &[SignedRelease], previous: &Snapshot) -> Snapshot {
        let mut manifests = HashMap::new();
        let mut ok = Vec::new();
        for r in releases {
            if let Err(e) = r.check_signature() {
                tracing::warn!(release = %r.id(), "not offered through the gateway: {e}");
                continue;
            }
            let bundle = r.release().bundle_id;
            if let std::collections::hash_map::Entry::Vacant(v) = manifests.entry(bundle) {
                let m = match previous.manifests.get(&bundle) {
                    Some(m) => m.clone(),
                    None => match store.read_manifest(&bundle) {
                        Ok(m) => Arc::new(m),
                        Err(e) => {
                            tracing::warn!(%bundle, "not offered through the gateway: {e}");
                            continue;
                        }
                    },
                };
                v.insert(m);
            }
            ok.push(r.clone());
        }
        let refs: Vec<_> = ok.iter().map(SignedRelease::release).collect();
        let shown = choose::display_versions(&refs);
        let mut files = HashMap::new();
        for m in manifests.values() {
            for f in m.files() {
                files.insert(
                    f.sha256,
                    FileRef {
                        blake3: f.blake3,
                        size: f.size,
                    },
                );
            }
        }
        Snapshot {
            held: (ok.into_iter().zip(shown))
                .map(|(release, display)| Held { release, display })
                .collect(),
            manifests,
            files,
        }
    }

    /// The held releases as candidates of `choose`.
    pub fn candidates(&self) -> Vec<Candidate<'_>> {
        self.held
            .iter()
            .map(|h| Candidate {
                release: h.release.release(),
                display: &h.display,
            })
            .collect()
    }

    /// The bundle and sequence number of the release a device that sent
    /// `version_name` runs, if the gateway knows it.
    pub fn known(&self, app: &str, version_name: &str) -> Option<([u8; 32], u64)> {
        (self.held.iter())
            .filter(|h| h.release.release().app == app)
            .filter(|h| h.display == version_name)
            .max_by_key(|h| h.release.release().seq)
            .map(|h| {
                (
                    *h.release.release().bundle_id.0.as_bytes(),
                    h.release.release().seq,
                )
            })
    }
}

/// The zip a device downloads for a release, as zip mode offers it.
#[derive(Clone, Debug)]
pub struct ZipSource {
    /// The file served at `/capgo/zip/<sha256>.zip`.
    pub path: PathBuf,
    /// That file's SHA-256 (its name in the link).
    pub sha256: [u8; 32],
    /// The `checksum` of the offer, which the plugin checks: for a plain
    /// release, the zip's SHA-256 in hex.
    pub checksum: String,
    /// The `session_key` of the offer (encryption v2); `None` for a
    /// release without a Capgo section.
    pub session_key: Option<String>,
}

/// Whether a device whose app has the Capgo public key `key_id` may be
/// offered `release`: an app with a public key accepts only bundles
/// encrypted for it, so the release must carry Capgo artefacts made with
/// that key (else the device is told `blocked` / `key_id_mismatch`).
pub fn capgo_key_matches(release: &SignedRelease, key_id: &str) -> bool {
    release
        .release()
        .capgo
        .as_ref()
        .is_some_and(|c| c.key_id == key_id)
}

/// The encrypted zip of `release` and the strings that go with it
/// (blocking: reads and checks its payload bundle's manifest).
fn encrypted_source(store: &Store, release: &SignedRelease) -> Result<ZipSource, String> {
    let served = payload::served(store, release)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the release carries no Capgo artefacts".to_owned())?;
    Ok(ZipSource {
        path: served.path,
        sha256: served.sha256,
        checksum: served.checksum,
        session_key: Some(served.session_key),
    })
}

type Cell<T> = Arc<OnceCell<T>>;
/// Whether each file of a bundle (by SHA-256) has a Brotli variant.
pub type Variants = Arc<HashMap<[u8; 32], Brotli>>;

/// The zips and Brotli variants, made once.
pub struct Artifacts {
    store: Store,
    zips: Mutex<HashMap<BundleId, Cell<CachedZip>>>,
    /// Zips by their SHA-256, for downloads.
    by_sha: Mutex<HashMap<[u8; 32], PathBuf>>,
    brotli: Mutex<HashMap<BundleId, Cell<Variants>>>,
    /// The encrypted zip of each held release with Capgo artefacts, found
    /// once (its payload bundle's manifest read and checked).
    encrypted: Mutex<HashMap<ReleaseId, ZipSource>>,
}

impl Artifacts {
    /// The artifacts of `store`.
    pub fn new(store: Store) -> Artifacts {
        Artifacts {
            store,
            zips: Mutex::default(),
            by_sha: Mutex::default(),
            brotli: Mutex::default(),
            encrypted: Mutex::default(),
        }
    }

    /// Forgets what belongs to bundles no longer held, and learns the
    /// zips the cache holds for those that are (blocking: reads checksum
    /// files), so a download resumed after a restart is served.
    pub fn retain(&self, snapshot: &Snapshot) {
        let held = |b: &BundleId| snapshot.manifests.contains_key(b);
        lock(&self.zips).retain(|b, _| held(b));
        lock(&self.brotli).retain(|b, _| held(b));
        let mut by_sha = HashMap::new();
        for bundle in snapshot.manifests.keys() {
            if let Some(z) = self.store.cached_zip(bundle) {
                by_sha.insert(z.sha256, z.path);
            }
        }
        // Encrypted zips: files of the held releases' payload bundles,
        // looked up once each.
        let known = std::mem::take(&mut *lock(&self.encrypted));
        let mut encrypted = HashMap::new();
        for h in snapshot
            .held
            .iter()
            .filter(|h| h.release.release().capgo.is_some())
        {
            let id = h.release.id();
            let source = match known.get(&id) {
                Some(s) => Some(s.clone()),
                None => encrypted_source(&self.store, &h.release).ok(),
            };
            if let Some(s) = source {
                by_sha.insert(s.sha256, s.path.clone());
                encrypted.insert(id, s);
            }
        }
        lock(&self.encrypted).extend(encrypted);
        *lock(&self.by_sha) = by_sha;
    }

    /// The zip of `release`, its checksum and session key (see
    /// [`ZipSource`]). `encrypted`: the Capgo encryption v2 artefacts the
    /// publisher made and the release carries (the encrypted zip is a
    /// file of the release's payload bundle, served as it is); else the
    /// plain deterministic zip, made on first use.
    pub async fn zip_for(
        &self,
        release: &SignedRelease,
        encrypted: bool,
    ) -> Result<ZipSource, ArtifactError> {
        let bundle = release.release().bundle_id;
        if encrypted {
            let id = release.id();
            if let Some(s) = lock(&self.encrypted).get(&id) {
                return Ok(s.clone());
            }
            // Not looked up yet (a check racing the snapshot's update).
            let store = self.store.clone();
            let r = release.clone();
            let source = tokio::task::spawn_blocking(move || encrypted_source(&store, &r))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|reason| ArtifactError::Zip { bundle, reason })?;
            lock(&self.by_sha).insert(source.sha256, source.path.clone());
            lock(&self.encrypted).insert(id, source.clone());
            return Ok(source);
        }
        let zip = loop {
            let cell = lock(&self.zips).entry(bundle).or_default().clone();
            let store = self.store.clone();
            let zip = cell
                .get_or_try_init(|| async move {
                    let made =
                        tokio::task::spawn_blocking(move || match store.cached_zip(&bundle) {
                            Some(z) => Ok(z),
                            None => {
                                let z = store.make_zip(&bundle).map_err(|e| e.to_string())?;
                                tracing::info!(%bundle, bytes = z.len, "gateway zip made");
                                Ok(z)
                            }
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                    made.map_err(|reason| ArtifactError::Zip { bundle, reason })
                })
                .await?
                .clone();
            // A cached zip that is gone or changed length (a disk fault,
            // someone clearing the cache) is made again, not served broken
            // until a restart.
            let path = zip.path.clone();
            let intact =
                tokio::task::spawn_blocking(move || std::fs::metadata(path).map(|m| m.len()))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    == Some(zip.len);
            if intact {
                break zip;
            }
            tracing::warn!(%bundle, "the gateway's cached zip is missing or damaged; making it again");
            {
                let mut zips = lock(&self.zips);
                if zips.get(&bundle).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    zips.remove(&bundle);
                }
            }
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.forget_zip(&bundle)).await;
        };
        let source = ZipSource {
            checksum: hex::encode(zip.sha256),
            path: zip.path,
            sha256: zip.sha256,
            session_key: None,
        };
        lock(&self.by_sha).insert(source.sha256, source.path.clone());
        Ok(source)
    }

    /// The zip whose SHA-256 is `sha256`, if one was made for a held
    /// bundle.
    pub fn zip_by_sha(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        lock(&self.by_sha).get(sha256).cloned()
    }

    /// The manifest-mode entries of `release` (its bundle's `manifest`),
    /// with links under `base` (`scheme://host`): each file by its
    /// SHA-256, `.br` where its Brotli variant is served. For a release
    /// with a Capgo section the encryption work makes these the encrypted
    /// files and their encrypted hashes.
    pub async fn manifest_for(
        &self,
        release: &SignedRelease,
        manifest: Arc<Manifest>,
        base: &str,
    ) -> Result<Vec<ManifestEntry>, ArtifactError> {
        let bundle = release.release().bundle_id;
        let br = self.brotli_for(bundle, manifest.clone()).await?;
        Ok(manifest
            .files()
            .iter()
            .map(|f| {
                let hash = hex::encode(f.sha256);
                let packed = matches!(br.get(&f.sha256), Some(Brotli::Smaller(..)));
                let suffix = if packed { ".br" } else { "" };
                ManifestEntry {
                    file_name: format!("{}{suffix}", f.path),
                    download_url: format!("{base}/capgo/file/{hash}{suffix}"),
                    file_hash: hash,
                }
            })
            .collect())
    }

    /// For every file of `bundle` (its `manifest`), by SHA-256, whether a
    /// Brotli variant is served; made on first use.
    pub async fn brotli_for(
        &self,
        bundle: BundleId,
        manifest: Arc<Manifest>,
    ) -> Result<Variants, ArtifactError> {
        let cell = lock(&self.brotli).entry(bundle).or_default().clone();
        let store = self.store.clone();
        let got = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || variants(&store, &manifest))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map(Arc::new)
                    .map_err(|reason| ArtifactError::Brotli { bundle, reason })
            })
            .await?;
        Ok(got.clone())
    }
}

/// Decides (and caches) the Brotli variant of every file of `manifest`.
fn variants(store: &Store, manifest: &Manifest) -> Result<HashMap<[u8; 32], Brotli>, String> {
    let mut out = HashMap::new();
    for f in manifest.files() {
        if out.contains_key(&f.sha256) {
            continue;
        }
        let mut got = store.cached_brotli(&f.sha256);
        if got == Brotli::Unknown {
            got = if f.size == 0 || f.size > MAX_BROTLI_INPUT {
                Brotli::NotWorth
            } else {
                let data = std::fs::read(store.blob_path(&f.blake3)).map_err(|e| e.to_string())?;
                let packed = compress(&data);
                let worth = (packed.len() as u64) * 10 <= f.size * 9;
                store
                    .put_brotli(&f.sha256, worth.then_some(&packed[..]))
                    .map_err(|e| e.to_string())?
            };
        }
        out.insert(f.sha256, got);
    }
    Ok(out)
}

/// `data` compressed with Brotli at [`BROTLI_QUALITY`].
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let params = brotli::enc::BrotliEncoderParams {
        quality: BROTLI_QUALITY as i32,
        lgwin: 22,
        ..Default::default()
    };
    // Writing into memory cannot fail.
    let _ = brotli::BrotliCompress(&mut &data[..], &mut out, &params);
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brotli_round_trips_and_pays_only_on_compressible_bytes() {
        let text = b"<!doctype html><p>hello</p>".repeat(200);
        let packed = compress(&text);
        assert!(packed.len() * 10 <= text.len() * 9);
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &packed[..], &mut back).unwrap();
        assert_eq!(back, text);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        assert!(compress(&noise).len() * 10 > noise.len() * 9);
    }
}
