//! Adding Capgo artefacts to a release already packed
//! (`lanseed capgo-encrypt`).
//!
//! A signed release cannot change, so the artefacts come in a new release
//! statement: the same app, channel, version, bundle and settings, a new
//! creation time, the Capgo section, and a higher sequence number
//! (max(highest held + 1, now), the SPEC rule), so that nodes take it over
//! the one without artefacts. Only the newest release of its app and
//! channel may be re-signed: a higher sequence number would otherwise make
//! an older version the newest again.

use crate::capgo::key::CapgoPrivateKey;
use crate::capgo::payload::{PayloadError, make_section};
use crate::keys::SecretKey;
use crate::release::{Release, ReleaseError, SignedRelease, VerifiedRelease, VerifyError};
use crate::store::{CommitOutcome, Store, StoreError, next_seq};

/// Why a release could not be re-signed with Capgo artefacts.
#[derive(Debug, thiserror::Error)]
pub enum EncryptReleaseError {
    /// The artefacts could not be made.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The new statement is invalid.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The new signature does not verify (a broken key file).
    #[error("the new release does not verify with its own key: {0}")]
    Verify(#[from] VerifyError),
    /// A newer release of the app and channel exists.
    #[error(
        "{app} {version} is not the newest release on {channel} ({newer} is): re-signing it with a higher sequence number would make it the newest again; encrypt {newer} instead, or pack again with --capgo-key"
    )]
    NotNewest {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// The version asked for.
        version: String,
        /// The newest version.
        newer: String,
    },
}

/// Makes the Capgo artefacts of `release`'s bundle (held whole by `store`)
/// with `capgo`, and commits a new release statement carrying them, signed
/// with `signer`, created at `now`.
pub fn encrypt_release(
    store: &Store,
    release: &SignedRelease,
    capgo: &CapgoPrivateKey,
    signer: &SecretKey,
    now: u64,
) -> Result<(VerifiedRelease, CommitOutcome), EncryptReleaseError> {
    let old = release.release();
    let batch = store.begin()?;
    let section = make_section(store, &batch, &old.bundle_id, capgo)?;
    batch.commit_with(|held| {
        if let Some(n) = crate::rollout::newest(held, &old.app, &old.channel)
            && n.seq > old.seq
        {
            return Err(EncryptReleaseError::NotNewest {
                app: old.app.clone(),
                channel: old.channel.clone(),
                version: old.version.clone(),
                newer: n.version.clone(),
            });
        }
        let statement = Release {
            seq: next_seq(held, &old.app, &old.channel, now),
            created: now,
            capgo: Some(section),
            ..old.clone()
        };
        statement.sign_verified(signer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capgo::payload::served;
    use crate::pack::{PackOptions, pack_dir};
    use crate::release::Rollout;

    fn capgo_key() -> CapgoPrivateKey {
        CapgoPrivateKey::from_pem(include_str!("../../tests/data/capgo/cli-key.pem")).unwrap()
    }

    fn pack(store: &Store, dir: &std::path::Path, version: &str, seq: u64) -> VerifiedRelease {
        let build = dir.join(version);
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("index.html"), version).unwrap();
        let opts = PackOptions {
            app: "com.example.app".into(),
            channel: "production".into(),
            version: version.into(),
            seq: Some(seq),
            created: 10,
            min_native_version: Some("2.0.0".into()),
            rollout: Rollout::from_basis_points(5_000).unwrap(),
            expires: None,
            notes: Some("notes".into()),
            capgo: None,
        };
        let key = SecretKey::from_seed(&[3; 32]);
        pack_dir(store, &build, &opts, &key, &|_| {})
            .unwrap()
            .release
    }

    #[test]
    fn the_new_statement_keeps_everything_but_seq_time_and_section() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let old = pack(&store, dir.path(), "1.0.0", 100);
        let signer = SecretKey::from_seed(&[3; 32]);
        let (new, outcome) = encrypt_release(&store, &old, &capgo_key(), &signer, 50).unwrap();
        assert_eq!(outcome, CommitOutcome::Added);
        let (o, n) = (old.release(), new.release());
        assert_eq!(n.seq, 101, "above the highest held even when now is lower");
        assert_eq!(n.created, 50);
        assert_eq!(
            Release {
                seq: o.seq,
                created: o.created,
                capgo: None,
                ..n.clone()
            },
            *o
        );
        assert!(served(&store, &new).unwrap().is_some());
        assert_eq!(store.releases().unwrap().len(), 2);
    }

    #[test]
    fn only_the_newest_release_may_be_re_signed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let old = pack(&store, dir.path(), "1.0.0", 1);
        pack(&store, dir.path(), "1.1.0", 2);
        let signer = SecretKey::from_seed(&[3; 32]);
        let err = encrypt_release(&store, &old, &capgo_key(), &signer, 50).unwrap_err();
        assert!(
            matches!(&err, EncryptReleaseError::NotNewest { newer, .. } if newer == "1.1.0"),
            "{err}"
        );
        assert_eq!(store.releases().unwrap().len(), 2);
    }
}
