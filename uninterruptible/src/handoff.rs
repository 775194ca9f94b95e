//! Hot restart: the old process hands its listening socket to a new copy of the program.
//!
//! The conversation on the handoff socket, one line each way at a time:
//!
//! ```text
//! old -> new   "uninterruptible handoff 1\n" + the listening socket (SCM_RIGHTS)
//! new -> old   "ready\n"      the new process is accepting
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
//! New process ([`Takeover`], at startup): connects first thing, removes the handoff socket and
//! its directory (so nothing is left if the old process is killed now), starts its runtime
//! while the old process sends, receives the socket (close-on-exec), finishes everything that
//! can fail, starts accepting, sends `ready`, then waits for the old process's verdict
//! ([`Pending::verdict`]). An end of file counts as `ok`: the old process is gone, so this one
//! is the server.

use crate::config::{
    FILE_DESCRIPTOR_SERVER_PATH, GENERATION, KEEP_SOCKET_FILES, SUPERVISOR, StartCommand,
};
use crate::family::Family;
use crate::notify::NOTIFY_SOCKET;
use crate::reaper::{self, Reaper};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, getsockopt, recv, recvmsg, sendmsg,
    sockopt,
};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

/// The first bytes of the message that carries the socket.
const HELLO: &[u8] = b"uninterruptible handoff 1\n";
const READY: &str = "ready\n";
const OK: &str = "ok\n";
const ABORT: &str = "abort\n";
const ABORTING: &str = "aborting\n";
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
    Timeout(u32, Duration),
    Handoff(u32, io::Error),
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
            Reason::Timeout(pid, limit) => write!(
                f,
                "new process {pid} was not ready within {limit:?} (READY_TIMEOUT)"
            )?,
            Reason::Handoff(pid, e) => write!(f, "handoff to new process {pid} failed: {e}")?,
        }
        write!(f, "; start command: {}", self.command)
    }
}

/// Checks, at startup, what a restart will need, and warns about what would make it fail: it
/// may be fixed before the first `USR1` (a release not deployed yet), so it does not stop the
/// server.
pub(crate) fn preflight(plan: &Plan) {
    let tmp = std::env::temp_dir();
    let base = base_dir(&tmp);
    if base != tmp {
        tracing::warn!(
            "the handoff socket would not fit a UNIX socket address ({} bytes) under {}: restarts make it under {} instead; set TMPDIR to a shorter directory",
            uninterruptible_grammar::MAX_SOCKET_PATH,
            tmp.display(),
            base.display()
        );
    }
    match HandoffDir::create(&base) {
        Ok(dir) => drop(dir),
        Err(e) => tracing::warn!(
            "restarts will fail until this is fixed: cannot create a handoff directory in {} ({e}); set TMPDIR to a writable directory",
            base.display()
        ),
    }
    // The kernel ends a PID namespace (a container) when its PID 1 exits, which a restart
    // makes this process do.
    if plan.supervisor.is_none() && std::process::id() == 1 {
        tracing::warn!(
            "this process is PID 1 and not supervised: a restart (USR1) ends it once the new process serves, and with it the container and every process in it; set SUPERVISE=true, so that PID 1 stays as a supervisor and restarts replace only the serving process"
        );
    }
    if let Some(problem) = plan.command.program_problem() {
        tracing::warn!(
            "restarts will fail until this is fixed: {problem}; start command: {}",
            plan.command
        );
    }
}

/// Starts a new copy of the program and hands it `sockets` (listeners, and the control socket
/// and status links when this process owns them). Returns once the new process is ready. On
/// failure the new copy is gone, or is draining what it accepted and has let go of the pidfile:
/// the caller may write its own pid back. `family` learns of the process while it starts.
pub(crate) async fn restart(
    plan: Plan,
    sockets: Vec<OwnedFd>,
    family: &Family,
) -> Result<Handed, Failure> {
    let result = start_and_hand_over(&plan, sockets, family).await;
    family.starting(None);
    result
}

