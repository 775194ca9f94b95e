//! The control socket: a UNIX socket (mode 0600) on which a deploy script asks for a restart and
//! hears how it went, or lists the processes of the service. One request per line:
//!
//! | request | answer |
//! |---|---|
//! | `restart` | once the restart has ended: `ok <pid> <generation>` (the new serving process) or `failed <reason>` |
//! | `status` | one line per live process (`pid=… generation=… role=… connections=… age=…`), then an empty line |
//! | anything else | `error unknown command` |
//!
//! The socket belongs to the process that is the service: handed over with the listening sockets
//! at a restart, held by the supervisor in supervised mode. Requests are served on tasks of their
//! own, so a client that connects and says nothing holds nothing, and is closed after
//! [`IDLE_LIMIT`].

use crate::error::Error;
use crate::family::Family;
use crate::listener::{SocketFile, clear_stale_socket};
use crate::shutdown::Connections;
use nix::sys::stat::{Mode, umask};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A client that sends no request for this long is closed.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(10);
/// The longest request line.
const MAX_LINE: u64 = 256;
/// The reason given to a restart asked of a process that is stopping.
pub(crate) const STOPPED: &str = "this process is stopping";
/// How long a stopping process waits for the answers it is writing.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A `restart` asked on the control socket, with where its outcome goes.
pub(crate) type RestartRequest = oneshot::Sender<String>;

/// The answer to a restart that failed, or could not be started.
pub(crate) fn failed(reason: impl std::fmt::Display) -> String {
    // One line, whatever the reason says.
    format!("failed {}", reason.to_string().replace('\n', " "))
}

/// A control socket, bound by this process or taken over.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    pub(crate) listener: UnixListener,
    pub(crate) path: PathBuf,
    /// Bound here: its file is ours to remove.
    pub(crate) bound: bool,
}

/// The control socket of a process through its life: one taken over waits until the old
/// process lets go of it, then it is served; `restart` requests come out of [`Endpoint::next`].
#[derive(Debug)]
pub(crate) struct Endpoint {
    served: Option<Control>,
    pending: Option<ControlSocket>,
    requests: mpsc::Receiver<RestartRequest>,
    sender: mpsc::Sender<RestartRequest>,
    family: Arc<Family>,
}

impl Endpoint {
    /// Serves `socket` at once, unless it was taken over (then [`Endpoint::commit`] serves it).
    pub(crate) fn new(
        socket: Option<ControlSocket>,
        taken_over: bool,
        family: &Arc<Family>,
    ) -> Endpoint {
        let (sender, requests) = mpsc::channel(16);
        let mut endpoint = Endpoint {
            served: None,
            pending: socket,
            requests,
            sender,
            family: Arc::clone(family),
        };
        if !taken_over {
            endpoint.serve();
        }
        endpoint
    }

    /// The old process has let go: the socket taken over is this process's to serve, and to
    /// remove as the last one.
    pub(crate) fn commit(&mut self) {
        if let Some(socket) = &mut self.pending {
            socket.bound = true;
        }
        self.serve();
    }

    fn serve(&mut self) {
        let Some(socket) = self.pending.take() else {
            return;
        };
        let path = socket.path.clone();
        self.served = Control::serve(
            socket.listener,
            socket.path,
            socket.bound,
            Arc::clone(&self.family),
            self.sender.clone(),
        )
        .map_err(|e| {
            tracing::error!(
                "cannot serve the control socket {}: {e}; restart with USR1",
                path.display()
            )
        })
        .ok();
    }

    /// The control socket being served, if any.
    pub(crate) fn served(&self) -> Option<&Control> {
        self.served.as_ref()
    }

    /// The next `restart` asked. Cancel-safe.
    pub(crate) async fn next(&mut self) -> RestartRequest {
        match self.requests.recv().await {
            Some(request) => request,
            // This endpoint holds a sender: never.
            None => std::future::pending().await,
        }
    }

    /// Stops serving; `remove_file`: this is the last process, the socket file goes too.
    pub(crate) async fn close(&mut self, remove_file: bool) {
        if let Some(control) = self.served.take() {
            control.close(remove_file).await;
        }
    }
}

/// The control socket of this process: its listener until it lets go of it, and its file.
#[derive(Debug)]
pub(crate) struct Control {
    file: Option<SocketFile>,
    /// Our own copy, to hand to a new process.
    fd: OwnedFd,
    accepting: JoinHandle<()>,
    /// Set when another process owns the socket: the answer to a `restart` still being asked
    /// here (the restart that handed it over).
    handed: watch::Sender<Option<String>>,
    busy: Arc<Connections>,
}

/// Binds the control socket at `path`, mode 0600. A live socket there is an error; a stale one
/// is replaced.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, Error> {
    let fail = |source| Error::Bind {
        address: format!("control socket {}", path.display()),
        source,
    };
    clear_stale_socket(path).map_err(fail)?;
    // Created 0600 from the start: with a chmod after bind(), another user could connect in
    // between. Only this thread creates files now (start-up), so the mask is ours to change.
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(previous);
    bound.map_err(fail)
}

impl Control {
    /// Serves `listener` (bound at `path`, or taken over) on a task of its own: restarts are
    /// sent to `restarts`, `status` is answered from `family`.
    pub(crate) fn serve(
        listener: UnixListener,
        path: PathBuf,
        owns_file: bool,
        family: Arc<Family>,
        restarts: mpsc::Sender<RestartRequest>,
    ) -> io::Result<Control> {
        let fd = listener.as_fd().try_clone_to_owned()?;
        let file = if owns_file {
            SocketFile::of(&crate::BindAddress::Unix(path.clone()))
        } else {
            None
        };
        let handed = watch::Sender::new(None);
        let busy = Arc::new(Connections::new());
        let accepting = tokio::spawn(accept(
            listener,
            Shared {
                family,
                restarts,
                handed: handed.subscribe(),
                busy: Arc::clone(&busy),
            },
        ));
        tracing::info!("control socket on {}", path.display());
        Ok(Control {
            file,
            fd,
            accepting,
            handed,
            busy,
        })
    }

