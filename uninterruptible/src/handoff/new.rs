//! The new process's side: connect to the handoff socket first thing, receive the sockets,
//! say `ready`, and hear the old process's verdict.

use super::*;
use crate::link::{Lines, check_peer};
use nix::sys::socket::{getsockopt, sockopt};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

use super::dir::remove_handoff_path;

/// The new process's side: the connection to the old process and the socket received on it.
#[derive(Debug)]
pub(crate) struct Takeover {
    conn: StdUnixStream,
    path: PathBuf,
    carried: Carried,
}

/// A new process's handoff connection, made first thing so the old process sends the sockets
/// while this one starts its runtime: they are received later, by [`Dialed::receive`].
#[derive(Debug)]
pub(crate) struct Dialed {
    conn: StdUnixStream,
    path: PathBuf,
    /// The old process answers `state`.
    ask_state: bool,
}

impl Takeover {
    /// Connects to the handoff socket (`FILE_DESCRIPTOR_SERVER_PATH`), checks that the process
    /// serving it runs as our uid (`SO_PEERCRED`: another user's process must not hand this one
    /// sockets to serve), and removes the socket and its directory, which are not needed once
    /// connected (so nothing is left if the old process is killed now). `state_from`: the pid
    /// of the process that offered to answer `state`; it is asked if it is the peer.
    pub(crate) fn dial(path: &Path, state_from: Option<u32>) -> io::Result<Dialed> {
        let conn = StdUnixStream::connect(path).inspect_err(|e| {
            // Nobody listens: the old process is gone (killed as it started this one), and
            // left its handoff socket behind.
            if e.kind() == io::ErrorKind::ConnectionRefused {
                remove_handoff_path(path);
            }
        })?;
        remove_handoff_path(path);
        check_peer(&conn, false).map_err(|why| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("refused the handoff socket {}: {why}", path.display()),
            )
        })?;
        let peer = getsockopt(&conn, sockopt::PeerCredentials).map(|c| c.pid());
        let ask_state = state_from.is_some_and(|pid| peer.is_ok_and(|peer| peer as u32 == pid));
        Ok(Dialed {
            conn,
            path: path.to_owned(),
            ask_state,
        })
    }
}

impl Dialed {
    /// Receives the listening sockets (and the rest the old process hands over), then the
    /// state it carries over when it offered to.
    pub(crate) fn receive(self, limit: Duration) -> io::Result<(Takeover, Vec<OwnedFd>)> {
        let Dialed {
            mut conn,
            path,
            ask_state,
        } = self;
        conn.set_read_timeout(Some(limit))?;
        conn.set_write_timeout(Some(limit))?;
        let fds = message::receive_sockets(&conn)?;
        let carried = if ask_state {
            match receive_state(&mut conn) {
                Ok(carried) => carried,
                // The old process is gone (killed as it handed over): the sockets are this
                // process's, with nothing half read on a connection nobody holds.
                Err(e) if gone(&e) => {
                    tracing::warn!(
                        "the old process closed the handoff connection before its state came ({e}): serving without it"
                    );
                    Carried::default()
                }
                Err(e) => return Err(io::Error::other(StateNotReceived(e))),
            }
        } else {
            Carried::default()
        };
        Ok((
            Takeover {
                conn,
                path,
                carried,
            },
            fds,
        ))
    }
}

/// The old process sent the sockets, then not its state (its `save` outlasted `READY_TIMEOUT`,
/// or it died): this process must not go on with the connection half read, nor bind the
/// sockets the old one holds.
#[derive(Debug)]
pub(crate) struct StateNotReceived(io::Error);

impl std::fmt::Display for StateNotReceived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.0.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "it did not come within READY_TIMEOUT (is its save slow?)".to_owned()
            }
            _ => self.0.to_string(),
        };
        write!(
            f,
            "the old process sent the listening sockets, then not its state: {why}"
        )
    }
}

impl std::error::Error for StateNotReceived {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `e` says the other end of the connection is gone.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// Whether `e` is a [`StateNotReceived`].
pub(crate) fn is_state_not_received(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<StateNotReceived>())
}

