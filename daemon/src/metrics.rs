//! Prometheus metrics, served at `GET /metrics` on the gateway's address
//! (`--http`): one registry of `prometheus-client`, made once per node
//! ([`Metrics`]) and handed to whoever counts.
//!
//! | metric | type | labels | counted where |
//! |---|---|---|---|
//! | `lanseed_p2p_bytes_total` | counter | `kind`, `direction` | the wire codec, per frame read or written |
//! | `lanseed_http_bytes_total` | counter | `direction` | the gateway's sockets |
//! | `lanseed_peers` | gauge | | the peer book, sampled at a scrape |
//! | `lanseed_transfers_started_total` | counter | | a fetch starts |
//! | `lanseed_transfers_ended_total` | counter | `result` | a fetch commits, fails or is abandoned |
//! | `lanseed_transfer_duration_seconds` | histogram | | a fetch commits: from its start |
//! | `lanseed_announcements_total` | counter | `direction` | `Announce` messages sent and received |
//! | `lanseed_peer_bans_total` | counter | | a peer is banned (not one already banned) |
//! | `lanseed_peers_banned` | gauge | | bans in force, sampled at a scrape |
//! | `lanseed_devices` | gauge | `status`, `authenticated` | the devices table, sampled at a scrape |
//! | `lanseed_rollbacks_total` | counter | | a device agent's `updateFailed` (a trial failed, rolled back) |
//! | `lanseed_gateway_requests_total` | counter | `path`, `result` | every gateway answer |
//!
//! **What the byte counters count.** `lanseed_p2p_bytes_total` is
//! lanseed's own bytes: every frame of `/lanseed/bundle/3` (length prefix
//! included) the node wrote to or read from a libp2p stream, whether it
//! decoded or not. What libp2p adds below the stream is not in it: yamux
//! headers and window updates, noise's length and tag, the protocol
//! negotiation of each stream, the noise handshake; nor TCP, IP and
//! Ethernet headers. For a bulk transfer the sum is a little under what
//! the network interface counts: 95 % of it on a 1,500-byte MTU, the
//! rest mostly the 66 bytes of Ethernet, IP and TCP headers of each
//! segment (the `metrics` integration test holds it within 10 %). `kind` is the
//! exchange a frame belongs to (`announce`, `manifest`, `pieces`, `have`,
//! `report`): a `pieces` request and the pieces answered to it are both
//! `pieces`; a request that does not decode is `other`.
//! `lanseed_http_bytes_total` counts the bytes on the gateway's sockets,
//! TLS records included when it speaks HTTPS.
//!
//! **Costs.** Counters on hot paths are atomics taken out of their
//! families once, at start ([`Metrics::wire`] is one `fetch_add` per
//! frame); no lock is taken per piece. The gauges that come from the
//! node's state are asked of the node's event loop when `/metrics` is
//! scraped ([`Handle::render`]), never kept up to date on every change.
//!
//! **Format.** A scraper that accepts OpenMetrics (Prometheus does) gets
//! it as `prometheus-client` writes it; anything else (curl, `promtool
//! check metrics`) gets the classic text format 0.0.4, the same samples
//! with the counters' families named as their samples are
//! ([`classic_text`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{mpsc, oneshot};

/// The exchange a frame of `/lanseed/bundle/3` belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `Announce` and its answer.
    Announce,
    /// `GetManifest` and the manifest answered.
    Manifest,
    /// `GetPieces` and the pieces answered.
    Pieces,
    /// `Have` and its answer.
    Have,
    /// `Report` and its answer.
    Report,
    /// A request that does not decode.
    Other,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Announce,
        Kind::Manifest,
        Kind::Pieces,
        Kind::Have,
        Kind::Report,
        Kind::Other,
    ];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Announce => "announce",
            Kind::Manifest => "manifest",
            Kind::Pieces => "pieces",
            Kind::Have => "have",
            Kind::Report => "report",
            Kind::Other => "other",
        }
    }

    /// The exchange `req` starts.
    pub fn of(req: &lanseed_protocol::wire::Request) -> Kind {
        use lanseed_protocol::wire::Request;
        match req {
            Request::Announce { .. } => Kind::Announce,
            Request::GetManifest { .. } => Kind::Manifest,
            Request::GetPieces { .. } => Kind::Pieces,
            Request::Have { .. } => Kind::Have,
            Request::Report(_) => Kind::Report,
        }
    }
}

