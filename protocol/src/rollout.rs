//! New release statements for bundles a store already holds: another
//! rollout share for a channel's current bundle (`lanseed rollout
//! --percent`), or going back to an older good bundle (`--back-to`).
//!
//! A signed release never changes, so both sign a new statement with a
//! higher sequence number (max(highest held + 1, now), the SPEC rule):
//! devices take the newest statement, and a device never moves to a lower
//! sequence, so going back is a new release pointing at the old bundle,
//! never a downgrade. Devices already on the statement's bundle only
//! record the new sequence (no reinstall, no reload: see the updater).
//! Everything else the statement says (version, minimum native version,
//! expiry, notes, and any other section it carries) is kept.

use crate::keys::SecretKey;
use crate::release::{Release, ReleaseError, Rollout, SignedRelease, VerifiedRelease, VerifyError};
use crate::store::{CommitOutcome, Store, StoreError, next_seq};

/// Why no new statement was made.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The store holds no release of the app and channel.
    #[error("the store holds no release of {app} on channel {channel}")]
    NoRelease {
        /// App.
        app: String,
        /// Channel.
        channel: String,
    },
    /// No release of that version on the channel.
    #[error(
        "the store holds no release {version} of {app} on channel {channel} (lanseed releases --app {app} --channel {channel} lists them)"
    )]
    NoVersion {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// The version asked for.
        version: String,
    },
    /// The channel already points at that bundle.
    #[error(
        "{app} on {channel} already points at {version}'s bundle: nothing to go back from (to change who gets it, use --percent)"
    )]
    AlreadyThere {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// The version.
        version: String,
    },
    /// The channel's newest statement is of another bundle than expected
    /// (someone published meanwhile).
    #[error("{app} on {channel} moved on to {version} (published meanwhile)")]
    MovedOn {
        /// App.
        app: String,
        /// Channel.
        channel: String,
        /// The newest statement's version.
        version: String,
    },
    /// The store failed, or lacks the bundle's files.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The new statement is invalid.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The new signature does not verify (a broken key file).
    #[error("the new release does not verify with its own key: {0}")]
    Verify(#[from] VerifyError),
}

/// The newest statement of `app` on `channel` among `held`.
pub fn newest<'a>(held: &'a [SignedRelease], app: &str, channel: &str) -> Option<&'a Release> {
    held.iter()
        .map(SignedRelease::release)
        .filter(|r| r.app == app && r.channel == channel)
        .max_by_key(|r| r.seq)
}

/// [`newest`], or the error that there is none.
fn current<'a>(
    held: &'a [SignedRelease],
    app: &str,
    channel: &str,
) -> Result<&'a Release, RolloutError> {
    newest(held, app, channel).ok_or_else(|| RolloutError::NoRelease {
        app: app.into(),
        channel: channel.into(),
    })
}

/// What `--percent` signs: the newest statement with `share`, a new
/// sequence and creation time.
pub fn with_share(
    held: &[SignedRelease],
    app: &str,
    channel: &str,
    share: Rollout,
    now: u64,
) -> Result<Release, RolloutError> {
    let current = current(held, app, channel)?;
    Ok(Release {
        seq: next_seq(held, app, channel, now),
        created: now,
        rollout: share,
        ..current.clone()
    })
}

/// [`with_share`], for the channel's current bundle only when it is
/// `bundle` ([`RolloutError::MovedOn`] otherwise).
pub fn with_share_of(
    held: &[SignedRelease],
    app: &str,
    channel: &str,
    bundle: &crate::BundleId,
    share: Rollout,
    now: u64,
) -> Result<Release, RolloutError> {
    let current = current(held, app, channel)?;
    if current.bundle_id != *bundle {
        return Err(RolloutError::MovedOn {
            app: app.into(),
            channel: channel.into(),
            version: current.version.clone(),
        });
    }
    with_share(held, app, channel, share, now)
}

/// What `--back-to VERSION` signs: the newest statement of that version,
/// to every device, with a new sequence and creation time.
pub fn back_to(
    held: &[SignedRelease],
    app: &str,
    channel: &str,
    version: &str,
    now: u64,
) -> Result<Release, RolloutError> {
    let current = current(held, app, channel)?;
    let target = held
        .iter()
        .map(SignedRelease::release)
        .filter(|r| r.app == app && r.channel == channel && r.version == version)
        .max_by_key(|r| r.seq)
        .ok_or_else(|| RolloutError::NoVersion {
            app: app.into(),
            channel: channel.into(),
            version: version.into(),
        })?;
    if target.bundle_id == current.bundle_id {
        return Err(RolloutError::AlreadyThere {
            app: app.into(),
            channel: channel.into(),
            version: version.into(),
        });
    }
    Ok(Release {
        seq: next_seq(held, app, channel, now),
        created: now,
        rollout: Rollout::FULL,
        ..target.clone()
    })
}

