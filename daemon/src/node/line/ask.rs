//! The fetcher's end of a line: an actor per peer that opens the stream,
//! writes the requests the node hands it as they come, and reads their
//! answers in order, each within the request timeout of its request.
//! At most [`AHEAD`] requests are written ahead of their answers (the
//! seeder's end reads no further ahead); the rest wait unwritten. The line
//! is read even with nothing asked: a byte nobody asked for ends it (a
//! long-lived stream's window grows with use, and would otherwise hold
//! whatever a peer pushes into it).
//! Whatever ends the line (the peer does not speak lines, the stream
//! fails, the seeder closes it or refuses it, an answer is malformed or
//! late, nothing to carry for [`IDLE`]), the node hears it once, with the
//! requests that never went out, so that no request is left without an
//! outcome.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use std::future::Future;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use lanseed_protocol::wire::{self, Request};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::{Closed, Event, LineId, Pieces};
use crate::node::codec::WireCodec;
use crate::node::fetch::Failed;
use crate::node::uploads::PER_PEER;

/// How long a line with nothing to carry stays open.
pub const IDLE: Duration = Duration::from_secs(30);

/// Most requests written ahead of their answers: as many as the seeder's
/// end reads ahead (the rest wait here, unwritten, their clocks not yet
/// running).
pub const AHEAD: usize = PER_PEER;

/// The node's handle on a line to one peer.
pub struct Asker {
    /// Which line.
    pub line: LineId,
    tx: mpsc::UnboundedSender<(u64, Pieces)>,
}

impl Asker {
    /// Opens line `line` to `peer` (the stream is opened by the actor)
    /// with request `first` on it, whose answers must come within
    /// `timeout` of their requests; what happens is told on `events`.
    pub fn spawn(
        peer: PeerId,
        line: LineId,
        first: (u64, Pieces),
        control: Control,
        codec: WireCodec,
        timeout: Duration,
        events: mpsc::UnboundedSender<Event>,
    ) -> Asker {
        let opened = open(peer, control, timeout);
        Asker::start(peer, line, first, opened, codec, timeout, events)
    }

