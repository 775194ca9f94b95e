//! Hot restart: the old process hands its listening socket to a new copy of the program.
//!
//! The conversation on the handoff socket, one line each way at a time:
//!
//! ```text
//! old -> new   "uninterruptible handoff 1\n" + the listening socket (SCM_RIGHTS)
//! new -> old   "state\n"      (only when the old process offered it, see below) asks for what
//!                             the old process carries over
//! old -> new   "state tickets=<n> app=<m> files=<k>\n" + n bytes of TLS session-ticket keys,
//!                             m bytes of the application's state (`save`), k bytes naming
//!                             the socket files the old process knows (`dev ino path` lines)
//! new -> old   "ready\n"      the new process is accepting
//!          or  "failed <why>\n" it cannot start (its initialiser failed), and exits
//! old -> new   "ok\n"         the old one stops accepting: the new one is the server
//!          or  "abort\n"      the restart is abandoned (READY_TIMEOUT passed first)
//! new -> old   "aborting\n"   the new process stops accepting, drains what it accepted and
//!                             exits, leaving the pidfile and socket file to the old one
//! ```
//!
//! Old process ([`restart`], on `USR1`/`HUP`):
//! 1. Creates a private directory (mode 0700) under `$TMPDIR` (or, when a socket path there
//!    would not fit a UNIX socket address, `$XDG_RUNTIME_DIR` or `/tmp`) holding a UNIX socket,
//!    the *handoff socket*, and starts the new copy with `FILE_DESCRIPTOR_SERVER_PATH` naming it.
//!    It keeps accepting clients throughout.
//! 2. Accepts a connection on the handoff socket from a peer of its own uid (`SO_PEERCRED`) and
//!    sends it the listening sockets, all in one message.
//! 3. Waits for `ready` ([`await_ready`]). A `ready` received is success, whatever the new
//!    process does next. Otherwise (it exits, closes the connection, or is silent past
//!    `READY_TIMEOUT`) the restart fails: a new process that may have accepted connections is
//!    asked to drain them (`abort`); one that never had the socket, or does not answer, is
//!    killed. The caller then gives the pidfile back to the old process, which serves on.
//!
//! An old process that has state to carry over (ticket keys, the program's state, socket files
//! it knows) says so in the new process's environment
//! (`UNINTERRUPTIBLE_HANDOFF_STATE`, its pid); the new process asks only when that pid is its
//! handoff peer's, so that neither an older version that does not know `state` nor a stale
//! variable inherited through one is ever asked. Unknown `name=<n>` sections are skipped.
//!
//! New process ([`Takeover`], at startup): connects first thing, removes the handoff socket and
//! its directory (so nothing is left if the old process is killed now), starts its runtime
//! while the old process sends, receives the socket (close-on-exec), finishes everything that
//! can fail, starts accepting, sends `ready`, then waits for the old process's verdict
//! ([`Pending::verdict`]). An end of file counts as `ok`: the old process is gone, so this one
//! is the server.

mod dir;
mod message;
mod new;
mod old;

pub(crate) use message::{MAX_FDS, sort_received};
pub(crate) use new::{Dialed, Pending, Takeover, Verdict, is_state_not_received, verdict};
pub(crate) use old::{preflight, restart};

use crate::config::StartCommand;
use crate::link::Lines;
use crate::reaper::Reaper;
use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

/// The first bytes of the message that carries the socket.
const HELLO: &[u8] = b"uninterruptible handoff 1\n";
const READY: &str = "ready\n";
/// Followed by why, on one line: the new process cannot start.
const FAILED: &str = "failed ";
const OK: &str = "ok\n";
const ABORT: &str = "abort\n";
const ABORTING: &str = "aborting\n";
/// New to old, after the sockets: asks for the state the old process carries over.
const STATE: &str = "state\n";
/// Old to new: the answer's line, `state` and a `name=<bytes>` per section that follows.
const STATE_ANSWER: &str = "state";
/// The most bytes of state a new process takes (the sections together).
const MAX_STATE: usize = 32 << 20;
/// How long an abandoned new process has to acknowledge `abort` before it is killed.
const ABORT_GRACE: Duration = Duration::from_secs(5);
/// How long a new process that hung up on the handoff connection before `ready` has to exit.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How the old process starts and waits for its successor.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) command: StartCommand,
    pub(crate) ready_timeout: Duration,
    /// The generation the new process will have.
    pub(crate) generation: u64,
    /// The UNIX socket files are a service manager's: the new process must not remove them.
    pub(crate) keep_socket_files: bool,
    /// `BIND` for the new process, when the sockets were handed to this one by a service manager
    /// (they are the configuration, not the attribute's literal).
    pub(crate) bind: Option<String>,
    /// Set in a supervisor: the new process serves under it, and is reaped by it.
    pub(crate) supervisor: Option<Reaper>,
    /// What the new process gets when it asks for state.
    pub(crate) offer: Offer,
}

