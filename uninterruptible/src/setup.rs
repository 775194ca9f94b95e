//! What both roles (a serving process and a supervisor) do before serving: read signals, load
//! TLS, take the listening sockets (from the old process, a service manager, or by binding),
//! match them to the configuration, bind the control socket; and how a failure at start-up is
//! reported, leaving nothing behind.

use crate::config::{self, Config};
use crate::control::{self, ControlSocket};
use crate::error::Error;
use crate::handle::Requests;
use crate::handoff::{self, Carried, Dialed, Takeover};
use crate::inherit::{Inherited, Manager};
use crate::link::Lines;
use crate::listener::{Listener, SocketFile, SocketFiles};
use crate::logging;
use crate::origin::Part;
use crate::signals::Signals;
use crate::tls::{self, Tls};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;

/// What the conductor learned before the role starts: who started this process and how.
pub(crate) struct Begun {
    pub(crate) config: Config,
    pub(crate) generation: u64,
    /// Sockets a service manager handed over.
    pub(crate) inherited: Option<Inherited>,
    /// Started by a restart: the handoff connection, made first thing.
    pub(crate) dialed: Option<io::Result<Dialed>>,
    pub(crate) part: Part,
    /// The UNIX socket files are a service manager's or a supervisor's.
    pub(crate) keep_socket_files: bool,
    pub(crate) program: Program,
}

/// What the program gives besides its configuration and its main handler.
#[derive(Debug)]
pub(crate) struct Program {
    /// What the program's [`Handle`](crate::Handle)s ask.
    pub(crate) requests: Requests,
    /// The datagram handler, for `udp://` and `unixgram://` sockets.
    pub(crate) datagrams: Option<crate::datagram::DatagramHandler>,
    /// Whether the main handler serves connections (not so for
    /// [`Server::run_datagrams`](crate::Server::run_datagrams)).
    pub(crate) streams: bool,
    /// State handed from process to process, when the program saves some
    /// ([`Server::run_with_handover`](crate::Server::run_with_handover)).
    pub(crate) carry: Option<std::sync::Arc<crate::handover::Carry>>,
}

/// Everything set up before the first connection is accepted.
pub(crate) struct Started {
    /// systemd or Server::Starter handed the sockets over: their socket files are theirs.
    pub(crate) manager: Option<Manager>,
    /// The UNIX socket files are a service manager's or a supervisor's, for this process and
    /// every one a restart starts from it: never removed.
    pub(crate) keeps_socket_files: bool,
    /// Started by a restart: the old process tells the service manager about this one.
    pub(crate) by_restart: bool,
    pub(crate) signals: Signals,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) addresses: Vec<crate::BindAddress>,
    pub(crate) takeover: Option<Takeover>,
    pub(crate) tls: Option<Tls>,
    /// The control socket, when this process serves one.
    pub(crate) control: Option<ControlSocket>,
    /// Links to processes still retiring from earlier restarts, received from the old process.
    pub(crate) links: Vec<Lines>,
}

/// Registers signals, then takes over the old process's sockets or binds new ones, checks that
/// they fit `program`'s handlers, and takes up what the old process carried over.
pub(crate) async fn start(
    config: &Config,
    inherited: Option<Inherited>,
    dialed: Option<io::Result<Dialed>>,
    part: Part,
    keep_socket_files: bool,
    program: &Program,
) -> Result<Started, Error> {
    let signals = Signals::register()?;
    let by_restart = dialed.is_some();
    // Everything that can fail is done before the sockets are bound or taken over, so a broken
    // certificate at a restart ends the new process while the old one serves on.
    let tls = config
        .tls
        .as_ref()
        .map(|files| tls::load(files, config.alpn))
        .transpose()?;
    crate::timing::mark("TLS");
    let serves_control = control_path(config, part, inherited.as_ref());
    let mut taken = take_sockets(config, inherited, dialed, serves_control, part).await?;
    if let Some(takeover) = taken.takeover.as_mut() {
        take_up(takeover.take_carried(), tls.as_ref(), program);
    }
    let addresses = taken
        .listeners
        .iter()
        .map(Listener::local_addr)
        .collect::<io::Result<Vec<_>>>()
        .map_err(Error::io("cannot read a listening address"))?;
    let keeps_socket_files = keep_socket_files || taken.manager.is_some();
    if let Err(e) = check_shapes(&taken.listeners, program) {
        // A restart's old process hears why; what this process bound goes.
        SocketFiles::new(&addresses, keeps_socket_files, taken.takeover.is_some()).remove();
        if let Some(takeover) = taken.takeover {
            takeover.failed(&e.report());
        }
        return Err(e);
    }
    let mut control = taken.control;
    if let (Some(path), None) = (serves_control, &control) {
        control = Some(bind_control(path).inspect_err(|_| {
            SocketFiles::new(&addresses, keeps_socket_files, taken.takeover.is_some()).remove();
        })?);
    }
    Ok(Started {
        keeps_socket_files,
        manager: taken.manager,
        by_restart,
        signals,
        listeners: taken.listeners,
        addresses,
        takeover: taken.takeover,
        tls,
        control,
        links: taken.links,
    })
}

