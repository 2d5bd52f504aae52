//! The event queue: what happens next, in time order. Events at the same
//! instant come out in the order they were scheduled (a sequence number
//! breaks ties). (A run still varies a little from one process to the
//! next: the scheduler's hash maps iterate in a random order.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Simulated time in nanoseconds since the start of a run.
pub type Nanos = u64;

/// Nanoseconds in a second.
pub const SEC: Nanos = 1_000_000_000;
/// Nanoseconds in a millisecond.
pub const MS: Nanos = 1_000_000;

/// Events of type `E`, earliest first.
pub struct Queue<E> {
    heap: BinaryHeap<Reverse<(Nanos, u64, Slot<E>)>>,
    seq: u64,
    now: Nanos,
}

/// Holds an event in the heap without asking it to be ordered.
struct Slot<E>(E);

impl<E> PartialEq for Slot<E> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<E> Eq for Slot<E> {}
impl<E> PartialOrd for Slot<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Slot<E> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
        }
    }
}

impl<E> Queue<E> {
    /// The time of the event taken last.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Schedules `event` at `at` (never before now: the past is now).
    pub fn at(&mut self, at: Nanos, event: E) {
        self.seq += 1;
        self.heap
            .push(Reverse((at.max(self.now), self.seq, Slot(event))));
    }

    /// Schedules `event` `after` nanoseconds from now.
    pub fn after(&mut self, after: Nanos, event: E) {
        self.at(self.now.saturating_add(after), event);
    }

    /// The next event, and the clock moved to it.
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        let Reverse((t, _, Slot(e))) = self.heap.pop()?;
        self.now = t;
        Some((t, e))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_time_order_ties_in_scheduling_order() {
        let mut q = Queue::default();
        q.at(30, "c");
        q.at(10, "a1");
        q.at(20, "b");
        q.at(10, "a2");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a1", "a2", "b", "c"]);
        assert_eq!(q.now(), 30);
    }

    #[test]
    fn the_past_is_now_and_after_counts_from_now() {
        let mut q = Queue::default();
        q.at(100, 1);
        assert_eq!(q.pop(), Some((100, 1)));
        q.at(5, 2);
        q.after(7, 3);
        assert_eq!(q.pop(), Some((100, 2)));
        assert_eq!(q.pop(), Some((107, 3)));
        assert!(q.is_empty());
    }
}
