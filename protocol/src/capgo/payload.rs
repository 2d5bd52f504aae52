//! The payload bundle: how the encrypted zip travels, and how a gateway
//! finds it.
//!
//! The encrypted zip is a file of a bundle of its own, so it is fetched,
//! verified piece by piece, seeded, exported, published and collected by
//! the code that does all that for every bundle. Every manifest must hold
//! an `index.html` at its root (a rule every node's decoder enforces), so
//! the payload holds two files: [`PAYLOAD_FILE`], the encrypted zip, and a
//! fixed [`PLACEHOLDER_HTML`] as `index.html` (the same bytes in every
//! payload: one blob per store).
//!
//! [`CapgoSection`] is the part of a release that names the payload and
//! carries the strings of the update answer; [`make_section`] makes both
//! on the publisher's machine, [`served`] gives a gateway what it serves.

use std::io::{Read, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::CapgoError;
use super::cipher::{self, CbcStream, SessionKey};
use super::key::CapgoPrivateKey;
use crate::hash::BundleId;
use crate::manifest::{FileDigest, FileDigester, Manifest};
use crate::path::BundlePath;
use crate::release::SignedRelease;
#[cfg(test)]
use crate::release::VerifiedRelease;
use crate::release_file::{ReleaseFileError, export_bundle_zip};
use crate::store::{Batch, Store, StoreError};

/// The payload's file that holds the encrypted zip.
pub const PAYLOAD_FILE: &str = "bundle.zip.enc";

/// The payload's `index.html`.
pub const PLACEHOLDER_HTML: &[u8] = b"<!doctype html><title>lanseed Capgo payload</title>\n<p>This bundle carries a Capgo encryption v2 zip (bundle.zip.enc) for lanseed's Capgo-compatible gateway. It is not a web build.</p>\n";

/// The Capgo part of a signed release (see `protocol/FORMATS.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapgoSection {
    /// The payload bundle: [`PAYLOAD_FILE`] holds the encrypted zip.
    pub bundle_id: BundleId,
    /// The key id of the Capgo public key that opens it (what the plugin
    /// sends as `key_id`).
    pub key_id: String,
    /// The IV and the encrypted AES key.
    pub session_key: SessionKey,
    /// The SHA-256 of the plain zip, "private encrypted".
    pub encrypted_checksum: Vec<u8>,
}

impl CapgoSection {
    /// The update answer's `session_key`.
    pub fn session_key_text(&self) -> String {
        self.session_key.to_string()
    }

    /// The update answer's `checksum` (lowercase hex).
    pub fn checksum_text(&self) -> String {
        cipher::checksum_hex(&self.encrypted_checksum)
    }
}

