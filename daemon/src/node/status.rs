//! What `lanseed status` shows: peers, releases held, transfers.

use serde::Serialize;

use crate::output::ReleaseView;

/// The node's status.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This node's peer id.
    pub peer_id: String,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// Peers it knows.
    pub peers: Vec<PeerStatus>,
    /// Releases in its store.
    pub releases: Vec<ReleaseView>,
    /// Fetches in progress.
    pub transfers: Vec<TransferStatus>,
    /// The device updater's state, on a `lanseed device` node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<serde_json::Value>,
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
    /// `manifest`, `files` or `stalled` (no usable peer).
    pub state: String,
    /// Bytes received and verified.
    pub bytes_done: u64,
    /// Bytes to fetch in all (0 until the manifest is in).
    pub bytes_total: u64,
    /// Bytes per second since the start.
    pub rate_bytes_per_sec: f64,
    /// Peers it may fetch from.
    pub providers: usize,
}
