//! The fetcher's end of a line: an actor per peer that opens the stream,
//! writes the requests the node hands it as they come, and reads their
//! answers in order, each within the request timeout of its request.
//! Whatever ends the line (the peer does not speak lines, the stream
//! fails, an answer is malformed or late, nothing to carry for
//! [`IDLE`]), the node hears it once, with the requests that never went
//! out, so that no request is left without an outcome.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::future::Future;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use lanseed_protocol::wire::{self, Request};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Closed, Event, LineId, Pieces};
use crate::node::codec::WireCodec;
use crate::node::fetch::Failed;

/// How long a line with nothing to carry stays open.
pub const IDLE: Duration = Duration::from_secs(30);

/// The node's handle on a line to one peer.
pub struct Asker {
    /// Which line.
    pub line: LineId,
    tx: mpsc::UnboundedSender<(u64, Pieces)>,
}

impl Asker {
    /// Opens line `line` to `peer` (the stream is opened by the actor),
    /// whose answers must come within `timeout` of their requests; what
    /// happens is told on `events`.
    pub fn spawn(
        peer: PeerId,
        line: LineId,
        control: Control,
        codec: WireCodec,
        timeout: Duration,
        events: mpsc::UnboundedSender<Event>,
    ) -> Asker {
        let opened = open(peer, control, timeout);
        Asker::start(peer, line, opened, codec, timeout, events)
    }

    /// The line over the stream `opened` gives (or why there is none).
    fn start<S>(
        peer: PeerId,
        line: LineId,
        opened: impl Future<Output = Result<S, Closed>> + Send + 'static,
        codec: WireCodec,
        timeout: Duration,
        events: mpsc::UnboundedSender<Event>,
    ) -> Asker
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut rx = rx;
            let why = match opened.await {
                Ok(stream) => carry(stream, &codec, timeout, &mut rx, &events).await,
                Err(why) => why,
            };
            rx.close();
            let mut unsent = Vec::new();
            while let Ok(r) = rx.try_recv() {
                unsent.push(r);
            }
            let _ = events.send(Event::Closed {
                peer,
                line,
                unsent,
                why,
            });
        });
        Asker { line, tx }
    }

    /// Hands request `key` to the line; it comes back if the line has
    /// ended (the node has not heard it yet: it will, with nothing of
    /// this request).
    pub fn ask(&self, key: u64, pieces: Pieces) -> Result<(), Pieces> {
        self.tx.send((key, pieces)).map_err(|e| e.0.1)
    }
}

/// Opens a line's stream to `peer`, within `timeout`.
async fn open(peer: PeerId, mut control: Control, timeout: Duration) -> Result<Stream, Closed> {
    let protocol = StreamProtocol::new(wire::LINE_PROTOCOL);
    match tokio::time::timeout(timeout, control.open_stream(peer, protocol)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => Err(Closed::Unsupported),
        Ok(Err(e)) => Err(Closed::Failed(format!("cannot open a line: {e}"))),
        Err(_) => Err(Closed::Failed("cannot open a line: timed out".into())),
    }
}

