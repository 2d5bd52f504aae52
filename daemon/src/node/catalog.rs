//! The catalog: which releases the node holds, which apps and channels it
//! follows, which offered releases it refused, and whether a release a peer
//! offers is one to fetch. No I/O (the store watch hands it the store's
//! releases), tested below; the node applies its decisions.
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

use std::collections::{HashMap, HashSet};

use lanseed_protocol::release::{Release, VerifyError};
use lanseed_protocol::{Hash, ReleaseId, SignedRelease, TrustList, VerifiedRelease};
use libp2p::PeerId;

/// Release records remembered as refused, so that a peer repeating one
/// costs a lookup, not a signature check.
pub const MAX_REFUSED: usize = 4096;

/// Bytes of announcements of releases not followed, remembered so that a
/// switch of what the node follows (a device changing channel) finds what
/// its peers already announced.
pub const MAX_UNFOLLOWED_BYTES: usize = 1 << 20;
/// Peers remembered per such announcement.
const MAX_UNFOLLOWED_PEERS: usize = 8;

/// An announcement of a release the node did not follow.
struct Unfollowed {
    app: String,
    channel: String,
    bytes: Vec<u8>,
    peers: Vec<PeerId>,
}

/// An app (and optionally one channel) the node fetches releases of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follow {
    /// App id.
    pub app: String,
    /// Channel; `None` follows every channel.
    pub channel: Option<String>,
    /// Releases at or below this sequence number are not wanted (a device
    /// installs only releases above the one it runs; 0 for a seeder,
    /// which wants them all).
    pub above: u64,
}

impl Follow {
    fn covers(&self, app: &str, channel: &str) -> bool {
        self.app == app && self.channel.as_deref().is_none_or(|c| c == channel)
    }

    /// Whether release `r` is at or below what this follow wants.
    fn below(&self, r: &Release) -> bool {
        self.covers(&r.app, &r.channel) && r.seq <= self.above
    }
}

/// What the node holds, follows and refused.
pub struct Catalog {
    follow: Vec<Follow>,
    trust: TrustList,
    held: HashMap<ReleaseId, SignedRelease>,
    /// Refused records, by the hash of the whole signed record (key and
    /// signature included): a copy of a genuine statement under another
    /// key must not get the genuine record refused too.
    refused: HashSet<Hash>,
    checking: HashSet<ReleaseId>,
    /// By the hash of the record.
    unfollowed: HashMap<Hash, Unfollowed>,
    /// Their hashes, oldest first.
    unfollowed_order: std::collections::VecDeque<Hash>,
    unfollowed_bytes: usize,
}

impl Catalog {
    /// A catalog holding nothing yet.
    pub fn new(follow: Vec<Follow>, trust: TrustList) -> Catalog {
        Catalog {
            follow,
            trust,
            held: HashMap::new(),
            refused: HashSet::new(),
            checking: HashSet::new(),
            unfollowed: HashMap::new(),
            unfollowed_order: std::collections::VecDeque::new(),
            unfollowed_bytes: 0,
        }
    }

    /// Remembers that `peer` announced `bytes`, a release of `app` and
    /// `channel` the node does not follow (bounded: the oldest are
    /// forgotten first; peers announce again when they reconnect).
    pub fn unfollowed(
        &mut self,
        record: Hash,
        app: &str,
        channel: &str,
        bytes: &[u8],
        peer: PeerId,
    ) {
        if let Some(u) = self.unfollowed.get_mut(&record) {
            if !u.peers.contains(&peer) && u.peers.len() < MAX_UNFOLLOWED_PEERS {
                u.peers.push(peer);
            }
            return;
        }
        if bytes.len() > MAX_UNFOLLOWED_BYTES {
            return;
        }
        while self.unfollowed_bytes + bytes.len() > MAX_UNFOLLOWED_BYTES {
            let Some(old) = self.unfollowed_order.pop_front() else {
                break;
            };
            if let Some(u) = self.unfollowed.remove(&old) {
                self.unfollowed_bytes -= u.bytes.len();
            }
        }
        self.unfollowed_bytes += bytes.len();
        self.unfollowed_order.push_back(record);
        self.unfollowed.insert(
            record,
            Unfollowed {
                app: app.to_owned(),
                channel: channel.to_owned(),
                bytes: bytes.to_vec(),
                peers: vec![peer],
            },
        );
    }

    /// Follows `follow` from now on; returns the remembered announcements
    /// it now covers (record bytes and the peers that sent them), to be
    /// judged again.
    pub fn set_follow(&mut self, follow: Vec<Follow>) -> Vec<(Vec<u8>, Vec<PeerId>)> {
        self.follow = follow;
        let covered: Vec<Hash> = (self.unfollowed.iter())
            .filter(|(_, u)| self.follow.iter().any(|f| f.covers(&u.app, &u.channel)))
            .map(|(h, _)| *h)
            .collect();
        covered
            .into_iter()
            .filter_map(|h| {
                self.unfollowed_order.retain(|o| *o != h);
                self.unfollowed.remove(&h)
            })
            .map(|u| {
                self.unfollowed_bytes -= u.bytes.len();
                (u.bytes, u.peers)
            })
            .collect()
    }

