//! The connection guard: a libp2p behaviour that bounds connections per
//! remote IP address, or IPv6 /64 (inbound ones in their handshake, and
//! established ones both ways; the node's own dials are bounded in number
//! by `connection_limits` and in rate by the peer book) and
//! refuses peers the node has banned, before a connection costs more than
//! its handshake.
//!
//! Peer ids are free to make, so per-peer limits alone do not bound a
//! host; an IP address on a LAN costs a host more. Loopback is exempt by
//! default (every node of a one-machine setup or test shares it). The
//! total number of connections is bounded by libp2p's own
//! `connection_limits` next to this.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Connections being set up from one address at once.
pub const MAX_PENDING_PER_IP: usize = 8;
/// Connections established with one address at once.
pub const MAX_ESTABLISHED_PER_IP: usize = 8;

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Too many from one address.
    #[error("{0} has {1} connections {2}, the most allowed")]
    PerIp(IpAddr, usize, &'static str),
    /// A banned peer.
    #[error("peer {0} is banned")]
    Banned(PeerId),
}

/// Counts per address; pure bookkeeping.
#[derive(Default)]
pub struct IpCounts {
    pending: HashMap<IpAddr, usize>,
    established: HashMap<IpAddr, usize>,
    pending_of: HashMap<ConnectionId, IpAddr>,
    established_of: HashMap<ConnectionId, IpAddr>,
    /// Whether loopback is limited too.
    pub limit_loopback: bool,
}

impl IpCounts {
    fn exempt(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() && !self.limit_loopback
    }

    /// A connection from `ip` starts its handshake.
    pub fn start(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), Refused> {
        if self.exempt(&ip) {
            return Ok(());
        }
        let n = self.pending.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_IP {
            return Err(Refused::PerIp(ip, *n, "pending"));
        }
        *n += 1;
        self.pending_of.insert(id, ip);
        Ok(())
    }

    /// Whether one more connection with `ip` may be established.
    pub fn check_established(&self, ip: IpAddr) -> Result<(), Refused> {
        let n = self.established.get(&ip).copied().unwrap_or(0);
        if !self.exempt(&ip) && n >= MAX_ESTABLISHED_PER_IP {
            return Err(Refused::PerIp(ip, n, "established"));
        }
        Ok(())
    }

    /// A handshake ended (established or failed).
    pub fn end_pending(&mut self, id: ConnectionId) {
        if let Some(ip) = self.pending_of.remove(&id) {
            dec(&mut self.pending, ip);
        }
    }

    /// A connection with `ip` is established.
    pub fn established(&mut self, id: ConnectionId, ip: IpAddr) {
        self.end_pending(id);
        if !self.exempt(&ip) {
            *self.established.entry(ip).or_default() += 1;
            self.established_of.insert(id, ip);
        }
    }

    /// A connection closed.
    pub fn closed(&mut self, id: ConnectionId) {
        if let Some(ip) = self.established_of.remove(&id) {
            dec(&mut self.established, ip);
        }
    }
}

fn dec(map: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

/// The address a connection counts against: its IPv4 address, or the /64
/// network of its IPv6 address (one host may use any address of its /64).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) if ip.is_loopback() => Some(IpAddr::V6(ip)),
        Protocol::Ip6(ip) => {
            let net = u128::from(ip) & !((1u128 << 64) - 1);
            Some(IpAddr::V6(net.into()))
        }
        _ => None,
    })
}

/// The behaviour.
#[derive(Default)]
pub struct Guard {
    counts: IpCounts,
    banned: HashSet<PeerId>,
    /// Connections refused so far.
    pub refused: u64,
    /// When the last refusal was logged (refusals are logged at most once
    /// a second: a flood must not flood the log).
    last_log: Option<Instant>,
}

impl Guard {
    /// A guard; `limit_loopback` also limits loopback connections.
    pub fn new(limit_loopback: bool) -> Guard {
        let mut g = Guard::default();
        g.counts.limit_loopback = limit_loopback;
        g
    }

    /// Refuses `peer`'s connections from now on.
    pub fn ban(&mut self, peer: PeerId) {
        self.banned.insert(peer);
    }

    /// Accepts `peer` again.
    pub fn unban(&mut self, peer: &PeerId) {
        self.banned.remove(peer);
    }

    fn refuse(&mut self, why: Refused) -> ConnectionDenied {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t).as_secs() >= 1)
        {
            self.last_log = Some(now);
            tracing::info!(refused = self.refused, "connection refused: {why}");
        }
        ConnectionDenied::new(why)
    }

    fn check_peer(&mut self, peer: PeerId) -> Result<(), ConnectionDenied> {
        if self.banned.contains(&peer) {
            return Err(self.refuse(Refused::Banned(peer)));
        }
        Ok(())
    }
}

impl NetworkBehaviour for Guard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match ip_of(remote).map(|ip| self.counts.start(id, ip)) {
            Some(Err(why)) => Err(self.refuse(why)),
            _ => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.counts.end_pending(id);
        self.check_peer(peer)?;
        if let Some(Err(why)) = ip_of(remote).map(|ip| self.counts.check_established(ip)) {
            return Err(self.refuse(why));
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_peer(peer)?;
        if let Some(Err(why)) = ip_of(remote).map(|ip| self.counts.check_established(ip)) {
            return Err(self.refuse(why));
        }
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let remote = match e.endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                if let Some(ip) = ip_of(remote) {
                    self.counts.established(e.connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.counts.closed(connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.counts.end_pending(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_are_bounded_loopback_exempt() {
        let mut c = IpCounts::default();
        let lan: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        let ids: Vec<ConnectionId> = (0..40).map(ConnectionId::new_unchecked).collect();
        for id in &ids[..MAX_PENDING_PER_IP] {
            c.start(*id, lan).unwrap();
        }
        assert!(c.start(ids[20], lan).is_err(), "pending per address");
        c.start(ids[21], other).unwrap();
        for id in &ids[..MAX_ESTABLISHED_PER_IP] {
            c.check_established(lan).unwrap();
            c.established(*id, lan);
        }
        assert!(c.check_established(lan).is_err(), "established per address");
        c.start(ids[22], lan).unwrap();
        c.closed(ids[0]);
        c.check_established(lan).unwrap();
        for id in &ids[..30] {
            c.start(*id, "127.0.0.1".parse().unwrap()).unwrap();
        }
        c.limit_loopback = true;
        assert!(c.check_established("127.0.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: Multiaddr = "/ip6/2001:db8:1:2:aaaa::1/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip6/2001:db8:1:2:bbbb::9/tcp/1".parse().unwrap();
        let c: Multiaddr = "/ip6/2001:db8:1:3::1/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&a), ip_of(&b));
        assert_ne!(ip_of(&a), ip_of(&c));
        let v4: Multiaddr = "/ip4/10.0.0.7/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&v4), Some("10.0.0.7".parse().unwrap()));
        let lo: Multiaddr = "/ip6/::1/tcp/1".parse().unwrap();
        assert!(ip_of(&lo).unwrap().is_loopback(), "loopback stays loopback");
    }
}