/// Which way bytes or messages went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Written by this node.
    Sent,
    /// Read by this node.
    Received,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its release is in the store.
    Completed,
    /// The store failed it (a full disk, an error); it is tried again
    /// later, as a new transfer.
    Failed,
    /// Given up: superseded by a newer release, stalled too long, no
    /// longer followed, or a job of it failed.
    Abandoned,
}

impl Ended {
    const ALL: [Ended; 3] = [Ended::Completed, Ended::Failed, Ended::Abandoned];

    fn name(self) -> &'static str {
        match self {
            Ended::Completed => "completed",
            Ended::Failed => "failed",
            Ended::Abandoned => "abandoned",
        }
    }
}

/// Device statuses shown as label values; any other a report carries is
/// `other` (reports come from peers: their strings must not make series
/// without end).
const STATUSES: [&str; 7] = [
    "downloading",
    "pending",
    "next",
    "trial",
    "success",
    "error",
    "unknown",
];

/// The label value of a device's `status`.
pub fn status_label(status: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|s| **s == status)
        .copied()
        .unwrap_or("other")
}

/// The label value of a gateway path: its route, without what varies.
pub fn path_label(path: &str) -> &'static str {
    match path {
        "/updates" => "/updates",
        "/updates/manifest_size" => "/updates/manifest_size",
        "/stats" => "/stats",
        "/channel_self" => "/channel_self",
        "/metrics" => "/metrics",
        p if p.starts_with("/capgo/zip/") => "/capgo/zip",
        p if p.starts_with("/capgo/file/") => "/capgo/file",
        _ => "other",
    }
}

