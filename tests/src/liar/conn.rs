//! The liar's libp2p side, without a `Swarm`: the node's exact transport
//! (`lanseed::transport`: TCP with nodelay, optional pnet fleet key,
//! multistream `V1Lazy`, noise, yamux, a 20 s upgrade timeout), one actor
//! per connection that polls the muxer, hands out outbound streams and
//! passes inbound ones on, and the raw exchange of one frame on one stream
//! with what became of it.
//!
//! Streams are negotiated with multistream-select directly, so every byte
//! after the protocol id is the liar's own: no codec stands between a
//! crafted frame and the node.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use futures::{AsyncReadExt as _, AsyncWrite as _, AsyncWriteExt as _};
use lanseed_protocol::wire;
use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt as _, SubstreamBox};
use libp2p::core::transport::{Boxed, DialOpts, PortUse};
use libp2p::core::upgrade::Version;
use libp2p::core::{Endpoint, Transport as _};
use libp2p::{Multiaddr, PeerId, identity, pnet};
use multistream_select::Negotiated;
use tokio::sync::{mpsc, oneshot, watch};

/// A negotiated `/lanseed/bundle/4` stream.
pub type Stream = Negotiated<SubstreamBox>;

/// The node's transport (`lanseed::transport`), with the fleet key when
/// there is one.
pub fn transport(
    key: &identity::Keypair,
    psk: Option<pnet::PreSharedKey>,
) -> anyhow::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    lanseed::transport::build(key, psk).context("building the noise config")
}

/// Dials `addr` under `key`: the connection, fully upgraded.
pub async fn dial(
    addr: &Multiaddr,
    key: &identity::Keypair,
    psk: Option<pnet::PreSharedKey>,
) -> anyhow::Result<(PeerId, StreamMuxerBox)> {
    let mut t = transport(key, psk)?;
    let dial = t
        .dial(
            addr.clone(),
            DialOpts {
                role: Endpoint::Dialer,
                port_use: PortUse::New,
            },
        )
        .with_context(|| format!("dialing {addr}"))?;
    let (peer, muxer) = dial.await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let expected = addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    });
    if let Some(expected) = expected
        && expected != peer
    {
        anyhow::bail!("{addr} answered as {peer}");
    }
    Ok((peer, muxer))
}

type OpenReply = oneshot::Sender<Result<SubstreamBox, String>>;

/// What the connection actor is asked to do.
enum Command {
    Open(OpenReply),
    Close,
}

struct Inner {
    peer: PeerId,
    addr: Multiaddr,
    since: std::time::Instant,
    commands: mpsc::UnboundedSender<Command>,
    closed: watch::Receiver<bool>,
}

/// One live connection, driven by its own task. Cloning shares it.
#[derive(Clone)]
pub struct Conn(Arc<Inner>);

