//! The conductor: the public entry points. It reads who started this process once
//! ([`Origin`]), sets up signals, logging and the runtime, and hands over to the role this process
//! plays: the serving role ([`server`](crate::server)) or the supervisor
//! ([`supervise`](crate::supervise)). No module imports this one.

use crate::config::Config;
use crate::datagram::{self, Datagram};
use crate::error::Error;
use crate::handle::{self, Handle};
use crate::handler::NoHandler;
use crate::handler::{Handler, HandlerOutput};
use crate::handoff::Takeover;
use crate::handover::{Carry, Handover};
use crate::incoming::Incoming;
use crate::inherit;
use crate::init::{self, Init};
use crate::logging;
use crate::origin::{Origin, Part};
use crate::setup::{Begun, Program, report};
use crate::signals;
use crate::stream::Stream;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

/// Runs a server until it is stopped or replaced, and returns the process's exit status.
///
/// This is what `#[uninterruptible::server]` calls from the `main` it generates; call it yourself
/// to build the configuration some other way. It installs logging, builds a multi-thread tokio
/// runtime, binds (or takes over the socket of the process that started this one), and serves
/// each connection on its own task.
///
/// It can be called from any thread, whatever threads the program started before, and from
/// inside a tokio runtime (`#[tokio::main]`), where it runs the server's own runtime on a thread
/// of its own and blocks the caller until the server exits. It blocks `TERM`, `INT`, `USR1` and
/// `HUP` in the thread that serves, which every thread started from it inherits, and reads them
/// in the order they arrive; in threads started earlier a handler catches them, so no signal
/// ends the process.
///
/// ```no_run
/// use tokio::io::AsyncWriteExt;
///
/// fn main() -> std::process::ExitCode {
///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000");
///     let config = match uninterruptible::Config::from_env(defaults) {
///         Ok(config) => config,
///         Err(e) => {
///             eprintln!("{e}");
///             return std::process::ExitCode::from(e.exit_status());
///         }
///     };
///     uninterruptible::run(config, |mut stream: uninterruptible::Stream| async move {
///         stream.write_all(b"hello\n").await
///     })
/// }
/// ```
pub fn run<H, F, O>(config: Config, handler: H) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Server::new(config).run(handler)
}

/// Runs a server whose handler takes the whole listener: [`run`] for an
/// `async fn(uninterruptible::Incoming)`, which decides itself how connections are run (see
/// [`Incoming`]). The process retires when the handler returns, or at `DRAIN_TIMEOUT`.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000");
///     let Ok(config) = uninterruptible::Config::from_env(defaults) else {
///         return std::process::ExitCode::from(2);
///     };
///     uninterruptible::run_incoming(config, |incoming: uninterruptible::Incoming| async move {
///         while let Some(stream) = incoming.accept().await {
///             drop(stream); // serve it
///         }
///     })
/// }
/// ```
pub fn run_incoming<G, F, O>(config: Config, handler: G) -> ExitCode
where
    G: FnOnce(Incoming) -> F + Send + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Server::new(config).run_incoming(handler)
}

/// A server to run from a program's own `main`: the same server `#[uninterruptible::server]`
/// generates, with [`Handle`]s to restart and stop it from code.
///
/// [`Server::run`] starts a runtime of its own and blocks; [`Server::serve`] serves on the
/// runtime the program already runs (`#[tokio::main]`, or one built by hand), so the program
/// can build a database pool or warm a cache with async code first. Either way signals work
/// from any thread layout: `USR1` restarts, `TERM` drains, whatever threads exist.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     // Async start-up work of the program's own, on its own runtime.
///     let greeting = std::sync::Arc::new(String::from("hello\n"));
///     let config = match uninterruptible::Config::builder(
///         uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000"),
///     )
///     .build()
///     {
///         Ok(config) => config,
///         Err(e) => {
///             eprintln!("{e}");
///             return std::process::ExitCode::from(e.exit_status());
///         }
///     };
///     uninterruptible::Server::new(config)
///         .serve(move |mut stream: uninterruptible::Stream| {
///             let greeting = greeting.clone();
///             async move {
///                 use tokio::io::AsyncWriteExt;
///                 stream.write_all(greeting.as_bytes()).await
///             }
///         })
///         .await
/// }
/// ```
#[derive(Debug)]
pub struct Server {
    config: Config,
    handle: Handle,
    program: Program,
}

/// The connection handler of a server of datagrams only: it has no stream socket (checked at
/// start-up), so this is never called.
const NO_CONNECTIONS: NoHandler = |_stream| std::future::ready(());

