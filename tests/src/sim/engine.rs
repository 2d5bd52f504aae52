//! The nodes and what they do, event by event: the rules of the daemon's
//! event loop (`daemon/src/node/mod.rs`) and fetch
//! (`daemon/src/node/fetch/mod.rs`) around the real scheduler
//! ([`super::sched`]).
//!
//! - The publisher holds the bundle whole at time zero and announces it to
//!   the peers it is connected to; a follower that hears of it starts a
//!   fetch (`Sched::new`, every whole peer `add_whole`).
//! - The manifest is asked of one peer the scheduler offers
//!   (`Sched::askable`: whole peers first, none resting); Busy rests that
//!   peer 500 ms and the next is asked. Opening it takes `open` time, then
//!   the pieces are numbered (`Sched::open`).
//! - Every 100 ms (`HAVE_EVERY`, each node at its own phase) a fetching
//!   node that gained pieces sends `Have {bits, fetching}` to every peer it
//!   is connected to that is not whole, then drives. A `Have` received is
//!   `add_partial` and a drive, as in the node (the drive is run only when
//!   the `Have` offers a piece neither held nor asked for, the only case
//!   where it can ask for more; the others are counted, see `on_have`).
//! - A drive asks the scheduler for requests (`Sched::pick` over its peers,
//!   as `Fetch::next_request` does) until it has none.
//! - A server admits a request within its upload slots ([`Uploads`]) or
//!   answers Busy; it answers pieces it lacks with NotFound; an admitted
//!   answer is prepared (`serve` time per byte) and sent as a flow of its
//!   wire bytes. The requester verifies it (`verify` time per byte), marks
//!   the pieces held, and drives.
//! - A whole node holds a piece back from others while it is on its way
//!   to one peer and for a window after (initial seeding, [`Seeding`]): Busy.
//! - Busy rests a peer 500 ms; NotFound from a peer still fetching rests it
//!   2 s (3 times, then it is set aside), as the node does.
//! - All pieces in: the commit takes `commit` time; then the node is whole
//!   and announces it to its peers, which count it whole (`add_whole`).
//! - A host that leaves closes its connections: its peers forget it
//!   (`remove_peer`, its requests asked of others), its flows stop. A host
//!   that joins late connects to its peers and is told by the whole ones.
//!
//! Not modelled: CPU time of the loop itself (measured instead: the
//! simulator reports what its own drives cost), disk, the manifest
//! failover rounds beyond one ask at a time, connection set-up, and the
//! bytes of small messages on the links (counted, not sent).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lanseed_protocol::pieces::Bitfield;
use libp2p::PeerId;

use super::events::{MS, Nanos, Queue, SEC};
use super::network::{Check, Link, Net, Order};
use super::sched::Sched;
use super::seeding::{self, Seeding};
use super::topology;
use super::uploads::Uploads;
use super::workload::{self, Bundle, Spec};
use crate::Rng;