    /// Takes the releases the store holds now (those a collection dropped
    /// are no longer held); returns the ones that are new.
    pub fn set(&mut self, releases: Vec<SignedRelease>) -> Vec<SignedRelease> {
        let present: HashSet<ReleaseId> = releases.iter().map(SignedRelease::id).collect();
        self.held.retain(|id, _| present.contains(id));
        let mut new = Vec::new();
        for r in releases {
            if let std::collections::hash_map::Entry::Vacant(v) = self.held.entry(r.id()) {
                new.push(r.clone());
                v.insert(r);
            }
        }
        new
    }

    /// The releases held.
    pub fn held(&self) -> impl Iterator<Item = &SignedRelease> {
        self.held.values()
    }

    /// Whether release `id` is held.
    pub fn holds(&self, id: &ReleaseId) -> bool {
        self.held.contains_key(id)
    }

    /// Whether release `id` is held, or this very record (`record`: the
    /// hash of its signed bytes) was refused: nothing to do.
    pub fn settled(&self, id: &ReleaseId, record: &Hash) -> bool {
        self.held.contains_key(id) || self.refused.contains(record)
    }

    /// Whether the node fetches releases of `app` on `channel`.
    pub fn follows(&self, app: &str, channel: &str) -> bool {
        self.follow.iter().any(|f| f.covers(app, channel))
    }

    /// Judges an offered release against the trust list and what is held.
    pub fn judge(&self, signed: &SignedRelease) -> Judgement {
        let r = signed.release();
        if let Some(f) = self.follow.iter().find(|f| f.below(r)) {
            return Judgement::Older(format!(
                "not above the release the device runs (seq {})",
                f.above
            ));
        }
        judge(
            &self.trust,
            signed,
            self.held.values().map(SignedRelease::release),
        )
    }

    /// Remembers a refused release record (bounded: forgotten all at once
    /// when full, which costs at most one more check each).
    pub fn refuse(&mut self, record: Hash) {
        if self.refused.len() >= MAX_REFUSED {
            self.refused.clear();
        }
        self.refused.insert(record);
    }

    /// Whether a release held makes `r` moot ([`Release::supersedes`]),
    /// or the node's device runs a release at least as new.
    pub fn superseded(&self, r: &Release) -> bool {
        self.follow.iter().any(|f| f.below(r))
            || (self.held.values())
                .map(SignedRelease::release)
                .any(|h| h.supersedes(r))
    }

    /// Starts looking release `id` up in the store; false when a look-up
    /// of it runs already.
    pub fn start_checking(&mut self, id: ReleaseId) -> bool {
        self.checking.insert(id)
    }

    /// The look-up of release `id` ended.
    pub fn done_checking(&mut self, id: &ReleaseId) {
        self.checking.remove(id);
    }
}

