//! Listening sockets: bound fresh, or adopted from a file descriptor handed over by the old process.
//! Datagram sockets (`udp://`, `unixgram://`) are listeners here too: bound, handed over and
//! adopted the same way, and read rather than accepted from ([`crate::datagram`]).

use crate::address::BindAddress;
use crate::error::Error;
use crate::stream::{Io, PeerAddr};
use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, setsockopt,
    sockopt,
};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, TcpSocket, UdpSocket, UnixDatagram, UnixListener};

/// A listening TCP or UNIX socket, or a UDP or UNIX datagram socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    Udp(UdpSocket),
    UnixDatagram(UnixDatagram),
}

impl Listener {
    /// Binds `address` with a listen queue of `backlog`; IPv6 only (`IPV6_V6ONLY`) with
    /// `ipv6_only` (see [`BindAddress::needs_ipv6_only`]). A UNIX path that a live server answers
    /// on is an error; a stale socket file (nobody answers) is replaced; any other file is left
    /// alone and is an error.
    pub(crate) async fn bind(
        address: &BindAddress,
        backlog: u32,
        ipv6_only: bool,
    ) -> Result<Listener, Error> {
        let fail = |source: io::Error| Error::Bind {
            address: address.to_string(),
            source,
        };
        let listener = match address {
            BindAddress::Tcp { host, port } if ipv6_only => bind_ipv6_only(host, *port)
                .map(Listener::Tcp)
                .map_err(fail)?,
            BindAddress::Tcp { host, port } => TcpListener::bind((host.as_str(), *port))
                .await
                .map(Listener::Tcp)
                .map_err(fail)?,
            BindAddress::Unix(path) => {
                clear_stale_socket(path).map_err(fail)?;
                UnixListener::bind(path).map(Listener::Unix).map_err(fail)?
            }
            BindAddress::Udp { host, port } => {
                return bind_udp(host, *port, ipv6_only)
                    .await
                    .map(Listener::Udp)
                    .map_err(fail);
            }
            BindAddress::UnixDatagram(path) => {
                clear_stale_socket(path).map_err(fail)?;
                return UnixDatagram::bind(path)
                    .map(Listener::UnixDatagram)
                    .map_err(fail);
            }
        };
        // tokio listens with a queue of 128 for TCP: a burst of clients beyond it has its SYNs
        // dropped and waits a second for the retransmit. Listening again only sets the length.
        listener.listen(backlog).map_err(|e| {
            fail(io::Error::new(
                e.kind(),
                format!("cannot set the listen queue length to {backlog}: {e}"),
            ))
        })?;
        Ok(listener)
    }

