//! Restarting and stopping a server from the program's own code: [`Handle`], the outcome it
//! and the control socket give ([`RestartOutcome`]), and the requests the serving role reads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// How a restart ended: what `restart` on the control socket answers, and what
/// [`Handle::restart`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartOutcome {
    /// The new process `pid`, of generation `generation`, is serving; this one retires
    /// (drains and exits). In supervised mode, the new serving process.
    Restarted {
        /// The new process's pid.
        pid: u32,
        /// Its generation: 1 for the first process, one more for each restart attempt.
        generation: u64,
    },
    /// The restart failed, or could not start; the process that was serving serves on. The
    /// reason, in one line, is the one the log gives (a new process's exit status, an
    /// initialiser's error, `READY_TIMEOUT`, ...).
    Failed(String),
}

impl RestartOutcome {
    pub(crate) fn failed(reason: impl fmt::Display) -> RestartOutcome {
        // One line, whatever the reason says.
        RestartOutcome::Failed(reason.to_string().replace('\n', " "))
    }
}

/// The control socket's line: `ok <pid> <generation>` or `failed <reason>`.
impl fmt::Display for RestartOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartOutcome::Restarted { pid, generation } => write!(f, "ok {pid} {generation}"),
            RestartOutcome::Failed(reason) => write!(f, "failed {reason}"),
        }
    }
}

/// What a [`Handle`] asks of the server.
#[derive(Debug)]
pub(crate) enum HandleRequest {
    /// A restart, as `USR1` or the control socket's `restart`, with where its outcome goes.
    Restart(oneshot::Sender<RestartOutcome>),
    /// A stop, as `TERM`.
    Stop,
}

/// Restarts or stops a running [`Server`](crate::Server) from the program's own code: a task of its own, an
/// admin endpoint, a file watcher. Cheap to clone; every clone reaches the same server.
///
/// A restart asked here is the same as one asked by `USR1` or on the control socket: it joins
/// one in progress, waits for the old process's verdict first when this process was itself just
/// started by a restart, and is refused in a process that is stopping, in a supervised serving
/// process (its supervisor restarts it) and in a Server::Starter worker.
///
/// ```no_run
/// use std::time::Duration;
///
/// fn main() -> std::process::ExitCode {
///     let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:7000");
///     let config = uninterruptible::Config::from_env(defaults).expect("a valid configuration");
///     let server = uninterruptible::Server::new(config);
///     let handle = server.handle();
///     std::thread::spawn(move || {
///         // Restart once a day, say; the outcome is the control socket's.
///         std::thread::sleep(Duration::from_secs(86_400));
///         let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
///         match runtime.block_on(handle.restart()) {
///             uninterruptible::RestartOutcome::Restarted { pid, .. } => eprintln!("now {pid}"),
///             outcome => eprintln!("{outcome}"),
///         }
///     });
///     server.run(|stream: uninterruptible::Stream| async move { drop(stream) })
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    requests: mpsc::UnboundedSender<HandleRequest>,
    /// Set once the server runs: requests are read from then on.
    running: Arc<AtomicBool>,
}

/// A server's [`Handle`] and the [`Requests`] its running role reads.
pub(crate) fn channel() -> (Handle, Requests) {
    // Unbounded: each request is a call of the program's own, waiting for its answer, so the
    // program bounds them; and a request queued is answered even as the process exits.
    let (requests, receiver) = mpsc::unbounded_channel();
    let running = Arc::new(AtomicBool::new(false));
    let handle = Handle {
        requests,
        running: Arc::clone(&running),
    };
    (handle, Requests { receiver, running })
}

impl Handle {
    /// Restarts the server and waits for the outcome: the new process serving, or why not (the
    /// old one then serves on). Returns `Failed` at once if the server is not running (not yet
    /// started, or exited), and when this process is stopping or has already handed over. A
    /// restart asked while the server starts (its initialiser runs) waits, and starts once the
    /// process serves.
    pub async fn restart(&self) -> RestartOutcome {
        if !self.running.load(Ordering::Acquire) {
            return RestartOutcome::failed("the server is not running yet");
        }
        let (reply, outcome) = oneshot::channel();
        if self.requests.send(HandleRequest::Restart(reply)).is_err() {
            return RestartOutcome::failed("the server is not running");
        }
        outcome
            .await
            .unwrap_or_else(|_| RestartOutcome::failed("the server stopped before it answered"))
    }

