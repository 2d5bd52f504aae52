//! The liar's modes: connecting (dialing again when a connection is
//! lost, accepting nodes that dial in), and what each mode sends.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lanseed_protocol::wire::{self, Request};
use libp2p::core::Transport as _;
use libp2p::core::transport::{ListenerId, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, identity};
use serde_json::json;

use super::conn::{self, Conn, Outcome};
use super::craft;
use super::serve::{Held, hold};
use super::{Ctx, FloodArgs, FloodWhat, FramesArgs, IdsArgs, MdnsArgs, emit};

/// How long after losing a connection it is dialed again; doubled, up
/// to [`REDIAL_MAX`], while dials fail or connections end young (a node
/// that refuses the liar is not hammered).
const REDIAL: Duration = Duration::from_millis(500);
const REDIAL_MAX: Duration = Duration::from_secs(5);

/// How long the answer to an honest request is waited for.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Keeps a connection to `addr` for the whole run: dials, waits for the
/// connection to end, dials again.
pub async fn dialer(ctx: Arc<Ctx>, addr: Multiaddr) {
    let mut key = ctx.key.clone();
    let mut pause = REDIAL;
    loop {
        let dialed = Instant::now();
        let lasted = match conn::dial(&addr, &key, ctx.psk).await {
            Ok((peer, muxer)) => {
                let c = ctx.register(peer, addr.clone(), muxer, "outbound");
                c.closed().await;
                dialed.elapsed()
            }
            Err(e) => {
                let error = format!("{e:#}");
                emit(json!({"event": "dial_failed", "addr": addr.to_string(), "error": error}));
                *ctx.last_dial_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(error);
                Duration::ZERO
            }
        };
        pause = if lasted > Duration::from_secs(2) {
            REDIAL
        } else {
            (pause * 2).min(REDIAL_MAX)
        };
        if ctx.fresh_id {
            key = identity::Keypair::generate_ed25519();
            pause = REDIAL;
            emit(
                json!({"event": "new_identity", "peer_id": key.public().to_peer_id().to_string()}),
            );
        }
        tokio::time::sleep(pause).await;
    }
}

/// Listens on `addr`; every inbound connection is registered.
pub fn listen(ctx: &Arc<Ctx>, addr: Multiaddr) -> anyhow::Result<()> {
    let mut transport = conn::transport(&ctx.key, ctx.psk)?;
    transport
        .listen_on(ListenerId::next(), addr.clone())
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let ctx = ctx.clone();
    let local = ctx.key.public().to_peer_id();
    tokio::spawn(async move {
        loop {
            match poll_fn(|cx| Pin::new(&mut transport).poll(cx)).await {
                TransportEvent::NewAddress { listen_addr, .. } => {
                    let full = listen_addr.with(Protocol::P2p(local));
                    emit(
                        json!({"event": "listening", "addr": full.to_string(), "peer_id": local.to_string()}),
                    );
                }
                TransportEvent::Incoming {
                    upgrade,
                    send_back_addr,
                    ..
                } => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        match upgrade.await {
                            Ok((peer, muxer)) => {
                                ctx.register(peer, send_back_addr, muxer, "inbound");
                            }
                            Err(e) => emit(json!({
                                "event": "inbound_failed", "addr": send_back_addr.to_string(),
                                "error": e.to_string(),
                            })),
                        }
                    });
                }
                TransportEvent::ListenerClosed { reason, .. } => {
                    emit(json!({"event": "listener_closed", "reason": format!("{reason:?}")}));
                    return;
                }
                TransportEvent::ListenerError { error, .. } => {
                    emit(json!({"event": "listener_error", "error": error.to_string()}));
                }
                _ => {}
            }
        }
    });
    Ok(())
}

/// Sends one honest request on its own stream; what became of it.
pub async fn request(conn: &Conn, r: &Request) -> Outcome {
    let bytes = craft::framed(&wire::encode_request(r));
    conn::exchange(conn, wire::PROTOCOL, &bytes, true, ANSWER_WAIT)
        .await
        .0
}

/// Announces every release of the store to `conn`.
pub async fn announce(ctx: &Ctx, conn: &Conn) {
    let records = ctx.server.holdings.records();
    if records.is_empty() {
        return;
    }
    for chunk in records.chunks(wire::MAX_ANNOUNCED) {
        let r = Request::Announce {
            releases: chunk.to_vec(),
        };
        let outcome = request(conn, &r).await;
        emit(json!({
            "event": "sent", "kind": "announce", "count": chunk.len(),
            "peer": conn.peer().to_string(), "outcome": outcome.name(), "answer": outcome.detail(),
        }));
    }
}

