//! The libp2p side of `/lanseed/bundle/3`: length-prefixed frames over a
//! stream, decoded by `lanseed_protocol::wire` with its size limits. The
//! length is checked before anything is read. An answer carrying data
//! (pieces, manifests) is read head first ([`wire::DataHead`]), its body
//! straight into a buffer of its own: a recycled one ([`buffers`]) for up
//! to an answer of pieces, else one that grows with the bytes that
//! actually arrive (a manifest). Such answers are written from where their
//! body lies, through the upload [`Limiter`] when the node has one.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use lanseed_protocol::wire::{self, Request, Response};
use libp2p::StreamProtocol;

use super::buffers;
use super::limit::{CHUNK, Limiter};

/// The request-response codec of `/lanseed/bundle/3`. One clone serves
/// one outbound stream, so it remembers what it asked: the answer to a
/// piece request is capped at a piece, not at a manifest.
#[derive(Clone, Default)]
pub struct WireCodec {
    asked_piece: bool,
    limiter: Option<Arc<Limiter>>,
}

impl WireCodec {
    /// A codec whose data answers obey `limiter`.
    pub fn new(limiter: Option<Arc<Limiter>>) -> WireCodec {
        WireCodec {
            asked_piece: false,
            limiter,
        }
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
/// nothing) before the answer is abandoned and its upload slot freed.
pub const STALLED_READER: Duration = Duration::from_secs(1);

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

async fn read_request_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let len = read_len(io, max).await?;
    let mut buf = Vec::with_capacity(len.min(PREALLOCATE_REQUEST));
    read_rest(io, &mut buf, len, PREALLOCATE_REQUEST).await?;
    Ok(buf)
}

/// Reads an answer. The body of one carrying data is read straight into
/// its own buffer, after its head ([`wire::DataHead`]).
async fn read_answer<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Response> {
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

/// One write that must make progress within [`STALLED_READER`].
async fn write_some<T: AsyncWrite + Unpin + Send>(io: &mut T, buf: &[u8]) -> io::Result<usize> {
    match tokio::time::timeout(STALLED_READER, io.write(buf)).await {
        Ok(n) => n,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer stopped reading its answer",
        )),
    }
}

/// Writes all of `buf`, each write within [`STALLED_READER`].
async fn write_all_live<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        let n = write_some(io, buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

/// How long an answer holding the upload turn may wait on its reader
/// before it gives way to the next in line.
const GIVE_WAY: Duration = Duration::from_millis(250);

/// Writes `head` then `body` within the upload limit, holding the turn so
/// that answers go out one after the other. A reader that stops reading
/// (asleep, stalled, or hostile) must not hold up every other upload: an
/// answer whose write waits more than [`GIVE_WAY`], or that has taken
/// [`GIVE_WAY`] longer than its size needs at the limit (a reader that
/// trickles), gives up the turn and goes on without it, at its reader's
/// pace (still within the limit), each write within [`STALLED_READER`]
/// (else the answer is abandoned and the upload slot freed).
async fn write_limited<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    limiter: &Limiter,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let mut turn = Some(limiter.turn.lock().await);
    let started = tokio::time::Instant::now();
    let due = limiter.time_for(head.len() + body.len()) + GIVE_WAY;
    for chunk in std::iter::once(head).chain(body.chunks(CHUNK)) {
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
                write_some(io, &chunk[at..]).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n;
        }
    }
    Ok(())
}

fn invalid(e: wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// A request as read from a stream: a message, or why the frame was
/// refused. A malformed frame is handed to the node rather than failing
/// the stream, because request-response reports no failure for a request
/// that never decoded: the node could not see who sends junk. The node
/// answers nothing to it, which closes the stream.
#[derive(Debug)]
pub enum Incoming {
    /// A valid request.
    Request(Request),
    /// A frame over its limits or that does not decode.
    Malformed(String),
}

impl libp2p::request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Incoming;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Incoming>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = match read_request_frame(io, wire::MAX_REQUEST_BYTES).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Ok(Incoming::Malformed(e.to_string()));
            }
            Err(e) => return Err(e),
        };
        Ok(match wire::decode_request(&bytes) {
            Ok(r) => Incoming::Request(r),
            Err(e) => Incoming::Malformed(e.to_string()),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let max = if self.asked_piece {
            wire::MAX_PIECE_RESPONSE_BYTES
        } else {
            wire::MAX_RESPONSE_BYTES
        };
        read_answer(io, max).await
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
        write_frame(io, &wire::encode_request(&req)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        // An answer carrying data is written from where its body lies.
        let Some((head, body)) = wire::encode_data_head(&res) else {
            return write_frame(io, &wire::encode_response(&res)).await;
        };
        let mut first = ((head.len() + body.len()) as u32).to_le_bytes().to_vec();
        first.extend_from_slice(&head);
        match &self.limiter {
            Some(limiter) => write_limited(io, limiter, &first, body).await?,
            None => {
                write_all_live(io, &first).await?;
                write_all_live(io, body).await?;
            }
        }
        io.flush().await
    }
}