/// How often a fetching node tells its peers what it holds (the node's
/// HAVE_EVERY).
pub const HAVE_EVERY: Nanos = 100 * MS;
/// How long a busy peer is left alone (the node's REST_BUSY).
pub const REST_BUSY: Nanos = 500 * MS;
/// How long a peer that lacked a piece is left alone (REST_NOT_FOUND).
pub const REST_NOT_FOUND: Nanos = 2000 * MS;
/// Times a peer still fetching may lack what it listed (MAX_LACKED).
pub const MAX_LACKED: u32 = 3;
/// How long a peer may leave its first request unanswered (SILENT_AFTER).
pub const SILENT_AFTER: Duration = Duration::from_secs(10);
/// Most connections a node keeps (the node's MAX_CONNECTIONS).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Bytes of a `Have` besides its two bitfields (ids, framing).
const HAVE_OVERHEAD: u64 = 48;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Config {
    /// Followers (the publisher comes on top).
    pub nodes: usize,
    /// Every link's nominal rate, megabits a second, both ways.
    pub mbit: f64,
    /// Share of the nominal rate lanseed's payload gets (TCP under tbf,
    /// then noise, yamux and framing).
    pub efficiency: f64,
    /// One-way latency of every message.
    pub latency: Nanos,
    /// How answers on one connection share it.
    pub order: Order,
    /// Share of followers that join late, at a random time in `window`.
    pub join_late: f64,
    /// Share of followers that leave, at a random time in `window`.
    pub leave: f64,
    /// When late joins and leaves happen: from 0 to this.
    pub window: Nanos,
    /// Seeds everything random.
    pub seed: u64,
    /// The bundle.
    pub bundle: Spec,
    /// `--max-uploads`.
    pub max_uploads: usize,
    /// Most connections of a node (its peers, one connection each).
    pub max_connections: usize,
    /// Preparing an answer (read, compress): nanoseconds per raw byte.
    pub serve_ns_per_byte: f64,
    /// Verifying and writing an answer: nanoseconds per raw byte.
    pub verify_ns_per_byte: f64,
    /// Opening the manifest.
    pub open: Nanos,
    /// Committing the release.
    pub commit: Nanos,
    /// The run gives up at this simulated time.
    pub sim_limit: Nanos,
    /// The run gives up after this much wall clock.
    pub wall_limit: Duration,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Followers that were to end whole (not leaving).
    pub followers: usize,
    /// Of those, how many did.
    pub done: usize,
    /// Seconds until the last of them committed (`None`: not all did).
    pub time_to_all: Option<f64>,
    /// Simulated seconds when the run stopped.
    pub sim_secs: f64,
    /// The fluid lower bound, seconds (nominal rates, raw bytes).
    pub bound: f64,
    /// The bundle's raw bytes.
    pub bundle_bytes: u64,
    /// The bundle's wire bytes (text compressed).
    pub bundle_wire: u64,
    /// Wire bytes the publisher sent, in bundles (raw bytes).
    pub publisher_upload: f64,
    /// Raw bytes received twice (endgame), in bundles, all followers.
    pub duplicates: f64,
    /// Per node and second, over all nodes: `Have`s sent.
    pub haves_per_sec: f64,
    /// The most `Have`s a second one node sent.
    pub haves_per_sec_max: f64,
    /// Per node and second: requests sent (manifest and pieces).
    pub requests_per_sec: f64,
    /// Per node and second: answers sent (data, Busy, NotFound).
    pub answers_per_sec: f64,
    /// Of those, Busy and NotFound.
    pub refusals_per_sec: f64,
    /// `Have` bytes a node sent a second, most of any node.
    pub have_bytes_per_sec_max: f64,
    /// Most `Have`s one node received a second.
    pub haves_in_per_sec_max: f64,
    /// Most peers one node is connected to.
    pub max_connections: usize,
    /// Most flows one host carried at once, both ways.
    pub max_active_flows: u32,
    /// Events processed, and the wall clock it took.
    pub events: u64,
    /// Wall-clock seconds of the run.
    pub wall_secs: f64,
    /// Wall-clock microseconds one drive took on average (the node's
    /// scheduler work per `Have` received, answer, or tick).
    pub drive_us: f64,
    /// Drives per node and second the node would do (one per `Have`
    /// received, per answer, per tick), run or skipped by the simulator.
    pub drives_per_sec: f64,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
}

enum Stage {
    Manifest,
    Opening,
    Pieces,
    Committing,
}

struct Fetch {
    sched: Sched<u64>,
    stage: Stage,
    have_changed: bool,
    /// The manifest request waiting, if any.
    manifest_ask: Option<u64>,
}

#[derive(Default, Clone)]
struct Stats {
    haves: u64,
    haves_in: u64,
    have_bytes: u64,
    requests: u64,
    answers: u64,
    refusals: u64,
    sent: u64,
    /// Raw bytes received that were held already (endgame duplicates).
    duplicate: u64,
}

struct Node {
    present: bool,
    whole: bool,
    leaves: bool,
    fetch: Option<Fetch>,
    /// Peers connected now.
    peers: Vec<u32>,
    uploads: Uploads,
    seeding: Seeding,
    done_at: Option<Nanos>,
    stats: Stats,
}

#[derive(Clone, Copy)]
enum Want {
    Manifest,
    Pieces,
}

struct Req {
    from: u32,
    to: u32,
    want: Want,
    pieces: Vec<u32>,
}

enum Reply {
    Data(u64),
    Busy,
    NotFound,
}

enum Msg {
    Announce,
    Have(Vec<u8>, Vec<u8>),
    Get(u64),
    Answer(u64, Reply),
}

enum Ev {
    Join(u32),
    Leave(u32),
    Nudge(u32),
    Deliver { to: u32, from: u32, msg: Msg },
    Check(Check),
    Ready(u64),
    Written(u32, Vec<u32>),
    Opened(u32),
    Committed(u32),
}