/// What a `Have` claims.
#[derive(Clone, Copy, Debug)]
pub struct Claim {
    /// Every piece held.
    pub lying: bool,
    /// None held, every piece being fetched.
    pub fetching: bool,
}

/// `have`: every `every`, a `Have` for each release of the store, while
/// the connection lasts.
pub async fn have_loop(ctx: &Ctx, conn: &Conn, every: Duration, claim: Claim, record_once: bool) {
    let Claim { lying, fetching } = claim;
    let held: Vec<Held> = ctx.server.holdings.held.clone();
    if held.is_empty() {
        emit(
            json!({"event": "nothing_to_send", "kind": "have", "why": "the store holds no release"}),
        );
        return;
    }
    let mut round = 0u64;
    let mut tick = tokio::time::interval(every);
    while !conn.is_closed() {
        tick.tick().await;
        if tokio::time::Instant::now() >= ctx.deadline {
            return; // the run ends: its connections are being closed
        }
        let mut answers: BTreeMap<String, u32> = BTreeMap::new();
        for h in &held {
            let with_record = !record_once || round == 0;
            let outcome = request(conn, &h.have(with_record, lying, fetching)).await;
            tally(&mut answers, &outcome);
        }
        if tokio::time::Instant::now() >= ctx.deadline {
            return; // cut short by the end of the run, not by the node
        }
        emit(json!({
            "event": "sent", "kind": "have", "count": held.len(), "round": round,
            "peer": conn.peer().to_string(), "lying": lying, "fetching": fetching, "answers": answers,
        }));
        round += 1;
    }
}

/// `leech`: asks for every piece of the store's releases, one at a time,
/// round after round, while the connection lasts; reports each round's
/// answers (pieces, Busy, ...).
pub async fn leech(ctx: &Ctx, conn: &Conn) {
    let refs = piece_refs(ctx);
    if refs.is_empty() {
        emit(
            json!({"event": "nothing_to_send", "kind": "leech", "why": "the store holds no piece"}),
        );
        return;
    }
    let mut round = 0u64;
    while !conn.is_closed() && tokio::time::Instant::now() < ctx.deadline {
        let mut answers: BTreeMap<String, u32> = BTreeMap::new();
        for piece in &refs {
            if conn.is_closed() || tokio::time::Instant::now() >= ctx.deadline {
                return;
            }
            let outcome = request(
                conn,
                &Request::GetPieces {
                    pieces: vec![*piece],
                },
            )
            .await;
            tally(&mut answers, &outcome);
        }
        emit(json!({
            "event": "sent", "kind": "leech", "count": refs.len(), "round": round,
            "peer": conn.peer().to_string(), "answers": answers,
        }));
        round += 1;
    }
}

/// Every piece of the store's releases.
fn piece_refs(ctx: &Ctx) -> Vec<([u8; 32], u32)> {
    (ctx.server.holdings.held.iter())
        .flat_map(|h| h.refs.iter().copied())
        .collect()
}

/// Counts `outcome` under its answer's name (pieces, Busy, ...) or what
/// became of the request.
fn tally(answers: &mut BTreeMap<String, u32>, outcome: &Outcome) {
    let key = match outcome.detail() {
        Some(a) if matches!(outcome, Outcome::Answered(_)) => a.to_owned(),
        _ => outcome.name().to_owned(),
    };
    *answers.entry(key).or_default() += 1;
}

/// `leech --junk`: round after round, every real piece asked for in
/// requests that also name a piece the node cannot have (so each is
/// answered NotFound and no piece is ever sent), eight at a time, then
/// 16 requests for 4,096 pieces that do not exist each (more than a
/// seeding table of 65,536 pieces can keep). Reports each round's
/// answers.
pub async fn leech_junk(ctx: &Ctx, conn: &Conn) {
    let refs = piece_refs(ctx);
    let mut round = 0u64;
    while !conn.is_closed() && tokio::time::Instant::now() < ctx.deadline {
        let mut asks: Vec<Request> = refs
            .chunks(8)
            .map(|chunk| {
                let mut pieces = chunk.to_vec();
                pieces.push(([0xA5; 32], round as u32));
                Request::GetPieces { pieces }
            })
            .collect();
        for fill in 0..16u32 {
            let pieces = (0..wire::MAX_BATCH_PIECES as u32)
                .map(|i| {
                    let mut blob = [0u8; 32];
                    blob[..8].copy_from_slice(&round.to_le_bytes());
                    blob[8..12].copy_from_slice(&fill.to_le_bytes());
                    (blob, i)
                })
                .collect();
            asks.push(Request::GetPieces { pieces });
        }
        let mut answers: BTreeMap<String, u32> = BTreeMap::new();
        for batch in asks.chunks(8) {
            if conn.is_closed() || tokio::time::Instant::now() >= ctx.deadline {
                return;
            }
            let outcomes = futures::future::join_all(batch.iter().map(|r| request(conn, r))).await;
            for outcome in outcomes {
                tally(&mut answers, &outcome);
            }
        }
        emit(json!({
            "event": "sent", "kind": "leech-junk", "count": asks.len(), "round": round,
            "peer": conn.peer().to_string(), "answers": answers,
        }));
        round += 1;
    }
}

