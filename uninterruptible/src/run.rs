//! The process lifecycle, in order: start (bind or take over), serve until something ends it
//! (a stop, a handover, an abandoned takeover), drain, clean up. Each phase is a function of its
//! own; this module only sequences them.

use crate::acl::Acl;
use crate::config::{self, Config, GENERATION, KEEP_SOCKET_FILES, SUPERVISOR};
use crate::control::{self, Control, ControlSocket, Endpoint, RestartRequest};
use crate::drain;
use crate::error::Error;
use crate::family::{self, Family, Me, Role};
use crate::handler::HandlerOutput;
use crate::handoff::{self, Dialed, Failure, Handed, Lines, Pending, Takeover, Verdict};
use crate::incoming::Incoming;
use crate::inherit::{self, Inherited, Manager};
use crate::listener::{Listener, SocketFile};
use crate::logging;
use crate::notify::Notifier;
use crate::pidfile;
use crate::serve::{Accepting, Server, Target};
use crate::shutdown::Connections;
use crate::signals::{self, Request, Signals};
use crate::stream::Stream;
use crate::tls::{self, Tls};
use nix::sys::socket::{getsockopt, sockopt};
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

/// How long a restart waits for copies of the status links to hand over.
const LINKS_WAIT: Duration = Duration::from_millis(500);
/// How often a drain reports the connections still open.
const DRAIN_PROGRESS: Duration = Duration::from_secs(10);
/// How long a new process that stops before the old one answered `ready` waits for the answer,
/// which says whether the UNIX socket file is its to remove.
const VERDICT_WAIT: Duration = Duration::from_secs(2);

/// Runs a server until it is stopped or replaced, and returns the process's exit status.
///
/// This is what `#[uninterruptible::server]` calls from the `main` it generates; call it yourself
/// to build the configuration some other way. It installs logging, builds a multi-thread tokio
/// runtime, binds (or takes over the socket of the process that started this one), and serves
/// each connection on its own task.
///
/// Call it before starting threads of your own: it blocks `TERM`, `INT`, `USR1` and `HUP` in the
/// calling thread, which every thread started afterwards inherits, and reads them in the order
/// they arrive. A thread started earlier would take the default action (end the process).
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
    start_process(config, Handler::PerConnection(handler))
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
    let listener: ListenerHandler =
        Box::new(move |incoming| Box::pin(async move { handler(incoming).await.into_result() }));
    start_process::<NoHandler, _, ()>(config, Handler::Listener(listener))
}

/// The two shapes of handler.
enum Handler<H> {
    /// `async fn(Stream)`: one task per connection.
    PerConnection(H),
    /// `async fn(Incoming)`: one task for the whole listener (boxed: it is made once).
    Listener(ListenerHandler),
}

type ListenerHandler =
    Box<dyn FnOnce(Incoming) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>> + Send>;
/// The per-connection handler type of a process whose handler takes the listener.
type NoHandler = fn(Stream) -> std::future::Ready<()>;

fn start_process<H, F, O>(config: Config, handler: Handler<H>) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    crate::timing::begin("exec and load");
    // First: from here on a USR1 or TERM waits to be read instead of ending the process.
    if let Err(e) = signals::block() {
        return report(None, &e);
    }
    let inherited = match inherit::take() {
        Ok(inherited) => inherited,
        Err(e) => return report(None, &e),
    };
    // The old process (if any) sends the sockets while this one starts its runtime.
    let dialed = Takeover::dial();
    let part = match take_supervisor() {
        Some(pid) => Part::Supervised(pid),
        None if config.supervise => Part::Supervisor,
        None => Part::Alone,
    };
    // A supervisor is generation 0; the serving processes it starts count from 1.
    let generation = std::env::var(GENERATION)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(if part == Part::Supervisor { 0 } else { 1 });
    if let Err(e) = logging::init(&config, generation) {
        return report(None, &e);
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(
                Some(&config),
                &Error::io("cannot start the tokio runtime")(e),
            );
        }
    };
    crate::timing::mark("runtime");
    let code = match part {
        Part::Supervisor => runtime.block_on(crate::supervise::supervise(
            config, generation, inherited, dialed,
        )),
        _ => runtime.block_on(lifecycle(
            config, handler, generation, inherited, dialed, part,
        )),
    };
    // Connections still open after a drain timeout are dropped here, not waited for.
    runtime.shutdown_background();
    code
}