struct World {
    cfg: Config,
    bundle: Bundle,
    nodes: Vec<Node>,
    adj: Vec<Vec<u32>>,
    ids: HashMap<PeerId, u32>,
    /// Each host's peer id.
    pids: Vec<PeerId>,
    q: Queue<Ev>,
    net: Net<u64>,
    reqs: HashMap<u64, Req>,
    next_key: u64,
    t0: Instant,
    rng: Rng,
    /// Followers yet to end whole.
    remaining: usize,
    drives: u64,
    /// Drives the node would do that the simulator skips (see on_have).
    skipped_drives: u64,
    drive_time: Duration,
}

/// Runs one simulation.
pub fn run(cfg: &Config) -> Report {
    let wall = Instant::now();
    let mut w = World::new(cfg.clone());
    let mut events = 0u64;
    let mut stopped = None;
    while w.remaining > 0 {
        let Some((t, ev)) = w.q.pop() else {
            stopped = Some("no event left (a follower cannot finish)".to_owned());
            break;
        };
        if t > cfg.sim_limit {
            stopped = Some(format!("simulated time limit {} s", cfg.sim_limit / SEC));
            break;
        }
        events += 1;
        if events.is_multiple_of(4096) && wall.elapsed() > cfg.wall_limit {
            stopped = Some(format!(
                "wall-clock limit {} s at simulated {:.2} s",
                cfg.wall_limit.as_secs(),
                t as f64 / SEC as f64
            ));
            break;
        }
        w.handle(ev);
    }
    w.report(events, wall.elapsed(), stopped)
}

impl World {
    fn new(cfg: Config) -> World {
        let mut rng = Rng::new(cfg.seed);
        let bundle = Bundle::generate(&cfg.bundle);
        let hosts = cfg.nodes + 1;
        let adj = topology::connect(hosts, cfg.max_connections, &mut rng);
        let payload = cfg.mbit * 1e6 / 8.0 * cfg.efficiency;
        let net = Net::new(
            vec![
                Link {
                    up: payload,
                    down: payload
                };
                hosts
            ],
            cfg.order,
        );
        let mut nodes: Vec<Node> = (0..hosts)
            .map(|_| Node {
                present: true,
                whole: false,
                leaves: false,
                fetch: None,
                peers: Vec::new(),
                uploads: Uploads::new(cfg.max_uploads),
                seeding: Seeding::default(),
                done_at: None,
                stats: Stats::default(),
            })
            .collect();
        let pids: Vec<PeerId> = (0..hosts).map(|_| PeerId::random()).collect();
        let ids = (pids.iter().enumerate())
            .map(|(i, p)| (*p, i as u32))
            .collect();
        let mut q = Queue::default();
        // Who joins late and who leaves: distinct followers, drawn.
        let mut order: Vec<u32> = (1..hosts as u32).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let late = ((cfg.nodes as f64 * cfg.join_late).round() as usize).min(cfg.nodes);
        let leave = ((cfg.nodes as f64 * cfg.leave).round() as usize).min(cfg.nodes - late);
        for &h in &order[..late] {
            nodes[h as usize].present = false;
            q.at(1 + rng.below(cfg.window.max(1)), Ev::Join(h));
        }
        for &h in &order[late..late + leave] {
            nodes[h as usize].leaves = true;
            q.at(1 + rng.below(cfg.window.max(1)), Ev::Leave(h));
        }
        for (i, peers) in adj.iter().enumerate() {
            if nodes[i].present {
                nodes[i].peers = (peers.iter().copied())
                    .filter(|&p| nodes[p as usize].present)
                    .collect();
            }
        }
        let remaining = cfg.nodes - leave;
        let mut w = World {
            cfg,
            bundle,
            nodes,
            adj,
            ids,
            pids,
            q,
            net,
            reqs: HashMap::new(),
            next_key: 0,
            t0: Instant::now(),
            rng,
            remaining,
            drives: 0,
            skipped_drives: 0,
            drive_time: Duration::ZERO,
        };
        // The publisher has packed: whole, and tells its peers.
        w.nodes[0].whole = true;
        w.announce(0);
        w
    }

    fn now(&self) -> Nanos {
        self.q.now()
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_nanos(self.now())
    }

    fn send(&mut self, from: u32, to: u32, msg: Msg) {
        let lat = self.cfg.latency;
        self.q.after(lat, Ev::Deliver { to, from, msg });
    }

