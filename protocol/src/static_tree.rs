//! The static origin tree: a store's releases as plain files that any web
//! server or bucket can host (`lanseed publish-static`), so that a site
//! cache behind a slow uplink fetches only the blobs it lacks.
//!
//! ```text
//! OUT/index.json                  every release (written last, atomically);
//!                                 one with Capgo artefacts also names its
//!                                 payload bundle (`capgo_bundle_id`),
//!                                 published like its own
//! OUT/releases/<release id>       signed release record
//! OUT/manifests/<bundle id>       canonical manifest bytes
//! OUT/bundles/<bundle id>.json    the bundle's files and where each blob is
//! OUT/blobs/<2 hex>/<blake3>      a blob as is, or
//! OUT/blobs/<2 hex>/<blake3>.gz   gzip-compressed, when that saves ≥ 10 %
//! ```
//!
//! Everything but `index.json` is named by content, so publishing again
//! into the same folder only adds what is new, and a reader verifies each
//! file against the hash it was asked for.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::hash::{BundleId, Hash};
use crate::release_file::{ReleaseFileError, write_atomically, write_renamed};
use crate::store::durable;
use crate::store::{Store, StoreError};

/// Format tag of `index.json`.
pub const FORMAT: &str = "lanseed-static/1";

/// `index.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StaticIndex {
    /// [`FORMAT`].
    pub format: String,
    /// Every release.
    pub releases: Vec<StaticRelease>,
}

/// One release in `index.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StaticRelease {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: String,
    /// Sequence number.
    pub seq: u64,
    /// Bundle id.
    pub bundle_id: String,
    /// Release id.
    pub release_id: String,
    /// Path of the signed record.
    pub record: String,
    /// Path of the manifest.
    pub manifest: String,
    /// Path of the bundle's file list.
    pub files: String,
    /// The Capgo payload bundle (encrypted zip) the release also needs,
    /// published like its own bundle; absent for releases without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capgo_bundle_id: Option<String>,
}

/// `bundles/<id>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StaticBundle {
    /// Bundle id.
    pub bundle_id: String,
    /// Its files, in manifest order.
    pub files: Vec<StaticFile>,
}

/// One file of a bundle in the static tree.
#[derive(Debug, Serialize, Deserialize)]
pub struct StaticFile {
    /// Path in the bundle.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 (hex).
    pub blake3: String,
    /// Where the blob is, relative to the tree's root.
    pub blob: String,
    /// `gzip` or `identity`.
    pub encoding: String,
}

/// What [`publish`] wrote.
#[derive(Debug, Default)]
pub struct Published {
    /// Releases listed.
    pub releases: usize,
    /// Blobs written this time (others were there already).
    pub blobs_written: usize,
    /// Of those, how many are compressed.
    pub blobs_compressed: usize,
    /// Bytes of the blobs written, as stored.
    pub bytes_written: u64,
}

/// Writes the static tree of every release of `store` into `out`.
pub fn publish(store: &Store, out: &Path) -> Result<Published, ReleaseFileError> {
    let _guard = store.read_guard()?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReleaseFileError::Write { path, source }
    };
    let mut report = Published::default();
    let mut index = StaticIndex {
        format: FORMAT.into(),
        releases: Vec::new(),
    };
    let mut bundles_done = HashSet::new();
    for dir in ["releases", "manifests", "bundles", "blobs"] {
        std::fs::create_dir_all(out.join(dir)).map_err(io(&out.join(dir)))?;
    }
    for signed in store.releases()? {
        let r = signed.release();
        let bundle = r.bundle_id;
        let record_path = format!("releases/{}", signed.id());
        write_if_missing(&out.join(&record_path), &signed.to_bytes())?;
        // Its own bundle and its Capgo payload, if any.
        for b in r.bundles() {
            if bundles_done.insert(b) {
                publish_bundle(store, &b, out, &mut report)?;
            }
        }
        index.releases.push(StaticRelease {
            app: r.app.clone(),
            channel: r.channel.clone(),
            version: r.version.clone(),
            seq: r.seq,
            bundle_id: bundle.to_string(),
            release_id: signed.id().to_string(),
            record: record_path,
            manifest: format!("manifests/{bundle}"),
            files: format!("bundles/{bundle}.json"),
            capgo_bundle_id: r.capgo.as_ref().map(|c| c.bundle_id.to_string()),
        });
    }
    report.releases = index.releases.len();
    durable::sync_data(out, &[]).map_err(io(out))?;
    let json = serde_json::to_vec_pretty(&index).expect("serializable");
    write_atomically(&out.join("index.json"), |f| f.write_all(&json))?;
    Ok(report)
}