/// `frames`: every crafted request frame on a stream of its own, one
/// after the other, dialing again whenever the node drops the connection.
pub async fn frames(ctx: &Ctx, args: &FramesArgs) {
    let material = ctx.server.holdings.material();
    let list: Vec<craft::Frame> = craft::request_frames(&material)
        .into_iter()
        .filter(|f| args.only.is_empty() || args.only.iter().any(|o| f.name.contains(o.as_str())))
        .filter(|f| !args.skip.iter().any(|s| f.name.contains(s.as_str())))
        .collect();
    let wait = Duration::from_millis(args.wait_ms);
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut unsent = 0;
    let mut previous: Option<String> = None;
    // Connections the node closes at once (it refuses the liar: banned?)
    // get no frame; this many in a row end the run.
    const REFUSED_MAX: u32 = 3;
    let young = Duration::from_millis(300);
    let mut refused = 0;
    let mut i = 0;
    while i < list.len() {
        let f = &list[i];
        if tokio::time::Instant::now() >= ctx.deadline {
            unsent = list.len() - i;
            break;
        }
        let c = ctx.wait_conn(REDIAL_MAX + Duration::from_secs(3)).await;
        let c = match c {
            Some(c) if c.age() < young => {
                tokio::time::sleep(young - c.age()).await;
                if c.is_closed() {
                    refused += 1;
                    if refused < REFUSED_MAX {
                        continue;
                    }
                    None
                } else {
                    Some(c)
                }
            }
            c => c,
        };
        let Some(c) = c else {
            // The node is gone (crashed?) or refuses the liar (banned?).
            let error = if refused >= REFUSED_MAX {
                Some("the node closes every new connection at once (banned?)".to_owned())
            } else {
                ctx.last_dial_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            };
            emit(json!({"event": "no_connection", "after": previous, "error": error}));
            unsent = list.len() - i;
            break;
        };
        refused = 0;
        let protocol = if args.line {
            wire::LINE_PROTOCOL
        } else {
            wire::PROTOCOL
        };
        let (outcome, open) = conn::exchange(&c, protocol, &f.bytes, f.half_close, wait).await;
        if let Some(s) = open {
            hold(s);
        }
        emit(json!({
            "event": "frame", "dir": "request", "name": f.name, "bytes": f.bytes.len(),
            "peer": c.peer().to_string(), "outcome": outcome.name(), "answer": outcome.detail(),
        }));
        *counts.entry(outcome.name()).or_default() += 1;
        previous = Some(f.name.clone());
        i += 1;
    }
    let sent: u64 = counts.values().sum();
    let mut done = json!({"event": "frames_done", "sent": sent, "unsent": unsent});
    for k in [
        "answered",
        "closed",
        "reset",
        "timeout",
        "conn_lost",
        "failed",
    ] {
        done[k] = json!(counts.get(k).copied().unwrap_or(0));
    }
    emit(done);
    if args.stay {
        tokio::time::sleep_until(ctx.deadline).await;
    }
}

#[derive(Default)]
struct FloodCounts {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    throttled: AtomicU64,
    inflight: AtomicUsize,
}

impl FloodCounts {
    fn json(&self) -> serde_json::Value {
        json!({
            "sent": self.sent.load(Ordering::Relaxed),
            "answered": self.answered.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "throttled": self.throttled.load(Ordering::Relaxed),
            "inflight": self.inflight.load(Ordering::Relaxed),
        })
    }
}

