//! One pass of the site cache over the origin:
//!
//! ```text
//! GET index.json (conditional)     304: nothing changed, done
//! for each release wanted (plan::wanted: followed, newer than held):
//!   GET releases/<id>              must hash to the id index.json gives,
//!                                  match its entry, be trusted for its app
//!                                  and channel, and its signature verify:
//!                                  before any blob is fetched
//!   for each bundle it needs that the store lacks:
//!     GET manifests/<bundle>       must hash to the bundle id
//!     GET bundles/<bundle>.json    where each blob is (plan::blob_sources)
//!     GET blobs/..  (Range resume) only the blobs the store lacks, into
//!                                  STORE/partial-origin/, size and BLAKE3
//!                                  checked (gzip inflated within the size)
//!                                  before they are staged
//!   commit the release             the node's store watch then announces
//!                                  it on the LAN
//! ```
//!
//! Nothing enters the store before it verified; a failed pass commits
//! nothing of the release it failed on, and keeps what it downloaded in
//! `partial-origin/` for the next pass to continue (a file that failed its
//! check is deleted).

use std::path::PathBuf;

use lanseed_protocol::limits::{MAX_MANIFEST_BYTES, MAX_SIGNED_RELEASE_BYTES};
use lanseed_protocol::release::VerifyError;
use lanseed_protocol::store::{Batch, StoreError};
use lanseed_protocol::{BundleId, Hash, Manifest, SignedRelease, Store, TrustList};
use tokio::sync::watch;

use super::OriginStatus;
use super::blob::{self, BlobError};
use super::http::{HttpError, Origin, Small, Validators};
use super::plan::{self, BlobSource, PlanError, Wanted};
use crate::node::Follow;