/// The control socket this process serves, if any: a serving process under a supervisor leaves
/// it to the supervisor, and a Server::Starter worker serves none.
fn control_path<'a>(
    config: &'a Config,
    part: Part,
    inherited: Option<&Inherited>,
) -> Option<&'a Path> {
    let path = config
        .control_socket
        .as_deref()
        .filter(|_| !matches!(part, Part::Supervised(_)))?;
    if inherited.is_some_and(|i| i.manager == Manager::ServerStarter) {
        tracing::warn!(
            "{} is not served under Server::Starter: start_server restarts the workers (send HUP to start_server)",
            path.display()
        );
        return None;
    }
    Some(path)
}

/// The sockets a process starts with, and where they came from.
struct Taken {
    listeners: Vec<Listener>,
    takeover: Option<Takeover>,
    manager: Option<Manager>,
    control: Option<ControlSocket>,
    links: Vec<Lines>,
}

/// Takes the listening sockets: from the old process, else from a service manager, else by
/// binding the configured addresses.
async fn take_sockets(
    config: &Config,
    inherited: Option<Inherited>,
    dialed: Option<io::Result<Dialed>>,
    serves_control: Option<&Path>,
    part: Part,
) -> Result<Taken, Error> {
    let received = dialed.map(|d| d.and_then(|d| d.receive(config.ready_timeout)));
    if let Some(Err(e)) = &received {
        if handoff::is_state_not_received(e) {
            let e = io::Error::new(e.kind(), e.to_string());
            return Err(Error::io("cannot take over from the old process")(e));
        }
    }
    if let (Part::Supervised(supervisor), Some(Err(_)) | None) = (part, &received) {
        // Its sockets are the supervisor's (which may have been killed meanwhile): binding
        // them itself would leave a process nobody supervises holding the service's port.
        let why = match received {
            Some(Err(e)) => e,
            _ => io::Error::other("no handoff socket was given"),
        };
        let why = io::Error::new(
            why.kind(),
            format!("supervisor process {supervisor}: {why}"),
        );
        return Err(Error::io(
            "cannot take the listening sockets from the supervisor",
        )(why));
    }
    match received {
        Some(Ok((takeover, fds))) => {
            crate::timing::mark("handoff");
            let received = handoff::sort_received(fds, serves_control)?;
            return Ok(Taken {
                listeners: adopt(config, received.listeners).await?,
                takeover: Some(takeover),
                manager: None,
                control: received.control,
                links: received.links,
            });
        }
        Some(Err(e)) => tracing::warn!(
            "cannot take over the listening sockets from the old process ({e}); binding {}",
            config::list(&config.bind)
        ),
        None => {}
    }
    let (listeners, manager) = match inherited {
        Some(inherited) => {
            let manager = inherited.manager;
            (adopt_inherited(config, inherited).await?, Some(manager))
        }
        None => (bind_all(config, Vec::new()).await?.0, None),
    };
    Ok(Taken {
        listeners,
        takeover: None,
        manager,
        control: None,
        links: Vec::new(),
    })
}

