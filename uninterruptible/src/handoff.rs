//! Hot restart: the old process hands its listening socket to a new copy of the program.
//!
//! Old process ([`restart`], on `USR1`/`HUP`):
//! 1. Creates a private directory (mode 0700) under `$TMPDIR` holding a UNIX socket, the
//!    *handoff socket*, and starts the new copy with `FILE_DESCRIPTOR_SERVER_PATH` naming it.
//!    It keeps accepting clients throughout.
//! 2. Accepts a connection on the handoff socket from a peer of its own uid (`SO_PEERCRED`) and
//!    sends it the listening socket by `SCM_RIGHTS`.
//! 3. Waits for the line `ready`. On it, the caller stops accepting and drains. On anything else
//!    (the child exits, closes the connection, or is silent past `READY_TIMEOUT`), the child is
//!    killed and reaped, the pidfile is given back to the old process, and it serves on.
//! 4. The directory and socket are removed after every attempt.
//!
//! New process ([`Takeover`], at startup): connects, receives the socket (close-on-exec), adopts
//! it, finishes everything that can fail, starts accepting, writes the pidfile, then sends `ready`.

use crate::config::{FILE_DESCRIPTOR_SERVER_PATH, GENERATION, StartCommand};
use crate::pidfile;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, getsockopt, recvmsg, sendmsg, sockopt,
};
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The first bytes of the message that carries the socket.
const HELLO: &[u8] = b"uninterruptible handoff 1\n";
/// What the new process sends once it is serving.
const READY: &str = "ready\n";

/// How the old process starts and waits for its successor.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) command: StartCommand,
    pub(crate) ready_timeout: Duration,
    pub(crate) pidfile: Option<PathBuf>,
    /// The generation the new process will have.
    pub(crate) generation: u64,
}

/// Why a restart did not happen. The old process serves on.
#[derive(Debug)]
pub(crate) enum Failure {
    Setup(&'static str, io::Error),
    Exited(u32, ExitStatus),
    Closed(u32),
    Protocol(u32, String),
    Timeout(u32, Duration),
    Handoff(u32, io::Error),
    Cancelled(u32),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Setup(what, e) => write!(f, "{what}: {e}"),
            Failure::Exited(pid, status) => {
                write!(f, "new process {pid} exited before ready ({status})")
            }
            Failure::Closed(pid) => {
                write!(
                    f,
                    "new process {pid} closed the handoff connection before ready"
                )
            }
            Failure::Protocol(pid, got) => {
                write!(f, "new process {pid} sent {got:?} instead of ready")
            }
            Failure::Timeout(pid, limit) => {
                write!(
                    f,
                    "new process {pid} was not ready within {limit:?} (READY_TIMEOUT)"
                )
            }
            Failure::Handoff(pid, e) => write!(f, "handoff to new process {pid} failed: {e}"),
            Failure::Cancelled(pid) => write!(f, "restart cancelled; new process {pid} stopped"),
        }
    }
}

/// Starts a new copy of the program and hands it `listener`. Returns the new pid once it is
/// ready; on failure the new copy is killed and reaped and the pidfile names us again.
/// `cancel` (a stop request meanwhile) ends the attempt the same way.
pub(crate) async fn restart(
    plan: Plan,
    listener: OwnedFd,
    cancel: oneshot::Receiver<()>,
) -> Result<u32, Failure> {
    let dir = HandoffDir::create()
        .map_err(|e| Failure::Setup("cannot create the handoff directory", e))?;
    let server = UnixListener::bind(dir.socket())
        .map_err(|e| Failure::Setup("cannot create the handoff socket", e))?;
    let mut child = spawn(&plan, dir.socket())?;
    let pid = child.id().unwrap_or_default();
    tracing::info!("started new process {pid} (generation {})", plan.generation);

    let outcome = tokio::select! {
        biased;
        _ = cancel => Err(Failure::Cancelled(pid)),
        status = child.wait() => Err(match status {
            Ok(status) => Failure::Exited(pid, status),
            Err(e) => Failure::Handoff(pid, e),
        }),
        result = tokio::time::timeout(plan.ready_timeout, hand_over(&server, &listener, pid)) => {
            result.unwrap_or(Err(Failure::Timeout(pid, plan.ready_timeout)))
        }
    };
    drop(listener);
    drop(server);
    drop(dir);

    if let Err(failure) = outcome {
        stop(&mut child).await;
        if let Some(path) = &plan.pidfile {
            if let Err(e) = pidfile::write(path, std::process::id()) {
                tracing::warn!("cannot restore the pidfile: {e}");
            }
        }
        return Err(failure);
    }
    Ok(pid)
}