    fn announce(&mut self, from: u32) {
        let peers = self.nodes[from as usize].peers.clone();
        for p in peers {
            self.send(from, p, Msg::Announce);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Join(h) => self.join(h),
            Ev::Leave(h) => self.leave(h),
            Ev::Nudge(h) => self.nudge(h),
            Ev::Deliver { to, from, msg } => {
                if !self.nodes[to as usize].present || !self.nodes[from as usize].present {
                    return; // its connection is gone
                }
                match msg {
                    Msg::Announce => self.on_announce(to, from),
                    Msg::Have(bits, fetching) => self.on_have(to, from, bits, fetching),
                    Msg::Get(key) => self.on_get(to, key),
                    Msg::Answer(key, reply) => self.on_answer(to, key, reply),
                }
            }
            Ev::Check(c) => {
                let now = self.now();
                let (done, checks) = self.net.check(now, c);
                self.schedule(checks);
                for key in done {
                    self.on_sent(key);
                }
            }
            Ev::Ready(key) => self.on_ready(key),
            Ev::Written(h, pieces) => self.on_written(h, pieces),
            Ev::Opened(h) => self.on_opened(h),
            Ev::Committed(h) => self.on_committed(h),
        }
    }

    fn schedule(&mut self, checks: Vec<Check>) {
        for c in checks {
            self.q.at(c.at, Ev::Check(c));
        }
    }

    fn join(&mut self, h: u32) {
        self.nodes[h as usize].present = true;
        let peers: Vec<u32> = (self.adj[h as usize].iter().copied())
            .filter(|&p| self.nodes[p as usize].present)
            .collect();
        for &p in &peers {
            self.nodes[p as usize].peers.push(h);
            // On connecting, a node announces every release it holds.
            if self.nodes[p as usize].whole {
                self.send(p, h, Msg::Announce);
            }
        }
        self.nodes[h as usize].peers = peers;
    }

    fn leave(&mut self, h: u32) {
        let now = self.now();
        self.nodes[h as usize].present = false;
        let (lost, checks) = self.net.drop_host(now, h);
        self.schedule(checks);
        let at = self.instant();
        for key in lost {
            if let Some(r) = self.reqs.remove(&key) {
                let from = self.pids[r.from as usize];
                self.nodes[r.to as usize].uploads.done(&from, at);
            }
        }
        let peers = std::mem::take(&mut self.nodes[h as usize].peers);
        let gone = self.pids[h as usize];
        for p in peers {
            let node = &mut self.nodes[p as usize];
            node.peers.retain(|&x| x != h);
            node.seeding.forget(&gone);
            if let Some(f) = &mut node.fetch {
                f.sched.remove_peer(&gone);
                if f.manifest_ask
                    .is_some_and(|k| self.reqs.get(&k).is_none_or(|r| r.to == h))
                {
                    f.manifest_ask = None;
                }
            }
            self.drive(p);
        }
    }

    /// A follower hears of the release: its fetch starts.
    fn start_fetch(&mut self, h: u32) {
        let node = &self.nodes[h as usize];
        if node.whole || node.fetch.is_some() || h == 0 {
            return;
        }
        let seed = self.rng.next_u64();
        self.nodes[h as usize].fetch = Some(Fetch {
            sched: Sched::new(seed),
            stage: Stage::Manifest,
            have_changed: false,
            manifest_ask: None,
        });
        // The node's tick runs at its own phase.
        let phase = 1 + self.rng.below(HAVE_EVERY);
        self.q.after(phase, Ev::Nudge(h));
    }

    fn on_announce(&mut self, h: u32, from: u32) {
        self.start_fetch(h);
        let at = self.instant();
        let peer = self.pids[from as usize];
        if let Some(f) = &mut self.nodes[h as usize].fetch {
            f.sched.add_whole(peer, at);
            self.drive(h);
        }
    }

