//! `lanseed-liar`: a peer that speaks lanseed's real wire protocol
//! (`/lanseed/bundle/4`) over a real libp2p connection and misbehaves on
//! command, for multi-node security tests.
//!
//! It connects to nodes (`--dial`) or lets them connect (`--listen`), under
//! a key of its own (`--key-seed N` for a fixed peer id) and the fleet key
//! when there is one. Unless its mode says otherwise it behaves as an
//! honest seeder of `--store`: it announces the store's releases on
//! connect and answers manifest and piece requests truthfully, on
//! request-response streams and on lines (`/lanseed/pieces/1`, refused with
//! `--no-lines`), where it lies just the same. Its mode
//! chooses the misbehaviour (see [`Mode`]). It prints one JSON object per
//! line on stdout for everything it does ([`emit`]) and exits 0 after
//! `--for` seconds or when its mode is done.
//!
//! Events (every one also has `t`, seconds since start):
//! - `start` {peer_id, mode, releases, fleet_key}; `listening` {addr (with
//!   /p2p), peer_id}; `connected` {peer, addr, dir: inbound|outbound};
//!   `disconnected` {peer}; `dial_failed` {addr, error}; `new_identity`
//!   {peer_id} (`frames --fresh-id`); `done` {reason: time|mode_done|signal}.
//! - `line` {peer}: a node opened a line to the liar.
//! - `asked` {what: announce|have|manifest|pieces, peer, …}: a request the
//!   node sent; `answered` {what, how: honest, not-found or the lie, answer, bytes,
//!   result}: what the liar answered.
//! - `sent` {kind: announce|have, count, outcome, answer | answers}: its own
//!   honest-format requests (`flood`: the totals, with answered, failed,
//!   throttled, inflight, secs); `progress` each second in `flood` and `ids`.
//! - `frame` {dir: request|response, name, bytes, outcome, answer}: one
//!   crafted frame; a request's outcome is answered (with the answer's
//!   kind), closed (the node ended the stream cleanly without answering),
//!   reset, timeout (nothing within `--wait-ms`; the stream is held open),
//!   conn_lost or failed; an answer's is sent, reset, timeout or
//!   conn_lost (a node reading an answer says nothing on the stream).
//!   `frames_done` {sent, answered, closed, reset, timeout, conn_lost,
//!   failed, unsent}; `no_connection` {after, error}: the node is gone or
//!   closes every new connection at once (banned?).
//! - `ids_done` {count, ok, failed, closed_early, upgrade_secs, secs,
//!   errors}; `registered` {count, addr, peers: [{peer, port}]} and
//!   `unregistered` {count} (`mdns`); `nothing_to_send` {kind, why}.
//!
//! Layout: [`craft`] builds the lying bytes, [`conn`] is the transport and
//! one actor per connection (no `Swarm`, so nothing sits between a crafted
//! frame and the node), [`serve`] answers what nodes ask, [`modes`] drives
//! each mode, and [`harness`] is for the tests that run the liar.

pub mod conn;
pub mod craft;
pub mod harness;
pub mod modes;
pub mod serve;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use libp2p::{Multiaddr, PeerId, identity, pnet};
use serde_json::json;

use self::conn::Conn;
use self::serve::{Holdings, How, On, Policy, Server};