    /// The line over the stream `opened` gives (or why there is none).
    fn start<S>(
        peer: PeerId,
        line: LineId,
        first: (u64, Pieces),
        opened: impl Future<Output = Result<S, Closed>> + Send + 'static,
        codec: WireCodec,
        timeout: Duration,
        events: mpsc::UnboundedSender<Event>,
    ) -> Asker
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // In the channel before the actor runs: whatever happens to the
        // line, the first request comes back with the others.
        let _ = tx.send(first);
        tokio::spawn(async move {
            let (why, back) = match opened.await {
                Ok(stream) => carry(stream, &codec, timeout, &mut rx, &events).await,
                Err(why) => (why, None),
            };
            rx.close();
            let mut unsent: Vec<(u64, Pieces)> = back.into_iter().collect();
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
    match tokio::time::timeout(timeout, control.open_stream(peer, protocol())).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => Err(Closed::Unsupported),
        // Counted as refused lines: a peer whose lines cannot be opened
        // is soon asked by request-response.
        Ok(Err(e)) => Err(Closed::Dropped(format!("cannot open a line: {e}"))),
        Err(_) => Err(Closed::Dropped("cannot open a line: timed out".into())),
    }
}

/// Carries the line over `stream` until it ends; returns why, and the
/// request whose write failed (it never went out). Requests it wrote are
/// answered (an `Answered` event each) or ended by the `Closed` event that
/// follows.
async fn carry<S: AsyncRead + AsyncWrite + Send + Unpin>(
    stream: S,
    codec: &WireCodec,
    timeout: Duration,
    rx: &mut mpsc::UnboundedReceiver<(u64, Pieces)>,
    events: &mpsc::UnboundedSender<Event>,
) -> (Closed, Option<(u64, Pieces)>) {
    let (mut r, mut w) = stream.split();
    // Requests written and not answered yet, oldest first, with when
    // each was written; the writer adds, the reader takes.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    // Room to write ahead: taken by the writer, given back by the reader.
    let room = &Semaphore::new(AHEAD);
    let waiting = &AtomicUsize::new(0);
    let answered = &AtomicBool::new(false);
    // Why the line ended, once the peer ended it or it broke: answers
    // have come (`Ended`, `Failed`) or none yet (`Dropped`: the seeder
    // refused the line, or was too busy to take it).
    let ended = |why: String| {
        if answered.load(Ordering::Acquire) {
            Closed::Failed(why)
        } else {
            Closed::Dropped(why)
        }
    };
    let writer = async move {
        let why = loop {
            let Ok(permit) = room.acquire().await else {
                break Closed::Idle;
            };
            let (key, pieces) = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(next)) => next,
                // The node dropped its handle: nothing more to ask.
                Ok(None) => break Closed::Idle,
                Err(_) if waiting.load(Ordering::Acquire) == 0 => break Closed::Idle,
                Err(_) => continue,
            };
            // Waited for before it is written: its answer may come back
            // before the write has returned.
            permit.forget();
            waiting.fetch_add(1, Ordering::AcqRel);
            let _ = sent_tx.send((key, Instant::now()));
            let req = Request::GetPieces { pieces };
            if let Err(e) = codec.write_line_request(&mut w, &req).await {
                let Request::GetPieces { pieces } = req else {
                    unreachable!("built above")
                };
                return (ended(format!("line failed: {e}")), Some((key, pieces)));
            }
        };
        // The reader ends once it has read what was written.
        drop(sent_tx);
        // A half-close: the seeder's end sees the line end.
        let _ = w.close().await;
        (why, None)
    };
    let reader = async move {
        loop {
            // With nothing asked, the line is still read: bytes nobody
            // asked for end it at once, rather than wait in its window
            // (which yamux grows with use).
            let mut byte = [0u8; 1];
            // A request waiting is taken first, whatever tokio's budget
            // for this task says (a budgeted `recv` may be Pending with
            // one queued, and its answer's bytes would seem unasked).
            let next = tokio::select! {
                biased;
                next = tokio::task::unconstrained(sent_rx.recv()) => next,
                read = r.read(&mut byte) => return match read {
                    Ok(0) if answered.load(Ordering::Acquire) => Closed::Ended,
                    Ok(0) => Closed::Dropped("closed before answering".into()),
                    Ok(_) => Closed::Failed("sent bytes nobody asked for".into()),
                    Err(e) => ended(format!("line failed: {e}")),
                },
            };
            let Some((key, at)) = next else {
                return Closed::Idle;
            };
            let read = tokio::time::timeout_at(at + timeout, codec.read_line_answer(&mut r)).await;
            waiting.fetch_sub(1, Ordering::AcqRel);
            room.add_permits(1);
            let (answer, end) = match read {
                Ok(Ok(Some(response))) => {
                    answered.store(true, Ordering::Release);
                    (Ok(response), None)
                }
                // The seeder closed the line between two answers: what
                // is not answered is asked again.
                Ok(Ok(None)) if answered.load(Ordering::Acquire) => return Closed::Ended,
                Ok(Ok(None)) => return Closed::Dropped("closed before answering".into()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let why = e.to_string();
                    (
                        Err(Failed::Malformed(why.clone())),
                        Some(Closed::Failed(why)),
                    )
                }
                Ok(Err(e)) if !answered.load(Ordering::Acquire) => {
                    return ended(format!("line failed: {e}"));
                }
                Ok(Err(e)) => {
                    let why = format!("line failed: {e}");
                    (
                        Err(Failed::NoAnswer(why.clone())),
                        Some(Closed::Failed(why)),
                    )
                }
                Err(_) => {
                    let why = "timed out".to_owned();
                    (
                        Err(Failed::NoAnswer(why.clone())),
                        Some(Closed::Failed(why)),
                    )
                }
            };
            let _ = events.send(Event::Answered { key, answer });
            if let Some(why) = end {
                return why;
            }
        }
    };
    tokio::pin!(writer, reader);
    tokio::select! {
        why = &mut reader => (why, None),
        (why, back) = &mut writer => match why {
            // Nothing more to write: what was written is read first.
            Closed::Idle => (reader.await, None),
            failed => (failed, back),
        },
    }
}