impl Server {
    /// A server with this configuration (see [`Config::from_env`] and [`Config::builder`]).
    pub fn new(mut config: Config) -> Server {
        let datagrams = config.datagrams.take();
        let (handle, requests) = handle::channel();
        Server {
            config,
            handle,
            program: Program {
                requests,
                datagrams,
                streams: true,
                carry: None,
            },
        }
    }

    /// A handle that restarts or stops this server once it runs.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves the datagram sockets (`udp://`, `unixgram://` in `bind`) with `handler`, beside the
    /// connections the handler given to `run` (or `serve`, ...) serves: e.g. DNS over UDP and
    /// TCP on one port. Each [`Datagram`] is handled on a task of its own.
    ///
    /// A restart hands the datagram sockets over with the others; the old process stops reading
    /// them once the new one is ready, and finishes the handlers still running (the replies it
    /// owes) as it drains. A datagram socket without a datagram handler, or a stream socket in
    /// a server of [`Server::run_datagrams`], is a configuration error (exit 2).
    ///
    /// ```no_run
    /// use tokio::io::AsyncWriteExt;
    ///
    /// fn main() -> std::process::ExitCode {
    ///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000,udp://127.0.0.1:7000");
    ///     let config = uninterruptible::Config::from_env(defaults).expect("a valid configuration");
    ///     uninterruptible::Server::new(config)
    ///         .datagrams(|datagram: uninterruptible::Datagram| async move {
    ///             datagram.reply(b"hello over udp\n").await
    ///         })
    ///         .run(|mut stream: uninterruptible::Stream| async move {
    ///             stream.write_all(b"hello over tcp\n").await
    ///         })
    /// }
    /// ```
    pub fn datagrams<D, F, O>(mut self, handler: D) -> Server
    where
        D: Fn(Datagram) -> F + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        self.program.datagrams = Some(datagram::boxed(handler));
        self
    }

    /// Serves only datagram sockets (`udp://`, `unixgram://`), each [`Datagram`] with `handler`
    /// on a task of its own, as [`Server::run`] serves connections (a runtime of its own,
    /// restarts, drains, supervised mode). See [`Server::datagrams`].
    ///
    /// ```no_run
    /// fn main() -> std::process::ExitCode {
    ///     let defaults = uninterruptible::Defaults::new().bind("udp://127.0.0.1:7000");
    ///     let config = uninterruptible::Config::from_env(defaults).expect("a valid configuration");
    ///     uninterruptible::Server::new(config).run_datagrams(|datagram: uninterruptible::Datagram| async move {
    ///         datagram.reply(datagram.data()).await
    ///     })
    /// }
    /// ```
    pub fn run_datagrams<D, F, O>(mut self, handler: D) -> ExitCode
    where
        D: Fn(Datagram) -> F + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        self.program.streams = false;
        let server = self.datagrams(handler);
        let none = init::ready(Handler::PerConnection(NO_CONNECTIONS));
        run_blocking(server.config, none, server.program)
    }

    /// [`Server::run_datagrams`] on the runtime this is awaited on (see [`Server::serve`]).
    pub async fn serve_datagrams<D, F, O>(mut self, handler: D) -> ExitCode
    where
        D: Fn(Datagram) -> F + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        self.program.streams = false;
        let server = self.datagrams(handler);
        let none = init::ready(Handler::PerConnection(NO_CONNECTIONS));
        run_async(server.config, none, server.program).await
    }

    /// Serves `handler`, one task per connection, on a multi-thread runtime of its own, until
    /// the process stops or retires; returns its exit status (0 after a drain, 1 after a second
    /// `TERM`, 2 for a configuration the sockets refuse). Blocks the calling thread; from inside a
    /// runtime it serves on a thread of its own (prefer [`Server::serve`] there).
    pub fn run<H, F, O>(self, handler: H) -> ExitCode
    where
        H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        run_blocking(
            self.config,
            init::ready(Handler::PerConnection(handler)),
            self.program,
        )
    }

    /// [`Server::run`] with start-up work first: `init` runs once in each serving process, after
    /// the sockets are taken and before it accepts or reports ready, for at most
    /// `READY_TIMEOUT`; what it returns is handed to `handler` with each connection, as an
    /// `Arc<S>` (dropped once the last connection ends, so a pool closes cleanly).
    ///
    /// If `init` returns an error, panics or runs out of time, the process never serves. At a
    /// restart the restart fails with that reason, in the old process's log, the control
    /// socket's `failed <reason>`, [`Handle::restart`]'s outcome and systemd's `STATUS=`, and
    /// the old process serves on; at a first start the process exits 1 with
    /// `the initialiser failed: <reason>`. A `TERM` while it runs ends the process (exit 0).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// struct Pool { greeting: String }
    ///
    /// async fn setup() -> Result<Pool, String> {
    ///     // Connect to the database, warm a cache: a new process that cannot fails the restart.
    ///     Ok(Pool { greeting: "hello\n".into() })
    /// }
    ///
    /// fn main() -> std::process::ExitCode {
    ///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000");
    ///     let config = uninterruptible::Config::from_env(defaults).expect("a valid configuration");
    ///     uninterruptible::Server::new(config).run_with(setup, |mut stream, pool: Arc<Pool>| async move {
    ///         stream.write_all(pool.greeting.as_bytes()).await
    ///     })
    /// }
    /// ```
    pub fn run_with<I, IF, S, E, H, F, O>(self, init: I, handler: H) -> ExitCode
    where
        I: FnOnce() -> IF + Send + 'static,
        IF: Future<Output = Result<S, E>> + Send + 'static,
        S: Send + Sync + 'static,
        E: std::fmt::Display,
        H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        run_blocking(self.config, init::with_state(init, handler), self.program)
    }

    /// [`Server::run_with`] whose state outlives the process: at a restart the old process's
    /// `save` makes a [`Handover`] from what its `init` built, and the new process's `init`
    /// receives it (`None` at a first start, or when there was nothing to hand over). It goes
    /// over the private handoff connection, never a file, at most [`MAX_HANDOVER_BYTES`]
    /// (past it the new process starts without it, and the old process's log says so).
    ///
    /// `save` runs in the old process when the new one asks (after it has the sockets, before
    /// its `init`), on the old process's runtime: keep it quick. What the old process serves
    /// after that, while the new one starts, is not in what it handed over. Under a supervisor
    /// (`SUPERVISE`) each serving process starts afresh. See [`Handover`] for versioning a
    /// format across versions of the program.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use tokio::io::AsyncWriteExt;
    /// use uninterruptible::Handover;
    ///
    /// async fn setup(previous: Option<Handover>) -> Result<AtomicU64, String> {
    ///     let count = match previous {
    ///         Some(h) if h.version() == 1 => {
    ///             u64::from_be_bytes(h.bytes().try_into().map_err(|_| "not 8 bytes")?)
    ///         }
    ///         _ => 0,
    ///     };
    ///     Ok(AtomicU64::new(count))
    /// }
    ///
    /// fn save(count: &AtomicU64) -> Handover {
    ///     Handover::new(1, count.load(Ordering::SeqCst).to_be_bytes().to_vec())
    /// }
    ///
    /// fn main() -> std::process::ExitCode {
    ///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000");
    ///     let config = uninterruptible::Config::from_env(defaults).expect("a valid configuration");
    ///     uninterruptible::Server::new(config).run_with_handover(
    ///         setup,
    ///         save,
    ///         |mut stream, count: Arc<AtomicU64>| async move {
    ///             let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    ///             stream.write_all(format!("{n}\n").as_bytes()).await
    ///         },
    ///     )
    /// }
    /// ```
    ///
    /// [`MAX_HANDOVER_BYTES`]: crate::MAX_HANDOVER_BYTES
    pub fn run_with_handover<I, IF, S, E, V, H, F, O>(
        mut self,
        init: I,
        save: V,
        handler: H,
    ) -> ExitCode
    where
        I: FnOnce(Option<Handover>) -> IF + Send + 'static,
        IF: Future<Output = Result<S, E>> + Send + 'static,
        S: Send + Sync + 'static,
        E: std::fmt::Display,
        V: Fn(&S) -> Handover + Send + Sync + 'static,
        H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let carry = Carry::new();
        self.program.carry = Some(Arc::clone(&carry));
        let init = init::with_handover(init, save, handler, carry);
        run_blocking(self.config, init, self.program)
    }

    /// [`Server::run_with_handover`] on the runtime this is awaited on (see [`Server::serve`]).
    pub async fn serve_with_handover<I, IF, S, E, V, H, F, O>(
        mut self,
        init: I,
        save: V,
        handler: H,
    ) -> ExitCode
    where
        I: FnOnce(Option<Handover>) -> IF + Send + 'static,
        IF: Future<Output = Result<S, E>> + Send + 'static,
        S: Send + Sync + 'static,
        E: std::fmt::Display,
        V: Fn(&S) -> Handover + Send + Sync + 'static,
        H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let carry = Carry::new();
        self.program.carry = Some(Arc::clone(&carry));
        let init = init::with_handover(init, save, handler, carry);
        run_async(self.config, init, self.program).await
    }

    /// [`Server::serve`] with start-up work first: see [`Server::run_with`].
    pub async fn serve_with<I, IF, S, E, H, F, O>(self, init: I, handler: H) -> ExitCode
    where
        I: FnOnce() -> IF + Send + 'static,
        IF: Future<Output = Result<S, E>> + Send + 'static,
        S: Send + Sync + 'static,
        E: std::fmt::Display,
        H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        run_async(self.config, init::with_state(init, handler), self.program).await
    }

    /// [`Server::run_incoming`] with start-up work first: `init` runs as for
    /// [`Server::run_with`], and the handler takes the whole listener and what `init` built.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// async fn setup() -> Result<Vec<String>, std::io::Error> {
    ///     Ok(vec!["a worker's name".to_owned()])
    /// }
    ///
    /// fn main() -> std::process::ExitCode {
    ///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000");
    ///     let config = uninterruptible::Config::from_env(defaults).expect("a valid configuration");
    ///     uninterruptible::Server::new(config).run_incoming_with(
    ///         setup,
    ///         |incoming: uninterruptible::Incoming, names: Arc<Vec<String>>| async move {
    ///             while let Some(stream) = incoming.accept().await {
    ///                 drop((stream, &names)); // serve it
    ///             }
    ///         },
    ///     )
    /// }
    /// ```
    pub fn run_incoming_with<I, IF, S, E, G, F, O>(self, init: I, handler: G) -> ExitCode
    where
        I: FnOnce() -> IF + Send + 'static,
        IF: Future<Output = Result<S, E>> + Send + 'static,
        S: Send + Sync + 'static,
        E: std::fmt::Display,
        G: FnOnce(Incoming, Arc<S>) -> F + Send + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let init = init::with_state_incoming(init, handler);
        run_blocking::<NoHandler, _, ()>(self.config, init, self.program)
    }

    /// [`Server::serve_incoming`] with start-up work first: see [`Server::run_incoming_with`].
    pub async fn serve_incoming_with<I, IF, S, E, G, F, O>(self, init: I, handler: G) -> ExitCode
    where
        I: FnOnce() -> IF + Send + 'static,
        IF: Future<Output = Result<S, E>> + Send + 'static,
        S: Send + Sync + 'static,
        E: std::fmt::Display,
        G: FnOnce(Incoming, Arc<S>) -> F + Send + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let init = init::with_state_incoming(init, handler);
        run_async::<NoHandler, _, ()>(self.config, init, self.program).await
    }

    /// Serves an HTTP service (feature `http`): `app` builds it once per process (it is the
    /// initialiser: see [`Server::run_with`] for what a failure does), and the library serves it
    /// on every connection with hyper: HTTP/1.1 keep-alive and h2 on one port (h2 by prior
    /// knowledge, or over TLS by ALPN, where `h2` and `http/1.1` are offered), drained when the
    /// process retires (in-flight requests finish, HTTP/1.1 responses carry `Connection: close`,
    /// h2 gets GOAWAY, a request still arriving has `HEADER_READ_TIMEOUT`). The service is an
    /// `axum::Router`, tonic's `Routes`, or any tower service: see [`HttpService`](crate::HttpService).
    ///
    /// ```no_run
    /// # #[cfg(any())] {
    /// async fn app() -> Result<axum::Router, std::convert::Infallible> {
    ///     Ok(axum::Router::new().route("/", axum::routing::get(|| async { "hello\n" })))
    /// }
    ///
    /// fn main() -> std::process::ExitCode {
    ///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:8080");
    ///     let config = uninterruptible::Config::from_env(defaults).expect("a valid configuration");
    ///     uninterruptible::Server::new(config).run_http(app)
    /// }
    /// # }
    /// ```
    #[cfg(feature = "http")]
    pub fn run_http<A, AF, S, E>(mut self, app: A) -> ExitCode
    where
        A: FnOnce() -> AF + Send + 'static,
        AF: Future<Output = Result<S, E>> + Send + 'static,
        S: crate::HttpService,
        E: std::fmt::Display,
    {
        let init = crate::http::init(app, self.config.header_read_timeout());
        self.config.alpn = crate::http::ALPN;
        run_blocking(self.config, init, self.program)
    }

    /// [`Server::run_http`] on the runtime this is awaited on (see [`Server::serve`]).
    #[cfg(feature = "http")]
    pub async fn serve_http<A, AF, S, E>(mut self, app: A) -> ExitCode
    where
        A: FnOnce() -> AF + Send + 'static,
        AF: Future<Output = Result<S, E>> + Send + 'static,
        S: crate::HttpService,
        E: std::fmt::Display,
    {
        let init = crate::http::init(app, self.config.header_read_timeout());
        self.config.alpn = crate::http::ALPN;
        run_async(self.config, init, self.program).await
    }

    /// [`Server::run`] for a handler that takes the whole listener (see [`Incoming`]).
    pub fn run_incoming<G, F, O>(self, handler: G) -> ExitCode
    where
        G: FnOnce(Incoming) -> F + Send + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let handler = init::ready(Handler::listener(handler));
        run_blocking::<NoHandler, _, ()>(self.config, handler, self.program)
    }

    /// Serves `handler` on the runtime this is awaited on, until the process stops or retires;
    /// returns its exit status as [`Server::run`] does. The runtime must have I/O and time
    /// enabled (`#[tokio::main]` does). Connections still open when a `DRAIN_TIMEOUT` ends are
    /// left to the runtime: return from `main` to end them.
    pub async fn serve<H, F, O>(self, handler: H) -> ExitCode
    where
        H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        run_async(
            self.config,
            init::ready(Handler::PerConnection(handler)),
            self.program,
        )
        .await
    }

    /// [`Server::serve`] for a handler that takes the whole listener (see [`Incoming`]).
    pub async fn serve_incoming<G, F, O>(self, handler: G) -> ExitCode
    where
        G: FnOnce(Incoming) -> F + Send + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let handler = init::ready(Handler::listener(handler));
        run_async::<NoHandler, _, ()>(self.config, handler, self.program).await
    }
}

