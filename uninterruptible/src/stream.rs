//! The connection a handler receives.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// The address of the peer of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer. On a `[::]` listener an IPv4 client appears as an IPv4-mapped IPv6 address.
    Tcp(SocketAddr),
    /// A UNIX socket peer; its path, when it bound one (clients rarely do).
    Unix(Option<PathBuf>),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => addr.fmt(f),
            PeerAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

/// One client connection: TCP or UNIX, plain or TLS.
///
/// It is [`AsyncRead`] + [`AsyncWrite`] + `Unpin` + `Send`, so tokio's `AsyncReadExt` and
/// `AsyncWriteExt`, `tokio::io::split` and `BufReader` work on it. It is closed when dropped.
///
/// ```no_run
/// use tokio::io::AsyncWriteExt;
///
/// async fn hello(mut stream: uninterruptible::Stream) -> std::io::Result<()> {
///     let greeting = format!("hello {}\n", stream.peer_addr());
///     stream.write_all(greeting.as_bytes()).await
/// }
/// ```
pub struct Stream {
    io: Io,
    peer: PeerAddr,
}

pub(crate) enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn new(io: Io, peer: PeerAddr) -> Stream {
        Stream { io, peer }
    }

    /// The address of the client.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.io {
            Io::Tcp(_) => "tcp",
            Io::Unix(_) => "unix",
        };
        f.debug_struct("Stream")
            .field("kind", &kind)
            .field("peer", &self.peer)
            .finish()
    }
}

/// Forwards a poll call to whichever transport the stream holds.
macro_rules! forward {
    ($self:ident, $io:ident => $call:expr) => {
        match &mut $self.get_mut().io {
            Io::Tcp($io) => $call,
            Io::Unix($io) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        forward!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        forward!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        forward!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tcp(io) => io.is_write_vectored(),
            Io::Unix(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}
