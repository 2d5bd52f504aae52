//! The site cache's decisions, without I/O: which releases of the origin's
//! `index.json` to take, where each blob of a bundle is on the origin and
//! how big its download may be, where an interrupted download resumes,
//! and when to poll next given `Cache-Control` and `--origin-every`.
//!
//! Everything the origin says is hostile until verified: the index's size
//! and count are bounded, its paths are ignored (the cache builds every
//! path from ids it checks), and a bundle's file list must name each file
//! of the verified manifest with the same hash and size.

use std::collections::HashMap;
use std::time::Duration;

use lanseed_protocol::limits::{MAX_FILES, MAX_INDEX_RELEASES, MAX_PATH_LEN};
use lanseed_protocol::static_tree::{FORMAT, StaticBundle, StaticIndex, StaticRelease};
use lanseed_protocol::{BundleId, Hash, Manifest, ReleaseId, SignedRelease};

use crate::node::Follow;

/// Largest `index.json` read: 100,000 releases of about 600 bytes each.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Largest `bundles/<id>.json` read whatever its manifest: a file list of
/// [`MAX_FILES`] entries whose paths are long (see [`max_listing_bytes`]).
pub const MAX_LISTING_BYTES: u64 = 256 << 20;

/// Most bytes one file's entry in `bundles/<id>.json` takes: its path
/// escaped in JSON (6 bytes a byte at worst), two hashes in hex, the blob
/// path, size, encoding and pretty-printing.
const MAX_LISTING_ENTRY: u64 = 6 * MAX_PATH_LEN as u64 + 512;

/// Largest `bundles/<id>.json` read for a verified manifest of `files`
/// files.
pub fn max_listing_bytes(files: usize) -> u64 {
    (4096 + files as u64 * MAX_LISTING_ENTRY).min(MAX_LISTING_BYTES)
}

/// Longest wait between polls whatever `Cache-Control` says: a hostile or
/// careless `max-age` cannot hold updates back for longer.
pub const MAX_HONOURED_AGE: Duration = Duration::from_secs(3600);

/// First wait after a failed poll; it doubles with each failure in a row,
/// up to `--origin-every`.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);

/// Why the origin's files are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// `index.json` is not JSON of the expected shape.
    #[error("index.json is not a static tree index: {0}")]
    BadIndex(String),
    /// `index.json` has another format tag.
    #[error("index.json is of format {0:?}, not {FORMAT:?}")]
    Format(String),
    /// Too many releases.
    #[error("index.json lists {0} releases, more than the limit of {MAX_INDEX_RELEASES}")]
    TooManyReleases(usize),
    /// A release id or bundle id is not 64 hex digits.
    #[error("index.json names an invalid id {0:?}")]
    BadId(String),
    /// The file list is not JSON of the expected shape.
    #[error("bundles/{bundle}.json is not a bundle file list: {reason}")]
    BadListing {
        /// The bundle.
        bundle: BundleId,
        /// What is wrong.
        reason: String,
    },
    /// The file list does not give a file of the manifest.
    #[error("bundles/{bundle}.json does not list {path} ({hash}) as the manifest has it")]
    Unlisted {
        /// The bundle.
        bundle: BundleId,
        /// The file's path.
        path: String,
        /// Its hash.
        hash: Hash,
    },
}

/// A release of the index worth fetching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// App id, as the index says (the signed record is checked again).
    pub app: String,
    /// Channel, as the index says.
    pub channel: String,
    /// Version, as the index says.
    pub version: String,
    /// Sequence number, as the index says.
    pub seq: u64,
    /// Its id: the record fetched must hash to it.
    pub release_id: ReleaseId,
}

/// Parses `index.json` (already bounded by [`MAX_INDEX_BYTES`]).
pub fn parse_index(bytes: &[u8]) -> Result<StaticIndex, PlanError> {
    // The count is checked after parsing: serde_json holds at most
    // MAX_INDEX_BYTES of input, and every entry takes some of it.
    let index: StaticIndex =
        serde_json::from_slice(bytes).map_err(|e| PlanError::BadIndex(e.to_string()))?;
    if index.format != FORMAT {
        return Err(PlanError::Format(index.format.chars().take(40).collect()));
    }
    if index.releases.len() > MAX_INDEX_RELEASES {
        return Err(PlanError::TooManyReleases(index.releases.len()));
    }
    Ok(index)
}

