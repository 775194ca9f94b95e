//! HTTP services (feature `http`): a tower service for `http::Request<RequestBody>` (an axum
//! `Router`, tonic's `Routes`) served on each connection with hyper and hyper-util, HTTP/1.1
//! keep-alive and h2 on one port, and drained when the process retires.
//!
//! The connection logic is theirs: hyper-util's `auto` builder tells HTTP/1.1 from h2 by the h2
//! preface (with prior knowledge, and over TLS, where the client's ALPN choice of `h2` arrives
//! as that preface), hyper reads request heads within `HEADER_READ_TIMEOUT`, and their graceful
//! shutdown ends each connection. What is added here is when to start it, and the bounds that
//! keep a client still sending a request from holding a retiring process.

use crate::drain::Draining;
use crate::init::Init;
use crate::shutdown::{ConnectionGuard, Connections};
use crate::stream::Stream;
use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use pin_project_lite::pin_project;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error type hyper, axum and tonic pass around.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The application protocols an HTTP service offers over TLS, most preferred first (RFC 7301):
/// h2, then HTTP/1.1. Clients that use no ALPN get HTTP/1.1, or h2 with prior knowledge.
pub(crate) const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How long an HTTP/1.1 connection with nothing in flight may still bring a request once the
/// process drains, before it is closed (at most a quarter of the header-read time). A request
/// that crosses the close unanswered was never read, and HTTP clients retry it (RFC 9112,
/// section 9.3.1); hyper offers no way to close an idle connection that cannot race the client,
/// so the grace makes the race rare.
const IDLE_GRACE: Duration = Duration::from_millis(250);

/// The body of a request, as an HTTP service receives it: hyper's, bounded once the process
/// drains.
///
/// Needs the `http` feature.
///
/// It is an [`http_body::Body`] of [`Bytes`], so an axum `Router`, tonic's `Routes`, and
/// `http_body_util::BodyExt` take it as it is. Its error is a
/// `Box<dyn std::error::Error + Send + Sync>`, the type those crates convert every body error
/// into: either hyper's error reading the body (downcast it to `hyper::Error`), or an
/// [`io::Error`] of kind [`TimedOut`](io::ErrorKind::TimedOut) when the body was still arriving
/// the header-read time (`HEADER_READ_TIMEOUT`) after the process began to drain. hyper's own
/// error cannot be made outside hyper, hence the box.
///
/// That bound is what keeps a client that sent half a request, and then nothing, from holding a
/// retiring process for ever: a service reading the body gets the error and answers, and the
/// connection closes. Before the drain a body takes as long as the client does; an upload that
/// needs longer than the header-read time to finish once a drain begins fails, so a service
/// taking large uploads should raise `HEADER_READ_TIMEOUT`.
#[derive(Debug)]
pub struct RequestBody {
    incoming: Incoming,
    /// The connection's drain and header-read time.
    shared: Arc<Shared>,
    /// The process's drain, watched from the first time the client keeps the body waiting.
    draining: Option<Draining>,
    /// The drain's start plus the header-read time, armed once the body waits during a drain.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Held while the body has not ended: the client is still sending this request.
    arriving: Option<ConnectionGuard>,
}

impl RequestBody {
    /// Whether the header-read time since the drain began has passed.
    fn overdue(&self) -> bool {
        self.shared
            .draining
            .since()
            .is_some_and(|since| since.elapsed() >= self.shared.limit)
    }

