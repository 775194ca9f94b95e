//! Datagram listeners (`udp://`, `unixgram://`): the library reads each socket, and a handler
//! answers each datagram on a task of its own.
//!
//! The library, not the handler, owns the read: a restart hands the same socket to the new
//! process, both read it while the new one starts, and the old one stops reading the moment it
//! stops accepting (once the new one is ready), so every datagram is read by exactly one of
//! them. The old process then waits, as for connections, for the handlers still running: the
//! replies it owes. A handler that read the socket itself could not be stopped between two
//! reads without losing the datagram it was reading.

use crate::acl::Acl;
use crate::drain::Draining;
use crate::handler::HandlerOutput;
use crate::listener::Listener;
use crate::shutdown::Shutdown;
use crate::stream::PeerAddr;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// How many datagrams are handled at once at most without `MAX_CONNECTIONS`: past it the
/// socket is not read until one is done, and the kernel's receive queue holds the rest (and
/// drops what overflows it, as it does for any datagram socket nobody reads fast enough).
pub(crate) const DEFAULT_IN_FLIGHT: usize = 1024;
/// The largest datagram read: a UDP datagram's payload is at most 65 507 bytes; a UNIX one
/// may be larger (up to the sender's `SO_SNDBUF`), and is cut to this length.
const MAX_DATAGRAM: usize = 256 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One datagram received on a `udp://` or `unixgram://` listener, given to a datagram handler
/// (`async fn(uninterruptible::Datagram) -> std::io::Result<()>`), with the socket it came on to
/// answer it.
///
/// ```no_run
/// #[uninterruptible::server(bind = "udp://127.0.0.1:6799")]
/// async fn echo(datagram: uninterruptible::Datagram) -> std::io::Result<()> {
///     datagram.reply(datagram.data()).await
/// }
/// ```
///
/// Each datagram is handled on a task of its own, at most `MAX_CONNECTIONS` at once (1024
/// without it); a process that drains waits for the handlers still running, as for
/// connections, and counts them as its connections in `status`.
#[derive(Debug)]
pub struct Datagram {
    data: Vec<u8>,
    peer: PeerAddr,
    socket: Arc<Socket>,
    shutdown: Arc<Shutdown>,
}

impl Datagram {
    /// The datagram's bytes (at most 65 507 over UDP; a UNIX datagram longer than 256 KiB is
    /// cut to 256 KiB).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The datagram's bytes, owned.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// Who sent it: [`PeerAddr::Udp`], or [`PeerAddr::Unix`] with the sender's path when it
    /// bound one.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    /// Sends `data` back to the sender, from the socket the datagram came on, as one datagram.
    ///
    /// # Errors
    ///
    /// The socket's error (a datagram too long for it: `EMSGSIZE`); for a UNIX sender that
    /// bound no path, an error of kind [`NotConnected`](io::ErrorKind::NotConnected): nothing
    /// can reach it; for a UNIX sender whose receive queue is full (it does not read), an error
    /// of kind [`WouldBlock`](io::ErrorKind::WouldBlock): the reply is dropped, as UDP drops a
    /// datagram to a full queue. (Linux never says when such a queue has room again, so waiting
    /// for it would let one client that does not read hold every place, and every drain.)
    pub async fn reply(&self, data: &[u8]) -> io::Result<()> {
        let sent = match (&*self.socket, &self.peer) {
            (Socket::Udp(socket), PeerAddr::Udp(peer)) => socket.send_to(data, peer).await?,
            (Socket::Unix(socket), PeerAddr::Unix(Some(path))) => {
                socket.try_send_to(data, path).map_err(|e| match e.kind() {
                    io::ErrorKind::WouldBlock => io::Error::new(
                        e.kind(),
                        format!("the receive queue of {} is full (it does not read): the reply is dropped", path.display()),
                    ),
                    _ => e,
                })?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the sender's UNIX socket has no path (it did not bind one): no reply can reach it",
                ));
            }
        };
        if sent < data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of the reply's {} bytes", data.len()),
            ));
        }
        Ok(())
    }

    /// Completes when this process begins to drain: it reads no more datagrams, and waits for
    /// the handlers still running.
    pub fn draining(&self) -> Draining {
        self.shutdown.draining()
    }
}

/// A datagram socket, shared by its read loop and the datagrams it read (to reply).
#[derive(Debug)]
enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Socket {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        match self {
            Socket::Udp(socket) => {
                let (n, peer) = socket.recv_from(buf).await?;
                Ok((n, PeerAddr::Udp(peer)))
            }
            Socket::Unix(socket) => {
                let (n, peer) = socket.recv_from(buf).await?;
                let path = peer.as_pathname().map(Path::to_path_buf);
                Ok((n, PeerAddr::Unix(path)))
            }
        }
    }
}

/// A datagram handler, boxed: it is made once per process, and each datagram's task is boxed.
#[derive(Clone)]
pub(crate) struct DatagramHandler(Arc<HandleDatagram>);

type HandleDatagram = dyn Fn(Datagram) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

impl std::fmt::Debug for DatagramHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatagramHandler")
    }
}

/// Boxes an `async fn(Datagram)`; its error is logged at debug level with the sender, as a
/// connection's is.
pub(crate) fn boxed<D, F, O>(handler: D) -> DatagramHandler
where
    D: Fn(Datagram) -> F + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    DatagramHandler(Arc::new(move |datagram: Datagram| {
        let peer = datagram.peer.clone();
        let handled = handler(datagram);
        Box::pin(async move {
            if let Err(e) = handled.await.into_result() {
                tracing::debug!(%peer, "datagram handler error: {e}");
            }
        })
    }))
}

