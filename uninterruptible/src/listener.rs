//! Listening sockets: bound fresh, or adopted from a file descriptor handed over by the old process.

use crate::address::BindAddress;
use crate::error::Error;
use crate::stream::{Io, PeerAddr};
use nix::sys::socket::{
    AddressFamily, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, UnixListener};

/// A listening TCP or UNIX socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `address` with a listen queue of `backlog`. A UNIX path that a live server answers
    /// on is an error; a stale socket file (nobody answers) is replaced; any other file is left
    /// alone and is an error.
    pub(crate) async fn bind(address: &BindAddress, backlog: u32) -> Result<Listener, Error> {
        let fail = |source: io::Error| Error::Bind {
            address: address.to_string(),
            source,
        };
        let listener = match address {
            BindAddress::Tcp { host, port } => TcpListener::bind((host.as_str(), *port))
                .await
                .map(Listener::Tcp)
                .map_err(fail)?,
            BindAddress::Unix(path) => {
                clear_stale_socket(path).map_err(fail)?;
                UnixListener::bind(path).map(Listener::Unix).map_err(fail)?
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

    /// Takes over a listening socket received from another process.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        if !getsockopt(&fd, sockopt::AcceptConn)? {
            return Err(io::Error::other("the received socket is not listening"));
        }
        let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())?.family();
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
        }
    }

    /// Whether this socket serves `wanted`, so that a new process can adopt it.
    pub(crate) async fn serves(&self, wanted: &BindAddress) -> bool {
        match (self, wanted) {
            (Listener::Tcp(l), BindAddress::Tcp { .. }) => match l.local_addr() {
                Ok(actual) => wanted.matches_tcp(actual).await,
                Err(_) => false,
            },
            (Listener::Unix(_), BindAddress::Unix(_)) => {
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
        }
    }
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
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
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
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl SocketFile {
    pub(crate) fn of(address: &BindAddress) -> Option<SocketFile> {
        let BindAddress::Unix(path) = address else {
            return None;
        };
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.clone(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub(crate) fn remove_if_ours(&self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!("cannot remove socket file {}: {e}", self.path.display());
            }
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

        let live = Listener::bind(&address, 16).await.unwrap();
        let err = Listener::bind(&address, 16).await.unwrap_err().report();
        assert!(err.contains("already answering"), "{err}");
        drop(live); // leaves a stale file behind
        let again = Listener::bind(&address, 16).await.unwrap();
        let file = SocketFile::of(&address).unwrap();
        drop(again);
        file.remove_if_ours();
        assert!(!path.exists());

        std::fs::write(&path, b"not a socket").unwrap();
        let err = Listener::bind(&address, 16).await.unwrap_err().report();
        assert!(err.contains("not a socket"), "{err}");
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn adopts_a_duplicated_tcp_socket() {
        let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap(), 16)
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