async fn start_and_hand_over(
    plan: &Plan,
    listeners: Vec<OwnedFd>,
    family: &Family,
) -> Result<Handed, Failure> {
    let command = plan.command.to_string();
    let fail = |reason| Failure {
        reason,
        command: command.clone(),
        draining: None,
    };
    let base = base_dir(&std::env::temp_dir());
    let dir = HandoffDir::create(&base).map_err(|e| {
        fail(Reason::Setup(
            format!("cannot create the handoff directory in {}", base.display()),
            e,
        ))
    })?;
    let server = UnixListener::bind(dir.socket()).map_err(|e| {
        fail(Reason::Setup(
            format!(
                "cannot create the handoff socket {}",
                dir.socket().display()
            ),
            e,
        ))
    })?;
    let mut child = spawn(plan, dir.socket())
        .map_err(|e| fail(Reason::Setup("cannot start the new process".into(), e)))?;
    let pid = child.id();
    family.starting(Some((pid, plan.generation)));
    tracing::info!(
        "started new process {pid} (generation {}): {command}",
        plan.generation
    );
    let deadline = Instant::now() + plan.ready_timeout;

    // Until it connects, the new process does not have the socket: it cannot have accepted
    // anyone, and may be killed outright.
    let connected = tokio::select! {
        status = child.wait() => Err(match status {
            Ok(status) => Reason::Exited(pid, status),
            Err(e) => Reason::Handoff(pid, e),
        }),
        conn = accept_own(&server) => conn.map_err(|e| Reason::Handoff(pid, e)),
        () = tokio::time::sleep_until(deadline) => Err(Reason::Timeout(pid, plan.ready_timeout)),
    };
    drop(server);
    drop(dir);
    let conn = match connected {
        Ok(conn) => conn,
        Err(reason) => {
            kill(&mut child).await;
            return Err(fail(reason));
        }
    };
    let mut conn = Lines::new(conn);
    if let Err(e) = send_sockets(&conn.stream, &listeners).await {
        let reason = match exit_within_grace(&mut child).await {
            Some(Ok(status)) => Reason::Exited(pid, status),
            _ => Reason::Handoff(pid, e),
        };
        kill(&mut child).await;
        return Err(fail(reason));
    }
    drop(listeners);
    tracing::info!("handed the listening sockets to new process {pid}");

    let awaited = match await_ready(&mut conn, child.wait(), deadline).await {
        hung_up @ (Awaited::Closed | Awaited::Failed(_)) => exit_within_grace(&mut child)
            .await
            .map_or(hung_up, Awaited::Exited),
        awaited => awaited,
    };
    let reason = match awaited {
        Awaited::Ready => {
            // Best effort: a new process that is gone by now needs no verdict.
            let _ = conn.send(OK).await;
            return Ok(Handed {
                pid,
                generation: plan.generation,
                link: conn,
            });
        }
        Awaited::Exited(Ok(status)) => Reason::Exited(pid, status),
        Awaited::Exited(Err(e)) | Awaited::Failed(e) => Reason::Handoff(pid, e),
        Awaited::Closed => Reason::Closed(pid),
        Awaited::Unexpected(line) => Reason::Protocol(pid, line),
        Awaited::TimedOut => Reason::Timeout(pid, plan.ready_timeout),
    };
    let draining = abandon(conn, child, pid).await;
    Err(Failure {
        draining,
        ..fail(reason)
    })
}

/// What the old process heard while it waited for `ready`.
#[derive(Debug)]
pub(crate) enum Awaited {
    Ready,
    Exited(io::Result<ExitStatus>),
    Closed,
    Unexpected(String),
    TimedOut,
    Failed(io::Error),
}

/// Waits for the new process's `ready` on `conn`, its exit, or `deadline`, whichever comes
/// first; but a `ready` that the new process sent before it exited, or before the deadline,
/// counts even if its exit or the deadline is seen first.
pub(crate) async fn await_ready(
    conn: &mut Lines,
    exited: impl Future<Output = io::Result<ExitStatus>>,
    deadline: Instant,
) -> Awaited {
    let heard = |line: io::Result<Option<String>>| match line {
        Ok(Some(line)) if line == READY => Awaited::Ready,
        Ok(Some(line)) => Awaited::Unexpected(line),
        Ok(None) => Awaited::Closed,
        Err(e) => Awaited::Failed(e),
    };
    let other = tokio::select! {
        biased;
        line = conn.read_line() => return heard(line),
        status = exited => Awaited::Exited(status),
        () = tokio::time::sleep_until(deadline) => Awaited::TimedOut,
    };
    match conn.buffered_line() {
        Some(line) => heard(Ok(Some(line))),
        None => other,
    }
}

