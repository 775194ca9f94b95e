//! The signals a server acts on, registered before the process announces itself (a USR1's
//! default action would end the process).

use crate::error::Error;
use tokio::signal::unix::{Signal as Stream, SignalKind, signal};

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `TERM` or `INT`: stop accepting and drain; a second one exits at once.
    Stop(&'static str),
    /// `USR1` or `HUP`: hot restart.
    Restart(&'static str),
}

#[derive(Debug)]
pub(crate) struct Signals {
    term: Stream,
    int: Stream,
    usr1: Stream,
    hup: Stream,
}

impl Signals {
    pub(crate) fn register() -> Result<Signals, Error> {
        let on = |kind| signal(kind).map_err(Error::io("cannot install a signal handler"));
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            usr1: on(SignalKind::user_defined1())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// The next signal received. A restart and a stop that arrive together (`kill -USR1 $P;
    /// kill -TERM $P`) are taken in that order: the restart goes on and this process then
    /// retires, rather than the server stopping with clients still in its queue.
    pub(crate) async fn recv(&mut self) -> Request {
        tokio::select! {
            biased;
            _ = self.usr1.recv() => Request::Restart("USR1"),
            _ = self.hup.recv() => Request::Restart("HUP"),
            _ = self.term.recv() => Request::Stop("TERM"),
            _ = self.int.recv() => Request::Stop("INT"),
        }
    }
}