    fn listen(&self, backlog: u32) -> io::Result<()> {
        let fd = match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Udp(_) | Listener::UnixDatagram(_) => return Ok(()),
        };
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        // SAFETY: `fd` is a socket this listener owns and keeps open for the call. (nix's
        // `Backlog` stops at the C library's SOMAXCONN, below what Linux allows.)
        if unsafe { nix::libc::listen(fd, backlog) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Takes over a listening socket (or a datagram socket) received from another process.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())?.family();
        if getsockopt(&fd, sockopt::SockType)? == SockType::Datagram {
            return match family {
                Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                    let std = std::net::UdpSocket::from(fd);
                    std.set_nonblocking(true)?;
                    UdpSocket::from_std(std).map(Listener::Udp)
                }
                Some(AddressFamily::Unix) => {
                    let std = std::os::unix::net::UnixDatagram::from(fd);
                    std.set_nonblocking(true)?;
                    UnixDatagram::from_std(std).map(Listener::UnixDatagram)
                }
                other => Err(io::Error::other(format!(
                    "the received datagram socket has an unsupported family {other:?}"
                ))),
            };
        }
        if !getsockopt(&fd, sockopt::AcceptConn)? {
            return Err(io::Error::other("the received socket is not listening"));
        }
        match family {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true)?;
                TcpListener::from_std(std).map(Listener::Tcp)
            }
            Some(AddressFamily::Unix) => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true)?;
                UnixListener::from_std(std).map(Listener::Unix)
            }
            other => Err(io::Error::other(format!(
                "the received socket has an unsupported family {other:?}"
            ))),
        }
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub(crate) fn local_addr(&self) -> io::Result<BindAddress> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(BindAddress::from),
            Listener::Unix(l) => {
                let addr = l.local_addr()?;
                let path = addr
                    .as_pathname()
                    .ok_or_else(|| io::Error::other("the UNIX socket has no path"))?;
                Ok(BindAddress::Unix(path.to_owned()))
            }
            Listener::Udp(s) => s.local_addr().map(BindAddress::udp),
            Listener::UnixDatagram(s) => {
                let addr = s.local_addr()?;
                let path = addr
                    .as_pathname()
                    .ok_or_else(|| io::Error::other("the UNIX datagram socket has no path"))?;
                Ok(BindAddress::UnixDatagram(path.to_owned()))
            }
        }
    }

    /// Whether this socket takes datagrams: it is read, not accepted from.
    pub(crate) fn is_datagram(&self) -> bool {
        matches!(self, Listener::Udp(_) | Listener::UnixDatagram(_))
    }

    /// Whether this is a dual-stack IPv6 wildcard socket on `port`: it takes IPv4 connections
    /// too, and holds the port on every IPv4 address. Such a socket taken over keeps its
    /// setting (it cannot change once bound).
    pub(crate) fn takes_ipv4_on(&self, port: u16) -> bool {
        let Listener::Tcp(listener) = self else {
            return false;
        };
        listener
            .local_addr()
            .is_ok_and(|a| a.port() == port && a.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED))
            && getsockopt(listener, sockopt::Ipv6V6Only).is_ok_and(|only| !only)
    }

    /// Whether this socket serves `wanted`, so that a new process can adopt it.
    pub(crate) async fn serves(&self, wanted: &BindAddress) -> bool {
        match (self, wanted) {
            (Listener::Tcp(l), BindAddress::Tcp { .. }) => match l.local_addr() {
                Ok(actual) => wanted.matches_ip(actual).await,
                Err(_) => false,
            },
            (Listener::Udp(s), BindAddress::Udp { .. }) => match s.local_addr() {
                Ok(actual) => wanted.matches_ip(actual).await,
                Err(_) => false,
            },
            (Listener::Unix(_), BindAddress::Unix(_))
            | (Listener::UnixDatagram(_), BindAddress::UnixDatagram(_)) => {
                self.local_addr().is_ok_and(|actual| &actual == wanted)
            }
            _ => false,
        }
    }

    /// A second descriptor for the same socket (close-on-exec), to hand over.
    pub(crate) fn duplicate(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Listener::Unix(l) => l.as_fd().try_clone_to_owned(),
            Listener::Udp(s) => s.as_fd().try_clone_to_owned(),
            Listener::UnixDatagram(s) => s.as_fd().try_clone_to_owned(),
        }
    }

    /// A connection already queued, without waiting: `None` when there is none (or the socket
    /// takes no connections: a datagram socket).
    pub(crate) fn try_accept(&self) -> Option<(Io, PeerAddr)> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let fd = match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Udp(_) | Listener::UnixDatagram(_) => return None,
        };
        loop {
            let flags = nix::sys::socket::SockFlag::SOCK_CLOEXEC
                | nix::sys::socket::SockFlag::SOCK_NONBLOCK;
            match nix::sys::socket::accept4(fd, flags) {
                Ok(conn) => {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
                    match self {
                        Listener::Tcp(_) => {
                            let std = std::net::TcpStream::from(conn);
                            let peer = std.peer_addr().ok()?;
                            let stream = tokio::net::TcpStream::from_std(std).ok()?;
                            return Some((Io::Tcp(stream), PeerAddr::Tcp(peer)));
                        }
                        _ => {
                            let std = std::os::unix::net::UnixStream::from(conn);
                            let path = std
                                .peer_addr()
                                .ok()
                                .and_then(|a| a.as_pathname().map(Path::to_path_buf));
                            let stream = tokio::net::UnixStream::from_std(std).ok()?;
                            return Some((Io::Unix(stream), PeerAddr::Unix(path)));
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
                Err(_) => return None,
            }
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<(Io, PeerAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                Ok((Io::Tcp(stream), PeerAddr::Tcp(peer)))
            }
            Listener::Unix(l) => {
                let (stream, peer) = l.accept().await?;
                let path = peer.as_pathname().map(Path::to_path_buf);
                Ok((Io::Unix(stream), PeerAddr::Unix(path)))
            }
            // Read by the datagram loop, never accepted from.
            Listener::Udp(_) | Listener::UnixDatagram(_) => std::future::pending().await,
        }
    }
}

/// A UDP socket on `host:port`; IPv6 only with `ipv6_only` (as [`bind_ipv6_only`]).
async fn bind_udp(host: &str, port: u16, ipv6_only: bool) -> io::Result<UdpSocket> {
    if !ipv6_only {
        return UdpSocket::bind((host, port)).await;
    }
    let ip: Ipv6Addr = host
        .parse()
        .map_err(|_| io::Error::other("not an IPv6 address"))?;
    let fd = nix::sys::socket::socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    let address = nix::sys::socket::SockaddrIn6::from(std::net::SocketAddrV6::new(ip, port, 0, 0));
    nix::sys::socket::bind(fd.as_raw_fd(), &address)?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

/// A TCP socket on the IPv6 address `host` that takes no IPv4 connections, so that IPv4
/// addresses keep the port for sockets of their own.
fn bind_ipv6_only(host: &str, port: u16) -> io::Result<TcpListener> {
    let ip: Ipv6Addr = host
        .parse()
        .map_err(|_| io::Error::other("not an IPv6 address"))?;
    let socket = TcpSocket::new_v6()?;
    // As `TcpListener::bind` does: a restarted server binds again while old connections linger.
    socket.set_reuseaddr(true)?;
    setsockopt(&socket, sockopt::Ipv6V6Only, &true)?;
    socket.bind(SocketAddr::from((ip, port)))?;
    // The caller sets the queue's real length.
    socket.listen(128)
}

pub(crate) fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket (left as it is)",
        ));
    }
    let answered = match std::os::unix::net::UnixStream::connect(path) {
        // A datagram socket's file: a stream cannot connect to it (EPROTOTYPE), a datagram can.
        Err(e) if e.raw_os_error() == Some(nix::libc::EPROTOTYPE) => {
            std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(path))
        }
        other => other.map(drop),
    };
    match answered {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a server is already answering on this socket; stop it or choose another path",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot remove the stale socket file: {e}"),
                )
            })
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot check whether a server answers on it: {e}"),
        )),
    }
}