    fn timed_out(&self) -> BoxError {
        let message = format!(
            "the request body was still arriving {:?} after the process began to drain (HEADER_READ_TIMEOUT)",
            self.shared.limit
        );
        io::Error::new(io::ErrorKind::TimedOut, message).into()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.incoming).poll_frame(cx) {
            if !matches!(frame, Some(Ok(_))) || this.incoming.is_end_stream() {
                this.arriving = None;
            } else if this.overdue() {
                // Still arriving past the bound, however it trickles in: a client that sends a
                // byte each time it is granted a byte of window never keeps the body waiting.
                this.arriving = None;
                return Poll::Ready(Some(Err(this.timed_out())));
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        // Waiting for the client: a drain starting now wakes this body, and starts its clock.
        let shared = &this.shared;
        let draining = this.draining.get_or_insert_with(|| shared.draining.clone());
        ready!(Pin::new(&mut *draining).poll(cx));
        let deadline = this.deadline.get_or_insert_with(|| {
            let since = draining.since().unwrap_or_else(Instant::now);
            Box::pin(tokio::time::sleep_until(since + shared.limit))
        });
        ready!(deadline.as_mut().poll(cx));
        this.arriving = None;
        Poll::Ready(Some(Err(this.timed_out())))
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// A tower service that can serve HTTP: an axum `Router`, tonic's `Routes`, or any
/// [`tower_service::Service`] of `http::Request<uninterruptible::RequestBody>`.
///
/// Needs the `http` feature.
///
/// It is implemented for every service that is `Clone + Send + 'static` (each connection gets a
/// clone, and each request a clone of that, as `axum::serve` does), whose future is
/// `Send + 'static`, whose error converts into `Box<dyn std::error::Error + Send + Sync>`, and
/// whose responses are `http::Response<B>` with `B` an [`http_body::Body`] that is
/// `Send + 'static`, with `Send` data and an error that converts into the same box: what hyper
/// needs to run the service's futures on tokio tasks, for HTTP/1.1 and h2 alike. A service error
/// aborts its request (an HTTP/1.1 connection closes, an h2 stream is reset): answer with an
/// error status instead where the client should see one.
///
/// The trait is sealed: it names those bounds in one place and cannot be implemented outside
/// this crate, so that the runtime is free to add to it.
///
/// ```
/// # #[derive(Clone)]
/// # struct Hello;
/// # impl tower_service::Service<http::Request<uninterruptible::RequestBody>> for Hello {
/// #     type Response = http::Response<String>;
/// #     type Error = std::convert::Infallible;
/// #     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>)
/// #         -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, _: http::Request<uninterruptible::RequestBody>) -> Self::Future {
/// #         std::future::ready(Ok(http::Response::new("hello\n".to_owned())))
/// #     }
/// # }
/// fn servable(_: impl uninterruptible::HttpService) {}
/// // A hand-written tower service answering `hello` (an axum `Router` would do as well).
/// servable(Hello);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an HTTP service: expected an `axum::Router`, tonic's `Routes`, or a tower `Service` for `http::Request<uninterruptible::RequestBody>`",
    label = "not an HTTP service uninterruptible can serve",
    note = "an HTTP service is a `tower_service::Service<http::Request<uninterruptible::RequestBody>, Response = http::Response<B>>` that is `Clone + Send + 'static`, with a `Send + 'static` future, an error that converts into `Box<dyn std::error::Error + Send + Sync>`, and a `Send + 'static` `http_body::Body` `B` with `Send` data"
)]
pub trait HttpService:
    sealed::Sealed
    + tower_service::Service<
        Request<RequestBody>,
        Response = Response<Self::ResponseBody>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The body of the service's responses, `B` in `http::Response<B>`.
    type ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type ResponseBody = B;
}

/// The private supertrait that keeps [`HttpService`] to the services this crate describes.
mod sealed {
    use super::RequestBody;

    /// Implemented by tower services of `http::Request<RequestBody>`; unnameable outside the
    /// crate.
    #[diagnostic::on_unimplemented(
        message = "`uninterruptible::HttpService` cannot be implemented for `{Self}`: it is implemented for every tower `Service` for `http::Request<uninterruptible::RequestBody>` that can be served",
        label = "make this a tower `Service` for `http::Request<uninterruptible::RequestBody>` instead"
    )]
    pub trait Sealed {}

    impl<S: tower_service::Service<http::Request<RequestBody>>> Sealed for S {}
}

/// What one connection's parts share: the drain, its bound, and the signs of life the drain
/// looks at.
#[derive(Debug)]
struct Shared {
    draining: Draining,
    /// The header-read time.
    limit: Duration,
    /// Requests in flight: from the service's call until hyper drops its response's body.
    requests: Connections,
    /// Requests whose body the client is still sending.
    arriving: Connections,
    /// Bytes the client has taken, so far.
    written: AtomicU64,
    /// Bytes of response bodies hyper has taken to send, so far: on h2, what the client's
    /// flow-control window let through. Unlike `written`, PING and SETTINGS acknowledgements do
    /// not count, so a client cannot look alive by pinging.
    sent: AtomicU64,
    /// The client spoke h2 (its first bytes were the whole h2 preface).
    h2: AtomicBool,
    /// The last write to the client had to wait for it to take what was sent before.
    waiting: AtomicBool,
    /// Response bodies whose turn is hyper's: it has not asked them for a frame yet, or has not
    /// asked for the next one since the last. On h2, hyper asks only once the client's flow
    /// control window has room, so a body kept there is one the client holds up.
    owed: AtomicUsize,
    /// The client's first bytes have told HTTP/1.1 from h2 (or it has closed).
    shown: AtomicBool,
}

impl Shared {
    /// Completes when the client has not shown which protocol it speaks within the header-read
    /// time: it sent nothing, or only the start of the h2 preface. Until it does, hyper-util
    /// reads its first bytes itself, and hyper's header timer has not started.
    async fn silent(&self) {
        tokio::time::sleep(self.limit).await;
        if self.shown.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    }

    /// Completes once, from the header-read time after the drain began, nothing but the client
    /// has kept the connection ([`Shared::held_by_client`]) and the client has taken nothing
    /// ([`Shared::progress`]), for half that time.
    ///
    /// By then hyper has ended every HTTP/1.1 head still arriving, and every body still arriving
    /// has failed ([`RequestBody`]); h2 has no such bound on a stream not yet opened (its headers
    /// still arriving), nor on a client that never answers the PING of its graceful shutdown, so
    /// without this such a client would hold the process. A response the client is still
    /// reading keeps the connection, as long as the client takes a byte every half header-read
    /// time: hyper may hold a whole response body in its buffers once the service is done.
    async fn abandoned(&self) {
        let quiet = self.limit / 2;
        let since = self.draining.since().unwrap_or_else(Instant::now);
        tokio::time::sleep_until(since + (self.limit - quiet)).await;
        loop {
            if !self.held_by_client() {
                tokio::select! {
                    _ = self.requests.drained(None) => {}
                    // A request in flight may yet be one its client holds.
                    () = tokio::time::sleep(quiet) => continue,
                }
            }
            let progress = self.progress();
            tokio::time::sleep(quiet).await;
            if self.held_by_client() && self.progress() == progress {
                return;
            }
        }
    }

