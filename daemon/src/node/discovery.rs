//! mDNS discovery with mdns-sd: the node registers `_lanseed._udp.local.`
//! with its peer id in the TXT record, browses for others, and hands every
//! resolution (peer id and addresses) to the node, which dials and checks
//! the peer id in the noise handshake.
//!
//! Known pitfalls handled: a first resolution often carries only an IPv6
//! link-local address and a fuller one follows within tens of
//! milliseconds, so every resolution is passed on (the node merges them);
//! link-local IPv6 addresses are skipped (they need a scope to dial); the
//! record is unregistered on shutdown so it does not linger.

use std::net::IpAddr;

use libp2p::{Multiaddr, PeerId};
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

/// The service type lanseed nodes register.
pub const SERVICE_TYPE: &str = "_lanseed._udp.local.";

/// A peer seen over mDNS.
#[derive(Debug)]
pub struct Found {
    /// Its peer id, from the TXT record.
    pub peer: PeerId,
    /// Addresses to dial.
    pub addrs: Vec<Multiaddr>,
}

/// A running registration and browser.
pub struct Discovery {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Discovery {
    /// Registers `peer` on TCP `port` and starts browsing; found peers go
    /// to `found`. With `interface`, only that interface is used.
    pub fn start(
        peer: PeerId,
        port: u16,
        interface: Option<&str>,
        found: mpsc::UnboundedSender<Found>,
    ) -> anyhow::Result<Discovery> {
        let daemon = ServiceDaemon::new()?;
        if let Some(name) = interface {
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::Name(name.to_owned()))?;
        }
        let id = peer.to_string();
        let host = format!("{}.local.", &id[id.len().saturating_sub(16)..]);
        let props = [("peer", id.as_str()), ("v", "1")];
        let info =
            ServiceInfo::new(SERVICE_TYPE, &id, &host, "", port, &props[..])?.enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        daemon.register(info)?;
        let events = daemon.browse(SERVICE_TYPE)?;
        tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                let ServiceEvent::ServiceResolved(svc) = event else {
                    continue;
                };
                let Some(found_peer) = svc
                    .txt_properties
                    .get_property_val_str("peer")
                    .and_then(|p| p.parse::<PeerId>().ok())
                else {
                    continue;
                };
                if found_peer == peer {
                    continue;
                }
                let addrs: Vec<Multiaddr> = svc
                    .addresses
                    .iter()
                    .map(|a| a.to_ip_addr())
                    .filter(|ip| !is_link_local_v6(ip))
                    .map(|ip| {
                        let mut m = Multiaddr::from(ip);
                        m.push(libp2p::multiaddr::Protocol::Tcp(svc.port));
                        m
                    })
                    .collect();
                if !addrs.is_empty()
                    && found
                        .send(Found {
                            peer: found_peer,
                            addrs,
                        })
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok(Discovery { daemon, fullname })
    }

    /// Unregisters the record and stops the daemon.
    pub fn stop(self) {
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}