/// The liar's command line.
#[derive(Debug, Parser)]
#[command(
    name = "lanseed-liar",
    about = "A lanseed peer that lies on command, for security tests.",
    long_about = "A lanseed peer that speaks the real wire protocol (/lanseed/bundle/4 over \
TCP + noise + yamux) and misbehaves on command. Prints one JSON object per line on stdout \
for everything it does; exits 0 after --for seconds or when its mode is done. Run it only \
inside a private network namespace."
)]
pub struct Args {
    /// A node to connect to (repeatable), e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo…
    /// (the /p2p part is checked when present). Lost connections are
    /// dialed again, after half a second, doubling up to 5 s while dials
    /// fail or connections end within 2 s.
    #[arg(long, value_name = "MULTIADDR", global = true)]
    pub dial: Vec<Multiaddr>,
    /// Address to listen on, for nodes to connect to it (`seed --peer`).
    #[arg(long, value_name = "MULTIADDR", global = true)]
    pub listen: Option<Multiaddr>,
    /// The fleet's pre-shared key: 64 hex digits, or a key file as
    /// `lanseed keygen --fleet` writes it (what `seed --fleet-key` reads).
    #[arg(long, value_name = "HEX|FILE", global = true)]
    pub fleet_key: Option<String>,
    /// Derive the liar's identity from N, so that its peer id is the same
    /// on every run (else a fresh random one).
    #[arg(long, value_name = "N", global = true)]
    pub key_seed: Option<u64>,
    /// Refuse lines (`/lanseed/pieces/1`), as a node of an older version
    /// would: fetchers then ask for pieces by request-response.
    #[arg(long, global = true)]
    pub no_lines: bool,
    /// A lanseed store whose releases the liar announces and serves.
    #[arg(long, value_name = "DIR", global = true)]
    pub store: Option<PathBuf>,
    /// How long to run, in seconds.
    #[arg(
        long = "for",
        value_name = "SECS",
        default_value_t = 30.0,
        global = true
    )]
    pub duration: f64,
    /// What to do.
    #[command(subcommand)]
    pub mode: Mode,
}

/// What the liar does.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Send every crafted request frame (every length field and count
    /// declared huge or one past the bytes present, oversized, short and
    /// truncated frames, unknown variants, trailing bytes), each on its
    /// own stream, and report what the node did with it; answer every
    /// request the node sends with the next crafted answer.
    Frames(FramesArgs),
    /// Announce the store's releases, then answer the node's manifest and
    /// piece requests with a lie.
    Lie(LieArgs),
    /// Send `Have` for every release of the store, again and again.
    Have(HaveArgs),
    /// Send announcements or `Have`s as fast as asked, without waiting for
    /// answers.
    Flood(FloodArgs),
    /// Open many connections, each under a fresh identity.
    Ids(IdsArgs),
    /// Register many mDNS records of peers that do not exist.
    Mdns(MdnsArgs),
    /// Connect, announce the store's releases, and serve them honestly.
    Announce,
    /// Ask the node for every piece of the store's releases, one after
    /// the other, round after round; never say what it holds, and answer
    /// NotFound to every request (a peer that takes and never gives).
    Leech(LeechArgs),
}

/// `leech`.
#[derive(Debug, ClapArgs)]
pub struct LeechArgs {
    /// Never take a piece: ask for the real pieces with a piece the node
    /// cannot have in each request (answered NotFound), several requests
    /// at once, and flood the node with requests for pieces that do not
    /// exist in between (to make a node that holds pieces back for whoever
    /// asks, not for whoever is sent them, hold them back again and again).
    #[arg(long)]
    pub junk: bool,
}

/// `frames`.
#[derive(Debug, ClapArgs)]
pub struct FramesArgs {
    /// Send only frames whose name contains this (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    /// Skip frames whose name contains this (repeatable), e.g. one that
    /// crashes the node.
    #[arg(long, value_name = "TEXT")]
    pub skip: Vec<String>,
    /// Print the names of the request and answer frames and exit.
    #[arg(long)]
    pub list: bool,
    /// How long to watch each frame for the node's reaction.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub wait_ms: u64,
    /// Stay connected until --for ends once the frames are sent (to
    /// answer the node's requests with lies).
    #[arg(long)]
    pub stay: bool,
    /// Which of the node's requests get crafted answers (the others are
    /// answered honestly): with `pieces`, the node gets an honest manifest
    /// and lies to its piece requests.
    #[arg(long, value_enum, default_value = "all")]
    pub on: On,
    /// Dial again under a fresh identity whenever the connection is lost
    /// (a node that bans the liar's peer id then still gets every frame).
    #[arg(long)]
    pub fresh_id: bool,
    /// Send each frame on a line (`/lanseed/pieces/1`, where only
    /// `GetPieces` is valid) rather than on a request-response stream.
    #[arg(long)]
    pub line: bool,
}

