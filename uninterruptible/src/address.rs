//! Where a server listens: parsed once, printed back the same way in logs and errors.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A listening address: `tcp://host:port`, `tcp://[v6]:port` or `unix:///absolute/path` for
/// connections; `udp://host:port`, `udp://[v6]:port` or `unixgram:///absolute/path` for datagrams
/// (served by a datagram handler, see [`Datagram`](crate::Datagram)).
///
/// Parsed with the grammar `BIND` and the attribute's `bind` use (a UNIX path is at most 107
/// bytes, the longest a socket address holds), and displayed the way it is written, so that
/// logs and errors can be pasted back into `BIND`.
///
/// ```
/// use uninterruptible::BindAddress;
///
/// let tcp: BindAddress = "tcp://[::1]:6789".parse().unwrap();
/// assert_eq!(tcp.to_string(), "tcp://[::1]:6789");
/// let unix: BindAddress = "unix:///run/echo.sock".parse().unwrap();
/// assert_eq!(unix, BindAddress::Unix("/run/echo.sock".into()));
/// assert!("tcp://127.0.0.1".parse::<BindAddress>().is_err());
/// let udp: BindAddress = "udp://0.0.0.0:53".parse().unwrap();
/// assert!(udp.is_datagram());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BindAddress {
    /// A TCP address. `host` is an IP address (IPv6 without brackets) or a name to resolve.
    Tcp {
        /// IP address or host name.
        host: String,
        /// Port; 0 asks the kernel for a free one.
        port: u16,
    },
    /// A UNIX socket at an absolute path.
    Unix(PathBuf),
    /// A UDP socket. `host` is as for [`BindAddress::Tcp`].
    Udp {
        /// IP address or host name.
        host: String,
        /// Port; 0 asks the kernel for a free one.
        port: u16,
    },
    /// A UNIX datagram socket at an absolute path.
    UnixDatagram(PathBuf),
}

/// Why a string is not a [`BindAddress`]: its `Display` says what is accepted.
///
/// ```
/// let error = "sctp://0.0.0.0:53".parse::<uninterruptible::BindAddress>().unwrap_err();
/// assert!(error.to_string().starts_with("expected tcp://host:port"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {}", uninterruptible_grammar::BIND)]
pub struct AddressParseError(());

impl FromStr for BindAddress {
    type Err = AddressParseError;

    /// The grammar the attribute checks `bind` literals with, so both accept the same.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uninterruptible_grammar::bind(s)
            .map(BindAddress::from_grammar)
            .map_err(|_| AddressParseError(()))
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            BindAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            BindAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            BindAddress::Udp { host, port } if host.contains(':') => {
                write!(f, "udp://[{host}]:{port}")
            }
            BindAddress::Udp { host, port } => write!(f, "udp://{host}:{port}"),
            BindAddress::UnixDatagram(path) => write!(f, "unixgram://{}", path.display()),
        }
    }
}

/// The TCP address of a socket, e.g. a listener's `local_addr()`.
impl From<SocketAddr> for BindAddress {
    fn from(addr: SocketAddr) -> Self {
        BindAddress::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl BindAddress {
    /// An address as the shared grammar parsed it. Not a `From` impl: the grammar crate is
    /// not part of the public API.
    pub(crate) fn from_grammar(address: uninterruptible_grammar::Address) -> Self {
        match address {
            uninterruptible_grammar::Address::Tcp(host, port) => BindAddress::Tcp { host, port },
            uninterruptible_grammar::Address::Unix(path) => BindAddress::Unix(PathBuf::from(path)),
            uninterruptible_grammar::Address::Udp(host, port) => BindAddress::Udp { host, port },
            uninterruptible_grammar::Address::UnixDatagram(path) => {
                BindAddress::UnixDatagram(PathBuf::from(path))
            }
        }
    }

    /// Whether this address takes datagrams (`udp://`, `unixgram://`) rather than connections.
    pub fn is_datagram(&self) -> bool {
        matches!(self, BindAddress::Udp { .. } | BindAddress::UnixDatagram(_))
    }

    /// The host and port of a `tcp://` or `udp://` address.
    pub(crate) fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            BindAddress::Tcp { host, port } | BindAddress::Udp { host, port } => {
                Some((host, *port))
            }
            _ => None,
        }
    }