/// Whether `follow` covers `app` on `channel`.
pub fn followed(follow: &[Follow], app: &str, channel: &str) -> bool {
    follow
        .iter()
        .any(|f| f.app == app && f.channel.as_deref().is_none_or(|c| c == channel))
}

/// The releases to fetch: for each followed app and channel, the newest
/// release of the index when it is newer than every release held (as the
/// node wants from its peers). Sorted by app, channel.
pub fn wanted(
    index: &StaticIndex,
    held: &[SignedRelease],
    follow: &[Follow],
) -> Result<Vec<Wanted>, PlanError> {
    let mut newest: HashMap<(&str, &str), &StaticRelease> = HashMap::new();
    for r in &index.releases {
        if !followed(follow, &r.app, &r.channel) {
            continue;
        }
        let slot = newest.entry((&r.app, &r.channel)).or_insert(r);
        if r.seq > slot.seq {
            *slot = r;
        }
    }
    let mut out = Vec::new();
    for ((app, channel), r) in newest {
        let held_seq = held
            .iter()
            .map(SignedRelease::release)
            .filter(|h| h.app == app && h.channel == channel)
            .map(|h| h.seq)
            .max();
        if held_seq.is_some_and(|h| h >= r.seq) {
            continue;
        }
        let release_id = r
            .release_id
            .parse()
            .map_err(|_| PlanError::BadId(r.release_id.chars().take(80).collect()))?;
        out.push(Wanted {
            app: app.to_owned(),
            channel: channel.to_owned(),
            version: r.version.chars().take(128).collect(),
            seq: r.seq,
            release_id,
        });
    }
    out.sort_by(|a, b| (&a.app, &a.channel).cmp(&(&b.app, &b.channel)));
    Ok(out)
}

/// One blob to fetch from the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobSource {
    /// Its BLAKE3: its address in the store.
    pub hash: Hash,
    /// Its size, from the verified manifest.
    pub size: u64,
    /// Whether the origin holds it gzip-compressed.
    pub gzip: bool,
}

impl BlobSource {
    /// Its path in the static tree, built from the hash (never the path
    /// the file list gives).
    pub fn path(&self) -> String {
        let hex = self.hash.to_hex();
        let ext = if self.gzip { ".gz" } else { "" };
        format!("blobs/{}/{hex}{ext}", &hex[..2])
    }

    /// Most bytes its download may take: `publish-static` compresses a
    /// blob only when that saves at least 10 %, so either encoding is at
    /// most the blob's size.
    pub fn max_download(&self) -> u64 {
        self.size
    }
}

/// The blobs of `manifest` (verified) and where the origin has them, from
/// `listing` (the origin's `bundles/<id>.json`, already bounded by
/// [`MAX_LISTING_BYTES`]). Each blob once, in manifest order.
pub fn blob_sources(
    bundle: &BundleId,
    manifest: &Manifest,
    listing: &[u8],
) -> Result<Vec<BlobSource>, PlanError> {
    let bad = |reason: String| PlanError::BadListing {
        bundle: *bundle,
        reason,
    };
    let listing: StaticBundle = serde_json::from_slice(listing).map_err(|e| bad(e.to_string()))?;
    if listing.files.len() > MAX_FILES {
        return Err(bad(format!(
            "{} files, more than the limit of {MAX_FILES}",
            listing.files.len()
        )));
    }
    if listing.bundle_id != bundle.to_string() {
        return Err(bad("it names another bundle".into()));
    }
    let mut gzip: HashMap<Hash, bool> = HashMap::new();
    for f in &listing.files {
        let Ok(hash) = f.blake3.parse::<Hash>() else {
            return Err(bad(format!("invalid hash {:?}", f.blake3)));
        };
        let is_gzip = match f.encoding.as_str() {
            "gzip" => true,
            "identity" => false,
            other => return Err(bad(format!("unknown encoding {other:?}"))),
        };
        gzip.insert(hash, is_gzip);
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in manifest.files() {
        let Some(&is_gzip) = gzip.get(&f.blake3) else {
            return Err(PlanError::Unlisted {
                bundle: *bundle,
                path: f.path.to_string(),
                hash: f.blake3,
            });
        };
        if seen.insert(f.blake3) {
            out.push(BlobSource {
                hash: f.blake3,
                size: f.size,
                gzip: is_gzip,
            });
        }
    }
    Ok(out)
}

/// What to do with a partial download of `have` bytes of a file of at
/// most `max` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Start from the beginning (nothing there).
    Fresh,
    /// Ask for the rest with `Range: bytes=N-`.
    From(u64),
    /// What is there is already as long as the file may be: check it as
    /// it is.
    Complete,
}

