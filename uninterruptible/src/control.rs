//! The control socket: a UNIX socket (mode 0600) on which a deploy script asks for a restart and
//! hears how it went, or lists the processes of the service. One request per line, one answer
//! per request, in order:
//!
//! | request | answer |
//! |---|---|
//! | `restart` | once the restart has ended: `ok <pid> <generation>` (the new serving process) or `failed <reason>` |
//! | `status` | one line per live process (`pid=… generation=… role=… connections=… age=…`, with `answered=no` for one that did not answer in time: see [`crate::family`]), then an empty line |
//! | anything else | `error unknown command` |
//! | a line longer than [`MAX_LINE`] bytes | `error request too long`, then the connection ends |
//! | a line left unfinished for [`IDLE_LIMIT`] | `error request incomplete`, then the connection ends |
//!
//! A client beyond the [`MAX_CLIENTS`] served at once hears `error busy: …` as its one line:
//! nothing it asks is taken. Beyond a few clients being told so at once, new clients wait in the
//! socket's listen queue, which the kernel bounds: no client can make the process spend more
//! than a bounded number of descriptors, or memory, on this socket.
//!
//! Every request read is answered before its connection is closed, and a connection is never
//! closed with a request unread (that would reset it): a connection that ends without an answer
//! had no request taken (it was silent for [`IDLE_LIMIT`], or this process is stopping), so
//! asking again on a new connection is safe.
//!
//! The socket belongs to the process that is the service: handed over with the listening sockets
//! at a restart, held by the supervisor in supervised mode. A process that has handed it over
//! goes on answering the clients it had accepted, passing their requests on to the new owner
//! (through the socket's path), and exits once they are answered.

use crate::error::Error;
use crate::family::Family;
use crate::handle::RestartOutcome;
use crate::listener::{SocketFile, clear_stale_socket};
use crate::shutdown::Connections;
use nix::sys::socket::{MsgFlags, recv};
use nix::sys::stat::{Mode, umask};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A client that sends no request for this long is closed.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(10);
/// The longest request line, its end included.
pub(crate) const MAX_LINE: usize = 256;
/// Clients served at once.
pub(crate) const MAX_CLIENTS: usize = 64;
/// Clients told `error busy` at once; beyond them, clients wait in the listen queue.
const MAX_REFUSALS: usize = 16;
/// The reason given to a restart asked of a process that is stopping.
pub(crate) const STOPPED: &str = "this process is stopping";
/// How long a stopping process waits for the answers it is writing.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long a client has to close its end once told that nothing more comes (what it sends
/// meanwhile is read and dropped).
const LINGER: Duration = Duration::from_secs(1);
/// How long a `status` passed on to the socket's new owner may take.
const STATUS_WAIT: Duration = Duration::from_secs(5);
/// What a `restart` passed on to the socket's new owner may take beyond `READY_TIMEOUT` (the
/// new process's start, the links handed to it, the old one's kill if it hangs).
const RESTART_MARGIN: Duration = Duration::from_secs(10);
/// The longest answer passed on from the socket's new owner.
const MAX_ANSWER: u64 = 64 * 1024;

/// A `restart` asked on the control socket, with where its outcome goes.
pub(crate) type RestartRequest = oneshot::Sender<RestartOutcome>;

/// The one line a client beyond [`MAX_CLIENTS`] hears.
fn busy() -> String {
    format!("error busy: {MAX_CLIENTS} clients are connected, ask again\n")
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
    /// How long a `restart` passed on to a new owner may take.
    restart_wait: Duration,
}