/// The part this process plays in its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Serves, and restarts itself into a new copy.
    Alone,
    /// Supervised mode's first process: holds the sockets, runs the serving process.
    Supervisor,
    /// A serving process started by the supervisor with this pid, which restarts it.
    Supervised(u32),
}

/// The supervisor's pid, when a supervisor started this process; the variable is removed, so
/// nothing the handler starts takes itself for a serving process.
fn take_supervisor() -> Option<u32> {
    let pid = std::env::var(SUPERVISOR).ok()?.parse().ok();
    // SAFETY: no other thread runs yet (run() is documented to be called before any).
    unsafe { std::env::remove_var(SUPERVISOR) };
    pid
}

/// What the `main` that `#[uninterruptible::server]` generates calls first: the configuration
/// from the environment over the attribute's literals. A bad value is reported like every other
/// start-up failure, and ends the process with its exit status (2).
#[doc(hidden)]
pub fn config_or_exit(defaults: crate::Defaults) -> Config {
    Config::from_env(defaults).unwrap_or_else(|e| {
        let _ = report(None, &e);
        std::process::exit(e.exit_status().into())
    })
}

async fn lifecycle<H, F, O>(
    config: Config,
    handler: Handler<H>,
    generation: u64,
    inherited: Option<Inherited>,
    dialed: Option<io::Result<Dialed>>,
    part: Part,
) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    let started = match start(&config, inherited, dialed, part).await {
        Ok(started) => started,
        Err(e) => return fail(&config, e, &[]),
    };
    let mut serving = match begin(&config, handler, started, generation, part) {
        Ok(serving) => serving,
        Err(code) => return code,
    };
    let ending = serve(&config, &mut serving).await;
    // A retiring process is not the service any more: only a real stop is announced, and cleans
    // up after itself.
    let stopping = matches!(ending, Ending::Stop | Ending::ExitNow);
    if stopping {
        serving
            .notifier
            .stopping("stopping: draining open connections");
    }
    let drained = match ending {
        Ending::ExitNow => Drained::Cut,
        _ => drain(&config, &mut serving).await,
    };
    let code = match drained {
        Drained::Cut => ExitCode::FAILURE,
        Drained::All | Drained::TimedOut => ExitCode::SUCCESS,
    };
    if stopping {
        clean_up(&config, &mut serving).await;
    }
    // The last process removes the file; a retiring one left it to its successor.
    serving
        .control
        .close(stopping, drained == Drained::Cut)
        .await;
    if logging::dropped() > 0 {
        logging::to_stderr(format_args!(
            "{} log lines could not be written",
            logging::dropped()
        ));
    }
    tracing::info!(
        "exiting with {}",
        if drained == Drained::Cut { 1 } else { 0 }
    );
    code
}

/// Everything set up before the first connection is accepted.
pub(crate) struct Started {
    /// systemd or Server::Starter handed the sockets over: their socket files are theirs.
    pub(crate) manager: Option<Manager>,
    /// Started by a restart: the old process tells the service manager about this one.
    by_restart: bool,
    pub(crate) signals: Signals,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) addresses: Vec<crate::BindAddress>,
    pub(crate) takeover: Option<Takeover>,
    tls: Option<Tls>,
    /// The control socket, when this process serves one.
    pub(crate) control: Option<ControlSocket>,
    /// Links to processes still retiring from earlier restarts, received from the old process.
    pub(crate) links: Vec<Lines>,
}

