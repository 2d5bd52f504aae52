//! The libp2p side of `/lanseed/bundle/4`: length-prefixed frames over a
//! stream, decoded by `lanseed_protocol::wire` with its size limits. The
//! length is checked before anything is read. An answer carrying data
//! (pieces, manifests) is read head first ([`wire::DataHead`]), its body
//! straight into a buffer of its own: a recycled one ([`buffers`]) for up
//! to an answer of pieces, else one that grows with the bytes that
//! actually arrive (a manifest). Such answers are written from where their
//! body lies (in memory, or pieces read from their files a chunk at a
//! time as they are written: [`FileBody`]), taking turns through the
//! node's upload [`Limiter`].
//!
//! Every byte of a frame read or written is counted in the node's
//! [`Metrics`] (`lanseed_p2p_bytes_total`), under the exchange the stream
//! carries, once per frame: what the stream took, whether the frame
//! decoded or not.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use lanseed_protocol::wire::{self, Request, Response};
use libp2p::StreamProtocol;

use super::buffers;
use super::filebody::FileBody;
use super::limit::Limiter;
use super::serve::AskId;
use crate::metrics::{Direction, Kind, Metrics};

/// The request-response codec of `/lanseed/bundle/4`. One clone serves
/// one outbound stream, so it remembers what it asked: the answer to a
/// piece request is capped at a piece, not at a manifest. Lines use its
/// `*_line_*` methods, which keep no such state.
#[derive(Clone)]
pub struct WireCodec {
    asked_piece: bool,
    /// The exchange this clone's stream carries (for the byte counters).
    kind: Kind,
    limiter: Arc<Limiter>,
    requests: Budget,
    manifests: Budget,
    metrics: Arc<Metrics>,
}

impl WireCodec {
    /// A codec whose data answers obey `limiter`, counting its bytes in
    /// `metrics`.
    pub fn new(limiter: Arc<Limiter>, metrics: Arc<Metrics>) -> WireCodec {
        WireCodec {
            asked_piece: false,
            kind: Kind::Other,
            limiter,
            requests: Budget::new(REQUEST_BUDGET),
            manifests: Budget::new(MANIFEST_BUDGET),
            metrics,
        }
    }
}

/// A stream whose bytes are counted, for one frame.
struct Tally<'a, T> {
    io: &'a mut T,
    bytes: u64,
}