    /// A copy of the listener, to hand to a new process.
    pub(crate) fn duplicate(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Another process owns the socket now, since the restart that `answer` describes: stop
    /// accepting on it. A client accepted here before asks on: a `restart` is answered with
    /// `answer` (it was asked as that restart ended: the same restart, the same answer), then
    /// each connection is closed.
    pub(crate) fn let_go(&self, answer: &str) {
        self.accepting.abort();
        self.handed.send_replace(Some(answer.to_owned()));
    }

    /// Waits (briefly) for answers being written, then removes the socket file if this process
    /// made it or was handed it as the last owner.
    pub(crate) async fn close(self, remove_file: bool) {
        self.accepting.abort();
        // A restart still asked here is answered, not left waiting.
        self.handed.send_if_modified(|handed| {
            let unset = handed.is_none();
            handed.get_or_insert_with(|| failed(STOPPED));
            unset
        });
        self.busy.drained(Some(ANSWER_WAIT)).await;
        if remove_file {
            if let Some(file) = &self.file {
                file.remove_if_ours();
            }
        }
    }
}

/// What every client of the control socket is served with.
#[derive(Clone)]
struct Shared {
    family: Arc<Family>,
    restarts: mpsc::Sender<RestartRequest>,
    /// Set once this process has let go of the socket: see [`Control::let_go`].
    handed: watch::Receiver<Option<String>>,
    busy: Arc<Connections>,
}

async fn accept(listener: UnixListener, shared: Shared) {
    let mut let_go = shared.handed.clone();
    loop {
        let accepted = tokio::select! {
            // Checked first: once this process has let go, a client that connects (say, after
            // hearing the answer to its last restart) is the new owner's.
            biased;
            _ = let_go.wait_for(Option::is_some) => return,
            accepted = listener.accept() => accepted,
        };
        let conn = match accepted {
            Ok((conn, _)) => conn,
            Err(e) => {
                tracing::warn!("control socket: cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Mode 0600 keeps others out; this also covers a socket in a directory they could
        // reach before the mode was set by someone else.
        if crate::link::peer_is_ours(&conn, "a control socket client", true) {
            tokio::spawn(client(conn, shared.clone()));
        }
    }
}

/// One client: requests, one per line, until it closes, goes quiet, or this process lets go of
/// the socket.
async fn client(conn: UnixStream, shared: Shared) {
    let Shared {
        family,
        restarts,
        handed,
        busy,
    } = shared;
    let (reader, mut writer) = conn.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE);
        match tokio::time::timeout(IDLE_LIMIT, limited.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!("control socket: {e}");
                return;
            }
        }
        // Without its end of line, a request is taken as it is when the client closed after it.
        if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE {
            let _ = writer.write_all(b"error request too long\n").await;
            return;
        }
        let _busy = busy.guard();
        let answer = match line.trim() {
            "restart" => restart(&restarts, handed.clone()).await,
            "status" if handed.borrow().is_some() => {
                "error this process has handed the control socket over: ask again".to_owned()
            }
            "status" => {
                let mut lines = family.status().await.join("\n");
                lines.push('\n');
                lines
            }
            "" => continue,
            other => {
                tracing::debug!("control socket: unknown command {other:?}");
                "error unknown command".to_owned()
            }
        };
        let written = writer.write_all(format!("{answer}\n").as_bytes()).await;
        if written.is_err() || handed.borrow().is_some() {
            return;
        }
    }
}

/// Asks the process's loop for a restart and waits for its outcome, or for the process to let
/// go of the socket (then the restart that made it let go is the answer).
async fn restart(
    restarts: &mpsc::Sender<RestartRequest>,
    mut handed: watch::Receiver<Option<String>>,
) -> String {
    if let Some(answer) = handed.borrow().clone() {
        return answer;
    }
    let (tx, rx) = oneshot::channel();
    if restarts.send(tx).await.is_err() {
        return failed(STOPPED);
    }
    tokio::select! {
        answer = rx => answer.unwrap_or_else(|_| failed(STOPPED)),
        handed = handed.wait_for(Option::is_some) => match handed {
            Ok(answer) => answer.clone().unwrap_or_else(|| failed(STOPPED)),
            Err(_) => failed(STOPPED),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::{Me, Role};
    use std::os::unix::fs::PermissionsExt;

    async fn ask(path: &Path, request: &str) -> String {
        let mut conn = UnixStream::connect(path).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn answers_restart_status_and_nonsense() {
        let dir = std::env::temp_dir().join(format!("uninterruptible-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.ctl");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let family = Family::new(Me::new(1, Role::Supervisor, None));
        let (tx, mut rx) = mpsc::channel::<RestartRequest>(4);
        let control = Control::serve(listener, path.clone(), true, family, tx).unwrap();
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send("ok 77 2".to_owned());
            }
        });

        assert_eq!(ask(&path, "restart\n").await, "ok 77 2\n");
        let pid = std::process::id();
        assert_eq!(
            ask(&path, "status\n").await,
            format!("pid={pid} generation=1 role=supervisor connections=0 age=0\n\n")
        );
        assert_eq!(ask(&path, "reload\n").await, "error unknown command\n");
        let long = "x".repeat(300);
        assert_eq!(ask(&path, &long).await, "error request too long\n");

        control.close(true).await;
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
