//! The seeder's end of a line: a task per inbound line. It reads the
//! peer's requests, at most [`PER_PEER`] ahead of the answers written (a
//! peer that asks faster than it reads is not read: its bytes wait in
//! the stream's window), hands each to the node, and writes the answers
//! in the order asked, each within the request timeout. A frame that is
//! not a `GetPieces`, or does not decode, is reported and ends the
//! reading; the answers owed are still written. Every request handed to
//! the node is reported `Finished` once its answer is written or never
//! will be (the line failed), which frees its upload slot; when a write
//! of an answer has waited on its reader for [`STALLED_READER`] with no
//! byte taken (its reader stopped reading; waiting for the upload turn,
//! the limit or the disk does not count), those queued behind it free
//! theirs at once, as answers on streams of their own would. A line with
//! no answer owed and no request for [`IDLE`] ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use lanseed_protocol::wire::Request;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::Event;
use crate::node::codec::{Answer, Incoming, STALLED_READER, WireCodec};
use crate::node::uploads::PER_PEER;

/// How long an inbound line may carry nothing (no request, no answer
/// owed) before it ends.
pub const IDLE: Duration = Duration::from_secs(60);

const _: () = assert!(PER_PEER >= 2);

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
pub fn spawn<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    peer: PeerId,
    stream: S,
    codec: WireCodec,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        serve(peer, stream, &codec, timeout, &events).await;
        let _ = events.send(Event::InboundEnded(peer));
    });
}