/// What an old process carries over to the new one besides the sockets, when asked `state`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Offer {
    /// The TLS session-ticket keys.
    pub(crate) tickets: Option<std::sync::Arc<crate::tickets::TicketKeys>>,
    /// The application's state, saved as it is asked for.
    pub(crate) app: Option<std::sync::Arc<crate::handover::Carry>>,
}

impl Offer {
    /// Whether there is anything to carry: ticket keys, the application's state, or socket
    /// files this process knows.
    pub(crate) fn carries_something(&self) -> bool {
        self.tickets.is_some() || self.app.is_some() || crate::listener::SocketFile::any_known()
    }

    /// The answer to `state`: its line and the sections' bytes, in the line's order (the socket
    /// files this process knows go too).
    fn answer(&self) -> Vec<u8> {
        let tickets = self
            .tickets
            .as_ref()
            .map(|t| t.encode())
            .unwrap_or_default();
        let app = self.app.as_ref().map(|c| c.encode()).unwrap_or_default();
        let files = crate::listener::SocketFile::encode_known();
        let line = format!(
            "{STATE_ANSWER} tickets={} app={} files={}\n",
            tickets.len(),
            app.len(),
            files.len()
        );
        let mut answer = line.into_bytes();
        answer.extend_from_slice(&tickets);
        answer.extend_from_slice(&app);
        answer.extend_from_slice(&files);
        answer
    }
}

/// What the old process carried over besides the sockets.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// The TLS session-ticket keys, as [`TicketKeys::encode`](crate::tickets::TicketKeys::encode)
    /// made them.
    pub(crate) tickets: Option<Vec<u8>>,
    /// The application's state, as [`Carry::encode`](crate::handover::Carry) made it.
    pub(crate) app: Option<Vec<u8>>,
    /// The socket files the old process knows, as
    /// [`SocketFile::encode_known`](crate::listener::SocketFile::encode_known) made them.
    pub(crate) files: Option<Vec<u8>>,
}

/// A restart that succeeded: the new process is the server.
#[derive(Debug)]
pub(crate) struct Handed {
    pub(crate) pid: u32,
    pub(crate) generation: u64,
    /// The handoff connection, kept as a status link.
    pub(crate) link: Lines,
}

/// Why a restart did not happen. The old process serves on.
#[derive(Debug)]
pub(crate) struct Failure {
    reason: Reason,
    /// The start command, as logged when the restart started.
    command: String,
    /// A new process that drains what it accepted before the restart was abandoned: its
    /// status link.
    pub(crate) draining: Option<Lines>,
}

impl Failure {
    /// The restart's task ended without an outcome (it panicked).
    pub(crate) fn task(e: tokio::task::JoinError) -> Failure {
        Failure {
            reason: Reason::Setup("the restart task failed".into(), io::Error::other(e)),
            command: String::new(),
            draining: None,
        }
    }
}

#[derive(Debug)]
enum Reason {
    Setup(String, io::Error),
    Exited(u32, ExitStatus),
    Closed(u32),
    Protocol(u32, String),
    StartFailed(u32, String),
    Timeout(u32, Duration),
    Handoff(u32, io::Error),
}

/// The I/O error behind a failure to set up or to hand over, for a caller that walks the chain;
/// the message already names it, as the log line must be whole on its own.
impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Setup(_, e) | Reason::Handoff(_, e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::Setup(what, e) => write!(f, "{what}: {e}")?,
            Reason::Exited(pid, status) => {
                write!(f, "new process {pid} exited before ready ({status})")?
            }
            Reason::Closed(pid) => write!(
                f,
                "new process {pid} closed the handoff connection before ready"
            )?,
            Reason::Protocol(pid, got) => {
                write!(f, "new process {pid} sent {got:?} instead of ready")?
            }
            Reason::StartFailed(pid, why) => write!(f, "new process {pid} failed to start: {why}")?,
            Reason::Timeout(pid, limit) => write!(
                f,
                "new process {pid} was not ready within {limit:?} (READY_TIMEOUT)"
            )?,
            Reason::Handoff(pid, e) => write!(f, "handoff to new process {pid} failed: {e}")?,
        }
        write!(f, "; start command: {}", self.command)
    }
}