/// Where a download resumes.
pub fn resume(have: u64, max: u64) -> Resume {
    match have {
        0 => Resume::Fresh,
        n if n >= max => Resume::Complete,
        n => Resume::From(n),
    }
}

/// The first byte of a `Content-Range: bytes A-B/C` answer.
pub fn content_range_start(header: &str) -> Option<u64> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// The file's length a `416` answer gives (`Content-Range: bytes */N`).
pub fn unsatisfied_length(header: &str) -> Option<u64> {
    header.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// What `Cache-Control` says about polling again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// `max-age` (or `s-maxage`, which a shared cache honours first).
    pub max_age: Option<Duration>,
    /// `no-cache` / `no-store`: ask each time, whatever the age.
    pub no_cache: bool,
}

/// Parses a `Cache-Control` header.
pub fn freshness(header: Option<&str>) -> Freshness {
    let mut max_age = None;
    let mut s_maxage = None;
    let mut no_cache = false;
    for directive in header.unwrap_or("").split(',') {
        let d = directive.trim().to_ascii_lowercase();
        let seconds = |v: &str| v.trim_matches('"').parse::<u64>().ok();
        if let Some(v) = d.strip_prefix("max-age=") {
            max_age = seconds(v).or(max_age);
        } else if let Some(v) = d.strip_prefix("s-maxage=") {
            s_maxage = seconds(v).or(s_maxage);
        } else if d == "no-cache" || d == "no-store" {
            no_cache = true;
        }
    }
    Freshness {
        max_age: s_maxage.or(max_age).map(Duration::from_secs),
        no_cache,
    }
}