impl<'a, T> Tally<'a, T> {
    fn new(io: &'a mut T) -> Tally<'a, T> {
        Tally { io, bytes: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tally<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.bytes += *n as u64;
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tally<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.bytes += *n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_close(cx)
    }
}

/// Requests up to this size are read without asking the budget (their
/// number is bounded by streams per connection and connections).
const SMALL_REQUEST: usize = 4 << 10;
/// Most bytes of larger requests being read at once, all streams of all
/// peers together: what streams that each declare a large request and
/// send it slowly can make the node hold.
pub const REQUEST_BUDGET: usize = 16 << 20;
/// Answers other than pieces (manifests) up to this size are read without
/// asking the budget.
const SMALL_ANSWER: usize = 64 << 10;
/// Most bytes of larger manifests being read at once, all peers
/// together: enough for the largest manifest, not for many liars' junk.
pub const MANIFEST_BUDGET: usize = 96 << 20;

/// Bytes the node holds at once for one kind of frame, shared by every
/// clone of the codec.
#[derive(Clone)]
struct Budget {
    used: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

/// Bytes taken from a [`Budget`], given back on drop.
struct Held {
    used: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
}

impl Budget {
    fn new(max: usize) -> Budget {
        Budget {
            used: Arc::default(),
            max,
        }
    }

    /// Takes `n` bytes, if that many are left.
    fn take(&self, n: usize) -> Option<Held> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .ok()?;
        Some(Held {
            used: self.used.clone(),
            n,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.used
            .fetch_sub(self.n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Most bytes of an answer allocated (and zeroed) ahead of the bytes that
/// actually arrive: a peer announcing a 64 MiB frame and sending nothing
/// costs nothing.
const PREALLOCATE: usize = wire::MAX_PIECE_RESPONSE_BYTES;

/// The same for requests, which any peer may send (a stream announcing
/// the largest request and sending nothing costs at most this).
const PREALLOCATE_REQUEST: usize = 16 << 10;

/// How long an answer's write may make no progress (its reader reads
/// nothing) before its upload slot is given back: the answer goes on at
/// its reader's pace (until the request timeout), but no longer keeps
/// another peer from being served.
pub const STALLED_READER: Duration = Duration::from_secs(1);

/// Gives an answer's upload slot back to the node early (its reader
/// stopped reading).
#[derive(Debug)]
pub struct SlotRelease {
    tx: tokio::sync::mpsc::UnboundedSender<AskId>,
    id: AskId,
}

impl SlotRelease {
    /// A release of request `id`'s slot, through `tx`.
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<AskId>, id: AskId) -> SlotRelease {
        SlotRelease { tx, id }
    }

    fn release(self) {
        let _ = self.tx.send(self.id);
    }
}

/// An answer, as the codec writes it (with its slot's release) or reads it.
#[derive(Debug)]
pub struct Answer {
    /// What it says.
    pub reply: Reply,
    /// Where to give the upload slot back early.
    pub slot: Option<SlotRelease>,
}

/// What an answer says.
#[derive(Debug)]
pub enum Reply {
    /// A message, whole.
    Message(Response),
    /// `Pieces`, uncompressed, read from their files as they are written
    /// (only on the way out: what a peer sends is read as a message).
    RawPieces(FileBody),
}

impl Answer {
    /// The message a peer sent. An answer read from a stream is always a
    /// message (the codec reads nothing else); a body read from files
    /// exists only on the way out, and would read as `NotFound`.
    pub fn into_message(self) -> Response {
        match self.reply {
            Reply::Message(r) => r,
            Reply::RawPieces(_) => Response::NotFound,
        }
    }
}

impl From<Response> for Answer {
    fn from(response: Response) -> Answer {
        Reply::Message(response).into()
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Answer {
        Answer { reply, slot: None }
    }
}

/// Reads a frame's length, checked against `max` before anything else.
async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    Ok(len)
}

/// Reads until `buf` holds `total` bytes, growing it by at most
/// [`PREALLOCATE`] at a time. Each byte is zeroed once and read once
/// (`read_to_end` zeroes the whole spare room again after every partial
/// read, which for a megabyte arriving in yamux frames was most of a
/// fetcher's CPU time after decryption).
async fn read_rest<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    buf: &mut Vec<u8>,
    total: usize,
    step: usize,
) -> io::Result<()> {
    while buf.len() < total {
        let at = buf.len();
        buf.resize(at + (total - at).min(step), 0);
        io.read_exact(&mut buf[at..]).await?;
    }
    Ok(())
}

/// Reads a request frame; `None` when it is large and the budget for
/// large requests is spent (the frame is not read).
async fn read_request_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    budget: &Budget,
) -> io::Result<Option<Vec<u8>>> {
    let len = read_len(io, max).await?;
    let _held = if len > SMALL_REQUEST {
        match budget.take(len) {
            Some(h) => Some(h),
            None => return Ok(None),
        }
    } else {
        None
    };
    let mut buf = Vec::with_capacity(len.min(PREALLOCATE_REQUEST));
    read_rest(io, &mut buf, len, PREALLOCATE_REQUEST).await?;
    Ok(Some(buf))
}

/// Reads an answer. The body of one carrying data is read straight into
/// its own buffer, after its head ([`wire::DataHead`]).
async fn read_answer<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    manifests: &Budget,
) -> io::Result<Response> {
    let len = read_len(io, max).await?;
    let mut prefix = [0u8; wire::MAX_DATA_HEAD];
    let n = len.min(prefix.len());
    io.read_exact(&mut prefix[..n]).await?;
    let Some((head, used)) = wire::decode_data_head(&prefix[..n]).map_err(invalid)? else {
        let mut buf = Vec::with_capacity(len.min(PREALLOCATE));
        buf.extend_from_slice(&prefix[..n]);
        read_rest(io, &mut buf, len, PREALLOCATE).await?;
        return wire::decode_response(&buf).map_err(invalid);
    };
    if head.body_len.checked_add(used as u64) != Some(len as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer body of the wrong length",
        ));
    }
    let body_len = head.body_len as usize;
    // A large answer that is not pieces (a manifest) takes from the
    // budget: many peers sending junk manifests at once cannot make the
    // node hold more than it. Not the sender's fault: no strike.
    let _held =
        if !head.pieces && body_len > SMALL_ANSWER {
            Some(manifests.take(body_len).ok_or_else(|| {
                io::Error::other("too many large manifests are being read at once")
            })?)
        } else {
            None
        };
    let early = &prefix[used..n];
    let body = if body_len <= buffers::CAPACITY {
        // The common case: a recycled buffer, overwritten.
        let mut body = buffers::filled(body_len);
        body[..early.len()].copy_from_slice(early);
        io.read_exact(&mut body[early.len()..]).await?;
        body
    } else {
        let mut body = Vec::with_capacity(body_len.min(PREALLOCATE));
        body.extend_from_slice(early);
        read_rest(io, &mut body, body_len, PREALLOCATE).await?;
        body
    };
    head.into_response(body).map_err(invalid)
}

/// One write; once one has made no progress for [`STALLED_READER`], the
/// answer's slot is given back, and the write goes on.
async fn write_some<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    buf: &[u8],
    slot: &mut Option<SlotRelease>,
) -> io::Result<usize> {
    if slot.is_none() {
        return io.write(buf).await;
    }
    match tokio::time::timeout(STALLED_READER, io.write(buf)).await {
        Ok(n) => n,
        Err(_) => {
            // A write that has not completed has written nothing.
            if let Some(s) = slot.take() {
                s.release();
            }
            io.write(buf).await
        }
    }
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

/// How long an answer holding the upload turn may wait on its reader
/// before it gives way to the next in line.
const GIVE_WAY: Duration = Duration::from_millis(250);

/// Writes `head` then `body` (bytes at hand, or read from their files a
/// chunk at a time as it goes) within the upload limit if there is one,
/// holding the turn so that answers go out one after the other. A reader
/// that stops reading (asleep, stalled, or hostile) must not hold up every
/// other upload: an answer whose write waits more than [`GIVE_WAY`], or
/// that has taken [`GIVE_WAY`] longer than its size needs at the limit
/// (or, with no limit, at 1 MB/s: a reader that trickles), gives up the
/// turn and goes on without it, at its reader's
/// pace (still within the limit), giving its upload slot back once a
/// write made no progress for [`STALLED_READER`].
async fn write_limited<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    limiter: &Limiter,
    head: &[u8],
    body: Body<'_>,
    slot: &mut Option<SlotRelease>,
) -> io::Result<()> {
    let mut turn = Some(limiter.turn.lock().await);
    let started = tokio::time::Instant::now();
    let due = limiter.turn_for(head.len() + body.len(), GIVE_WAY);
    // Where the next chunk of the body begins (`None`: the head is next).
    let (mut next, mut read) = (None, Vec::new());
    loop {
        let chunk: &[u8] = match (next, &body) {
            (None, _) => head,
            (Some(i), _) if i >= body.len() => break,
            (Some(i), Body::Bytes(b)) => &b[i..b.len().min(i + limiter.chunk())],
            (Some(i), Body::Files(f)) => {
                if !f.read_cached(i, &mut read)? {
                    // A read from the disk holds up no other answer.
                    turn = None;
                    f.read_waiting(i, &mut read).await?;
                }
                &read
            }
        };
        next = Some(next.map_or(0, |i| i + chunk.len()));
        if started.elapsed() > due {
            turn = None;
        }
        limiter.take(chunk.len()).await;
        let mut at = 0;
        while at < chunk.len() {
            let n = if turn.is_some() {
                // A write that has not completed has written nothing, so
                // giving up waiting on it loses no bytes.
                match tokio::time::timeout(GIVE_WAY, io.write(&chunk[at..])).await {
                    Ok(n) => n?,
                    Err(_) => {
                        turn = None;
                        continue;
                    }
                }
            } else {
                write_some(io, &chunk[at..], slot).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n;
        }
    }
    Ok(())
}

/// Where an answer's body lies.
enum Body<'a> {
    Bytes(&'a [u8]),
    Files(&'a FileBody),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Files(f) => f.len(),
        }
    }
}