    /// What the client has taken so far: on h2 the response bodies' bytes the client's window
    /// let through, on HTTP/1.1 every byte written to it (there is nothing else to write).
    fn progress(&self) -> u64 {
        if self.h2.load(Ordering::Relaxed) {
            self.sent.load(Ordering::Relaxed)
        } else {
            self.written.load(Ordering::Relaxed)
        }
    }

    /// Whether nothing but the client keeps the connection: no request is in flight, or an
    /// answer waits on the client to take it. On HTTP/1.1 that is a write waiting for it to read;
    /// on h2 a response body whose turn is hyper's, which waits for the client to grant
    /// flow-control window (RFC 9113, section 5.2) however much else it reads. A request whose
    /// answer waits on the service (a slow handler, a body not ready yet) is not held by the
    /// client, and is never cut. nginx's `send_timeout` bounds the same wait.
    fn held_by_client(&self) -> bool {
        let answer_waits =
            self.waiting.load(Ordering::Relaxed) || self.owed.load(Ordering::Relaxed) > 0;
        self.requests.count() == 0 || answer_waits
    }
}

/// One connection's service, boxed: the per-connection handler's future has a name.
type Served = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// `app` builds the service once per process, as an initialiser (see [`crate::init`]); each
/// connection is then served with a clone of it ([`serve_connection`]).
///
/// The service is kept behind a mutex only to clone it: a tower service need not be `Sync`
/// (`BoxCloneService` is not), and each connection takes its own clone, as `axum::serve` does.
pub(crate) fn init<A, AF, S, E>(
    app: A,
    header_read_timeout: Duration,
) -> Init<impl Fn(Stream) -> Served + Clone + Send + Sync + 'static>
where
    A: FnOnce() -> AF + Send + 'static,
    AF: Future<Output = Result<S, E>> + Send + 'static,
    S: HttpService,
    E: std::fmt::Display,
{
    let built = async move { app().await.map(std::sync::Mutex::new) };
    crate::init::with_state(
        move || built,
        move |stream, service: Arc<std::sync::Mutex<S>>| {
            let service = service.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Box::pin(serve_connection(stream, service, header_read_timeout)) as Served
        },
    )
}

/// Serves HTTP/1.1 (with keep-alive) and h2 on one connection with `service`, until the client
/// closes it or the process drains; then shuts it down gracefully:
/// - requests in flight finish;
/// - HTTP/1.1 responses carry `Connection: close` (RFC 9112, section 9.6), and the connection
///   closes after the current exchange; one with nothing in flight is closed after a short grace
///   ([`IDLE_GRACE`]);
/// - an h2 connection gets GOAWAY (RFC 9113, section 6.8), and closes once its streams are done;
/// - a request still arriving, head or body, has `header_read_timeout` from the drain's start:
///   past it, a body fails ([`RequestBody`]), and a connection that the client has stopped
///   reading from is closed if nothing is in flight, or only a request it is still sending
///   ([`Shared::abandoned`]).
///
/// Before the drain, hyper closes an HTTP/1.1 connection whose request head takes longer than
/// `header_read_timeout`, or which stays idle that long. The error is hyper's (a client's
/// protocol error or reset, a head that took too long), or the service's, as an [`io::Error`].
pub(crate) async fn serve_connection<S: HttpService>(
    stream: Stream,
    service: S,
    header_read_timeout: Duration,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        draining: stream.draining(),
        limit: header_read_timeout,
        requests: Connections::new(),
        arriving: Connections::new(),
        written: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        h2: AtomicBool::new(false),
        waiting: AtomicBool::new(false),
        owed: AtomicUsize::new(0),
        shown: AtomicBool::new(false),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let io = TokioIo::new(Counted {
        stream,
        shared: Arc::clone(&shared),
        preface: Some(0),
    });
    let service = Serving {
        service: TowerToHyperService::new(service),
        shared: Arc::clone(&shared),
    };
    let connection = pin!(builder.serve_connection(io, service));
    until_closed(connection, &shared)
        .await
        .map_err(|e| match e.downcast::<io::Error>() {
            Ok(e) => *e,
            Err(e) => io::Error::other(e),
        })
}

type Connection<'a, S> = auto::Connection<'a, TokioIo<Counted>, Serving<S>, TokioExecutor>;