/// Registers signals, then takes over the old process's sockets or binds new ones.
pub(crate) async fn start(
    config: &Config,
    inherited: Option<Inherited>,
    dialed: Option<io::Result<Dialed>>,
    part: Part,
) -> Result<Started, Error> {
    let signals = Signals::register()?;
    let by_restart = dialed.is_some();
    // Everything that can fail is done before the sockets are bound or taken over, so a broken
    // certificate at a restart ends the new process while the old one serves on.
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    crate::timing::mark("TLS");

    // A serving process under a supervisor leaves the control socket to it.
    let serves_control = config
        .control_socket
        .as_deref()
        .filter(|_| !matches!(part, Part::Supervised(_)));
    let serves_control = match (serves_control, &inherited) {
        (Some(path), Some(i)) if i.manager == Manager::ServerStarter => {
            tracing::warn!(
                "{} is not served under Server::Starter: start_server restarts the workers (send HUP to start_server)",
                path.display()
            );
            None
        }
        (path, _) => path,
    };
    let mut manager = None;
    let mut control = None;
    let mut links = Vec::new();
    let (listeners, takeover) = match dialed
        .map(|d| d.and_then(|d| d.receive(config.ready_timeout)))
    {
        Some(Ok((takeover, fds))) => {
            crate::timing::mark("handoff");
            let received = sort_received(fds, serves_control)?;
            control = received.control;
            links = received.links;
            (adopt(config, received.listeners).await?, Some(takeover))
        }
        connected => {
            if let Some(Err(e)) = connected {
                tracing::warn!(
                    "cannot take over the listening sockets from the old process ({e}); binding {}",
                    config::list(&config.bind)
                );
            }
            match inherited {
                Some(inherited) => {
                    manager = Some(inherited.manager);
                    (adopt_inherited(config, inherited).await?, None)
                }
                None => (bind_all(config, Vec::new()).await?.0, None),
            }
        }
    };
    let addresses = listeners
        .iter()
        .map(Listener::local_addr)
        .collect::<io::Result<Vec<_>>>()
        .map_err(Error::io("cannot read a listening address"))?;
    if let (Some(path), None) = (serves_control, &control) {
        match control::bind(path) {
            Ok(listener) => {
                control = Some(ControlSocket {
                    listener,
                    path: path.to_owned(),
                    bound: true,
                })
            }
            Err(e) => {
                if takeover.is_none() && manager.is_none() {
                    for file in addresses.iter().filter_map(SocketFile::of) {
                        file.remove_if_ours();
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(Started {
        manager,
        by_restart,
        signals,
        listeners,
        addresses,
        takeover,
        tls,
        control,
        links,
    })
}

/// What a handoff carried, told apart by the sockets themselves.
struct Received {
    listeners: Vec<OwnedFd>,
    control: Option<ControlSocket>,
    links: Vec<Lines>,
}

/// Sorts the sockets received from the old process: connected ones are status links to older
/// processes, the listening UNIX socket at `control_path` is the control socket, and the rest
/// are listeners. A control socket this process does not serve is closed.
fn sort_received(fds: Vec<OwnedFd>, control_path: Option<&Path>) -> Result<Received, Error> {
    let mut received = Received {
        listeners: Vec::new(),
        control: None,
        links: Vec::new(),
    };
    for fd in fds {
        if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(true) {
            let link = std::os::unix::net::UnixStream::from(fd);
            match link
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(link))
            {
                Ok(link) => received.links.push(Lines::new(link)),
                Err(e) => tracing::debug!("cannot use a received status link: {e}"),
            }
            continue;
        }
        let path = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
        )
        .ok()
        .and_then(|a| a.path().map(Path::to_path_buf));
        if path.is_some() && path.as_deref() == control_path {
            let listener = std::os::unix::net::UnixListener::from(fd);
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(listener))
                .map_err(Error::io("cannot use the control socket received"))?;
            received.control = Some(ControlSocket {
                listener,
                path: path.unwrap_or_default(),
                bound: false,
            });
        } else {
            received.listeners.push(fd);
        }
    }
    Ok(received)
}

/// Binds every configured address that `received` (sockets taken over) does not serve. On a
/// failure, UNIX socket files bound so far are removed: nothing is left behind.
/// Returns the listeners, and the received ones that serve no configured address.
async fn bind_all(
    config: &Config,
    mut received: Vec<Listener>,
) -> Result<(Vec<Listener>, Vec<Listener>), Error> {
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for address in &config.bind {
        let mut found = None;
        for (i, listener) in received.iter().enumerate() {
            if listener.serves(address).await {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => listeners.push(received.remove(i)),
            None => match Listener::bind(address, config.backlog).await {
                Ok(listener) => {
                    bound.extend(SocketFile::of(address));
                    listeners.push(listener);
                }
                Err(e) => {
                    drop(listeners);
                    for file in &bound {
                        file.remove_if_ours();
                    }
                    return Err(e);
                }
            },
        }
    }
    Ok((listeners, received))
}

/// Adopts the received sockets that serve configured addresses, binds the other addresses (the
/// configuration changed across the restart), and closes received sockets nobody wants.
async fn adopt(config: &Config, fds: Vec<OwnedFd>) -> Result<Vec<Listener>, Error> {
    let received: Vec<Listener> = fds
        .into_iter()
        .filter_map(|fd| {
            Listener::from_fd(fd)
                .map_err(|e| tracing::warn!("cannot use a received socket: {e}"))
                .ok()
        })
        .collect();
    let count = received.len();
    let (listeners, unwanted) = bind_all(config, received).await?;
    for listener in unwanted {
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            "received a socket for {address}, which is no longer configured: closing it"
        );
    }
    tracing::info!("took over {count} listening sockets from the old process");
    Ok(listeners)
}

/// Serves the sockets systemd or Server::Starter handed over. They replace the attribute's
/// `bind`; with `BIND` set too, they are matched to it: an address with no socket is bound, and a
/// socket that matches no address is an error.
async fn adopt_inherited(config: &Config, inherited: Inherited) -> Result<Vec<Listener>, Error> {
    let received = inherited
        .fds
        .into_iter()
        .map(Listener::from_fd)
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| {
            Error::InvalidConfig(format!("{}: cannot use a socket: {e}", inherited.described))
        })?;
    let count = received.len();
    tracing::info!(
        "took over {count} listening sockets: {}",
        inherited.described
    );
    if !config.origins.bind_from_env {
        return Ok(received);
    }
    let (listeners, unmatched) = bind_all(config, received).await?;
    if !unmatched.is_empty() {
        let unmatched: Vec<_> = unmatched
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        return Err(Error::InvalidConfig(format!(
            "{} handed over {} that BIND={} does not name: add them to BIND or unset it",
            inherited.described,
            config::list(&unmatched),
            config::list(&config.bind)
        )));
    }
    Ok(listeners)
}

/// A process that is serving, and what its later phases need.
struct Serving {
    signals: Signals,
    accepting: Option<Accepting>,
    /// Descriptors of our own to hand over on restart; closed when we stop accepting.
    handoff_fds: Vec<OwnedFd>,
    connections: Arc<Connections>,
    socket_files: Vec<SocketFile>,
    /// Until the old process answers our `ready`: we may yet be abandoned.
    pending: Option<Pending>,
    /// Whether the UNIX socket file is ours to remove when we stop: we bound it, or the old
    /// process let go of it.
    owns_socket_file: bool,
    /// A `TERM` or `INT` has been received: the next one exits at once.
    stop_received: bool,
    plan: handoff::Plan,
    /// An `async fn(Incoming)` handler's task: the process retires when it returns.
    listener: Option<JoinHandle<io::Result<()>>>,
    /// systemd, when it asked to be told (`NOTIFY_SOCKET`).
    notifier: Notifier,
    /// A Server::Starter worker: `start_server` restarts it, not a signal to it.
    worker: bool,
    part: Part,
    /// This process and its links to the others of the service, for `status`.
    family: Arc<Family>,
    /// The control socket, and the restarts asked on it.
    control: Endpoint,
    /// Who waits for the outcome of the restart in progress (or deferred).
    waiters: Vec<RestartRequest>,
    /// Once handed over: the answer to a restart asked as it happened.
    handed_answer: Option<String>,
}

/// How the serving phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// `TERM`/`INT`: this is the last process; clean up the pidfile and socket file.
    Stop,
    /// A new process is serving: leave the pidfile and socket file to it.
    HandedOver,
    /// The old process abandoned the restart that started us: it owns everything.
    Abandoned,
    /// A second `TERM`/`INT` while a restart was in progress.
    ExitNow,
}

