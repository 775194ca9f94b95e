//! Listening sockets handed over by whoever started the process: systemd socket activation
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) or Server::Starter (`SERVER_STARTER_PORT`).
//!
//! Like `BIND`, they are configuration from the environment: they replace the attribute's `bind`
//! literal. With `BIND` set too, they are matched to it by address. The variables are removed
//! once read, so nothing the handler starts inherits them.

use crate::error::{Error, Source};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use uninterruptible_grammar as grammar;

const LISTEN_FDS: &str = "LISTEN_FDS";
const LISTEN_PID: &str = "LISTEN_PID";
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
const SERVER_STARTER_PORT: &str = "SERVER_STARTER_PORT";
/// systemd passes its sockets from this descriptor on.
const SD_LISTEN_FDS_START: RawFd = 3;

/// Who handed the sockets over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Manager {
    Systemd,
    /// Server::Starter: this process is one of its workers; `start_server` restarts it.
    ServerStarter,
}

/// The sockets, and who handed them over.
#[derive(Debug)]
pub(crate) struct Inherited {
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) manager: Manager,
    /// The variables as they were, for errors and logs.
    pub(crate) described: String,
}

/// Reads the sockets handed over, if any, and removes the variables. `max_sockets` is how many
/// listeners a restart can hand on ([`crate::Config::max_listeners`]).
///
/// Every variable that is read must yield at least one listening stream socket, each once:
/// anything else is a configuration error naming the variable, never a server that listens on
/// nothing, or on the attribute's default instead.
///
/// Must run before the process starts a thread: it changes the environment.
pub(crate) fn take(max_sockets: usize) -> Result<Option<Inherited>, Error> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (fds, pid, names, starter) = (
        var(LISTEN_FDS),
        var(LISTEN_PID),
        var(LISTEN_FDNAMES),
        var(SERVER_STARTER_PORT),
    );
    for name in [LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, SERVER_STARTER_PORT] {
        // SAFETY: no other thread runs yet (run() is documented to be called before any), so
        // nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    if let Some(count) = fds {
        // systemd's sockets are for the process it started, which a restart's new copy is not.
        if pid.as_deref() != Some(&std::process::id().to_string()) {
            return from_server_starter(starter);
        }
        return from_systemd(&count, names.as_deref(), max_sockets).map(Some);
    }
    from_server_starter(starter)
}

/// `LISTEN_FDS` sockets from descriptor 3 on, named by `LISTEN_FDNAMES` when it is set. As
/// `sd_listen_fds` does, a count that is not a positive number, or names that do not match it
/// one for one, are refused.
fn from_systemd(count: &str, names: Option<&str>, max_sockets: usize) -> Result<Inherited, Error> {
    let n = grammar::count(count, 1..=max_sockets).map_err(|expected| {
        Error::invalid(
            Source::Env(LISTEN_FDS),
            count,
            format!(
                "{expected}: how many listening sockets are passed from descriptor {SD_LISTEN_FDS_START} on (a restart hands them all over in one message of at most {} descriptors, the control socket included)",
                grammar::MAX_HANDOFF_FDS
            ),
        )
    })?;
    if let Some(names) = names {
        let named = names.split(':').count();
        if named != n {
            return Err(Error::invalid(
                Source::Env(LISTEN_FDNAMES),
                names,
                format!(
                    "one name per socket, separated by `:` ({LISTEN_FDS}={count} passes {n}); it has {named}"
                ),
            ));
        }
    }
    let described = match names {
        Some(names) => format!("{LISTEN_FDS}={count} ({LISTEN_FDNAMES}={names})"),
        None => format!("{LISTEN_FDS}={count}"),
    };
    // At most MAX_HANDOFF_FDS: the range cannot overflow.
    let last = SD_LISTEN_FDS_START + n as RawFd - 1;
    let fds = (SD_LISTEN_FDS_START..=last)
        .map(|fd| {
            listening(fd).map_err(|why| {
                Error::invalid(
                    Source::Env(LISTEN_FDS),
                    count,
                    format!(
                        "as many listening sockets as descriptors {SD_LISTEN_FDS_START} to {last} hold; descriptor {fd} {why}"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Inherited {
        fds,
        manager: Manager::Systemd,
        described,
    })
}

/// `host:port=fd;path=fd;...`: split on `;`, then on the last `=`. What each socket is, is
/// asked of the socket itself later, never told by the key's shape.
fn from_server_starter(value: Option<String>) -> Result<Option<Inherited>, Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    let described = format!("{SERVER_STARTER_PORT}={value}");
    let refuse = |why: String| {
        Error::invalid(
            Source::Env(SERVER_STARTER_PORT),
            &value,
            format!(
                "host:port=fd or path=fd entries separated by `;`, each a listening socket named once; {why}"
            ),
        )
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut seen: Vec<RawFd> = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let fd = entry
            .rsplit_once('=')
            .and_then(|(_, fd)| fd.trim().parse::<RawFd>().ok())
            .filter(|fd| *fd >= 0)
            .ok_or_else(|| refuse(format!("{entry:?} is not one")))?;
        if seen.contains(&fd) {
            // Two owners of one descriptor would close it twice.
            return Err(refuse(format!("descriptor {fd} is named twice")));
        }
        seen.push(fd);
        fds.push(listening(fd).map_err(|why| refuse(format!("descriptor {fd} {why}")))?);
    }
    if fds.is_empty() {
        return Err(refuse("there is none".into()));
    }
    Ok(Some(Inherited {
        fds,
        manager: Manager::ServerStarter,
        described,
    }))
}

/// Takes `fd` (not negative) as a listening socket, if it is a TCP or UNIX stream socket that
/// listens, or a UDP or UNIX datagram socket that is not connected; else says what it is
/// instead.
fn listening(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: only borrowed, to ask the kernel what it is; `fd` is not -1, and one that is not
    // open only makes the calls fail.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let what = |e: Errno| match e {
        Errno::EBADF => "is not open".to_owned(),
        Errno::ENOTSOCK => "is not a socket".to_owned(),
        e => format!("cannot be asked what it is ({e})"),
    };
    match getsockopt(&borrowed, sockopt::SockType).map_err(what)? {
        SockType::Stream => {
            if !getsockopt(&borrowed, sockopt::AcceptConn).map_err(what)? {
                return Err("is a socket that is not listening".into());
            }
        }
        // systemd's `ListenDatagram=`: bound, and open to every peer.
        SockType::Datagram => {
            if nix::sys::socket::getpeername::<SockaddrStorage>(fd).is_ok() {
                return Err("is a datagram socket connected to one peer".into());
            }
        }
        _ => return Err("is not a stream or datagram socket".into()),
    }
    let family = getsockname::<SockaddrStorage>(fd).map_err(what)?.family();
    if !matches!(
        family,
        Some(AddressFamily::Inet | AddressFamily::Inet6 | AddressFamily::Unix)
    ) {
        return Err("is not an IP or UNIX socket".into());
    }
    // SAFETY: the process that started us handed this descriptor to us, by the protocol of the
    // variable; it is open, and nothing else in this process owns it (each is taken once).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