/// `lie`.
#[derive(Debug, ClapArgs)]
pub struct LieArgs {
    /// The lie.
    #[arg(long, value_enum)]
    pub how: How,
    /// Which requests to lie to (default: pieces for wrong-bytes and
    /// extra-bytes, manifests for bad-manifest, both otherwise).
    #[arg(long, value_enum)]
    pub on: Option<On>,
    /// Pace of `trickle`: one byte per this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub trickle_ms: u64,
}

/// `have`.
#[derive(Debug, ClapArgs)]
pub struct HaveArgs {
    /// Claim every piece, and answer NotFound to every request (without
    /// it, claim none and answer honestly).
    #[arg(long)]
    pub lying: bool,
    /// Claim to hold no piece and to be fetching every one, and answer
    /// NotFound to every request (a follower that would keep others from
    /// asking the source).
    #[arg(long, conflicts_with = "lying")]
    pub claim_fetching: bool,
    /// How often to send them again.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub every_ms: u64,
    /// Send the signed record only in the first `Have` of each connection
    /// (as a node does), not in every one.
    #[arg(long)]
    pub record_once: bool,
}

/// What `flood` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodWhat {
    /// `Announce` with every record of the store.
    Announce,
    /// `Have` (every piece claimed) for each release of the store.
    Have,
}

/// `flood`.
#[derive(Debug, ClapArgs)]
pub struct FloodArgs {
    /// What to send.
    #[arg(long, value_enum)]
    pub what: FloodWhat,
    /// Requests per second.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub rate: u32,
    /// Most requests in flight at once (past it, ticks are skipped and
    /// counted as `throttled`).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_inflight: usize,
}

/// `ids`.
#[derive(Debug, ClapArgs)]
pub struct IdsArgs {
    /// How many connections (identities).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub count: usize,
    /// How many dials and upgrades at once.
    #[arg(long, value_name = "C", default_value_t = 50)]
    pub concurrency: usize,
    /// How long each connection is held open.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub hold_ms: u64,
    /// Device reports each identity sends, each with a fresh device id
    /// (a flood of ids for the devices table).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub reports: usize,
}

/// `mdns`.
#[derive(Debug, ClapArgs)]
pub struct MdnsArgs {
    /// How many records (fresh random peer ids).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub count: usize,
    /// The address every record gives (one nobody listens on, inside the
    /// test's namespace LAN).
    #[arg(long, value_name = "IP")]
    pub addr: std::net::IpAddr,
    /// Use only this network interface.
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,
}

static START: OnceLock<Instant> = OnceLock::new();