/// The folder of the store where downloads in progress are kept.
pub const PARTIAL_DIR: &str = "partial-origin";

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Talking to the origin failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The origin's index or a file list is refused.
    #[error("{url}: {source}")]
    Plan {
        /// Where it came from.
        url: String,
        /// What is wrong.
        source: PlanError,
    },
    /// A release record is refused.
    #[error("{url}: {reason}")]
    Record {
        /// Where it came from.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A release is not trusted, or its signature does not verify.
    #[error("{url}: release {app} {version} ({channel}) refused: {source}")]
    Untrusted {
        /// Where it came from.
        url: String,
        /// App.
        app: String,
        /// Version.
        version: String,
        /// Channel.
        channel: String,
        /// Why.
        source: VerifyError,
    },
    /// A manifest is refused.
    #[error("{url}: {reason}")]
    Manifest {
        /// Where it came from.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob is refused.
    #[error("{url}: the blob {source}; deleted, nothing stored")]
    Blob {
        /// Where it came from.
        url: String,
        /// What is wrong.
        source: BlobError,
    },
    /// Checking or staging a blob failed on this side.
    #[error(transparent)]
    Staging(BlobError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `None` when `index.json` was not modified.
    pub validators: Option<Validators>,
    /// `index.json`'s `Cache-Control`.
    pub cache_control: Option<String>,
    /// Releases committed.
    pub added: Vec<String>,
}

/// One pass; `validators` from the last good pass make the index GET
/// conditional.
pub struct Pass<'a> {
    /// The origin.
    pub origin: &'a Origin,
    /// The store.
    pub store: &'a Store,
    /// Keys whose releases may enter.
    pub trust: &'a TrustList,
    /// Apps and channels taken.
    pub follow: &'a [Follow],
    /// Where progress goes.
    pub status: &'a watch::Sender<OriginStatus>,
}

impl Pass<'_> {
    /// Runs the pass.
    pub async fn run(&self, validators: Option<&Validators>) -> Result<Outcome, SyncError> {
        let (bytes, validators, cache_control) = match self
            .origin
            .get_small("index.json", plan::MAX_INDEX_BYTES, validators)
            .await?
        {
            Small::NotModified { cache_control } => {
                return Ok(Outcome {
                    cache_control,
                    ..Outcome::default()
                });
            }
            Small::Body {
                bytes,
                validators,
                cache_control,
            } => (bytes, validators, cache_control),
        };
        let url = |p: &str| {
            self.origin
                .url(p)
                .map(|u| u.to_string())
                .unwrap_or_default()
        };
        let plan_err = |source| SyncError::Plan {
            url: url("index.json"),
            source,
        };
        self.status.send_modify(|s| {
            s.blobs_pending = 0;
            s.bytes_pending = 0;
        });
        let index = plan::parse_index(&bytes).map_err(plan_err)?;
        drop(bytes);
        let held = self.store.releases()?;
        let wanted = plan::wanted(&index, &held, self.follow).map_err(plan_err)?;
        drop(index);
        let mut added = Vec::new();
        let mut first_error = None;
        // One bad release (a channel signed by another key, say) does not
        // hold the others back.
        for w in &wanted {
            match self.release(w).await {
                Ok(signed) => {
                    let r = signed.release();
                    let line = format!("{} {} ({})", r.app, r.version, r.channel);
                    tracing::info!("origin: added {line}");
                    added.push(line);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Every release wanted is in: what is left in the folder is of no
        // use.
        let _ = tokio::fs::remove_dir_all(self.partial_dir()).await;
        Ok(Outcome {
            validators: Some(validators),
            cache_control,
            added,
        })
    }

    fn partial_dir(&self) -> PathBuf {
        self.store.root().join(PARTIAL_DIR)
    }

    /// Fetches, verifies and commits one release.
    async fn release(&self, w: &Wanted) -> Result<SignedRelease, SyncError> {
        let path = format!("releases/{}", w.release_id);
        let url = self.origin.url(&path)?.to_string();
        let record = self.small(&path, MAX_SIGNED_RELEASE_BYTES as u64).await?;
        let signed = SignedRelease::from_bytes(&record).map_err(|e| SyncError::Record {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let r = signed.release();
        if signed.id() != w.release_id || r.app != w.app || r.channel != w.channel || r.seq != w.seq
        {
            return Err(SyncError::Record {
                url,
                reason: "the record is not the release index.json lists there".into(),
            });
        }
        let verified = signed
            .verify(self.trust)
            .map_err(|source| SyncError::Untrusted {
                url: url.clone(),
                app: r.app.clone(),
                version: r.version.clone(),
                channel: r.channel.clone(),
                source,
            })?;
        self.status.send_modify(|s| {
            s.syncing = Some(format!("{} {} ({})", r.app, r.version, r.channel));
        });
        let batch = self.store.begin()?;
        let mut inflated = Vec::new();
        for bundle in r.bundles() {
            if self.store.check_complete(&bundle).is_ok() {
                continue;
            }
            self.bundle(&batch, &bundle, &mut inflated).await?;
        }
        tokio::task::block_in_place(|| batch.commit(&verified))?;
        for p in inflated {
            let _ = std::fs::remove_file(p);
        }
        self.status.send_modify(|s| {
            s.syncing = None;
            s.releases_added += 1;
        });
        Ok(verified.signed().clone())
    }

    /// Fetches what the store lacks of `bundle` into `batch`; the gzip
    /// downloads it inflated go to `inflated` (removed once committed).
    async fn bundle(
        &self,
        batch: &Batch,
        bundle: &BundleId,
        inflated: &mut Vec<PathBuf>,
    ) -> Result<(), SyncError> {
        let path = format!("manifests/{bundle}");
        let url = self.origin.url(&path)?.to_string();
        let bytes = self.small(&path, MAX_MANIFEST_BYTES as u64).await?;
        if Hash::of(&bytes) != bundle.0 {
            return Err(SyncError::Manifest {
                url,
                reason: "its bytes do not hash to the bundle id the signed release names".into(),
            });
        }
        let manifest = Manifest::from_bytes(&bytes).map_err(|e| SyncError::Manifest {
            url,
            reason: e.to_string(),
        })?;
        let path = format!("bundles/{bundle}.json");
        let max = plan::max_listing_bytes(manifest.files().len());
        let listing = self.small(&path, max).await?;
        let sources =
            plan::blob_sources(bundle, &manifest, &listing).map_err(|source| SyncError::Plan {
                url: self
                    .origin
                    .url(&path)
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                source,
            })?;
        drop(listing);
        let missing: Vec<BlobSource> = sources
            .into_iter()
            .filter(|s| !self.store.has_blob(&s.hash))
            .collect();
        self.status.send_modify(|s| {
            s.blobs_pending += missing.len() as u64;
            s.bytes_pending += missing.iter().map(|m| m.size).sum::<u64>();
        });
        let dir = self.partial_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(StoreError::io("cannot create", &dir))?;
        for src in &missing {
            self.blob(batch, src, inflated).await?;
            self.status.send_modify(|s| {
                s.blobs_pending = s.blobs_pending.saturating_sub(1);
                s.bytes_pending = s.bytes_pending.saturating_sub(src.size);
                s.blobs_fetched += 1;
            });
        }
        batch.put_manifest(&manifest)?;
        Ok(())
    }

    /// Downloads one blob, checks it and stages it.
    async fn blob(
        &self,
        batch: &Batch,
        src: &BlobSource,
        inflated: &mut Vec<PathBuf>,
    ) -> Result<(), SyncError> {
        let rel = src.path();
        let name = rel.rsplit('/').next().expect("a blob path has a name");
        let part = self.partial_dir().join(name);
        self.origin
            .download(&rel, &part, src.max_download())
            .await?;
        let checked = tokio::task::block_in_place(|| -> Result<(), BlobError> {
            if src.gzip {
                let mut w = batch.blob_writer().map_err(store_io)?;
                blob::inflate_into(&part, &src.hash, src.size, &mut w)?;
                batch.finish_blob(w, &src.hash).map_err(store_io)?;
                inflated.push(part.clone());
            } else {
                blob::check_plain(&part, &src.hash, src.size)?;
                batch
                    .stage_file(part.clone(), &src.hash)
                    .map_err(store_io)?;
            }
            Ok(())
        });
        match checked {
            Ok(()) => Ok(()),
            Err(e @ BlobError::Io { .. }) => Err(SyncError::Staging(e)),
            Err(source) => {
                let _ = std::fs::remove_file(&part);
                Err(SyncError::Blob {
                    url: self.origin.url(&rel)?.to_string(),
                    source,
                })
            }
        }
    }

    /// GETs a small file of the tree, unconditionally.
    async fn small(&self, path: &str, max: u64) -> Result<Vec<u8>, SyncError> {
        Ok(self.origin.get(path, max).await?)
    }
}

/// A store error while staging, as a blob error.
fn store_io(e: StoreError) -> BlobError {
    match e {
        StoreError::Io {
            action,
            path,
            source,
        } => BlobError::Io {
            action,
            path,
            source,
        },
        other => BlobError::Io {
            action: "cannot stage",
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}