/// Asks the old process for its state and reads the answer: `state name=<n> ...` and the
/// sections, each taken if known and skipped if not, at most [`MAX_STATE`] bytes in all.
fn receive_state(conn: &mut StdUnixStream) -> io::Result<Carried> {
    conn.write_all(STATE.as_bytes())?;
    // Byte by byte, so nothing after the line is read into a buffer here.
    let mut line = Vec::new();
    let mut byte = [0];
    while line.last() != Some(&b'\n') {
        if line.len() > 4096 {
            return Err(io::Error::other("the state line is longer than 4096 bytes"));
        }
        conn.read_exact(&mut byte)?;
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line);
    let mut fields = line.trim_end().split(' ');
    if fields.next() != Some(STATE_ANSWER) {
        return Err(io::Error::other(format!("unexpected {line:?} for state")));
    }
    let mut carried = Carried::default();
    let mut total = 0usize;
    for field in fields {
        let parsed = field
            .split_once('=')
            .and_then(|(name, n)| Some((name, n.parse::<usize>().ok()?)));
        let Some((name, len)) = parsed else {
            return Err(io::Error::other(format!(
                "unexpected {field:?} in the state line"
            )));
        };
        total = total.saturating_add(len);
        if total > MAX_STATE {
            return Err(io::Error::other(format!(
                "more than {MAX_STATE} bytes of state"
            )));
        }
        let mut section = vec![0; len];
        conn.read_exact(&mut section)?;
        match name {
            "tickets" if len > 0 => carried.tickets = Some(section),
            "app" if len > 0 => carried.app = Some(section),
            "files" if len > 0 => carried.files = Some(section),
            _ => {}
        }
    }
    Ok(carried)
}

impl Takeover {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What the old process carried over besides the sockets, once.
    pub(crate) fn take_carried(&mut self) -> Carried {
        std::mem::take(&mut self.carried)
    }

    /// Tells the old process this one cannot start, and why (on one line); best effort, as the
    /// process exits next and the old one sees that too.
    pub(crate) fn failed(mut self, why: &str) {
        let line = format!("{FAILED}{}\n", why.replace(['\n', '\r'], " "));
        if let Err(e) = self.conn.write_all(line.as_bytes()) {
            tracing::debug!("cannot tell the old process why this one cannot start: {e}");
        }
    }

    /// Tells the old process this one is serving. The answer comes later: [`Pending::verdict`].
    pub(crate) fn ready(mut self) -> io::Result<Pending> {
        self.conn.write_all(READY.as_bytes())?;
        self.conn.set_nonblocking(true)?;
        let stream = UnixStream::from_std(self.conn)?;
        Ok(Pending {
            conn: Lines::new(stream),
        })
    }
}

/// A new process that said `ready` and waits for the old one to let go.
#[derive(Debug)]
pub(crate) struct Pending {
    conn: Lines,
}

impl Pending {
    /// The handoff connection, kept as a status link once the verdict is in.
    pub(crate) fn into_link(self) -> Lines {
        self.conn
    }
}

/// What the old process decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// This process is the server (the old one said `ok`, or is gone).
    Committed,
    /// The restart was abandoned: drain what was accepted, touch nothing the old one owns.
    Abandoned,
}

impl Pending {
    /// The old process's verdict. Cancel-safe.
    pub(crate) async fn verdict(&mut self) -> Verdict {
        match self.conn.read_line().await {
            Ok(Some(line)) if line == ABORT => {
                if let Err(e) = self.conn.send(ABORTING).await {
                    tracing::debug!("cannot acknowledge the abort: {e}");
                }
                Verdict::Abandoned
            }
            Ok(Some(line)) if line == OK => Verdict::Committed,
            Ok(Some(line)) => {
                tracing::warn!("unexpected {line:?} from the old process: taken as ok");
                Verdict::Committed
            }
            Ok(None) | Err(_) => Verdict::Committed,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    fn pair() -> (Lines, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Lines::new(a), b)
    }

    #[test]
    fn state_that_did_not_come_says_why_and_is_told_apart() {
        let slow = io::Error::other(StateNotReceived(io::ErrorKind::WouldBlock.into()));
        assert!(is_state_not_received(&slow));
        assert_eq!(
            slow.to_string(),
            "the old process sent the listening sockets, then not its state: it did not come within READY_TIMEOUT (is its save slow?)"
        );
        assert!(!is_state_not_received(&io::Error::other("no sockets")));
    }

    #[tokio::test]
    async fn verdicts() {
        let (conn, mut old) = pair();
        let mut pending = Pending { conn };
        old.write_all(OK.as_bytes()).await.unwrap();
        assert_eq!(pending.verdict().await, Verdict::Committed);

        // Abandoned: acknowledged, so the old process knows it need not kill us.
        let (conn, old) = pair();
        let mut pending = Pending { conn };
        let mut old = Lines::new(old);
        old.send(ABORT).await.unwrap();
        assert_eq!(pending.verdict().await, Verdict::Abandoned);
        assert_eq!(old.read_line().await.unwrap().as_deref(), Some(ABORTING));

        // The old process is gone: this one is the server.
        let (conn, old) = pair();
        let mut pending = Pending { conn };
        drop(old);
        assert_eq!(pending.verdict().await, Verdict::Committed);
    }
}
