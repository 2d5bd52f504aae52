//! The node: one actor that owns the libp2p swarm, the store and every
//! fetch, `select!`ing over swarm events, mDNS findings, control commands,
//! a store watch and shutdown.
//!
//! - Transport (`lanseed::transport`): TCP + noise + yamux, optionally
//!   behind a pre-shared fleet key (libp2p private network), so only the
//!   fleet's nodes can connect; yamux's receive windows are bounded.
//!   TCP rather than QUIC: a private network works over TCP only, and
//!   measured on the reference machine TCP+noise+yamux streams move
//!   400–500 MiB/s, more than QUIC's 300–390.
//! - Streams: libp2p request-response with our own codec
//!   ([`codec`], limits from `lanseed_protocol::wire`): one bounded
//!   message each way on its own yamux stream; no 10 MiB response cap of
//!   the stock codecs to work around. Pieces go on [`line`]s instead
//!   (`libp2p-stream`): one long-lived stream per peer fetched from,
//!   carrying several requests ahead of their answers ([`fetch::sched`]
//!   keeps them in flight), the same frames through the same codec; a
//!   peer that does not speak lines, or keeps refusing them, is asked by
//!   request-response.
//! - Connections: at most 2 per peer and 256 in all; kept open while idle
//!   for an hour, so an announcement reaches connected peers at once.
//! - Announcements: on connecting, a node sends every release it holds;
//!   when its store gains one (packed or imported by another process,
//!   noticed by the store [`watch`], or fetched), it sends that one
//!   to every connected peer.
//! - Fetching: for apps and channels it follows, a node verifies an
//!   announced release against its trust list before asking for anything,
//!   and fetches only newer releases than it holds, from every peer that
//!   has pieces of it (see [`fetch`]).
//! - Seeding while fetching: a node tells its peers which pieces it holds
//!   (`Have`, at most every [`HAVE_EVERY`]) and serves them from its
//!   partial folder ([`serve`]), within `--max-uploads` and
//!   `--upload-limit` ([`limit`]).
//! - One thread runs the loop and every connection's task: `lanseed seed`
//!   and `lanseed device` build a current-thread runtime
//!   (`cmd::node_runtime`; a site cache, whose staging uses
//!   `block_in_place`, and `lanseed dev` keep tokio's multi-thread one), so
//!   a piece moves between them with no wake-up of another thread.
//! - Off the loop: reading answers that are not in the page cache and
//!   compressing them, verifying and writing pieces, commits, looking an
//!   announced release up in the store, watching the store's index,
//!   removing abandoned partial folders: all run on tokio's blocking pool
//!   and report back on a channel. The loop only decides; the reads it
//!   does itself are of what the page cache holds, which never wait
//!   ([`nowait`]): compression samples, and the large pieces that may not
//!   shrink, read from their files a chunk at a time as their answer is
//!   written ([`filebody`]; a chunk not cached is read in the pool).
//! - The security boundary has rooms of its own: who may connect
//!   ([`guard`]), who we know and how each behaved ([`peers`]), which
//!   releases to take ([`catalog`]); every table a peer can grow is
//!   bounded there.
//! - Metrics ([`crate::metrics`]): the codec counts its bytes, the loop
//!   its transfers, announcements and bans, and answers the gateway's
//!   `/metrics` with a sample of its state (peers, bans, devices).

mod addr_dials;
mod buffers;
mod catalog;
mod codec;
pub mod control;
pub mod devices;
mod discovery;
pub mod fetch;
mod filebody;
mod guard;
mod key;
pub mod limit;
mod line;
mod nowait;
mod peers;
pub mod retry;
mod seeding;
mod serve;
pub mod space;
pub mod status;
pub mod uploads;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt};
use lanseed_protocol::report::DeviceReport;
use lanseed_protocol::store::{CommitOutcome, StoreError};
use lanseed_protocol::wire::{Request, Response};
use lanseed_protocol::{BundleId, Hash, SignedRelease, Store, TrustList};
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identity, pnet};
use tokio::sync::mpsc;

use self::codec::WireCodec;
use self::control::Command;
use self::fetch::{Fault, Fetch, FetchError, Job, Opened, ReqId, Stage, Written};
use self::serve::AskId;
use self::status::{DroppedStatus, PeerStatus, RefusedStatus, Status, TransferStatus};
use crate::metrics::{Direction, Ended};
use crate::output::ReleaseView;

/// How long a transfer may wait with no peer to fetch from.
const STALL_LIMIT: Duration = Duration::from_secs(600);
/// Least time between an announcement a peer did not take and telling it
/// everything again when it is heard from (see `Node::unannounced`).
const ANNOUNCE_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// How often a fetching node tells its peers what it holds (when that
/// changed), and gives its fetches a nudge (peers done resting).
pub const HAVE_EVERY: Duration = Duration::from_millis(100);

/// How long a peer that lacked a piece, or was busy, is left alone.
const REST_NOT_FOUND: Duration = Duration::from_secs(2);
const REST_BUSY: Duration = Duration::from_millis(500);
/// Times a peer still fetching may lack what its `Have` listed before it
/// is set aside.
const MAX_LACKED: u32 = 3;

pub use self::catalog::Follow;

/// How the node finds peers on the LAN.
#[derive(Clone, Debug)]
pub enum Mdns {
    /// Not at all (`--no-mdns`).
    Off,
    /// On every interface.
    All,
    /// On one interface.
    Interface(String),
}

/// Everything a node needs.
pub struct NodeConfig {
    /// Its store.
    pub store: Store,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (`--peer`).
    pub peers: Vec<Multiaddr>,
    /// What to fetch.
    pub follow: Vec<Follow>,
    /// Keys whose releases may be fetched.
    pub trust: TrustList,
    /// The fleet's pre-shared key.
    pub fleet_key: Option<pnet::PreSharedKey>,
    /// Discovery.
    pub mdns: Mdns,
    /// How long a peer may take to answer one request.
    pub request_timeout: Duration,
    /// Upload cap in bytes per second (as counted on the interface).
    pub upload_limit: Option<u64>,
    /// Most peers served at once.
    pub max_uploads: usize,
    /// Whether loopback connections obey the per-address limits too.
    pub limit_loopback: bool,
    /// Free space to leave on the store's file system.
    pub min_free: space::MinFree,
    /// New follow lists (the device agent's channel switches).
    pub follow_updates: Option<tokio::sync::watch::Receiver<Vec<Follow>>>,
    /// Who may use the control socket besides the node's user and root.
    pub control_access: crate::control_socket::Access,
    /// This node's own device report, as it changes (a device agent's).
    pub reports: Option<tokio::sync::watch::Receiver<Option<DeviceReport>>>,
    /// Where to pass on the reports peers send (`lanseed dev` prints them).
    pub device_events: Option<mpsc::UnboundedSender<DeviceReport>>,
    /// Notified by another part of this process that changed the store
    /// (`lanseed dev` after a pack): the store is looked at at once, not
    /// at the next [`watch::EVERY`].
    pub store_changed: Option<Arc<tokio::sync::Notify>>,
    /// Extra status to show under `device` (the device agent's bundles).
    pub extra_status: Option<std::sync::Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    /// The site cache's state for `lanseed status` (`seed --origin`).
    pub origin_status: Option<std::sync::Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    /// Where to report fetch progress (the device agent turns it into
    /// `download` events).
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// The Capgo-compatible HTTP gateway (`--http`), run beside the node:
    /// it is handed the releases held and hands back the plugin's stats.
    pub gateway: Option<crate::gateway::Options>,
    /// Where it counts what it does (shared with the device agent).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Progress of one fetch.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The release being fetched.
    pub release: lanseed_protocol::VerifiedRelease,
    /// Bytes verified so far.
    pub done: u64,
    /// Bytes to fetch in all.
    pub total: u64,
    /// The release is now in the store (its last progress).
    pub committed: bool,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    guard: guard::Guard,
    limits: connection_limits::Behaviour,
    rr: request_response::Behaviour<WireCodec>,
    lines: libp2p_stream::Behaviour,
}

/// Most connections at once, all peers together.
const MAX_CONNECTIONS: u32 = 256;
/// Most inbound connections in their handshake at once.
const MAX_PENDING_INBOUND: u32 = 64;
/// Most dials in progress at once.
const MAX_PENDING_OUTBOUND: u32 = 32;
/// Most streams one connection may have open at once, both ways (two
/// nodes feeding each other several fetches): requests over 4 KiB are
/// read within a budget shared by all ([`codec::REQUEST_BUDGET`]), so
/// this bounds what one connection can make the node buffer to 512 KiB
/// more.
const MAX_STREAMS: usize = 128;
/// How often peers are dialled again (within the peer book's rate).
const REDIAL_EVERY: Duration = Duration::from_millis(500);
/// Malformed frames after which a peer is banned.
const MAX_MALFORMED: u64 = 8;

/// A request sent and not answered yet.
struct InFlight {
    /// To whom.
    peer: PeerId,
    /// Why, to route its answer.
    why: Pending,
    /// What its fetch calls it (a request sent again after its line
    /// closed keeps its first name).
    key: ReqId,
    /// The line it went on, if it did, and what it asked there (to ask
    /// again should the line end unanswered).
    line: Option<(line::LineId, line::Pieces)>,
    /// How many times it was sent (at most [`MAX_SENDS`]).
    sends: u8,
}

/// Most times a request of pieces is sent, when lines end before
/// answering it (refused, closed by the seeder, idle).
const MAX_SENDS: u8 = 3;
/// Lines to one peer refused before any answer after which it is asked by
/// request-response (until it disconnects).
const MAX_LINE_DROPS: u32 = 2;

