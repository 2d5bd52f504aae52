//! The network: hosts with an uplink and a downlink of their own capacity
//! (bytes a second), joined by a switch that is never the bottleneck, and a
//! one-way latency for every message.
//!
//! Bulk data moves as fluid: a connection from one host to another is
//! active while it carries answers, and the active connections share the
//! links **max-min fairly** (as TCP connections sharing bottlenecks do,
//! roughly): every link side (a host's uplink, a host's downlink) has a
//! water level, the share of the connections not held back elsewhere, and
//! a connection runs at the lower level of its two ends. When a connection
//! starts or ends, the levels of its two ends are computed again, and of
//! the links whose connections that changed, and so on while levels move
//! by more than [`SETTLE`] (at most [`MAX_RELEVEL`] links per change): the
//! work of an event is local, what the hosts around it carry, not what the
//! network carries. The answers in flight on one connection either share
//! its rate equally (yamux streams interleaving fully) or go one after the
//! other ([`Order`]).
//!
//! Small messages (`Have`, requests, `Busy`) take the latency only: at
//! tens of bytes each they do not compete with bulk data in this model
//! (their bytes are counted by the caller).

use std::collections::HashMap;

use super::events::{Nanos, SEC};

/// Below this many bytes left, an answer has arrived (float dust).
const DONE_EPSILON: f64 = 0.5;
/// A level that moved by less than this share of itself moves no other.
pub const SETTLE: f64 = 0.005;
/// Most link levels computed again after one change.
pub const MAX_RELEVEL: usize = 512;

/// How the answers in flight on one connection share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Equally, all at once.
    Shared,
    /// One after the other, in the order they started.
    Fifo,
}

/// One side of a host's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Up(u32),
    Down(u32),
}

/// One host's link, bytes a second each way.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Uplink capacity.
    pub up: f64,
    /// Downlink capacity.
    pub down: f64,
}

/// A connection to look at again at `at` (when its first answer would
/// finish), if its `version` is still current then.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Check {
    /// Sending host.
    pub from: u32,
    /// Receiving host.
    pub to: u32,
    /// The connection's version when this was computed.
    pub version: u64,
    /// When.
    pub at: Nanos,
}

struct Conn<T> {
    /// Answers in flight: bytes left, and the caller's tag.
    transfers: Vec<(f64, T)>,
    /// Bytes a second for the whole connection.
    rate: f64,
    /// When `transfers` were last brought up to date.
    updated: Nanos,
    version: u64,
}

struct Host {
    /// Peers this host sends to now.
    up: Vec<u32>,
    /// Peers this host receives from now.
    down: Vec<u32>,
    /// Water level of its uplink and downlink.
    level_up: f64,
    level_down: f64,
}

/// The bulk data in flight, tagged `T` by the caller.
pub struct Net<T> {
    order: Order,
    links: Vec<Link>,
    hosts: Vec<Host>,
    conns: HashMap<(u32, u32), Conn<T>>,
    /// Most connections a host carried data on at once, both ways.
    pub peak_active: Vec<u32>,
}

/// The water level of a link of `capacity` whose connections are held
/// back elsewhere at `caps`: the share of those that are not, so that
/// `min(cap, level)` summed over them fills the link. When every one is
/// held back below it, the most any one could get (the largest cap plus
/// what is left). No connection: the capacity.
pub fn water_level(capacity: f64, caps: &mut [f64]) -> f64 {
    if caps.is_empty() {
        return capacity;
    }
    caps.sort_by(f64::total_cmp);
    let mut left = capacity;
    let mut n = caps.len();
    for &c in caps.iter() {
        if c * n as f64 >= left {
            return left / n as f64;
        }
        left -= c;
        n -= 1;
    }
    caps[caps.len() - 1] + left.max(0.0)
}

impl<T> Net<T> {
    /// A network of hosts with these links.
    pub fn new(links: Vec<Link>, order: Order) -> Self {
        let n = links.len();
        Net {
            order,
            hosts: (links.iter())
                .map(|l| Host {
                    up: Vec::new(),
                    down: Vec::new(),
                    level_up: l.up,
                    level_down: l.down,
                })
                .collect(),
            links,
            conns: HashMap::new(),
            peak_active: vec![0; n],
        }
    }

    /// The rate of the connection `from → to` now (0 when idle).
    pub fn rate(&self, from: u32, to: u32) -> f64 {
        self.conns.get(&(from, to)).map_or(0.0, |c| c.rate)
    }

