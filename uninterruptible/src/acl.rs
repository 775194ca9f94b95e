//! Network restrictions: checked right after accept, before any TLS byte, so a refused peer
//! costs nothing.

use ipnet::IpNet;
use std::net::IpAddr;

/// The networks allowed to connect.
#[derive(Clone, Debug)]
pub(crate) struct Acl {
    networks: Vec<IpNet>,
}

impl Acl {
    pub(crate) fn new(networks: Vec<IpNet>) -> Acl {
        Acl { networks }
    }

    /// Whether `peer` may connect. An IPv4-mapped IPv6 peer (an IPv4 client of a `[::]`
    /// listener) is matched as the IPv4 address it is.
    pub(crate) fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.networks.iter().any(|net| net.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(nets: &[&str]) -> Acl {
        Acl::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn matches_v4_v6_and_mapped_peers() {
        let acl = acl(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        for allowed in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "192.0.2.7"] {
            assert!(acl.allows(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in [
            "11.0.0.1",
            "::ffff:11.0.0.1",
            "2001:db9::1",
            "192.0.2.8",
            "::1",
        ] {
            assert!(!acl.allows(refused.parse().unwrap()), "{refused}");
        }
    }
}