impl Endpoint {
    /// Serves `socket` at once, unless it was taken over (then [`Endpoint::commit`] serves it).
    /// A restart takes at most `ready_timeout` to be ready.
    pub(crate) fn new(
        socket: Option<ControlSocket>,
        taken_over: bool,
        family: &Arc<Family>,
        ready_timeout: Duration,
    ) -> Endpoint {
        let (sender, requests) = mpsc::channel(16);
        let mut endpoint = Endpoint {
            served: None,
            pending: socket,
            requests,
            sender,
            family: Arc::clone(family),
            restart_wait: ready_timeout.saturating_add(RESTART_MARGIN),
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
            socket,
            Arc::clone(&self.family),
            self.sender.clone(),
            self.restart_wait,
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

    /// Answers every `restart` asked and not yet taken up: this process will not restart.
    pub(crate) fn refuse_waiting(&mut self, outcome: &RestartOutcome) {
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.send(outcome.clone());
        }
    }

    /// The next `restart` asked. Cancel-safe.
    pub(crate) async fn next(&mut self) -> RestartRequest {
        match self.requests.recv().await {
            Some(request) => request,
            // This endpoint holds a sender: never.
            None => std::future::pending().await,
        }
    }

    /// Stops serving; `remove_file`: this is the last process, the socket file goes too;
    /// `at_once`: the process exits now, without waiting for the clients still asking.
    pub(crate) async fn close(&mut self, remove_file: bool, at_once: bool) {
        if let Some(control) = self.served.take() {
            control.close(remove_file, at_once).await;
        }
    }
}

/// Who answers the requests read by this process.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    /// This process.
    Here,
    /// The process a restart handed the socket to; the answer is that restart's (given to a
    /// `restart` asked here while it ran).
    Handed(RestartOutcome),
    /// Nobody after this process, which is stopping.
    Stopping,
}

/// The control socket of this process: its listener until it lets go of it, and its file.
#[derive(Debug)]
pub(crate) struct Control {
    file: Option<SocketFile>,
    /// Our own copy, to hand to a new process, until we let go of the socket.
    fd: Mutex<Option<OwnedFd>>,
    accepting: JoinHandle<()>,
    owner: watch::Sender<Owner>,
    /// The clients being served or told `error busy`.
    clients: Arc<Connections>,
    restart_wait: Duration,
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
    let bound = bound.map_err(fail)?;
    // Known as this process made it, so that only this file is ever removed as ours.
    SocketFile::bound(&crate::BindAddress::Unix(path.to_owned()));
    Ok(bound)
}

impl Control {
    /// Serves `socket` on a task of its own: restarts are sent to `restarts`, `status` is
    /// answered from `family`; a `restart` passed on to a new owner may take `restart_wait`.
    fn serve(
        socket: ControlSocket,
        family: Arc<Family>,
        restarts: mpsc::Sender<RestartRequest>,
        restart_wait: Duration,
    ) -> io::Result<Control> {
        let ControlSocket {
            listener,
            path,
            bound,
        } = socket;
        let fd = listener.as_fd().try_clone_to_owned()?;
        let file = if bound {
            SocketFile::of(&crate::BindAddress::Unix(path.clone()))
        } else {
            None
        };
        let owner = watch::Sender::new(Owner::Here);
        let clients = Arc::new(Connections::new());
        tracing::info!("control socket on {}", path.display());
        let accepting = tokio::spawn(accept(
            listener,
            Shared {
                family,
                restarts,
                owner: owner.subscribe(),
                path,
                restart_wait,
            },
            Arc::clone(&clients),
        ));
        Ok(Control {
            file,
            fd: Mutex::new(Some(fd)),
            accepting,
            owner,
            clients,
            restart_wait,
        })
    }