/// `flood`: `rate` requests per second until the deadline, each on its
/// own stream, none waited for before the next.
pub async fn flood(ctx: &Ctx, args: &FloodArgs) {
    let held = &ctx.server.holdings.held;
    let requests: Vec<Vec<u8>> = match args.what {
        FloodWhat::Announce => vec![Request::Announce {
            releases: ctx.server.holdings.records(),
        }],
        FloodWhat::Have => held.iter().map(|h| h.have(true, true, false)).collect(),
    }
    .iter()
    .map(|r| craft::framed(&wire::encode_request(r)))
    .collect();
    if requests.is_empty() || (args.what == FloodWhat::Have && held.is_empty()) {
        emit(
            json!({"event": "nothing_to_send", "kind": "have", "why": "the store holds no release"}),
        );
        return;
    }
    let kind = match args.what {
        FloodWhat::Announce => "announce",
        FloodWhat::Have => "have",
    };
    let counts = Arc::new(FloodCounts::default());
    let started = Instant::now();
    let rate = f64::from(args.rate.max(1));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_report = Instant::now();
    let mut due_before = 0u64;
    let mut n = 0usize;
    while tokio::time::Instant::now() < ctx.deadline {
        tick.tick().await;
        let conns = ctx.live();
        if conns.is_empty() {
            let _ = ctx.wait_conn(Duration::from_millis(500)).await;
            continue;
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        for _ in due_before..due {
            if counts.inflight.load(Ordering::Relaxed) >= args.max_inflight {
                counts.throttled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let c = conns[n % conns.len()].clone();
            let bytes = requests[n % requests.len()].clone();
            n += 1;
            counts.inflight.fetch_add(1, Ordering::Relaxed);
            counts.sent.fetch_add(1, Ordering::Relaxed);
            let counts = counts.clone();
            tokio::spawn(async move {
                let (outcome, _) =
                    conn::exchange(&c, wire::PROTOCOL, &bytes, true, ANSWER_WAIT).await;
                match outcome {
                    Outcome::Answered(_) => counts.answered.fetch_add(1, Ordering::Relaxed),
                    _ => counts.failed.fetch_add(1, Ordering::Relaxed),
                };
                counts.inflight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        due_before = due;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let mut ev = counts.json();
            ev["event"] = json!("progress");
            ev["kind"] = json!(kind);
            emit(ev);
        }
    }
    // Answers still on their way get a moment.
    let until = Instant::now() + Duration::from_secs(3);
    while counts.inflight.load(Ordering::Relaxed) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ev = counts.json();
    ev["event"] = json!("sent");
    ev["kind"] = json!(kind);
    ev["count"] = ev["sent"].clone();
    ev["secs"] = json!(started.elapsed().as_secs_f64());
    emit(ev);
}

/// `ids`: `count` connections to the `--dial` addresses in turn, each
/// under a fresh Ed25519 identity with a full noise and yamux upgrade,
/// `concurrency` upgrades at a time, each held open `hold_ms`.
pub async fn ids(ctx: &Arc<Ctx>, args: &IdsArgs, targets: &[Multiaddr]) {
    if targets.is_empty() {
        emit(json!({"event": "nothing_to_send", "kind": "ids", "why": "no --dial address"}));
        return;
    }
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let ok = Arc::new(AtomicU64::new(0));
    let closed_early = Arc::new(AtomicU64::new(0));
    let errors: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Default::default();
    let started = Instant::now();
    let hold_for = Duration::from_millis(args.hold_ms);
    let mut tasks = tokio::task::JoinSet::new();
    let (upgraded_tx, mut upgraded_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in 0..args.count {
        let addr = without_p2p(&targets[i % targets.len()]);
        let (gate, ok, closed_early, errors, psk) = (
            gate.clone(),
            ok.clone(),
            closed_early.clone(),
            errors.clone(),
            ctx.psk,
        );
        let ctx = ctx.clone();
        let upgraded = upgraded_tx.clone();
        let reports = args.reports;
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let key = identity::Keypair::generate_ed25519();
            let dialed = conn::dial(&addr, &key, psk).await;
            drop(permit);
            let _ = upgraded.send(());
            match dialed {
                Ok((peer, muxer)) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    let c = Conn::spawn(peer, addr, muxer, {
                        let server = ctx.server.clone();
                        move |s| {
                            // Only answered so that the node sees a
                            // well-behaved peer; errors do not matter.
                            let server = server.clone();
                            tokio::spawn(async move {
                                if let Ok(mut s) = conn::accept(s).await
                                    && let Ok(bytes) = conn::read_request(&mut s).await
                                    && let Ok(r) = wire::decode_request(&bytes)
                                {
                                    use futures::AsyncWriteExt as _;
                                    let answer = server.honest(&r);
                                    let out = craft::framed(&wire::encode_response(&answer));
                                    let _ = s.write_all(&out).await;
                                    let _ = s.close().await;
                                }
                            });
                        }
                    });
                    for n in 0..reports {
                        let report = Request::Report(fresh_report(i, n));
                        let _ = request(&c, &report).await;
                    }
                    if tokio::time::timeout(hold_for, c.closed()).await.is_ok() {
                        closed_early.fetch_add(1, Ordering::Relaxed);
                    }
                    c.close();
                    // Lets the close reach the node before the task ends.
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.closed()).await;
                }
                Err(e) => {
                    let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                    *errors.entry(format!("{e:#}")).or_default() += 1;
                }
            }
        });
    }
    drop(upgraded_tx);
    let mut attempted = 0;
    let mut last_report = Instant::now();
    while upgraded_rx.recv().await.is_some() {
        attempted += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            emit(
                json!({"event": "progress", "kind": "ids", "attempted": attempted, "ok": ok.load(Ordering::Relaxed)}),
            );
        }
    }
    let upgrade_secs = started.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    let errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let failed: u64 = errors.values().sum();
    emit(json!({
        "event": "ids_done", "count": args.count, "ok": ok.load(Ordering::Relaxed),
        "failed": failed, "closed_early": closed_early.load(Ordering::Relaxed),
        "upgrade_secs": upgrade_secs, "secs": started.elapsed().as_secs_f64(), "errors": errors,
    }));
}