/// What every datagram socket of one process shares.
#[derive(Clone, Debug)]
pub(crate) struct Reader {
    pub(crate) handler: DatagramHandler,
    pub(crate) shutdown: Arc<Shutdown>,
    /// A permit per datagram being handled.
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) acl: Option<Acl>,
}

impl Reader {
    /// Starts reading `listener` (a datagram socket) on a task of its own, until it is
    /// aborted.
    pub(crate) fn start(&self, listener: Listener) -> JoinHandle<()> {
        let socket = match listener {
            Listener::Udp(socket) => Socket::Udp(socket),
            Listener::UnixDatagram(socket) => Socket::Unix(socket),
            Listener::Tcp(_) | Listener::Unix(_) => unreachable!("only datagram sockets are read"),
        };
        tokio::spawn(self.clone().read(Arc::new(socket)))
    }

    /// Reads until aborted. Between taking a datagram off the socket and spawning its task
    /// there is no await, so an abort never loses one (`recv_from` is cancel-safe).
    async fn read(self, socket: Arc<Socket>) {
        let mut buf = vec![0; MAX_DATAGRAM];
        let mut backoff = MIN_BACKOFF;
        loop {
            // Never closed.
            let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
                return;
            };
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(received) => {
                    backoff = MIN_BACKOFF;
                    received
                }
                Err(e) => {
                    // ENOMEM, ENOBUFS: retry later rather than spin.
                    tracing::error!("datagram receive failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if let (Some(acl), PeerAddr::Udp(addr)) = (&self.acl, &peer) {
                if !acl.allows(addr.ip()) {
                    tracing::debug!(%peer, "datagram dropped: not in ALLOWED_NETWORKS");
                    continue;
                }
            }
            let datagram = Datagram {
                data: buf[..n].to_vec(),
                peer,
                socket: Arc::clone(&socket),
                shutdown: Arc::clone(&self.shutdown),
            };
            let held = (self.shutdown.guard(), permit);
            let handled = (self.handler.0)(datagram);
            tokio::spawn(async move {
                handled.await;
                drop(held);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(handler: DatagramHandler, in_flight: usize) -> Reader {
        Reader {
            handler,
            shutdown: Arc::new(Shutdown::new()),
            in_flight: Arc::new(Semaphore::new(in_flight)),
            acl: None,
        }
    }

    #[tokio::test]
    async fn each_datagram_is_answered_to_its_sender_and_counted_while_handled() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let go = Arc::new(tokio::sync::Notify::new());
        let handler = boxed({
            let go = Arc::clone(&go);
            move |datagram: Datagram| {
                let go = Arc::clone(&go);
                async move {
                    if datagram.data() == b"wait" {
                        go.notified().await;
                    }
                    datagram.reply(datagram.data()).await
                }
            }
        });
        let reader = reader(handler, 16);
        let task = reader.start(Listener::Udp(socket));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"wait", address).await.unwrap();
        for i in 0..100 {
            let text = format!("datagram {i}");
            client.send_to(text.as_bytes(), address).await.unwrap();
            let mut buf = [0; 64];
            let (n, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (text.as_bytes(), address));
        }
        // The first is still handled: counted as a connection of the process.
        assert_eq!(reader.shutdown.count(), 1);
        task.abort();
        go.notify_one();
        let mut buf = [0; 64];
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"wait");
        assert!(reader.shutdown.drained(Some(Duration::from_secs(5))).await);
    }

    #[tokio::test]
    async fn a_unix_sender_without_a_path_cannot_be_answered() {
        let dir =
            std::env::temp_dir().join(format!("uninterruptible-dgram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        let (replied, mut replies) = tokio::sync::mpsc::unbounded_channel();
        let handler = boxed(move |datagram: Datagram| {
            let replied = replied.clone();
            async move {
                let _ = replied.send(datagram.reply(b"x").await.map_err(|e| e.to_string()));
            }
        });
        let task = reader(handler, 16).start(Listener::UnixDatagram(socket));
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"hi", &path).await.unwrap();
        let reply = replies.recv().await.unwrap();
        assert_eq!(
            reply,
            Err(
                "the sender's UNIX socket has no path (it did not bind one): no reply can reach it"
                    .into()
            )
        );
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_unix_sender_that_does_not_read_holds_no_place() {
        let dir =
            std::env::temp_dir().join(format!("uninterruptible-dgram-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = reader(
            boxed({
                let handled = Arc::clone(&handled);
                move |datagram: Datagram| {
                    let handled = Arc::clone(&handled);
                    async move {
                        let _ = datagram.reply(datagram.data()).await;
                        handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }),
            8,
        );
        let task = reader.start(Listener::UnixDatagram(socket));
        // Far more than its receive queue holds, and it never reads: the replies to it are
        // dropped, and every handler ends.
        let hog = UnixDatagram::bind(dir.join("hog.sock")).unwrap();
        let mut sent = 0;
        while sent < 2000 {
            match tokio::time::timeout(Duration::from_secs(10), hog.send_to(b"x", &path)).await {
                Ok(Ok(_)) => sent += 1,
                _ => panic!("the server stopped reading after {sent} datagrams"),
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while handled.load(std::sync::atomic::Ordering::SeqCst) < 2000 {
            assert!(tokio::time::Instant::now() < deadline, "handlers are stuck");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(reader.shutdown.drained(Some(Duration::from_secs(5))).await);
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