/// What to do with an offered release.
#[derive(Debug)]
pub enum Judgement {
    /// Fetch it (it is verified).
    Fetch(Box<VerifiedRelease>),
    /// Not for this node; why.
    Refuse(String),
    /// Not newer than a release held: what a peer that is behind
    /// announces, all the time (refused, quietly); why.
    Older(String),
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
    if let Some(h) = held.filter(|h| h.supersedes(r)).map(|h| h.seq).max() {
        return Judgement::Older(format!("not newer than the release held (seq {h})"));
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
            capgo: None,
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
    fn a_newer_release_for_some_devices_does_not_make_the_older_one_moot() {
        let key = SecretKey::from_seed(&[1; 32]);
        let follow = vec![Follow {
            app: "com.example.kiosk".into(),
            channel: Some("production".into()),
            above: 0,
        }];
        let mut c = Catalog::new(follow, trust(&key, &["production"]));
        let v1 = release("com.example.kiosk", "production", 10)
            .sign(&key)
            .unwrap();
        let share = |seq, bp| {
            let mut r = release("com.example.kiosk", "production", seq);
            r.bundle_id = BundleId(Hash::of(b"v2"));
            r.rollout = Rollout::from_basis_points(bp).unwrap();
            r.sign(&key).unwrap()
        };
        let (ten, paused) = (share(11, 1_000), share(12, 0));
        c.set(vec![paused.clone()]);
        // A device outside 2.0.0's draw still needs 1.0.0: fetched, and
        // not abandoned midway.
        assert!(!c.superseded(v1.release()));
        assert!(matches!(c.judge(&v1), Judgement::Fetch(_)));
        // An earlier share of the paused bundle is moot.
        assert!(c.superseded(ten.release()));
        assert!(matches!(c.judge(&ten), Judgement::Older(_)));
        // Once 2.0.0 reaches everyone, 1.0.0 is.
        let full = share(13, 10_000);
        c.set(vec![paused, full]);
        assert!(c.superseded(v1.release()));
        // A device that runs seq 11 wants nothing at or below it, whatever
        // the store holds: not refetched after its collection drops it.
        let mut device = Catalog::new(
            vec![Follow {
                app: "com.example.kiosk".into(),
                channel: Some("production".into()),
                above: 11,
            }],
            trust(&key, &["production"]),
        );
        assert!(device.superseded(ten.release()) && device.superseded(v1.release()));
        assert!(matches!(device.judge(&v1), Judgement::Older(_)));
        device.set(vec![]);
        assert!(matches!(device.judge(&share(12, 0)), Judgement::Fetch(_)));
    }

    #[test]
    fn the_catalog_tracks_what_is_held_followed_and_refused() {
        let key = SecretKey::from_seed(&[1; 32]);
        let follow = vec![Follow {
            app: "com.example.kiosk".into(),
            channel: Some("production".into()),
            above: 0,
        }];
        let mut c = Catalog::new(follow, trust(&key, &["production"]));
        assert!(c.follows("com.example.kiosk", "production"));
        assert!(!c.follows("com.example.kiosk", "beta"));
        assert!(!c.follows("com.example.other", "production"));
        let v1 = release("com.example.kiosk", "production", 10)
            .sign(&key)
            .unwrap();
        let v2 = release("com.example.kiosk", "production", 11)
            .sign(&key)
            .unwrap();
        assert_eq!(c.set(vec![v1.clone()]).len(), 1);
        assert!(c.set(vec![v1.clone()]).is_empty(), "nothing new");
        assert!(c.holds(&v1.id()) && c.settled(&v1.id(), &Hash::of(b"any")));
        assert!(c.superseded(v1.release()));
        assert!(!c.superseded(v2.release()));
        assert!(matches!(c.judge(&v2), Judgement::Fetch(_)));
        assert!(matches!(c.judge(&v1), Judgement::Older(_)));
        // A collection dropped v1: no longer held.
        assert_eq!(c.set(vec![v2.clone()]).len(), 1);
        assert!(!c.holds(&v1.id()));
        // Refused records are remembered, within a bound, by their whole
        // signed bytes: the same statement under another key is another
        // record.
        let stranger = SecretKey::from_seed(&[9; 32]);
        let copy = v2.release().clone().sign(&stranger).unwrap();
        assert_eq!(copy.id(), v2.id(), "the id covers the statement only");
        c.refuse(Hash::of(&copy.to_bytes()));
        assert!(c.settled(&copy.id(), &Hash::of(&copy.to_bytes())));
        let v3 = release("com.example.kiosk", "production", 12)
            .sign(&key)
            .unwrap();
        let copy3 = v3.release().clone().sign(&stranger).unwrap();
        c.refuse(Hash::of(&copy3.to_bytes()));
        assert!(
            !c.settled(&v3.id(), &Hash::of(&v3.to_bytes())),
            "the genuine record is not refused"
        );
        for i in 0..MAX_REFUSED as u64 {
            c.refuse(Hash::of(&i.to_le_bytes()));
            assert!(c.refused.len() <= MAX_REFUSED);
        }
        assert!(c.start_checking(v2.id()));
        assert!(!c.start_checking(v2.id()));
        c.done_checking(&v2.id());
        assert!(c.start_checking(v2.id()));
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
            matches!(judge(&t, &good, held.iter()), Judgement::Older(w) if w.contains("not newer"))
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

    #[test]
    fn a_switch_of_follow_replays_what_peers_announced_and_the_memory_is_bounded() {
        let mut c = Catalog::new(
            vec![Follow {
                app: "com.example.kiosk".into(),
                channel: Some("production".into()),
                above: 0,
            }],
            TrustList::default(),
        );
        let (p1, p2) = (PeerId::random(), PeerId::random());
        let beta = Hash::of(b"beta record");
        c.unfollowed(beta, "com.example.kiosk", "beta", b"beta record", p1);
        c.unfollowed(beta, "com.example.kiosk", "beta", b"beta record", p2);
        c.unfollowed(beta, "com.example.kiosk", "beta", b"beta record", p1);
        let dev = Hash::of(b"dev record");
        c.unfollowed(dev, "com.example.kiosk", "dev", b"dev record", p1);
        let replay = c.set_follow(vec![Follow {
            app: "com.example.kiosk".into(),
            channel: Some("beta".into()),
            above: 0,
        }]);
        assert_eq!(replay, vec![(b"beta record".to_vec(), vec![p1, p2])]);
        assert!(c.follows("com.example.kiosk", "beta"));
        assert!(!c.follows("com.example.kiosk", "production"));
        assert!(c.set_follow(Vec::new()).is_empty(), "replayed once");
        // A flood of big records never holds more than the cap, and the
        // newest stay.
        let big = vec![7u8; 100_000];
        for i in 0..100u32 {
            c.unfollowed(Hash::of(&i.to_le_bytes()), "a", "b", &big, p1);
            assert!(c.unfollowed_bytes <= MAX_UNFOLLOWED_BYTES);
            assert_eq!(c.unfollowed.len(), c.unfollowed_order.len());
        }
        assert!(c.unfollowed.contains_key(&Hash::of(&99u32.to_le_bytes())));
        assert!(!c.unfollowed.contains_key(&Hash::of(&0u32.to_le_bytes())));
    }
}