    /// A copy of the listener, to hand to a new process.
    pub(crate) fn duplicate(&self) -> io::Result<OwnedFd> {
        match &*self.fd.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(fd) => fd.try_clone(),
            None => Err(io::Error::other("the control socket was handed over")),
        }
    }

    /// Another process owns the socket now, since the restart that `answer` describes: stop
    /// accepting on it. The clients accepted here are still answered: a `restart` waiting for
    /// that restart with `answer`, any later request by the new owner, passed on to it.
    pub(crate) fn let_go(&self, answer: &RestartOutcome) {
        self.accepting.abort();
        self.owner.send_replace(Owner::Handed(answer.clone()));
        // Without our copy, a client that reaches the socket after its new owner is gone is
        // refused at once instead of waiting in a queue nobody serves.
        self.fd.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Waits for the clients still served (see [`Endpoint::close`]), then removes the socket
    /// file if this process made it or was handed it as the last owner.
    async fn close(self, remove_file: bool, at_once: bool) {
        // Ended, not only told to end: a task still running on another thread could accept a
        // client after the count below, and the process would exit with that client's request
        // unread, which resets its connection.
        self.accepting.abort();
        let _ = self.accepting.await;
        // A restart still asked here is answered, not left waiting; a client that has asked
        // nothing is closed.
        let stopping = self.owner.send_if_modified(|owner| {
            let here = *owner == Owner::Here;
            if here {
                *owner = Owner::Stopping;
            }
            here
        });
        // Handed over, this process is not the service any more: its clients are answered
        // (by the new owner) at their pace, bounded by the idle limit and a restart's length.
        let wait = match (at_once, stopping) {
            (true, _) => Duration::ZERO,
            (false, true) => ANSWER_WAIT,
            (false, false) => IDLE_LIMIT + self.restart_wait + LINGER,
        };
        if !self.clients.drained(Some(wait)).await {
            tracing::warn!(
                "control socket: closing {} client connections still open",
                self.clients.count()
            );
        }
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
    owner: watch::Receiver<Owner>,
    /// Where a process that has handed the socket over reaches its new owner.
    path: PathBuf,
    restart_wait: Duration,
}

/// Room for one more client.
enum Room {
    Serve(OwnedSemaphorePermit),
    Refuse(OwnedSemaphorePermit),
}

async fn room(served: &Arc<Semaphore>, refused: &Arc<Semaphore>) -> Room {
    // Neither is ever closed.
    tokio::select! {
        biased;
        Ok(permit) = Arc::clone(served).acquire_owned() => Room::Serve(permit),
        Ok(permit) = Arc::clone(refused).acquire_owned() => Room::Refuse(permit),
    }
}

async fn accept(listener: UnixListener, shared: Shared, clients: Arc<Connections>) {
    let served = Arc::new(Semaphore::new(MAX_CLIENTS));
    let refused = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut owner = shared.owner.clone();
    loop {
        let (room, accepted) = tokio::select! {
            // Checked first: once this process has let go, a client that connects (say, after
            // hearing the answer to its last restart) is the new owner's.
            biased;
            _ = owner.wait_for(|owner| *owner != Owner::Here) => return,
            // Without room, clients wait in the listen queue.
            accepted = async {
                let room = room(&served, &refused).await;
                (room, listener.accept().await)
            } => accepted,
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
        if !crate::link::peer_is_ours(&conn, "a control socket client", true) {
            continue;
        }
        let held = clients.guard();
        match room {
            Room::Serve(permit) => {
                tokio::spawn(client(conn, shared.clone(), (held, permit)));
            }
            // A place may have come free since.
            Room::Refuse(refusing) => match Arc::clone(&served).try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(client(conn, shared.clone(), (held, permit)));
                }
                Err(_) => {
                    tracing::debug!(
                        "control socket: {MAX_CLIENTS} clients connected, one more is told to ask again"
                    );
                    tokio::spawn(refuse(conn, (held, refusing)));
                }
            },
        }
    }
}

/// Tells a client there is no room for it, and ends its connection.
async fn refuse(mut conn: UnixStream, _held: impl Send) {
    if conn.write_all(busy().as_bytes()).await.is_ok() {
        finish(conn).await;
    }
}

/// Ends a connection without resetting it. Closed with unread data, a UNIX connection is reset,
/// and the client reads an error after its answer; so the client is told that nothing more
/// comes (end of file), and what it still sends is read and dropped until it closes its end,
/// for [`LINGER`] at most.
async fn finish(mut conn: UnixStream) {
    if conn.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut dropped = [0u8; 512];
        while let Ok(1..) = conn.read(&mut dropped).await {}
    })
    .await;
}