/// Kills and reaps a child that did not take over (it may already have exited).
async fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

fn spawn(plan: &Plan, socket: &Path) -> Result<Child, Failure> {
    let mut command = match &plan.command {
        // `exec`, so the pid we wait for and kill is the server itself, not a shell.
        StartCommand::Shell(line) => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(format!("exec {line}"));
            command
        }
        StartCommand::Exec { program, args } => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    };
    command
        .env(FILE_DESCRIPTOR_SERVER_PATH, socket)
        .env(GENERATION, plan.generation.to_string());
    command
        .spawn()
        .map_err(|e| Failure::Setup("cannot start the new process", e))
}

/// Serves the first connection from our own uid: sends the socket, waits for `ready`.
async fn hand_over(server: &UnixListener, listener: &OwnedFd, pid: u32) -> Result<(), Failure> {
    let own_uid = nix::unistd::geteuid().as_raw();
    let conn = loop {
        let (conn, _) = server
            .accept()
            .await
            .map_err(|e| Failure::Handoff(pid, e))?;
        match getsockopt(&conn, sockopt::PeerCredentials) {
            Ok(cred) if cred.uid() == own_uid => break conn,
            Ok(cred) => tracing::warn!(
                "refused a handoff connection from pid {} with uid {} (ours is {own_uid})",
                cred.pid(),
                cred.uid()
            ),
            Err(e) => {
                tracing::warn!("refused a handoff connection: cannot read its credentials: {e}")
            }
        }
    };
    send_socket(&conn, listener)
        .await
        .map_err(|e| Failure::Handoff(pid, e))?;
    tracing::info!("handed the listening socket to new process {pid}");

    let mut line = String::new();
    let mut reader = BufReader::new(conn);
    match reader.read_line(&mut line).await {
        Ok(0) => Err(Failure::Closed(pid)),
        Ok(_) if line == READY => Ok(()),
        Ok(_) => Err(Failure::Protocol(pid, line)),
        Err(e) => Err(Failure::Handoff(pid, e)),
    }
}

async fn send_socket(conn: &UnixStream, listener: &OwnedFd) -> io::Result<()> {
    let fds = [listener.as_raw_fd()];
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

/// The private directory holding the handoff socket; removed with it when dropped.
#[derive(Debug)]
struct HandoffDir {
    dir: PathBuf,
    socket: PathBuf,
}

impl HandoffDir {
    fn create() -> io::Result<HandoffDir> {
        static ATTEMPT: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = ATTEMPT.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = base.join(format!(
                "uninterruptible-{}-{n}-{nanos:x}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let socket = dir.join("handoff.sock");
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
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(
                "cannot remove the handoff directory {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// The new process's side: the connection to the old process and the socket received on it.
#[derive(Debug)]
pub(crate) struct Takeover {
    conn: StdUnixStream,
    path: PathBuf,
}

impl Takeover {
    /// Connects to the handoff socket named by `FILE_DESCRIPTOR_SERVER_PATH` and receives the
    /// listening socket. `None` when this process was not started by a restart.
    pub(crate) fn connect(limit: Duration) -> Option<io::Result<(Takeover, OwnedFd)>> {
        let path = PathBuf::from(std::env::var_os(FILE_DESCRIPTOR_SERVER_PATH)?);
        Some(Self::receive(path, limit))
    }

    fn receive(path: PathBuf, limit: Duration) -> io::Result<(Takeover, OwnedFd)> {
        let conn = StdUnixStream::connect(&path)?;
        conn.set_read_timeout(Some(limit))?;
        conn.set_write_timeout(Some(limit))?;
        let mut hello = [0u8; HELLO.len()];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
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
        let bytes = msg.bytes;
        if &hello[..bytes] != HELLO {
            return Err(io::Error::other("unexpected message on the handoff socket"));
        }
        let mut fds = fds.into_iter();
        let listener = fds
            .next()
            .ok_or_else(|| io::Error::other("no socket received on the handoff socket"))?;
        Ok((Takeover { conn, path }, listener))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Tells the old process this one is serving; it then stops accepting and drains.
    pub(crate) fn ready(mut self) -> io::Result<()> {
        self.conn.write_all(READY.as_bytes())
    }
}