/// Drives `connection` to its end: serving, then draining as [`serve_connection`] says.
async fn until_closed<S: HttpService>(
    mut connection: Pin<&mut Connection<'_, S>>,
    shared: &Shared,
) -> Result<(), BoxError> {
    tokio::select! {
        result = connection.as_mut() => return result,
        () = shared.draining.clone() => {}
        () = shared.silent() => return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no request began within {:?} (HEADER_READ_TIMEOUT)", shared.limit),
        )
        .into()),
    }
    // A busy HTTP/1.1 connection ends by itself meanwhile: its response says `Connection: close`.
    let grace = IDLE_GRACE.min(shared.limit / 4);
    if let Ok(result) = tokio::time::timeout(grace, connection.as_mut()).await {
        return result;
    }
    // hyper's and hyper-util's graceful shutdown: HTTP/1.1 stops keep-alive (closing at once when
    // idle), h2 sends GOAWAY, a connection that has not yet shown its protocol closes.
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        result = connection.as_mut() => result,
        () = shared.abandoned() => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "closed {:?} after the drain began: nothing in flight, and the client has stopped reading",
                shared.limit
            ),
        )
        .into()),
    }
}

/// The service as hyper calls it: the request's body bounded by the drain, the request counted
/// in flight until its response's body is done.
struct Serving<S> {
    service: TowerToHyperService<S>,
    shared: Arc<Shared>,
}

impl<S: HttpService> hyper::service::Service<Request<Incoming>> for Serving<S> {
    type Response = Response<ResponseBody<S::ResponseBody>>;
    type Error = S::Error;
    type Future = Respond<TowerToHyperServiceFuture<S, Request<RequestBody>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let http1 = request.version() < Version::HTTP_2;
        let request = request.map(|incoming| RequestBody {
            arriving: (!incoming.is_end_stream()).then(|| self.shared.arriving.guard()),
            incoming,
            shared: Arc::clone(&self.shared),
            draining: None,
            deadline: None,
        });
        Respond {
            future: self.service.call(request),
            http1,
            shared: Arc::clone(&self.shared),
            in_flight: Some(self.shared.requests.guard()),
        }
    }
}

pin_project! {
    /// A response on its way: it says `Connection: close` when the process drains meanwhile, and
    /// hands its place in flight to its body.
    struct Respond<F> {
        #[pin]
        future: F,
        http1: bool,
        shared: Arc<Shared>,
        in_flight: Option<ConnectionGuard>,
    }
}

impl<F, B, E> Future for Respond<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.future.poll(cx))?;
        // hyper adds it itself once its graceful shutdown has begun; during the idle grace, a
        // response made after the drain's start must say it too.
        if *this.http1 && this.shared.draining.is_draining() {
            let close = HeaderValue::from_static("close");
            response.headers_mut().insert(CONNECTION, close);
        }
        let in_flight = this.in_flight.take();
        let shared = Arc::clone(this.shared);
        Poll::Ready(Ok(response.map(|body| ResponseBody {
            body,
            _in_flight: in_flight,
            turn: Turn::hypers(shared),
        })))
    }
}

pin_project! {
    /// A response's body, holding its request's place in flight until hyper drops it, and
    /// noting whose turn it is.
    struct ResponseBody<B> {
        #[pin]
        body: B,
        _in_flight: Option<ConnectionGuard>,
        turn: Turn,
    }
}

/// Whose turn a response body's is: hyper's (counted in [`Shared::owed`]) from the start and
/// after each frame, the body's while it is pending, nobody's once it has ended.
struct Turn {
    shared: Arc<Shared>,
    hypers: bool,
}

impl Turn {
    fn hypers(shared: Arc<Shared>) -> Turn {
        shared.owed.fetch_add(1, Ordering::Relaxed);
        Turn {
            shared,
            hypers: true,
        }
    }