/// The protocol of lines.
pub fn protocol() -> StreamProtocol {
    StreamProtocol::new(wire::LINE_PROTOCOL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanseed_protocol::wire::{Packed, Response};
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    use super::super::testing::{Far, codec};

    /// A line over an in-memory stream, request 1 on it; the far end
    /// plays the seeder.
    fn line(timeout: Duration) -> (Asker, Far, mpsc::UnboundedReceiver<Event>) {
        let (near, far) = tokio::io::duplex(4 << 20);
        let (events, rx) = mpsc::unbounded_channel();
        let opened = async move { Ok(near.compat()) };
        let first = (1, pieces(1));
        let asker = Asker::start(PeerId::random(), 1, first, opened, codec(), timeout, events);
        (asker, far.compat(), rx)
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

    async fn closed(events: &mut mpsc::UnboundedReceiver<Event>) -> (Vec<u64>, Closed) {
        match events.recv().await.unwrap() {
            Event::Closed { unsent, why, .. } => {
                (unsent.into_iter().map(|(k, _)| k).collect(), why)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_come_back_in_order_with_their_keys() {
        let (asker, mut far, mut events) = line(Duration::from_secs(5));
        for key in 2..=3 {
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
    async fn no_more_requests_are_written_than_the_seeder_reads_ahead() {
        let (asker, mut far, mut events) = line(Duration::from_secs(5));
        for key in 2..=AHEAD as u64 + 2 {
            asker.ask(key, pieces(key as u32)).unwrap();
        }
        for n in 1..=AHEAD as u32 {
            assert_eq!(asked(&mut far).await, pieces(n));
        }
        let more = tokio::time::timeout(Duration::from_millis(300), asked(&mut far)).await;
        assert!(more.is_err(), "the next request waits, unwritten");
        // One answer: one more request.
        answer(&mut far, Response::NotFound).await;
        assert!(matches!(
            events.recv().await.unwrap(),
            Event::Answered { key: 1, .. }
        ));
        assert_eq!(asked(&mut far).await, pieces(AHEAD as u32 + 1));
    }

    #[tokio::test]
    async fn a_late_answer_ends_the_line_and_fails_what_was_written() {
        let (asker, mut far, mut events) = line(Duration::from_millis(300));
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
        let (unsent, why) = closed(&mut events).await;
        assert!(unsent.is_empty(), "both went out");
        assert!(matches!(why, Closed::Failed(_)), "{why:?}");
        // Asked again, the ended line gives the request back.
        assert_eq!(asker.ask(3, pieces(3)).unwrap_err(), pieces(3));
    }

    #[tokio::test]
    async fn a_line_the_seeder_closes_between_answers_ends_with_nothing_failed() {
        let (asker, mut far, mut events) = line(Duration::from_secs(5));
        asker.ask(2, pieces(2)).unwrap();
        asked(&mut far).await;
        asked(&mut far).await;
        answer(&mut far, Response::NotFound).await;
        far.close().await.unwrap();
        assert!(matches!(
            events.recv().await.unwrap(),
            Event::Answered { key: 1, .. }
        ));
        // Request 2 is not failed: the node asks it again.
        assert_eq!(closed(&mut events).await.1, Closed::Ended);
    }

    #[tokio::test]
    async fn a_line_refused_before_any_answer_is_dropped() {
        let (asker, far, mut events) = line(Duration::from_secs(5));
        asker.ask(2, pieces(2)).unwrap();
        drop(far);
        let (_, why) = closed(&mut events).await;
        assert!(matches!(why, Closed::Dropped(_)), "{why:?}");
    }

    #[tokio::test]
    async fn an_answer_over_the_limits_is_malformed() {
        let (_asker, mut far, mut events) = line(Duration::from_secs(5));
        asked(&mut far).await;
        far.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        far.flush().await.unwrap();
        match events.recv().await.unwrap() {
            Event::Answered {
                key: 1,
                answer: Err(Failed::Malformed(_)),
            } => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(closed(&mut events).await.1, Closed::Failed(_)));
    }

    #[tokio::test]
    async fn bytes_nobody_asked_for_end_the_line() {
        let (asker, mut far, mut events) = line(Duration::from_secs(5));
        asked(&mut far).await;
        answer(&mut far, Response::NotFound).await;
        assert!(matches!(
            events.recv().await.unwrap(),
            Event::Answered { key: 1, .. }
        ));
        futures::AsyncWriteExt::write_all(&mut far, &[0u8; 4096])
            .await
            .unwrap();
        let (unsent, why) = closed(&mut events).await;
        assert!(unsent.is_empty());
        assert_eq!(why, Closed::Failed("sent bytes nobody asked for".into()));
        assert!(asker.ask(2, pieces(2)).is_err(), "the line is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_line_closes_and_its_seeder_sees_the_end() {
        let (_asker, mut far, mut events) = line(Duration::from_secs(5));
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
        let (unsent, why) = closed(&mut events).await;
        assert_eq!((unsent, why), (Vec::new(), Closed::Idle));
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the line half-closed, cleanly");
    }
}
