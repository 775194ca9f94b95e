//! The accept loop and the per-connection task.

use crate::acl::Acl;
use crate::datagram::Reader;
use crate::handler::HandlerOutput;
use crate::listener::Listener;
use crate::shutdown::{ConnectionGuard, Shutdown};
use crate::stream::{Io, PeerAddr, Stream};
use crate::tls::{HandshakeSlot, Tls};
use nix::errno::Errno;
use pin_project_lite::pin_project;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where accepted connections go.
#[derive(Debug)]
pub(crate) enum Target<H> {
    /// Each to a task of its own running the handler (`async fn(Stream)`).
    PerConnection(H),
    /// To the one [`Incoming`](crate::Incoming) of an `async fn(Incoming)` handler.
    Listener(mpsc::UnboundedSender<Stream>),
}

/// What every connection of one process shares.
#[derive(Debug)]
pub(crate) struct Server<H> {
    pub(crate) target: Target<H>,
    pub(crate) shutdown: Arc<Shutdown>,
    /// `MAX_CONNECTIONS`: a permit per open connection.
    pub(crate) limit: Option<Arc<Semaphore>>,
    /// `ALLOWED_NETWORKS`.
    pub(crate) acl: Option<Acl>,
    pub(crate) tls: Option<Tls>,
    /// What reads the datagram sockets, when there are any.
    pub(crate) datagrams: Option<Reader>,
}