/// Serves on a runtime of its own, blocking the calling thread.
pub(crate) fn run_blocking<H, F, O>(config: Config, handler: Init<H>, program: Program) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return on_own_runtime(config, handler, program);
    }
    // Called from a runtime (`#[tokio::main]`): a runtime cannot be started, nor blocked on,
    // from one of its threads, so the server's runs on a thread of its own.
    let thread = std::thread::Builder::new()
        .name("uninterruptible".into())
        .spawn(move || on_own_runtime(config, handler, program));
    match thread.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => report(None, &Error::io("cannot start the server's thread")(e)),
    }
}

fn on_own_runtime<H, F, O>(config: Config, handler: Init<H>, program: Program) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    let begun = match begin(config, program) {
        Ok(begun) => begun,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(
                Some(&begun.config),
                &Error::io("cannot start the tokio runtime")(e),
            );
        }
    };
    crate::timing::mark("runtime");
    let code = runtime.block_on(play(begun, handler));
    // Connections still open after a drain timeout are dropped here, not waited for.
    runtime.shutdown_background();
    code
}

/// Serves on the runtime the caller runs on.
pub(crate) async fn run_async<H, F, O>(
    config: Config,
    handler: Init<H>,
    program: Program,
) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    match begin(config, program) {
        Ok(begun) => play(begun, handler).await,
        Err(code) => code,
    }
}

