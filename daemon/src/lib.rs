//! What other crates of the workspace build exactly as the node does:
//! the transport ([`transport`]), used by the `lanseed` binary's node and
//! by `lanseed-tests`' liar and raw-stream baseline, so that what they
//! measure or attack is the node's own stack.

pub mod transport;