/// Writes the pidfile, starts accepting, and tells the old process (if any) that we are ready.
fn begin<H, F, O>(
    config: &Config,
    handler: Handler<H>,
    started: Started,
    generation: u64,
    part: Part,
) -> Result<Serving, ExitCode>
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    let Started {
        manager,
        by_restart,
        signals,
        listeners,
        addresses,
        takeover,
        tls,
        control,
        links,
    } = started;
    let pid = std::process::id();
    let socket_files: Vec<SocketFile> = addresses.iter().filter_map(SocketFile::of).collect();
    // Socket files of inherited sockets are the service manager's, for this process and for
    // every one a restart starts from it; socket files taken over are the old process's until it
    // lets go, so a failure now must not remove them.
    let keeps_socket_files = manager.is_some() || std::env::var_os(KEEP_SOCKET_FILES).is_some();
    let owns_socket_file = takeover.is_none() && !keeps_socket_files;
    let owned: &[SocketFile] = if owns_socket_file { &socket_files } else { &[] };
    let handoff_fds = listeners
        .iter()
        .map(Listener::duplicate)
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| {
            fail(
                config,
                Error::io("cannot duplicate a listening socket")(e),
                owned,
            )
        })?;

    let connections = Arc::new(Connections::new());
    let (target, listener_task) = match handler {
        Handler::PerConnection(handler) => (Target::PerConnection(handler), None),
        Handler::Listener(handler) => {
            let (streams, incoming) = mpsc::unbounded_channel();
            let task = tokio::spawn(handler(Incoming::new(incoming)));
            (Target::Listener(streams), Some(task))
        }
    };
    let server = Server {
        target,
        connections: Arc::clone(&connections),
        limit: config.max_connections.map(|n| Arc::new(Semaphore::new(n))),
        acl: config.allowed_networks.clone().map(Acl::new),
        tls,
    };
    // The pidfile before accepting: once a connection is accepted nothing may fail, or that
    // connection would be lost with the process. Under a supervisor it names the supervisor.
    if let (Some(path), Part::Alone) = (&config.pidfile, part) {
        pidfile::write(path, pid).map_err(|e| fail(config, e, owned))?;
    }
    let accepting = server.start(listeners);
    crate::timing::mark("pidfile and accept");
    let pending = takeover.and_then(|takeover| {
        let path = takeover.path().to_owned();
        takeover
            .ready()
            .map_err(|e| {
                tracing::warn!(
                    "cannot tell the old process we are ready on {}: {e}",
                    path.display()
                );
            })
            .ok()
    });
    let tls_note = if config.tls.is_some() {
        " with TLS"
    } else {
        ""
    };
    let address = config::list(&addresses);
    tracing::info!("listening on {address}{tls_note} (pid {pid}, generation {generation})");
    crate::timing::report();
    let notifier = Notifier::from_env();
    if !by_restart {
        notifier.ready(&format!("serving on {address} (pid {pid})"));
    }
    let family = Family::new(Me::new(
        generation,
        Role::Server,
        Some(Arc::clone(&connections)),
    ));
    for link in links {
        family.add_link(link);
    }
    // Taken over, the control socket is the old process's until it lets go of it.
    let control = Endpoint::new(control, by_restart, &family, config.ready_timeout);

    let plan = handoff::Plan {
        command: config.start_command.clone(),
        ready_timeout: config.ready_timeout,
        generation: generation + 1,
        keep_socket_files: keeps_socket_files,
        bind: (manager.is_some() && !config.origins.bind_from_env).then(|| address.clone()),
        supervisor: None,
    };
    if part == Part::Alone && manager != Some(Manager::ServerStarter) {
        handoff::preflight(&plan);
    }
    Ok(Serving {
        signals,
        accepting: Some(accepting),
        handoff_fds,
        connections,
        socket_files,
        pending,
        owns_socket_file,
        stop_received: false,
        plan,
        listener: listener_task,
        notifier,
        worker: manager == Some(Manager::ServerStarter),
        part,
        family,
        control,
        waiters: Vec::new(),
        handed_answer: None,
    })
}