    /// Starts sending `bytes` from `from` to `to` at `now`; the returned
    /// checks are to be scheduled.
    pub fn start(&mut self, now: Nanos, from: u32, to: u32, bytes: u64, tag: T) -> Vec<Check> {
        let fresh = !self.conns.contains_key(&(from, to));
        let conn = self.conns.entry((from, to)).or_insert_with(|| Conn {
            transfers: Vec::new(),
            rate: 0.0,
            updated: now,
            version: 0,
        });
        advance(conn, now, self.order);
        conn.transfers.push((bytes as f64, tag));
        let mut checks = Vec::new();
        if fresh {
            self.hosts[from as usize].up.push(to);
            self.hosts[to as usize].down.push(from);
            self.note_peak(from);
            self.note_peak(to);
            self.relevel(now, vec![Side::Up(from), Side::Down(to)], &mut checks);
        } else {
            let conn = self.conns.get_mut(&(from, to)).expect("just made");
            checks.push(reschedule(conn, now, self.order, from, to));
        }
        checks
    }

    fn note_peak(&mut self, h: u32) {
        let host = &self.hosts[h as usize];
        let n = (host.up.len() + host.down.len()) as u32;
        let peak = &mut self.peak_active[h as usize];
        *peak = (*peak).max(n);
    }

    /// The connection's check came due: the answers that arrived (their
    /// tags), and further checks to schedule. A stale check (its version
    /// is past) finds nothing.
    pub fn check(&mut self, now: Nanos, c: Check) -> (Vec<T>, Vec<Check>) {
        let Some(conn) = self.conns.get_mut(&(c.from, c.to)) else {
            return (Vec::new(), Vec::new());
        };
        if conn.version != c.version {
            return (Vec::new(), Vec::new());
        }
        advance(conn, now, self.order);
        let mut done = Vec::new();
        let mut i = 0;
        while i < conn.transfers.len() {
            if conn.transfers[i].0 <= DONE_EPSILON {
                done.push(conn.transfers.remove(i).1);
            } else {
                i += 1;
            }
        }
        let mut checks = Vec::new();
        if conn.transfers.is_empty() {
            self.conns.remove(&(c.from, c.to));
            self.hosts[c.from as usize].up.retain(|&p| p != c.to);
            self.hosts[c.to as usize].down.retain(|&p| p != c.from);
            self.relevel(now, vec![Side::Up(c.from), Side::Down(c.to)], &mut checks);
        } else {
            checks.push(reschedule(conn, now, self.order, c.from, c.to));
        }
        (done, checks)
    }

    /// Host `h` left: everything it sent or received is dropped (the tags
    /// of what was in flight, and checks for the hosts it shared links
    /// with).
    pub fn drop_host(&mut self, now: Nanos, h: u32) -> (Vec<T>, Vec<Check>) {
        let mut lost = Vec::new();
        let up = std::mem::take(&mut self.hosts[h as usize].up);
        let down = std::mem::take(&mut self.hosts[h as usize].down);
        let mut others = Vec::new();
        for to in up {
            if let Some(c) = self.conns.remove(&(h, to)) {
                lost.extend(c.transfers.into_iter().map(|(_, t)| t));
            }
            self.hosts[to as usize].down.retain(|&p| p != h);
            others.push(Side::Down(to));
        }
        for from in down {
            if let Some(c) = self.conns.remove(&(from, h)) {
                lost.extend(c.transfers.into_iter().map(|(_, t)| t));
            }
            self.hosts[from as usize].up.retain(|&p| p != h);
            others.push(Side::Up(from));
        }
        let mut checks = Vec::new();
        self.relevel(now, others, &mut checks);
        (lost, checks)
    }