    /// Counts a change of turn only: a body that yields frame after frame costs nothing.
    fn set(&mut self, hypers: bool) {
        if self.hypers != hypers {
            self.hypers = hypers;
            if hypers {
                self.shared.owed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.shared.owed.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.set(false);
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let shared = &this.turn.shared;
                shared
                    .sent
                    .fetch_add(bytes::Buf::remaining(data) as u64, Ordering::Relaxed);
            }
        }
        this.turn.set(matches!(polled, Poll::Ready(Some(Ok(_)))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection, counting the bytes the client takes, and watching its first bytes.
struct Counted {
    stream: Stream,
    shared: Arc<Shared>,
    /// How much of the h2 preface the client has sent, while it may still be sending it.
    preface: Option<usize>,
}

impl Counted {
    fn count(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = written {
            self.shared.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.wait(written)
    }

    /// Notes whether a write (or flush) waits for the client to take what was sent before.
    fn wait<T>(&self, poll: Poll<T>) -> Poll<T> {
        self.shared
            .waiting
            .store(poll.is_pending(), Ordering::Relaxed);
        poll
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let (Some(at), Poll::Ready(Ok(()))) = (this.preface, &read) {
            let read = &buf.filled()[before..];
            this.preface = preface_after(at, read);
            if this.preface.is_none() {
                let whole = !read.is_empty() && at + read.len() >= H2_PREFACE.len();
                let h2 = whole && read[..H2_PREFACE.len() - at] == H2_PREFACE[at..];
                this.shared.h2.store(h2, Ordering::Relaxed);
                this.shared.shown.store(true, Ordering::Relaxed);
            }
        }
        read
    }
}

/// The h2 connection preface (RFC 9113, section 3.4): what hyper-util's builder reads first, to
/// tell h2 from HTTP/1.1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much of the preface has come once `read` follows the first `at` bytes of it; `None` once
/// the protocol is known: the whole preface came (h2), a byte differs from it (HTTP/1.1), or the
/// client closed.
fn preface_after(at: usize, read: &[u8]) -> Option<usize> {
    let expected = &H2_PREFACE[at..];
    let n = read.len().min(expected.len());
    let still = !read.is_empty() && read[..n] == expected[..n] && at + n < H2_PREFACE.len();
    still.then_some(at + n)
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.count(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.count(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        this.wait(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::Shutdown;
    use crate::stream::{Io, PeerAddr};
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Notify, mpsc};
    use tokio::task::JoinHandle;

    /// How long a test waits for what must happen; only a failing test waits this long.
    const DEADLINE: Duration = Duration::from_secs(20);
    /// The bound the tests check a drain against: the header-read time plus this.
    const SLACK: Duration = Duration::from_secs(1);

    /// The length of `/big`'s body: more than the kernel buffers of a loopback connection hold.
    const BIG: usize = 32 << 20;

    /// The tests' service: `/slow` tells the test it has begun, then waits for the test's go;
    /// `/echo` tells the test it has begun, then answers the request's body, or `400` and the
    /// error that ended the body; `/stream` answers at once, with the request's body as the
    /// response's body as it arrives; `/big` answers [`BIG`] bytes in one piece; anything else
    /// answers `hello`.
    #[derive(Clone)]
    struct Test {
        begun: mpsc::UnboundedSender<()>,
        go: Arc<Notify>,
    }

    type TestBody = http_body_util::Either<String, RequestBody>;

    impl tower_service::Service<Request<RequestBody>> for Test {
        type Response = Response<TestBody>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<TestBody>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                let path = request.uri().path().to_owned();
                if path == "/stream" {
                    let body = http_body_util::Either::Right(request.into_body());
                    return Ok(Response::new(body));
                }
                if path == "/slow" || path == "/echo" {
                    let _ = this.begun.send(());
                }
                let text = match path.as_str() {
                    "/slow" => {
                        this.go.notified().await;
                        "slow\n".to_owned()
                    }
                    "/echo" => match request.into_body().collect().await {
                        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                        Err(e) => {
                            let text = http_body_util::Either::Left(e.to_string());
                            let mut response = Response::new(text);
                            *response.status_mut() = http::StatusCode::BAD_REQUEST;
                            return Ok(response);
                        }
                    },
                    "/big" => "x".repeat(BIG),
                    _ => "hello\n".to_owned(),
                };
                Ok(Response::new(http_body_util::Either::Left(text)))
            })
        }
    }

    /// One connection served by `serve_connection`, and what the test drives it with.
    struct Served {
        shutdown: Arc<Shutdown>,
        begun: mpsc::UnboundedReceiver<()>,
        go: Arc<Notify>,
        task: JoinHandle<io::Result<()>>,
    }

    /// A client connected to `serve_connection` serving [`Test`], with `limit` as the header-read
    /// time, over a real TCP connection.
    async fn connect(limit: Duration) -> (TcpStream, Served) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let shutdown = Arc::new(Shutdown::new());
        let stream = Stream::new(Io::Tcp(tcp), PeerAddr::Tcp(peer), Arc::clone(&shutdown));
        let (begun_tx, begun) = mpsc::unbounded_channel();
        let go = Arc::new(Notify::new());
        let service = Test {
            begun: begun_tx,
            go: Arc::clone(&go),
        };
        let task = tokio::spawn(serve_connection(stream, service, limit));
        let served = Served {
            shutdown,
            begun,
            go,
            task,
        };
        (client, served)
    }

    impl Served {
        /// Starts the process's drain, and says when.
        fn drain(&self) -> Instant {
            self.shutdown.announce();
            self.shutdown.draining().since().unwrap()
        }

        async fn begun(&mut self) {
            let begun = tokio::time::timeout(DEADLINE, self.begun.recv()).await;
            assert!(matches!(begun, Ok(Some(()))), "the request never began");
        }

        /// `serve_connection`'s outcome, and how long after `since` it came.
        async fn ended(self, since: Instant) -> (io::Result<()>, Duration) {
            let result = tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("serve_connection is still serving")
                .unwrap();
            (result, since.elapsed())
        }
    }

    async fn http1(tcp: TcpStream) -> hyper::client::conn::http1::SendRequest<String> {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    fn get(uri: &str) -> Request<String> {
        Request::get(uri)
            .header("host", "x")
            .body(String::new())
            .unwrap()
    }

    async fn text(response: Response<Incoming>) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Everything the client receives until the server closes the connection.
    async fn until_closed(tcp: &mut TcpStream) -> String {
        let mut received = Vec::new();
        let read = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut received)).await;
        assert!(read.is_ok(), "the connection is still open");
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test]
    async fn http1_keeps_alive_and_closes_after_the_response_in_flight_at_the_drain() {
        let (tcp, mut served) = connect(Duration::from_secs(5)).await;
        let mut client = http1(tcp).await;
        for _ in 0..2 {
            let response = client.send_request(get("/")).await.unwrap();
            assert_eq!(response.headers().get(CONNECTION), None);
            assert_eq!(text(response).await, "hello\n");
        }
        let slow = tokio::spawn(client.send_request(get("/slow")));
        served.begun().await;
        let since = served.drain();
        // Answered after the idle grace: hyper's graceful shutdown has begun by then.
        tokio::time::sleep(IDLE_GRACE * 2).await;
        served.go.notify_one();
        let response = slow.await.unwrap().unwrap();
        assert_eq!(response.headers()[CONNECTION], "close");
        assert_eq!(text(response).await, "slow\n");
        let (result, _) = served.ended(since).await;
        result.unwrap();
    }

    #[tokio::test]
    async fn http1_answers_a_request_that_arrives_as_the_drain_begins_and_closes() {
        let (mut tcp, served) = connect(Duration::from_secs(5)).await;
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        tcp.write_all(request).await.unwrap();
        let mut first = Vec::new();
        while !first.ends_with(b"hello\n") {
            assert_ne!(tcp.read_buf(&mut first).await.unwrap(), 0);
        }
        // Sent before the drain, read after it: what an idle connection's close would race.
        tcp.write_all(request).await.unwrap();
        let since = served.drain();
        let reply = until_closed(&mut tcp).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nhello\n"), "{reply}");
        let (result, _) = served.ended(since).await;
        result.unwrap();
    }

    #[tokio::test]
    async fn http1_answers_a_request_sent_just_after_the_drain_began() {
        let (mut tcp, served) = connect(Duration::from_secs(5)).await;
        let since = served.drain();
        // Well within the idle grace, which leaves the server 200 ms to read it.
        tokio::time::sleep(IDLE_GRACE / 5).await;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let reply = until_closed(&mut tcp).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
        assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
        let (result, _) = served.ended(since).await;
        result.unwrap();
    }

    #[tokio::test]
    async fn an_idle_http1_connection_closes_promptly_on_drain() {
        let limit = Duration::from_secs(5);
        let (tcp, served) = connect(limit).await;
        let mut client = http1(tcp).await;
        let response = client.send_request(get("/")).await.unwrap();
        assert_eq!(text(response).await, "hello\n");
        let since = served.drain();
        let (result, took) = served.ended(since).await;
        result.unwrap();
        // Neither the header-read time nor the drain's bound: the graceful shutdown.
        assert!(took < limit / 2, "closed {took:?} after the drain");
    }

    fn h2_get(path: &str) -> Request<()> {
        Request::get(format!("http://x{path}")).body(()).unwrap()
    }

    async fn h2_text(response: h2::client::ResponseFuture) -> String {
        let response = response.await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            body.flow_control().release_capacity(data.len()).unwrap();
            text.extend_from_slice(&data);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Waits until the server's GOAWAY reaches the client: it may then open no stream.
    async fn goaway(client: &h2::client::SendRequest<Bytes>) -> h2::Error {
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                match client.clone().ready().await {
                    Err(e) => return e,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await;
        waited.expect("no GOAWAY")
    }

    #[tokio::test]
    async fn h2_gets_goaway_on_drain_and_the_request_in_flight_completes() {
        let limit = Duration::from_secs(1);
        let (tcp, mut served) = connect(limit).await;
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(h2_get("/"), true).unwrap();
        assert_eq!(h2_text(response).await, "hello\n");
        let (slow, _) = client.send_request(h2_get("/slow"), true).unwrap();
        served.begun().await;
        let since = served.drain();
        let error = goaway(&client).await;
        assert!(error.is_go_away() && error.is_remote(), "{error}");
        assert_eq!(error.reason(), Some(h2::Reason::NO_ERROR));
        // In flight for longer than the header-read time: a request in flight is never cut.
        tokio::time::sleep(limit + SLACK).await;
        served.go.notify_one();
        assert_eq!(h2_text(slow).await, "slow\n");
        let (result, _) = served.ended(since).await;
        result.unwrap();
        connection.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_idle_h2_connection_closes_promptly_on_drain() {
        let limit = Duration::from_secs(5);
        let (tcp, served) = connect(limit).await;
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        // Held to the end: a client that drops its last handle closes the connection itself.
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(h2_get("/"), true).unwrap();
        assert_eq!(h2_text(response).await, "hello\n");
        let since = served.drain();
        let (result, took) = served.ended(since).await;
        result.unwrap();
        assert!(took < limit / 2, "closed {took:?} after the drain");
        connection.await.unwrap().unwrap();
        drop(client);
    }

    #[tokio::test]
    async fn a_head_still_arriving_holds_a_drain_no_longer_than_the_header_read_time() {
        let limit = Duration::from_secs(1);
        let (mut tcp, served) = connect(limit).await;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let since = served.drain();
        let (result, took) = served.ended(since).await;
        assert!(took <= limit + SLACK, "ended {took:?} after the drain");
        // hyper's header timer, or the drain's bound, whichever comes first: both end it then.
        assert!(result.is_err());
        assert_eq!(until_closed(&mut tcp).await, "");
    }

    #[tokio::test]
    async fn a_head_slower_than_the_header_read_time_is_refused_without_a_drain() {
        let limit = Duration::from_secs(1);
        let (mut tcp, served) = connect(limit).await;
        let since = Instant::now();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let (result, took) = served.ended(since).await;
        assert!(took <= limit + SLACK, "ended after {took:?}");
        let error = result.unwrap_err().to_string();
        assert!(error.contains("read header from client timeout"), "{error}");
        assert_eq!(until_closed(&mut tcp).await, "");
    }

    #[tokio::test]
    async fn a_slow_answer_that_leaves_the_body_unread_is_not_cut() {
        let limit = Duration::from_secs(1);
        let (mut tcp, mut served) = connect(limit).await;
        // The whole body is sent; the service never reads it, and answers late.
        let request = "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        tcp.write_all(request.as_bytes()).await.unwrap();
        served.begun().await;
        let since = served.drain();
        tokio::time::sleep(limit + SLACK).await;
        served.go.notify_one();
        let reply = until_closed(&mut tcp).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nslow\n"), "{reply}");
        let (result, _) = served.ended(since).await;
        result.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_never_shows_its_protocol_is_closed_after_the_header_read_time() {
        let limit = Duration::from_secs(1);
        // Nothing at all; the start of the h2 preface, which could still be either protocol.
        for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
            let (mut tcp, served) = connect(limit).await;
            let since = Instant::now();
            tcp.write_all(sent).await.unwrap();
            let (result, took) = served.ended(since).await;
            assert!(took <= limit + SLACK, "ended after {took:?}");
            let error = result.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::TimedOut);
            assert!(error.to_string().contains("HEADER_READ_TIMEOUT"), "{error}");
            assert_eq!(until_closed(&mut tcp).await, "");
        }
    }

    #[test]
    fn the_protocol_is_known_from_the_first_byte_that_leaves_the_h2_preface() {
        assert_eq!(preface_after(0, b"PRI * "), Some(6));
        assert_eq!(preface_after(6, b"HTTP/2.0\r\n"), Some(16));
        assert_eq!(preface_after(16, b"\r\nSM\r\n\r\n\0\0"), None);
        assert_eq!(preface_after(0, b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(preface_after(0, b"P"), Some(1));
        assert_eq!(preface_after(1, b"UT /x HTTP/1.1\r\n"), None);
        assert_eq!(preface_after(3, b""), None, "the client closed");
    }

    #[tokio::test]
    async fn an_h2_client_idle_after_its_preface_keeps_its_connection() {
        let limit = Duration::from_secs(1);
        let (tcp, served) = connect(limit).await;
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let _client = client.ready().await.unwrap();
        tokio::time::sleep(limit + SLACK).await;
        assert!(
            !served.task.is_finished(),
            "an idle h2 connection was closed"
        );
        let since = served.drain();
        let (result, _) = served.ended(since).await;
        result.unwrap();
        connection.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_body_still_arriving_fails_the_header_read_time_after_the_drain() {
        let limit = Duration::from_secs(1);
        let (mut tcp, mut served) = connect(limit).await;
        let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
        tcp.write_all(format!("{head}0123456789").as_bytes())
            .await
            .unwrap();
        served.begun().await;
        let since = served.drain();
        let reply = until_closed(&mut tcp).await;
        assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
        assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
        assert!(reply.ends_with("(HEADER_READ_TIMEOUT)"), "{reply}");
        let (_, took) = served.ended(since).await;
        assert!(took <= limit + SLACK, "ended {took:?} after the drain");
    }

    #[tokio::test]
    async fn an_h2_client_that_stops_mid_frame_holds_a_drain_no_longer_than_the_header_read_time() {
        let limit = Duration::from_secs(1);
        let (mut tcp, served) = connect(limit).await;
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        // An empty SETTINGS frame, then the start of a HEADERS frame's own header, and no more:
        // it neither opens its stream nor answers the PING of the server's graceful shutdown.
        let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        tcp.write_all(&settings).await.unwrap();
        tcp.write_all(&[0, 0, 0x10, 1]).await.unwrap();
        let since = served.drain();
        let (result, took) = served.ended(since).await;
        assert!(took <= limit + SLACK, "ended {took:?} after the drain");
        let error = result.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("stopped reading"), "{error}");
    }

    #[tokio::test]
    async fn a_response_the_client_is_still_reading_is_not_cut() {
        let limit = Duration::from_secs(1);
        let (mut tcp, served) = connect(limit).await;
        tcp.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let since = served.drain();
        // hyper has the whole body at once, so nothing is in flight; the client reads it slowly,
        // a MiB every 100 ms, for longer than the header-read time.
        let (mut received, mut buf, mut paced) = (Vec::new(), vec![0; 64 << 10], 0);
        loop {
            let read = tokio::time::timeout(DEADLINE, tcp.read(&mut buf)).await;
            let n = read.expect("the connection stalled").unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            if received.len() >= paced + (1 << 20) {
                paced = received.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let took = since.elapsed();
        let reply = String::from_utf8_lossy(&received);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let whole = body.len() == BIG && body.bytes().all(|b| b == b'x');
        assert!(
            whole,
            "cut after {} bytes, {took:?} after the drain",
            body.len()
        );
        let slow = took > limit + SLACK;
        assert!(slow, "read in {took:?}: too fast to show anything");
        let (result, _) = served.ended(since).await;
        result.unwrap();
    }

    #[tokio::test]
    async fn an_h2_client_that_grants_no_window_to_the_answer_of_a_body_it_is_still_sending_holds_a_drain_no_longer_than_the_header_read_time()
     {
        let limit = Duration::from_secs(1);
        let (tcp, served) = connect(limit).await;
        // No room for any stream's data: the server may send the answer's head, never its body.
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        // The connection is driven to the end: the client reads and answers every frame.
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let post = Request::post("http://x/stream").body(()).unwrap();
        let (response, mut body) = client.send_request(post, false).unwrap();
        body.send_data(Bytes::from_static(b"half of it"), false)
            .unwrap();
        let response = tokio::time::timeout(DEADLINE, response).await.unwrap();
        assert_eq!(response.unwrap().status(), http::StatusCode::OK);
        let since = served.drain();
        let (result, took) = served.ended(since).await;
        assert!(took <= limit + SLACK, "ended {took:?} after the drain");
        let error = result.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("stopped reading"), "{error}");
        drop((client, body));
        let _ = connection.await;
    }

    /// An h2 client that grants no flow-control window: with `pings`, it also pings the server
    /// every 100 ms (each PING's acknowledgement is a write to it), as if to look alive.
    async fn windowless_get(pings: bool) {
        let limit = Duration::from_secs(1);
        let (tcp, served) = connect(limit).await;
        let (client, mut connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        let mut ping_pong = connection.ping_pong().unwrap();
        let connection = tokio::spawn(connection);
        let pinging = tokio::spawn(async move {
            if !pings {
                return;
            }
            while ping_pong.ping(h2::Ping::opaque()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut client = client.ready().await.unwrap();
        // A whole request: nothing of it is still arriving, only its answer waits.
        let (response, _) = client.send_request(h2_get("/"), true).unwrap();
        let response = tokio::time::timeout(DEADLINE, response).await.unwrap();
        // Kept, unread: dropping it would cancel the stream.
        let response = response.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let since = served.drain();
        let (result, took) = served.ended(since).await;
        assert!(took <= limit + SLACK, "ended {took:?} after the drain");
        let error = result.unwrap_err();
        assert!(error.to_string().contains("stopped reading"), "{error}");
        pinging.abort();
        drop((client, response));
        let _ = connection.await;
    }

    #[tokio::test]
    async fn an_h2_client_that_grants_no_window_to_a_whole_request_s_answer_holds_a_drain_no_longer_than_the_header_read_time()
     {
        windowless_get(false).await;
    }

    #[tokio::test]
    async fn an_h2_client_that_pings_does_not_look_alive_to_the_drain() {
        windowless_get(true).await;
    }

    /// An h2 frame's 9-byte header and its payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut frame = len.to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    #[tokio::test]
    async fn a_body_that_trickles_in_window_by_window_is_cut_at_the_header_read_time() {
        let limit = Duration::from_secs(1);
        let (tcp, served) = connect(limit).await;
        let (mut reader, mut writer) = tcp.into_split();
        // Read and drop everything the server sends, as a client that reads would.
        let reading = tokio::spawn(async move {
            let mut buf = vec![0; 64 << 10];
            while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let mut start = H2_PREFACE.to_vec();
        // SETTINGS: INITIAL_WINDOW_SIZE (4) = 0: the server may send no stream data unasked.
        start.extend(frame(4, 0, 0, &[0, 4, 0, 0, 0, 0]));
        // HEADERS, END_HEADERS, stream 1: POST http://x/stream, in HPACK: `:method: POST`
        // (static 3), `:scheme: http` (static 6), `:path` (name 4) and `:authority` (name 1)
        // as literals.
        let mut block = vec![0x83, 0x86, 0x04, 7];
        block.extend_from_slice(b"/stream");
        block.extend_from_slice(&[0x01, 1, b'x']);
        start.extend(frame(1, 0x4, 1, &block));
        writer.write_all(&start).await.unwrap();
        let since = served.drain();
        // A byte of body, then a byte of window for its echo, every 50 ms: whenever hyper asks
        // the body for more, a byte is there.
        let trickling = tokio::spawn(async move {
            loop {
                let mut step = frame(0, 0, 1, b"x");
                step.extend(frame(8, 0, 1, &1u32.to_be_bytes()));
                if writer.write_all(&step).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let (_, took) = served.ended(since).await;
        assert!(took <= limit + SLACK, "ended {took:?} after the drain");
        trickling.abort();
        reading.abort();
    }
}