/// Everything before the runtime: signals first (from here on a `USR1` or `TERM` waits to be
/// read instead of ending the process), who started this process, logging.
fn begin(config: Config, program: Program) -> Result<Begun, ExitCode> {
    program.requests.open();
    crate::timing::begin("exec and load");
    signals::block().map_err(|e| report(None, &e))?;
    let inherited = inherit::take(config.max_listeners()).map_err(|e| report(None, &e))?;
    let origin = Origin::take();
    // The old process (if any) sends the sockets while this one starts its runtime.
    let dialed = origin
        .handoff
        .as_deref()
        .map(|path| Takeover::dial(path, origin.state_from));
    let part = match origin.supervisor {
        Some(pid) => Part::Supervised(pid),
        None if config.supervise => Part::Supervisor,
        None => Part::Alone,
    };
    // A supervisor is generation 0; the serving processes it starts count from 1.
    let generation = origin
        .generation
        .unwrap_or(if part == Part::Supervisor { 0 } else { 1 });
    logging::init(&config, generation).map_err(|e| report(None, &e))?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(Begun {
        config,
        generation,
        inherited,
        dialed,
        part,
        keep_socket_files: origin.keep_socket_files,
        program,
    })
}

/// Hands over to the role this process plays.
async fn play<H, F, O>(begun: Begun, handler: Init<H>) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    match begun.part {
        Part::Supervisor => crate::supervise::supervise(begun).await,
        _ => crate::server::lifecycle(begun, handler).await,
    }
}