/// Serves until a stop, a handover or an abandonment. Restarts run on a task of their own.
async fn serve(config: &Config, s: &mut Serving) -> Ending {
    let mut restart: Option<JoinHandle<Result<Handed, Failure>>> = None;
    // A restart asked for before the old process let go of us: started once it does.
    let mut deferred = false;
    loop {
        // Asked by a signal (no one waits for the answer) or on the control socket.
        let asked: Option<(&str, Option<RestartRequest>)> = tokio::select! {
            request = s.signals.recv() => match request {
                Request::Stop(name) if s.stop_received => {
                    tracing::warn!("second {name} received: exiting now");
                    return Ending::ExitNow;
                }
                Request::Stop(name) => {
                    s.stop_received = true;
                    // A deferred restart is one in progress: the USR1 came first.
                    if restart.is_none() && !deferred {
                        tracing::info!("{name} received: stopping");
                        return Ending::Stop;
                    }
                    // Cancelling would lose what the new process accepted; finishing costs at
                    // most READY_TIMEOUT, and either way this process then goes.
                    tracing::info!(
                        "{name} received: this process stops once the restart in progress ends (a second {name} exits now)"
                    );
                    None
                }
                Request::Restart(name) => Some((name, None)),
            },
            reply = s.control.next() => Some(("a restart on the control socket", Some(reply))),
            result = finished(&mut restart) => {
                restart = None;
                match result {
                    Ok(handed) => {
                        let Handed { pid, generation, link, .. } = handed;
                        tracing::info!("new process {pid} is ready: this process stops accepting");
                        let answer = control::restarted(pid, generation);
                        s.family.me().retire();
                        // The new process owns the control socket and asks the others now;
                        // this one answers it. Let go first: a client that hears the answer
                        // and asks again must reach the new process.
                        if let Some(control) = s.control.served() {
                            control.let_go(&answer);
                        }
                        answer_waiters(s, &answer);
                        s.handed_answer = Some(answer);
                        s.family.drop_links();
                        tokio::spawn(family::answer(link, Arc::clone(&s.family)));
                        // The new process wrote the pidfile before it said ready.
                        s.notifier.handed_over(pid, &format!("new process {pid} is serving"));
                        return Ending::HandedOver;
                    }
                    Err(mut failure) => {
                        restore_pidfile(config);
                        tracing::warn!("restart failed: {failure}; still serving");
                        s.notifier.restart_failed(&failure.to_string());
                        answer_waiters(s, &control::failed(&failure));
                        if let Some(link) = failure.draining.take() {
                            s.family.add_link(link);
                        }
                        if s.stop_received {
                            tracing::info!("stopping, as asked while the restart was in progress");
                            return Ending::Stop;
                        }
                    }
                }
                None
            }
            result = returned(&mut s.listener) => {
                match result {
                    Ok(()) => tracing::warn!("the handler returned while the process was accepting: stopping"),
                    Err(e) => tracing::error!("the handler failed while the process was accepting: {e}; stopping"),
                }
                return Ending::Stop;
            }
            (verdict, link) = verdict(&mut s.pending) => match verdict {
                Verdict::Committed => {
                    s.owns_socket_file = !s.plan.keep_socket_files;
                    committed(s, link);
                    // Even after a TERM: the USR1 came first, and this process retires once
                    // the restart ends.
                    if std::mem::take(&mut deferred) {
                        tracing::info!("the old process let go of the socket: restarting");
                        restart = begin_restart(s);
                    }
                    None
                }
                Verdict::Abandoned => {
                    tracing::info!(
                        "the old process abandoned the restart that started this one: stopping"
                    );
                    if let Some(link) = link {
                        tokio::spawn(family::answer(link, Arc::clone(&s.family)));
                    }
                    answer_waiters(s, &control::failed("the old process abandoned the restart that started this one"));
                    return Ending::Abandoned;
                }
            },
        };
        let Some((name, reply)) = asked else {
            continue;
        };
        let refused = if s.worker {
            tracing::info!(
                "{name} received: ignored, start_server restarts its workers (send HUP to start_server)"
            );
            Some("start_server restarts its workers: send HUP to start_server")
        } else if let Part::Supervised(supervisor) = s.part {
            tracing::info!(
                "{name} received: ignored, the supervisor restarts this process (send USR1 to process {supervisor})"
            );
            Some("the supervisor restarts this process")
        } else if s.stop_received {
            tracing::info!("{name} received: ignored while stopping");
            Some("this process is stopping")
        } else {
            None
        };
        if let Some(why) = refused {
            if let Some(reply) = reply {
                let _ = reply.send(control::failed(why));
            }
            continue;
        }
        s.waiters.extend(reply);
        if restart.is_some() {
            tracing::info!("{name} received: a restart is already in progress");
        } else if s.pending.is_some() {
            deferred = true;
            tracing::info!(
                "{name} received: restarting once the old process has let go of the socket"
            );
        } else {
            tracing::info!("{name} received: restarting");
            restart = begin_restart(s);
        }
    }
}