impl Conn {
    /// Starts the actor that owns `muxer`; every inbound stream goes to
    /// `inbound`.
    pub fn spawn(
        peer: PeerId,
        addr: Multiaddr,
        muxer: StreamMuxerBox,
        inbound: impl Fn(SubstreamBox) + Send + Sync + 'static,
    ) -> Conn {
        let (tx, rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(false);
        tokio::spawn(async move {
            let result = drive(muxer, rx, inbound).await;
            let _ = closed_tx.send(true);
            result
        });
        Conn(Arc::new(Inner {
            peer,
            addr,
            since: std::time::Instant::now(),
            commands: tx,
            closed: closed_rx,
        }))
    }

    /// The remote peer.
    pub fn peer(&self) -> PeerId {
        self.0.peer
    }

    /// The remote address.
    pub fn addr(&self) -> &Multiaddr {
        &self.0.addr
    }

    /// How long ago it was established.
    pub fn age(&self) -> Duration {
        self.0.since.elapsed()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.0.closed.borrow()
    }

    /// Waits until the connection ends.
    pub async fn closed(&self) {
        let mut rx = self.0.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Closes the connection gracefully (yamux GoAway, then the socket).
    pub fn close(&self) {
        let _ = self.0.commands.send(Command::Close);
    }

    /// A new outbound substream, not negotiated yet.
    pub async fn open_raw(&self) -> io::Result<SubstreamBox> {
        let (tx, rx) = oneshot::channel();
        self.0
            .commands
            .send(Command::Open(tx))
            .map_err(|_| io::Error::other("connection closed"))?;
        rx.await
            .map_err(|_| io::Error::other("connection closed"))?
            .map_err(io::Error::other)
    }

    /// A new outbound `/lanseed/bundle/4` stream. Negotiation is lazy, as
    /// the node's own: the protocol id goes with the first bytes written.
    pub async fn open(&self) -> io::Result<Stream> {
        self.open_as(wire::PROTOCOL).await
    }

    /// A new outbound stream of `protocol` (`wire::PROTOCOL`, or
    /// `wire::LINE_PROTOCOL` for a line), negotiated lazily.
    pub async fn open_as(&self, protocol: &'static str) -> io::Result<Stream> {
        let raw = self.open_raw().await?;
        let (_, s) = multistream_select::dialer_select_proto(raw, [protocol], Version::V1Lazy)
            .await
            .map_err(io::Error::other)?;
        Ok(s)
    }
}

/// Accepts an inbound stream's negotiation for `/lanseed/bundle/4`.
pub async fn accept(raw: SubstreamBox) -> io::Result<Stream> {
    accept_any(raw, false).await.map(|(_, s)| s)
}

/// Accepts an inbound stream's negotiation for `/lanseed/bundle/4`, or
/// for a line (`/lanseed/pieces/1`) when `lines`; whether it is a line.
pub async fn accept_any(raw: SubstreamBox, lines: bool) -> io::Result<(bool, Stream)> {
    let protocols = if lines {
        &[wire::PROTOCOL, wire::LINE_PROTOCOL][..]
    } else {
        &[wire::PROTOCOL][..]
    };
    let (protocol, s) = multistream_select::listener_select_proto(raw, protocols.iter().copied())
        .await
        .map_err(io::Error::other)?;
    Ok((protocol == wire::LINE_PROTOCOL, s))
}

/// The connection actor: opens what is asked for, passes inbound streams
/// on, and keeps yamux moving (it only moves while polled).
async fn drive(
    mut muxer: StreamMuxerBox,
    mut commands: mpsc::UnboundedReceiver<Command>,
    inbound: impl Fn(SubstreamBox),
) -> Result<(), String> {
    let mut waiting: std::collections::VecDeque<OpenReply> = Default::default();
    let ended = poll_fn(|cx| {
        // All handles gone (`None`) is no reason to close: inbound
        // streams are still served.
        while let Poll::Ready(Some(cmd)) = commands.poll_recv(cx) {
            match cmd {
                Command::Open(reply) => waiting.push_back(reply),
                Command::Close => return Poll::Ready(Ok(())),
            }
        }
        while !waiting.is_empty() {
            match muxer.poll_outbound_unpin(cx) {
                Poll::Ready(Ok(s)) => {
                    if let Some(reply) = waiting.pop_front() {
                        let _ = reply.send(Ok(s));
                    }
                }
                Poll::Ready(Err(e)) => {
                    if let Some(reply) = waiting.pop_front() {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
                Poll::Pending => break,
            }
        }
        loop {
            match muxer.poll_inbound_unpin(cx) {
                Poll::Ready(Ok(s)) => inbound(s),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
                Poll::Pending => break,
            }
        }
        loop {
            match muxer.poll_unpin(cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await;
    if ended.is_ok() {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            poll_fn(|cx| muxer.poll_close_unpin(cx)),
        )
        .await;
    }
    ended
}

/// What became of one frame sent on its own stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered; the answer's kind (`ack`, `manifest`, `pieces`,
    /// `not_found`, `busy`, or `undecodable: …`).
    Answered(String),
    /// The node closed its half without answering (a FIN: it dropped the
    /// request, or gave up after the liar's own close).
    Closed,
    /// The node reset the stream (it refused what it read).
    Reset,
    /// Nothing happened within the wait; the stream is kept open.
    Timeout,
    /// The whole connection went away.
    ConnLost,
    /// No stream could be opened or written.
    Failed(String),
}

impl Outcome {
    /// The `outcome` field of a `frame` event.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Answered(_) => "answered",
            Outcome::Closed => "closed",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::ConnLost => "conn_lost",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The answer (or error), when there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Answered(a) | Outcome::Failed(a) => Some(a),
            _ => None,
        }
    }
}

/// Most bytes of an answer the liar reads in (its own limit: the node's
/// largest answer).
const READ_LIMIT: usize = wire::MAX_RESPONSE_BYTES;

/// The kind of a response, for events.
pub fn response_kind(r: &wire::Response) -> &'static str {
    match r {
        wire::Response::Ack => "ack",
        wire::Response::Manifest(_) => "manifest",
        wire::Response::Pieces(_) => "pieces",
        wire::Response::NotFound => "not_found",
        wire::Response::Busy => "busy",
    }
}

/// Reads one answer frame: `None` on end of stream before its first byte.
async fn read_answer(s: &mut Stream) -> io::Result<Option<String>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = s.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Ok(Some("undecodable: truncated length".into()))
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > READ_LIMIT {
        return Ok(Some(format!("undecodable: frame of {len} bytes")));
    }
    let mut body = vec![0; len];
    if let Err(e) = s.read_exact(&mut body).await {
        return Ok(Some(format!("undecodable: {e}")));
    }
    Ok(Some(match wire::decode_response(&body) {
        Ok(r) => response_kind(&r).to_owned(),
        Err(e) => format!("undecodable: {e}"),
    }))
}

/// Sends `bytes` (a whole frame, prefix included, or whatever lie) on a
/// new stream of `conn` and waits up to `wait` for the node's reaction.
/// On [`Outcome::Timeout`] the stream comes back, to be held open.
pub async fn exchange(
    conn: &Conn,
    protocol: &'static str,
    bytes: &[u8],
    half_close: bool,
    wait: Duration,
) -> (Outcome, Option<Stream>) {
    let opened = tokio::time::timeout(Duration::from_secs(5), conn.open_as(protocol)).await;
    let mut s = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return (lost_or(conn, Outcome::Failed(format!("open: {e}"))), None),
        Err(_) => {
            return (
                lost_or(conn, Outcome::Failed("open: timed out".into())),
                None,
            );
        }
    };
    let write = async {
        s.write_all(bytes).await?;
        s.flush().await?;
        if half_close {
            s.close().await?;
        }
        io::Result::Ok(())
    };
    match tokio::time::timeout(wait, write).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return (settle(conn, Outcome::Reset).await, None),
        Err(_) => return (Outcome::Timeout, Some(s)),
    }
    let outcome = match tokio::time::timeout(wait, read_answer(&mut s)).await {
        Err(_) => return (Outcome::Timeout, Some(s)),
        Ok(Ok(Some(answer))) => Outcome::Answered(answer),
        Ok(Err(_)) => Outcome::Reset,
        Ok(Ok(None)) if half_close => Outcome::Closed,
        // End of stream: a reset leaves the stream unwritable, a close
        // (FIN) does not; an empty write tells them apart.
        Ok(Ok(None)) => {
            let probe = async {
                // `write_all` of nothing would not even call the stream.
                let none: &[u8] = &[];
                poll_fn(|cx| std::pin::Pin::new(&mut s).poll_write(cx, none)).await?;
                s.flush().await
            };
            match tokio::time::timeout(Duration::from_secs(1), probe).await {
                Ok(Ok(())) => Outcome::Closed,
                _ => Outcome::Reset,
            }
        }
    };
    (settle(conn, outcome).await, None)
}

/// `outcome`, unless the connection died with it: a stream ends the
/// moment its connection does, so a short grace tells which it was.
async fn settle(conn: &Conn, outcome: Outcome) -> Outcome {
    if matches!(outcome, Outcome::Answered(_)) {
        return outcome;
    }
    let _ = tokio::time::timeout(Duration::from_millis(150), conn.closed()).await;
    lost_or(conn, outcome)
}

fn lost_or(conn: &Conn, outcome: Outcome) -> Outcome {
    if conn.is_closed() {
        Outcome::ConnLost
    } else {
        outcome
    }
}

/// Reads one request frame from an inbound stream (within the node's own
/// request limit).
pub async fn read_request(s: &mut Stream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > wire::MAX_REQUEST_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request of {len} bytes"),
        ));
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok(body)
}
