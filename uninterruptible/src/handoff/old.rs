//! The old process's side: start the new copy, hand it the sockets, wait for `ready`, and
//! abandon a restart that fails.

use super::*;
use crate::config::{
    FILE_DESCRIPTOR_SERVER_PATH, GENERATION, HANDOFF_STATE, KEEP_SOCKET_FILES, SUPERVISOR,
    StartCommand,
};
use crate::family::Family;
use crate::link::{Lines, peer_is_ours};
use crate::notify::NOTIFY_SOCKET;
use crate::reaper;
use crate::signals;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitStatus;
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

use super::dir::{HandoffDir, base_dir};
use super::message::send_sockets;

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

/// The private directory and the handoff socket in it.
fn handoff_socket() -> Result<(HandoffDir, UnixListener), Reason> {
    let base = base_dir(&std::env::temp_dir());
    let dir = HandoffDir::create(&base).map_err(|e| {
        Reason::Setup(
            format!("cannot create the handoff directory in {}", base.display()),
            e,
        )
    })?;
    let server = UnixListener::bind(dir.socket()).map_err(|e| {
        Reason::Setup(
            format!(
                "cannot create the handoff socket {}",
                dir.socket().display()
            ),
            e,
        )
    })?;
    Ok((dir, server))
}

/// Whether the new process said `ready`, and why not.
fn outcome(awaited: Awaited, pid: u32, plan: &Plan) -> Result<(), Reason> {
    Err(match awaited {
        Awaited::Ready => return Ok(()),
        // Answered where it is heard.
        Awaited::StateAsked => Reason::Protocol(pid, STATE.to_owned()),
        Awaited::Exited(Ok(status)) => Reason::Exited(pid, status),
        Awaited::Exited(Err(e)) | Awaited::Failed(e) => Reason::Handoff(pid, e),
        Awaited::Closed => Reason::Closed(pid),
        Awaited::Unexpected(line) => Reason::Protocol(pid, line),
        Awaited::StartFailed(why) => Reason::StartFailed(pid, why),
        Awaited::TimedOut => Reason::Timeout(pid, plan.ready_timeout),
    })
}

pub(super) async fn start_and_hand_over(
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
    let (dir, server) = handoff_socket().map_err(fail)?;
    let mut child = spawn(plan, dir.socket())
        .map_err(|e| fail(Reason::Setup("cannot start the new process".into(), e)))?;
    let pid = child.id();
    family.starting(Some((pid, plan.generation)));
    tracing::info!(
        "started new process {pid} (generation {}): {command}",
        plan.generation
    );
    let deadline = Instant::now() + plan.ready_timeout;
    let connected = connect(&mut child, &server, deadline, plan).await;
    drop(server);
    drop(dir);
    let handed = match connected {
        Ok(conn) => hand_sockets(&mut child, conn, listeners).await,
        Err(reason) => Err(reason),
    };
    let mut conn = match handed {
        Ok(conn) => conn,
        Err(reason) => {
            kill(&mut child).await;
            return Err(fail(reason));
        }
    };
    tracing::info!("handed the listening sockets to new process {pid}");
    let awaited = loop {
        break match await_ready(&mut conn, child.wait(), deadline).await {
            Awaited::StateAsked => match conn.send_bytes(&plan.offer.answer()).await {
                Ok(()) => continue,
                Err(e) => Awaited::Failed(e),
            },
            hung_up @ (Awaited::Closed | Awaited::Failed(_)) => exit_within_grace(&mut child)
                .await
                .map_or(hung_up, Awaited::Exited),
            awaited => awaited,
        };
    };
    match outcome(awaited, pid, plan) {
        Ok(()) => Ok(commit(plan, family, conn, pid).await),
        Err(reason) => Err(Failure {
            draining: abandon(conn, child, pid).await,
            ..fail(reason)
        }),
    }
}

/// Waits for the new process to connect to the handoff socket. Until it does, it does not have
/// the sockets: it cannot have accepted anyone, and may be killed outright.
async fn connect(
    child: &mut Child,
    server: &UnixListener,
    deadline: Instant,
    plan: &Plan,
) -> Result<UnixStream, Reason> {
    let pid = child.id();
    tokio::select! {
        status = child.wait() => Err(match status {
            Ok(status) => Reason::Exited(pid, status),
            Err(e) => Reason::Handoff(pid, e),
        }),
        conn = accept_own(server, pid) => conn.map_err(|e| Reason::Handoff(pid, e)),
        () = tokio::time::sleep_until(deadline) => Err(Reason::Timeout(pid, plan.ready_timeout)),
    }
}