/// Ends a restart that failed after the new process got the socket. It may have started
/// accepting: ask it to drain what it accepted, and kill it only if it does not answer. Returns
/// the connection to a process that drains.
async fn abandon(mut conn: Lines, mut child: Child, pid: u32) -> Option<Lines> {
    let answered = async {
        conn.send(ABORT).await?;
        loop {
            match conn.read_line().await? {
                Some(line) if line == ABORTING => return Ok::<_, io::Error>(true),
                // A `ready` sent while we decided.
                Some(_) => continue,
                None => return Ok(false),
            }
        }
    };
    let draining = tokio::select! {
        biased;
        answered = tokio::time::timeout(ABORT_GRACE, answered) => matches!(answered, Ok(Ok(true))),
        _ = child.wait() => false,
    };
    if draining {
        tracing::info!(
            "new process {pid} drains the connections it accepted, then exits; this process serves on"
        );
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!("abandoned new process {pid} exited ({status})"),
                Err(e) => tracing::warn!("cannot wait for abandoned new process {pid}: {e}"),
            }
        });
        Some(conn)
    } else {
        kill(&mut child).await;
        None
    }
}

/// The exit of a new process that hung up on the handoff connection, if it comes within
/// [`EXIT_GRACE`]. Such a process is on its way out: one that fails at start-up closes the
/// connection before it reports why, and a kill now would cut that report short.
async fn exit_within_grace(child: &mut Child) -> Option<io::Result<ExitStatus>> {
    tokio::time::timeout(EXIT_GRACE, child.wait()).await.ok()
}

/// Kills and reaps a new process that never took over (it may already have exited).
async fn kill(child: &mut Child) {
    child.start_kill();
    let _ = child.wait().await;
}

/// A new process: reaped by tokio, or, in a supervisor, by its reaper.
#[derive(Debug)]
pub(crate) enum Child {
    Tokio(tokio::process::Child),
    Reaped(reaper::Child),
}

impl Child {
    pub(crate) fn id(&self) -> u32 {
        match self {
            Child::Tokio(child) => child.id().unwrap_or_default(),
            Child::Reaped(child) => child.id(),
        }
    }

    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Child::Tokio(child) => child.wait().await,
            Child::Reaped(child) => child.wait().await,
        }
    }

    fn start_kill(&mut self) {
        match self {
            Child::Tokio(child) => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.start_kill();
                }
            }
            Child::Reaped(child) => child.start_kill(),
        }
    }
}

fn spawn(plan: &Plan, socket: &Path) -> io::Result<Child> {
    let mut command = match &plan.command {
        // `exec`, so the pid we wait for and kill is the server itself, not a shell.
        StartCommand::Shell(line) => {
            let mut command = std::process::Command::new("/bin/sh");
            command.arg("-c").arg(format!("exec {line}"));
            command
        }
        StartCommand::Exec { program, args } => {
            let mut command = std::process::Command::new(program);
            command.args(args);
            command
        }
    };
    command
        .env(FILE_DESCRIPTOR_SERVER_PATH, socket)
        .env(GENERATION, plan.generation.to_string())
        .env(crate::timing::SPAWNED_AT, crate::timing::now().to_string());
    if plan.keep_socket_files {
        command.env(KEEP_SOCKET_FILES, "1");
    }
    if let Some(bind) = &plan.bind {
        command.env("BIND", bind);
    }
    match &plan.supervisor {
        Some(reaper) => {
            // The supervisor speaks for the service to systemd, and owns the socket files.
            command
                .env(SUPERVISOR, std::process::id().to_string())
                .env(KEEP_SOCKET_FILES, "1")
                .env_remove(NOTIFY_SOCKET);
            reaper.spawn(&mut command).map(Child::Reaped)
        }
        None => tokio::process::Command::from(command)
            .spawn()
            .map(Child::Tokio),
    }
}