/// Writes the manifest, the file list and the blobs of `bundle`.
fn publish_bundle(
    store: &Store,
    bundle: &BundleId,
    out: &Path,
    report: &mut Published,
) -> Result<(), ReleaseFileError> {
    let manifest = store.check_complete(bundle)?;
    write_if_missing(
        &out.join(format!("manifests/{bundle}")),
        &manifest.to_bytes(),
    )?;
    let mut files = Vec::with_capacity(manifest.files().len());
    for f in manifest.files() {
        let (blob, encoding) = publish_blob(store, &f.blake3, out, report)?;
        files.push(StaticFile {
            path: f.path.to_string(),
            size: f.size,
            blake3: f.blake3.to_string(),
            blob,
            encoding,
        });
    }
    let listing = StaticBundle {
        bundle_id: bundle.to_string(),
        files,
    };
    let json = serde_json::to_vec_pretty(&listing).expect("serializable");
    write_if_missing(&out.join(format!("bundles/{bundle}.json")), &json)
}

/// Content-named files are renamed into place without a sync each; one
/// file-system sync before `index.json` makes them all durable, and
/// readers check every file against the hash they asked for anyway.
fn write_if_missing(path: &Path, bytes: &[u8]) -> Result<(), ReleaseFileError> {
    if path.is_file() {
        return Ok(());
    }
    write_renamed(path, false, |f| f.write_all(bytes))
}

/// Writes one blob, compressed when that saves at least 10 %; returns its
/// path in the tree and its encoding.
fn publish_blob(
    store: &Store,
    hash: &Hash,
    out: &Path,
    report: &mut Published,
) -> Result<(String, String), ReleaseFileError> {
    let hex = hash.to_hex();
    let raw_rel = format!("blobs/{}/{hex}", &hex[..2]);
    let gz_rel = format!("{raw_rel}.gz");
    if out.join(&gz_rel).is_file() {
        return Ok((gz_rel, "gzip".into()));
    }
    if out.join(&raw_rel).is_file() {
        return Ok((raw_rel, "identity".into()));
    }
    let src = store.blob_path(hash);
    let read_err = |source| StoreError::Io {
        action: "cannot read",
        path: src.clone(),
        source,
    };
    let mut data = Vec::new();
    std::fs::File::open(&src)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(read_err)?;
    let dir = out.join(format!("blobs/{}", &hex[..2]));
    std::fs::create_dir_all(&dir).map_err(|source| ReleaseFileError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    // mtime 0 and no file name in the gzip header: the same blob always
    // compresses to the same bytes.
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
    gz.write_all(&data)
        .and_then(|_| gz.try_finish())
        .map_err(|source| ReleaseFileError::Write {
            path: gz_rel.clone(),
            source,
        })?;
    let compressed = gz.finish().unwrap_or_default();
    report.blobs_written += 1;
    if (compressed.len() as u64) * 10 <= (data.len() as u64) * 9 {
        report.blobs_compressed += 1;
        report.bytes_written += compressed.len() as u64;
        write_if_missing(&out.join(&gz_rel), &compressed)?;
        Ok((gz_rel, "gzip".into()))
    } else {
        report.bytes_written += data.len() as u64;
        write_if_missing(&out.join(&raw_rel), &data)?;
        Ok((raw_rel, "identity".into()))
    }
}