    fn on_have(&mut self, h: u32, from: u32, bits: Vec<u8>, fetching: Vec<u8>) {
        self.nodes[h as usize].stats.haves_in += 1;
        // The first Have to a peer carries the release record: a node not
        // fetching it yet starts.
        self.start_fetch(h);
        let peer = self.pids[from as usize];
        if let Some(f) = &mut self.nodes[h as usize].fetch {
            // The node drives after every Have, for its sender only. A
            // drive can only ask for something new when the Have offers a
            // piece neither held nor asked for (pipelines that freed up,
            // rests that ended and late requests are driven by answers and
            // the 100 ms tick), so other drives are counted and their cost
            // charged, not run: the same requests, far less simulator time.
            let useful = offers_new(&bits, f.sched.have(), || f.sched.fetching());
            f.sched.add_partial(peer, bits, fetching);
            if matches!(f.stage, Stage::Manifest) {
                self.drive(h);
            } else if useful && matches!(f.stage, Stage::Pieces) {
                self.drive_from(h, Some(peer));
            } else {
                self.skipped_drives += 1;
            }
        }
    }

    fn nudge(&mut self, h: u32) {
        let at = self.instant();
        let node = &mut self.nodes[h as usize];
        if !node.present {
            return;
        }
        let Some(f) = &mut node.fetch else {
            return; // whole: the tick has nothing to tell
        };
        let mut haves = Vec::new();
        if f.have_changed && matches!(f.stage, Stage::Pieces) {
            f.have_changed = false;
            let bits = f.sched.have().as_bytes().to_vec();
            let fetching = f.sched.fetching().as_bytes().to_vec();
            for &p in &node.peers {
                if !f.sched.is_whole(&self.pids[p as usize]) {
                    haves.push((p, bits.clone(), fetching.clone()));
                }
            }
        }
        // Peers that answered nothing are set aside.
        for p in f.sched.silent(at, SILENT_AFTER) {
            f.sched.set_aside(p, at);
        }
        for (p, bits, fetching) in haves {
            let stats = &mut self.nodes[h as usize].stats;
            stats.haves += 1;
            stats.have_bytes += HAVE_OVERHEAD + (bits.len() + fetching.len()) as u64;
            self.send(h, p, Msg::Have(bits, fetching));
        }
        self.drive(h);
        self.q.after(HAVE_EVERY, Ev::Nudge(h));
    }

    fn new_request(&mut self, from: u32, to: u32, want: Want, pieces: Vec<u32>) -> u64 {
        self.next_key += 1;
        let key = self.next_key;
        self.reqs.insert(
            key,
            Req {
                from,
                to,
                want,
                pieces,
            },
        );
        self.nodes[from as usize].stats.requests += 1;
        self.send(from, to, Msg::Get(key));
        key
    }

    /// Fills every peer's pipeline, as the node's `drive`.
    fn drive(&mut self, h: u32) {
        self.drive_from(h, None);
    }

    /// Fills the pipeline of `only` if given, else of every peer, as the
    /// node's `drive_from`.
    fn drive_from(&mut self, h: u32, only: Option<PeerId>) {
        let started = Instant::now();
        self.drives += 1;
        let at = self.instant();
        loop {
            let ids = &self.ids;
            let bundle = &self.bundle;
            let Some(f) = &mut self.nodes[h as usize].fetch else {
                break;
            };
            match f.stage {
                Stage::Manifest => {
                    if f.manifest_ask.is_some() {
                        break;
                    }
                    let Some(peer) = f.sched.askable(at).next() else {
                        break;
                    };
                    let to = ids[&peer];
                    let key = self.new_request(h, to, Want::Manifest, Vec::new());
                    if let Some(f) = &mut self.nodes[h as usize].fetch {
                        f.manifest_ask = Some(key);
                    }
                    break;
                }
                Stage::Pieces => {
                    if f.sched.complete() {
                        f.stage = Stage::Committing;
                        self.q.after(self.cfg.commit, Ev::Committed(h));
                        break;
                    }
                    let len = |n: u32| bundle.piece_len[n as usize];
                    let picked = match only {
                        Some(p) => f.sched.pick(&p, at, len).map(|pieces| (p, pieces)),
                        None => (f.sched.peers())
                            .find_map(|p| f.sched.pick(&p, at, len).map(|pieces| (p, pieces))),
                    };
                    let Some((peer, pieces)) = picked else {
                        break;
                    };
                    let bytes = pieces.iter().map(|&n| len(n)).sum();
                    let to = ids[&peer];
                    let key = self.new_request(h, to, Want::Pieces, pieces.clone());
                    if let Some(f) = &mut self.nodes[h as usize].fetch {
                        f.sched.sent(key, peer, pieces, bytes, at);
                    }
                }
                Stage::Opening | Stage::Committing => break,
            }
        }
        self.drive_time += started.elapsed();
    }