/// Sends the sockets on the handoff connection; a new process that exits meanwhile is reported
/// by its exit status.
async fn hand_sockets(
    child: &mut Child,
    conn: UnixStream,
    listeners: Vec<OwnedFd>,
) -> Result<Lines, Reason> {
    let pid = child.id();
    if let Err(e) = send_sockets(&conn, &listeners).await {
        return Err(match exit_within_grace(child).await {
            Some(Ok(status)) => Reason::Exited(pid, status),
            _ => Reason::Handoff(pid, e),
        });
    }
    Ok(Lines::new(conn))
}

/// The new process is ready: let go of what it now owns, and tell it so.
async fn commit(plan: &Plan, family: &Family, mut conn: Lines, pid: u32) -> Handed {
    // The links handed over are the new process's to read from its `ok` on: one reader at a
    // time, or each would take the other's answers. (A supervisor hands none over, and keeps
    // reading its own.)
    if plan.supervisor.is_none() {
        family.let_go_of_links().await;
    }
    // Best effort: a new process that is gone by now needs no verdict.
    let _ = conn.send(OK).await;
    Handed {
        pid,
        generation: plan.generation,
        link: conn,
    }
}

/// What the old process heard while it waited for `ready`.
#[derive(Debug)]
pub(crate) enum Awaited {
    Ready,
    /// `state`: the new process asks for what this one carries over.
    StateAsked,
    Exited(io::Result<ExitStatus>),
    Closed,
    Unexpected(String),
    /// `failed <reason>`: the new process cannot start (its initialiser failed), and exits.
    StartFailed(String),
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
        Ok(Some(line)) if line == STATE => Awaited::StateAsked,
        Ok(Some(line)) => match line.strip_prefix(FAILED) {
            Some(why) => Awaited::StartFailed(why.trim_end().to_owned()),
            None => Awaited::Unexpected(line),
        },
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
pub(super) async fn abandon(mut conn: Lines, mut child: Child, pid: u32) -> Option<Lines> {
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
pub(super) async fn exit_within_grace(child: &mut Child) -> Option<io::Result<ExitStatus>> {
    tokio::time::timeout(EXIT_GRACE, child.wait()).await.ok()
}

/// Kills and reaps a new process that never took over (it may already have exited).
pub(super) async fn kill(child: &mut Child) {
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

pub(super) fn spawn(plan: &Plan, socket: &Path) -> io::Result<Child> {
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
    // With nothing to carry, the new process is not told to ask: a round trip saved.
    if plan.offer.carries_something() {
        command.env(HANDOFF_STATE, std::process::id().to_string());
    }
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
            signals::unblocked(|| reaper.spawn(&mut command)).map(Child::Reaped)
        }
        None => {
            let mut command = tokio::process::Command::from(command);
            signals::unblocked(|| command.spawn()).map(Child::Tokio)
        }
    }
}

/// The first connection from a process of our own uid; others are refused and logged.
/// Only the new process (the one this restart started, or a process it started: a start
/// command may run the server as its child) gets the sockets; another process of our uid that
/// finds the handoff socket is refused and logged.
pub(super) async fn accept_own(server: &UnixListener, child: u32) -> io::Result<UnixStream> {
    loop {
        let (conn, _) = server.accept().await?;
        if !peer_is_ours(&conn, "a handoff connection", false) {
            continue;
        }
        let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| c.pid() as u32);
        match peer {
            Ok(pid) if descends_from(pid, child) => return Ok(conn),
            Ok(pid) => tracing::warn!(
                "refused a handoff connection from process {pid}, which new process {child} did not start"
            ),
            Err(e) => tracing::warn!("refused a handoff connection whose process is unknown: {e}"),
        }
    }
}

/// Whether process `pid` is `ancestor` or one of its descendants (`/proc/<pid>/stat`'s parent
/// pids, followed up to 64 levels).
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut pid = pid;
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After the command name in parentheses: state, then the parent's pid.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse().ok());
        match parent {
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::AsyncWriteExt;

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

    #[test]
    fn a_process_descends_from_itself_and_its_ancestors_only() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert!(descends_from(me, me));
        assert!(descends_from(me, parent));
        assert!(!descends_from(parent, me));
        assert!(!descends_from(me, u32::MAX));
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
}