/// How waiting for a request ended.
enum Read {
    /// A whole line.
    Line,
    /// The client closed its end (after part of a line, perhaps).
    End,
    TooLong,
    /// Nothing more for [`IDLE_LIMIT`].
    Idle,
    /// This process stops, and the client has nothing on its way.
    Closing,
    Failed(io::Error),
}

/// One client: requests, one per line, answered in order until it closes, goes quiet, or this
/// process stops.
async fn client(conn: UnixStream, shared: Shared, _held: impl Send) {
    // The longest line is all that needs to be held.
    let mut conn = BufReader::with_capacity(MAX_LINE, conn);
    let mut owner = shared.owner.clone();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = next_request(&mut conn, &mut line, &mut owner).await;
        let (answer, more) = match read {
            Read::Line => (answer(&line, &shared).await, true),
            // Without its end of line, a request is taken as it is when the client closed
            // after it.
            Read::End if !line.is_empty() => (answer(&line, &shared).await, false),
            Read::End => return,
            Read::TooLong => ("error request too long\n".to_owned(), false),
            Read::Idle if !line.is_empty() => ("error request incomplete\n".to_owned(), false),
            Read::Idle | Read::Closing => (String::new(), false),
            Read::Failed(e) => {
                tracing::debug!("control socket: {e}");
                return;
            }
        };
        if let Err(e) = conn.get_mut().write_all(answer.as_bytes()).await {
            tracing::debug!("control socket: cannot answer: {e}");
            return;
        }
        // Passed on and told `error busy`: as a client turned away here, it asks again.
        if !more || answer.starts_with("error busy") {
            finish(conn.into_inner()).await;
            return;
        }
    }
}

