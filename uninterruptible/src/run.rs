//! The process lifecycle: start (bind or take over), serve, restart on `USR1`, drain on `TERM`.

use crate::acl::Acl;
use crate::config::{Config, GENERATION};
use crate::error::Error;
use crate::handoff::{self, Takeover};
use crate::listener::{Listener, SocketFile};
use crate::logging;
use crate::pidfile;
use crate::serve::Server;
use crate::shutdown::Connections;
use crate::signals::{Request, Signals};
use crate::stream::Stream;
use crate::tls::{self, Tls};
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// What a handler may return: `std::io::Result<()>` or `()`. An error ends only its own
/// connection (it is logged at debug level with the peer).
#[diagnostic::on_unimplemented(
    message = "a server handler must return `std::io::Result<()>` or `()`, not `{Self}`",
    label = "change the return type to `std::io::Result<()>`"
)]
pub trait HandlerOutput: Send + 'static {
    /// The outcome as an `io::Result`.
    fn into_result(self) -> io::Result<()>;
}

impl HandlerOutput for io::Result<()> {
    #[inline(always)]
    fn into_result(self) -> io::Result<()> {
        self
    }
}

impl HandlerOutput for () {
    #[inline(always)]
    fn into_result(self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs a server until it is stopped or replaced, and returns the process's exit status.
///
/// This is what `#[uninterruptible::server]` calls from the `main` it generates; call it yourself
/// to build the configuration some other way. It installs logging, builds a multi-thread tokio
/// runtime, binds (or takes over the socket of the process that started this one), and serves
/// each connection on its own task.
///
/// ```no_run
/// use tokio::io::AsyncWriteExt;
///
/// fn main() -> std::process::ExitCode {
///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000");
///     let config = uninterruptible::Config::from_env(defaults).unwrap_or_else(|e| e.exit());
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
    if let Err(e) = logging::init(&config) {
        e.exit();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| Error::io("cannot start the tokio runtime")(e).exit());
    let code = runtime.block_on(lifecycle(config, handler));
    // Connections still open after a drain timeout are dropped here, not waited for.
    runtime.shutdown_background();
    code
}

/// How the serving phase ended.
enum Ending {
    /// `TERM`/`INT`: this is the last process; clean up the pidfile and socket file.
    Stop,
    /// A new process is serving: leave the pidfile and socket file to it.
    HandedOver,
}

/// A restart in flight: the task doing it, and how to call it off.
struct InFlight {
    task: JoinHandle<Result<u32, handoff::Failure>>,
    cancel: oneshot::Sender<()>,
}

async fn lifecycle<H, F, O>(config: Config, handler: H) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    match start(&config).await {
        Ok(started) => serve(config, handler, started).await,
        Err(e) => fail(e, None),
    }
}

/// Everything set up before the first connection is accepted.
struct Started {
    signals: Signals,
    listener: Listener,
    address: crate::BindAddress,
    takeover: Option<Takeover>,
    generation: u64,
    tls: Option<Tls>,
}

/// Registers signals, then takes over the old process's socket or binds a new one.
async fn start(config: &Config) -> Result<Started, Error> {
    // First: from here on a USR1 or TERM is ours to handle, not the default (death).
    let signals = Signals::register()?;
    let generation = std::env::var(GENERATION)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1);
    // Everything that can fail is done before the socket is bound or taken over, so a broken
    // certificate at a restart ends the new process while the old one serves on.
    let tls = config.tls.as_ref().map(tls::load).transpose()?;

    let (listener, takeover) = match Takeover::connect(config.ready_timeout) {
        None => (Listener::bind(&config.bind).await?, None),
        Some(Err(e)) => {
            tracing::warn!(
                "cannot take over the listening socket from the old process ({e}); binding {}",
                config.bind
            );
            (Listener::bind(&config.bind).await?, None)
        }
        Some(Ok((takeover, fd))) => (adopt(config, fd).await?, Some(takeover)),
    };
    let address = listener
        .local_addr()
        .map_err(Error::io("cannot read the listening address"))?;
    Ok(Started {
        signals,
        listener,
        address,
        takeover,
        generation,
        tls,
    })
}

/// Adopts the received socket if it serves the configured address; otherwise binds that
/// address and closes the received socket (the configuration changed across the restart).
async fn adopt(config: &Config, fd: OwnedFd) -> Result<Listener, Error> {
    match Listener::from_fd(fd) {
        Ok(listener) if listener.serves(&config.bind).await => {
            tracing::info!("took over the listening socket from the old process");
            Ok(listener)
        }
        Ok(listener) => {
            let received = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!(
                "received a socket for {received} but configured for {}: binding that instead",
                config.bind
            );
            drop(listener);
            Listener::bind(&config.bind).await
        }
        Err(e) => {
            tracing::warn!(
                "cannot use the received socket ({e}); binding {}",
                config.bind
            );
            Listener::bind(&config.bind).await
        }
    }
}