    /// The path of a `unix://` or `unixgram://` address.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            BindAddress::Unix(path) | BindAddress::UnixDatagram(path) => Some(path),
            _ => None,
        }
    }

    /// The same address with another port; a UNIX address is returned unchanged.
    pub(crate) fn with_port(self, port: u16) -> Self {
        match self {
            BindAddress::Tcp { host, .. } => BindAddress::Tcp { host, port },
            BindAddress::Udp { host, .. } => BindAddress::Udp { host, port },
            unix => unix,
        }
    }

    /// The address of a UDP socket, e.g. its `local_addr()`.
    pub(crate) fn udp(addr: SocketAddr) -> Self {
        BindAddress::Udp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// Whether this address must be bound IPv6-only (`IPV6_V6ONLY`) beside the others of `all`.
    ///
    /// On Linux's default dual stack the IPv6 wildcard `[::]` takes IPv4 connections too, and so
    /// holds its port on every IPv4 address: an IPv4 address on the same port could not be bound
    /// beside it, in either order. When the list has one (by address, or a name that resolves to
    /// one), `[::]` takes IPv6 only and leaves IPv4 to it, as nginx and HAProxy do. Alone, `[::]`
    /// keeps the system's setting. Port 0 asks for a port of each socket's own: no clash.
    pub(crate) async fn needs_ipv6_only(&self, all: &[BindAddress]) -> bool {
        let Some((host, port)) = self.host_port() else {
            return false;
        };
        if port == 0 || host.parse::<Ipv6Addr>() != Ok(Ipv6Addr::UNSPECIFIED) {
            return false;
        }
        for other in all {
            // TCP and UDP ports are apart.
            if other.is_datagram() != self.is_datagram() {
                continue;
            }
            let Some((other, other_port)) = other.host_port() else {
                continue;
            };
            if other_port != port {
                continue;
            }
            let ipv4 = match other.parse::<IpAddr>() {
                // An IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`) is IPv4 traffic too.
                Ok(IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some(),
                Ok(ip) => ip.is_ipv4(),
                // Binding resolves the name the same way.
                Err(_) => tokio::net::lookup_host((other, port))
                    .await
                    .is_ok_and(|mut found| found.any(|a| a.is_ipv4())),
            };
            if ipv4 {
                return true;
            }
        }
        false
    }

    /// Whether a TCP or UDP socket (as this address is) bound at `actual` serves this address:
    /// the same IP (or, for a host name, one it resolves to) and the same port, where port 0
    /// matches any.
    pub(crate) async fn matches_ip(&self, actual: SocketAddr) -> bool {
        let Some((host, port)) = self.host_port() else {
            return false;
        };
        if port != 0 && port != actual.port() {
            return false;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ip == actual.ip();
        }
        match tokio::net::lookup_host((host, actual.port())).await {
            Ok(mut addrs) => addrs.any(|a| a.ip() == actual.ip()),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "tcp://127.0.0.1:6789",
            "tcp://0.0.0.0:0",
            "tcp://[::1]:80",
            "tcp://[::]:65535",
            "tcp://localhost:6789",
            "unix:///tmp/echo.sock",
        ] {
            assert_eq!(s.parse::<BindAddress>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "foo://x",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:",
            "tcp://127.0.0.1:99999",
            "tcp://:80",
            "tcp://::1:80",
            "tcp://[::1:80",
            "tcp://[nope]:80",
            "unix://relative",
            "unix://",
            "unix:///",
            "127.0.0.1:80",
        ] {
            assert!(s.parse::<BindAddress>().is_err(), "{s} should not parse");
        }
    }

    #[tokio::test]
    async fn the_ipv6_wildcard_is_ipv6_only_beside_ipv4_on_its_port() {
        let parse = |list: &str| -> Vec<BindAddress> {
            list.split(',').map(|a| a.trim().parse().unwrap()).collect()
        };
        for (list, expected) in [
            ("tcp://[::]:8080, tcp://0.0.0.0:8080", true),
            ("tcp://0.0.0.0:8080, tcp://[::]:8080", true),
            ("tcp://[::]:8080, tcp://127.0.0.1:8080", true),
            ("tcp://[::]:8080, tcp://localhost:8080", true),
            ("tcp://[::]:8080, tcp://[::ffff:127.0.0.1]:8080", true),
            ("tcp://[::ffff:0.0.0.0]:8080, tcp://[::]:8080", true),
            ("tcp://[::]:8080", false),
            ("tcp://[::]:8080, tcp://0.0.0.0:8081", false),
            (
                "tcp://[::]:8080, tcp://[::1]:8080, unix:///run/a.sock",
                false,
            ),
            ("tcp://[::]:0, tcp://0.0.0.0:0", false),
        ] {
            let all = parse(list);
            let wildcard = all
                .iter()
                .find(|a| a.to_string().starts_with("tcp://[::]"))
                .unwrap();
            assert_eq!(wildcard.needs_ipv6_only(&all).await, expected, "{list}");
            for other in all.iter().filter(|a| *a != wildcard) {
                assert!(!other.needs_ipv6_only(&all).await, "{other} in {list}");
            }
        }
    }

    #[test]
    fn with_port_keeps_host() {
        let a: BindAddress = "tcp://[::1]:1".parse().unwrap();
        assert_eq!(a.with_port(2).to_string(), "tcp://[::1]:2");
    }
}
