//! The catalog's decisions: whether a release a peer offers is one to
//! fetch. Pure functions over the trust list and the releases held, no
//! I/O, tested below; the node applies them.
//!
//! The order is the point: what costs nothing comes first, so that a peer
//! repeating junk costs lookups, not Ed25519 checks. Whether the node
//! follows the app and channel is checked by the caller before this; then
//! the trust list (is this key pinned, for this app and channel?), then the
//! sequence (newer than what is held?), and only then the signature.
//!
//! A record whose key is not pinned, or pinned for other apps or channels,
//! or that is not newer, is *refused*: an honest peer that trusts other
//! keys, or is behind, announces exactly such records, so the peer is not
//! held to account for them. A record whose key is pinned for its app and
//! channel but whose signature does not verify can only be a forgery: its
//! sender is banned.

use lanseed_protocol::release::{Release, VerifyError};
use lanseed_protocol::{SignedRelease, TrustList, VerifiedRelease};

/// What to do with an offered release.
#[derive(Debug)]
pub enum Judgement {
    /// Fetch it (it is verified).
    Fetch(Box<VerifiedRelease>),
    /// Not for this node; why.
    Refuse(String),
    /// A forgery; why.
    Forged(String),
}

/// Judges `signed`, given the releases `held`.
pub fn judge<'a>(
    trust: &TrustList,
    signed: &SignedRelease,
    held: impl Iterator<Item = &'a Release>,
) -> Judgement {
    let r = signed.release();
    if let Err(e) = trust.check(&signed.publisher(), &r.app, &r.channel) {
        return Judgement::Refuse(e.to_string());
    }
    let highest = held
        .filter(|h| h.app == r.app && h.channel == r.channel)
        .map(|h| h.seq)
        .max();
    if let Some(h) = highest.filter(|h| *h >= r.seq) {
        return Judgement::Refuse(format!("not newer than the release held (seq {h})"));
    }
    match signed.verify(trust) {
        Ok(v) => Judgement::Fetch(Box::new(v)),
        Err(e @ VerifyError::BadSignature { .. }) => Judgement::Forged(e.to_string()),
        Err(e) => Judgement::Refuse(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use lanseed_protocol::hash::{BundleId, Hash};
    use lanseed_protocol::keys::SecretKey;
    use lanseed_protocol::release::Rollout;
    use lanseed_protocol::trust::TrustEntry;

    use super::*;

    fn release(app: &str, channel: &str, seq: u64) -> Release {
        Release {
            app: app.into(),
            channel: channel.into(),
            version: "1.0.0".into(),
            bundle_id: BundleId(Hash::of(b"bundle")),
            seq,
            created: 1,
            min_native_version: None,
            rollout: Rollout::FULL,
            expires: None,
            notes: None,
        }
    }

    fn trust(key: &SecretKey, channels: &[&str]) -> TrustList {
        let mut t = TrustList::default();
        t.push(TrustEntry {
            key: key.public(),
            apps: vec!["com.example.kiosk".into()],
            channels: channels.iter().map(|c| c.to_string()).collect(),
        });
        t
    }

    #[test]
    fn cheap_checks_first_and_only_forgeries_are_punished() {
        let key = SecretKey::from_seed(&[1; 32]);
        let stranger = SecretKey::from_seed(&[2; 32]);
        let t = trust(&key, &["production"]);
        let good = release("com.example.kiosk", "production", 10)
            .sign(&key)
            .unwrap();
        assert!(matches!(judge(&t, &good, [].iter()), Judgement::Fetch(_)));

        // Not newer than held: refused, whatever its signature.
        let held = [release("com.example.kiosk", "production", 10)];
        assert!(
            matches!(judge(&t, &good, held.iter()), Judgement::Refuse(w) if w.contains("not newer"))
        );
        let other_channel = [release("com.example.kiosk", "beta", 99)];
        assert!(matches!(
            judge(&t, &good, other_channel.iter()),
            Judgement::Fetch(_)
        ));

        // A key nobody pinned, or pinned for another channel: refused.
        let unknown = release("com.example.kiosk", "production", 11)
            .sign(&stranger)
            .unwrap();
        assert!(matches!(
            judge(&t, &unknown, [].iter()),
            Judgement::Refuse(_)
        ));
        let beta = release("com.example.kiosk", "beta", 11).sign(&key).unwrap();
        assert!(matches!(judge(&t, &beta, [].iter()), Judgement::Refuse(_)));

        // A pinned key's release with a broken signature: a forgery.
        let mut bytes = good.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let forged = SignedRelease::from_bytes(&bytes).unwrap();
        assert!(matches!(
            judge(&t, &forged, [].iter()),
            Judgement::Forged(_)
        ));
        // The same broken signature under a key nobody pinned is not even
        // checked.
        let mut bytes = unknown.to_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let junk = SignedRelease::from_bytes(&bytes).unwrap();
        assert!(matches!(judge(&t, &junk, [].iter()), Judgement::Refuse(_)));
    }
}
