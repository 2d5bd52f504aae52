//! The libp2p side of `/lanseed/bundle/1`: length-prefixed frames over a
//! stream, decoded by `lanseed_protocol::wire` with its size limits. The
//! length is checked before anything is read, and the buffer grows with the
//! bytes that actually arrive. Answers that carry data (pieces, manifests)
//! are written through the upload [`Limiter`] when the node has one.

use std::io;
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use lanseed_protocol::wire::{self, Request, Response};
use libp2p::StreamProtocol;

use super::limit::{CHUNK, Limiter};

/// The request-response codec of `/lanseed/bundle/1`. One clone serves
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

/// Most bytes of a frame allocated before they arrive.
const PREALLOCATE: usize = wire::MAX_PIECE_RESPONSE_BYTES;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    // Room for the whole frame up front (no regrowing and copying), but
    // never more than a piece ahead of the bytes that actually arrive: a
    // peer announcing a 64 MiB frame and sending nothing costs nothing.
    let mut buf = Vec::with_capacity(len.min(PREALLOCATE));
    (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

fn invalid(e: wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl libp2p::request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_frame(io, wire::MAX_REQUEST_BYTES).await?;
        wire::decode_request(&bytes).map_err(invalid)
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
        let bytes = read_frame(io, max).await?;
        wire::decode_response(&bytes).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
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
        let bytes = wire::encode_response(&res);
        let carries_data = matches!(res, Response::Pieces(_) | Response::Manifest(_));
        match &self.limiter {
            Some(limiter) if carries_data => {
                let _turn = limiter.turn.lock().await;
                limiter.take(4).await;
                io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
                for chunk in bytes.chunks(CHUNK) {
                    limiter.take(chunk.len()).await;
                    io.write_all(chunk).await?;
                }
                io.flush().await
            }
            _ => write_frame(io, &bytes).await,
        }
    }
}
