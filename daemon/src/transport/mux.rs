//! yamux with a bounded receive window ([`Yamux`]), as a libp2p
//! connection upgrade and [`StreamMuxer`].
//!
//! yamux grows a stream's receive window (doubling it whenever the sender
//! used half of it within two round trips, never shrinking it) up to a
//! connection-wide limit that defaults to 1 GiB: what a peer may send
//! ahead of the node's reading. Here every stream keeps yamux's own
//! 256 KiB and all the streams of a connection together may grow by
//! [`EXTRA_WINDOW`] beyond that, which a line of pieces on loopback does
//! not need more of (docs/PERF.md, issue 17: the fetch's speed and the
//! fetcher's memory were the same with and without the bound).
//! `libp2p-yamux` exposes only the number of streams, hence this small
//! adapter over the `yamux` crate itself (the same version
//! `libp2p-yamux` uses).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::{future, io, iter};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// The protocol id, as every yamux implementation announces it.
const PROTOCOL: &str = "/yamux/1.0.0";

/// Most streams a connection may have open at once (yamux's default).
pub const MAX_STREAMS: usize = 512;

/// What all the streams of a connection together may grow their receive
/// windows by, beyond the 256 KiB each starts with.
pub const EXTRA_WINDOW: usize = 2 * 1024 * 1024;

/// Inbound streams kept until the swarm takes them; more are reset (the
/// same bound as yamux's own backlog of unacknowledged streams).
const MAX_WAITING_INBOUND: usize = 256;

/// The upgrade: yamux with [`MAX_STREAMS`] and [`EXTRA_WINDOW`].
#[derive(Debug, Clone)]
pub struct Yamux(yamux::Config);

impl Default for Yamux {
    fn default() -> Self {
        let mut config = yamux::Config::default();
        config.set_max_num_streams(MAX_STREAMS);
        config.set_max_connection_receive_window(Some(
            MAX_STREAMS * yamux::DEFAULT_CREDIT as usize + EXTRA_WINDOW,
        ));
        Yamux(config)
    }
}

impl UpgradeInfo for Yamux {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<io::Result<Muxer<C>>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.0, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<io::Result<Muxer<C>>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.0, yamux::Mode::Client)))
    }
}

/// A yamux connection as libp2p's swarm drives it.
///
/// yamux makes progress only in `poll_next_inbound`, which also yields
/// the peer's new streams; the swarm calls [`StreamMuxer::poll`] to move
/// the connection and [`StreamMuxer::poll_inbound`] only when it wants a
/// stream, so streams that arrive in between wait here (at most
/// [`MAX_WAITING_INBOUND`]).
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    waiting: VecDeque<yamux::Stream>,
    wants_inbound: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn new(io: C, config: yamux::Config, mode: yamux::Mode) -> Self {
        Muxer {
            connection: yamux::Connection::new(io, config, mode),
            waiting: VecDeque::new(),
            wants_inbound: None,
        }
    }

    /// Moves the connection until the peer opens a stream.
    fn next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, Error>> {
        match self.connection.poll_next_inbound(cx) {
            Poll::Ready(Some(stream)) => Poll::Ready(stream.map_err(Error)),
            Poll::Ready(None) => Poll::Ready(Err(Error(yamux::ConnectionError::Closed))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.waiting.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        match this.next_inbound(cx) {
            Poll::Ready(stream) => Poll::Ready(stream),
            Poll::Pending => {
                this.wants_inbound = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut()
            .connection
            .poll_new_outbound(cx)
            .map_err(Error)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx).map_err(Error)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = match this.next_inbound(cx) {
            Poll::Ready(stream) => stream?,
            Poll::Pending => return Poll::Pending,
        };
        if this.waiting.len() < MAX_WAITING_INBOUND {
            this.waiting.push_back(stream);
            if let Some(waker) = this.wants_inbound.take() {
                waker.wake();
            }
        } else {
            // At debug: a peer could otherwise fill the log at will (the
            // reset is what it sees).
            tracing::debug!("reset an inbound stream: {MAX_WAITING_INBOUND} wait already");
        }
        // Come back at once: the connection may have more to do.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A yamux connection's error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(yamux::ConnectionError);

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    use super::*;

    /// Keeps a connection moving until it closes.
    fn drive<C>(
        mut connection: yamux::Connection<C>,
    ) -> tokio::sync::oneshot::Receiver<yamux::Stream>
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Some(Ok(stream)) = poll_fn(|cx| connection.poll_next_inbound(cx)).await {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(stream);
                }
            }
        });
        rx
    }

    /// Bytes a writer gets ahead of its reader on one stream under
    /// `config`: the reader first takes `read_first` as fast as it comes
    /// (which is what grows a window), then stops; the writer writes on
    /// until a write waits for 300 ms.
    async fn ahead_after(config: yamux::Config, read_first: usize) -> usize {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut client = yamux::Connection::new(a.compat(), config.clone(), yamux::Mode::Client);
        let server = yamux::Connection::new(b.compat(), config, yamux::Mode::Server);
        let inbound = drive(server);
        let mut out = poll_fn(|cx| client.poll_new_outbound(cx)).await.unwrap();
        let _client = drive(client);
        let reader = tokio::spawn(async move {
            let mut stream = inbound.await.unwrap();
            let mut buf = vec![0; 64 * 1024];
            let mut read = 0;
            while read < read_first {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the stream ended after {read} bytes");
                read += n;
            }
            (read, stream)
        });
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), out.write(&chunk)).await {
                Ok(n) => written += n.unwrap(),
                Err(_) if reader.is_finished() => break,
                Err(_) => {}
            }
        }
        let (read, _stream) = reader.await.unwrap();
        written - read
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_that_was_read_fast_keeps_a_bounded_window() {
        const READ: usize = 256 * 1024 * 1024;
        let base = yamux::DEFAULT_CREDIT as usize;
        let most = base + EXTRA_WINDOW;
        // A window grows only when half of it is read within two round
        // trips (as yamux measured them), which depends on timing: every
        // try must stay within the bound, and one of three must show both
        // that the window grew under the bound and that the same reading
        // grows yamux's default window beyond it.
        let mut tries = Vec::new();
        for _ in 0..3 {
            let ours = ahead_after(Yamux::default().0, READ).await;
            assert!(ours <= most, "{ours} bytes ahead, at most {most} expected");
            let default = ahead_after(yamux::Config::default(), READ).await;
            tries.push((ours, default));
            if ours > base && default > most {
                eprintln!("bytes ahead: {ours} bounded, {default} by yamux's default");
                return;
            }
        }
        panic!("no try grew the windows: (bounded, default) bytes ahead {tries:?}");
    }
}
