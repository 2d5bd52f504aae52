//! When a bundler is done writing: a burst of file events is over once no
//! event came for the quiet period. Pure: callers pass the times.

use std::time::{Duration, Instant};

/// The writes seen since the last pack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Burst {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Burst {
    /// A write (a file event) at `at`.
    pub fn write(&mut self, at: Instant) {
        self.first.get_or_insert(at);
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// When the burst is over, if there is one: `quiet` after its last write.
    pub fn due(&self, quiet: Duration) -> Option<Instant> {
        self.last.map(|l| l + quiet)
    }

    /// Ends the burst; returns when it began.
    pub fn take(&mut self) -> Option<Instant> {
        self.last = None;
        self.first.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_ends_a_quiet_period_after_its_last_write_and_remembers_its_first() {
        let t0 = Instant::now();
        let q = Duration::from_millis(60);
        let mut b = Burst::default();
        assert_eq!(b.due(q), None);
        b.write(t0);
        b.write(t0 + Duration::from_millis(40));
        b.write(t0 + Duration::from_millis(20)); // late delivery
        assert_eq!(b.due(q), Some(t0 + Duration::from_millis(100)));
        assert_eq!(b.take(), Some(t0));
        assert_eq!(b.due(q), None);
        assert_eq!(b.take(), None);
    }
}