/// `addr` without its `/p2p/…` part: each fresh identity dials the node,
/// whose peer id is checked by noise anyway.
fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// The service type lanseed nodes register (daemon `node::discovery`).
pub const SERVICE_TYPE: &str = "_lanseed._udp.local.";

/// Registered mDNS records, unregistered when dropped (also when the run
/// is cut short by a signal).
struct Registered {
    daemon: mdns_sd::ServiceDaemon,
    fullnames: Vec<String>,
}

/// `f`, again while mdns-sd's command queue is full (it holds 100).
fn again<T>(mut f: impl FnMut() -> mdns_sd::Result<T>) -> mdns_sd::Result<T> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Err(mdns_sd::Error::Again) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // One at a time: each waits for its goodbye to be sent, which
        // also keeps the daemon's queue from filling up.
        let until = Instant::now() + Duration::from_secs(10);
        let mut done = 0;
        for name in &self.fullnames {
            let Ok(rx) = again(|| self.daemon.unregister(name)) else {
                continue;
            };
            let left = until.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left.min(Duration::from_secs(1))).is_ok() {
                done += 1;
            }
        }
        if let Ok(rx) = again(|| self.daemon.shutdown()) {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
        emit(json!({"event": "unregistered", "count": done}));
    }
}

/// `mdns`: `count` records of fresh random peer ids, each pointing at
/// `addr` and a random port, registered until the deadline.
pub async fn mdns(ctx: &Ctx, args: &MdnsArgs) -> anyhow::Result<()> {
    let daemon = mdns_sd::ServiceDaemon::new()?;
    if let Some(name) = &args.interface {
        daemon.disable_interface(mdns_sd::IfKind::All)?;
        daemon.enable_interface(mdns_sd::IfKind::Name(name.clone()))?;
    }
    let mut reg = Registered {
        daemon,
        fullnames: Vec::new(),
    };
    let mut peers = Vec::new();
    for _ in 0..args.count {
        let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
        let id = peer.to_string();
        let h = lanseed_protocol::Hash::of(id.as_bytes());
        let port = 1024 + u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) % 64_000;
        let host = format!("{}.local.", &id[id.len().saturating_sub(16)..]);
        let props = [("peer", id.as_str()), ("v", "1")];
        let info =
            mdns_sd::ServiceInfo::new(SERVICE_TYPE, &id, &host, args.addr, port, &props[..])?;
        reg.fullnames.push(info.get_fullname().to_owned());
        again(|| reg.daemon.register(info.clone()))?;
        peers.push(json!({"peer": id, "port": port}));
    }
    emit(
        json!({"event": "registered", "count": args.count, "addr": args.addr.to_string(), "peers": peers}),
    );
    tokio::time::sleep_until(ctx.deadline).await;
    drop(reg);
    Ok(())
}

/// The `n`-th device report of identity `i`: a device id nobody else uses.
fn fresh_report(i: usize, n: usize) -> lanseed_protocol::report::DeviceReport {
    lanseed_protocol::report::DeviceReport {
        device_id: format!("flood-{i}-{n}"),
        app: "com.example.kiosk".into(),
        channel: "production".into(),
        bundle: None,
        version: "builtin".into(),
        seq: 0,
        native_version: "1.0.0".into(),
        status: "success".into(),
        event: None,
        time: 0,
        failed: None,
    }
}