    /// The connections at `start` changed: their levels are computed
    /// again, and those of the links their level changes reach; every
    /// connection at a link computed again gets its new rate.
    fn relevel(&mut self, now: Nanos, start: Vec<Side>, checks: &mut Vec<Check>) {
        let mut work: std::collections::VecDeque<Side> = start.into();
        let mut seen: std::collections::HashSet<Side> = work.iter().copied().collect();
        let mut touched: Vec<(u32, u32)> = Vec::new();
        let mut budget = MAX_RELEVEL;
        let mut caps = Vec::new();
        while let Some(side) = work.pop_front() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            seen.remove(&side);
            let (h, up) = match side {
                Side::Up(h) => (h, true),
                Side::Down(h) => (h, false),
            };
            let host = &self.hosts[h as usize];
            let peers = if up { &host.up } else { &host.down };
            caps.clear();
            caps.extend(peers.iter().map(|&p| {
                let other = &self.hosts[p as usize];
                if up { other.level_down } else { other.level_up }
            }));
            let link = self.links[h as usize];
            let level = water_level(if up { link.up } else { link.down }, &mut caps);
            let host = &mut self.hosts[h as usize];
            let old = if up {
                std::mem::replace(&mut host.level_up, level)
            } else {
                std::mem::replace(&mut host.level_down, level)
            };
            let peers = if up { &host.up } else { &host.down };
            touched.extend(peers.iter().map(|&p| if up { (h, p) } else { (p, h) }));
            if (level - old).abs() > SETTLE * level.max(old) {
                for &p in peers {
                    let next = if up { Side::Down(p) } else { Side::Up(p) };
                    if seen.insert(next) {
                        work.push_back(next);
                    }
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for (from, to) in touched {
            let rate = self.hosts[from as usize]
                .level_up
                .min(self.hosts[to as usize].level_down)
                .min(self.links[from as usize].up)
                .min(self.links[to as usize].down);
            let conn = self.conns.get_mut(&(from, to)).expect("listed");
            if conn.rate == rate && conn.version > 0 {
                continue;
            }
            advance(conn, now, self.order);
            conn.rate = rate;
            checks.push(reschedule(conn, now, self.order, from, to));
        }
    }
}

/// Brings the bytes left of every answer on `conn` up to `now`.
fn advance<T>(conn: &mut Conn<T>, now: Nanos, order: Order) {
    let k = conn.transfers.len();
    if k > 0 && now > conn.updated {
        let mut bytes = conn.rate * (now - conn.updated) as f64 / SEC as f64;
        match order {
            Order::Shared => {
                for t in &mut conn.transfers {
                    t.0 -= bytes / k as f64;
                }
            }
            Order::Fifo => {
                for t in &mut conn.transfers {
                    let take = bytes.min(t.0.max(0.0));
                    t.0 -= take;
                    bytes -= take;
                    if bytes <= 0.0 {
                        break;
                    }
                }
            }
        }
    }
    conn.updated = now;
}

/// A new version of `conn`, checked when its smallest answer would end.
fn reschedule<T>(conn: &mut Conn<T>, now: Nanos, order: Order, from: u32, to: u32) -> Check {
    conn.version += 1;
    let need = match order {
        Order::Shared => {
            let least = (conn.transfers.iter().map(|t| t.0)).fold(f64::INFINITY, f64::min);
            least.max(0.0) * conn.transfers.len() as f64
        }
        Order::Fifo => conn.transfers.first().map_or(0.0, |t| t.0.max(0.0)),
    };
    let secs = if conn.rate > 0.0 {
        (need / conn.rate).min(1e6)
    } else {
        1e6
    };
    Check {
        from,
        to,
        version: conn.version,
        at: now + (secs * SEC as f64).ceil() as Nanos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    fn net(n: usize, up: f64, down: f64) -> Net<&'static str> {
        Net::new(vec![Link { up, down }; n], Order::Shared)
    }

    /// Runs checks until none is left; returns (tag, time) of arrivals.
    fn drain(net: &mut Net<&'static str>, mut checks: Vec<Check>) -> Vec<(&'static str, Nanos)> {
        let mut out = Vec::new();
        while !checks.is_empty() {
            checks.sort_by_key(|c| c.at);
            let c = checks.remove(0);
            let (done, more) = net.check(c.at, c);
            out.extend(done.into_iter().map(|t| (t, c.at)));
            checks.extend(more);
        }
        out
    }

    #[test]
    fn the_water_level_shares_what_the_held_back_leave() {
        // Nobody held back: equal shares.
        assert_eq!(water_level(8.0, &mut [100.0, 100.0, 100.0, 100.0]), 2.0);
        // One held back at 1: the other three share 7.
        let l = water_level(8.0, &mut [1.0, 100.0, 100.0, 100.0]);
        assert!((l - 7.0 / 3.0).abs() < 1e-12, "{l}");
        // Everyone held back: the largest could grow by what is left.
        assert_eq!(water_level(8.0, &mut [1.0, 2.0]), 7.0);
        assert_eq!(water_level(8.0, &mut []), 8.0);
    }

    #[test]
    fn a_receiver_gives_what_a_slow_sender_leaves_to_a_fast_one() {
        // Host 2 (downlink 1 MB/s) receives from 0 (uplink 0.2 MB/s) and
        // from 1 (uplink 10 MB/s): max-min gives 0.2 and 0.8, not halves.
        let mut n = Net::new(
            vec![
                Link {
                    up: 0.2 * MB,
                    down: MB,
                },
                Link {
                    up: 10.0 * MB,
                    down: MB,
                },
                Link { up: MB, down: MB },
            ],
            Order::Shared,
        );
        let mut checks = n.start(0, 0, 2, 10_000_000, "slow");
        checks.extend(n.start(0, 1, 2, 10_000_000, "fast"));
        assert!((n.rate(0, 2) - 0.2 * MB).abs() < 1.0, "{}", n.rate(0, 2));
        assert!(
            (n.rate(1, 2) - 0.8 * MB).abs() < 1e-3 * MB,
            "{}",
            n.rate(1, 2)
        );
        drop(checks);
    }

    #[test]
    fn one_transfer_takes_bytes_over_the_slower_link() {
        let mut n = Net::new(
            vec![
                Link { up: MB, down: MB },
                Link {
                    up: MB,
                    down: MB / 2.0,
                },
            ],
            Order::Shared,
        );
        let checks = n.start(0, 0, 1, 1_000_000, "a");
        let done = drain(&mut n, checks);
        assert_eq!(done.len(), 1);
        let secs = done[0].1 as f64 / SEC as f64;
        assert!((secs - 2.0).abs() < 1e-6, "{secs}");
    }

    #[test]
    fn a_sender_splits_its_uplink_and_the_rest_speed_up_when_one_ends() {
        // Host 0 sends 1 MB to 1 and 2 MB to 2 at 1 MB/s: both at 0.5 MB/s
        // until the first ends at 2 s, then the second alone: 1 MB more at
        // 1 MB/s, done at 3 s.
        let mut n = net(3, MB, 10.0 * MB);
        let mut checks = n.start(0, 0, 1, 1_000_000, "to1");
        checks.extend(n.start(0, 0, 2, 2_000_000, "to2"));
        assert_eq!(n.rate(0, 1), MB / 2.0);
        let done = drain(&mut n, checks);
        let t = |tag| done.iter().find(|d| d.0 == tag).unwrap().1 as f64 / SEC as f64;
        assert!((t("to1") - 2.0).abs() < 1e-6);
        assert!((t("to2") - 3.0).abs() < 1e-6);
        assert_eq!(n.rate(0, 2), 0.0, "idle once done");
    }

    #[test]
    fn answers_on_one_connection_share_it_and_a_receiver_splits_its_downlink() {
        // Two answers on 0 → 2 share that connection; 1 → 2 gets the
        // other half of 2's downlink.
        let mut n = net(3, 10.0 * MB, 2.0 * MB);
        let mut checks = n.start(0, 0, 2, 1_000_000, "a");
        checks.extend(n.start(0, 0, 2, 1_000_000, "b"));
        checks.extend(n.start(0, 1, 2, 1_000_000, "c"));
        assert_eq!(n.rate(0, 2), MB);
        assert_eq!(n.rate(1, 2), MB);
        let done = drain(&mut n, checks);
        // c alone at 1 MB/s: 1 s; a and b at 0.5 MB/s each until c ends,
        // then 2 MB/s together for the remaining 1 MB: 1.5 s.
        let t = |tag| done.iter().find(|d| d.0 == tag).unwrap().1 as f64 / SEC as f64;
        assert!((t("c") - 1.0).abs() < 1e-6);
        assert!((t("a") - 1.5).abs() < 1e-6);
        assert!((t("b") - 1.5).abs() < 1e-6);
    }

    #[test]
    fn in_fifo_order_the_first_answer_ends_first() {
        let mut n = Net::new(vec![Link { up: MB, down: MB }; 2], Order::Fifo);
        let mut checks = n.start(0, 0, 1, 1_000_000, "first");
        checks.extend(n.start(0, 0, 1, 1_000_000, "second"));
        let done = drain(&mut n, checks);
        let t = |tag| done.iter().find(|d| d.0 == tag).unwrap().1 as f64 / SEC as f64;
        assert!((t("first") - 1.0).abs() < 1e-6);
        assert!((t("second") - 2.0).abs() < 1e-6);
    }

    #[test]
    fn a_host_that_leaves_takes_its_transfers_and_frees_the_others() {
        let mut n = net(3, MB, 10.0 * MB);
        let mut checks = n.start(0, 0, 1, 1_000_000, "to1");
        checks.extend(n.start(0, 0, 2, 1_000_000, "to2"));
        let (lost, more) = n.drop_host(SEC / 2, 1);
        assert_eq!(lost, vec!["to1"]);
        checks.extend(more);
        let done = drain(&mut n, checks);
        // to2 had 0.75 MB left at 0.5 s, then the whole uplink: 1.25 s.
        assert_eq!(done.len(), 1);
        let secs = done[0].1 as f64 / SEC as f64;
        assert!((secs - 1.25).abs() < 1e-6, "{secs}");
    }
}