/// Prints one event: `v` (an object with an `event` field) with `t`, the
/// seconds since the liar started, as one line of JSON on stdout.
pub fn emit(mut v: serde_json::Value) {
    use std::io::Write as _;
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    if let Some(o) = v.as_object_mut() {
        o.insert("t".into(), json!((t * 1000.0).round() / 1000.0));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The identity for `seed` (a fixed key per seed), or a random one.
pub fn identity(seed: Option<u64>) -> identity::Keypair {
    match seed {
        Some(n) => {
            let mut bytes = b"lanseed-liar key seed ".to_vec();
            bytes.extend_from_slice(&n.to_le_bytes());
            let secret = *lanseed_protocol::Hash::of(&bytes).as_bytes();
            identity::Keypair::ed25519_from_bytes(secret).expect("32 bytes are an Ed25519 key")
        }
        None => identity::Keypair::generate_ed25519(),
    }
}

/// Reads `--fleet-key`: 64 hex digits, or a `swarm.key` file.
pub fn fleet_key(text: &str) -> anyhow::Result<pnet::PreSharedKey> {
    let hex = text.trim();
    let file = if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
    } else {
        std::fs::read_to_string(text).with_context(|| format!("cannot read fleet key {text}"))?
    };
    file.parse()
        .map_err(|e| anyhow::anyhow!("{text} is not a fleet key: {e}"))
}

/// What every part of a run shares.
pub struct Ctx {
    /// The liar's own identity.
    pub key: identity::Keypair,
    /// The fleet key.
    pub psk: Option<pnet::PreSharedKey>,
    /// How it answers.
    pub server: Arc<Server>,
    /// Live and past connections.
    conns: Mutex<Vec<Conn>>,
    added: tokio::sync::Notify,
    /// What to do on each new connection.
    on_connect: OnConnect,
    /// When the run ends.
    pub deadline: tokio::time::Instant,
    /// The last dial error, for `no_connection`.
    pub last_dial_error: Mutex<Option<String>>,
    /// Dial again under a fresh identity each time (`frames --fresh-id`).
    pub fresh_id: bool,
}

/// What a new connection gets, by mode.
#[derive(Clone, Copy, Debug)]
enum OnConnect {
    Nothing,
    Announce,
    Have {
        every: Duration,
        claim: modes::Claim,
        record_once: bool,
    },
    Leech {
        junk: bool,
    },
}

impl Ctx {
    /// The live connections.
    pub fn live(&self) -> Vec<Conn> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.is_closed());
        conns.clone()
    }

    /// The first live connection, waiting up to `wait` for one.
    pub async fn wait_conn(&self, wait: Duration) -> Option<Conn> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.added.notified();
            if let Some(c) = self.live().into_iter().next() {
                return Some(c);
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.live().into_iter().next();
            }
        }
    }

    /// Takes a new connection in: serves its inbound streams, reports it,
    /// and starts what the mode does on connect.
    pub fn register(
        self: &Arc<Self>,
        peer: PeerId,
        addr: Multiaddr,
        muxer: libp2p::core::muxing::StreamMuxerBox,
        dir: &str,
    ) -> Conn {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = Conn::spawn(peer, addr.clone(), muxer, move |s| {
            let _ = tx.send(s);
        });
        let server = self.server.clone();
        let c = conn.clone();
        tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                server.serve(s, peer, c.clone());
            }
        });
        emit(
            json!({"event": "connected", "peer": peer.to_string(), "addr": addr.to_string(), "dir": dir}),
        );
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        self.added.notify_waiters();
        let me = self.clone();
        let c = conn.clone();
        tokio::spawn(async move { me.on_connect(c).await });
        let c = conn.clone();
        tokio::spawn(async move {
            c.closed().await;
            emit(json!({"event": "disconnected", "peer": peer.to_string()}));
        });
        conn
    }

    async fn on_connect(&self, conn: Conn) {
        match self.on_connect {
            OnConnect::Nothing => {}
            OnConnect::Announce => modes::announce(self, &conn).await,
            OnConnect::Have {
                every,
                claim,
                record_once,
            } => modes::have_loop(self, &conn, every, claim, record_once).await,
            OnConnect::Leech { junk: false } => modes::leech(self, &conn).await,
            OnConnect::Leech { junk: true } => modes::leech_junk(self, &conn).await,
        }
    }
}

