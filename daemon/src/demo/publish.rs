//! The publisher's side of the demo, as a real publisher does it: a
//! publisher key and a fleet key, the builds written out, each packed and
//! signed into the publisher's own store, and each exported as a release
//! file. Publishing a release is importing its file into the seeder's
//! store while the seeder runs (the way a release reaches an offline
//! site): the seeder announces it to its peers within milliseconds.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lanseed_protocol::pack::{PackOptions, pack_scanned, scan_dir};
use lanseed_protocol::release::{DEFAULT_CHANNEL, Rollout};
use lanseed_protocol::release_file::{self, ReleaseFile};
use lanseed_protocol::zip::ZipLimits;
use lanseed_protocol::{SecretKey, Store, TrustList};

use super::app::{APP, Build};
use super::error::DemoError;
use super::report::Published;

/// The keys of a run.
pub struct Keys {
    /// The publisher's secret key.
    pub publisher: SecretKey,
    /// Its trust file (the public key line).
    pub trust: PathBuf,
    /// The fleet key: only the run's own nodes connect to each other.
    pub fleet: PathBuf,
}

/// A release packed and exported, ready to publish.
pub struct Release {
    /// What it is.
    pub published: Published,
    /// Its release file.
    pub file: PathBuf,
}

/// Makes the publisher key (`DIR/publisher/publisher.key` and `.pub`)
/// and the fleet key (`DIR/fleet.key`).
pub fn keys(dir: &Path) -> Result<Keys, DemoError> {
    let home = dir.join("publisher");
    std::fs::create_dir_all(&home).map_err(DemoError::io("cannot create", &home))?;
    let key_path = home.join("publisher.key");
    let publisher = SecretKey::generate().map_err(DemoError::publish("make a publisher key"))?;
    let trust = publisher
        .write(&key_path, false)
        .map_err(DemoError::publish("write the publisher key"))?;
    let fleet = dir.join("fleet.key");
    crate::cmd::write_fleet_key(&fleet, false).map_err(|e| DemoError::Publish {
        what: "write the fleet key".into(),
        source: e.into(),
    })?;
    Ok(Keys {
        publisher,
        trust,
        fleet,
    })
}

/// Writes `build` under `DIR/apps/`; returns its folder.
pub fn write_build(dir: &Path, build: Build) -> Result<PathBuf, DemoError> {
    let folder = dir.join("apps").join(build.folder());
    build
        .write(&folder)
        .map_err(DemoError::io("cannot write the build", &folder))?;
    Ok(folder)
}

/// Packs `build` into the publisher's store and exports its release file
/// to `DIR/publisher/FOLDER.lanseed`.
pub fn pack(dir: &Path, keys: &Keys, build: Build) -> Result<Release, DemoError> {
    let folder = write_build(dir, build)?;
    let store_path = dir.join("publisher").join("store");
    let store =
        Store::create(&store_path).map_err(DemoError::publish("create the publisher's store"))?;
    let opts = PackOptions {
        app: APP.to_owned(),
        channel: DEFAULT_CHANNEL.to_owned(),
        version: build.version().to_owned(),
        seq: None,
        created: crate::cmd::now(),
        min_native_version: None,
        rollout: Rollout::FULL,
        expires: None,
        notes: Some(format!("lanseed demo: {}", build.folder())),
        capgo: None,
    };
    let what = format!("pack {}", folder.display());
    let scanned = scan_dir(&folder).map_err(DemoError::publish(what.clone()))?;
    let packed = pack_scanned(&store, scanned, &opts, &keys.publisher, &|_| {})
        .map_err(DemoError::publish(what))?;
    let file = dir
        .join("publisher")
        .join(format!("{}.lanseed", build.folder()));
    release_file::export(&store, packed.release.signed(), &file)
        .map_err(DemoError::publish(format!("export {}", file.display())))?;
    let r = packed.release.release();
    Ok(Release {
        published: Published {
            version: r.version.clone(),
            bundle_id: r.bundle_id.to_string(),
            seq: r.seq,
            files: packed.manifest.files().len(),
            bundle_bytes: packed.manifest.total_size(),
            healthy: build.healthy(),
            at: SystemTime::UNIX_EPOCH,
        },
        file,
    })
}

/// Publishes `release`: imports its file, checked against the trust
/// file, into the seeder's store. Returns when it is committed there.
pub fn publish(release: &Release, keys: &Keys, seeder_store: &Path) -> Result<(), DemoError> {
    let what = format!("publish {}", release.file.display());
    let trust = TrustList::read(&keys.trust).map_err(DemoError::publish(what.clone()))?;
    let file = ReleaseFile::open(&release.file, &trust, ZipLimits::default())
        .map_err(DemoError::publish(what.clone()))?;
    let store = Store::open(seeder_store).map_err(DemoError::publish(what.clone()))?;
    file.import(&store).map_err(DemoError::publish(what))?;
    Ok(())
}