/// Where an answer to a peer goes.
enum To {
    /// Back on the request's own stream.
    Rr(ResponseChannel<codec::Answer>),
    /// To the line it came on, which writes its answers in order.
    Line(tokio::sync::oneshot::Sender<codec::Answer>),
}

/// Why a request was sent, to route its answer.
enum Pending {
    Announce,
    Report,
    /// A `Have` about this fetch.
    Have(BundleId),
    Fetch(BundleId),
}

/// A commit's result.
type Committed = Result<(lanseed_protocol::VerifiedRelease, fetch::partial::Committed), StoreError>;

/// Work finished off the event loop.
enum Done {
    /// An answer is ready to send.
    Served(To, AskId, codec::Reply),
    /// A fetch opened (or not).
    Opened(Opened),
    /// A job of this fetch panicked.
    Panicked(BundleId),
    /// Pieces verified and written (or not).
    Written(Written),
    /// A release committed (or not).
    Committed(BundleId, Box<Committed>),
    /// An announced release was looked up in the store.
    Checked(Box<Checked>),
}

/// An announced, verified release looked up in the store.
struct Checked {
    /// Who announced it (none for a retry, or the rest of a fetch).
    peer: Option<PeerId>,
    release: lanseed_protocol::VerifiedRelease,
    /// What the peer holds of `.0` while it fetches it itself.
    bits: Option<Heard>,
    /// `Ok`: the store held every bundle of it whole, and the release was
    /// added (or not); `Err(bundle)`: that bundle is to be fetched.
    added: Result<Result<(), StoreError>, BundleId>,
}

/// A peer's `Have`: the bundle it is about, and what it holds of it.
type Heard = (BundleId, fetch::Heard);

struct Node {
    swarm: Swarm<Behaviour>,
    cfg: NodeConfig,
    book: peers::PeerBook,
    /// What it holds, follows and refused.
    catalog: catalog::Catalog,
    watch: Option<watch::Watch>,
    _store_lock: std::fs::File,
    fetches: HashMap<BundleId, Fetch>,
    inflight: HashMap<ReqId, InFlight>,
    /// Lines to peers this node fetches from, by peer.
    lines: HashMap<PeerId, line::ask::Asker>,
    /// Connected peers that do not speak lines, or refused them
    /// ([`MAX_LINE_DROPS`]): asked by request-response.
    no_lines: HashSet<PeerId>,
    /// Lines to connected peers refused before any answer.
    line_drops: HashMap<PeerId, u32>,
    /// Lines of peers to this node being served, by peer.
    lines_in: HashMap<PeerId, usize>,
    /// Where lines report.
    line_tx: mpsc::UnboundedSender<line::Event>,
    /// Opens lines.
    streams: libp2p_stream::Control,
    /// The codec, for lines (sharing the upload limit and the budgets of
    /// request-response's).
    codec: WireCodec,
    /// The number of the next line or request sent on one.
    next_line: u64,
    listen: Vec<Multiaddr>,
    discovery: Option<discovery::Discovery>,
    found_tx: mpsc::UnboundedSender<discovery::Found>,
    done_tx: mpsc::UnboundedSender<Done>,
    server: serve::Server,
    /// Where the codec gives upload slots back early (a reader stopped).
    slot_tx: mpsc::UnboundedSender<AskId>,
    /// Permits for work off the loop.
    workers: Arc<tokio::sync::Semaphore>,
    /// Why fetches wait for free space (`--min-free`), if they do.
    low_space: Option<String>,
    /// Fetches that failed on the store (a full disk), tried again later.
    retries: retry::Retries,
    /// Where `lanseed status` reaches it.
    control_socket: std::path::PathBuf,
    /// `--peer` addresses without a peer id, not reached yet.
    addr_dials: addr_dials::AddrDials,
    /// Every device heard of.
    devices: devices::Devices,
    /// Connected peers an announcement did not reach (they were frozen,
    /// or their stream failed), with when: told everything again when they
    /// are heard from at least [`ANNOUNCE_AGAIN_AFTER`] later, or at the
    /// next report tick. At most one per connected peer; a peer that
    /// fails its streams on purpose gets everything again at most that
    /// often.
    unannounced: HashMap<PeerId, Instant>,
    /// This node's own device report (a device agent's).
    own_report: Option<DeviceReport>,
    /// The releases held, for the gateway.
    gateway_releases: Option<tokio::sync::watch::Sender<Arc<Vec<SignedRelease>>>>,
}

fn build_swarm(
    key: identity::Keypair,
    cfg: &NodeConfig,
    codec: WireCodec,
) -> anyhow::Result<Swarm<Behaviour>> {
    let psk = cfg.fleet_key;
    let rr_cfg = request_response::Config::default()
        .with_request_timeout(cfg.request_timeout)
        .with_max_concurrent_streams(MAX_STREAMS);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            lanseed::transport::build(key, psk)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })?
        .with_behaviour(|_| Behaviour {
            guard: guard::Guard::new(cfg.limit_loopback),
            rr: request_response::Behaviour::with_codec(
                codec,
                [(
                    StreamProtocol::new(lanseed_protocol::wire::PROTOCOL),
                    ProtocolSupport::Full,
                )],
                rr_cfg,
            ),
            lines: libp2p_stream::Behaviour::new(),
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established_per_peer(Some(2))
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_pending_incoming(Some(MAX_PENDING_INBOUND))
                    .with_max_pending_outgoing(Some(MAX_PENDING_OUTBOUND)),
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// Runs a node until `shutdown` resolves, then stops cleanly: the mDNS
/// record is withdrawn, unfinished fetches stop (their verified pieces stay
/// in the partial folder for the next run), connections close, and the
/// store is left consistent.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // One node per store: a second one would share the identity and fight
    // over the control socket.
    let lock_path = cfg.store.root().join("node.lock");
    let store_lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    if store_lock.try_lock().is_err() {
        anyhow::bail!(
            "another lanseed node is running on store {}; stop it first or use another --store",
            cfg.store.root().display()
        );
    }
    // The gateway's flags are checked (TLS files read, address bound)
    // before anything else starts.
    let gateway_bound = match &cfg.gateway {
        Some(opts) => Some(crate::gateway::bind(opts).await?),
        None => None,
    };
    let key = key::identity(&cfg.store)?;
    let peer_id = key.public().to_peer_id();
    let limiter = Arc::new(limit::Limiter::new(cfg.upload_limit));
    let codec = WireCodec::new(limiter, cfg.metrics.clone());
    let mut swarm = build_swarm(key, &cfg, codec.clone())?;
    let mut streams = swarm.behaviour().lines.new_control();
    let mut lines_in = streams
        .accept(line::ask::protocol())
        .map_err(|e| anyhow::anyhow!("cannot serve lines: {e}"))?;
    let (line_tx, mut line_rx) = mpsc::unbounded_channel();
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    }
    let (found_tx, mut found_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (slot_tx, mut slot_rx) = mpsc::unbounded_channel();
    let (max_uploads, upload_limit) = (cfg.max_uploads, cfg.upload_limit);
    let catalog = catalog::Catalog::new(cfg.follow.clone(), cfg.trust.clone());
    let (cmd_tx, mut cmd_rx) = mpsc::channel(16);
    let listener = control::bind(cfg.store.root(), cfg.control_access).await?;
    let socket = listener.path().to_owned();
    let status_handle = control::StatusHandle::new(cmd_tx.clone());
    let control = tokio::spawn(control::serve(listener, cmd_tx));
    let mut node = Node {
        swarm,
        cfg,
        book: peers::PeerBook::new(Instant::now()),
        catalog,
        watch: None,
        _store_lock: store_lock,
        fetches: HashMap::new(),
        inflight: HashMap::new(),
        lines: HashMap::new(),
        no_lines: HashSet::new(),
        line_drops: HashMap::new(),
        lines_in: HashMap::new(),
        line_tx,
        streams,
        codec,
        next_line: 0,
        listen: Vec::new(),
        discovery: None,
        found_tx,
        done_tx,
        server: serve::Server::new(max_uploads, upload_limit),
        slot_tx,
        workers: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
        )),
        low_space: None,
        retries: retry::Retries::default(),
        control_socket: socket.clone(),
        addr_dials: addr_dials::AddrDials::default(),
        devices: devices::Devices::default(),
        unannounced: HashMap::new(),
        own_report: None,
        gateway_releases: None,
    };
    let mut report_rx = node.cfg.reports.take();
    let mut follow_rx = node.cfg.follow_updates.take();
    node.check_space();
    let seen = watch::stamp(&node.cfg.store);
    node.set_releases(node.cfg.store.releases()?, false);
    let (store_tx, mut store_rx) = mpsc::channel(1);
    let kick = node.cfg.store_changed.clone().unwrap_or_default();
    node.watch = Some(watch::Watch::start(
        node.cfg.store.clone(),
        seen,
        store_tx,
        kick,
    ));
    node.clean_partials();
    let gateway_stop = tokio_util::sync::CancellationToken::new();
    let (mut gateway, mut gateway_stats, mut samples) = match gateway_bound {
        Some(bound) => {
            let held: Vec<SignedRelease> = node.catalog.held().cloned().collect();
            let (releases_tx, releases_rx) = tokio::sync::watch::channel(Arc::new(held));
            let (stats_tx, stats_rx) = mpsc::channel(crate::gateway::STATS_QUEUE);
            let (sample_tx, sample_rx) = mpsc::channel(4);
            node.gateway_releases = Some(releases_tx);
            let links = crate::gateway::Links {
                releases: releases_rx,
                stats: stats_tx,
                metrics: crate::metrics::Handle::new(node.cfg.metrics.clone(), sample_tx),
                status: status_handle,
            };
            let task = tokio::spawn(crate::gateway::serve(
                bound,
                node.cfg.store.clone(),
                links,
                gateway_stop.clone(),
            ));
            (Some(task), Some(stats_rx), Some(sample_rx))
        }
        None => (None, None, None),
    };
    tracing::info!(%peer_id, releases = node.catalog.held().count(), store = %node.cfg.store.root().display(), control_socket = %node.control_socket.display(), "node started");
    for addr in node.cfg.peers.clone() {
        node.dial_flag_peer(addr);
    }
    let mut redial = tokio::time::interval(REDIAL_EVERY);
    let mut revive = tokio::time::interval(Duration::from_secs(3));
    let mut space_tick = tokio::time::interval(SPACE_EVERY);
    let mut report_tick = tokio::time::interval(lanseed_protocol::report::REPORT_EVERY);
    let mut nudge = tokio::time::interval(HAVE_EVERY);
    nudge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            event = node.swarm.select_next_some() => node.on_swarm_event(event),
            Some(found) = found_rx.recv() => node.on_found(found),
            Some(cmd) = cmd_rx.recv() => node.on_command(cmd),
            Some(done) = done_rx.recv() => node.on_done(done),
            Some(event) = line_rx.recv() => node.on_line(event),
            Some((peer, stream)) = lines_in.next() => {
                node.on_line_opened(peer, stream);
                // Every line waiting, not one a turn: libp2p-stream keeps
                // room for one, and drops the next.
                while let Some(Some((peer, stream))) = lines_in.next().now_or_never() {
                    node.on_line_opened(peer, stream);
                }
            }
            Some(id) = slot_rx.recv() => node.server.finished(&id, Instant::now()),
            _ = nudge.tick() => node.nudge(),
            Some(found) = store_rx.recv() => match found {
                Ok(releases) => node.set_releases(releases, true),
                Err(e) => tracing::warn!("cannot read the store: {e}"),
            },
            _ = redial.tick() => node.redial(),
            _ = space_tick.tick() => {
                node.check_space();
                node.retry_due();
            }
            follow = changed(&mut follow_rx) => match follow {
                Some(follow) => node.set_follow(follow),
                None => follow_rx = None,
            },
            report = changed(&mut report_rx) => match report {
                Some(report) => node.set_own_report(report),
                None => report_rx = None,
            },
            _ = report_tick.tick() => node.report_again(),
            stat = recv(&mut gateway_stats) => match stat {
                Some(report) => node.on_gateway_stat(report),
                None => gateway_stats = None,
            },
            asked = recv(&mut samples) => match asked {
                Some(reply) => {
                    let _ = reply.send(node.sample());
                }
                None => samples = None,
            },
            done = finished(&mut gateway) => {
                gateway = None;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e.into()),
                    Err(e) => break Err(anyhow::anyhow!("the gateway task failed: {e}")),
                }
            }
            _ = revive.tick() => {
                node.revive_stalled();
                node.drop_superseded();
            }
            _ = &mut shutdown => break Ok(()),
        }
        if control.is_finished() {
            break Err(anyhow::anyhow!(
                "the control socket {} stopped",
                socket.display()
            ));
        }
    };
    tracing::info!(abandoned = node.fetches.len(), "node stopping");
    if let Some(d) = node.discovery.take() {
        d.stop();
    }
    node.fetches.clear();
    gateway_stop.cancel();
    if let Some(g) = gateway {
        let _ = g.await;
    }
    control.abort();
    // The socket goes with its listener, when the aborted task is dropped.
    let _ = control.await;
    result
}