/// The first connection from a process of our own uid; others are refused and logged.
async fn accept_own(server: &UnixListener) -> io::Result<UnixStream> {
    loop {
        let (conn, _) = server.accept().await?;
        if peer_is_ours(&conn, "a handoff connection", false) {
            return Ok(conn);
        }
    }
}

/// Whether the process at the other end of `conn` runs as our uid (or as root, with
/// `root_too`); a refusal is logged, naming `what` was refused.
pub(crate) fn peer_is_ours(conn: &UnixStream, what: &str, root_too: bool) -> bool {
    match check_peer(conn, root_too) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("refused {what}: {why}");
            false
        }
    }
}

/// Whether the process at the other end of `conn` runs as our uid (or as root, with
/// `root_too`); if not, why.
fn check_peer(conn: &impl AsFd, root_too: bool) -> Result<(), String> {
    let own_uid = nix::unistd::geteuid().as_raw();
    match getsockopt(conn, sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == own_uid || (root_too && cred.uid() == 0) => Ok(()),
        Ok(cred) => Err(format!(
            "it is pid {} with uid {} (ours is {own_uid})",
            cred.pid(),
            cred.uid()
        )),
        Err(e) => Err(format!("cannot read its credentials: {e}")),
    }
}

/// The most descriptors a handoff carries (listeners, the control socket and status links):
/// the kernel's limit for one message (`SCM_MAX_FD`). The configuration keeps the listeners and
/// the control socket within it.
pub(crate) const MAX_FDS: usize = uninterruptible_grammar::MAX_HANDOFF_FDS;

