//! The seeder's end of a line: a task per inbound line. It reads the
//! peer's requests, at most [`PER_PEER`] ahead of the answers written (a
//! peer that asks faster than it reads is not read: its bytes wait in
//! the stream's window), hands each to the node, and writes the answers
//! in the order asked, each within the request timeout. A frame that is
//! not a `GetPieces`, or does not decode, is reported and ends the
//! reading; the answers owed are still written. Every request handed to
//! the node is reported `Finished` once its answer is written or never
//! will be (the line failed), which frees its upload slot; when the
//! answer being written makes no progress for
//! [`STALLED_READER`] (its reader stopped reading), those queued behind
//! it free theirs at once, as answers on streams of their own would.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWrite};
use lanseed_protocol::wire::Request;
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, oneshot};

use super::Event;
use crate::node::codec::{Answer, Incoming, STALLED_READER, WireCodec};
use crate::node::uploads::PER_PEER;

/// How long an inbound line may carry nothing before it is closed.
pub const IDLE: Duration = Duration::from_secs(60);

/// Numbers every request asked on a line of this node.
static NEXT_ASK: AtomicU64 = AtomicU64::new(0);

/// A request handed to the node: reported `Finished` when dropped.
struct Ticket<'a> {
    ask: u64,
    events: &'a mpsc::UnboundedSender<Event>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Finished(self.ask));
    }
}

/// Serves `peer`'s line `stream` until it ends, answers within `timeout`
/// each; reports to the node on `events`, ending with `InboundEnded`.
pub fn spawn(
    peer: PeerId,
    stream: Stream,
    codec: WireCodec,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        serve(peer, stream, &codec, timeout, &events).await;
        let _ = events.send(Event::InboundEnded(peer));
    });
}

async fn serve(
    peer: PeerId,
    stream: Stream,
    codec: &WireCodec,
    timeout: Duration,
    events: &mpsc::UnboundedSender<Event>,
) {
    let (mut r, w) = stream.split();
    let (queue_tx, mut queue) = mpsc::channel::<(Ticket, oneshot::Receiver<Answer>)>(PER_PEER);
    // The asks handed to the node whose answers are not written yet, in
    // order, each with whether its slot was given back early.
    let owed = &Mutex::new(VecDeque::<(u64, bool)>::new());
    let mut w = Progress::new(w);
    let progress = w.clock();
    let reader = async move {
        // A local, dropped as the reader returns: the writer then ends
        // with the last answer owed.
        let queue_tx = queue_tx;
        loop {
            // Room for one more answer owed, before reading its request.
            let Ok(room) = queue_tx.reserve().await else {
                return;
            };
            let incoming = match tokio::time::timeout(IDLE, codec.read_line_request(&mut r)).await
            {
                Ok(Ok(incoming)) => incoming,
                // Closed by the peer, failed, or idle.
                Ok(Err(_)) | Err(_) => return,
            };
            let (why, strike) = match incoming {
                Incoming::Request(Request::GetPieces { pieces }) => {
                    let ask = NEXT_ASK.fetch_add(1, Ordering::Relaxed);
                    let (reply, answer) = oneshot::channel();
                    let asked = Event::Asked {
                        peer,
                        ask,
                        pieces,
                        reply,
                    };
                    if events.send(asked).is_err() {
                        return;
                    }
                    lock(owed).push_back((ask, false));
                    room.send((Ticket { ask, events }, answer));
                    continue;
                }
                Incoming::Request(_) => ("a request other than GetPieces on a line".into(), true),
                Incoming::Malformed { why, strike } => (why, strike),
            };
            let _ = events.send(Event::Refused { peer, why, strike });
            return;
        }
    };
    let writer = async {
        while let Some((ticket, answer)) = queue.recv().await {
            let written = tokio::time::timeout(timeout, async {
                let answer = answer.await.map_err(|_| ())?;
                progress.start();
                let written = codec.write_line_answer(&mut w, answer).await;
                progress.stop();
                written.map_err(drop)
            })
            .await;
            lock(owed).pop_front();
            drop(ticket);
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
        }
        let _ = futures::AsyncWriteExt::close(&mut w).await;
    };
    // An answer that makes no progress (its reader stopped reading) gives
    // its own slot back (the codec does); the answers queued behind it
    // give theirs back too, and are written when it is.
    let watch = async {
        loop {
            tokio::time::sleep(STALLED_READER / 4).await;
            if !progress.stalled(STALLED_READER) {
                continue;
            }
            for (ask, released) in lock(owed).iter_mut().skip(1) {
                if !*released {
                    *released = true;
                    let _ = events.send(Event::Finished(*ask));
                }
            }
        }
    };
    let work = async {
        tokio::pin!(reader, writer);
        tokio::select! {
            // The reader is done (closed, idle or refused): the answers
            // owed are still written.
            () = &mut reader => writer.await,
            () = &mut writer => {}
        }
    };
    tokio::select! {
        () = work => {}
        () = watch => {}
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// When an answer being written last made progress.
#[derive(Clone)]
struct Clock(Arc<ClockState>);

struct ClockState {
    origin: std::time::Instant,
    /// Milliseconds after `origin` of the last progress; `u64::MAX`: no
    /// answer is being written.
    last: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        let ms = self.0.origin.elapsed().as_millis() as u64;
        self.0.last.store(ms, Ordering::Relaxed);
    }

    fn start(&self) {
        self.touch();
    }

    fn stop(&self) {
        self.0.last.store(u64::MAX, Ordering::Relaxed);
    }

    /// Whether an answer is being written and made no progress for `d`.
    fn stalled(&self, d: Duration) -> bool {
        let last = self.0.last.load(Ordering::Relaxed);
        last != u64::MAX
            && self.0.origin.elapsed().as_millis() as u64 >= last.saturating_add(d.as_millis() as u64)
    }
}

/// A writer whose progress is noted on a [`Clock`].
struct Progress<W> {
    inner: W,
    clock: Clock,
}

impl<W> Progress<W> {
    fn new(inner: W) -> Progress<W> {
        let clock = Clock(Arc::new(ClockState {
            origin: std::time::Instant::now(),
            last: AtomicU64::new(u64::MAX),
        }));
        Progress { inner, clock }
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Progress<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
