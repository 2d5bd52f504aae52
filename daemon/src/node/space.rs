//! The free-space floor (`--min-free`): below it a node's fetches wait,
//! so that a kiosk's disk never fills with bundles, and `status` says why.
//!
//! The floor is a size (`500M`, `2GiB`), a share of the file system
//! (`5%`), or by default the smaller of 5 % of the file system and
//! 500 MB. The decision is pure ([`MinFree::floor`], [`Space::low`]); the
//! one system call is [`Space::of`].

use std::path::Path;

/// The default floor's share of the file system, in percent.
const DEFAULT_PERCENT: u64 = 5;
/// The default floor's cap.
const DEFAULT_CAP: u64 = 500_000_000;

/// How much free space a node leaves on its store's file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinFree {
    /// The smaller of 5 % of the file system and 500 MB.
    Auto,
    /// A size in bytes (0: no floor).
    Bytes(u64),
    /// A share of the file system, in percent.
    Percent(u64),
}

impl MinFree {
    /// The floor in bytes on a file system of `total` bytes.
    pub fn floor(self, total: u64) -> u64 {
        match self {
            MinFree::Auto => (total / 100 * DEFAULT_PERCENT).min(DEFAULT_CAP),
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => total / 100 * p,
        }
    }
}

impl std::str::FromStr for MinFree {
    type Err = String;

    fn from_str(s: &str) -> Result<MinFree, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(MinFree::Auto);
        }
        if let Some(p) = s.strip_suffix('%') {
            return match p.trim().parse::<u64>() {
                Ok(p) if p <= 100 => Ok(MinFree::Percent(p)),
                _ => Err(format!("`{s}` is not a share such as 5%")),
            };
        }
        crate::cli::parse_size(s).map(MinFree::Bytes)
    }
}

/// The store's file system now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    /// Size of the file system.
    pub total: u64,
}

impl Space {
    /// The file system holding `path`.
    pub fn of(path: &Path) -> std::io::Result<Space> {
        let s = rustix::fs::statvfs(path)?;
        Ok(Space {
            free: s.f_bavail.saturating_mul(s.f_frsize),
            total: s.f_blocks.saturating_mul(s.f_frsize),
        })
    }

    /// Why fetches must wait, or `None` when there is room.
    pub fn low(self, min: MinFree) -> Option<String> {
        let floor = min.floor(self.total);
        (self.free < floor).then(|| {
            format!(
                "free space {} is below the floor of {} (--min-free); fetches wait",
                mb(self.free),
                mb(floor)
            )
        })
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_floor_is_five_percent_capped_at_500_mb() {
        assert_eq!(MinFree::Auto.floor(1_000_000_000), 50_000_000);
        assert_eq!(MinFree::Auto.floor(64_000_000_000), 500_000_000);
        assert_eq!(MinFree::Percent(10).floor(1_000), 100);
        assert_eq!(MinFree::Bytes(7).floor(1_000), 7);
    }

    #[test]
    fn parses_sizes_shares_and_auto() {
        assert_eq!("auto".parse(), Ok(MinFree::Auto));
        assert_eq!("5%".parse(), Ok(MinFree::Percent(5)));
        assert_eq!("0".parse(), Ok(MinFree::Bytes(0)));
        assert_eq!("2M".parse(), Ok(MinFree::Bytes(2 << 20)));
        assert!("101%".parse::<MinFree>().is_err());
        assert!("lots".parse::<MinFree>().is_err());
    }

    #[test]
    fn low_says_why() {
        let s = Space {
            free: 10_000_000,
            total: 1_000_000_000,
        };
        let why = s.low(MinFree::Auto).unwrap();
        assert!(why.contains("10.0 MB") && why.contains("50.0 MB"), "{why}");
        assert_eq!(s.low(MinFree::Bytes(0)), None);
        assert_eq!(s.low(MinFree::Bytes(10_000_000)), None);
    }
}