fn invalid(e: wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A request as read from a stream: a message, or why the frame was
/// refused. A refused frame is handed to the node rather than failing the
/// stream, because request-response reports no failure for a request that
/// never decoded: the node could not see who sends junk. The node answers
/// nothing to it, which closes the stream.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved once, from the codec to the node
pub enum Incoming {
    /// A valid request.
    Request(Request),
    /// A frame that does not decode: lengths or counts that lie, bad
    /// encodings (`strike`: counts towards a ban), or one that an honest
    /// node of another version may send: a kind this version does not
    /// know, a frame over this version's size limit (no strike: the
    /// stream is closed before anything is allocated for it).
    Malformed {
        /// Why.
        why: String,
        /// Whether it counts against the sender.
        strike: bool,
    },
}

impl libp2p::request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Incoming;
    type Response = Answer;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Incoming>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut io = Tally::new(io);
        let read = read_incoming(&mut io, &self.requests).await;
        self.kind = match &read {
            Ok(Incoming::Request(r)) => Kind::of(r),
            _ => Kind::Other,
        };
        self.metrics.wire(self.kind, Direction::Received, io.bytes);
        read
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Answer>
    where
        T: AsyncRead + Unpin + Send,
    {
        let max = if self.asked_piece {
            wire::MAX_PIECE_RESPONSE_BYTES
        } else {
            wire::MAX_RESPONSE_BYTES
        };
        let mut io = Tally::new(io);
        let read = read_answer(&mut io, max, &self.manifests).await;
        self.metrics.wire(self.kind, Direction::Received, io.bytes);
        read.map(Answer::from)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Incoming,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Incoming::Request(req) = req else {
            return Err(io::Error::other("a malformed request is never sent"));
        };
        self.asked_piece = matches!(req, Request::GetPieces { .. });
        self.kind = Kind::of(&req);
        let mut io = Tally::new(io);
        let written = write_frame(&mut io, &wire::encode_request(&req)).await;
        self.metrics.wire(self.kind, Direction::Sent, io.bytes);
        written
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        answer: Answer,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut io = Tally::new(io);
        let written = write_answer(&mut io, &self.limiter, answer).await;
        self.metrics.wire(self.kind, Direction::Sent, io.bytes);
        written
    }
}