impl<H, F, O> Server<H>
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    /// Starts accepting, one task per listener; a datagram socket's task reads it. Setup
    /// checked that datagram sockets come with a datagram handler.
    pub(crate) fn start(self, listeners: Vec<Listener>) -> Accepting {
        let server = Arc::new(self);
        Accepting {
            sweeper: Arc::clone(&server) as Arc<dyn Sweep>,
            tasks: listeners
                .into_iter()
                .map(
                    |listener| match (&server.datagrams, listener.is_datagram()) {
                        (Some(reader), true) => reader.start(listener),
                        _ => tokio::spawn(Arc::clone(&server).accept_loop(listener)),
                    },
                )
                .collect(),
        }
    }

    /// Accepts until the task is aborted ([`Accepting::stop`]). Between taking a connection off
    /// the queue and spawning its task there is no await, so an abort never loses a connection;
    /// and no stop signal is polled per accept, which the accept path would pay for.
    async fn accept_loop(self: Arc<Self>, listener: Listener) {
        match &self.tls {
            None => self.accept_plain(&listener).await,
            Some(tls) => self.accept_tls(tls, &listener).await,
        }
    }

    async fn accept_plain(&self, listener: &Listener) {
        loop {
            // At the limit, wait for a connection to end before accepting another; the kernel
            // queues new clients meanwhile.
            let permit = match &self.limit {
                None => None,
                Some(limit) => Arc::clone(limit).acquire_owned().await.ok(),
            };
            let (io, peer) = self.next(listener).await;
            self.spawn(io, peer, permit);
        }
    }

    /// With TLS a connection takes its `MAX_CONNECTIONS` permit once its handshake is done, not
    /// when it is accepted: a client that stalls in its handshake must not keep the others out.
    /// Unfinished handshakes are bounded by their own budget instead ([`Handshakes`]).
    ///
    /// [`Handshakes`]: crate::tls::Handshakes
    async fn accept_tls(&self, tls: &Tls, listener: &Listener) {
        loop {
            // At the limit, stop accepting as without TLS: wait until a permit is free. The wait
            // queues fairly behind finished handshakes waiting for permits, so those number no
            // more than the handshakes that were in flight.
            if let Some(limit) = &self.limit {
                drop(limit.acquire().await);
            }
            let (io, peer) = self.next(listener).await;
            self.spawn_tls(tls, io, peer);
            // Past the budget, the oldest unfinished handshake is dropped, and the next accept
            // waits until its descriptor is closed.
            tls.handshakes.settle().await;
        }
    }

    /// The next connection that `ALLOWED_NETWORKS` admits; a refused peer is closed at once,
    /// before any handshake. Returns as soon as it is accepted, with no await in between.
    async fn next(&self, listener: &Listener) -> (Io, PeerAddr) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match listener.accept().await {
                Ok((io, peer)) => {
                    backoff = MIN_BACKOFF;
                    if self.refuses(&peer) {
                        tracing::debug!(%peer, "refused: not in ALLOWED_NETWORKS");
                        continue;
                    }
                    return (io, peer);
                }
                Err(e) if concerns_one_connection(&e) => {
                    tracing::debug!("accept: a connection failed before it was accepted: {e}");
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or the machine is out of
                    // something; retry later rather than spin or give up.
                    tracing::error!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn refuses(&self, peer: &PeerAddr) -> bool {
        match (&self.acl, peer) {
            (Some(acl), PeerAddr::Tcp(addr)) => !acl.allows(addr.ip()),
            _ => false,
        }
    }

    /// A plain connection, holding its permit already. Plain and TLS connections have tasks of
    /// their own kinds rather than one with a branch: a task's size is fixed when it is spawned,
    /// and a plain connection should not carry room for a TLS handshake's state.
    fn spawn(&self, io: Io, peer: PeerAddr, permit: Option<OwnedSemaphorePermit>) {
        let shutdown = Arc::clone(&self.shutdown);
        match &self.target {
            Target::PerConnection(handler) => {
                let held = (self.shutdown.guard(), permit);
                tokio::spawn(serve_connection(
                    handler.clone(),
                    Stream::new(io, peer, shutdown),
                    held,
                ));
            }
            // A send fails only once the handler has dropped its `Incoming`: the connection
            // closes. The stream carries its permit, released when the handler drops it.
            Target::Listener(incoming) => {
                let _ = incoming.send(Stream::new(io, peer, shutdown).holding(permit));
            }
        }
    }

    /// A TLS connection: its task runs the handshake, then takes a permit, then serves.
    fn spawn_tls(&self, tls: &Tls, io: Io, peer: PeerAddr) {
        let handshakes = &tls.handshakes;
        let (tls, limit) = (tls.clone(), self.limit.clone());
        let shutdown = Arc::clone(&self.shutdown);
        match &self.target {
            Target::PerConnection(handler) => {
                let (handler, guard) = (handler.clone(), self.shutdown.guard());
                handshakes.spawn(peer.clone(), move |slot| async move {
                    if let Some((io, permit)) = admit(&tls, slot, limit, io, &peer).await {
                        serve_connection(handler, Stream::new(io, peer, shutdown), (guard, permit))
                            .await;
                    }
                });
            }
            Target::Listener(incoming) => {
                let incoming = incoming.clone();
                handshakes.spawn(peer.clone(), move |slot| async move {
                    if let Some((io, permit)) = admit(&tls, slot, limit, io, &peer).await {
                        let _ = incoming.send(Stream::new(io, peer, shutdown).holding(permit));
                    }
                });
            }
        }
    }
}

/// Takes the connections still in a listening socket's queue, as the last process closes it.
trait Sweep: Send + Sync {
    /// Accepts, without waiting, every connection `fd` (a listening socket's descriptor) has
    /// queued, and serves each as the accept loop would; returns how many.
    fn sweep(self: Arc<Self>, fd: &OwnedFd) -> usize;
}

impl<H, F, O> Sweep for Server<H>
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    fn sweep(self: Arc<Self>, fd: &OwnedFd) -> usize {
        let Ok(listener) = fd.try_clone().and_then(Listener::from_fd) else {
            return 0;
        };
        let mut taken = 0;
        while let Some((io, peer)) = listener.try_accept() {
            if self.refuses(&peer) {
                continue;
            }
            taken += 1;
            match (&self.tls, &self.limit) {
                (Some(tls), _) => self.spawn_tls(tls, io, peer),
                (None, None) => self.spawn(io, peer, None),
                // It waits for a permit as the accept loop would, counted by the drain meanwhile.
                (None, Some(limit)) => {
                    let (server, limit) = (Arc::clone(&self), Arc::clone(limit));
                    let waiting = self.shutdown.guard();
                    tokio::spawn(async move {
                        let permit = limit.acquire_owned().await.ok();
                        server.spawn(io, peer, permit);
                        drop(waiting);
                    });
                }
            }
        }
        taken
    }
}