/// A UNIX socket file this process bound or adopted: removed on final exit, only if the path
/// still names the same file (a newer server may have replaced it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

/// The socket files whose identity this process knows: those it saw as it bound them, and those
/// the old process handed over with the sockets (what it bound, or was handed in turn). A socket
/// file is known by the process that bound it, just after it did, never by what is at the path
/// later: another server may have put its own there meanwhile.
static KNOWN: std::sync::Mutex<Vec<SocketFile>> = std::sync::Mutex::new(Vec::new());

fn known() -> std::sync::MutexGuard<'static, Vec<SocketFile>> {
    KNOWN.lock().unwrap_or_else(|e| e.into_inner())
}

impl SocketFile {
    /// The socket file at `address`'s path: as this process first knew it (it bound it, or the
    /// old process said what it was), else as it is now. `None` when there is none, or the
    /// path names something else (a file put in its place is never taken for it, nor removed).
    pub(crate) fn of(address: &BindAddress) -> Option<SocketFile> {
        let path = address.path()?;
        let mut known = known();
        if let Some(file) = known.iter().find(|file| file.path == path) {
            return Some(file.clone());
        }
        let meta = std::fs::symlink_metadata(path)
            .ok()
            .filter(|meta| meta.file_type().is_socket())?;
        let file = SocketFile {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        };
        known.push(file.clone());
        Some(file)
    }

    /// The socket file this process has just bound at `address`'s path: known from now on as
    /// it is now, whatever was known of the path before.
    pub(crate) fn bound(address: &BindAddress) -> Option<SocketFile> {
        let path = address.path()?;
        known().retain(|file| file.path != path);
        SocketFile::of(address)
    }

    /// Whether this process knows a socket file, to hand over with the state.
    pub(crate) fn any_known() -> bool {
        !known().is_empty()
    }

    /// The socket files this process knows, to hand to a new process: `dev ino path` a line.
    pub(crate) fn encode_known() -> Vec<u8> {
        let mut out = String::new();
        for file in known().iter() {
            let Some(path) = file.path.to_str().filter(|p| !p.contains('\n')) else {
                continue;
            };
            out.push_str(&format!("{} {} {path}\n", file.identity.0, file.identity.1));
        }
        out.into_bytes()
    }

    /// Takes what the old process knew of its socket files ([`SocketFile::encode_known`]).
    pub(crate) fn adopt_known(encoded: &[u8]) {
        let text = String::from_utf8_lossy(encoded);
        let mut known = known();
        for line in text.lines() {
            let mut fields = line.splitn(3, ' ');
            let parsed = (|| {
                let dev = fields.next()?.parse().ok()?;
                let ino = fields.next()?.parse().ok()?;
                let path = PathBuf::from(fields.next()?);
                Some(SocketFile {
                    path,
                    identity: (dev, ino),
                })
            })();
            if let Some(file) = parsed {
                known.retain(|other| other.path != file.path);
                known.push(file);
            }
        }
    }