    /// Stops the server as `TERM` does: it stops accepting, drains, and [`Server::run`](crate::Server::run) returns
    /// (exit status 0). In a supervised serving process it stops the whole service, as `TERM`
    /// to the supervisor does. Returns at once; a second call exits at once, as a second `TERM`.
    /// A stop asked before the server runs is kept: the server then stops as it starts, before
    /// it serves. After the server has exited it does nothing.
    pub fn stop(&self) {
        let _ = self.requests.send(HandleRequest::Stop);
    }
}

/// Who waits for a restart's outcome: a control socket client, or a [`Handle`].
#[derive(Debug)]
pub(crate) enum Waiter {
    Control(oneshot::Sender<RestartOutcome>),
    Program(oneshot::Sender<RestartOutcome>),
}

impl Waiter {
    /// Tells it how the restart went; one gone already is not told.
    pub(crate) fn answer(self, outcome: &RestartOutcome) {
        match self {
            Waiter::Control(reply) | Waiter::Program(reply) => drop(reply.send(outcome.clone())),
        }
    }
}

/// Everyone waiting for the outcome of the restart in progress (or deferred): they all hear the
/// same outcome, once.
#[derive(Debug, Default)]
pub(crate) struct Waiters(Vec<Waiter>);

impl Waiters {
    pub(crate) fn extend(&mut self, waiter: Option<Waiter>) {
        self.0.extend(waiter);
    }

    /// Tells each of them `outcome`, and forgets them.
    pub(crate) fn answer(&mut self, outcome: &RestartOutcome) {
        for waiter in self.0.drain(..) {
            waiter.answer(outcome);
        }
    }
}

/// The requests of every [`Handle`] of one server, read by the role this process plays.
#[derive(Debug)]
pub(crate) struct Requests {
    receiver: mpsc::UnboundedReceiver<HandleRequest>,
    running: Arc<AtomicBool>,
}

impl Requests {
    /// The server runs: its handles' restarts are read from now on.
    pub(crate) fn open(&self) {
        self.running.store(true, Ordering::Release);
    }

    /// As the process exits: takes no more requests, and answers the restarts asked and not yet
    /// read with `outcome` (the restart that handed over, or why there is none).
    pub(crate) fn answer_remaining(&mut self, outcome: &RestartOutcome) {
        self.receiver.close();
        while let Ok(request) = self.receiver.try_recv() {
            if let HandleRequest::Restart(reply) = request {
                Waiter::Program(reply).answer(outcome);
            }
        }
    }

    /// The next request. Cancel-safe; pending for ever once every handle is gone.
    pub(crate) async fn recv(&mut self) -> HandleRequest {
        match self.receiver.recv().await {
            Some(request) => request,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restart_asked_before_the_server_runs_fails_at_once_and_leaves_nothing_queued() {
        let (handle, mut requests) = channel();
        let early = tokio::time::timeout(std::time::Duration::from_secs(5), handle.restart());
        assert_eq!(
            early.await,
            Ok(RestartOutcome::Failed(
                "the server is not running yet".into()
            ))
        );
        assert!(requests.receiver.try_recv().is_err());

        requests.open();
        let server = tokio::spawn(async move {
            match requests.recv().await {
                HandleRequest::Restart(reply) => {
                    let outcome = RestartOutcome::Restarted {
                        pid: 7,
                        generation: 2,
                    };
                    reply.send(outcome).unwrap();
                }
                HandleRequest::Stop => panic!("a stop was read"),
            }
            requests
        });
        assert_eq!(
            handle.restart().await,
            RestartOutcome::Restarted {
                pid: 7,
                generation: 2
            }
        );
        drop(server.await.unwrap());
        assert_eq!(
            handle.restart().await,
            RestartOutcome::Failed("the server is not running".into())
        );
    }

    #[tokio::test]
    async fn restarts_still_queued_as_the_process_exits_get_its_answer() {
        let (handle, mut requests) = channel();
        requests.open();
        let asked: Vec<_> = (0..20)
            .map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.restart().await })
            })
            .collect();
        while requests.receiver.len() < 20 {
            tokio::task::yield_now().await;
        }
        let handed = RestartOutcome::Restarted {
            pid: 9,
            generation: 3,
        };
        requests.answer_remaining(&handed);
        for outcome in asked {
            assert_eq!(outcome.await.unwrap(), handed);
        }
        assert_eq!(
            handle.restart().await,
            RestartOutcome::Failed("the server is not running".into())
        );
    }
}