/// Signs what `make` builds from the store's releases with `signer` and
/// commits it, under the store's index lock (so the sequence number is
/// one no concurrent writer takes) and its collection guard (so the
/// bundle's files stay while it is checked whole).
pub fn publish(
    store: &Store,
    signer: &SecretKey,
    make: impl FnOnce(&[SignedRelease]) -> Result<Release, RolloutError>,
) -> Result<(VerifiedRelease, CommitOutcome), RolloutError> {
    let _guard = store.read_guard()?;
    store.commit_release_with(|held| make(held)?.sign_verified(signer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{PackOptions, pack_dir};

    const APP: &str = "com.example.kiosk";

    fn pack(store: &Store, dir: &std::path::Path, version: &str, seq: u64) -> VerifiedRelease {
        let build = dir.join(version);
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("index.html"), version).unwrap();
        let opts = PackOptions {
            app: APP.into(),
            channel: "production".into(),
            version: version.into(),
            seq: Some(seq),
            created: 10,
            min_native_version: Some("2.0.0".into()),
            rollout: Rollout::FULL,
            expires: None,
            notes: Some("notes".into()),
            capgo: None,
        };
        pack_dir(
            store,
            &build,
            &opts,
            &SecretKey::from_seed(&[3; 32]),
            &|_| {},
        )
        .unwrap()
        .release
    }

    #[test]
    fn a_share_is_a_new_statement_of_the_current_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        pack(&store, dir.path(), "1.0.0", 100);
        let v2 = pack(&store, dir.path(), "2.0.0", 200);
        let key = SecretKey::from_seed(&[3; 32]);
        let half = Rollout::from_basis_points(5_000).unwrap();
        let (r, outcome) = publish(&store, &key, |held| {
            with_share(held, APP, "production", half, 50)
        })
        .unwrap();
        assert_eq!(outcome, CommitOutcome::Added);
        let r = r.release();
        assert_eq!(r.bundle_id, v2.release().bundle_id);
        assert_eq!((r.version.as_str(), r.rollout, r.seq), ("2.0.0", half, 201));
        assert_eq!(r.min_native_version.as_deref(), Some("2.0.0"));
        assert_eq!(r.notes.as_deref(), Some("notes"));
        // A pause: 0 %.
        let (r, _) = publish(&store, &key, |held| {
            with_share(
                held,
                APP,
                "production",
                Rollout::from_basis_points(0).unwrap(),
                10_000,
            )
        })
        .unwrap();
        assert_eq!(r.release().seq, 10_000, "the clock, when it is ahead");
        assert!(matches!(
            publish(&store, &key, |held| with_share(held, APP, "beta", half, 1)),
            Err(RolloutError::NoRelease { .. })
        ));
    }

    #[test]
    fn back_to_points_a_higher_sequence_at_the_older_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let v1 = pack(&store, dir.path(), "1.0.0", 100);
        pack(&store, dir.path(), "2.0.0", 200);
        let key = SecretKey::from_seed(&[3; 32]);
        let (r, _) = publish(&store, &key, |held| {
            back_to(held, APP, "production", "1.0.0", 5)
        })
        .unwrap();
        let r = r.release();
        assert_eq!(r.bundle_id, v1.release().bundle_id);
        assert_eq!(
            (r.version.as_str(), r.seq, r.rollout),
            ("1.0.0", 201, Rollout::FULL)
        );
        // Now the channel is on 1.0.0's bundle: going back to it again is a mistake.
        let e = publish(&store, &key, |held| {
            back_to(held, APP, "production", "1.0.0", 5)
        })
        .unwrap_err();
        assert!(matches!(e, RolloutError::AlreadyThere { .. }), "{e}");
        let e = publish(&store, &key, |held| {
            back_to(held, APP, "production", "0.9.0", 5)
        })
        .unwrap_err();
        assert!(e.to_string().contains("no release 0.9.0"), "{e}");
        // A bundle whose files are gone is refused by the store.
        std::fs::remove_dir_all(dir.path().join("s").join("blobs")).unwrap();
        let e = publish(&store, &key, |held| {
            back_to(held, APP, "production", "2.0.0", 5)
        })
        .unwrap_err();
        assert!(matches!(e, RolloutError::Store(_)), "{e}");
    }
}