    /// A request reaches its server.
    fn on_get(&mut self, h: u32, key: u64) {
        let Some(r) = self.reqs.get(&key) else {
            return;
        };
        let (from, want) = (r.from, r.want);
        let node = &self.nodes[h as usize];
        let holds = match want {
            Want::Manifest => {
                node.whole
                    || node
                        .fetch
                        .as_ref()
                        .is_some_and(|f| matches!(f.stage, Stage::Pieces | Stage::Committing))
            }
            Want::Pieces => {
                node.whole
                    || node.fetch.as_ref().is_some_and(|f| {
                        matches!(f.stage, Stage::Pieces | Stage::Committing)
                            && r.pieces.iter().all(|&n| f.sched.have().get(n))
                    })
            }
        };
        let (asker, at) = (self.pids[from as usize], self.instant());
        let whole = matches!(want, Want::Pieces) && node.whole;
        let keys = piece_keys(&r.pieces);
        let node = &mut self.nodes[h as usize];
        node.stats.answers += 1;
        let busy = node.uploads.busy_with_others(&asker);
        if whole && node.seeding.hold_back(&asker, &keys, busy, at) {
            node.stats.refusals += 1;
            return self.send(h, from, Msg::Answer(key, Reply::Busy));
        }
        if !node.uploads.admit(asker, at) {
            node.stats.refusals += 1;
            return self.send(h, from, Msg::Answer(key, Reply::Busy));
        }
        if !holds {
            node.uploads.done(&asker, at);
            node.stats.refusals += 1;
            return self.send(h, from, Msg::Answer(key, Reply::NotFound));
        }
        if whole {
            node.seeding.sending(asker, &keys, at);
        }
        let raw: u64 = match want {
            Want::Manifest => self.bundle.manifest_bytes,
            Want::Pieces => (r.pieces.iter())
                .map(|&n| self.bundle.piece_len[n as usize])
                .sum(),
        };
        let prepare = (raw as f64 * self.cfg.serve_ns_per_byte) as Nanos;
        self.q.after(prepare, Ev::Ready(key));
    }

    /// An answer is prepared: it goes on the wire.
    fn on_ready(&mut self, key: u64) {
        let now = self.now();
        let Some(r) = self.reqs.get(&key) else {
            return;
        };
        let (from, to) = (r.from, r.to);
        if !self.nodes[from as usize].present || !self.nodes[to as usize].present {
            let (asker, at) = (self.pids[from as usize], self.instant());
            self.nodes[to as usize].uploads.done(&asker, at);
            return;
        }
        let wire: u64 = match r.want {
            Want::Manifest => self.bundle.manifest_bytes,
            Want::Pieces => (r.pieces.iter())
                .map(|&n| self.bundle.wire_len[n as usize])
                .sum(),
        };
        let checks = self.net.start(now, to, from, wire, key);
        self.schedule(checks);
    }

    /// An answer's last byte left its server.
    fn on_sent(&mut self, key: u64) {
        let Some(r) = self.reqs.get(&key) else {
            return;
        };
        let (from, to) = (r.from, r.to);
        let wire: u64 = match r.want {
            Want::Manifest => self.bundle.manifest_bytes,
            Want::Pieces => (r.pieces.iter())
                .map(|&n| self.bundle.wire_len[n as usize])
                .sum(),
        };
        let (asker, at) = (self.pids[from as usize], self.instant());
        let keys = piece_keys(&r.pieces);
        let server = &mut self.nodes[to as usize];
        server.uploads.done(&asker, at);
        server.seeding.arrived(&asker, &keys, at);
        server.stats.sent += wire;
        self.send(to, from, Msg::Answer(key, Reply::Data(wire)));
    }