/// How long to wait before the next poll: `every` after a good poll, or
/// longer while the index is fresh by `Cache-Control` (at most
/// [`MAX_HONOURED_AGE`]); after `failures` failed polls in a row, a
/// backoff from [`RETRY_FIRST`] doubling up to `every`.
pub fn next_poll(every: Duration, fresh: Freshness, failures: u32) -> Duration {
    if failures > 0 {
        let backoff = RETRY_FIRST.saturating_mul(1 << (failures - 1).min(16));
        return backoff.min(every);
    }
    if fresh.no_cache {
        return every;
    }
    let age = fresh.max_age.unwrap_or_default().min(MAX_HONOURED_AGE);
    every.max(age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanseed_protocol::manifest::FileDigest;
    use lanseed_protocol::release::{Release, Rollout};
    use lanseed_protocol::{BundlePath, SecretKey};

    fn entry(app: &str, channel: &str, seq: u64, id: u8) -> StaticRelease {
        StaticRelease {
            app: app.into(),
            channel: channel.into(),
            version: format!("1.0.{seq}"),
            seq,
            bundle_id: Hash::of(&[id, 1]).to_string(),
            release_id: Hash::of(&[id]).to_string(),
            record: "ignored".into(),
            manifest: "ignored".into(),
            files: "ignored".into(),
            capgo_bundle_id: None,
        }
    }

    fn index(releases: Vec<StaticRelease>) -> StaticIndex {
        StaticIndex {
            format: FORMAT.into(),
            releases,
        }
    }

    fn follow(app: &str, channel: Option<&str>) -> Follow {
        Follow {
            app: app.into(),
            channel: channel.map(Into::into),
            above: 0,
        }
    }

    fn held(app: &str, channel: &str, seq: u64) -> SignedRelease {
        Release {
            app: app.into(),
            channel: channel.into(),
            version: "1.0.0".into(),
            bundle_id: BundleId(Hash::of(b"b")),
            seq,
            created: 1,
            min_native_version: None,
            rollout: Rollout::FULL,
            expires: None,
            notes: None,
            capgo: None,
        }
        .sign(&SecretKey::from_seed(&[7; 32]))
        .unwrap()
    }

    #[test]
    fn the_newest_followed_release_not_held_is_wanted() {
        let idx = index(vec![
            entry("com.a", "production", 1, 1),
            entry("com.a", "production", 3, 3),
            entry("com.a", "production", 2, 2),
            entry("com.a", "beta", 5, 5),
            entry("com.b", "production", 9, 9),
        ]);
        let w = wanted(&idx, &[], &[follow("com.a", Some("production"))]).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].seq, 3);
        assert_eq!(w[0].release_id, ReleaseId(Hash::of(&[3])));

        let all = wanted(&idx, &[], &[follow("com.a", None)]).unwrap();
        let seqs: Vec<u64> = all.iter().map(|w| w.seq).collect();
        assert_eq!(seqs, [5, 3], "beta sorts before production");

        let h = [held("com.a", "production", 3)];
        assert!(
            wanted(&idx, &h, &[follow("com.a", Some("production"))])
                .unwrap()
                .is_empty()
        );
        let h = [held("com.a", "production", 2)];
        assert_eq!(
            wanted(&idx, &h, &[follow("com.a", Some("production"))]).unwrap()[0].seq,
            3
        );
        assert!(wanted(&idx, &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn bad_indexes_are_refused() {
        assert!(matches!(parse_index(b"nope"), Err(PlanError::BadIndex(_))));
        let other = br#"{"format":"other/1","releases":[]}"#;
        assert!(matches!(parse_index(other), Err(PlanError::Format(_))));
        let ok = serde_json::to_vec(&index(vec![entry("com.a", "production", 1, 1)])).unwrap();
        assert_eq!(parse_index(&ok).unwrap().releases.len(), 1);
        let mut bad_id = entry("com.a", "production", 1, 1);
        bad_id.release_id = "../../etc".into();
        assert!(matches!(
            wanted(&index(vec![bad_id]), &[], &[follow("com.a", None)]),
            Err(PlanError::BadId(_))
        ));
    }

    fn manifest(files: &[(&str, &[u8])]) -> Manifest {
        Manifest::new(
            files
                .iter()
                .map(|(p, data)| FileDigest::of_bytes(data).into_entry(BundlePath::new(p).unwrap()))
                .collect(),
        )
        .unwrap()
    }

    fn listing(id: &BundleId, m: &Manifest, encoding: &str) -> Vec<u8> {
        serde_json::to_vec(&StaticBundle {
            bundle_id: id.to_string(),
            files: m
                .files()
                .iter()
                .map(|f| lanseed_protocol::static_tree::StaticFile {
                    path: f.path.to_string(),
                    size: f.size,
                    blake3: f.blake3.to_string(),
                    blob: "/etc/passwd".into(),
                    encoding: encoding.into(),
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn blob_sources_come_from_the_manifest_and_paths_from_hashes() {
        let m = manifest(&[
            ("index.html", b"same"),
            ("b.js", b"same"),
            ("c.css", b"other"),
        ]);
        let id = m.id();
        let sources = blob_sources(&id, &m, &listing(&id, &m, "gzip")).unwrap();
        assert_eq!(sources.len(), 2, "a blob twice in a bundle is fetched once");
        let hex = Hash::of(b"same").to_hex();
        assert_eq!(sources[0].path(), format!("blobs/{}/{hex}.gz", &hex[..2]));
        assert_eq!(sources[0].max_download(), 4);
        let plain = blob_sources(&id, &m, &listing(&id, &m, "identity")).unwrap();
        assert!(!plain[1].gzip);
        assert!(!plain[1].path().ends_with(".gz"));

        let other = manifest(&[("index.html", b"x")]);
        assert!(matches!(
            blob_sources(&id, &m, &listing(&other.id(), &other, "gzip")),
            Err(PlanError::BadListing { .. })
        ));
        let mut l: StaticBundle = serde_json::from_slice(&listing(&id, &m, "gzip")).unwrap();
        l.files
            .retain(|f| f.blake3 != Hash::of(b"other").to_string());
        assert!(matches!(
            blob_sources(&id, &m, &serde_json::to_vec(&l).unwrap()),
            Err(PlanError::Unlisted { .. })
        ));
        assert!(matches!(
            blob_sources(&id, &m, &listing(&id, &m, "br")),
            Err(PlanError::BadListing { .. })
        ));
    }

    #[test]
    fn a_file_list_is_bounded_by_its_manifest() {
        let m = manifest(&[("index.html", b"x")]);
        let id = m.id();
        let real = listing(&id, &m, "gzip").len() as u64;
        assert!(real <= max_listing_bytes(1), "{real}");
        assert!(max_listing_bytes(1) < 16 << 10);
        assert_eq!(max_listing_bytes(MAX_FILES), MAX_LISTING_BYTES);
        assert!(max_listing_bytes(0) > 0);
    }

    #[test]
    fn downloads_resume_where_they_stopped() {
        assert_eq!(resume(0, 100), Resume::Fresh);
        assert_eq!(resume(1, 100), Resume::From(1));
        assert_eq!(resume(99, 100), Resume::From(99));
        assert_eq!(resume(100, 100), Resume::Complete);
        assert_eq!(resume(101, 100), Resume::Complete);
        assert_eq!(resume(0, 0), Resume::Fresh);
        assert_eq!(content_range_start("bytes 10-99/100"), Some(10));
        assert_eq!(content_range_start("bytes */100"), None);
        assert_eq!(content_range_start("lines 1-2/3"), None);
        assert_eq!(unsatisfied_length("bytes */100"), Some(100));
        assert_eq!(unsatisfied_length("bytes 0-1/100"), None);
    }

    #[test]
    fn polls_follow_cache_control_within_bounds() {
        let every = Duration::from_secs(60);
        let none = freshness(None);
        assert_eq!(next_poll(every, none, 0), every);
        let long = freshness(Some("public, max-age=600"));
        assert_eq!(long.max_age, Some(Duration::from_secs(600)));
        assert_eq!(next_poll(every, long, 0), Duration::from_secs(600));
        let short = freshness(Some("max-age=5"));
        assert_eq!(next_poll(every, short, 0), every, "never faster than every");
        let huge = freshness(Some("max-age=99999999"));
        assert_eq!(next_poll(every, huge, 0), MAX_HONOURED_AGE);
        let shared = freshness(Some("max-age=600, s-maxage=120"));
        assert_eq!(shared.max_age, Some(Duration::from_secs(120)));
        let no = freshness(Some("no-cache, max-age=600"));
        assert_eq!(next_poll(every, no, 0), every);
        assert_eq!(freshness(Some("max-age=junk")).max_age, None);
    }

    #[test]
    fn failed_polls_back_off_up_to_every() {
        let every = Duration::from_secs(60);
        let f = freshness(Some("max-age=600"));
        assert_eq!(next_poll(every, f, 1), RETRY_FIRST);
        assert_eq!(next_poll(every, f, 2), RETRY_FIRST * 2);
        assert_eq!(next_poll(every, f, 5), every);
        assert_eq!(next_poll(every, f, u32::MAX), every);
        let fast = Duration::from_millis(200);
        assert_eq!(next_poll(fast, f, 1), fast);
    }
}