async fn serve<H, F, O>(config: Config, handler: H, started: Started) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    let Started {
        mut signals,
        listener,
        address,
        takeover,
        generation,
        tls,
    } = started;
    let pid = std::process::id();
    let socket_file = SocketFile::of(&address);
    // Before serving, a failure removes the socket file only if we created it: one taken over
    // is still the old process's, which serves on.
    let owned_file = socket_file.as_ref().filter(|_| takeover.is_none());
    // A descriptor of our own to hand over on restart; closed when we stop accepting.
    let handoff_fd = match listener.duplicate() {
        Ok(fd) => fd,
        Err(e) => {
            return fail(
                Error::io("cannot duplicate the listening socket")(e),
                owned_file,
            );
        }
    };

    let connections = Arc::new(Connections::new());
    let server = Server {
        handler,
        connections: Arc::clone(&connections),
        limit: config.max_connections.map(|n| Arc::new(Semaphore::new(n))),
        acl: config.allowed_networks.clone().map(Acl::new),
        tls,
    };
    // The pidfile before accepting: once a connection is accepted nothing may fail, or that
    // connection would be lost with the process.
    if let Some(path) = &config.pidfile {
        if let Err(e) = pidfile::write(path, pid) {
            return fail(e, owned_file);
        }
    }
    let accepting = server.start(listener);
    if let Some(takeover) = takeover {
        let path = takeover.path().to_owned();
        if let Err(e) = takeover.ready() {
            tracing::warn!(
                "cannot tell the old process we are ready on {}: {e}",
                path.display()
            );
        }
    }
    let tls_note = if config.tls.is_some() {
        " with TLS"
    } else {
        ""
    };
    tracing::info!("listening on {address}{tls_note} (pid {pid}, generation {generation})");

    let plan = handoff::Plan {
        command: config.start_command.clone(),
        ready_timeout: config.ready_timeout,
        pidfile: config.pidfile.clone(),
        generation: generation + 1,
    };
    let mut restart: Option<InFlight> = None;
    let ending = loop {
        tokio::select! {
            request = signals.recv() => match request {
                Request::Stop(name) => {
                    tracing::info!("{name} received: stopping");
                    break Ending::Stop;
                }
                Request::Restart(name) if restart.is_some() => {
                    tracing::info!("{name} received: ignored, a restart is already in progress");
                }
                Request::Restart(name) => {
                    tracing::info!("{name} received: restarting");
                    match handoff_fd.try_clone() {
                        Ok(fd) => {
                            let (cancel, cancel_rx) = oneshot::channel();
                            let task = tokio::spawn(handoff::restart(plan.clone(), fd, cancel_rx));
                            restart = Some(InFlight { task, cancel });
                        }
                        Err(e) => tracing::error!(
                            "restart failed: cannot duplicate the listening socket: {e}; still serving"
                        ),
                    }
                }
            },
            result = finished(&mut restart) => {
                restart = None;
                match result {
                    Ok(pid) => {
                        tracing::info!("new process {pid} is ready: this process stops accepting");
                        break Ending::HandedOver;
                    }
                    Err(failure) => tracing::warn!("restart failed: {failure}; still serving"),
                }
            }
        }
    };
    // A stop during a restart: the new process is killed and reaped before we go on.
    if let Some(InFlight { task, cancel }) = restart.take() {
        let _ = cancel.send(());
        if let Ok(Err(failure)) = task.await {
            tracing::info!("{failure}");
        }
    }

    // Stop accepting: the accept task drops its listener, and we close our duplicate. Both are
    // closed, never shut down, so a new process sharing the socket keeps accepting.
    accepting.stop().await;
    drop(handoff_fd);

    tracing::info!("draining {} open connections", connections.count());
    let drain = connections.drained(config.drain_timeout);
    tokio::pin!(drain);
    let drained = loop {
        tokio::select! {
            drained = &mut drain => break drained,
            request = signals.recv() => match request {
                Request::Stop(name) => {
                    tracing::warn!("second {name} received: exiting now with {} connections open", connections.count());
                    if let Ending::Stop = ending {
                        clean_up(&config, socket_file.as_ref());
                    }
                    return ExitCode::FAILURE;
                }
                Request::Restart(name) => tracing::info!("{name} received: ignored while draining"),
            },
        }
    };
    if !drained {
        tracing::warn!(
            "drain timeout: closing {} connections still open",
            connections.count()
        );
    }
    if let Ending::Stop = ending {
        clean_up(&config, socket_file.as_ref());
    }
    tracing::info!("exiting (pid {pid}, generation {generation})");
    ExitCode::SUCCESS
}

/// The outcome of the restart in flight; pending while there is none.
async fn finished(restart: &mut Option<InFlight>) -> Result<u32, handoff::Failure> {
    match restart {
        Some(in_flight) => match (&mut in_flight.task).await {
            Ok(result) => result,
            Err(e) => Err(handoff::Failure::Setup(
                "the restart task failed",
                io::Error::other(e),
            )),
        },
        None => std::future::pending().await,
    }
}

/// Removes what the last process leaves: the pidfile and UNIX socket file, if still ours.
fn clean_up(config: &Config, socket_file: Option<&SocketFile>) {
    if let Some(path) = &config.pidfile {
        pidfile::remove_if_ours(path, std::process::id());
    }
    if let Some(file) = socket_file {
        file.remove_if_ours();
    }
}

/// A failure at startup: reported once, and nothing is left behind.
fn fail(e: Error, socket_file: Option<&SocketFile>) -> ExitCode {
    tracing::error!("{e}");
    eprintln!("uninterruptible: {e}");
    if let Some(file) = socket_file {
        file.remove_if_ours();
    }
    ExitCode::from(e.exit_status())
}