/// The old process let go of the socket: this one is the service now.
fn committed(s: &mut Serving, link: Option<Lines>) {
    let Some(link) = link else { return };
    match s.part {
        // The supervisor asks this process for its status.
        Part::Supervised(_) => {
            tokio::spawn(family::answer(link, Arc::clone(&s.family)));
        }
        _ => {
            s.family.add_link(link);
            s.control.commit();
        }
    }
}

/// Tells everyone waiting on the control socket how the restart went.
fn answer_waiters(s: &mut Serving, answer: &str) {
    for waiter in s.waiters.drain(..) {
        let _ = waiter.send(answer.to_owned());
    }
}

/// Starts a restart on a task of its own. Each attempt gets a generation of its own, so a failed
/// attempt and the next one are told apart in the log. When it cannot start, those waiting on
/// the control socket are told so.
fn begin_restart(s: &mut Serving) -> Option<JoinHandle<Result<Handed, Failure>>> {
    let copies = if s.handoff_fds.is_empty() {
        None
    } else {
        let control = s.control.served().map(Control::duplicate).transpose();
        let fds: io::Result<Vec<OwnedFd>> = s.handoff_fds.iter().map(OwnedFd::try_clone).collect();
        fds.and_then(|fds| control.map(|control| (fds, control)))
            .map_err(|e| {
                tracing::error!(
                    "restart failed: cannot duplicate a listening socket: {e}; still serving"
                )
            })
            .ok()
    };
    let Some((mut fds, control)) = copies else {
        answer_waiters(s, &control::failed("cannot duplicate a listening socket"));
        return None;
    };
    s.notifier
        .reloading(&format!("restarting: starting {}", s.plan.command));
    fds.extend(control);
    let family = Arc::clone(&s.family);
    let plan = s.plan.clone();
    s.plan.generation += 1;
    Some(tokio::spawn(async move {
        // The new process asks the processes this one knows of from now on.
        let room = handoff::MAX_FDS.saturating_sub(fds.len());
        // Links only serve `status`: they never hold up a restart.
        match tokio::time::timeout(LINKS_WAIT, family.link_fds(room)).await {
            Ok(links) => fds.extend(links),
            Err(_) => tracing::warn!(
                "the status links were not ready within {LINKS_WAIT:?}: the new process will list only itself and its predecessor"
            ),
        }
        handoff::restart(plan, fds, &family).await
    }))
}