/// Carries the line over `stream` until it ends; returns why. Requests
/// it took from `rx` and wrote are answered (an `Answered` event each)
/// or ended by the `Closed` event that follows.
async fn carry<S: AsyncRead + AsyncWrite + Send + Unpin>(
    stream: S,
    codec: &WireCodec,
    timeout: Duration,
    rx: &mut mpsc::UnboundedReceiver<(u64, Pieces)>,
    events: &mpsc::UnboundedSender<Event>,
) -> Closed {
    let (mut r, mut w) = stream.split();
    // Requests written and not answered yet, oldest first, with when
    // each was written; the writer adds, the reader takes.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let waiting = &AtomicUsize::new(0);
    let writer = async move {
        let why = loop {
            let (key, pieces) = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(next)) => next,
                // The node dropped its handle: nothing more to ask.
                Ok(None) => break Closed::Idle,
                Err(_) if waiting.load(Ordering::Acquire) == 0 => break Closed::Idle,
                Err(_) => continue,
            };
            let req = Request::GetPieces { pieces };
            if let Err(e) = codec.write_line_request(&mut w, &req).await {
                let why = format!("line failed: {e}");
                let _ = events.send(Event::Answered {
                    key,
                    answer: Err(Failed::NoAnswer(why.clone())),
                });
                return Closed::Failed(why);
            }
            waiting.fetch_add(1, Ordering::AcqRel);
            let _ = sent_tx.send((key, Instant::now()));
        };
        // The reader ends once it has read what was written.
        drop(sent_tx);
        // A half-close: the seeder's end sees the line end.
        let _ = w.close().await;
        why
    };
    let reader = async move {
        while let Some((key, at)) = sent_rx.recv().await {
            let read = tokio::time::timeout_at(at + timeout, codec.read_line_answer(&mut r)).await;
            waiting.fetch_sub(1, Ordering::AcqRel);
            let (answer, end) = match read {
                Ok(Ok(response)) => (Ok(response), None),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let why = e.to_string();
                    (Err(Failed::Malformed(why.clone())), Some(why))
                }
                Ok(Err(e)) => {
                    let why = format!("line failed: {e}");
                    (Err(Failed::NoAnswer(why.clone())), Some(why))
                }
                Err(_) => {
                    let why = "timed out".to_owned();
                    (Err(Failed::NoAnswer(why.clone())), Some(why))
                }
            };
            let _ = events.send(Event::Answered { key, answer });
            if let Some(why) = end {
                return Closed::Failed(why);
            }
        }
        Closed::Idle
    };
    tokio::pin!(writer, reader);
    tokio::select! {
        why = &mut reader => why,
        why = &mut writer => match why {
            // Nothing more to write: what was written is read first.
            Closed::Idle => reader.await,
            failed => failed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::metrics::Metrics;
    use crate::node::limit::Limiter;
    use lanseed_protocol::wire::{Packed, Response};
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};

    type Far = Compat<tokio::io::DuplexStream>;

    /// A line over an in-memory stream; the far end plays the seeder.
    fn line(timeout: Duration) -> (Asker, Far, mpsc::UnboundedReceiver<Event>) {
        let (near, far) = tokio::io::duplex(4 << 20);
        let (events, rx) = mpsc::unbounded_channel();
        let opened = async move { Ok(near.compat()) };
        let asker = Asker::start(PeerId::random(), 1, opened, codec(), timeout, events);
        (asker, far.compat(), rx)
    }

    fn codec() -> WireCodec {
        WireCodec::new(Arc::new(Limiter::new(None)), Arc::new(Metrics::new()))
    }

    fn pieces(n: u32) -> Pieces {
        vec![([n as u8; 32], n)]
    }

    /// The seeder's side: reads the next request.
    async fn asked(far: &mut Far) -> Pieces {
        match codec().read_line_request(far).await.unwrap() {
            crate::node::codec::Incoming::Request(Request::GetPieces { pieces }) => pieces,
            other => panic!("not a GetPieces: {other:?}"),
        }
    }

    async fn answer(far: &mut Far, response: Response) {
        codec()
            .write_line_answer(far, response.into())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn answers_come_back_in_order_with_their_keys() {
        let (asker, mut far, mut events) = line(Duration::from_secs(5));
        for key in 1..=3 {
            asker.ask(key, pieces(key as u32)).unwrap();
        }
        for n in 1..=3u32 {
            assert_eq!(asked(&mut far).await, pieces(n));
        }
        for n in 1..=3u8 {
            answer(&mut far, Response::Pieces(Packed::raw(vec![n; 100]))).await;
        }
        for key in 1..=3u64 {
            match events.recv().await.unwrap() {
                Event::Answered {
                    key: k,
                    answer: Ok(Response::Pieces(p)),
                } => {
                    assert_eq!(k, key);
                    assert_eq!(p.data, vec![key as u8; 100]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_late_answer_ends_the_line_and_fails_what_was_written() {
        let (asker, mut far, mut events) = line(Duration::from_millis(300));
        asker.ask(1, pieces(1)).unwrap();
        asker.ask(2, pieces(2)).unwrap();
        asked(&mut far).await;
        asked(&mut far).await;
        // No answer: the first request times out, and the line ends.
        match events.recv().await.unwrap() {
            Event::Answered {
                key: 1,
                answer: Err(Failed::NoAnswer(why)),
            } => assert_eq!(why, "timed out"),
            other => panic!("{other:?}"),
        }
        match events.recv().await.unwrap() {
            Event::Closed {
                line: 1,
                unsent,
                why: Closed::Failed(_),
                ..
            } => assert!(unsent.is_empty(), "both went out"),
            other => panic!("{other:?}"),
        }
        // Asked again, the ended line gives the request back.
        assert_eq!(asker.ask(3, pieces(3)).unwrap_err(), pieces(3));
    }

    #[tokio::test]
    async fn an_answer_over_the_limits_is_malformed() {
        let (asker, mut far, mut events) = line(Duration::from_secs(5));
        asker.ask(1, pieces(1)).unwrap();
        asked(&mut far).await;
        use futures::AsyncWriteExt as _;
        far.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        far.flush().await.unwrap();
        match events.recv().await.unwrap() {
            Event::Answered {
                key: 1,
                answer: Err(Failed::Malformed(_)),
            } => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            events.recv().await.unwrap(),
            Event::Closed {
                why: Closed::Failed(_),
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_line_closes_and_its_seeder_sees_the_end() {
        let (asker, mut far, mut events) = line(Duration::from_secs(5));
        asker.ask(1, pieces(1)).unwrap();
        asked(&mut far).await;
        answer(&mut far, Response::NotFound).await;
        assert!(matches!(
            events.recv().await.unwrap(),
            Event::Answered {
                key: 1,
                answer: Ok(Response::NotFound)
            }
        ));
        // Nothing more to carry for IDLE: closed, nothing lost.
        match events.recv().await.unwrap() {
            Event::Closed {
                unsent,
                why: Closed::Idle,
                ..
            } => assert!(unsent.is_empty()),
            other => panic!("{other:?}"),
        }
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the line half-closed, cleanly");
    }
}
