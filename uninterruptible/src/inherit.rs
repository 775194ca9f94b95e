//! Listening sockets handed over by whoever started the process: systemd socket activation
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) or Server::Starter (`SERVER_STARTER_PORT`).
//!
//! Like `BIND`, they are configuration from the environment: they replace the attribute's `bind`
//! literal. With `BIND` set too, they are matched to it by address. The variables are removed
//! once read, so nothing the handler starts inherits them.

use crate::error::Error;
use nix::sys::socket::{getsockopt, sockopt};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// Reads the sockets handed over, if any, and removes the variables.
///
/// Must run before the process starts a thread: it changes the environment.
pub(crate) fn take() -> Result<Option<Inherited>, Error> {
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
        let n: RawFd = count.trim().parse().map_err(|_| {
            Error::invalid(
                crate::Source::Env(LISTEN_FDS),
                &count,
                "a number of descriptors",
            )
        })?;
        let described = match names {
            Some(names) => format!("{LISTEN_FDS}={count} ({LISTEN_FDNAMES}={names})"),
            None => format!("{LISTEN_FDS}={count}"),
        };
        let fds = (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n)
            .map(|fd| listening(fd, &described))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(Inherited {
            fds,
            manager: Manager::Systemd,
            described,
        }));
    }
    from_server_starter(starter)
}

/// `host:port=fd;path=fd;...`: split on `;`, then on the last `=`. What each socket is, is
/// asked of the socket itself later, never told by the key's shape.
fn from_server_starter(value: Option<String>) -> Result<Option<Inherited>, Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    let described = format!("{SERVER_STARTER_PORT}={value}");
    let mut fds = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let fd = entry
            .rsplit_once('=')
            .and_then(|(_, fd)| fd.trim().parse::<RawFd>().ok())
            .ok_or_else(|| {
                Error::invalid(
                    crate::Source::Env(SERVER_STARTER_PORT),
                    &value,
                    format!(
                        "host:port=fd or path=fd entries separated by `;`; {entry:?} is not one"
                    ),
                )
            })?;
        fds.push(listening(fd, &described)?);
    }
    Ok(Some(Inherited {
        fds,
        manager: Manager::ServerStarter,
        described,
    }))
}

/// Takes `fd` as a listening socket, if it is one.
fn listening(fd: RawFd, described: &str) -> Result<OwnedFd, Error> {
    // SAFETY: only borrowed, to ask the kernel what it is; an unknown descriptor is an error.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match getsockopt(&borrowed, sockopt::AcceptConn) {
        // SAFETY: the process that started us handed this descriptor to us, by the protocol
        // of the variable; nothing else in this process owns it.
        Ok(true) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Ok(false) => Err(Error::InvalidConfig(format!(
            "{described}: descriptor {fd} is a socket that is not listening"
        ))),
        Err(e) => Err(Error::InvalidConfig(format!(
            "{described}: descriptor {fd} is not a listening socket ({e})"
        ))),
    }
}
