//! The bound on the status page's live streams: at most a fixed number
//! of Server-Sent Events clients at once, all addresses together. A
//! stream holds a [`Permit`] for as long as it runs; the slot is given
//! back when the permit is dropped (the stream ended, the client went
//! away). A client beyond the bound is answered `503` at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live streams at most, shared by every client.
#[derive(Clone, Debug)]
pub struct Clients {
    max: usize,
    active: Arc<AtomicUsize>,
}

/// One stream's slot.
#[derive(Debug)]
pub struct Permit {
    active: Arc<AtomicUsize>,
}

impl Clients {
    /// At most `max` streams at once.
    pub fn new(max: usize) -> Clients {
        Clients {
            max,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A slot, or `None` when `max` streams run.
    pub fn join(&self) -> Option<Permit> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(Permit {
            active: self.active.clone(),
        })
    }

    /// Streams running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_up_to_the_bound_then_refuses() {
        let c = Clients::new(3);
        let permits: Vec<Permit> = (0..3).map(|_| c.join().expect("a slot")).collect();
        assert_eq!(c.active(), 3);
        assert!(c.join().is_none());
        assert!(c.join().is_none());
        assert_eq!(c.active(), 3, "a refusal takes no slot");
        drop(permits);
        assert_eq!(c.active(), 0);
    }

    #[test]
    fn a_dropped_permit_frees_its_slot_for_the_next() {
        let c = Clients::new(1);
        let first = c.join().unwrap();
        assert!(c.join().is_none());
        drop(first);
        let second = c.join().expect("the freed slot");
        assert_eq!(c.active(), 1);
        drop(second);
        assert_eq!(c.active(), 0);
    }

    #[test]
    fn a_bound_of_zero_refuses_everyone() {
        assert!(Clients::new(0).join().is_none());
    }

    #[test]
    fn clones_share_one_bound_across_threads() {
        let c = Clients::new(8);
        let taken: Vec<Option<Permit>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|_| {
                    let c = c.clone();
                    s.spawn(move || c.join())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(taken.iter().filter(|p| p.is_some()).count(), 8);
        assert_eq!(c.active(), 8);
        drop(taken);
        assert_eq!(c.active(), 0);
    }
}