/// Waits for the next request line, for [`IDLE_LIMIT`]; once this process stops, only for one
/// already on its way.
async fn next_request(
    conn: &mut BufReader<UnixStream>,
    line: &mut Vec<u8>,
    owner: &mut watch::Receiver<Owner>,
) -> Read {
    let mut limit = IDLE_LIMIT;
    loop {
        let waits_for_stop = limit == IDLE_LIMIT;
        let stopping = async {
            if waits_for_stop {
                let _ = owner.wait_for(|owner| *owner == Owner::Stopping).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            read = read_line(conn, line) => return read,
            () = tokio::time::sleep(limit) => return Read::Idle,
            () = stopping => {
                if line.is_empty() && conn.buffer().is_empty() && !arriving(conn.get_ref()) {
                    return Read::Closing;
                }
                limit = LINGER;
            }
        }
    }
}

/// Reads up to the end of a line into `line`. Cancel-safe: what was read stays in `line`.
async fn read_line(conn: &mut BufReader<UnixStream>, line: &mut Vec<u8>) -> Read {
    loop {
        let available = match conn.fill_buf().await {
            Ok(available) => available,
            Err(e) => return Read::Failed(e),
        };
        if available.is_empty() {
            return Read::End;
        }
        let (length, whole) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        if line.len() + length > MAX_LINE {
            return Read::TooLong;
        }
        line.extend_from_slice(&available[..length]);
        conn.consume(length);
        if whole {
            return Read::Line;
        }
    }
}

/// Whether the client has sent something not read yet. Asked of the socket itself: tokio's
/// record of readiness may not have caught up with it.
fn arriving(conn: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    let peeked = recv(
        conn.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    );
    matches!(peeked, Ok(1..))
}

/// The answer to one request line, with its end of line (`status`: its empty line too).
async fn answer(line: &[u8], shared: &Shared) -> String {
    match String::from_utf8_lossy(line).trim() {
        "restart" => restart(shared).await,
        "status" => status(shared).await,
        other => {
            tracing::debug!("control socket: unknown command {other:?}");
            "error unknown command\n".to_owned()
        }
    }
}

/// Asks the process's loop for a restart and waits for its outcome, or for the process to let
/// go of the socket (then the restart that made it let go is the answer). Asked once this
/// process has let go, the restart is the new owner's to make.
async fn restart(shared: &Shared) -> String {
    let mut owner = shared.owner.clone();
    let now = owner.borrow_and_update().clone();
    match now {
        Owner::Here => {}
        Owner::Handed(_) => return pass_on(shared, "restart").await,
        Owner::Stopping => return format!("{}\n", RestartOutcome::failed(STOPPED)),
    }
    let (tx, rx) = oneshot::channel();
    let asked = async {
        shared.restarts.send(tx).await.ok()?;
        rx.await.ok()
    };
    let outcome = tokio::select! {
        outcome = asked => outcome.unwrap_or_else(|| RestartOutcome::failed(STOPPED)),
        owner = owner.wait_for(|owner| *owner != Owner::Here) => match owner.as_deref() {
            Ok(Owner::Handed(outcome)) => outcome.clone(),
            _ => RestartOutcome::failed(STOPPED),
        },
    };
    // The one place an outcome becomes the control socket's line.
    format!("{outcome}\n")
}

/// The status lines and their empty line: this process's family's, or once it has let go of
/// the socket, the new owner's.
async fn status(shared: &Shared) -> String {
    let handed = matches!(*shared.owner.borrow(), Owner::Handed(_));
    if handed {
        return pass_on(shared, "status").await;
    }
    let lines = local_status(&shared.family).await;
    if !shared.family.me().handed_over() {
        return lines;
    }
    // A restart ended as this was asked: this process retires, and lets go of the socket in the
    // same step; the list is the new owner's.
    let mut owner = shared.owner.clone();
    let let_go = owner.wait_for(|owner| matches!(owner, Owner::Handed(_)));
    match tokio::time::timeout(STATUS_WAIT, let_go).await {
        Ok(Ok(_)) => {}
        _ => return lines,
    }
    pass_on(shared, "status").await
}

async fn local_status(family: &Family) -> String {
    let mut lines = family.status().await.join("\n");
    lines.push_str("\n\n");
    lines
}

/// Passes `request` on to the process that owns the socket now, through its path, and returns
/// its answer. If it cannot be reached, a `restart` fails and a `status` is answered here.
async fn pass_on(shared: &Shared, request: &str) -> String {
    let wait = if request == "restart" {
        shared.restart_wait
    } else {
        STATUS_WAIT
    };
    let asked = async {
        let mut conn = UnixStream::connect(&shared.path).await?;
        conn.write_all(format!("{request}\n").as_bytes()).await?;
        conn.shutdown().await?;
        let mut answer = Vec::new();
        (&mut conn)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await?;
        match answer.ends_with(b"\n") {
            true => Ok(String::from_utf8_lossy(&answer).into_owned()),
            false => Err(io::Error::other(
                "it closed the connection without an answer",
            )),
        }
    };
    let why = match tokio::time::timeout(wait, asked).await {
        Ok(Ok(answer)) => return answer,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", wait.as_secs()),
    };
    tracing::warn!(
        "control socket: cannot pass {request} on to the process that owns the socket now: {why}"
    );
    match request {
        "restart" => format!(
            "{}\n",
            RestartOutcome::failed(format_args!(
                "cannot reach the process that owns the control socket now: {why}"
            ))
        ),
        _ => local_status(&shared.family).await,
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

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("uninterruptible-ctl-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A control socket served at `path`, whose restarts are answered `ok <pid> <generation>`.
    fn served(listener: UnixListener, path: &Path, pid: u32, generation: u64) -> Control {
        let family = Family::new(Me::new(generation, Role::Supervisor, None));
        let (tx, mut rx) = mpsc::channel::<RestartRequest>(4);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(RestartOutcome::Restarted {
                    pid,
                    generation: generation + 1,
                });
            }
        });
        let socket = ControlSocket {
            listener,
            path: path.to_owned(),
            bound: true,
        };
        Control::serve(socket, family, tx, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn answers_restart_status_and_nonsense() {
        let dir = dir("answers");
        let path = dir.join("app.ctl");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let control = served(listener, &path, 77, 1);

        assert_eq!(ask(&path, "restart\n").await, "ok 77 2\n");
        let pid = std::process::id();
        assert_eq!(
            ask(&path, "status\n").await,
            format!("pid={pid} generation=1 role=supervisor connections=0 age=0\n\n")
        );
        assert_eq!(ask(&path, "reload\n").await, "error unknown command\n");
        let long = "x".repeat(300);
        assert_eq!(ask(&path, &long).await, "error request too long\n");

        control.close(true, false).await;
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_with_an_answer_and_no_reset() {
        let dir = dir("endless");
        let path = dir.join("app.ctl");
        let control = served(bind(&path).unwrap(), &path, 1, 1);
        let conn = UnixStream::connect(&path).await.unwrap();
        let (mut reader, mut writer) = conn.into_split();
        // The client goes on sending; it reads the answer, then the end of the connection.
        let sending = tokio::spawn(async move {
            let chunk = [b'x'; 100];
            while writer.write_all(&chunk).await.is_ok() {}
        });
        let mut answer = String::new();
        reader.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "error request too long\n");
        sending.await.unwrap();
        control.close(true, false).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_client_beyond_the_limit_hears_busy_and_ends_cleanly() {
        let dir = dir("busy");
        let path = dir.join("app.ctl");
        let control = served(bind(&path).unwrap(), &path, 1, 1);
        let mut held = Vec::new();
        for _ in 0..MAX_CLIENTS {
            held.push(UnixStream::connect(&path).await.unwrap());
        }
        // Served, each of them.
        let wait = Duration::from_secs(10);
        tokio::time::timeout(wait, async {
            while control.clients.count() < MAX_CLIENTS {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(ask(&path, "restart\n").await, busy());
        // A place comes free: the next one is served.
        drop(held.pop());
        let answer = tokio::time::timeout(wait, async {
            loop {
                let answer = ask(&path, "restart\n").await;
                if answer != busy() {
                    return answer;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(answer, "ok 1 2\n");
        drop(held);
        control.close(true, false).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn requests_read_after_letting_go_are_passed_on_to_the_new_owner() {
        let dir = dir("handed");
        let path = dir.join("app.ctl");
        let listener = bind(&path).unwrap();
        // The new owner serves the same socket, as a restart hands it over.
        let copy =
            std::os::unix::net::UnixListener::from(listener.as_fd().try_clone_to_owned().unwrap());
        let old = served(listener, &path, 10, 1);
        let mut client = UnixStream::connect(&path).await.unwrap();
        // Accepted by the old process before it lets go.
        tokio::time::timeout(Duration::from_secs(10), async {
            while old.clients.count() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        old.let_go(&RestartOutcome::Restarted {
            pid: 10,
            generation: 2,
        });
        assert!(old.duplicate().is_err());
        copy.set_nonblocking(true).unwrap();
        let new = served(UnixListener::from_std(copy).unwrap(), &path, 20, 2);

        client
            .write_all(b"status\nrestart\nnonsense\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        let pid = std::process::id();
        assert_eq!(
            answer,
            format!(
                "pid={pid} generation=2 role=supervisor connections=0 age=0\n\nok 20 3\nerror unknown command\n"
            )
        );
        old.close(false, false).await;
        new.close(true, false).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_stopping_process_closes_silent_clients_and_answers_the_others() {
        let dir = dir("stopping");
        let path = dir.join("app.ctl");
        let control = served(bind(&path).unwrap(), &path, 1, 1);
        let mut silent = UnixStream::connect(&path).await.unwrap();
        let mut asking = UnixStream::connect(&path).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while control.clients.count() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        // Its request is on its way as the process stops.
        asking.write_all(b"restart\n").await.unwrap();
        let closing = tokio::spawn(control.close(true, false));
        let mut answer = String::new();
        silent.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "");
        asking.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer == "ok 1 2\n" || answer == format!("failed {STOPPED}\n"),
            "{answer:?}"
        );
        closing.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