/// The outcome of the restart in flight; pending while there is none.
pub(crate) async fn finished(
    restart: &mut Option<JoinHandle<Result<Handed, Failure>>>,
) -> Result<Handed, Failure> {
    match restart {
        Some(task) => match task.await {
            Ok(result) => result,
            Err(e) => Err(Failure::task(e)),
        },
        None => std::future::pending().await,
    }
}

/// The old process's answer to our `ready`, and the connection it came on; pending while none
/// is awaited. Once it has come, there is none to wait for.
pub(crate) async fn verdict(pending: &mut Option<Pending>) -> (Verdict, Option<Lines>) {
    match pending {
        Some(p) => {
            let verdict = p.verdict().await;
            let link = pending.take().map(Pending::into_link);
            (verdict, link)
        }
        None => std::future::pending().await,
    }
}

/// What an `async fn(Incoming)` handler returned; pending while it runs, or when there is none.
/// Once it has returned, there is nothing left to wait for.
async fn returned(listener: &mut Option<JoinHandle<io::Result<()>>>) -> io::Result<()> {
    let Some(task) = listener else {
        return std::future::pending().await;
    };
    let result = match task.await {
        Ok(result) => result,
        Err(e) => Err(io::Error::other(format!("it panicked: {e}"))),
    };
    *listener = None;
    result
}

/// Gives the pidfile back to this process after a failed restart: the new process may have
/// written its own pid, and it is gone or draining.
fn restore_pidfile(config: &Config) {
    if let Some(path) = &config.pidfile {
        if let Err(e) = pidfile::write(path, std::process::id()) {
            tracing::warn!("cannot restore the pidfile: {e}");
        }
    }
}

/// How the drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drained {
    All,
    TimedOut,
    /// A second `TERM`/`INT`: exit now with what is still open.
    Cut,
}