async fn send_sockets(conn: &UnixStream, listeners: &[OwnedFd]) -> io::Result<()> {
    let fds: Vec<_> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = conn
        .async_io(Interest::WRITABLE, || {
            sendmsg::<UnixAddr>(
                conn.as_raw_fd(),
                &[IoSlice::new(HELLO)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    if sent != HELLO.len() {
        return Err(io::Error::other("short write on the handoff socket"));
    }
    Ok(())
}

/// A handoff connection read line by line.
#[derive(Debug)]
pub(crate) struct Lines {
    stream: UnixStream,
    buffer: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(stream: UnixStream) -> Lines {
        Lines {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The next line, with its `\n`; `None` at the end of the connection. Cancel-safe: what was
    /// read stays in the buffer.
    pub(crate) async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
            }
            self.stream.readable().await?;
            let mut chunk = [0u8; 64];
            match self
                .stream
                .try_io(Interest::READABLE, || recv_now(&self.stream, &mut chunk))
            {
                Ok(0) => return Ok(None),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A whole line already received by the kernel, without waiting. Read from the socket
    /// directly: tokio's record of readiness may not have caught up with it yet.
    pub(crate) fn buffered_line(&mut self) -> Option<String> {
        let mut chunk = [0u8; 64];
        while let Ok(n @ 1..) = recv_now(&self.stream, &mut chunk) {
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        self.take_line()
    }

    /// Drops whatever was received and not asked for; true when the other end has closed.
    /// Read through tokio, so that its record of readiness is cleared.
    pub(crate) fn discard_unasked(&mut self) -> bool {
        self.buffer.clear();
        let mut chunk = [0u8; 64];
        loop {
            match self
                .stream
                .try_io(Interest::READABLE, || recv_now(&self.stream, &mut chunk))
            {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    fn take_line(&mut self) -> Option<String> {
        let end = self.buffer.iter().position(|&b| b == b'\n')? + 1;
        let line: Vec<u8> = self.buffer.drain(..end).collect();
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub(crate) async fn send(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(line.as_bytes()).await
    }
}

fn recv_now(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    recv(stream.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

/// The private directory holding the handoff socket; removed with it when dropped (unless the
/// new process removed them first).
#[derive(Debug)]
struct HandoffDir {
    dir: PathBuf,
    socket: PathBuf,
}

/// The prefix of every handoff directory's name.
const DIR_PREFIX: &str = "uninterruptible-";
/// The handoff socket's name in its directory.
const SOCKET_NAME: &str = "handoff.sock";
/// The longest path [`HandoffDir::create`] gives a handoff socket, below its base directory:
/// `/<prefix><pid>-<attempt>-<nanoseconds in hex>/handoff.sock`, each number at its longest.
const LONGEST_BELOW_BASE: usize =
    1 + DIR_PREFIX.len() + 10 + 1 + 10 + 1 + 8 + 1 + SOCKET_NAME.len();

/// The directory to make handoff directories in: `tmp` (`$TMPDIR`), unless a handoff socket
/// there could be longer than a UNIX socket address holds, which would make every restart fail;
/// then the first short enough of `$XDG_RUNTIME_DIR` (private to the user) and `/tmp`.
fn base_dir(tmp: &Path) -> PathBuf {
    let fits = |dir: &Path| {
        dir.as_os_str().len() + LONGEST_BELOW_BASE <= uninterruptible_grammar::MAX_SOCKET_PATH
    };
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    [
        Some(tmp.to_path_buf()),
        runtime,
        Some(PathBuf::from("/tmp")),
    ]
    .into_iter()
    .flatten()
    .find(|dir| fits(dir))
    .unwrap_or_else(|| PathBuf::from("/tmp"))
}

impl HandoffDir {
    fn create(base: &Path) -> io::Result<HandoffDir> {
        static ATTEMPT: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = ATTEMPT.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = base.join(format!("{DIR_PREFIX}{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let socket = dir.join(SOCKET_NAME);
                    return Ok(HandoffDir { dir, socket });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for HandoffDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => tracing::warn!(
                "cannot remove the handoff directory {}: {e}",
                self.dir.display()
            ),
            _ => {}
        }
    }
}

/// Removes a handoff socket and its directory, once the new process holds the listening
/// socket: if the old process is killed now, nothing is left in `$TMPDIR`. Only what looks like
/// ours is touched.
fn remove_handoff_path(path: &Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let ours = dir
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with(DIR_PREFIX));
        if ours {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The new process's side: the connection to the old process and the socket received on it.
#[derive(Debug)]
pub(crate) struct Takeover {
    conn: StdUnixStream,
    path: PathBuf,
}

/// A new process's handoff connection, made first thing so the old process sends the sockets
/// while this one starts its runtime: they are received later, by [`Dialed::receive`].
#[derive(Debug)]
pub(crate) struct Dialed {
    conn: StdUnixStream,
    path: PathBuf,
}

impl Takeover {
    /// Connects to the handoff socket (`FILE_DESCRIPTOR_SERVER_PATH`), checks that the process
    /// serving it runs as our uid (`SO_PEERCRED`: another user's process must not hand this one
    /// sockets to serve), and removes the socket and its directory, which are not needed once
    /// connected (so nothing is left if the old process is killed now).
    pub(crate) fn dial(path: &Path) -> io::Result<Dialed> {
        let conn = StdUnixStream::connect(path)?;
        remove_handoff_path(path);
        check_peer(&conn, false).map_err(|why| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("refused the handoff socket {}: {why}", path.display()),
            )
        })?;
        Ok(Dialed {
            conn,
            path: path.to_owned(),
        })
    }
}

impl Dialed {
    /// Receives the listening sockets (and the rest the old process hands over).
    pub(crate) fn receive(self, limit: Duration) -> io::Result<(Takeover, Vec<OwnedFd>)> {
        let Dialed { conn, path } = self;
        conn.set_read_timeout(Some(limit))?;
        conn.set_write_timeout(Some(limit))?;
        let mut hello = [0u8; HELLO.len()];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut hello)];
        let msg = recvmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel installed these descriptors in this process for this
                // message; nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other(format!(
                "more than {MAX_FDS} descriptors were sent on the handoff socket"
            )));
        }
        let bytes = msg.bytes;
        if &hello[..bytes] != HELLO {
            return Err(io::Error::other("unexpected message on the handoff socket"));
        }
        if fds.is_empty() {
            return Err(io::Error::other("no socket received on the handoff socket"));
        }
        Ok((Takeover { conn, path }, fds))
    }
}

impl Takeover {
    pub(crate) fn path(&self) -> &Path {
        &self.path
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
    use std::os::unix::process::ExitStatusExt;

    fn pair() -> (Lines, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Lines::new(a), b)
    }

    async fn exited() -> io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(0))
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[tokio::test]
    async fn ready_then_exit_is_success() {
        // The new process said ready and exited at once: both are there when we look.
        let (mut conn, mut child) = pair();
        child.write_all(READY.as_bytes()).await.unwrap();
        drop(child);
        let awaited = await_ready(&mut conn, exited(), later()).await;
        assert!(matches!(awaited, Awaited::Ready), "{awaited:?}");
    }

    #[tokio::test]
    async fn ready_buffered_before_the_exit_is_seen_counts() {
        // The exit is seen first (before the reactor reports the socket readable).
        let (mut conn, mut child) = pair();
        let awaited = await_ready(
            &mut conn,
            async {
                child.write_all(READY.as_bytes()).await.unwrap();
                Ok(ExitStatus::from_raw(0))
            },
            later(),
        )
        .await;
        assert!(matches!(awaited, Awaited::Ready), "{awaited:?}");
    }

    #[tokio::test]
    async fn ready_buffered_at_the_deadline_counts() {
        let (mut conn, mut child) = pair();
        child.write_all(READY.as_bytes()).await.unwrap();
        let awaited = await_ready(&mut conn, std::future::pending(), Instant::now()).await;
        assert!(matches!(awaited, Awaited::Ready), "{awaited:?}");
    }

    #[tokio::test]
    async fn exit_without_ready_is_failure() {
        let (mut conn, _child) = pair();
        let awaited = await_ready(&mut conn, exited(), later()).await;
        assert!(
            matches!(awaited, Awaited::Exited(Ok(s)) if s.success()),
            "{awaited:?}"
        );
    }

    #[tokio::test]
    async fn silence_until_the_deadline_is_a_timeout() {
        let (mut conn, _child) = pair();
        let deadline = Instant::now() + Duration::from_millis(20);
        let awaited = await_ready(&mut conn, std::future::pending(), deadline).await;
        assert!(matches!(awaited, Awaited::TimedOut), "{awaited:?}");
    }

    #[tokio::test]
    async fn closed_or_garbled_is_failure() {
        let (mut conn, child) = pair();
        drop(child);
        let awaited = await_ready(&mut conn, std::future::pending(), later()).await;
        assert!(matches!(awaited, Awaited::Closed), "{awaited:?}");

        let (mut conn, mut child) = pair();
        child.write_all(b"steady\n").await.unwrap();
        let awaited = await_ready(&mut conn, std::future::pending(), later()).await;
        assert!(
            matches!(&awaited, Awaited::Unexpected(l) if l == "steady\n"),
            "{awaited:?}"
        );
    }

    #[test]
    fn a_handoff_socket_always_fits_a_socket_address() {
        let short = Path::new("/var/tmp");
        assert_eq!(base_dir(short), short);
        // The longest base that fits, and one byte more.
        let longest = uninterruptible_grammar::MAX_SOCKET_PATH - LONGEST_BELOW_BASE;
        let fits = PathBuf::from(format!("/{}", "t".repeat(longest - 1)));
        assert_eq!(base_dir(&fits), fits);
        let over = PathBuf::from(format!("/{}", "t".repeat(longest)));
        let fallback = base_dir(&over);
        assert_ne!(fallback, over);
        assert!(
            fallback.as_os_str().len() <= longest,
            "{}",
            fallback.display()
        );

        // The longest name a handoff directory gets is within what was counted.
        let dir = HandoffDir::create(&std::env::temp_dir()).unwrap();
        let below = dir.socket().strip_prefix(std::env::temp_dir()).unwrap();
        assert!(below.as_os_str().len() < LONGEST_BELOW_BASE);
        let name = format!(
            "/{DIR_PREFIX}{}-{}-{:x}/{SOCKET_NAME}",
            u32::MAX,
            u32::MAX,
            999_999_999u32
        );
        assert_eq!(name.len(), LONGEST_BELOW_BASE);
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
