//! The signals a server acts on: `TERM`, `INT`, `USR1` and `HUP`.
//!
//! They are blocked in every thread from the first line of [`run`](crate::run) and read from a
//! `signalfd`, rather than caught by handlers:
//! - the kernel hands them over in order, and two that are pending at once lowest number first,
//!   so `kill -USR1 $P; kill -TERM $P` is always a restart and then a stop (with one handler
//!   per thread, the order in which they were noticed was a matter of chance);
//! - one that arrives while the process is starting waits to be read, where its default action
//!   would have ended the process.
//!
//! Processes started with `std::process::Command` (a restart's new copy, or anything a handler
//! runs) begin with an empty signal mask: the standard library clears it in the child.

use crate::error::Error;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;
use tokio::io::unix::AsyncFd;

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `TERM` or `INT`: stop accepting and drain; a second one exits at once.
    Stop(&'static str),
    /// `USR1` or `HUP`: hot restart.
    Restart(&'static str),
}

fn set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    set
}

/// Blocks the signals in the calling thread, and so in every thread it starts afterwards (the
/// runtime's): from now on they wait to be read.
pub(crate) fn block() -> Result<(), Error> {
    set()
        .thread_block()
        .map_err(|e| Error::io("cannot block signals")(e.into()))
}

#[derive(Debug)]
pub(crate) struct Signals {
    fd: AsyncFd<SignalFd>,
}

impl Signals {
    /// Opens the `signalfd`. Needs the runtime; [`block`] must have run first.
    pub(crate) fn register() -> Result<Signals, Error> {
        let fail = Error::io("cannot read signals");
        let fd = SignalFd::with_flags(&set(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| fail(e.into()))?;
        // SAFETY: the `SignalFd` owns its descriptor, which stays open and the same until the
        // `AsyncFd` (its only owner) is dropped.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| Error::io("cannot read signals")(e.into()))?;
        Ok(Signals { fd })
    }

    /// The next signal received. Cancel-safe: a signal is taken off the queue only when it is
    /// returned.
    pub(crate) async fn recv(&mut self) -> Request {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                // Only when the runtime is shutting down.
                return std::future::pending().await;
            };
            let read = guard.try_io(|fd| match fd.get_ref().read_signal() {
                Ok(Some(info)) => Ok(info.ssi_signo),
                Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(e.into()),
            });
            match read {
                Ok(Ok(number)) => {
                    if let Some(request) = Request::of(number) {
                        return request;
                    }
                }
                Ok(Err(e)) => tracing::error!("cannot read a signal: {e}"),
                Err(_would_block) => {}
            }
        }
    }
}

impl Request {
    fn of(number: u32) -> Option<Request> {
        let signal = Signal::try_from(i32::try_from(number).ok()?).ok()?;
        Some(match signal {
            Signal::SIGTERM => Request::Stop("TERM"),
            Signal::SIGINT => Request::Stop("INT"),
            Signal::SIGUSR1 => Request::Restart("USR1"),
            Signal::SIGHUP => Request::Restart("HUP"),
            _ => return None,
        })
    }
}
