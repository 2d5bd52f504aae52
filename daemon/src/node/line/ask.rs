//! The fetcher's end of a line: an actor per peer that opens the stream,
//! writes the requests the node hands it as they come, and reads their
//! answers in order, each within the request timeout of its request.
//! Whatever ends the line (the peer does not speak lines, the stream
//! fails, an answer is malformed or late, nothing to carry for
//! [`IDLE`]), the node hears it once, with the requests that never went
//! out, so that no request is left without an outcome.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use lanseed_protocol::wire::{self, Request};
use libp2p::{PeerId, StreamProtocol};
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
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut rx = rx;
            let why = run(peer, control, codec, timeout, &mut rx, &events).await;
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

/// Runs the line until it ends; returns why. Requests it took from `rx`
/// and wrote are answered (an `Answered` event each) or ended by the
/// `Closed` event that follows.
async fn run(
    peer: PeerId,
    mut control: Control,
    codec: WireCodec,
    timeout: Duration,
    rx: &mut mpsc::UnboundedReceiver<(u64, Pieces)>,
    events: &mpsc::UnboundedSender<Event>,
) -> Closed {
    let protocol = StreamProtocol::new(wire::LINE_PROTOCOL);
    let stream = match tokio::time::timeout(timeout, control.open_stream(peer, protocol)).await {
        Ok(Ok(s)) => s,
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => return Closed::Unsupported,
        Ok(Err(e)) => return Closed::Failed(format!("cannot open a line: {e}")),
        Err(_) => return Closed::Failed("cannot open a line: timed out".into()),
    };
    let (mut r, mut w) = stream.split();
    let codec = &codec;
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
