//! What the status page may show of a node's [`Status`]: the page is
//! served on the LAN (`--http`), to anyone who can reach it, while the
//! control socket's status is for the local operator. So the view keeps
//! what the LAN sees or may see anyway (peer ids, releases, transfers,
//! uploads, the devices table, rollouts) and leaves out the rest: the
//! control socket's path, listen and peer addresses, the reasons peers
//! were refused, the free-space message, the device agent's own state,
//! and every piece of key material a release carries (its Capgo session
//! key). The fleet table is cut to the [`MAX_FLEET_ROWS`] most recently
//! seen devices (rollouts count them all), so that what is sent stays
//! bounded with a full devices table.

use serde::Serialize;

use super::rollout::{self, RolloutProgress};
use crate::node::status::{DeviceStatus, Status, TransferStatus, UploadStatus};
use crate::output::ReleaseView;

/// Devices listed at most (the most recently seen).
pub const MAX_FLEET_ROWS: usize = 1000;

/// The status as the page shows it.
#[derive(Debug, Serialize)]
pub struct PageStatus {
    /// When it was made (Unix seconds, this node's clock): the page
    /// shows ages against it, whatever the viewer's clock says.
    pub now: u64,
    /// This node's peer id.
    pub peer_id: String,
    /// The peers it knows.
    pub peers: Vec<PagePeer>,
    /// The releases it holds.
    pub releases: Vec<PageRelease>,
    /// Fetches in progress.
    pub transfers: Vec<TransferStatus>,
    /// What it served to peers.
    pub uploads: UploadStatus,
    /// The most recently seen devices of the devices table, sorted by id.
    pub devices: Vec<DeviceStatus>,
    /// Devices in the table in all.
    pub devices_total: usize,
    /// Each app and channel's newest release, and its devices.
    pub rollouts: Vec<RolloutProgress>,
}

/// A peer, without its addresses.
#[derive(Debug, Serialize)]
pub struct PagePeer {
    /// Peer id.
    pub peer_id: String,
    /// `mdns`, `peer-flag` or `inbound`.
    pub found_by: String,
    /// Whether a connection is open.
    pub connected: bool,
    /// Whether it is banned now.
    pub banned: bool,
    /// Releases it announced.
    pub releases_announced: usize,
}

/// A release, without key material.
#[derive(Debug, Serialize)]
pub struct PageRelease {
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
    /// When it was signed (Unix seconds).
    pub created: u64,
    /// Rollout share, 0 to 100.
    pub rollout_percent: f64,
    /// Whether it carries Capgo encryption artefacts.
    pub encrypted: bool,
}

impl PageStatus {
    /// The view of `status`, made at `now` (Unix seconds).
    pub fn new(status: Status, now: u64) -> PageStatus {
        let rollouts = rollout::progress(&status.releases, &status.devices);
        let devices_total = status.devices.len();
        let mut devices = status.devices;
        if devices.len() > MAX_FLEET_ROWS {
            devices.sort_by(|a, b| {
                b.last_seen
                    .cmp(&a.last_seen)
                    .then(a.device_id.cmp(&b.device_id))
            });
            devices.truncate(MAX_FLEET_ROWS);
        }
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        PageStatus {
            now,
            peer_id: status.peer_id,
            peers: (status.peers.into_iter())
                .map(|p| PagePeer {
                    peer_id: p.peer_id,
                    found_by: p.found_by,
                    connected: p.connected,
                    banned: p.banned,
                    releases_announced: p.releases_announced,
                })
                .collect(),
            releases: status.releases.iter().map(PageRelease::new).collect(),
            transfers: status.transfers,
            uploads: status.uploads,
            devices,
            devices_total,
            rollouts,
        }
    }
}

impl PageRelease {
    fn new(r: &ReleaseView) -> PageRelease {
        PageRelease {
            app: r.app.clone(),
            channel: r.channel.clone(),
            version: r.version.clone(),
            seq: r.seq,
            bundle_id: r.bundle_id.clone(),
            created: r.created,
            rollout_percent: r.rollout_percent,
            encrypted: r.capgo.is_some(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::page::rollout::tests::{device, release};
    use crate::node::status::{DroppedStatus, PeerStatus, RefusedStatus};
    use crate::output::CapgoView;

    const SOCKET: &str = "/run/user/1000/lanseed/node-secret-path.sock";
    const SESSION_KEY: &str = "c2Vzc2lvbi1rZXktbWF0ZXJpYWw=";

    pub(crate) fn status(devices: Vec<DeviceStatus>) -> Status {
        let mut r = release("a", "production", "1.0.0", 1, "b1");
        r.capgo = Some(CapgoView {
            bundle_id: "p1".into(),
            key_id: "key-id".into(),
            session_key: SESSION_KEY.into(),
            checksum: "sum".into(),
        });
        Status {
            peer_id: "12D3Self".into(),
            control_socket: SOCKET.into(),
            listen: vec!["/ip4/10.9.8.7/tcp/4001".into()],
            peers: vec![PeerStatus {
                peer_id: "12D3Other".into(),
                addresses: vec!["/ip4/10.9.8.6/tcp/4001".into()],
                found_by: "mdns".into(),
                connected: true,
                banned: false,
                releases_announced: 1,
            }],
            releases: vec![r],
            transfers: Vec::new(),
            uploads: UploadStatus {
                limit_bytes_per_sec: None,
                max_peers: 8,
                active_peers: 0,
                peak_peers: 0,
                refused: 0,
                held_back: 0,
                answers: 0,
                bytes: 0,
            },
            refused: vec![RefusedStatus {
                peer_id: "12D3Bad".into(),
                state: "banned".into(),
                reason: "sent a forged piece".into(),
                count: 1,
                secs_ago: 3,
            }],
            dropped: DroppedStatus {
                connections_refused: 0,
                device_claims_refused: 0,
                devices_evicted: 0,
                counts: Default::default(),
            },
            waiting: Some("free space below --min-free on /srv/store".into()),
            authenticated_reports: true,
            devices,
            dialling: Vec::new(),
            retrying: Vec::new(),
            device: Some(serde_json::json!({ "store": "/srv/private" })),
            origin: None,
        }
    }

    #[test]
    fn what_only_a_local_operator_sees_is_left_out() {
        let view = PageStatus::new(status(Vec::new()), 1000);
        let text = serde_json::to_string(&view).unwrap();
        for secret in [
            SOCKET,
            SESSION_KEY,
            "10.9.8.7",
            "10.9.8.6",
            "forged",
            "/srv/",
            "key-id",
        ] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert!(
            text.contains("12D3Self") && text.contains("12D3Other"),
            "{text}"
        );
        assert!(view.releases[0].encrypted);
    }

    #[test]
    fn the_fleet_is_cut_to_the_most_recently_seen_and_rollouts_count_all() {
        let n = MAX_FLEET_ROWS + 10;
        let devices: Vec<DeviceStatus> = (0..n)
            .map(|i| {
                let mut d = device(&format!("d{i:05}"), "a", "production", "b1", None);
                d.last_seen = i as u64;
                d
            })
            .collect();
        let view = PageStatus::new(status(devices), 1000);
        assert_eq!(view.devices_total, n);
        assert_eq!(view.devices.len(), MAX_FLEET_ROWS);
        assert_eq!(
            view.devices[0].device_id, "d00010",
            "the 10 oldest left out"
        );
        assert!(
            view.devices
                .windows(2)
                .all(|w| w[0].device_id < w[1].device_id)
        );
        assert_eq!(view.rollouts[0].devices, n);
        assert_eq!(view.rollouts[0].on_bundle, n);
    }
}