/// Runs the liar (the binary's `main`).
pub fn run(args: Args) -> anyhow::Result<()> {
    START.get_or_init(Instant::now);
    if let Mode::Frames(f) = &args.mode
        && f.list
    {
        let material = Holdings::open(args.store.as_deref())?.material();
        for f in craft::request_frames(&material) {
            println!("request {} {}", f.name, f.bytes.len());
        }
        for f in craft::response_frames() {
            println!("response {} {}", f.name, f.bytes.len());
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = rt.block_on(main(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn main(args: Args) -> anyhow::Result<()> {
    let key = identity(args.key_seed);
    let psk = args.fleet_key.as_deref().map(fleet_key).transpose()?;
    let holdings = Holdings::open(args.store.as_deref())?;
    let peer_id = key.public().to_peer_id();
    let mode_name = match &args.mode {
        Mode::Frames(_) => "frames",
        Mode::Lie(_) => "lie",
        Mode::Have(_) => "have",
        Mode::Flood(_) => "flood",
        Mode::Ids(_) => "ids",
        Mode::Mdns(_) => "mdns",
        Mode::Announce => "announce",
        Mode::Leech(_) => "leech",
    };
    emit(json!({
        "event": "start", "peer_id": peer_id.to_string(), "mode": mode_name,
        "releases": holdings.held.len(), "fleet_key": psk.is_some(),
    }));
    let policy = match &args.mode {
        Mode::Lie(l) => Policy::Lie {
            how: l.how,
            on: l.on.unwrap_or(l.how.default_on()),
            trickle: Duration::from_millis(l.trickle_ms),
        },
        Mode::Have(h) if h.lying || h.claim_fetching => Policy::NotFound,
        Mode::Leech(_) => Policy::NotFound,
        Mode::Frames(f) => Policy::Frames {
            on: f.on,
            frames: craft::response_frames(),
            next: Default::default(),
            wait: Duration::from_millis(f.wait_ms),
        },
        _ => Policy::Honest,
    };
    let on_connect = match &args.mode {
        Mode::Lie(_) | Mode::Announce => OnConnect::Announce,
        Mode::Frames(_) if !holdings.held.is_empty() => OnConnect::Announce,
        Mode::Have(h) => OnConnect::Have {
            every: Duration::from_millis(h.every_ms),
            claim: modes::Claim {
                lying: h.lying,
                fetching: h.claim_fetching,
            },
            record_once: h.record_once,
        },
        Mode::Leech(l) => OnConnect::Leech { junk: l.junk },
        _ => OnConnect::Nothing,
    };
    let secs = args.duration.max(0.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let ctx = Arc::new(Ctx {
        key,
        psk,
        server: Arc::new(Server {
            holdings,
            policy,
            lines: !args.no_lines,
        }),
        conns: Mutex::new(Vec::new()),
        added: tokio::sync::Notify::new(),
        on_connect,
        deadline,
        last_dial_error: Mutex::new(None),
        fresh_id: matches!(&args.mode, Mode::Frames(f) if f.fresh_id),
    });
    let uses_main_conns = !matches!(args.mode, Mode::Ids(_) | Mode::Mdns(_));
    if uses_main_conns {
        if let Some(addr) = &args.listen {
            modes::listen(&ctx, addr.clone())?;
        }
        for addr in &args.dial {
            tokio::spawn(modes::dialer(ctx.clone(), addr.clone()));
        }
    }
    let driver = async {
        match &args.mode {
            Mode::Frames(f) => modes::frames(&ctx, f).await,
            Mode::Flood(f) => modes::flood(&ctx, f).await,
            Mode::Ids(i) => modes::ids(&ctx, i, &args.dial).await,
            Mode::Mdns(m) => modes::mdns(&ctx, m).await?,
            Mode::Lie(_) | Mode::Have(_) | Mode::Announce | Mode::Leech(_) => {
                tokio::time::sleep_until(deadline).await
            }
        }
        anyhow::Ok(())
    };
    let reason = tokio::select! {
        r = driver => { r?; if tokio::time::Instant::now() >= deadline { "time" } else { "mode_done" } }
        // A mode that overruns its own deadline is cut off.
        _ = tokio::time::sleep_until(deadline + Duration::from_secs(15)) => "time",
        _ = signal() => "signal",
    };
    for c in ctx.live() {
        c.close();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    emit(json!({"event": "done", "reason": reason}));
    Ok(())
}

/// SIGINT or SIGTERM.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