    /// An answer reaches its requester.
    fn on_answer(&mut self, h: u32, key: u64, reply: Reply) {
        let at = self.instant();
        let Some(r) = self.reqs.remove(&key) else {
            return;
        };
        let server = self.pids[r.to as usize];
        let verify = self.cfg.verify_ns_per_byte;
        let raw: u64 = (r.pieces.iter())
            .map(|&n| self.bundle.piece_len[n as usize])
            .sum();
        let Some(f) = &mut self.nodes[h as usize].fetch else {
            return;
        };
        match r.want {
            Want::Manifest => {
                if f.manifest_ask == Some(key) {
                    f.manifest_ask = None;
                }
                if !matches!(f.stage, Stage::Manifest) {
                    return;
                }
                match reply {
                    Reply::Data(_) => {
                        f.stage = Stage::Opening;
                        self.q.after(self.cfg.open, Ev::Opened(h));
                        return;
                    }
                    Reply::Busy => f.sched.rest(&server, at + nanos(REST_BUSY)),
                    Reply::NotFound => {
                        f.sched.set_aside(server, at);
                    }
                }
            }
            Want::Pieces => match reply {
                Reply::Data(wire) => {
                    if f.sched.answered(&key, wire, at).is_some() {
                        let t = (raw as f64 * verify) as Nanos;
                        self.q.after(t, Ev::Written(h, r.pieces));
                    }
                }
                Reply::Busy => {
                    if let Some((_, p)) = f.sched.answered(&key, 0, at) {
                        f.sched.failed(&p);
                    }
                    f.sched.rest(&server, at + nanos(REST_BUSY));
                }
                Reply::NotFound => {
                    if let Some((_, p)) = f.sched.answered(&key, 0, at) {
                        f.sched.failed(&p);
                    }
                    if !f.sched.is_whole(&server) && f.sched.lacked(server) < MAX_LACKED {
                        f.sched.rest(&server, at + nanos(REST_NOT_FOUND));
                    } else {
                        f.sched.set_aside(server, at);
                    }
                }
            },
        }
        self.drive(h);
    }

    fn on_written(&mut self, h: u32, pieces: Vec<u32>) {
        let node = &mut self.nodes[h as usize];
        let Some(f) = &mut node.fetch else {
            return;
        };
        if !matches!(f.stage, Stage::Pieces) {
            return;
        }
        for n in pieces {
            if f.sched.have().get(n) {
                node.stats.duplicate += self.bundle.piece_len[n as usize];
            } else {
                f.sched.verified(&[n]);
                f.have_changed = true;
            }
        }
        self.drive(h);
    }

    fn on_opened(&mut self, h: u32) {
        let pieces = self.bundle.pieces();
        let Some(f) = &mut self.nodes[h as usize].fetch else {
            return;
        };
        f.sched.open(Bitfield::new(pieces));
        f.stage = Stage::Pieces;
        self.drive(h);
    }

    fn on_committed(&mut self, h: u32) {
        let now = self.now();
        let node = &mut self.nodes[h as usize];
        if !node.present {
            return;
        }
        node.fetch = None;
        node.whole = true;
        node.done_at = Some(now);
        if !node.leaves {
            self.remaining -= 1;
        }
        self.announce(h);
    }

    fn report(&self, events: u64, wall: Duration, stopped: Option<String>) -> Report {
        let cfg = &self.cfg;
        let staying: Vec<&Node> = (self.nodes[1..].iter()).filter(|n| !n.leaves).collect();
        let done = staying.iter().filter(|n| n.done_at.is_some()).count();
        let last = staying.iter().filter_map(|n| n.done_at).max();
        let time_to_all = (done == staying.len()).then(|| last.unwrap_or(0) as f64 / SEC as f64);
        let secs = time_to_all
            .unwrap_or(self.now() as f64 / SEC as f64)
            .max(1e-9);
        let hosts = self.nodes.len() as f64;
        let sum = |f: fn(&Stats) -> u64| self.nodes.iter().map(|n| f(&n.stats)).sum::<u64>();
        let max = |f: fn(&Stats) -> u64| self.nodes.iter().map(|n| f(&n.stats)).max().unwrap_or(0);
        let nominal = cfg.mbit * 1e6 / 8.0;
        Report {
            followers: staying.len(),
            done,
            time_to_all,
            sim_secs: self.now() as f64 / SEC as f64,
            bound: workload::bound(
                self.bundle.bytes as f64,
                cfg.nodes,
                nominal,
                nominal,
                nominal,
            ),
            bundle_bytes: self.bundle.bytes,
            bundle_wire: self.bundle.wire_len.iter().sum(),
            publisher_upload: self.nodes[0].stats.sent as f64 / self.bundle.bytes as f64,
            duplicates: sum(|s| s.duplicate) as f64 / self.bundle.bytes as f64,
            haves_per_sec: sum(|s| s.haves) as f64 / hosts / secs,
            haves_per_sec_max: max(|s| s.haves) as f64 / secs,
            requests_per_sec: sum(|s| s.requests) as f64 / hosts / secs,
            answers_per_sec: sum(|s| s.answers) as f64 / hosts / secs,
            refusals_per_sec: sum(|s| s.refusals) as f64 / hosts / secs,
            have_bytes_per_sec_max: max(|s| s.have_bytes) as f64 / secs,
            haves_in_per_sec_max: max(|s| s.haves_in) as f64 / secs,
            max_connections: self.adj.iter().map(Vec::len).max().unwrap_or(0),
            max_active_flows: self.net.peak_active.iter().copied().max().unwrap_or(0),
            events,
            wall_secs: wall.as_secs_f64(),
            drive_us: self.drive_time.as_secs_f64() * 1e6 / self.drives.max(1) as f64,
            drives_per_sec: (self.drives + self.skipped_drives) as f64 / hosts / secs,
            stopped,
        }
    }
}