/// The same frames on a line (`/lanseed/pieces/1`): a long-lived stream
/// carrying `GetPieces` and their answers, one after the other (see
/// `super::line`). Each frame is counted as the request-response codec
/// counts it.
impl WireCodec {
    /// Reads the next request of a line.
    pub async fn read_line_request<T>(&self, io: &mut T) -> io::Result<Incoming>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut io = Tally::new(io);
        let read = read_incoming(&mut io, &self.requests).await;
        self.metrics
            .wire(Kind::Pieces, Direction::Received, io.bytes);
        read
    }

    /// Writes an answer on a line.
    pub async fn write_line_answer<T>(&self, io: &mut T, answer: Answer) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut io = Tally::new(io);
        let written = write_answer(&mut io, &self.limiter, answer).await;
        self.metrics.wire(Kind::Pieces, Direction::Sent, io.bytes);
        written
    }

    /// Writes a request on a line.
    pub async fn write_line_request<T>(&self, io: &mut T, req: &Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut io = Tally::new(io);
        let written = write_frame(&mut io, &wire::encode_request(req)).await;
        self.metrics.wire(Kind::of(req), Direction::Sent, io.bytes);
        written
    }

    /// Reads the next answer of a line (at most an answer of pieces);
    /// `None` when the line ended cleanly before it.
    pub async fn read_line_answer<T>(&self, io: &mut T) -> io::Result<Option<Response>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut io = Tally::new(io);
        let read = read_answer(&mut io, wire::MAX_PIECE_RESPONSE_BYTES, &self.manifests).await;
        self.metrics
            .wire(Kind::Pieces, Direction::Received, io.bytes);
        match read {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && io.bytes == 0 => Ok(None),
            read => read.map(Some),
        }
    }
}