/// How often free space is looked at, and due retries started.
const SPACE_EVERY: Duration = Duration::from_secs(1);

/// The next value of a watch (a follow list, a device report), or `None`
/// when its sender is gone; never ready without a receiver.
async fn changed<T: Clone>(rx: &mut Option<tokio::sync::watch::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// The next item of an optional channel; never ready without one.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The end of an optional task; never ready without one.
async fn finished<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Node {
    /// This node's device changed: its row, and a report to every
    /// connected peer.
    fn set_own_report(&mut self, report: Option<DeviceReport>) {
        self.own_report = report;
        if let Some(r) = self.own_report.clone() {
            self.devices
                .take(r, devices::Source::Local, None, true, unix_now());
            for peer in self.connected_peers() {
                self.send_report(peer);
            }
        }
    }

    /// Every [`REPORT_EVERY`](lanseed_protocol::report::REPORT_EVERY):
    /// the own report again, and old rows forgotten.
    fn report_again(&mut self) {
        self.announce_again();
        let now = unix_now();
        self.devices.expire(now);
        if let Some(r) = self.own_report.clone() {
            self.devices
                .take(r, devices::Source::Local, None, true, now);
            for peer in self.connected_peers() {
                self.send_report(peer);
            }
        }
    }

    fn send_report(&mut self, peer: PeerId) {
        if let Some(r) = self.own_report.clone() {
            self.send(peer, Request::Report(r), Pending::Report);
        }
    }

    /// A stats event from the Capgo gateway (plain HTTP: never
    /// authenticated).
    fn on_gateway_stat(&mut self, report: DeviceReport) {
        let id = report.device_id.clone();
        let taken = self
            .devices
            .take(report, devices::Source::Gateway, None, false, unix_now());
        match taken {
            devices::Taken::New => tracing::debug!(device = %id, "device seen by the gateway"),
            devices::Taken::Updated => tracing::debug!(device = %id, "gateway stats"),
            devices::Taken::Claimed => {
                tracing::debug!(device = %id, "gateway stats for a device a peer reports: ignored")
            }
        }
    }

    /// A device report from `peer`.
    fn on_report(&mut self, peer: PeerId, report: DeviceReport) {
        if let Err(e) = report.check() {
            return self.mark(
                peer,
                peers::Mark::Refused,
                &format!("sent a device report that is not valid: {e}"),
            );
        }
        let id = report.device_id.clone();
        let authenticated = self.cfg.fleet_key.is_some();
        let copy = self
            .cfg
            .device_events
            .as_ref()
            .map(|tx| (tx, report.clone()));
        let taken = self.devices.take(
            report,
            devices::Source::Report,
            Some(peer),
            authenticated,
            unix_now(),
        );
        if let Some((tx, report)) = copy
            && taken != devices::Taken::Claimed
        {
            let _ = tx.send(report);
        }
        match taken {
            devices::Taken::New => {
                tracing::info!(%peer, device = %id, authenticated, "device reported")
            }
            devices::Taken::Updated => tracing::debug!(%peer, device = %id, "device report"),
            devices::Taken::Claimed => self.mark(
                peer,
                peers::Mark::Refused,
                &format!("claimed device id {id}, which another peer reports"),
            ),
        }
    }

    /// Follows `follow` from now on; announcements peers made of releases
    /// it now covers are judged again.
    fn set_follow(&mut self, follow: Vec<Follow>) {
        tracing::info!(?follow, "following");
        let replay = self.catalog.set_follow(follow);
        // Transfers of what it no longer follows stop (their verified
        // pieces stay in the partial folder until a collection).
        let catalog = &self.catalog;
        let followed = |r: &lanseed_protocol::VerifiedRelease| {
            catalog.follows(&r.release().app, &r.release().channel)
        };
        let before = self.fetches.len();
        let metrics = &self.cfg.metrics;
        self.fetches.retain(|_, f| {
            let keep = followed(&f.release);
            if !keep {
                metrics.transfer_ended(Ended::Abandoned, f.started.elapsed().as_secs_f64());
            }
            keep
        });
        self.retries.retain(followed);
        if self.fetches.len() < before {
            tracing::info!(
                stopped = before - self.fetches.len(),
                "transfers of releases no longer followed stopped"
            );
        }
        for (bytes, peers) in replay {
            for peer in peers {
                if self.book.is_connected(&peer) {
                    self.on_announced(peer, &bytes, None);
                }
            }
        }
    }

    /// Looks at the store's free space against `--min-free`: below it,
    /// fetches stop asking for pieces until there is room again.
    fn check_space(&mut self) {
        let low = match space::Space::of(self.cfg.store.root()) {
            Ok(s) => s.low(self.cfg.min_free),
            Err(e) => {
                tracing::debug!("cannot read the store's free space: {e}");
                None
            }
        };
        match (&self.low_space, &low) {
            (None, Some(why)) => {
                tracing::warn!("{why}");
                // Waiting transfers are parked, not kept open: an open
                // transfer holds the store's collection off, and a
                // collection may be what frees the space. Their verified
                // pieces stay for when they start again.
                let now = Instant::now();
                for (_, f) in std::mem::take(&mut self.fetches) {
                    if !matches!(f.stage, Stage::Committing) {
                        self.ended(&f, Ended::Abandoned);
                        self.retries.failed(f.release, now);
                    } else {
                        self.fetches.insert(f.bundle(), f);
                    }
                }
            }
            (Some(_), None) => {
                tracing::info!("free space is above --min-free again; fetches go on");
                self.retries.all_due_now(Instant::now());
            }
            _ => {}
        }
        let resumed = self.low_space.is_some() && low.is_none();
        self.low_space = low;
        if resumed {
            let bundles: Vec<BundleId> = self.fetches.keys().copied().collect();
            for b in bundles {
                self.drive(b);
            }
        }
    }

    /// Starts again the fetches whose retry is due (while there is room).
    fn retry_due(&mut self) {
        if self.low_space.is_some() {
            return;
        }
        for release in self.retries.take_due(Instant::now()) {
            let bundle = release.release().bundle_id;
            let r = release.release();
            if r.bundles().any(|b| self.fetches.contains_key(&b))
                || self.catalog.holds(&release.id())
                || self.catalog.superseded(r)
                || !self.catalog.follows(&r.app, &r.channel)
            {
                continue;
            }
            tracing::info!(bundle = %bundle, version = %release.release().version, "trying the transfer again");
            self.check_store(None, release, None);
        }
    }

    /// A fetch failed on the store (a full disk, an I/O error): tried
    /// again after a backoff, from the peers that announced it.
    fn retry_later(&mut self, release: lanseed_protocol::VerifiedRelease) {
        let wait = self.retries.failed(release, Instant::now());
        tracing::warn!("trying the transfer again in {}s", wait.as_secs().max(1));
    }

    /// Takes the releases the store holds now (read at start, then by
    /// the store [`watch`]); with `announce`, tells connected peers about
    /// those that appeared.
    fn set_releases(&mut self, releases: Vec<SignedRelease>, announce: bool) {
        let mut new = Vec::new();
        let added = self.catalog.set(releases);
        if let Some(tx) = &self.gateway_releases {
            let held: Vec<SignedRelease> = self.catalog.held().cloned().collect();
            let changed = held.len() != tx.borrow().len() || !added.is_empty();
            if changed {
                let _ = tx.send(Arc::new(held));
            }
        }
        for r in added {
            let rel = r.release();
            tracing::info!(app = %rel.app, channel = %rel.channel, version = %rel.version, seq = rel.seq, release = %r.id(), "release in store");
            new.push(r.to_bytes());
        }
        if announce && !new.is_empty() {
            let peers = self.connected_peers();
            for peer in &peers {
                self.announce(*peer, &new);
            }
            tracing::info!(
                releases = new.len(),
                peers = peers.len(),
                "release announced"
            );
        }
        self.drop_superseded();
    }

    /// Has the store watch look at the index at once.
    fn store_changed(&self) {
        if let Some(w) = &self.watch {
            w.kick();
        }
    }

    /// Announces every release held to `peer`, newest first: if the peer
    /// takes fewer than all (its rate limit), it takes those that matter.
    fn announce_all(&mut self, peer: PeerId) {
        let mut held: Vec<&SignedRelease> = self.catalog.held().collect();
        held.sort_by_key(|r| std::cmp::Reverse(r.release().seq));
        let releases: Vec<Vec<u8>> = held.iter().map(|r| r.to_bytes()).collect();
        self.announce(peer, &releases);
    }

    /// Announces again to the peers an announcement did not reach.
    fn announce_again(&mut self) {
        let connected: HashSet<PeerId> = self.connected_peers().into_iter().collect();
        let peers: Vec<PeerId> = self.unannounced.drain().map(|(p, _)| p).collect();
        for peer in peers.into_iter().filter(|p| connected.contains(p)) {
            tracing::debug!(%peer, "announcing again what did not reach it");
            self.announce_all(peer);
        }
    }

    /// Sends `records` to `peer`, in announcements within the wire's
    /// limits.
    fn announce(&mut self, peer: PeerId, records: &[Vec<u8>]) {
        for req in lanseed_protocol::wire::announcements(records) {
            self.send(peer, req, Pending::Announce);
            self.cfg.metrics.announcement(Direction::Sent);
        }
    }

    /// Ends fetches of releases older than one the store now holds, and
    /// fetches stalled for too long (their staging holds the gc lock).
    fn drop_superseded(&mut self) {
        let catalog = &self.catalog;
        let metrics = &self.cfg.metrics;
        let mut unwanted = Vec::new();
        self.fetches.retain(|bundle, f| {
            if matches!(f.stage, Stage::Committing) {
                return true; // its own commit may be what the store gained
            }
            let newer = catalog.superseded(f.release.release());
            let stale = f.stalled_for() > STALL_LIMIT;
            if newer || stale {
                tracing::info!(bundle = %bundle, newer, stale, "transfer abandoned");
            }
            if newer {
                unwanted.push(f.partial.clone()); // never wanted again
            }
            if newer || stale {
                metrics.transfer_ended(Ended::Abandoned, f.started.elapsed().as_secs_f64());
            }
            !(newer || stale)
        });
        if !unwanted.is_empty() {
            tokio::task::spawn_blocking(move || unwanted.iter().for_each(|p| p.remove()));
        }
    }

    /// Every few seconds, gives each transfer another go with the connected
    /// peers that announced its release whole and sent no bad data, also
    /// those set aside for not answering: a transfer kept busy by peers
    /// that are still fetching themselves must not forget the seeder.
    fn revive_stalled(&mut self) {
        let bundles: Vec<BundleId> = self.fetches.keys().copied().collect();
        for bundle in bundles {
            let Some(f) = self.fetches.get_mut(&bundle) else {
                continue;
            };
            let id = f.release.id();
            let before = f.providers();
            let now = Instant::now();
            for (peer, info) in self.book.iter() {
                if info.connected && info.announced.contains(&id) {
                    f.add_whole(*peer, now);
                }
            }
            if before == 0 && f.providers() > 0 {
                tracing::info!(bundle = %bundle, providers = f.providers(), "transfer resumed");
            }
            if f.providers() > before {
                self.drive(bundle);
            }
        }
    }

    /// Dials known peers that are due (found, or not connected after a
    /// restart of theirs, a network blip, or an idle close), within the
    /// peer book's backoff and dial rate; accepts peers whose ban ended.
    fn redial(&mut self) {
        let now = Instant::now();
        for peer in self.book.expired_bans(now) {
            self.swarm.behaviour_mut().guard.unban(&peer);
        }
        for (peer, addrs) in self.book.due(now) {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, "dial: {e}");
            }
        }
        for addr in self.addr_dials.due(now) {
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            let id = opts.connection_id();
            self.addr_dials.dialing(&addr, id);
            if let Err(e) = self.swarm.dial(opts) {
                tracing::warn!(%addr, "cannot dial --peer: {e}");
                self.addr_dials.failed(id, now);
            }
        }
    }

    fn send(&mut self, peer: PeerId, req: Request, why: Pending) -> ReqId {
        self.send_as(peer, req, why, None, 1)
    }

    /// Sends `req` to `peer`: pieces on the line to it (opened if need
    /// be), unless it does not speak lines; anything else by
    /// request-response. `key`: what the request's fetch already calls it
    /// (sent again after its line closed, for the `sends`th time).
    fn send_as(
        &mut self,
        peer: PeerId,
        req: Request,
        why: Pending,
        key: Option<ReqId>,
        sends: u8,
    ) -> ReqId {
        let pieces = match req {
            Request::GetPieces { pieces } if !self.no_lines.contains(&peer) => pieces,
            req => {
                let id = ReqId::Rr(
                    (self.swarm.behaviour_mut().rr)
                        .send_request(&peer, codec::Incoming::Request(req)),
                );
                let key = key.unwrap_or(id);
                let sent = InFlight {
                    peer,
                    why,
                    key,
                    line: None,
                    sends,
                };
                self.inflight.insert(id, sent);
                return key;
            }
        };
        let n = self.next_line();
        let asked = pieces.clone();
        // A line that ended unheard (its `Closed` is on its way) is
        // replaced: the request opens a new one.
        let refused = match self.lines.get(&peer) {
            Some(asker) => asker.ask(n, pieces).err(),
            None => Some(pieces),
        };
        let line = match refused {
            Some(pieces) => {
                let line = self.next_line();
                let asker = line::ask::Asker::spawn(
                    peer,
                    line,
                    (n, pieces),
                    self.streams.clone(),
                    self.codec.clone(),
                    self.cfg.request_timeout,
                    self.line_tx.clone(),
                );
                self.lines.insert(peer, asker);
                line
            }
            None => self.lines[&peer].line,
        };
        let id = ReqId::Line(n);
        let sent = InFlight {
            peer,
            why,
            key: key.unwrap_or(id),
            line: Some((line, asked)),
            sends,
        };
        self.inflight.insert(id, sent);
        key.unwrap_or(id)
    }

    fn next_line(&mut self) -> u64 {
        self.next_line += 1;
        self.next_line
    }

    /// What a line reports.
    fn on_line(&mut self, event: line::Event) {
        match event {
            line::Event::Asked {
                peer,
                ask,
                pieces,
                reply,
            } => {
                let request = Request::GetPieces { pieces };
                self.on_request(peer, AskId::Line(ask), request, To::Line(reply))
            }
            line::Event::Finished(ask) => self.server.finished(&AskId::Line(ask), Instant::now()),
            line::Event::Refused { peer, why, strike } => self.on_malformed(peer, &why, strike),
            line::Event::InboundEnded(peer) => {
                if let Some(n) = self.lines_in.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.lines_in.remove(&peer);
                    }
                }
            }
            line::Event::Answered { key, answer, .. } => {
                if let Some(sent) = self.inflight.remove(&ReqId::Line(key)) {
                    self.on_answer(sent, answer);
                }
            }
            line::Event::Closed {
                peer,
                line,
                unsent,
                why,
            } => self.on_line_closed(peer, line, unsent, why),
        }
    }

    /// Line `line` to `peer` ended: the requests it did not answer are
    /// sent again (at most [`MAX_SENDS`] times in all, to a peer still
    /// connected) when it never wrote them or ended for a reason that is
    /// no fault of theirs, else they failed.
    fn on_line_closed(
        &mut self,
        peer: PeerId,
        line: line::LineId,
        unsent: Vec<(u64, line::Pieces)>,
        why: line::Closed,
    ) {
        if self.lines.get(&peer).is_some_and(|a| a.line == line) {
            self.lines.remove(&peer);
        }
        let connected = self.book.is_connected(&peer);
        match &why {
            line::Closed::Unsupported if connected => {
                tracing::debug!(%peer, "does not speak lines: asked by request-response");
                self.no_lines.insert(peer);
            }
            line::Closed::Dropped(reason) if connected => {
                let drops = self.line_drops.entry(peer).or_default();
                *drops += 1;
                tracing::debug!(%peer, drops = *drops, "line refused: {reason}");
                if *drops >= MAX_LINE_DROPS {
                    self.no_lines.insert(peer);
                }
            }
            _ => {}
        }
        let again = !matches!(why, line::Closed::Failed(_));
        let unsent: HashSet<u64> = unsent.into_iter().map(|(n, _)| n).collect();
        let mine: Vec<ReqId> = (self.inflight.iter())
            .filter(|(_, s)| s.line.as_ref().is_some_and(|(l, _)| *l == line))
            .map(|(id, _)| *id)
            .collect();
        for id in mine {
            let Some(sent) = self.inflight.remove(&id) else {
                continue;
            };
            let never_written = matches!(id, ReqId::Line(n) if unsent.contains(&n));
            let connected = self.book.is_connected(&sent.peer);
            match sent.line {
                Some((_, pieces))
                    if (again || never_written) && sent.sends < MAX_SENDS && connected =>
                {
                    let req = Request::GetPieces { pieces };
                    self.send_as(sent.peer, req, sent.why, Some(sent.key), sent.sends + 1);
                }
                _ => {
                    let failed = fetch::Failed::NoAnswer(format!("line closed: {why}"));
                    self.on_answer(sent, Err(failed));
                }
            }
        }
    }

    /// A peer opened a line to this node: served, within
    /// [`line::MAX_PER_PEER`] and [`line::MAX_INBOUND`] (more are dropped,
    /// which resets them).
    fn on_line_opened(&mut self, peer: PeerId, stream: libp2p::Stream) {
        let total: usize = self.lines_in.values().sum();
        let of_peer = self.lines_in.get(&peer).copied().unwrap_or(0);
        if total >= line::MAX_INBOUND || of_peer >= line::MAX_PER_PEER {
            tracing::debug!(%peer, "line refused: too many open");
            return;
        }
        *self.lines_in.entry(peer).or_default() += 1;
        line::answer::spawn(
            peer,
            stream,
            self.codec.clone(),
            self.cfg.request_timeout,
            self.line_tx.clone(),
        );
    }

    /// Routes the answer to request `sent` (or why none came).
    fn on_answer(&mut self, sent: InFlight, answer: Result<Response, fetch::Failed>) {
        match (sent.why, answer) {
            (Pending::Fetch(bundle), answer) => {
                self.on_fetch_answer(bundle, sent.key, sent.peer, answer)
            }
            (Pending::Have(bundle), Ok(response)) if response != Response::Ack => {
                self.have_not_taken(sent.peer, bundle)
            }
            (Pending::Have(bundle), Err(_)) => self.have_not_taken(sent.peer, bundle),
            (Pending::Announce, Err(e)) => {
                tracing::debug!(peer = %sent.peer, "announcement not delivered: {e:?}");
                if self.book.is_connected(&sent.peer) {
                    self.unannounced
                        .entry(sent.peer)
                        .or_insert_with(Instant::now);
                }
            }
            (Pending::Report, Err(e)) => {
                tracing::debug!(peer = %sent.peer, "device report not delivered: {e:?}")
            }
            _ => {}
        }
    }

    fn dial_flag_peer(&mut self, addr: Multiaddr) {
        let peer = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        });
        match peer {
            Some(peer) => {
                self.book.found(
                    peer,
                    std::slice::from_ref(&addr),
                    "peer-flag",
                    true,
                    Instant::now(),
                );
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, "cannot dial --peer: {e}");
                }
            }
            // Dialled by address until a peer answers there.
            None => self.addr_dials.add(addr, Instant::now()),
        }
    }

    /// A peer seen over mDNS: noted in the peer book (which bounds what
    /// spoofed records can make it hold) and dialled within its rate.
    fn on_found(&mut self, found: discovery::Found) {
        let now = Instant::now();
        if self.book.is_banned(&found.peer, now) {
            return;
        }
        let fresh = self
            .book
            .found(found.peer, &found.addrs, "mdns", false, now);
        if fresh {
            tracing::debug!(peer = %found.peer, addrs = ?found.addrs, "peer found via mdns");
            self.redial();
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
        }
    }

    /// What the metrics' gauges show of the node's state now.
    fn sample(&self) -> crate::metrics::Sample {
        crate::metrics::Sample {
            peers: self.book.connected().len(),
            banned: self.book.banned(Instant::now()),
            devices: crate::metrics::Sample::count_devices(
                (self.devices.rows()).map(|r| (r.report.status.as_str(), r.authenticated)),
            ),
        }
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let mut releases: Vec<ReleaseView> = self.catalog.held().map(ReleaseView::new).collect();
        releases.sort_by(|a, b| (&a.app, &a.channel, a.seq).cmp(&(&b.app, &b.channel, b.seq)));
        Status {
            peer_id: self.swarm.local_peer_id().to_string(),
            control_socket: self.control_socket.display().to_string(),
            listen: self.listen.iter().map(ToString::to_string).collect(),
            peers: self
                .book
                .iter()
                .map(|(id, p)| PeerStatus {
                    peer_id: id.to_string(),
                    addresses: p.addrs().map(ToString::to_string).collect(),
                    found_by: p.found_by.to_owned(),
                    connected: p.connected,
                    banned: self.book.is_banned(id, now),
                    releases_announced: p.announced.len(),
                })
                .collect(),
            refused: self
                .book
                .records()
                .map(|r| RefusedStatus {
                    peer_id: r.peer.to_string(),
                    state: r.mark.name().to_owned(),
                    reason: r.reason.clone(),
                    count: r.count,
                    secs_ago: now.duration_since(r.last).as_secs(),
                })
                .collect(),
            dropped: DroppedStatus {
                connections_refused: self.swarm.behaviour().guard.refused,
                device_claims_refused: self.devices.claims_refused,
                devices_evicted: self.devices.evicted,
                counts: self.book.dropped.clone(),
            },
            releases,
            device: self.cfg.extra_status.as_ref().map(|f| f()),
            origin: self.cfg.origin_status.as_ref().map(|f| f()),
            waiting: self.low_space.clone(),
            authenticated_reports: self.cfg.fleet_key.is_some(),
            devices: {
                let mut d: Vec<status::DeviceStatus> = (self.devices.rows())
                    .map(|r| status::DeviceStatus::new(r, unix_now()))
                    .collect();
                d.sort_by(|a, b| a.device_id.cmp(&b.device_id));
                d
            },
            dialling: {
                let mut d: Vec<status::DialStatus> = (self.addr_dials.waiting(now))
                    .into_iter()
                    .map(|(address, wait)| status::DialStatus {
                        address,
                        in_secs: wait.as_secs(),
                    })
                    .collect();
                d.sort_by(|a, b| a.address.cmp(&b.address));
                d
            },
            retrying: self
                .retries
                .waiting(now)
                .map(|(r, wait)| status::RetryStatus {
                    bundle_id: r.release().bundle_id.to_string(),
                    version: r.release().version.clone(),
                    in_secs: wait.as_secs(),
                })
                .collect(),
            transfers: self
                .fetches
                .values()
                .map(|f| {
                    let r = f.release.release();
                    TransferStatus {
                        app: r.app.clone(),
                        channel: r.channel.clone(),
                        version: r.version.clone(),
                        bundle_id: f.bundle().to_string(),
                        state: match f.stage {
                            Stage::Committing => "committing",
                            _ if f.providers() == 0 => "stalled",
                            Stage::Pieces(_) => "files",
                            Stage::Opening(_) | Stage::Manifest(_) => "manifest",
                        }
                        .to_owned(),
                        bytes_done: f.bytes_done,
                        bytes_total: f.bytes_total,
                        rate_bytes_per_sec: f.bytes_done.saturating_sub(f.reused) as f64
                            / f.started.elapsed().as_secs_f64().max(1e-3),
                        providers: f.providers(),
                        reused_bytes: f.reused,
                        wire_bytes: f.wire_bytes,
                    }
                })
                .collect(),
            uploads: self.server.status(),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen.push(address.clone());
                self.start_discovery(&address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                if let Some(addr) = self.addr_dials.connected(connection_id) {
                    tracing::info!(peer = %peer_id, %addr, "--peer answered");
                    self.book.found(
                        peer_id,
                        std::slice::from_ref(&addr),
                        "peer-flag",
                        true,
                        Instant::now(),
                    );
                }
                let dialed = endpoint
                    .is_dialer()
                    .then(|| endpoint.get_remote_address().clone());
                if !self
                    .book
                    .connected_to(peer_id, dialed.as_ref(), Instant::now())
                {
                    tracing::debug!(peer = %peer_id, "peer book full of connected peers: closing");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.announce_all(peer_id);
                    self.send_report(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                self.book.disconnected(&peer_id, Instant::now());
                self.server.forget(&peer_id);
                // Its line fails on its own if answers are owed; an idle
                // one ends now.
                self.lines.remove(&peer_id);
                self.no_lines.remove(&peer_id);
                self.line_drops.remove(&peer_id);
                self.unannounced.remove(&peer_id); // told all on reconnecting
                for f in self.fetches.values_mut() {
                    f.told.remove(&peer_id); // it may restart and forget
                    f.forget_peer(&peer_id); // back when it announces again
                }
                tracing::info!(peer = %peer_id, cause = ?cause, "peer disconnected");
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                if self.addr_dials.failed(connection_id, Instant::now()) {
                    tracing::info!("--peer did not answer ({error}); dialling it again later");
                }
                tracing::debug!(peer = ?peer_id, "dial failed: {error}");
                if let Some(peer) = peer_id {
                    self.book.dial_failed(&peer, Instant::now());
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(addr = %send_back_addr, "incoming connection failed: {error}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => self.on_rr(ev),
            _ => {}
        }
    }

    fn start_discovery(&mut self, address: &Multiaddr) {
        if self.discovery.is_some() {
            return;
        }
        let interface = match &self.cfg.mdns {
            Mdns::Off => return,
            Mdns::All => None,
            Mdns::Interface(name) => Some(name.as_str()),
        };
        let Some(port) = address.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        }) else {
            return;
        };
        match discovery::Discovery::start(
            *self.swarm.local_peer_id(),
            port,
            interface,
            self.found_tx.clone(),
        ) {
            Ok(d) => self.discovery = Some(d),
            Err(e) => tracing::warn!("mDNS discovery is off: {e}"),
        }
    }

    fn on_rr(&mut self, ev: request_response::Event<codec::Incoming, codec::Answer>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request: codec::Incoming::Request(request),
                    channel,
                    request_id,
                } => self.on_request(peer, AskId::Rr(request_id), request, To::Rr(channel)),
                request_response::Message::Request {
                    request: codec::Incoming::Malformed { why, strike },
                    ..
                } => self.on_malformed(peer, &why, strike),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(sent) = self.inflight.remove(&ReqId::Rr(request_id)) {
                        self.on_answer(sent, Ok(response.into_message()));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(sent) = self.inflight.remove(&ReqId::Rr(request_id)) {
                    let failed = match &error {
                        request_response::OutboundFailure::Io(e)
                            if e.kind() == std::io::ErrorKind::InvalidData =>
                        {
                            fetch::Failed::Malformed(e.to_string())
                        }
                        _ => fetch::Failed::NoAnswer(error.to_string()),
                    };
                    self.on_answer(sent, Err(failed));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::debug!(%peer, "inbound request failed: {error}");
                self.server.finished(&AskId::Rr(request_id), Instant::now());
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.server.finished(&AskId::Rr(request_id), Instant::now());
            }
        }
    }

    /// A peer sent a frame over its limits or that does not decode: its
    /// stream is closed unanswered, and a peer that keeps doing it is
    /// banned.
    fn on_malformed(&mut self, peer: PeerId, why: &str, strike: bool) {
        if !strike {
            // Maybe an honest node of another version: recorded under one
            // reason (however many kinds it tries), logged at debug.
            tracing::debug!(%peer, "frame refused unread: {why}");
            let reason =
                "sent frames this version does not read (unknown kinds, or over its limits)";
            self.book
                .record(peer, peers::Mark::Closed, reason, Instant::now());
            return;
        }
        self.mark(
            peer,
            peers::Mark::Closed,
            &format!("sent a malformed frame: {why}"),
        );
        let malformed = self.book.strike(&peer);
        if malformed >= MAX_MALFORMED {
            self.ban(peer, &format!("sent {malformed} malformed frames"));
        }
    }

    /// Answers a peer: announcements at once; manifests and pieces, when
    /// an upload slot is free, off the loop.
    fn on_request(&mut self, peer: PeerId, request_id: AskId, request: Request, channel: To) {
        if self
            .unannounced
            .get(&peer)
            .is_some_and(|at| at.elapsed() >= ANNOUNCE_AGAIN_AFTER)
        {
            // Heard from again: what it missed, now.
            self.unannounced.remove(&peer);
            tracing::debug!(%peer, "announcing again what did not reach it");
            self.announce_all(peer);
        }
        let job: Box<dyn FnOnce() -> Response + Send> = match request {
            Request::Announce { releases } => {
                self.cfg.metrics.announcement(Direction::Received);
                if !self.book.allow_announce(&peer, Instant::now()) {
                    self.mark(
                        peer,
                        peers::Mark::RateLimited,
                        "sent announcements faster than allowed; the rest were dropped",
                    );
                    return self.respond(channel, Response::Busy);
                }
                tracing::debug!(%peer, releases = releases.len(), "announcement received");
                for bytes in releases {
                    self.on_announced(peer, &bytes, None);
                }
                return self.respond(channel, Response::Ack);
            }
            Request::Report(report) => {
                if !self.book.allow_report(&peer, Instant::now()) {
                    self.mark(
                        peer,
                        peers::Mark::RateLimited,
                        "sent device reports faster than allowed; the rest were dropped",
                    );
                    return self.respond(channel, Response::Busy);
                }
                self.on_report(peer, report);
                return self.respond(channel, Response::Ack);
            }
            Request::Have {
                bundle,
                release,
                bits,
                fetching,
            } => {
                let id = BundleId(Hash::from_bytes(bundle));
                if !self.book.allow_have(&peer, Instant::now()) {
                    self.mark(
                        peer,
                        peers::Mark::RateLimited,
                        "sent Have messages faster than allowed; the rest were dropped",
                    );
                    return self.respond(channel, Response::Busy);
                }
                tracing::trace!(%peer, bundle = %id, "have received");
                if release.is_empty() {
                    // An update for a release it told us about before:
                    // useful only while we fetch it too.
                    if let Some(f) = self.fetches.get_mut(&id) {
                        f.add_partial(peer, (bits, fetching));
                        // What is new is what it holds: only it may be
                        // asked for more now (the others' turn comes with
                        // their answers, and the tick). With many peers,
                        // offering every one to the picker on each `Have`
                        // was most of a node's work.
                        self.drive_from(id, Some(peer));
                    }
                } else if SignedRelease::from_bytes(&release)
                    .is_ok_and(|r| r.release().bundles().any(|b| b == id))
                {
                    self.on_announced(peer, &release, Some((id, (bits, fetching))));
                }
                return self.respond(channel, Response::Ack);
            }
            Request::GetManifest { bundle } => {
                let id = BundleId(Hash::from_bytes(bundle));
                let from_fetch = self.fetches.get(&id).and_then(Fetch::manifest_bytes);
                let path = self.cfg.store.manifest_path(&id);
                if !self.server.admit(peer, request_id, Instant::now()) {
                    return self.respond(channel, Response::Busy);
                }
                Box::new(move || match from_fetch {
                    Some(bytes) => serve::manifest(&bytes),
                    None => match std::fs::read(path) {
                        Ok(bytes) => serve::manifest(&bytes),
                        Err(_) => Response::NotFound,
                    },
                })
            }
            Request::GetPieces { pieces } => {
                let now = Instant::now();
                let keys: Vec<seeding::Piece> = pieces
                    .iter()
                    .map(|(blob, index)| (Hash::from_bytes(*blob), *index))
                    .collect();
                if self.server.hold_back(&peer, &keys, now) {
                    tracing::trace!(%peer, "piece on its way to another peer: held back");
                    return self.respond(channel, Response::Busy);
                }
                // Admitted before the look-ups: a peer told Busy costs none.
                if !self.server.admit(peer, request_id, now) {
                    return self.respond(channel, Response::Busy);
                }
                let sources: Vec<(Hash, serve::Source)> = pieces
                    .into_iter()
                    .map(|(blob, index)| {
                        let hash = Hash::from_bytes(blob);
                        let partial = self
                            .fetches
                            .values()
                            .find_map(|f| f.piece_source(&hash, index));
                        let source = match partial {
                            Some((path, len)) => serve::Source::Partial(path, index, len),
                            None => serve::Source::Store(self.cfg.store.blob_path(&hash), index),
                        };
                        (hash, source)
                    })
                    .collect();
                let whole = keys
                    .into_iter()
                    .zip(&sources)
                    .filter(|(_, (_, s))| matches!(s, serve::Source::Store(..)))
                    .map(|(k, _)| k)
                    .collect();
                self.server.sends_whole(&request_id, whole);
                // Pieces that may not shrink are answered here, read from
                // their files as they are written, with no trip through
                // the blocking pool and back.
                match self.server.answer(sources) {
                    Ok(reply) => {
                        return self.on_done(Done::Served(channel, request_id, reply));
                    }
                    Err(job) => job,
                }
            }
        };
        self.spawn(None, move || {
            Done::Served(channel, request_id, codec::Reply::Message(job()))
        });
    }

    fn respond(&mut self, to: To, response: Response) {
        let _ = self.answer_to(to, response.into());
    }

    /// Sends `answer` where it goes; whether it got there.
    fn answer_to(&mut self, to: To, answer: codec::Answer) -> bool {
        match to {
            To::Rr(channel) => (self.swarm.behaviour_mut().rr)
                .send_response(channel, answer)
                .is_ok(),
            To::Line(reply) => reply.send(answer).is_ok(),
        }
    }

    /// Runs `work` on the blocking pool, at most [`Node::workers`] jobs
    /// at once (each thread of its own would keep its own malloc arena of
    /// freed megabyte buffers: with 50 peers asking, that was most of a
    /// seeder's memory); its result comes back as `Done`. A job of a
    /// fetch that panics (a bug) ends that fetch rather than leaving it
    /// waiting for a result forever.
    fn spawn(&self, fetch: Option<BundleId>, work: impl FnOnce() -> Done + Send + 'static) {
        let tx = self.done_tx.clone();
        let workers = self.workers.clone();
        tokio::spawn(async move {
            let Ok(_permit) = workers.acquire_owned().await else {
                return;
            };
            match tokio::task::spawn_blocking(work).await {
                Ok(done) => {
                    let _ = tx.send(done);
                }
                Err(_) => {
                    if let Some(bundle) = fetch {
                        let _ = tx.send(Done::Panicked(bundle));
                    }
                }
            }
        });
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Served(channel, request_id, reply) => {
                self.server.sending(&request_id, &reply, Instant::now());
                let slot = codec::SlotRelease::new(self.slot_tx.clone(), request_id);
                let answer = codec::Answer {
                    reply,
                    slot: Some(slot),
                };
                if !self.answer_to(channel, answer) {
                    self.server.finished(&request_id, Instant::now());
                }
            }
            Done::Opened(o) => {
                let (bundle, peer) = (o.bundle, o.peer);
                let Some(f) = self.fetches.get_mut(&bundle) else {
                    return;
                };
                // Errors come only with a manifest a peer sent (one read
                // back from disk that is no good is logged and fetched).
                match (f.on_opened(o), peer) {
                    (Err(e), Some(peer)) => self.on_fetch_error(bundle, peer, e),
                    _ => self.report_progress(bundle),
                }
                self.drive(bundle);
            }
            Done::Checked(c) => self.on_checked(*c),
            Done::Panicked(bundle) => {
                tracing::error!(bundle = %bundle, "a transfer job failed unexpectedly; the transfer stops (its verified pieces stay for the next start)");
                if let Some(f) = self.fetches.remove(&bundle) {
                    self.ended(&f, Ended::Failed);
                }
            }
            Done::Written(w) => {
                let (bundle, peer) = (w.bundle, w.peer);
                let Some(f) = self.fetches.get_mut(&bundle) else {
                    return;
                };
                tracing::debug!(%peer, bundle = %bundle, pieces = w.pieces.len(), ok = w.result.is_ok(), "pieces written");
                match f.on_written(w) {
                    Ok(()) => self.report_progress(bundle),
                    Err(e) => self.on_fetch_error(bundle, peer, e),
                }
                self.drive(bundle);
            }
            Done::Committed(bundle, result) => {
                let Some(fetch) = self.fetches.remove(&bundle) else {
                    return;
                };
                match *result {
                    Ok((release, done)) => {
                        let secs = fetch.started.elapsed().as_secs_f64();
                        // Making it durable and putting it in place.
                        let commit_secs = fetch
                            .commit_started
                            .map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
                        // Everything the process did meanwhile: on a node
                        // that only fetches, what this transfer cost.
                        let cpu_secs =
                            crate::cputime::since(fetch.cpu_at_start).unwrap_or(f64::NAN);
                        self.cfg.metrics.transfer_ended(Ended::Completed, secs);
                        let r = release.release();
                        let bytes = fetch.bytes_done - fetch.reused;
                        let rest = if done.outcome.is_some() {
                            "transfer done"
                        } else {
                            "bundle fetched; its release needs its Capgo payload too"
                        };
                        tracing::info!(
                            app = %r.app, channel = %r.channel, version = %r.version, bundle = %bundle,
                            bytes, wire_bytes = fetch.wire_bytes, reused = fetch.reused, secs, commit_secs, cpu_secs,
                            from = %fetch::wire_from_text(&fetch.wire_from),
                            rate_mb_s = bytes as f64 / 1e6 / secs.max(1e-6),
                            already = done.outcome == Some(CommitOutcome::AlreadyPresent),
                            "{rest}"
                        );
                        if done.outcome.is_none() {
                            self.check_store(None, release, None);
                        }
                        for waiting in done.waiting {
                            self.check_store(None, waiting, None);
                        }
                        self.store_changed();
                        // The device agent looks at the store now rather
                        // than at its next tick.
                        if let (Some(tx), Some(_)) = (&self.cfg.progress, done.outcome) {
                            let _ = tx.send(Progress {
                                release: fetch.release.clone(),
                                done: fetch.bytes_total,
                                total: fetch.bytes_total,
                                committed: true,
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(bundle = %bundle, "cannot commit the fetched release: {e}");
                        self.ended(&fetch, Ended::Failed);
                        self.retry_later(fetch.release);
                    }
                }
            }
        }
    }

    /// Counts a transfer that ended other than by its commit.
    fn ended(&self, f: &Fetch, how: Ended) {
        (self.cfg.metrics).transfer_ended(how, f.started.elapsed().as_secs_f64());
    }

    /// Tells the device agent how far the fetch of a release's own bundle
    /// is (a Capgo payload is not what a device installs).
    fn report_progress(&self, bundle: BundleId) {
        if let (Some(tx), Some(f)) = (&self.cfg.progress, self.fetches.get(&bundle))
            && f.has_manifest()
            && f.is_main()
        {
            let _ = tx.send(Progress {
                release: f.release.clone(),
                done: f.bytes_done,
                total: f.bytes_total,
                committed: false,
            });
        }
    }

    /// Peers with an open connection.
    fn connected_peers(&self) -> Vec<PeerId> {
        self.book.connected()
    }

    /// Notes what `peer` did wrong (for `status`); warns once per peer,
    /// mark and reason, so a flood does not flood the log.
    fn mark(&mut self, peer: PeerId, mark: peers::Mark, reason: &str) {
        if self.book.record(peer, mark, reason, Instant::now()) {
            tracing::warn!(%peer, "{}: {reason}", mark.verb());
        }
    }

    /// Bans `peer` node-wide for what it did: its connections are closed
    /// and refused, and nothing it says is taken, until the ban ends.
    fn ban(&mut self, peer: PeerId, reason: &str) {
        let (new, evicted) = self.book.ban(peer, reason, Instant::now());
        if new {
            tracing::warn!(%peer, "banned peer: it {reason}");
            self.cfg.metrics.banned();
        }
        let guard = &mut self.swarm.behaviour_mut().guard;
        if let Some(e) = evicted {
            guard.unban(&e);
        }
        guard.ban(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        for f in self.fetches.values_mut() {
            f.ban(peer);
        }
    }

    /// Every [`HAVE_EVERY`]: tells peers about pieces gained, and lets
    /// fetches ask peers that are done resting.
    fn nudge(&mut self) {
        let connected = self.connected_peers();
        let mut haves = Vec::new();
        for (bundle, f) in &mut self.fetches {
            if !f.have_changed {
                continue;
            }
            let Some((bits, fetching)) = f.have_bits() else {
                continue;
            };
            f.have_changed = false;
            let record = f.release.signed().to_bytes();
            let targets: Vec<PeerId> = connected
                .iter()
                .filter(|p| !f.is_whole(p))
                .copied()
                .collect();
            for peer in &targets {
                // The record once per peer; then only what changed.
                let release = if f.told.insert(*peer) {
                    record.clone()
                } else {
                    Vec::new()
                };
                haves.push((
                    *peer,
                    *bundle,
                    Request::Have {
                        bundle: *bundle.0.as_bytes(),
                        release,
                        bits: bits.clone(),
                        fetching: fetching.clone(),
                    },
                ));
            }
        }
        for (peer, bundle, req) in haves {
            self.send(peer, req, Pending::Have(bundle));
        }
        // Peers that answered nothing are set aside (their pieces are
        // asked of others at once).
        let now = Instant::now();
        let mut silent = Vec::new();
        for f in self.fetches.values_mut() {
            for peer in f.silent_peers(now) {
                let wait = f.set_aside(peer, now);
                silent.push((peer, fetch::SILENT_AFTER, wait));
            }
            for peer in f.overdue_manifest_peers(now) {
                let wait = f.set_aside(peer, now);
                silent.push((peer, fetch::asks::GIVE_UP, wait));
            }
        }
        for (peer, after, wait) in silent {
            let reason = format!(
                "answered nothing in {}s; set aside from a transfer for {}s",
                after.as_secs(),
                wait.as_secs()
            );
            self.mark(peer, peers::Mark::SetAside, &reason);
        }
        let bundles: Vec<BundleId> = self.fetches.keys().copied().collect();
        for b in bundles {
            self.drive(b);
        }
    }

    /// A `Have` was not taken (the peer was busy, or it failed): the next
    /// one to that peer carries the signed record again.
    fn have_not_taken(&mut self, peer: PeerId, bundle: BundleId) {
        if let Some(f) = self.fetches.get_mut(&bundle) {
            f.told.remove(&peer);
        }
    }

    /// Removes partial folders of bundles the store now holds whole.
    fn clean_partials(&self) {
        let Ok(dir) = std::fs::read_dir(self.cfg.store.partial_dir()) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<BundleId>().ok()) else {
                continue;
            };
            if self.cfg.store.check_complete(&id).is_ok() {
                fetch::partial::Partial::of(&self.cfg.store, &id).remove();
            }
        }
    }

    /// A release a peer holds whole (`bits: None`), or is fetching and
    /// holds those pieces of: fetch it if followed, trusted, newer than
    /// what the store has, and not held yet. The cheap checks come first
    /// (held, refused before, followed, key pinned for that app and
    /// channel, sequence); the signature is checked only for a release the
    /// node would fetch.
    fn on_announced(&mut self, peer: PeerId, bytes: &[u8], heard: Option<Heard>) {
        let now = Instant::now();
        let signed = match SignedRelease::from_bytes(bytes) {
            Ok(s) => s,
            Err(e) => {
                return self.mark(
                    peer,
                    peers::Mark::Refused,
                    &format!("announced an invalid release record: {e}"),
                );
            }
        };
        let id = signed.id();
        if heard.is_none() {
            self.book.announced(&peer, id);
        }
        let record = Hash::of(bytes);
        if self.catalog.settled(&id, &record) {
            return;
        }
        let r = signed.release();
        let bundle = r.bundle_id;
        // A fetch of this release already runs (of its own bundle, or of
        // its Capgo payload): one more source. A `Have` is about one
        // bundle, and helps only the fetch of that one.
        let running = r.bundles().find(|b| {
            self.fetches
                .get(b)
                .is_some_and(|f| f.release.id() == id || f.also.iter().any(|a| a.id() == id))
        });
        if let Some(key) = running
            && let Some(f) = self.fetches.get_mut(&key)
        {
            match heard {
                None => f.add_whole(peer, now),
                Some((b, bits)) if b == key => f.add_partial(peer, bits),
                Some(_) => return,
            }
            self.drive(key);
            return;
        }
        if !self.catalog.follows(&r.app, &r.channel) {
            if heard.is_none() {
                self.catalog
                    .unfollowed(record, &r.app, &r.channel, bytes, peer);
            }
            return;
        }
        let what = format!("{} {} {} (seq {})", r.app, r.channel, r.version, r.seq);
        let verified = match self.catalog.judge(&signed) {
            catalog::Judgement::Fetch(v) => *v,
            catalog::Judgement::Refuse(why) => {
                self.catalog.refuse(record);
                return self.mark(
                    peer,
                    peers::Mark::Refused,
                    &format!("offered {what}: {why}"),
                );
            }
            catalog::Judgement::Older(why) => {
                // Honest peers that are behind do this all the time: noted
                // for status, not warned about.
                self.catalog.refuse(record);
                let reason = format!("offered {what}: {why}");
                tracing::debug!(%peer, "refused announced release: {reason}");
                self.book
                    .record(peer, peers::Mark::Refused, &reason, Instant::now());
                return;
            }
            catalog::Judgement::Forged(why) => {
                self.catalog.refuse(record);
                return self.ban(peer, &format!("offered {what}: {why}"));
            }
        };
        if let Some(f) = self.fetches.get_mut(&bundle) {
            f.also.push(verified);
            match heard {
                None => f.add_whole(peer, now),
                Some((b, bits)) if b == bundle => f.add_partial(peer, bits),
                Some(_) => {}
            }
            self.drive(bundle);
            return;
        }
        self.check_store(Some(peer), verified, heard);
    }

    /// Does the store hold every bundle of `verified` whole already (it
    /// holds another release of them, or the rest of a fetch is in)? Adds
    /// it if so, else fetches the first bundle missing ([`Node::on_checked`]).
    /// That reads the disk: off the loop.
    fn check_store(
        &mut self,
        peer: Option<PeerId>,
        verified: lanseed_protocol::VerifiedRelease,
        heard: Option<Heard>,
    ) {
        if !self.catalog.start_checking(verified.id()) {
            return; // being looked up already
        }
        let store = self.cfg.store.clone();
        self.spawn(None, move || {
            let missing = (verified.release().bundles()).find(|b| store.check_complete(b).is_err());
            let added = match missing {
                None => Ok(store.add_release(&verified).map(|_| ())),
                Some(b) => Err(b),
            };
            Done::Checked(Box::new(Checked {
                peer,
                release: verified,
                bits: heard,
                added,
            }))
        });
    }

    /// A verified release the store did not hold: another release of a
    /// bundle it holds whole was added, or the fetch starts.
    fn on_checked(&mut self, c: Checked) {
        let Checked {
            peer,
            release: verified,
            bits,
            added,
        } = c;
        self.catalog.done_checking(&verified.id());
        let bundle = match added {
            Ok(Ok(())) => {
                self.store_changed();
                return;
            }
            Ok(Err(e)) => return tracing::warn!("cannot add release: {e}"),
            Err(missing) => missing,
        };
        let now = Instant::now();
        if self.catalog.holds(&verified.id()) {
            return;
        }
        // The peer is a source of the whole release, or (its `Have`) of
        // pieces of one bundle: of use only to the fetch of that one.
        let first = match (peer, bits) {
            (Some(p), None) => Some((p, None)),
            (Some(p), Some((b, h))) if b == bundle => Some((p, Some(h))),
            _ => None,
        };
        if let Some(f) = self.fetches.get_mut(&bundle) {
            if f.release.id() != verified.id() && f.also.iter().all(|a| a.id() != verified.id()) {
                f.also.push(verified);
            }
            match first {
                Some((p, None)) => f.add_whole(p, now),
                Some((p, Some(h))) => f.add_partial(p, h),
                None => {}
            }
            self.drive(bundle);
            return;
        }
        self.start_fetch(verified, bundle, first);
    }

    /// Starts fetching `bundle` of `verified` (its own, or its Capgo
    /// payload) from `first` (if any: a peer, and the pieces it holds when
    /// it is still fetching) and every connected peer that announced it.
    fn start_fetch(
        &mut self,
        verified: lanseed_protocol::VerifiedRelease,
        bundle: BundleId,
        first: Option<(PeerId, Option<fetch::Heard>)>,
    ) {
        let r = verified.release();
        let now = Instant::now();
        if self.low_space.is_some() {
            // Started when there is room again (see `check_space`).
            self.retries.failed(verified, now);
            return;
        }
        tracing::info!(peer = ?first.as_ref().map(|f| f.0), app = %r.app, channel = %r.channel, version = %r.version, seq = r.seq, bundle = %bundle, "fetching release");
        let (mut f, open) = Fetch::new(&self.cfg.store, verified, bundle);
        match first {
            Some((peer, None)) => f.add_whole(peer, now),
            Some((peer, Some(bits))) => f.add_partial(peer, bits),
            None => {}
        }
        // Peers that announced it earlier are sources too.
        let id = f.release.id();
        for (p, info) in self.book.iter() {
            if info.connected && info.announced.contains(&id) {
                f.add_whole(*p, now);
            }
        }
        self.fetches.insert(bundle, f);
        self.cfg.metrics.transfer_started();
        self.spawn(Some(bundle), move || Done::Opened(open.run()));
    }

    fn on_fetch_answer(
        &mut self,
        bundle: BundleId,
        key: ReqId,
        peer: PeerId,
        answer: Result<Response, fetch::Failed>,
    ) {
        let store = self.cfg.store.clone();
        let Some(f) = self.fetches.get_mut(&bundle) else {
            return;
        };
        match f.on_answer(&store, key, peer, answer, Instant::now()) {
            Ok(Some(Job::Write(job))) => self.spawn(Some(bundle), move || Done::Written(job.run())),
            Ok(Some(Job::Open(job))) => self.spawn(Some(bundle), move || Done::Opened(job.run())),
            Ok(None) => {}
            Err(e) => self.on_fetch_error(bundle, peer, e),
        }
        self.drive(bundle);
    }

    /// What a failed answer means for the fetch and the peer.
    fn on_fetch_error(&mut self, bundle: BundleId, peer: PeerId, e: FetchError) {
        let Some(f) = self.fetches.get_mut(&bundle) else {
            return;
        };
        let now = Instant::now();
        match e {
            FetchError::Peer(Fault::Busy) => f.rest(&peer, now + REST_BUSY),
            FetchError::Peer(Fault::NotFound)
                if !f.is_whole(&peer) && f.has_manifest() && f.lacked(peer) < MAX_LACKED =>
            {
                // A peer still fetching may have just moved its pieces into
                // its store; ask again shortly (a peer whose `Have` keeps
                // lying is set aside below).
                f.rest(&peer, now + REST_NOT_FOUND)
            }
            FetchError::Peer(fault @ (Fault::NoAnswer(_) | Fault::NotFound)) => {
                // Maybe restarting, pruned or asleep: asked again after a
                // backoff, when it announces the release again.
                let wait = f.set_aside(peer, now);
                let reason = format!("{fault}; set aside from a transfer for {}s", wait.as_secs());
                self.mark(peer, peers::Mark::SetAside, &reason);
            }
            FetchError::Peer(fault) => self.ban(peer, &fault.to_string()),
            FetchError::Store(e) => {
                tracing::error!(bundle = %bundle, "transfer failed: {e}");
                if let Some(f) = self.fetches.remove(&bundle) {
                    self.ended(&f, Ended::Failed);
                    self.retry_later(f.release);
                }
            }
        }
    }

    /// Fills every peer's pipeline for the fetch, or starts its commit when
    /// complete.
    fn drive(&mut self, bundle: BundleId) {
        self.drive_from(bundle, None);
    }

    /// Sends what fetch `bundle` asks next, of `only` if given (else of
    /// any peer), and commits it once complete.
    fn drive_from(&mut self, bundle: BundleId, only: Option<PeerId>) {
        let now = Instant::now();
        // Below the free-space floor, no piece is asked for.
        while self.low_space.is_none() {
            let Some(f) = self.fetches.get(&bundle) else {
                return;
            };
            let Some((peer, req, want)) = f.next_request(only, now) else {
                break;
            };
            if let fetch::Want::Pieces(pieces, bytes) = &want {
                tracing::trace!(%peer, pieces = pieces.len(), bytes, "pieces asked");
            }
            let id = self.send(peer, req, Pending::Fetch(bundle));
            if let Some(f) = self.fetches.get_mut(&bundle) {
                f.sent(id, peer, want, now);
            }
        }
        let store = self.cfg.store.clone();
        let Some(f) = self.fetches.get_mut(&bundle) else {
            return;
        };
        // Peers that never answered while others delivered the whole
        // bundle: their silence is recorded as they leave the transfer.
        let unanswered = if f.is_complete() {
            f.unanswered_peers(Instant::now())
        } else {
            Vec::new()
        };
        if let Some(job) = f.take_commit(&store) {
            self.spawn(Some(bundle), move || {
                Done::Committed(bundle, Box::new(job.run()))
            });
            for peer in unanswered {
                self.mark(
                    peer,
                    peers::Mark::SetAside,
                    "answered nothing while others delivered the whole transfer",
                );
            }
        } else if f.providers() == 0 && !f.stall_warned && !matches!(f.stage, Stage::Committing) {
            f.stall_warned = true;
            tracing::warn!(bundle = %bundle, "transfer stalled: no peer left to fetch from; waiting for another to announce it");
        }
    }
}
