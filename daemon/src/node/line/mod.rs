//! Lines: one long-lived stream of pieces between a fetcher and a seeder
//! (`/lanseed/pieces/1`, see `lanseed_protocol::wire`). Request-response
//! opens, negotiates and closes a yamux stream for every answer of a
//! megabyte, whose window then starts small again; on a line, requests
//! follow one another on one stream, the answers come back in the order
//! asked, and the stream's window grows with use.
//!
//! - [`ask`], the fetcher's end: an actor per peer, owning the stream. The
//!   node hands it `GetPieces` through its [`Asker`](ask::Asker) handle and
//!   hears each answer, or why none came, as an [`Event`].
//! - [`answer`], the seeder's end: a task per inbound line. It reads
//!   requests (at most [`PER_PEER`](super::uploads::PER_PEER) ahead of
//!   their answers), hands each to the node with a one-shot to answer on,
//!   and writes the answers in order through the codec: within the upload
//!   limit, taking turns with every other answer, exactly as an answer by
//!   request-response.
//!
//! The node decides everything (admission, what to read, whom to ask); the
//! ends only move frames and report, over one channel, in order.

pub mod answer;
pub mod ask;

#[cfg(test)]
mod testing {
    //! What both ends' tests use: a codec, and the far end of an
    //! in-memory stream.
    use std::sync::Arc;

    use crate::metrics::Metrics;
    use crate::node::codec::WireCodec;
    use crate::node::limit::Limiter;

    /// The far end of a line over an in-memory stream.
    pub type Far = tokio_util::compat::Compat<tokio::io::DuplexStream>;

    /// A codec with no upload limit.
    pub fn codec() -> WireCodec {
        WireCodec::new(Arc::new(Limiter::new(None)), Arc::new(Metrics::new()))
    }
}

use lanseed_protocol::wire::Response;
use libp2p::PeerId;
use tokio::sync::oneshot;

use super::codec::Answer;
use super::fetch::Failed;

/// Most lines a peer may have open to this node at once (one per
/// connection, and a connection more while one closes).
pub const MAX_PER_PEER: usize = 2;
/// Most inbound lines at once, all peers together (as many as
/// connections).
pub const MAX_INBOUND: usize = 256;

/// What a `GetPieces` asks for: (blob, piece index) pairs.
pub type Pieces = Vec<([u8; 32], u32)>;

/// Identifies a line of this node (for the fetcher's end).
pub type LineId = u64;

/// What the ends of lines tell the node.
#[derive(Debug)]
pub enum Event {
    /// A peer asked, on line `id`'s request numbered `ask` (the seeder's
    /// end); the answer goes back on `reply`.
    Asked {
        /// Who asked.
        peer: PeerId,
        /// The request's number (unique in this node).
        ask: u64,
        /// The pieces asked for (a `GetPieces`).
        pieces: Pieces,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// The upload slot of `ask` is free: its answer was written or never
    /// will be, or is queued behind one whose reader stopped reading (it
    /// is still written if that reader comes back).
    Finished(u64),
    /// A peer sent a frame that is not a `GetPieces` on a line, or one
    /// that does not decode (`strike`: it counts towards a ban); the line
    /// reads no more.
    Refused {
        /// Who sent it.
        peer: PeerId,
        /// Why it was refused.
        why: String,
        /// Whether it counts against the sender.
        strike: bool,
    },
    /// An inbound line of `peer` ended.
    InboundEnded(PeerId),
    /// The answer to request `key` (the fetcher's end).
    Answered {
        /// The request, as the node numbered it.
        key: u64,
        /// The answer, or why there is none.
        answer: Result<Response, Failed>,
    },
    /// Line `line` to `peer` ended. Requests handed to it and not listed
    /// in `unsent` were written and will not be answered now.
    Closed {
        /// The peer.
        peer: PeerId,
        /// The line.
        line: LineId,
        /// Requests handed to the line that never went out.
        unsent: Vec<(u64, Pieces)>,
        /// Why it ended.
        why: Closed,
    },
}

/// Why a line ended. After `Unsupported`, `Idle`, `Ended` and `Dropped`
/// the requests not answered are asked again (a line carries reads,
/// which may be repeated); after `Failed` those written have failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The peer does not speak lines: ask it by request-response.
    Unsupported,
    /// It had nothing to carry for a while.
    Idle,
    /// The seeder closed it between two answers (it was idle there, or
    /// refused a request it could not read now).
    Ended,
    /// It ended before carrying any answer: the seeder refused it (too
    /// many lines), or was too busy to take it.
    Dropped(String),
    /// It failed after answers: an answer was malformed, late or cut
    /// short, or the connection went.
    Failed(String),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Unsupported => f.write_str("does not speak lines"),
            Closed::Idle => f.write_str("idle"),
            Closed::Ended => f.write_str("closed by the peer"),
            Closed::Dropped(why) => write!(f, "refused before any answer ({why})"),
            Closed::Failed(why) => f.write_str(why),
        }
    }
}