/// Binds the control socket at `path`, a socket file of this process's.
fn bind_control(path: &Path) -> Result<ControlSocket, Error> {
    Ok(ControlSocket {
        listener: control::bind(path)?,
        path: path.to_owned(),
        bound: true,
    })
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
        let ipv6_only = address.needs_ipv6_only(&config.bind).await;
        match found {
            Some(i) => listeners.push(received.remove(i)),
            None => match Listener::bind(address, config.backlog, ipv6_only).await {
                Ok(listener) => {
                    bound.extend(SocketFile::bound(address));
                    listeners.push(listener);
                }
                Err(e) => {
                    let e = explain_dual_stack(e, address, listeners.iter().chain(&received));
                    let e = explain_duplicate(e, config, address, &listeners).await;
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

/// An IPv4 address that cannot be bound because a `[::]` socket taken over on its port takes
/// IPv4 too: that socket keeps its setting, so the error says why and what to change.
fn explain_dual_stack<'a>(
    e: Error,
    address: &crate::BindAddress,
    taken_over: impl IntoIterator<Item = &'a Listener>,
) -> Error {
    let (Error::Bind { source, .. }, crate::BindAddress::Tcp { port, .. }) = (&e, address) else {
        return e;
    };
    if source.kind() != io::ErrorKind::AddrInUse
        || !taken_over.into_iter().any(|l| l.takes_ipv4_on(*port))
    {
        return e;
    }
    Error::Bind {
        address: address.to_string(),
        source: io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "the socket taken over for tcp://[::]:{port} takes IPv4 connections too (dual stack) and holds the port: leave {address} out, or hand over a [::] socket that is IPv6-only (BindIPv6Only=ipv6-only in a systemd .socket unit)"
            ),
        ),
    }
}

/// An address that cannot be bound because one listed before it is the same socket under
/// another name (`localhost` and `127.0.0.1`): a configuration error that names both.
async fn explain_duplicate(
    e: Error,
    config: &Config,
    address: &crate::BindAddress,
    bound: &[Listener],
) -> Error {
    let Error::Bind { source, .. } = &e else {
        return e;
    };
    if source.kind() != io::ErrorKind::AddrInUse {
        return e;
    }
    for (earlier, listener) in config.bind.iter().zip(bound) {
        if listener.serves(address).await {
            let list = crate::config::list(&config.bind);
            return Error::invalid(
                config.origins.bind,
                &list,
                format!("each address once; {address} is {earlier}, listed before it"),
            );
        }
    }
    e
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
    if !config.origins.bind_from_env() {
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

/// What the old process carried over besides the sockets, taken up: the socket files as it knew
/// them, its TLS session-ticket keys (sessions resume across the restart) and the program's
/// state for `init`.
fn take_up(carried: Carried, tls: Option<&Tls>, program: &Program) {
    if let Some(files) = carried.files {
        SocketFile::adopt_known(&files);
    }
    if let (Some(tls), Some(keys)) = (tls, carried.tickets) {
        if let Err(why) = tls.tickets.adopt(&keys) {
            tracing::warn!(
                "cannot use the TLS session-ticket keys handed over ({why}): sessions from before this restart will not resume"
            );
        }
    }
    if let (Some(carry), Some(app)) = (&program.carry, carried.app) {
        carry.receive(&app);
    }
}

/// Whether the sockets taken fit the program's handlers: a datagram socket needs a datagram
/// handler, and a stream socket a handler of connections.
fn check_shapes(listeners: &[Listener], program: &Program) -> Result<(), Error> {
    let (datagram_handler, stream_handler) = (program.datagrams.is_some(), program.streams);
    let address = |l: &Listener| {
        l.local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    };
    if let Some(l) = listeners
        .iter()
        .find(|l| l.is_datagram() && !datagram_handler)
    {
        return Err(Error::InvalidConfig(format!(
            "{} takes datagrams, and this server has no datagram handler: bind it to tcp:// or unix://, or give the server one (a handler taking `uninterruptible::Datagram`, or one beside a handler of connections: `datagrams = \"...\"` in the attribute, Server::datagrams in the library)",
            address(l)
        )));
    }
    if let Some(l) = listeners
        .iter()
        .find(|l| !l.is_datagram() && !stream_handler)
    {
        return Err(Error::InvalidConfig(format!(
            "{} takes connections, and this server only handles datagrams: bind it to udp:// or unixgram://",
            address(l)
        )));
    }
    Ok(())
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
pub(crate) fn report(config: Option<&Config>, e: &Error) -> ExitCode {
    let line = e.report();
    if config.is_some_and(|c| c.log_path.is_some()) {
        tracing::error!("{line}");
    }
    logging::to_stderr(format_args!("{line}"));
    ExitCode::from(e.exit_status())
}

/// Copies of the listening sockets, as plain descriptors: to hand over at a restart, or for a
/// supervisor to hold without accepting.
pub(crate) fn duplicate(listeners: &[Listener]) -> Result<Vec<OwnedFd>, Error> {
    listeners
        .iter()
        .map(Listener::duplicate)
        .collect::<io::Result<Vec<_>>>()
        .map_err(Error::io("cannot duplicate a listening socket"))
}
