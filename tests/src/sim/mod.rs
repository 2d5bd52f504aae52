//! A discrete-event simulator of lanseed's fan-out, for fleets larger than
//! one machine can run as processes: one publisher and N followers on a
//! modelled network, each follower running **the daemon's own piece
//! scheduler** (`daemon/src/node/fetch/sched.rs`, compiled in here as it
//! is) under the node's fetch rules.
//!
//! - [`events`]: the event queue (time order, ties in scheduling order).
//! - [`network`]: hosts with their own up and down capacity, bulk data as
//!   fluid flows at each connection's equal share, a latency per message.
//! - [`uploads`]: the server's upload slots (`--max-uploads`, linger,
//!   per-peer bound, Busy when full).
//! - [`seeding`]: a whole node sends each piece to one peer at a time
//!   (initial seeding, Busy to the others meanwhile).
//! - [`topology`]: who is connected to whom (a full mesh up to the node's
//!   connection limit; a bounded neighbour set as a variant).
//! - [`workload`]: the bundle cut into pieces, what compresses, and the
//!   fluid lower bound.
//! - [`engine`]: the nodes: `Have` every 100 ms when changed, requests as
//!   the scheduler picks them, answers, Busy, commits, announcements, hosts
//!   that join late or leave.

pub mod engine;
pub mod events;
pub mod network;
pub mod topology;
pub mod workload;

/// The daemon's scheduler, as it is (the daemon is a binary crate: its
/// pure module is compiled in here by path, so the simulator follows every
/// change to it). Not every function of it is called here.
#[allow(dead_code, missing_docs)]
#[path = "../../../daemon/src/node/fetch/sched.rs"]
pub mod sched;

/// The daemon's upload slots, as they are (compiled in by path, like the
/// scheduler).
#[allow(dead_code, missing_docs)]
#[path = "../../../daemon/src/node/uploads.rs"]
pub mod uploads;

/// The daemon's initial seeding, as it is (compiled in by path).
#[allow(dead_code, missing_docs)]
#[path = "../../../daemon/src/node/seeding.rs"]
pub mod seeding;
