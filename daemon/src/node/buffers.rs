//! Recycled answer buffers. An answer of pieces is up to a megabyte; a
//! fresh buffer for each costs the kernel's page faults and zeroing on
//! every answer (glibc hands large freed blocks back to the system), which
//! at hundreds of megabytes a second was a tenth of a fetcher's CPU time.
//! So the codec reads each answer of pieces into a buffer from here, and
//! the fetch gives it back once its pieces are written; the next answer
//! reuses it. (A seeder reads the large pieces that may not shrink from
//! their files as it writes them, and builds other answers in buffers of
//! their own size: with many peers it has many in flight, most of them
//! small.)
//!
//! At most [`KEPT`] idle buffers are kept; a buffer is only kept when its
//! capacity is that of an answer (a manifest's larger buffer is freed).

use std::sync::Mutex;

use lanseed_protocol::wire::MAX_PIECE_RESPONSE_BYTES;

/// Capacity of a recycled buffer: the largest answer of pieces.
pub const CAPACITY: usize = MAX_PIECE_RESPONSE_BYTES;

/// Most idle buffers kept (`KEPT × CAPACITY` of memory at most).
pub const KEPT: usize = 8;

static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn idle() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A buffer of `len` bytes (at most [`CAPACITY`]) to be overwritten: its
/// bytes are whatever the last answer left (zero where it left none).
pub fn filled(len: usize) -> Vec<u8> {
    debug_assert!(len <= CAPACITY);
    let mut buf = idle().pop().unwrap_or_else(|| Vec::with_capacity(CAPACITY));
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
    buf
}

/// Takes back a buffer whose bytes were used.
pub fn give(buf: Vec<u8>) {
    if buf.capacity() != CAPACITY {
        return;
    }
    let mut idle = idle();
    if idle.len() < KEPT {
        idle.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let mut b = filled(10);
        assert_eq!(b.len(), 10);
        b.copy_from_slice(&[7; 10]);
        let at = b.as_ptr();
        give(b);
        // Other tests may use the pool at the same time: look for ours.
        let mut taken: Vec<Vec<u8>> = (0..KEPT + 1).map(|_| filled(4)).collect();
        assert!(taken.iter().all(|b| b.len() == 4));
        assert!(
            taken.iter().any(|b| b.as_ptr() == at && b[..] == [7; 4]),
            "the buffer given back is taken again, without zeroing"
        );
        for b in taken.drain(..) {
            give(b);
        }
        assert!(idle().len() <= KEPT);
        give(Vec::with_capacity(CAPACITY * 2));
        assert!(idle().iter().all(|b| b.capacity() == CAPACITY));
    }
}
