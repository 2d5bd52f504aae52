//! Per-device rate limit of update checks: a token bucket per device id,
//! [`BURST`] checks at once, then one per [`EVERY`]. Over it, the gateway
//! answers `429` with `Retry-After`, which the plugin honours by pausing
//! its checks. Pure (callers pass the time), tested below.
//!
//! The table is bounded ([`MAX_DEVICES`]): a device whose bucket has
//! refilled is the same as one never seen, so when the table is full such
//! entries are dropped first; if every entry is still draining (more than
//! [`MAX_DEVICES`] ids checked within the last [`BURST`] × [`EVERY`]),
//! new ids are refused until some refill: a flood of made-up ids costs a
//! bounded table, never memory without end, and never the buckets of the
//! devices already counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Checks allowed at once.
pub const BURST: f64 = 5.0;
/// One more check allowed per this much time.
pub const EVERY: Duration = Duration::from_secs(1);
/// Most device ids tracked.
pub const MAX_DEVICES: usize = 20_000;

/// What to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// `429`; the device may check again after this many seconds.
    Wait(u64),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The table of buckets.
pub struct Limiter {
    buckets: HashMap<String, Bucket>,
    max: usize,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::with_capacity(MAX_DEVICES)
    }
}

impl Limiter {
    /// A table of at most `max` devices.
    pub fn with_capacity(max: usize) -> Limiter {
        Limiter {
            buckets: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Counts one check of `device` at `now`.
    pub fn check(&mut self, device: &str, now: Instant) -> Verdict {
        let rate = 1.0 / EVERY.as_secs_f64();
        if !self.buckets.contains_key(device) && self.buckets.len() >= self.max {
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < BURST
            });
            if self.buckets.len() >= self.max {
                return Verdict::Wait(EVERY.as_secs().max(1));
            }
        }
        let b = self.buckets.entry(device.to_owned()).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Verdict::Allow
        } else {
            Verdict::Wait(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Devices tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_five_then_one_a_second() {
        let mut l = Limiter::default();
        let t = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check("a", t), Verdict::Allow);
        }
        assert_eq!(l.check("a", t), Verdict::Wait(1));
        // Other devices have buckets of their own.
        assert_eq!(l.check("b", t), Verdict::Allow);
        assert_eq!(
            l.check("a", t + Duration::from_millis(500)),
            Verdict::Wait(1)
        );
        assert_eq!(
            l.check("a", t + Duration::from_millis(1000)),
            Verdict::Allow
        );
        assert_eq!(
            l.check("a", t + Duration::from_millis(1000)),
            Verdict::Wait(1)
        );
        // Idle long enough, the whole burst is back.
        let later = t + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(l.check("a", later), Verdict::Allow);
        }
        assert_eq!(l.check("a", later), Verdict::Wait(1));
    }

    #[test]
    fn a_flood_of_ids_keeps_the_table_bounded_and_the_known_buckets() {
        let mut l = Limiter::with_capacity(100);
        let t = Instant::now();
        for _ in 0..5 {
            l.check("kiosk", t);
        }
        for i in 0..1_000 {
            l.check(&format!("x{i}"), t);
        }
        assert_eq!(l.len(), 100);
        // The drained bucket was not forgotten (which would refill it).
        assert_eq!(l.check("kiosk", t), Verdict::Wait(1));
        // New ids wait while every bucket drains...
        assert_eq!(l.check("new", t), Verdict::Wait(1));
        // ...and get in once refilled buckets can go.
        assert_eq!(l.check("new", t + Duration::from_secs(5)), Verdict::Allow);
        assert!(l.len() <= 100);
    }
}