    pub(crate) fn remove_if_ours(&self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|meta| {
            meta.file_type().is_socket() && (meta.dev(), meta.ino()) == self.identity
        });
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!("cannot remove socket file {}: {e}", self.path.display());
            }
        }
    }
}

/// The UNIX socket files of a process's listeners, and whether they are its to remove: the one
/// place that decides.
///
/// A process removes them when it is the last of the service: it bound them, or the old process
/// let go of them (its verdict). Never when a service manager or a supervisor holds them
/// (`keep`), nor while the old process may still take them back, nor after it did (an abandoned
/// restart).
#[derive(Debug)]
pub(crate) struct SocketFiles {
    files: Vec<SocketFile>,
    /// A service manager's or a supervisor's: never removed by this process.
    keep: bool,
    owned: bool,
}

impl SocketFiles {
    /// The files of `addresses`; `taken_over`: the old process owns them until it lets go.
    pub(crate) fn new(addresses: &[BindAddress], keep: bool, taken_over: bool) -> SocketFiles {
        SocketFiles {
            files: addresses.iter().filter_map(SocketFile::of).collect(),
            keep,
            owned: !keep && !taken_over,
        }
    }

    /// Those this process would remove now, if it failed at start-up.
    pub(crate) fn owned(&self) -> &[SocketFile] {
        if self.owned { &self.files } else { &[] }
    }

    /// The old process's verdict: it let go (`committed`), or took everything back.
    pub(crate) fn verdict(&mut self, committed: bool) {
        self.owned = committed && !self.keep;
    }

    /// Removes them, if they are this process's and still the files it knew.
    pub(crate) fn remove(&self) {
        for file in self.owned() {
            file.remove_if_ours();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_live_stale_and_foreign_paths() {
        let dir =
            std::env::temp_dir().join(format!("uninterruptible-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let address = BindAddress::Unix(path.clone());

        let live = Listener::bind(&address, 16, false).await.unwrap();
        let err = Listener::bind(&address, 16, false)
            .await
            .unwrap_err()
            .report();
        assert!(err.contains("already answering"), "{err}");
        drop(live); // leaves a stale file behind
        let again = Listener::bind(&address, 16, false).await.unwrap();
        let file = SocketFile::of(&address).unwrap();
        drop(again);
        file.remove_if_ours();
        assert!(!path.exists());

        // A file in a socket's place is not taken for it.
        std::fs::write(&path, b"not a socket").unwrap();
        let other = BindAddress::Unix(dir.join("other.sock"));
        std::fs::write(dir.join("other.sock"), b"not a socket").unwrap();
        assert!(SocketFile::of(&other).is_none());
        let err = Listener::bind(&address, 16, false)
            .await
            .unwrap_err()
            .report();
        assert!(err.contains("not a socket"), "{err}");
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_ipv6_only_wildcard_leaves_the_port_to_ipv4() {
        let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
            println!("skipped: no IPv6 loopback");
            return;
        };
        drop(probe);
        let v4 = Listener::bind(&"tcp://0.0.0.0:0".parse().unwrap(), 16, false)
            .await
            .unwrap();
        let BindAddress::Tcp { port, .. } = v4.local_addr().unwrap() else {
            unreachable!()
        };
        let v6: BindAddress = format!("tcp://[::]:{port}").parse().unwrap();
        let dual = Listener::bind(&v6, 16, false).await.unwrap_err().report();
        assert!(dual.contains("in use"), "{dual}");
        let v6 = Listener::bind(&v6, 16, true).await.unwrap();
        assert!(!v6.takes_ipv4_on(port));
        drop((v4, v6));
        let dual = Listener::bind(&"tcp://[::]:0".parse().unwrap(), 16, false)
            .await
            .unwrap();
        let BindAddress::Tcp { port, .. } = dual.local_addr().unwrap() else {
            unreachable!()
        };
        // The system's default, dual stack here unless net.ipv6.bindv6only says otherwise.
        let system = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only");
        assert_eq!(
            dual.takes_ipv4_on(port),
            system.is_ok_and(|s| s.trim() == "0")
        );
    }

    #[tokio::test]
    async fn adopts_a_duplicated_tcp_socket() {
        let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap(), 16, false)
            .await
            .unwrap();
        let adopted = Listener::from_fd(listener.duplicate().unwrap()).unwrap();
        assert_eq!(
            adopted.local_addr().unwrap(),
            listener.local_addr().unwrap()
        );
        assert!(adopted.serves(&"tcp://127.0.0.1:0".parse().unwrap()).await);
        assert!(!adopted.serves(&"tcp://127.0.0.2:0".parse().unwrap()).await);
        assert!(!adopted.serves(&"unix:///tmp/x".parse().unwrap()).await);
    }
}
