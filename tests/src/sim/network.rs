//! The network: hosts with an uplink and a downlink of their own capacity
//! (bytes a second), joined by a switch that is never the bottleneck, and a
//! one-way latency for every message.
//!
//! Bulk data moves as fluid: a connection from one host to another is
//! active while it carries answers, and its rate is the **per-connection
//! equal share** of both its ends, `min(up(s) / conns_up(s), down(r) /
//! conns_down(r))`, as TCP connections sharing a bottleneck get about
//! equal shares. It is not max-min fair: a connection held back at one end
//! leaves part of its share at the other end unused (the figures this
//! costs are in docs/PERF.md). The answers in flight on one connection
//! share its rate equally (yamux streams interleave). A change at a host
//! (a connection starts or ends) changes the rates of that host's
//! connections only, so each event costs what the host has, not what the
//! network has.
//!
//! Small messages (`Have`, requests, `Busy`) take the latency only: at
//! tens of bytes each they do not compete with bulk data in this model
//! (their bytes are counted by the caller).

use std::collections::HashMap;

use super::events::{Nanos, SEC};

/// Below this many bytes left, an answer has arrived (float dust).
const DONE_EPSILON: f64 = 0.5;

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

#[derive(Default)]
struct Host {
    /// Peers this host sends to now.
    up: Vec<u32>,
    /// Peers this host receives from now.
    down: Vec<u32>,
}

/// The bulk data in flight, tagged `T` by the caller.
pub struct Net<T> {
    links: Vec<Link>,
    hosts: Vec<Host>,
    conns: HashMap<(u32, u32), Conn<T>>,
    /// Most connections a host carried data on at once, both ways.
    pub peak_active: Vec<u32>,
}

/// The equal share of a connection from a host with `up` capacity and
/// `n_up` active connections to one with `down` and `n_down`.
pub fn equal_share(up: f64, n_up: usize, down: f64, n_down: usize) -> f64 {
    (up / n_up.max(1) as f64).min(down / n_down.max(1) as f64)
}

impl<T> Net<T> {
    /// A network of hosts with these links.
    pub fn new(links: Vec<Link>) -> Self {
        let n = links.len();
        Net {
            links,
            hosts: (0..n).map(|_| Host::default()).collect(),
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
        advance(conn, now);
        conn.transfers.push((bytes as f64, tag));
        let mut checks = Vec::new();
        if fresh {
            self.hosts[from as usize].up.push(to);
            self.hosts[to as usize].down.push(from);
            self.note_peak(from);
            self.note_peak(to);
            self.touch(now, from, &mut checks);
            self.touch(now, to, &mut checks);
        } else {
            let conn = self.conns.get_mut(&(from, to)).expect("just made");
            checks.push(reschedule(conn, now, from, to));
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
        advance(conn, now);
        let mut done = Vec::new();
        let mut i = 0;
        while i < conn.transfers.len() {
            if conn.transfers[i].0 <= DONE_EPSILON {
                done.push(conn.transfers.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        let mut checks = Vec::new();
        if conn.transfers.is_empty() {
            self.conns.remove(&(c.from, c.to));
            self.hosts[c.from as usize].up.retain(|&p| p != c.to);
            self.hosts[c.to as usize].down.retain(|&p| p != c.from);
            self.touch(now, c.from, &mut checks);
            self.touch(now, c.to, &mut checks);
        } else {
            checks.push(reschedule(conn, now, c.from, c.to));
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
            others.push(to);
        }
        for from in down {
            if let Some(c) = self.conns.remove(&(from, h)) {
                lost.extend(c.transfers.into_iter().map(|(_, t)| t));
            }
            self.hosts[from as usize].up.retain(|&p| p != h);
            others.push(from);
        }
        let mut checks = Vec::new();
        for o in others {
            self.touch(now, o, &mut checks);
        }
        (lost, checks)
    }

    /// Host `h`'s connections changed in number: every connection at it
    /// gets its new rate.
    fn touch(&mut self, now: Nanos, h: u32, checks: &mut Vec<Check>) {
        let host = &self.hosts[h as usize];
        let pairs: Vec<(u32, u32)> = (host.up.iter().map(|&to| (h, to)))
            .chain(host.down.iter().map(|&from| (from, h)))
            .collect();
        for (from, to) in pairs {
            let rate = equal_share(
                self.links[from as usize].up,
                self.hosts[from as usize].up.len(),
                self.links[to as usize].down,
                self.hosts[to as usize].down.len(),
            );
            let conn = self.conns.get_mut(&(from, to)).expect("listed");
            advance(conn, now);
            conn.rate = rate;
            checks.push(reschedule(conn, now, from, to));
        }
    }
}

/// Brings the bytes left of every answer on `conn` up to `now`.
fn advance<T>(conn: &mut Conn<T>, now: Nanos) {
    let k = conn.transfers.len();
    if k > 0 && now > conn.updated {
        let each = conn.rate / k as f64 * (now - conn.updated) as f64 / SEC as f64;
        for t in &mut conn.transfers {
            t.0 -= each;
        }
    }
    conn.updated = now;
}

/// A new version of `conn`, checked when its smallest answer would end.
fn reschedule<T>(conn: &mut Conn<T>, now: Nanos, from: u32, to: u32) -> Check {
    conn.version += 1;
    let k = conn.transfers.len() as f64;
    let least = (conn.transfers.iter().map(|t| t.0)).fold(f64::INFINITY, f64::min);
    let secs = if conn.rate > 0.0 {
        (least.max(0.0) * k / conn.rate).min(1e6)
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
        Net::new(vec![Link { up, down }; n])
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
    fn equal_share_is_the_smaller_end() {
        assert_eq!(equal_share(8.0, 4, 10.0, 1), 2.0);
        assert_eq!(equal_share(8.0, 1, 10.0, 5), 2.0);
        assert_eq!(equal_share(8.0, 0, 10.0, 0), 8.0);
    }

    #[test]
    fn one_transfer_takes_bytes_over_the_slower_link() {
        let mut n = Net::new(vec![
            Link { up: MB, down: MB },
            Link {
                up: MB,
                down: MB / 2.0,
            },
        ]);
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