/// Reads a request (see [`Incoming`]).
async fn read_incoming<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &Budget,
) -> io::Result<Incoming> {
    let bytes = match read_request_frame(io, wire::MAX_REQUEST_BYTES, budget).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            let why = "too many large requests are being read at once".to_owned();
            return Ok(Incoming::Malformed { why, strike: false });
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let why = e.to_string();
            return Ok(Incoming::Malformed { why, strike: false });
        }
        Err(e) => return Err(e),
    };
    Ok(match wire::decode_request(&bytes) {
        Ok(r) => Incoming::Request(r),
        Err(e) => Incoming::Malformed {
            strike: !matches!(e, wire::WireError::UnknownKind(_)),
            why: e.to_string(),
        },
    })
}

/// Writes an answer; one carrying data from where its body lies, within
/// `limiter`.
async fn write_answer<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    limiter: &Limiter,
    answer: Answer,
) -> io::Result<()> {
    let Answer { reply, mut slot } = answer;
    // An answer carrying data is written from where its body lies.
    let (head, body) = match &reply {
        Reply::Message(res) => match wire::encode_data_head(res) {
            Some((head, body)) => (head, Body::Bytes(body)),
            None => return write_frame(io, &wire::encode_response(res)).await,
        },
        Reply::RawPieces(files) => {
            let head = wire::DataHead::raw_pieces(files.len()).map_err(io::Error::other)?;
            (head.encode(), Body::Files(files))
        }
    };
    let mut first = ((head.len() + body.len()) as u32).to_le_bytes().to_vec();
    first.extend_from_slice(&head);
    write_limited(io, limiter, &first, body, &mut slot).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanseed_protocol::wire::Packed;

    /// What `write_answer` puts on a stream.
    async fn written(answer: Answer) -> io::Result<Vec<u8>> {
        let mut out = futures::io::Cursor::new(Vec::new());
        write_answer(&mut out, &Limiter::new(None), answer).await?;
        Ok(out.into_inner())
    }

    #[tokio::test]
    async fn pieces_read_from_files_are_written_as_the_same_message() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b): (Vec<u8>, Vec<u8>) = (
            (0..700_000u32).map(|i| (i % 251) as u8).collect(),
            (0..300_000u32).map(|i| (i % 13) as u8).collect(),
        );
        let mut ranges = Vec::new();
        for (name, bytes, offset) in [("a", &a, 100_000usize), ("b", &b, 0)] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            ranges.push((path, file, offset as u64, bytes.len() - offset));
        }
        let body = FileBody::new(ranges).unwrap();
        let mut data = a[100_000..].to_vec();
        data.extend_from_slice(&b);
        let message = Response::Pieces(Packed::raw(data));
        let mut want = (wire::encode_response(&message).len() as u32)
            .to_le_bytes()
            .to_vec();
        want.extend_from_slice(&wire::encode_response(&message));
        let from_files = written(Reply::RawPieces(body).into()).await.unwrap();
        assert_eq!(from_files, want);
        assert_eq!(written(message.into()).await.unwrap(), want);
    }

    #[tokio::test]
    async fn a_file_that_shrank_fails_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [1u8; 1000]).unwrap();
        let path = dir.path().join("a");
        let file = std::fs::File::open(&path).unwrap();
        let body = FileBody::new(vec![(path, file, 0, 600_000)]).unwrap();
        let err = written(Reply::RawPieces(body).into()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