/// What an update check answered, set by its handler on the response, for
/// the `result` label: `update`, `up_to_date`, `blocked` or `failed`.
#[derive(Clone, Copy, Debug)]
pub struct Answered(pub &'static str);

/// The `result` label of a gateway answer: what an update check answered
/// (its `kind`), else `429`, `4xx`, `5xx`, or `ok`.
pub fn result_label(status: u16, answered: Option<&'static str>) -> &'static str {
    match (status, answered) {
        (200, Some(kind)) => kind,
        (429, _) => "429",
        (400..=499, _) => "4xx",
        (500.., _) => "5xx",
        _ => "ok",
    }
}

/// Labels of a family: pairs of name and value, known when compiled.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// By [`Kind`], then [`Direction`] (sent, received).
    wire: [[Counter; 2]; Kind::ALL.len()],
    http: [Counter; 2],
    peers: Gauge,
    transfers_started: Counter,
    transfers_ended: [Counter; Ended::ALL.len()],
    transfer_seconds: Histogram,
    announcements: [Counter; 2],
    bans: Counter,
    banned: Gauge,
    devices: Family<Labels<2>, Gauge>,
    rollbacks: Counter,
    requests: Family<Labels<2>, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn by_direction(family: &Family<Labels<1>, Counter>) -> [Counter; 2] {
    [Direction::Sent, Direction::Received]
        .map(|d| family.get_or_create_owned(&[("direction", d.name())]))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lanseed");
        let wire_family = Family::<Labels<2>, Counter>::default();
        let wire = Kind::ALL.map(|k| {
            [Direction::Sent, Direction::Received].map(|d| {
                wire_family.get_or_create_owned(&[("kind", k.name()), ("direction", d.name())])
            })
        });
        registry.register_with_unit(
            "p2p",
            "Bytes of lanseed frames written to (sent) and read from (received) libp2p streams, by exchange",
            Unit::Bytes,
            wire_family,
        );
        let http_family = Family::<Labels<1>, Counter>::default();
        let http = by_direction(&http_family);
        registry.register_with_unit(
            "http",
            "Bytes sent and received on the HTTP gateway's connections",
            Unit::Bytes,
            http_family,
        );
        let peers = Gauge::default();
        registry.register("peers", "Peers connected now", peers.clone());
        let transfers_started = Counter::default();
        registry.register(
            "transfers_started",
            "Transfers (fetches of a bundle) started",
            transfers_started.clone(),
        );
        let ended_family = Family::<Labels<1>, Counter>::default();
        let transfers_ended =
            Ended::ALL.map(|e| ended_family.get_or_create_owned(&[("result", e.name())]));
        registry.register(
            "transfers_ended",
            "Transfers ended, by result (completed, failed, abandoned)",
            ended_family,
        );
        let transfer_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register_with_unit(
            "transfer_duration",
            "How long completed transfers took, from start to commit",
            Unit::Seconds,
            transfer_seconds.clone(),
        );
        let ann_family = Family::<Labels<1>, Counter>::default();
        let announcements = by_direction(&ann_family);
        registry.register(
            "announcements",
            "Announce messages (releases held whole) sent and received",
            ann_family,
        );
        let bans = Counter::default();
        registry.register("peer_bans", "Peers banned", bans.clone());
        let banned = Gauge::default();
        registry.register("peers_banned", "Peers banned now", banned.clone());
        let devices = Family::<Labels<2>, Gauge>::default();
        registry.register(
            "devices",
            "Devices in the node's devices table, by status and whether their reports are authenticated",
            devices.clone(),
        );
        let rollbacks = Counter::default();
        registry.register(
            "rollbacks",
            "Trials that failed on this device and were rolled back (updateFailed)",
            rollbacks.clone(),
        );
        let requests = Family::<Labels<2>, Counter>::default();
        registry.register(
            "gateway_requests",
            "HTTP gateway requests, by path and result",
            requests.clone(),
        );
        Metrics {
            registry,
            wire,
            http,
            peers,
            transfers_started,
            transfers_ended,
            transfer_seconds,
            announcements,
            bans,
            banned,
            devices,
            rollbacks,
            requests,
        }
    }

    /// `n` bytes of a `kind` exchange, sent or received.
    pub fn wire(&self, kind: Kind, direction: Direction, n: u64) {
        if n > 0 {
            self.wire[kind as usize][direction as usize].inc_by(n);
        }
    }

    /// `n` bytes on a gateway connection.
    pub fn http(&self, direction: Direction, n: u64) {
        self.http[direction as usize].inc_by(n);
    }

    /// A transfer started.
    pub fn transfer_started(&self) {
        self.transfers_started.inc();
    }

    /// A transfer ended, after `secs`.
    pub fn transfer_ended(&self, how: Ended, secs: f64) {
        self.transfers_ended[how as usize].inc();
        if how == Ended::Completed {
            self.transfer_seconds.observe(secs);
        }
    }

    /// An `Announce` message sent or received.
    pub fn announcement(&self, direction: Direction) {
        self.announcements[direction as usize].inc();
    }

    /// A peer banned.
    pub fn banned(&self) {
        self.bans.inc();
    }

    /// A trial failed and was rolled back.
    pub fn rollback(&self) {
        self.rollbacks.inc();
    }

    /// A gateway answer.
    pub fn request(&self, path: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&[("path", path), ("result", result)])
            .inc();
    }

    /// Sets the gauges that come from the node's state.
    fn apply(&self, s: &Sample) {
        self.peers.set(s.peers as i64);
        self.banned.set(s.banned as i64);
        self.devices.clear();
        for ((status, authenticated), n) in &s.devices {
            let auth = if *authenticated { "true" } else { "false" };
            self.devices
                .get_or_create(&[("status", *status), ("authenticated", auth)])
                .set(*n as i64);
        }
    }

    /// The exposition, OpenMetrics or classic.
    fn encode(&self, openmetrics: bool) -> Result<String, MetricsError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(if openmetrics { out } else { classic_text(&out) })
    }
}

