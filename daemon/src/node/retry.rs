//! Trying again what failed on the disk: a doubling [`Backoff`] per
//! bundle, and the node's table of fetches to start again ([`Retries`]).
//! Pure: time is a parameter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lanseed_protocol::{BundleId, VerifiedRelease};

/// Fetches remembered for a retry; more replace the one due last.
pub const MAX_RETRIES: usize = 64;

/// A doubling wait between tries of one thing: 1 s, 2 s, … 60 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// When the next try may start.
    pub due: Instant,
    /// The wait after the next failure.
    pub next_wait: Duration,
}

impl Backoff {
    /// The first wait.
    pub const FIRST: Duration = Duration::from_secs(1);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(60);

    /// After a failure at `now`, following `before` (if any).
    pub fn after_failure(before: Option<Backoff>, now: Instant) -> Backoff {
        let wait = before.map_or(Self::FIRST, |b| b.next_wait);
        Backoff {
            due: now + wait,
            next_wait: (wait * 2).min(Self::MAX),
        }
    }
}

/// Fetches that failed on the store, by bundle.
#[derive(Default)]
pub struct Retries {
    waiting: HashMap<BundleId, (VerifiedRelease, Backoff)>,
    /// Backoffs of bundles being tried again, kept until they succeed.
    tried: HashMap<BundleId, Backoff>,
}

impl Retries {
    /// `release`'s fetch failed at `now`; returns the wait before the next try.
    pub fn failed(&mut self, release: VerifiedRelease, now: Instant) -> Duration {
        let bundle = release.release().bundle_id;
        let before = self.tried.remove(&bundle);
        let b = Backoff::after_failure(before, now);
        if self.waiting.len() >= MAX_RETRIES && !self.waiting.contains_key(&bundle) {
            let last = (self.waiting.iter())
                .max_by_key(|(_, (_, b))| b.due)
                .map(|(k, _)| *k);
            if let Some(k) = last {
                self.waiting.remove(&k);
            }
        }
        self.waiting.insert(bundle, (release, b));
        if self.tried.len() > MAX_RETRIES {
            self.tried.clear();
        }
        b.due - now
    }

    /// The releases whose retry is due at `now`, taken out of the table.
    pub fn take_due(&mut self, now: Instant) -> Vec<VerifiedRelease> {
        let due: Vec<BundleId> = (self.waiting.iter())
            .filter(|(_, (_, b))| b.due <= now)
            .map(|(k, _)| *k)
            .collect();
        due.into_iter()
            .filter_map(|k| self.waiting.remove(&k))
            .map(|(r, b)| {
                self.tried.insert(r.release().bundle_id, b);
                r
            })
            .collect()
    }

    /// Keeps only the retries of releases `keep` says.
    pub fn retain(&mut self, keep: impl Fn(&VerifiedRelease) -> bool) {
        self.waiting.retain(|_, (r, _)| keep(r));
    }

    /// Makes every retry due now (space came back).
    pub fn all_due_now(&mut self, now: Instant) {
        for (_, b) in self.waiting.values_mut() {
            b.due = b.due.min(now);
        }
    }

    /// The retries waiting, with the time left.
    pub fn waiting(&self, now: Instant) -> impl Iterator<Item = (&VerifiedRelease, Duration)> {
        (self.waiting.values()).map(move |(r, b)| (r, b.due.saturating_duration_since(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let now = Instant::now();
        let mut b = Backoff::after_failure(None, now);
        assert_eq!(b.due, now + Duration::from_secs(1));
        let mut waits = Vec::new();
        for _ in 0..8 {
            b = Backoff::after_failure(Some(b), now);
            waits.push(b.due.duration_since(now).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