/// Runs the handler on one connection. `held` (the connection's guard and permit) is released
/// when the handler ends, or when its task unwinds from a panic.
fn serve_connection<H, F>(handler: H, stream: Stream, held: Held) -> Connection<F>
where
    H: Fn(Stream) -> F,
    F: Future,
    F::Output: HandlerOutput,
{
    let peer = stream.peer_addr().clone();
    Connection {
        future: handler(stream),
        peer,
        _held: held,
    }
}

pin_project! {
    /// One connection's task: the handler's future, and what to log and release when it ends.
    /// A struct rather than an `async fn`, whose state would hold the stream a second time.
    struct Connection<F> {
        #[pin]
        future: F,
        peer: PeerAddr,
        _held: Held,
    }
}

impl<F: Future<Output: HandlerOutput>> Future for Connection<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        this.future.poll(cx).map(|output| {
            if let Err(e) = output.into_result() {
                tracing::debug!(peer = %this.peer, "connection ended with an error: {e}");
            }
        })
    }
}

type Held = (ConnectionGuard, Option<OwnedSemaphorePermit>);

/// The TLS handshake, then the `MAX_CONNECTIONS` permit. The connection stays in the handshake
/// budget until it holds its permit, never to be dropped once its handshake is done; it waits
/// for the permit as long as it takes, and the accept loop has stopped accepting meanwhile, as
/// it does without TLS.
async fn admit(
    tls: &Tls,
    slot: HandshakeSlot,
    limit: Option<Arc<Semaphore>>,
    io: Io,
    peer: &PeerAddr,
) -> Option<(Io, Option<OwnedSemaphorePermit>)> {
    let io = handshake(tls, io, peer).await;
    if !slot.finish() {
        // Dropped to make room as it finished: its task is being aborted.
        return None;
    }
    let io = io?;
    let permit = match limit {
        None => None,
        Some(limit) => limit.acquire_owned().await.ok(),
    };
    // Counted by its permit from now on.
    drop(slot);
    Some((io, permit))
}

/// The TLS handshake, in the connection's own task and bounded by the handshake timeout, so a
/// slow or silent client holds neither the accept loop nor a stopping process.
async fn handshake(tls: &Tls, io: Io, peer: &PeerAddr) -> Option<Io> {
    let result = match io {
        Io::Tcp(tcp) => tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(tcp))
            .await
            .map(|r| r.map(|s| Io::TlsTcp(Box::new(s)))),
        Io::Unix(unix) => tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(unix))
            .await
            .map(|r| r.map(|s| Io::TlsUnix(Box::new(s)))),
        already => return Some(already),
    };
    match result {
        Ok(Ok(io)) => Some(io),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not finished within {:?}", tls.handshake_timeout);
            None
        }
    }
}

/// The accept loops of a process, one per listener.
pub(crate) struct Accepting {
    tasks: Vec<JoinHandle<()>>,
    /// Serves what the listening sockets still queue when the last process closes them.
    sweeper: Arc<dyn Sweep>,
}

impl std::fmt::Debug for Accepting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepting")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl Accepting {
    /// Stops accepting as [`stop`](Self::stop) does, then serves the connections still queued on
    /// `listeners` (this process's descriptors of the listening sockets, about to be closed):
    /// the kernel resets every connection left in the queue of a listening socket closed for
    /// the last time, and a client the kernel took in must be answered. Queued in a socket
    /// another process still accepts on, they would be served there; taken here, they are served
    /// here. Returns how many were taken.
    pub(crate) async fn stop_sweeping(self, listeners: &[OwnedFd]) -> usize {
        let sweeper = Arc::clone(&self.sweeper);
        self.stop().await;
        listeners
            .iter()
            .map(|fd| Arc::clone(&sweeper).sweep(fd))
            .sum()
    }

    /// Stops accepting and drops the listeners: their descriptors are closed, never shut down, so
    /// a process that shares the sockets keeps accepting on them.
    pub(crate) async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn concerns_one_connection(e: &io::Error) -> bool {
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    matches!(
        Errno::from_raw(code),
        Errno::ECONNABORTED | Errno::ECONNRESET | Errno::EPROTO | Errno::EPERM | Errno::EINTR
    )
}