/// What the node's state shows at a scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Peers connected.
    pub peers: usize,
    /// Bans in force.
    pub banned: usize,
    /// Rows of the devices table by (status label, authenticated).
    pub devices: Vec<((&'static str, bool), usize)>,
}

impl Sample {
    /// Counts `rows` (status, authenticated) by label.
    pub fn count_devices<'a>(
        rows: impl Iterator<Item = (&'a str, bool)>,
    ) -> Vec<((&'static str, bool), usize)> {
        let mut counts: std::collections::BTreeMap<(&'static str, bool), usize> =
            Default::default();
        for (status, auth) in rows {
            *counts.entry((status_label(status), auth)).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

/// A request for a [`Sample`], answered by the node's event loop.
pub type SampleRequest = oneshot::Sender<Sample>;

/// Why `/metrics` cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The registry did not encode (a bug).
    #[error("the metrics do not encode")]
    Encode(#[from] std::fmt::Error),
}

/// How long a scrape waits for the node's state: past it, the gauges keep
/// their last values (the counters are current either way).
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the gateway holds to answer `/metrics`: the registry, and a way
/// to ask the node's event loop for the gauges of its state.
#[derive(Clone, Debug)]
pub struct Handle {
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    node: mpsc::Sender<SampleRequest>,
    /// One scrape at a time sets the sampled gauges and encodes.
    scrape: Arc<Mutex<()>>,
}

impl Handle {
    /// A handle on `metrics`, sampling the node through `node`.
    pub fn new(metrics: Arc<Metrics>, node: mpsc::Sender<SampleRequest>) -> Handle {
        Handle {
            metrics,
            node,
            scrape: Arc::default(),
        }
    }

    /// The exposition now, OpenMetrics or classic text.
    pub async fn render(&self, openmetrics: bool) -> Result<String, MetricsError> {
        let (tx, rx) = oneshot::channel();
        let sample = match self.node.try_send(tx) {
            Ok(()) => tokio::time::timeout(SAMPLE_TIMEOUT, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        if sample.is_none() {
            tracing::debug!("metrics scraped without the node's state: it did not answer");
        }
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = &sample {
            self.metrics.apply(s);
        }
        self.metrics.encode(openmetrics)
    }
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The content type of each format.
pub fn content_type(openmetrics: bool) -> &'static str {
    if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    }
}

/// OpenMetrics text as `prometheus-client` writes it, in the classic text
/// format 0.0.4: a counter's family takes its samples' name (`x_total`,
/// where OpenMetrics names the family `x`), and the `# UNIT` and `# EOF`
/// lines (OpenMetrics only) go. Samples are left as they are.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A socket whose bytes are counted in `lanseed_http_bytes_total`.
pub struct CountedIo<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> CountedIo<S> {
    /// Counts `inner`'s bytes.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> CountedIo<S> {
        CountedIo { inner, metrics }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountedIo<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.metrics.http(Direction::Received, n as u64);
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountedIo<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.metrics.http(Direction::Sent, *n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.metrics.http(Direction::Sent, *n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts every gateway answer by path and result (a layer around the
/// gateway's router).
pub async fn count_requests(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = path_label(req.uri().path());
    let res = next.run(req).await;
    let answered = res.extensions().get::<Answered>().map(|a| a.0);
    metrics.request(path, result_label(res.status().as_u16(), answered));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics, openmetrics: bool) -> String {
        m.encode(openmetrics).unwrap()
    }

    #[test]
    fn counters_are_named_by_prometheus_rules_in_both_formats() {
        let m = Metrics::new();
        m.wire(Kind::Pieces, Direction::Sent, 1_000);
        m.wire(Kind::Pieces, Direction::Sent, 24);
        m.wire(Kind::Have, Direction::Received, 7);
        let om = scrape(&m, true);
        assert!(om.contains("# TYPE lanseed_p2p_bytes counter\n"), "{om}");
        assert!(om.contains("# UNIT lanseed_p2p_bytes bytes\n"), "{om}");
        assert!(
            om.contains("lanseed_p2p_bytes_total{kind=\"pieces\",direction=\"sent\"} 1024\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        let text = scrape(&m, false);
        assert!(
            text.contains("# TYPE lanseed_p2p_bytes_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP lanseed_p2p_bytes_total Bytes"),
            "{text}"
        );
        assert!(text.contains("lanseed_p2p_bytes_total{kind=\"have\",direction=\"received\"} 7\n"));
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
        // Gauges and histograms keep their names.
        assert!(text.contains("# TYPE lanseed_peers gauge\n"));
        assert!(text.contains("# TYPE lanseed_transfer_duration_seconds histogram\n"));
    }

    #[test]
    fn every_kind_and_direction_is_exposed_from_the_start() {
        let text = scrape(&Metrics::new(), false);
        for k in Kind::ALL {
            for d in ["sent", "received"] {
                let line = format!(
                    "lanseed_p2p_bytes_total{{kind=\"{}\",direction=\"{d}\"}} 0\n",
                    k.name()
                );
                assert!(text.contains(&line), "{line} missing from\n{text}");
            }
        }
        for r in ["completed", "failed", "abandoned"] {
            assert!(text.contains(&format!(
                "lanseed_transfers_ended_total{{result=\"{r}\"}} 0"
            )));
        }
    }

    #[test]
    fn classic_text_renames_only_counter_families() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\n# UNIT a_b bytes\na_b_total 3\n\
                  # HELP g Level.\n# TYPE g gauge\ng 1\n# HELP g_total Not a counter.\n\
                  # TYPE g_total gauge\ng_total 2\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total 3\n\
             # HELP g Level.\n# TYPE g gauge\ng 1\n# HELP g_total Not a counter.\n\
             # TYPE g_total gauge\ng_total 2\n"
        );
    }

    #[test]
    fn transfer_durations_are_observed_for_completed_transfers_only() {
        let m = Metrics::new();
        m.transfer_started();
        m.transfer_started();
        m.transfer_ended(Ended::Completed, 1.5);
        m.transfer_ended(Ended::Failed, 9.0);
        let text = scrape(&m, false);
        assert!(
            text.contains("lanseed_transfers_started_total 2\n"),
            "{text}"
        );
        assert!(text.contains("lanseed_transfers_ended_total{result=\"completed\"} 1\n"));
        assert!(text.contains("lanseed_transfers_ended_total{result=\"failed\"} 1\n"));
        assert!(
            text.contains("lanseed_transfer_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(text.contains("lanseed_transfer_duration_seconds_sum 1.5\n"));
        assert!(text.contains("lanseed_transfer_duration_seconds_bucket{le=\"1.6\"} 1\n"));
    }

    #[test]
    fn a_sample_replaces_the_device_gauges_and_unknown_statuses_are_other() {
        let m = Metrics::new();
        let rows = [
            ("success", true),
            ("success", true),
            ("trial", false),
            ("made up by a peer", false),
        ];
        m.apply(&Sample {
            peers: 3,
            banned: 1,
            devices: Sample::count_devices(rows.into_iter()),
        });
        let text = scrape(&m, false);
        assert!(text.contains("lanseed_peers 3\n"));
        assert!(text.contains("lanseed_peers_banned 1\n"));
        assert!(text.contains("lanseed_devices{status=\"success\",authenticated=\"true\"} 2\n"));
        assert!(text.contains("lanseed_devices{status=\"other\",authenticated=\"false\"} 1\n"));
        // The next sample has no trial device: its series goes.
        m.apply(&Sample {
            devices: Sample::count_devices([("success", true)].into_iter()),
            ..Sample::default()
        });
        let text = scrape(&m, false);
        assert!(!text.contains("status=\"trial\""), "{text}");
        assert!(text.contains("lanseed_devices{status=\"success\",authenticated=\"true\"} 1\n"));
    }

    #[test]
    fn gateway_labels_name_routes_and_answers() {
        assert_eq!(path_label("/capgo/zip/ab12.zip"), "/capgo/zip");
        assert_eq!(path_label("/capgo/file/ab12.br"), "/capgo/file");
        assert_eq!(path_label("/updates"), "/updates");
        assert_eq!(path_label("/updates/"), "other");
        assert_eq!(path_label("/../etc/passwd"), "other");
        assert_eq!(result_label(200, Some("up_to_date")), "up_to_date");
        assert_eq!(result_label(200, None), "ok");
        assert_eq!(result_label(206, None), "ok");
        assert_eq!(result_label(304, None), "ok");
        assert_eq!(result_label(429, Some("failed")), "429");
        assert_eq!(result_label(404, None), "4xx");
        assert_eq!(result_label(503, None), "5xx");
    }

    #[test]
    fn openmetrics_is_served_only_to_who_asks_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }

    #[tokio::test]
    async fn a_scrape_without_an_answer_from_the_node_keeps_the_last_gauges() {
        let m = Arc::new(Metrics::new());
        let (tx, mut rx) = mpsc::channel::<SampleRequest>(1);
        let h = Handle::new(m.clone(), tx);
        let node = tokio::spawn(async move {
            let reply = rx.recv().await.unwrap();
            let _ = reply.send(Sample {
                peers: 2,
                ..Sample::default()
            });
            rx // kept, and never answers again
        });
        assert!(h.render(false).await.unwrap().contains("lanseed_peers 2\n"));
        let _rx = node.await.unwrap();
        tokio::time::pause();
        let text = h.render(false).await.unwrap();
        assert!(text.contains("lanseed_peers 2\n"));
    }
}
