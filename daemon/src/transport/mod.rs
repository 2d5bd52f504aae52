//! The node's transport, built in one place for the node, the liar and the
//! raw-stream baseline (`lanseed-tests`): TCP with `nodelay`, the fleet
//! key's private network (pnet) when there is one, multistream-select
//! `V1Lazy`, noise, yamux with a bounded receive window ([`mux`]), and a
//! 20 s limit on the whole upgrade.

pub mod mux;

use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::{PeerId, Transport as _, identity, noise, pnet, tcp};

/// How long a connection may take to become usable (pnet, noise, yamux).
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// The transport of a node whose identity is `key`, behind the fleet key
/// `psk` when there is one.
pub fn build(
    key: &identity::Keypair,
    psk: Option<pnet::PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let base = match psk {
        Some(psk) => either::Either::Left(
            tcp.and_then(move |socket, _| pnet::PnetConfig::new(psk).handshake(socket)),
        ),
        None => either::Either::Right(tcp),
    };
    Ok(base
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(mux::Yamux::default())
        .timeout(UPGRADE_TIMEOUT)
        .boxed())
}
