//! What `lanseed status` shows: peers, releases held, transfers, and what
//! the node refused (peers banned, set aside, rate-limited, streams closed,
//! releases refused) with the reason.

use serde::Serialize;

use crate::output::ReleaseView;

/// The node's status.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This node's peer id.
    pub peer_id: String,
    /// The control socket `lanseed status` asked it through.
    pub control_socket: String,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// Peers it knows.
    pub peers: Vec<PeerStatus>,
    /// Releases in its store.
    pub releases: Vec<ReleaseView>,
    /// Fetches in progress.
    pub transfers: Vec<TransferStatus>,
    /// What it served to peers.
    pub uploads: UploadStatus,
    /// Peers that misbehaved, newest first (bounded).
    pub refused: Vec<RefusedStatus>,
    /// What the node dropped or refused, counted.
    pub dropped: DroppedStatus,
    /// Why fetches wait (free space below `--min-free`), if they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Whether peers' device reports are authenticated (the node runs
    /// with `--fleet-key`); rollouts count only those.
    pub authenticated_reports: bool,
    /// Every device heard of (see the node's `devices`).
    pub devices: Vec<DeviceStatus>,
    /// `--peer` addresses without a peer id that nothing answered at yet.
    pub dialling: Vec<DialStatus>,
    /// Transfers that failed on the store, tried again after a backoff.
    pub retrying: Vec<RetryStatus>,
    /// The device updater's state, on a `lanseed device` node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<serde_json::Value>,
    /// The site cache's sync with its origin, on `lanseed seed --origin`:
    /// URL, last poll, last result or error, bytes fetched, blobs pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<serde_json::Value>,
}

/// One device of the devices table.
#[derive(Debug, Serialize)]
pub struct DeviceStatus {
    /// Its id.
    pub device_id: String,
    /// App id.
    pub app: String,
    /// The channel it follows.
    pub channel: String,
    /// Its current bundle (`builtin` for the builtin one).
    pub bundle_id: String,
    /// Version of that bundle.
    pub version: String,
    /// Sequence number of its release.
    pub seq: u64,
    /// The native app's version.
    pub native_version: String,
    /// The bundle's status (`success`, `trial`, …).
    pub status: String,
    /// The last event, by Capgo's stats action name.
    pub last_event: Option<String>,
    /// The bundle whose trial failed last on the device (rolled back), if
    /// any; for gateway rows, the bundle of a failure the plugin posted.
    pub failed_bundle: Option<String>,
    /// When the device made its report (Unix seconds, its clock).
    pub reported_at: u64,
    /// `local` (this node's device), `report` (a peer's) or `gateway`
    /// (the Capgo gateway's stats).
    pub source: super::devices::Source,
    /// The peer it reports through (none for this node's own).
    pub peer_id: Option<String>,
    /// Whether that peer was admitted by the fleet key; only these count.
    pub authenticated: bool,
    /// First heard of (Unix seconds, this node's clock).
    pub first_seen: u64,
    /// Last heard of.
    pub last_seen: u64,
    /// A lanseed device that missed three reports (see
    /// [`super::devices::Row::stale`]).
    pub stale: bool,
}

impl DeviceStatus {
    /// The status of one row at `now` (Unix seconds).
    pub fn new(row: &super::devices::Row, now: u64) -> DeviceStatus {
        let r = &row.report;
        DeviceStatus {
            device_id: r.device_id.clone(),
            app: r.app.clone(),
            channel: r.channel.clone(),
            bundle_id: r.bundle_id(),
            version: r.version.clone(),
            seq: r.seq,
            native_version: r.native_version.clone(),
            status: r.status.clone(),
            last_event: r.event.clone(),
            failed_bundle: r.failed.map(hex::encode),
            reported_at: r.time,
            source: row.source,
            peer_id: row.peer.map(|p| p.to_string()),
            authenticated: row.authenticated,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            stale: row.stale(now),
        }
    }
}

/// A `--peer` address not reached yet.
#[derive(Debug, Serialize)]
pub struct DialStatus {
    /// The address.
    pub address: String,
    /// Seconds before the next dial.
    pub in_secs: u64,
}

/// A transfer to try again.
#[derive(Debug, Serialize)]
pub struct RetryStatus {
    /// Bundle id.
    pub bundle_id: String,
    /// Version.
    pub version: String,
    /// Seconds before the next try.
    pub in_secs: u64,
}

/// One peer.
#[derive(Debug, Serialize)]
pub struct PeerStatus {
    /// Peer id.
    pub peer_id: String,
    /// Known addresses.
    pub addresses: Vec<String>,
    /// `mdns`, `peer-flag` or `inbound`.
    pub found_by: String,
    /// Whether a connection is open.
    pub connected: bool,
    /// Whether it is banned now.
    pub banned: bool,
    /// Releases it announced.
    pub releases_announced: usize,
}

/// One fetch in progress.
#[derive(Debug, Serialize)]
pub struct TransferStatus {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: String,
    /// Bundle id.
    pub bundle_id: String,
    /// `manifest`, `files`, `committing` or `stalled` (no usable peer).
    pub state: String,
    /// Bytes received and verified.
    pub bytes_done: u64,
    /// Bytes to fetch in all (0 until the manifest is in).
    pub bytes_total: u64,
    /// Bytes per second since the start.
    pub rate_bytes_per_sec: f64,
    /// Peers it may fetch from (whole or still fetching themselves).
    pub providers: usize,
    /// Bytes found verified on disk from an earlier run and reused.
    pub reused_bytes: u64,
    /// Bytes received for it, as sent (compressed).
    pub wire_bytes: u64,
}

/// What a node served.
#[derive(Debug, Serialize)]
pub struct UploadStatus {
    /// `--upload-limit` in bytes per second, if any.
    pub limit_bytes_per_sec: Option<u64>,
    /// `--max-uploads`.
    pub max_peers: usize,
    /// Peers being served now.
    pub active_peers: usize,
    /// Most peers served at once so far.
    pub peak_peers: usize,
    /// Requests answered with Busy: no slot free.
    pub refused: u64,
    /// Requests answered with Busy because a piece they asked for was on
    /// its way to another peer (initial seeding).
    pub held_back: u64,
    /// Answers with data sent.
    pub answers: u64,
    /// Bytes of those answers (as sent, compressed).
    pub bytes: u64,
}

/// One thing a peer did wrong.
#[derive(Debug, Serialize)]
pub struct RefusedStatus {
    /// Peer id.
    pub peer_id: String,
    /// `banned` (bad data: nothing taken from it until the ban ends),
    /// `set_aside` (silent or too slow: asked again after a backoff),
    /// `rate_limited` (flooding: the rest dropped), `closed` (a malformed
    /// frame: the stream closed), `refused` (a release not taken).
    pub state: String,
    /// Why, in words.
    pub reason: String,
    /// How many times.
    pub count: u64,
    /// Seconds since the last time.
    pub secs_ago: u64,
}

/// What the node dropped or refused, counted.
#[derive(Debug, Serialize)]
pub struct DroppedStatus {
    /// Connections refused (per-address limits, banned peers).
    pub connections_refused: u64,
    /// Device reports refused: their device id is bound to another peer.
    pub device_claims_refused: u64,
    /// Device rows pushed out at the table's caps.
    pub devices_evicted: u64,
    /// The rest.
    #[serde(flatten)]
    pub counts: super::peers::Dropped,
}
