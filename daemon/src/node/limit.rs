//! The upload's turns and `--upload-limit`: how a node's answers leave.
//!
//! Answers take turns (a fair, first-come lock held for a whole answer),
//! with or without a rate. With several peers asking, each answer goes out
//! at the full rate one after the other instead of all of them crawling
//! together: a capped seeder's answers do not crawl into their timeouts,
//! and a source's pieces are done one by one, so the first follower to
//! get one can pass it on while the source sends the next (initial
//! seeding: the followers feed each other, the source's uplink sends each
//! piece about once). An answer whose reader stops reading gives up its
//! turn (see the codec).
//!
//! With a rate, a virtual clock: each chunk written books the link for its
//! length at the rate, and a writer waits until the link is free. Bytes
//! are counted as lanseed writes them to its connections (messages with
//! their length prefixes). Encryption and stream framing under them add
//! about 0.1 %, and TCP/IP headers a few percent more on a real Ethernet
//! link; measured on a veth interface the limit holds to within a few
//! percent (see the swarm tests).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Idle time that may be made up with a burst.
const BURST: Duration = Duration::from_millis(20);

/// Chunk size of writes at a rate.
const CHUNK: usize = 16 * 1024;
/// Chunk size of writes with no rate (a turn's stall is checked per
/// chunk: as often as needed, not on every 16 KiB).
const UNLIMITED_CHUNK: usize = 256 * 1024;

/// With no rate, an answer going slower than this (bytes a second) gives
/// up its turn: 8 Mbit/s, below any LAN a fleet runs on.
const TURN_FLOOR: f64 = 1e6;

/// The node's upload: turns, and a rate if one is set.
pub struct Limiter {
    /// `None`: no rate, turns only.
    bytes_per_sec: Option<f64>,
    next_free: Mutex<Instant>,
    /// Held for a whole answer, unless its reader stalls.
    pub turn: tokio::sync::Mutex<()>,
}

impl Limiter {
    /// Turns, and a limit of `bytes_per_sec` if given.
    pub fn new(bytes_per_sec: Option<u64>) -> Limiter {
        Limiter {
            bytes_per_sec: bytes_per_sec.map(|r| r.max(1) as f64),
            next_free: Mutex::new(Instant::now()),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// How long `n` bytes take at the limit (`None`: no limit).
    pub fn time_for(&self, n: usize) -> Option<Duration> {
        (self.bytes_per_sec).map(|r| Duration::from_secs_f64(n as f64 / r))
    }

    /// How long an answer of `n` bytes may hold the turn: as long as it
    /// takes at the rate, or with no rate at [`TURN_FLOOR`], plus `slack`
    /// (a reader that trickles must not keep the turn from the others).
    pub fn turn_for(&self, n: usize, slack: Duration) -> Duration {
        let rate = self.bytes_per_sec.unwrap_or(TURN_FLOOR);
        Duration::from_secs_f64(n as f64 / rate) + slack
    }

    /// How much to write at a time.
    pub fn chunk(&self) -> usize {
        if self.bytes_per_sec.is_some() {
            CHUNK
        } else {
            UNLIMITED_CHUNK
        }
    }

    /// Waits until `n` message bytes may leave, and books them.
    pub async fn take(&self, n: usize) {
        self.book(n, false).await;
    }

    /// Books `n` bytes that already came in, and waits until they would
    /// have at the rate (a download's chunk is read before it is booked:
    /// waiting only for its slot to begin would let its bytes, and the
    /// last chunk's, through for free, more so the larger the chunks a
    /// busy machine reads at once).
    pub async fn took(&self, n: usize) {
        self.book(n, true).await;
    }

    async fn book(&self, n: usize, until_end: bool) {
        let Some(time) = self.time_for(n) else {
            return;
        };
        let wait = {
            let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now.checked_sub(BURST).unwrap_or(now));
            *next = start + time;
            let until = if until_end { *next } else { start };
            until.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses a rate: `500K`, `2M`, `1.5MB/s`, `800k`, `10mbit` (bytes unless
/// it says bit; K/M/G are powers of 1000, KiB/MiB/GiB of 1024).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (try 500K, 2M, 1.5MiB or 20mbit)"))?;
    let (mult, bits) = match unit.trim() {
        "" | "b" => (1.0, false),
        "k" | "kb" => (1e3, false),
        "m" | "mb" => (1e6, false),
        "g" | "gb" => (1e9, false),
        "kib" => (1024.0, false),
        "mib" => (1024.0 * 1024.0, false),
        "gib" => (1024.0 * 1024.0 * 1024.0, false),
        "kbit" => (1e3, true),
        "mbit" => (1e6, true),
        "gbit" => (1e9, true),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (try K, M, G, KiB, MiB, mbit)"
            ));
        }
    };
    let bytes = value * mult / if bits { 8.0 } else { 1.0 };
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!("{s:?}: a rate must be at least 1 byte per second"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes booked after they came in are paid for in full: three
    /// chunks of 0.1 s at the rate take 0.3 s (less the burst), where
    /// booking each before it leaves lets the last one through at once.
    #[tokio::test]
    async fn bytes_booked_after_they_came_in_take_their_whole_time() {
        let limiter = Limiter::new(Some(1_000_000));
        let started = std::time::Instant::now();
        for _ in 0..3 {
            limiter.took(100_000).await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(280), "{took:?}");
        let limiter = Limiter::new(Some(1_000_000));
        let started = std::time::Instant::now();
        for _ in 0..3 {
            limiter.take(100_000).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(180));
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("500K").unwrap(), 500_000);
        assert_eq!(parse_rate("2M").unwrap(), 2_000_000);
        assert_eq!(parse_rate("1.5MiB/s").unwrap(), 1_572_864);
        assert_eq!(parse_rate("80mbit").unwrap(), 10_000_000);
        assert_eq!(parse_rate("1234").unwrap(), 1234);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("3 parsecs").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_holds() {
        let l = Limiter::new(Some(1_000_000));
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            l.take(CHUNK).await;
        }
        // 100 chunks booked; the last may start when 99 have gone.
        let secs = start.elapsed().as_secs_f64();
        let expected = 99.0 * CHUNK as f64 / 1e6;
        assert!(
            (secs - expected).abs() / expected < 0.05,
            "{secs} vs {expected}"
        );
    }
}