/// What `#[uninterruptible::server(init = "...")]` expands to: [`Server::run_with`].
#[doc(hidden)]
pub fn run_with<I, IF, S, E, H, F, O>(config: Config, init: I, handler: H) -> ExitCode
where
    I: FnOnce() -> IF + Send + 'static,
    IF: Future<Output = Result<S, E>> + Send + 'static,
    S: Send + Sync + 'static,
    E: std::fmt::Display,
    H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Server::new(config).run_with(init, handler)
}

/// What `#[uninterruptible::server(init = "...")]` on a handler taking `Incoming` expands to:
/// [`Server::run_incoming_with`].
#[doc(hidden)]
pub fn run_incoming_with<I, IF, S, E, G, F, O>(config: Config, init: I, handler: G) -> ExitCode
where
    I: FnOnce() -> IF + Send + 'static,
    IF: Future<Output = Result<S, E>> + Send + 'static,
    S: Send + Sync + 'static,
    E: std::fmt::Display,
    G: FnOnce(Incoming, Arc<S>) -> F + Send + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Server::new(config).run_incoming_with(init, handler)
}

/// What `#[uninterruptible::server(init = "...", save = "...")]` expands to:
/// [`Server::run_with_handover`].
#[doc(hidden)]
pub fn run_with_handover<I, IF, S, E, V, H, F, O>(
    config: Config,
    init: I,
    save: V,
    handler: H,
) -> ExitCode
where
    I: FnOnce(Option<Handover>) -> IF + Send + 'static,
    IF: Future<Output = Result<S, E>> + Send + 'static,
    S: Send + Sync + 'static,
    E: std::fmt::Display,
    V: Fn(&S) -> Handover + Send + Sync + 'static,
    H: Fn(Stream, Arc<S>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Server::new(config).run_with_handover(init, save, handler)
}