async fn serve<S: AsyncRead + AsyncWrite + Send + Unpin>(
    peer: PeerId,
    stream: S,
    codec: &WireCodec,
    timeout: Duration,
    events: &mpsc::UnboundedSender<Event>,
) {
    let (mut r, w) = stream.split();
    // The writer holds the answer it writes: PER_PEER owed in all.
    let (queue_tx, mut queue) = mpsc::channel::<(Ticket, oneshot::Receiver<Answer>)>(PER_PEER - 1);
    // The asks handed to the node whose answers are not written yet, in
    // order, each with whether its slot was given back early.
    let owed = &Mutex::new(VecDeque::<(u64, bool)>::new());
    let mut w = Progress::new(w);
    let clock = &w.clock();
    let idle = &tokio::sync::Notify::new();
    let reader = async move {
        // A local, dropped as the reader returns: the writer then ends
        // with the last answer owed.
        let queue_tx = queue_tx;
        loop {
            // Room for one more answer owed, before reading its request.
            let Ok(room) = queue_tx.reserve().await else {
                return;
            };
            let read = tokio::select! {
                read = codec.read_line_request(&mut r) => read,
                () = idle.notified() => return,
            };
            let Ok(incoming) = read else {
                // Closed by the peer, or failed.
                return;
            };
            clock.read();
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
                let written = codec.write_line_answer(&mut w, answer).await;
                clock.written();
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
    // give theirs back too, and are written when it is. A line with no
    // answer owed and no request for IDLE ends.
    let watch = async {
        loop {
            tokio::time::sleep(STALLED_READER / 4).await;
            if lock(owed).is_empty() && clock.since_read() >= IDLE {
                // The reader stops; the writer then closes the line.
                idle.notify_one();
            }
            if !clock.stalled(STALLED_READER) {
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

/// What a line did last: when its last request was read, and since when
/// its writes wait on their reader.
#[derive(Clone)]
struct Clock(Arc<ClockState>);

struct ClockState {
    origin: std::time::Instant,
    /// Milliseconds after `origin` of the last request read.
    read: AtomicU64,
    /// Milliseconds after `origin` since which a write has been waiting
    /// on the reader with no byte taken; `u64::MAX`: none is.
    waiting: AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock(Arc::new(ClockState {
            origin: std::time::Instant::now(),
            read: AtomicU64::new(0),
            waiting: AtomicU64::new(u64::MAX),
        }))
    }

    fn now(&self) -> u64 {
        self.0.origin.elapsed().as_millis() as u64
    }

    /// A request was read.
    fn read(&self) {
        self.0.read.store(self.now(), Ordering::Relaxed);
    }

    /// How long ago the last request was read (or the line opened).
    fn since_read(&self) -> Duration {
        let last = self.0.read.load(Ordering::Relaxed);
        Duration::from_millis(self.now().saturating_sub(last))
    }

    /// A write could not go on: the reader's window is full.
    fn blocked(&self) {
        let now = self.now();
        let waiting = &self.0.waiting;
        let _ = waiting.compare_exchange(u64::MAX, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Bytes went out, or an answer is done: nothing waits.
    fn written(&self) {
        self.0.waiting.store(u64::MAX, Ordering::Relaxed);
    }

    /// Whether a write has waited on its reader, with no byte taken, for
    /// `d` (waiting for the upload turn, the limit or the disk is not
    /// waiting on the reader).
    fn stalled(&self, d: Duration) -> bool {
        let since = self.0.waiting.load(Ordering::Relaxed);
        since != u64::MAX && self.now() >= since.saturating_add(d.as_millis() as u64)
    }
}

/// A writer whose progress is noted on a [`Clock`].
struct Progress<W> {
    inner: W,
    clock: Clock,
}

impl<W> Progress<W> {
    fn new(inner: W) -> Progress<W> {
        Progress {
            inner,
            clock: Clock::new(),
        }
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
        match &r {
            Poll::Pending => self.clock.blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.clock.written(),
            Poll::Ready(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::node::limit::Limiter;
    use futures::AsyncWriteExt as _;
    use lanseed_protocol::wire::{self, Packed, Response};
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    use super::super::testing::{Far, codec};

    /// A line served over an in-memory stream of `buffer` bytes each way;
    /// the far end plays the fetcher.
    fn line(buffer: usize) -> (Far, mpsc::UnboundedReceiver<Event>) {
        let (near, far) = tokio::io::duplex(buffer);
        let (events, rx) = mpsc::unbounded_channel();
        spawn(
            PeerId::random(),
            near.compat(),
            codec(),
            Duration::from_secs(10),
            events,
        );
        (far.compat(), rx)
    }

    async fn ask(far: &mut Far, request: &Request) {
        let bytes = wire::encode_request(request);
        far.write_all(&(bytes.len() as u32).to_le_bytes())
            .await
            .unwrap();
        far.write_all(&bytes).await.unwrap();
        far.flush().await.unwrap();
    }

    fn get(n: u32) -> Request {
        Request::GetPieces {
            pieces: vec![([n as u8; 32], n)],
        }
    }

    /// The next `Asked`, skipping `Finished`.
    async fn next_asked(
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> (u64, oneshot::Sender<Answer>) {
        loop {
            match events.recv().await.unwrap() {
                Event::Asked { ask, reply, .. } => return (ask, reply),
                Event::Finished(_) => continue,
                other => panic!("{other:?}"),
            }
        }
    }

    fn pieces(n: u8, len: usize) -> Answer {
        Response::Pieces(Packed::raw(vec![n; len])).into()
    }

    #[tokio::test]
    async fn answers_go_out_in_the_order_asked_whatever_order_they_are_ready_in() {
        let (mut far, mut events) = line(1 << 20);
        for n in 1..=3 {
            ask(&mut far, &get(n)).await;
        }
        let mut replies = Vec::new();
        for _ in 0..3 {
            replies.push(next_asked(&mut events).await);
        }
        // Ready last first.
        for (i, (_, reply)) in replies.into_iter().enumerate().rev() {
            reply.send(pieces(i as u8 + 1, 1000)).unwrap();
        }
        for n in 1..=3u8 {
            match codec().read_line_answer(&mut far).await.unwrap().unwrap() {
                Response::Pieces(p) => assert_eq!(p.data, vec![n; 1000]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn no_more_requests_are_read_than_answers_may_be_owed() {
        let (mut far, mut events) = line(1 << 20);
        for n in 0..PER_PEER as u32 + 2 {
            ask(&mut far, &get(n)).await;
        }
        let mut replies = Vec::new();
        for _ in 0..PER_PEER {
            replies.push(next_asked(&mut events).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(events.try_recv().is_err(), "the next request waits unread");
        // One answer written: one more request read.
        let (_, first) = replies.remove(0);
        first.send(Response::NotFound.into()).unwrap();
        next_asked(&mut events).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !matches!(events.try_recv(), Ok(Event::Asked { .. })),
            "still at most {PER_PEER} owed"
        );
    }

    #[tokio::test]
    async fn another_request_on_a_line_is_refused_and_what_is_owed_is_still_sent() {
        let (mut far, mut events) = line(1 << 20);
        ask(&mut far, &get(1)).await;
        ask(&mut far, &Request::GetManifest { bundle: [0; 32] }).await;
        let (ask_id, reply) = next_asked(&mut events).await;
        match events.recv().await.unwrap() {
            Event::Refused { strike, why, .. } => {
                assert!(strike);
                assert!(why.contains("other than GetPieces"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        reply.send(pieces(7, 10)).unwrap();
        match codec().read_line_answer(&mut far).await.unwrap().unwrap() {
            Response::Pieces(p) => assert_eq!(p.data, vec![7; 10]),
            other => panic!("{other:?}"),
        }
        // Then the line ends, cleanly, its slot freed.
        let mut rest = Vec::new();
        far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let mut finished = false;
        while let Some(e) = events.recv().await {
            match e {
                Event::Finished(a) if a == ask_id => finished = true,
                Event::InboundEnded(_) => break,
                _ => {}
            }
        }
        assert!(finished);
    }

    #[tokio::test]
    async fn answers_queued_behind_one_whose_reader_stopped_give_their_slots_back() {
        // 64 KiB of room: a reader that reads nothing stalls the first
        // answer of a megabyte.
        let (mut far, mut events) = line(64 << 10);
        for n in 1..=3 {
            ask(&mut far, &get(n)).await;
        }
        let mut asks = Vec::new();
        for i in 0..3u8 {
            let (ask, reply) = next_asked(&mut events).await;
            reply.send(pieces(i, 1 << 20)).unwrap();
            asks.push(ask);
        }
        let started = std::time::Instant::now();
        let mut freed = Vec::new();
        while freed.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Some(Event::Finished(a))) => freed.push(a),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            freed,
            asks[1..],
            "the queued two, not the one being written"
        );
        assert!(
            started.elapsed() >= STALLED_READER,
            "{:?}",
            started.elapsed()
        );
        // The reader comes back: every answer still arrives, in order.
        for n in 0..3u8 {
            match codec().read_line_answer(&mut far).await.unwrap().unwrap() {
                Response::Pieces(p) => assert_eq!(p.data, vec![n; 1 << 20]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn answers_waiting_for_the_upload_turn_keep_their_slots() {
        let limiter = Arc::new(Limiter::new(None));
        let (near, far) = tokio::io::duplex(1 << 20);
        let mut far = far.compat();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let line_codec = WireCodec::new(limiter.clone(), Arc::new(Metrics::new()));
        spawn(
            PeerId::random(),
            near.compat(),
            line_codec,
            Duration::from_secs(10),
            events_tx,
        );
        // Another peer's answer holds the turn for twice STALLED_READER.
        let turn = limiter.turn.lock().await;
        for n in 1..=3 {
            ask(&mut far, &get(n)).await;
        }
        for i in 0..3u8 {
            let (_, reply) = next_asked(&mut events).await;
            reply.send(pieces(i, 1000)).unwrap();
        }
        tokio::time::sleep(STALLED_READER * 2).await;
        assert!(
            events.try_recv().is_err(),
            "no slot given back: nothing stalled"
        );
        drop(turn);
        for n in 0..3u8 {
            match codec().read_line_answer(&mut far).await.unwrap().unwrap() {
                Response::Pieces(p) => assert_eq!(p.data, vec![n; 1000]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_line_stalls_only_while_a_write_waits_on_its_reader() {
        let clock = Clock::new();
        assert!(!clock.stalled(Duration::ZERO), "nothing written yet");
        clock.blocked();
        assert!(clock.stalled(Duration::ZERO));
        assert!(!clock.stalled(Duration::from_secs(60)));
        clock.written();
        assert!(!clock.stalled(Duration::ZERO), "bytes went out");
        clock.read();
        assert!(clock.since_read() < Duration::from_secs(60));
    }
}
