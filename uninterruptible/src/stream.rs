//! The connection a handler receives.

use crate::shutdown::Shutdown;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;

pub use rustls_pki_types::CertificateDer;

/// The address of the peer of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer. On a `[::]` listener an IPv4 client appears as an IPv4-mapped IPv6 address.
    Tcp(SocketAddr),
    /// A UNIX socket peer; its path, when it bound one (clients rarely do).
    Unix(Option<PathBuf>),
    /// The sender of a UDP datagram ([`Datagram`](crate::Datagram)).
    Udp(SocketAddr),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) | PeerAddr::Udp(addr) => addr.fmt(f),
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
    /// The process's shutdown, for [`Stream::draining`].
    shutdown: Arc<Shutdown>,
}

pub(crate) enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
    // Boxed: a TLS session is large, and plain connections should not pay for it.
    TlsTcp(Box<TlsStream<TcpStream>>),
    TlsUnix(Box<TlsStream<UnixStream>>),
    /// A stream holding a `MAX_CONNECTIONS` permit (`Incoming` handlers only): boxed, so that
    /// every other stream stays the size it is.
    Limited(Box<Limited>),
}

pub(crate) struct Limited {
    stream: Stream,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    pub(crate) fn new(io: Io, peer: PeerAddr, shutdown: Arc<Shutdown>) -> Stream {
        Stream { io, peer, shutdown }
    }

    /// This stream, holding `permit` until it is dropped.
    pub(crate) fn holding(self, permit: Option<OwnedSemaphorePermit>) -> Stream {
        match permit {
            None => self,
            Some(permit) => Stream {
                peer: self.peer.clone(),
                shutdown: Arc::clone(&self.shutdown),
                io: Io::Limited(Box::new(Limited {
                    stream: self,
                    _permit: permit,
                })),
            },
        }
    }

    /// Completes when this process stops accepting (a new process took over, or `TERM`/`INT`
    /// arrived): the signal for a long-lived handler to finish its current exchange and close.
    /// See [`Draining`](crate::Draining).
    pub fn draining(&self) -> crate::Draining {
        self.shutdown.draining()
    }

    /// The address the connection came in on: which of the server's listeners accepted it.
    /// Read from the socket when asked, so a connection that never asks carries nothing more.
    pub fn local_addr(&self) -> io::Result<crate::BindAddress> {
        fn unix(addr: tokio::net::unix::SocketAddr) -> io::Result<crate::BindAddress> {
            addr.as_pathname()
                .map(|path| crate::BindAddress::Unix(path.to_owned()))
                .ok_or_else(|| io::Error::other("the UNIX socket has no path"))
        }
        match &self.io {
            Io::Tcp(tcp) => tcp.local_addr().map(crate::BindAddress::from),
            Io::Unix(socket) => unix(socket.local_addr()?),
            Io::TlsTcp(tls) => tls.get_ref().0.local_addr().map(crate::BindAddress::from),
            Io::TlsUnix(tls) => unix(tls.get_ref().0.local_addr()?),
            Io::Limited(limited) => limited.stream.local_addr(),
        }
    }

    /// The address of the client.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        match &self.io {
            Io::TlsTcp(_) | Io::TlsUnix(_) => true,
            Io::Tcp(_) | Io::Unix(_) => false,
            Io::Limited(limited) => limited.stream.is_tls(),
        }
    }

    /// The client's certificate chain, end-entity first, when it presented one. With
    /// `CLIENT_TLS_CERTIFICATE_CA` set, it has been verified against that CA.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.io {
            Io::TlsTcp(tls) => tls.get_ref().1.peer_certificates(),
            Io::TlsUnix(tls) => tls.get_ref().1.peer_certificates(),
            Io::Tcp(_) | Io::Unix(_) => None,
            Io::Limited(limited) => limited.stream.peer_certificates(),
        }
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut io = &self.io;
        while let Io::Limited(limited) = io {
            io = &limited.stream.io;
        }
        let kind = match io {
            Io::Tcp(_) => "tcp",
            Io::Unix(_) => "unix",
            Io::TlsTcp(_) => "tls over tcp",
            Io::TlsUnix(_) => "tls over unix",
            Io::Limited(_) => unreachable!(),
        };
        f.debug_struct("Stream")
            .field("kind", &kind)
            .field("peer", &self.peer)
            .finish()
    }
}

/// A TLS connection that the handler did not shut down still ends cleanly: the close_notify
/// alert, and anything not yet written, go out now if the socket takes them without waiting,
/// so the client sees a proper end of stream rather than a truncation.
impl Drop for Stream {
    fn drop(&mut self) {
        match &mut self.io {
            Io::TlsTcp(tls) => close_tls(tls.get_mut()),
            Io::TlsUnix(tls) => close_tls(tls.get_mut()),
            // The inner stream does it when it drops.
            Io::Tcp(_) | Io::Unix(_) | Io::Limited(_) => {}
        }
    }
}

/// A socket written without waiting.
trait TryWrite {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

impl TryWrite for TcpStream {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

impl TryWrite for UnixStream {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        UnixStream::try_write(self, buf)
    }
}

struct NoWait<'a, S>(&'a S);

impl<S: TryWrite> io::Write for NoWait<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn close_tls<S: TryWrite>((socket, session): (&mut S, &mut rustls::ServerConnection)) {
    session.send_close_notify();
    while session.wants_write() {
        match session.write_tls(&mut NoWait(&*socket)) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Forwards a poll call to whichever transport the stream holds.
macro_rules! forward {
    ($self:ident, $io:ident => $call:expr) => {
        match &mut $self.get_mut().io {
            Io::Tcp($io) => $call,
            Io::Unix($io) => $call,
            Io::TlsTcp($io) => $call,
            Io::TlsUnix($io) => $call,
            Io::Limited(limited) => {
                let $io = &mut limited.stream;
                $call
            }
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
            Io::TlsTcp(io) => io.is_write_vectored(),
            Io::TlsUnix(io) => io.is_write_vectored(),
            Io::Limited(limited) => limited.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}