/// Whether a `Have`'s held pieces `bits` include one neither in `have`
/// nor in what `fetching` gives (built only when needed).
pub fn offers_new(bits: &[u8], have: &Bitfield, fetching: impl FnOnce() -> Bitfield) -> bool {
    let have = have.as_bytes();
    if !(bits.iter().zip(have)).any(|(b, h)| b & !h != 0) {
        return false;
    }
    let fetching = fetching();
    (bits.iter().zip(have).zip(fetching.as_bytes())).any(|((b, h), f)| b & !h & !f != 0)
}

fn nanos(n: Nanos) -> Duration {
    Duration::from_nanos(n)
}

/// The seeding table's keys for pieces `pieces` of the one bundle.
fn piece_keys(pieces: &[u32]) -> Vec<seeding::Piece> {
    let blob = lanseed_protocol::Hash::from_bytes([0; 32]);
    pieces.iter().map(|&n| (blob, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(set: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(16);
        set.iter().for_each(|&n| b.set(n));
        b
    }

    fn small(nodes: usize) -> Config {
        Config {
            nodes,
            mbit: 50.0,
            efficiency: 0.91,
            latency: MS / 5,
            order: Order::Fifo,
            join_late: 0.0,
            leave: 0.0,
            window: SEC,
            seed: 7,
            bundle: Spec {
                bytes: 4_000_000,
                text_bytes: 1_000_000,
                text_files: 100,
                media_files: 6,
                text_ratio: 0.3,
                seed: 7,
            },
            max_uploads: 8,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            serve_ns_per_byte: 2.0,
            verify_ns_per_byte: 2.0,
            open: 20 * MS,
            commit: 50 * MS,
            sim_limit: 120 * SEC,
            wall_limit: Duration::from_secs(60),
        }
    }

    #[test]
    fn every_follower_ends_whole_no_sooner_than_the_bound() {
        let r = run(&small(6));
        assert_eq!(r.stopped, None);
        assert_eq!(r.done, 6);
        let t = r.time_to_all.unwrap();
        assert!(t >= r.bound, "{t} s, bound {} s", r.bound);
        assert!(t < 10.0 * r.bound, "{t} s, bound {} s", r.bound);
        // The publisher sent at least the wire bytes of one bundle.
        let wire = r.bundle_wire as f64 / r.bundle_bytes as f64;
        assert!(r.publisher_upload >= wire - 1e-9, "{}", r.publisher_upload);
        assert!(r.haves_per_sec > 0.0 && r.requests_per_sec > 0.0);
        assert_eq!(r.max_connections, 6);
    }

    #[test]
    fn followers_that_stay_end_whole_when_others_join_late_or_leave() {
        let mut cfg = small(10);
        cfg.join_late = 0.3;
        cfg.leave = 0.3;
        let r = run(&cfg);
        assert_eq!(r.stopped, None);
        assert_eq!(r.followers, 7, "three leave");
        assert_eq!(r.done, 7);
    }

    #[test]
    fn a_bounded_neighbour_set_bounds_connections() {
        let mut cfg = small(30);
        cfg.max_connections = 4;
        let r = run(&cfg);
        assert_eq!(r.done, 30);
        assert!(r.max_connections <= 4);
    }

    #[test]
    fn a_have_offers_new_pieces_only_when_neither_held_nor_asked() {
        let have = bits(&[0, 1]);
        let offered = bits(&[0, 1, 9]);
        assert!(offers_new(offered.as_bytes(), &have, || bits(&[])));
        assert!(!offers_new(offered.as_bytes(), &have, || bits(&[9])));
        // Nothing beyond what is held: the fetching set is not even built.
        assert!(!offers_new(bits(&[1]).as_bytes(), &have, || unreachable!()));
    }
}