/// What `#[uninterruptible::server(datagrams = "...")]` adds: a datagram handler beside the main
/// one (see [`Server::datagrams`]).
#[doc(hidden)]
pub fn with_datagrams<D, F, O>(mut config: Config, handler: D) -> Config
where
    D: Fn(Datagram) -> F + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    config.datagrams = Some(datagram::boxed(handler));
    config
}

/// What `#[uninterruptible::server]` on a handler taking `Datagram` expands to:
/// [`Server::run_datagrams`].
#[doc(hidden)]
pub fn run_datagrams<D, F, O>(config: Config, handler: D) -> ExitCode
where
    D: Fn(Datagram) -> F + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    Server::new(config).run_datagrams(handler)
}

/// What `#[uninterruptible::server]` on a handler without arguments expands to:
/// [`Server::run_http`].
#[cfg(feature = "http")]
#[doc(hidden)]
pub fn run_http<A, AF, S, E>(config: Config, app: A) -> ExitCode
where
    A: FnOnce() -> AF + Send + 'static,
    AF: Future<Output = Result<S, E>> + Send + 'static,
    S: crate::HttpService,
    E: std::fmt::Display,
{
    Server::new(config).run_http(app)
}

/// Without the `http` feature, a handler without arguments is refused here, saying so.
#[cfg(not(feature = "http"))]
#[doc(hidden)]
pub fn run_http<A: crate::__private::NeedsHttpFeature>(_config: Config, _app: A) -> ExitCode {
    unreachable!("NeedsHttpFeature has no implementation")
}

/// What the `main` that `#[uninterruptible::server]` generates calls first: the configuration
/// from the environment over the attribute's literals. A bad value is reported like every other
/// start-up failure, and ends the process with its exit status (2).
#[doc(hidden)]
pub fn config_or_exit(defaults: crate::Defaults) -> Config {
    // The first thing the generated `main` does: from here on a `USR1` that arrives while the
    // process starts waits to be read instead of ending it. (Done again, harmlessly, by `run`.)
    if let Err(e) = signals::block() {
        let _ = report(None, &e);
        std::process::exit(e.exit_status().into());
    }
    Config::from_env(defaults).unwrap_or_else(|e| {
        let _ = report(None, &e);
        std::process::exit(e.exit_status().into())
    })
}
