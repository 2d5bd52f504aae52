//! How the demo's nodes find each other while staying on loopback: mDNS
//! on the loopback interface only, where it carries multicast; otherwise
//! (most Linux systems leave `lo` without the MULTICAST flag) `--peer` to
//! the nodes started before, with mDNS off. Either way every node listens
//! on 127.0.0.1 only.

use serde::Serialize;

/// The loopback interface.
pub const LOOPBACK: &str = "lo";

/// `IFF_MULTICAST` in `/sys/class/net/IF/flags`.
const IFF_MULTICAST: u32 = 0x1000;

/// How the nodes find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// mDNS on `lo` only.
    Mdns,
    /// `--peer` addresses, mDNS off.
    Peer,
}

impl Discovery {
    /// The choice for loopback's flags (`None`: unknown, e.g. no sysfs).
    pub fn for_flags(flags: Option<u32>) -> Discovery {
        match flags {
            Some(f) if f & IFF_MULTICAST != 0 => Discovery::Mdns,
            _ => Discovery::Peer,
        }
    }

    /// The choice for this machine.
    pub fn detect() -> Discovery {
        let flags = std::fs::read_to_string(format!("/sys/class/net/{LOOPBACK}/flags"))
            .ok()
            .and_then(|t| parse_flags(&t));
        Discovery::for_flags(flags)
    }

    /// The discovery flags of a node, given the p2p addresses of the
    /// nodes started before it.
    pub fn node_args(self, earlier: &[String]) -> Vec<String> {
        match self {
            Discovery::Mdns => vec!["--mdns-interface".into(), LOOPBACK.into()],
            Discovery::Peer => {
                let mut args = vec!["--no-mdns".to_owned()];
                for addr in earlier {
                    args.push("--peer".into());
                    args.push(addr.clone());
                }
                args
            }
        }
    }

    /// One sentence for people.
    pub fn describe(self) -> String {
        match self {
            Discovery::Mdns => {
                format!("The nodes found each other over mDNS on `{LOOPBACK}` only.")
            }
            Discovery::Peer => format!(
                "`{LOOPBACK}` has no MULTICAST flag here, so mDNS cannot run on it: each node was given the ones started before it with --peer instead."
            ),
        }
    }
}

/// Reads `0x1009`-style interface flags.
fn parse_flags(text: &str) -> Option<u32> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").unwrap_or(t);
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicast_on_loopback_means_mdns() {
        assert_eq!(parse_flags("0x1009\n"), Some(0x1009));
        assert_eq!(Discovery::for_flags(Some(0x1009)), Discovery::Mdns);
    }

    #[test]
    fn without_it_or_unknown_the_nodes_dial_each_other() {
        assert_eq!(parse_flags("0x9"), Some(0x9));
        assert_eq!(Discovery::for_flags(Some(0x9)), Discovery::Peer);
        assert_eq!(Discovery::for_flags(parse_flags("junk")), Discovery::Peer);
        assert_eq!(Discovery::for_flags(None), Discovery::Peer);
    }

    #[test]
    fn flags_per_mode() {
        let earlier = vec!["/ip4/127.0.0.1/tcp/1/p2p/x".to_owned()];
        assert_eq!(
            Discovery::Mdns.node_args(&earlier),
            ["--mdns-interface", "lo"]
        );
        assert_eq!(
            Discovery::Peer.node_args(&earlier),
            ["--no-mdns", "--peer", "/ip4/127.0.0.1/tcp/1/p2p/x"]
        );
        assert_eq!(Discovery::Peer.node_args(&[]), ["--no-mdns"]);
    }
}