/// Stops accepting and waits for the open connections, bounded by `DRAIN_TIMEOUT`.
async fn drain(config: &Config, s: &mut Serving) -> Drained {
    // The accept task drops its listener, and we close our duplicate. Both are closed, never
    // shut down, so a new process sharing the socket keeps accepting.
    if let Some(accepting) = s.accepting.take() {
        accepting.stop().await;
    }
    s.handoff_fds.clear();
    // Long-lived handlers that listen for it now finish their exchange and close.
    drain::announce();

    let started = tokio::time::Instant::now();
    let mut listener = s.listener.take();
    // An `async fn(Incoming)` handler is waited for; per-connection handlers are counted.
    let waits_for_handler = listener.is_some();
    if waits_for_handler {
        tracing::info!("draining: waiting for the handler to return");
    } else {
        tracing::info!("draining {} open connections", s.connections.count());
    }
    let connections = Arc::clone(&s.connections);
    let drain = async {
        match &mut listener {
            None => connections.drained(config.drain_timeout).await,
            Some(_) => match config.drain_timeout {
                None => {
                    let _ = returned(&mut listener).await;
                    true
                }
                Some(limit) => tokio::time::timeout(limit, returned(&mut listener))
                    .await
                    .is_ok(),
            },
        }
    };
    tokio::pin!(drain);
    let mut progress = tokio::time::interval_at(started + DRAIN_PROGRESS, DRAIN_PROGRESS);
    loop {
        tokio::select! {
            all = &mut drain => {
                if all {
                    return Drained::All;
                }
                tracing::warn!(
                    "drain timeout: closing {} connections still open",
                    s.connections.count()
                );
                return Drained::TimedOut;
            }
            _ = progress.tick() => {
                let waited = started.elapsed().as_secs();
                let open = if waits_for_handler {
                    "the handler has not returned".to_owned()
                } else {
                    format!("{} connections still open", s.connections.count())
                };
                match config.drain_timeout {
                    None => tracing::info!(
                        "draining: {open} after {waited} s (no DRAIN_TIMEOUT: waiting)"
                    ),
                    Some(limit) => tracing::info!(
                        "draining: {open} after {waited} s (ended at DRAIN_TIMEOUT, {} s)",
                        limit.as_secs_f64()
                    ),
                }
            }
            request = s.signals.recv() => match request {
                Request::Stop(name) if s.stop_received => {
                    tracing::warn!(
                        "second {name} received: exiting now with {} connections open",
                        s.connections.count()
                    );
                    return Drained::Cut;
                }
                Request::Stop(name) => {
                    // A service manager stopping the service signals every process in it; a
                    // retiring one goes on draining.
                    s.stop_received = true;
                    tracing::info!(
                        "{name} received while retiring: draining goes on (a second {name} exits now)"
                    );
                }
                Request::Restart(name) => tracing::info!("{name} received: ignored while draining"),
            },
            reply = s.control.next() => {
                let answer = s
                    .handed_answer
                    .clone()
                    .unwrap_or_else(|| control::failed(control::STOPPED));
                let _ = reply.send(answer);
            }
            (verdict, link) = verdict(&mut s.pending) => {
                s.owns_socket_file = verdict == Verdict::Committed && !s.plan.keep_socket_files;
                if let Some(link) = link {
                    tokio::spawn(family::answer(link, Arc::clone(&s.family)));
                }
            }
        }
    }
}

/// Removes what the last process leaves: the pidfile and UNIX socket file, if still ours.
async fn clean_up(config: &Config, s: &mut Serving) {
    if let Some(path) = &config.pidfile {
        pidfile::remove_if_ours(path, std::process::id());
    }
    if s.pending.is_some() {
        match tokio::time::timeout(VERDICT_WAIT, verdict(&mut s.pending)).await {
            Ok((v, _)) => s.owns_socket_file = v == Verdict::Committed && !s.plan.keep_socket_files,
            Err(_) => {
                tracing::warn!("the old process has not answered: leaving the socket file to it")
            }
        }
    }
    if s.owns_socket_file {
        for file in &s.socket_files {
            file.remove_if_ours();
        }
    }
}

/// A failure at startup after something was made: nothing is left behind.
pub(crate) fn fail(config: &Config, e: Error, socket_files: &[SocketFile]) -> ExitCode {
    for file in socket_files {
        file.remove_if_ours();
    }
    report(Some(config), &e)
}

/// The one place a fatal start-up error is reported: once, on one line on stderr with its
/// causes (and in the log file, if there is one); the exit status says what kind it was.
fn report(config: Option<&Config>, e: &Error) -> ExitCode {
    let line = e.report();
    if config.is_some_and(|c| c.log_path.is_some()) {
        tracing::error!("{line}");
    }
    logging::to_stderr(format_args!("{line}"));
    ExitCode::from(e.exit_status())
}