/// Why the Capgo artefacts of a release could not be made or found.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Encryption failed.
    #[error(transparent)]
    Capgo(#[from] CapgoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bundle could not be written as a zip.
    #[error(transparent)]
    Zip(#[from] ReleaseFileError),
    /// The payload bundle is not a payload.
    #[error("bundle {0} is not a Capgo payload (no {PAYLOAD_FILE})")]
    NotAPayload(BundleId),
}

/// Encrypts bundle `main` (already in `store`, or published by `batch`)
/// with `key`, stages its payload bundle in `batch`, and returns the
/// release's section. The zip encrypted is the bundle's deterministic zip,
/// the same bytes any gateway would serve unencrypted; it is encrypted as
/// it is read, never held whole in memory.
pub fn make_section(
    store: &Store,
    batch: &Batch,
    main: &BundleId,
    key: &CapgoPrivateKey,
) -> Result<CapgoSection, PayloadError> {
    let tmp = store.root().join("tmp").join(format!(
        "capgo-{}-{}.zip",
        std::process::id(),
        main.to_string().get(..16).unwrap_or_default()
    ));
    let result = (|| {
        export_bundle_zip(store, main, &tmp).map_err(|e| match e {
            ReleaseFileError::Store(s) => PayloadError::Store(s),
            other => PayloadError::Zip(other),
        })?;
        let file = std::fs::File::open(&tmp).map_err(StoreError::io("cannot read", &tmp))?;
        section_from_reader(batch, file, key)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// [`make_section`] for the plain zip bytes `zip`.
pub fn section_for_zip(
    batch: &Batch,
    zip: &[u8],
    key: &CapgoPrivateKey,
) -> Result<CapgoSection, PayloadError> {
    section_from_reader(batch, zip, key)
}

/// [`make_section`] for the plain zip read from `zip`.
fn section_from_reader(
    batch: &Batch,
    mut zip: impl Read,
    key: &CapgoPrivateKey,
) -> Result<CapgoSection, PayloadError> {
    let mut aes_key = [0u8; 16];
    let mut iv = [0u8; 16];
    getrandom::fill(&mut aes_key).map_err(|e| CapgoError::Rsa(e.to_string()))?;
    getrandom::fill(&mut iv).map_err(|e| CapgoError::Rsa(e.to_string()))?;

    let mut stream = CbcStream::new(&aes_key, &iv);
    let mut plain_sha = Sha256::new();
    let mut digester = FileDigester::new();
    let mut writer = batch.blob_writer()?;
    let tmp = writer.path().to_owned();
    let io = |e| StoreError::io("cannot write", &tmp)(e);
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(buf.len() + 16);
    let mut write = |out: &[u8], writer: &mut crate::store::batch::BlobWriter| {
        digester.update(out);
        writer.write_all(out).map_err(io)
    };
    loop {
        let n = zip
            .read(&mut buf)
            .map_err(StoreError::io("cannot read", &tmp))?;
        if n == 0 {
            break;
        }
        plain_sha.update(&buf[..n]);
        out.clear();
        stream.update(&buf[..n], &mut out);
        write(&out, &mut writer)?;
    }
    out.clear();
    stream.finish(&mut out);
    write(&out, &mut writer)?;
    let enc = digester.finish();
    batch.finish_blob(writer, &enc.blake3)?;
    let placeholder = FileDigest::of_bytes(PLACEHOLDER_HTML);
    batch.put_blob(&placeholder.blake3, PLACEHOLDER_HTML)?;
    let path = |name: &str| BundlePath::new(name).expect("a valid fixed path");
    let manifest = Manifest::new(vec![
        placeholder.into_entry(path("index.html")),
        enc.into_entry(path(PAYLOAD_FILE)),
    ])
    .expect("two fixed, distinct paths with index.html make a valid manifest");
    let bundle_id = batch.put_manifest(&manifest)?;
    let sha: [u8; 32] = plain_sha.finalize().into();
    Ok(CapgoSection {
        bundle_id,
        key_id: key.public().key_id(),
        session_key: SessionKey {
            iv,
            encrypted_key: key.private_encrypt(&aes_key)?,
        },
        encrypted_checksum: cipher::encrypt_checksum(key, &sha)?,
    })
}

/// What a gateway serves for a release with a Capgo section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The encrypted zip, in the store (content-addressed: never changes
    /// while a read guard is held, see [`Store::read_guard`]).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256 (of the encrypted bytes, as the manifest signs it).
    pub sha256: [u8; 32],
    /// The answer's `session_key`.
    pub session_key: String,
    /// The answer's `checksum`.
    pub checksum: String,
    /// The key id the device must send (else answer `key_id_mismatch`).
    pub key_id: String,
}

/// The encrypted zip of `release` in `store` and the strings that go with
/// it; `None` when the release has no Capgo section. Fails when the store
/// does not hold the payload whole.
/// Takes a [`VerifiedRelease`] too (through `Deref`): a gateway serves only
/// those.
pub fn served(store: &Store, release: &SignedRelease) -> Result<Option<Served>, PayloadError> {
    let Some(section) = &release.release().capgo else {
        return Ok(None);
    };
    let manifest = store.check_complete(&section.bundle_id)?;
    let entry = manifest
        .get(PAYLOAD_FILE)
        .ok_or(PayloadError::NotAPayload(section.bundle_id))?;
    Ok(Some(Served {
        path: store.blob_path(&entry.blake3),
        size: entry.size,
        sha256: entry.sha256,
        session_key: section.session_key_text(),
        checksum: section.checksum_text(),
        key_id: section.key_id.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capgo::CapgoPublicKey;

    fn cli_key() -> CapgoPrivateKey {
        CapgoPrivateKey::from_pem(include_str!("../../tests/data/capgo/cli-key.pem")).unwrap()
    }

    #[test]
    fn a_section_made_from_a_zip_opens_with_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let zip = include_bytes!("../../tests/data/capgo/fixture.zip");
        let batch = store.begin().unwrap();
        let section = section_for_zip(&batch, zip, &cli_key()).unwrap();
        batch.publish().unwrap();
        let manifest = store.check_complete(&section.bundle_id).unwrap();
        assert_eq!(manifest.files().len(), 2);
        let enc =
            std::fs::read(store.blob_path(&manifest.get(PAYLOAD_FILE).unwrap().blake3)).unwrap();
        let public =
            CapgoPublicKey::from_pem(include_str!("../../tests/data/capgo/cli-key.pub")).unwrap();
        let plain = cipher::open(
            &public,
            &section.session_key_text(),
            &section.checksum_text(),
            &enc,
        )
        .unwrap();
        assert_eq!(plain, zip);
        assert_eq!(section.key_id, public.key_id());
    }

    /// Packs `dir`'s one-page build into `store` (with `capgo`, the
    /// artefacts), as `seq`.
    fn pack(
        store: &Store,
        dir: &std::path::Path,
        seq: u64,
        capgo: Option<CapgoPrivateKey>,
    ) -> VerifiedRelease {
        let build = dir.join(format!("build{seq}"));
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("index.html"), format!("page {seq}")).unwrap();
        let opts = crate::pack::PackOptions {
            app: "com.example.app".into(),
            channel: "production".into(),
            version: format!("1.0.{seq}"),
            seq: Some(seq),
            created: 1_700_000_000,
            min_native_version: None,
            rollout: crate::release::Rollout::FULL,
            expires: None,
            notes: None,
            capgo,
        };
        crate::pack::pack_dir(store, &build, &opts, &publisher(), &|_| {})
            .unwrap()
            .release
    }

    fn publisher() -> crate::SecretKey {
        crate::SecretKey::from_seed(&[5; 32])
    }

    /// What a device does with what a gateway serves: decrypt, check, and
    /// compare with the bundle's own zip.
    fn open_served(store: &Store, release: &VerifiedRelease) -> Vec<u8> {
        let served = served(store, release).unwrap().unwrap();
        let enc = std::fs::read(&served.path).unwrap();
        assert_eq!(enc.len() as u64, served.size);
        let public =
            CapgoPublicKey::from_pem(include_str!("../../tests/data/capgo/cli-key.pub")).unwrap();
        assert_eq!(served.key_id, public.key_id());
        cipher::open(&public, &served.session_key, &served.checksum, &enc).unwrap()
    }

    #[test]
    fn a_capgo_release_is_kept_verified_exported_and_published_with_its_payload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let plain = pack(&store, dir.path(), 1, None);
        assert_eq!(served(&store, &plain).unwrap(), None);
        let release = pack(&store, dir.path(), 2, Some(cli_key()));
        let section = release.release().capgo.clone().unwrap();
        assert_eq!(release.release().bundles().count(), 2);

        // The payload opens to the bundle's own deterministic zip.
        let zip_path = dir.path().join("bundle.zip");
        let sha = export_bundle_zip(&store, &release.release().bundle_id, &zip_path).unwrap();
        let zip = open_served(&store, &release);
        assert_eq!(zip, std::fs::read(&zip_path).unwrap());
        assert_eq!(Sha256::digest(&zip).as_slice(), sha);

        // A collection that keeps it keeps its payload; verify sees both.
        let report = store
            .gc(crate::store::GcOptions {
                keep: 1,
                dry_run: false,
            })
            .unwrap();
        assert_eq!(report.dropped.len(), 1);
        store.check_complete(&section.bundle_id).unwrap();
        let v = store.verify(None, &|_| {}).unwrap();
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.manifests, 2);
        assert_eq!(v.unreferenced_blobs, 0);

        // Exported and imported elsewhere, it comes with its payload.
        let file = dir.path().join("release.lsr");
        crate::release_file::export(&store, &release, &file).unwrap();
        let other = Store::create(&dir.path().join("other")).unwrap();
        let trust = crate::TrustList::single(publisher().public());
        let imported = crate::release_file::ReleaseFile::open(&file, &trust, Default::default())
            .unwrap()
            .import(&other)
            .unwrap();
        assert_eq!(imported.release.id(), release.id());
        assert_eq!(open_served(&other, &imported.release), zip);

        // Published as a static tree, the payload is there too.
        let tree = dir.path().join("tree");
        crate::static_tree::publish(&store, &tree).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tree.join("index.json")).unwrap()).unwrap();
        let listed = &index["releases"][0];
        assert_eq!(listed["capgo_bundle_id"], section.bundle_id.to_string());
        assert!(
            tree.join(format!("manifests/{}", section.bundle_id))
                .is_file()
        );
        assert!(
            tree.join(format!("bundles/{}.json", section.bundle_id))
                .is_file()
        );
    }

    #[test]
    fn a_release_whose_payload_is_missing_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let release = pack(&store, dir.path(), 1, Some(cli_key()));
        let payload = release.release().capgo.as_ref().unwrap().bundle_id;
        let other = Store::create(&dir.path().join("other")).unwrap();
        // The main bundle alone, copied over: not enough.
        let main = store.read_manifest(&release.release().bundle_id).unwrap();
        let batch = other.begin().unwrap();
        for f in main.files() {
            batch
                .put_blob(
                    &f.blake3,
                    &std::fs::read(store.blob_path(&f.blake3)).unwrap(),
                )
                .unwrap();
        }
        batch.put_manifest(&main).unwrap();
        let err = batch.commit(&release).unwrap_err();
        assert!(
            matches!(err, StoreError::MissingManifest(id) if id == payload),
            "{err}"
        );
        assert!(other.releases().unwrap().is_empty());
        assert!(matches!(
            served(&other, &release),
            Err(PayloadError::Store(_))
        ));
    }
}
