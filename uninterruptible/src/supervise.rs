//! Supervised mode: the first process stays for the life of the service as a small supervisor.
//!
//! It binds (or adopts) the listening sockets and never accepts on them itself. It starts the
//! serving process with the ordinary handoff, as if it were the old process of a restart, so the
//! serving process receives the sockets and says `ready` the same way. Then:
//! - `USR1`/`HUP` (or `restart` on the control socket) starts a new serving process and, once it
//!   is ready, sends `TERM` to the previous one, which drains;
//! - a serving process that dies unexpectedly is started again, at once if it had served for a
//!   while, else after a growing pause; the sockets stay open, so clients wait in the kernel's
//!   queue and none is refused;
//! - `TERM`/`INT` sends `TERM` to the serving processes and exits 0 once all have drained; a
//!   second one makes them exit at once;
//! - every child is reaped, orphans too (as PID 1, or as a subreaper), and the pid in the
//!   pidfile and told to systemd never changes.

use crate::config::{self, Config};
use crate::control::Endpoint;
use crate::error::Error;
use crate::family::{Family, Me, Role};
use crate::handle::{HandleRequest, Requests, RestartOutcome, Waiter, Waiters};
use crate::handoff::Dialed;
use crate::handoff::{self, Failure, Handed, Pending, Takeover, Verdict};
use crate::inherit::Inherited;
use crate::inherit::Manager;
use crate::link::Lines;
use crate::listener::SocketFiles;
use crate::notify::Notifier;
use crate::origin::Part;
use crate::pidfile;
use crate::reaper::{self, Exits, Reaper};
use crate::setup::{self, Begun, Program, Started};
use crate::signals::{Request, Signals};
use nix::sys::signal::Signal;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A serving process that lived this long before dying counts as a first failure: the next one
/// is started at once.
const STABLE: Duration = Duration::from_secs(10);
/// After a serving process that died sooner, or one that failed to start, the pause before the
/// next start: this, doubled each time it happens again, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// After a second `TERM`, how long to wait for the serving processes to exit.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// A serving process, ready or retiring.
#[derive(Clone, Copy, Debug)]
struct Serving {
    pid: u32,
    generation: u64,
    since: Instant,
}

/// Why a serving process is being started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// The first one.
    First,
    /// A restart asked for.
    Restart,
    /// The previous one died.
    Again,
}

struct Supervisor {
    config: Config,
    plan: handoff::Plan,
    /// Our copies of the listening sockets: held open for the life of the service.
    sockets: Vec<OwnedFd>,
    family: Arc<Family>,
    notifier: Notifier,
    signals: Signals,
    exits: Exits,
    control: Endpoint,
    /// Started by a restart of a process that was not supervised: told `ready` once the first
    /// serving process is, then its verdict.
    takeover: Option<Takeover>,
    pending: Option<Pending>,
    socket_files: SocketFiles,
    addresses: String,

    current: Option<Serving>,
    retiring: Vec<Serving>,
    starting: Option<(Start, JoinHandle<Result<Handed, Failure>>)>,
    waiters: Waiters,
    /// What the program's [`Handle`](crate::Handle)s ask.
    requests: Requests,
    again_at: Option<Instant>,
    pause: Duration,
    announced: bool,
    stopping: bool,
    /// Started by a restart, it could not start a serving process: it exits 1.
    gave_up: bool,
    /// Stopping, a serving process exited without draining (exit status not 0): the stop was
    /// cut short, and this process exits 1 as the serving processes did.
    cut: bool,
}

/// Runs the supervisor until the service stops; returns its exit status.
pub(crate) async fn supervise(begun: Begun) -> ExitCode {
    let mut supervisor = match set_up(begun).await {
        Ok(supervisor) => supervisor,
        Err(code) => return code,
    };
    supervisor.start(Start::First);
    let code = supervisor.run().await;
    supervisor.clean_up().await;
    tracing::info!(
        "exiting with {}",
        if code == ExitCode::SUCCESS { 0 } else { 1 }
    );
    code
}

fn under_server_starter() -> Error {
    Error::InvalidConfig(
        "SUPERVISE=true cannot be used under Server::Starter: start_server supervises its workers; unset SUPERVISE".into(),
    )
}

/// How the supervisor starts its serving processes: they serve under it, on the sockets it holds,
/// whose files are its own.
fn plan(
    config: &Config,
    generation: u64,
    managed: bool,
    addresses: &str,
    reaper: Reaper,
) -> handoff::Plan {
    handoff::Plan {
        command: config.start_command.clone(),
        ready_timeout: config.ready_timeout,
        generation: generation + 1,
        keep_socket_files: true,
        // Sockets from a service manager are the configuration, not the attribute's literal.
        bind: (managed && !config.origins.bind_from_env()).then(|| addresses.to_owned()),
        supervisor: Some(reaper),
        // A supervisor serves no TLS and has no state: each serving process starts afresh.
        offer: handoff::Offer::default(),
    }
}

/// Takes the sockets the supervisor holds, and starts reaping its children. A failure is
/// reported.
async fn take(
    config: &Config,
    inherited: Option<Inherited>,
    dialed: Option<io::Result<Dialed>>,
    keep_socket_files: bool,
    program: &Program,
) -> Result<(Reaper, Exits, Started), ExitCode> {
    if inherited
        .as_ref()
        .is_some_and(|i| i.manager == Manager::ServerStarter)
    {
        return Err(setup::fail(config, under_server_starter(), &[]));
    }
    reaper::adopt_orphans();
    let (reaper, exits) = Reaper::start()
        .map_err(|e| setup::fail(config, Error::io("cannot watch child processes")(e), &[]))?;
    let started = setup::start(
        config,
        inherited,
        dialed,
        Part::Supervisor,
        keep_socket_files,
        program,
    )
    .await
    .map_err(|e| setup::fail(config, e, &[]))?;
    Ok((reaper, exits, started))
}

/// Everything before the first serving process: the sockets taken and held, the pidfile, the
/// control socket. A failure is reported, and leaves nothing behind.
async fn set_up(begun: Begun) -> Result<Supervisor, ExitCode> {
    let Begun {
        config,
        generation,
        inherited,
        dialed,
        keep_socket_files,
        program,
        ..
    } = begun;
    let (reaper, exits, mut started) =
        take(&config, inherited, dialed, keep_socket_files, &program).await?;
    let requests = program.requests;
    let by_restart = started.takeover.is_some();
    let socket_files = SocketFiles::new(&started.addresses, started.keeps_socket_files, by_restart);
    // The listeners become plain descriptors: this process never accepts on them.
    let sockets = setup::duplicate(&std::mem::take(&mut started.listeners))
        .map_err(|e| setup::fail(&config, e, socket_files.owned()))?;
    let pid = std::process::id();
    if let Some(path) = &config.pidfile {
        pidfile::write(path, pid).map_err(|e| setup::fail(&config, e, socket_files.owned()))?;
    }
    let addresses = config::list(&started.addresses);
    let me = Me::new(generation, Role::Supervisor, None);
    let family = Family::with_links(me, std::mem::take(&mut started.links), by_restart);
    let control = started.control.take();
    let control = Endpoint::new(control, by_restart, &family, config.ready_timeout);
    let plan = plan(
        &config,
        generation,
        started.manager.is_some(),
        &addresses,
        reaper,
    );
    handoff::preflight(&plan);
    tracing::info!(
        "supervising on {addresses} (pid {pid}): the serving processes accept, this one holds the sockets"
    );
    Ok(Supervisor {
        config,
        plan,
        sockets,
        family,
        notifier: Notifier::from_env(),
        signals: started.signals,
        exits,
        control,
        takeover: started.takeover,
        pending: None,
        socket_files,
        addresses,
        current: None,
        retiring: Vec::new(),
        starting: None,
        waiters: Waiters::default(),
        requests,
        again_at: None,
        pause: Duration::ZERO,
        announced: false,
        stopping: false,
        gave_up: false,
        cut: false,
    })
}

impl Supervisor {
    async fn run(&mut self) -> ExitCode {
        loop {
            if self.stopping && self.is_empty() {
                return self.stopped();
            }
            tokio::select! {
                // Signals first: a second stop sent to the whole group reaches this process and
                // the serving ones at once, and is this process's to act on.
                biased;
                received = self.signals.recv() => match received.request {
                    Request::Stop(name) => {
                        if self.stop_asked(&format!("{name} received")) {
                            return self.exit_now().await;
                        }
                    }
                    Request::Restart(name) => self.ask_restart(name, None),
                },
                reply = self.control.next() => {
                    self.ask_restart("a restart on the control socket", Some(Waiter::Control(reply)));
                }
                request = self.requests.recv() => match request {
                    HandleRequest::Restart(reply) => self.ask_restart("a restart from the program", Some(Waiter::Program(reply))),
                    HandleRequest::Stop => {
                        if self.stop_asked("a stop from the program") {
                            return self.exit_now().await;
                        }
                    }
                },
                (why, result) = finished(&mut self.starting) => self.started(why, result),
                Some((pid, status)) = self.exits.recv() => self.exited(pid, status),
                () = sleep_until(self.again_at) => {
                    self.again_at = None;
                    if !self.stopping && self.starting.is_none() {
                        self.start(Start::Again);
                    }
                }
                (verdict, link) = handoff::verdict(&mut self.pending) => self.verdict(verdict, link),
            }
        }
    }

    /// The exit status once every serving process has exited after a stop.
    fn stopped(&self) -> ExitCode {
        if self.gave_up {
            return ExitCode::FAILURE;
        }
        if self.cut {
            tracing::warn!("every serving process has exited, not all of them drained");
            return ExitCode::FAILURE;
        }
        tracing::info!("every serving process has exited");
        ExitCode::SUCCESS
    }

    /// A stop (`what`: a signal, or the program); true when it is the second, which ends the
    /// serving processes now.
    fn stop_asked(&mut self, what: &str) -> bool {
        if self.stopping {
            tracing::warn!("a second stop ({what}): the serving processes exit now");
            return true;
        }
        tracing::info!("{what}: stopping the serving processes");
        self.stop();
        false
    }

    /// The verdict of the old process that started this supervisor by a restart.
    fn verdict(&mut self, verdict: Verdict, link: Option<Lines>) {
        if let Some(link) = link {
            self.family.add_link(link);
        }
        match verdict {
            Verdict::Committed => {
                self.family.read();
                self.socket_files.verdict(true);
                self.control.commit();
            }
            Verdict::Abandoned => {
                tracing::info!(
                    "the old process abandoned the restart that started this supervisor: stopping"
                );
                self.socket_files.verdict(false);
                self.stop();
            }
        }
    }

    /// No serving process is left, and none is being started.
    fn is_empty(&self) -> bool {
        self.current.is_none() && self.retiring.is_empty() && self.starting.is_none()
    }

    fn start(&mut self, why: Start) {
        let sockets: io::Result<Vec<OwnedFd>> =
            self.sockets.iter().map(OwnedFd::try_clone).collect();
        let sockets = match sockets {
            Ok(sockets) => sockets,
            Err(e) => {
                tracing::error!("cannot duplicate a listening socket: {e}");
                self.waiters.answer(&RestartOutcome::failed(format!(
                    "cannot duplicate a listening socket: {e}"
                )));
                if self.current.is_none() {
                    self.again_later();
                }
                return;
            }
        };
        if why == Start::Restart {
            self.notifier
                .reloading(&format!("restarting: starting {}", self.plan.command));
        }
        let plan = self.plan.clone();
        self.plan.generation += 1;
        let family = Arc::clone(&self.family);
        let task = tokio::spawn(async move { handoff::restart(plan, sockets, &family).await });
        self.starting = Some((why, task));
    }

    fn ask_restart(&mut self, name: &str, reply: Option<Waiter>) {
        if self.stopping {
            tracing::info!("{name} received: ignored while stopping");
            if let Some(reply) = reply {
                reply.answer(&RestartOutcome::failed("the service is stopping"));
            }
            return;
        }
        self.waiters.extend(reply);
        if self.starting.is_some() {
            tracing::info!("{name} received: a serving process is already being started");
            return;
        }
        tracing::info!("{name} received: starting a new serving process");
        self.again_at = None;
        self.start(Start::Restart);
    }

    /// A serving process was started, or failed to start.
    fn started(&mut self, why: Start, result: Result<Handed, Failure>) {
        match result {
            Ok(handed) => self.ready(why, handed),
            Err(failure) => self.failed_to_start(failure),
        }
    }

    /// A serving process is ready: the previous one retires, and whoever waits hears of it.
    fn ready(&mut self, why: Start, handed: Handed) {
        let Handed {
            pid,
            generation,
            link,
            ..
        } = handed;
        self.family.add_link(link);
        let previous = self.current.replace(Serving {
            pid,
            generation,
            since: Instant::now(),
        });
        self.waiters
            .answer(&RestartOutcome::Restarted { pid, generation });
        match previous {
            Some(old) => {
                tracing::info!(
                    "serving process {pid} (generation {generation}) is ready: process {} retires",
                    old.pid
                );
                self.retire(old);
            }
            None => tracing::info!("serving process {pid} (generation {generation}) is ready"),
        }
        let serving = format!(
            "serving on {} (supervisor {}, serving process {pid})",
            self.addresses,
            std::process::id()
        );
        if !self.announced || why == Start::Restart {
            self.notifier.ready(&serving);
            self.announced = true;
        } else {
            self.notifier.status(&serving);
        }
        // Started by a restart: the old process may retire now that one serves.
        if let Some(takeover) = self.takeover.take() {
            match takeover.ready() {
                Ok(pending) => self.pending = Some(pending),
                Err(e) => tracing::warn!("cannot tell the old process we are ready: {e}"),
            }
        }
        if self.stopping {
            // Asked to stop while it was starting.
            if let Some(current) = self.current.take() {
                self.retire(current);
            }
        }
    }

    /// A serving process could not be started: the current one serves on, or the next try
    /// comes after a pause, or (started by a restart) this supervisor gives up.
    fn failed_to_start(&mut self, mut failure: Failure) {
        if let Some(link) = failure.draining.take() {
            self.family.add_link(link);
        }
        self.waiters.answer(&RestartOutcome::failed(&failure));
        match &self.current {
            Some(current) => {
                tracing::warn!(
                    "restart failed: {failure}; serving process {} serves on",
                    current.pid
                );
                self.notifier.restart_failed(&failure.to_string());
            }
            None if self.stopping => {}
            None if self.takeover.is_some() => {
                // The old process still serves: give up, and it serves on.
                tracing::error!(
                    "cannot start a serving process: {failure}; exiting, the old process serves on"
                );
                self.socket_files.verdict(false);
                self.stopping = true;
                self.gave_up = true;
            }
            None => {
                tracing::error!("cannot start a serving process: {failure}");
                self.notifier
                    .status(&format!("cannot start a serving process: {failure}"));
                self.again_later();
            }
        }
    }

    /// A child was reaped.
    fn exited(&mut self, pid: u32, status: ExitStatus) {
        if let Some(current) = self.current.filter(|c| c.pid == pid) {
            self.current = None;
            let lived = current.since.elapsed();
            if lived >= STABLE {
                self.pause = Duration::ZERO;
            }
            tracing::warn!(
                "serving process {pid} (generation {}) exited unexpectedly ({status}) after {:.1} s",
                current.generation,
                lived.as_secs_f64()
            );
            self.notifier.status(&format!(
                "serving process {pid} exited unexpectedly ({status}); starting another"
            ));
            if self.stopping || self.starting.is_some() {
                // A stop needs no other; a restart in progress brings one.
                return;
            }
            self.again_later();
        } else if let Some(i) = self.retiring.iter().position(|r| r.pid == pid) {
            let retired = self.retiring.remove(i);
            tracing::info!(
                "retired process {pid} (generation {}) exited ({status})",
                retired.generation
            );
            // Stopping, a serving process that was cut (a second stop reached it: exit 1) makes
            // the stop one that was cut short.
            if self.stopping && !status.success() {
                self.cut = true;
            }
        }
        // Otherwise a process being started: its restart reports how it ended.
    }

    /// Starts a serving process again after the pause (none the first time), which grows for
    /// the next time.
    fn again_later(&mut self) {
        let pause = self.pause;
        self.pause = (self.pause * 2).clamp(FIRST_PAUSE, MAX_PAUSE);
        if pause.is_zero() {
            self.start(Start::Again);
            return;
        }
        tracing::info!(
            "starting a serving process again in {:.1} s; clients wait in the listen queue meanwhile",
            pause.as_secs_f64()
        );
        self.again_at = Some(Instant::now() + pause);
    }

    /// `TERM` to a serving process, which stops accepting and drains.
    fn retire(&mut self, serving: Serving) {
        reaper::kill(serving.pid, Signal::SIGTERM);
        self.retiring.push(serving);
    }

    fn stop(&mut self) {
        self.stopping = true;
        self.again_at = None;
        // Closed, so that once the serving processes have closed theirs a client that connects
        // meanwhile is refused at once, and can go elsewhere, instead of waiting in a queue
        // nobody accepts from until the drain ends.
        self.sockets.clear();
        self.notifier
            .stopping("stopping: the serving processes drain their connections");
        self.waiters
            .answer(&RestartOutcome::failed("the service is stopping"));
        if let Some(current) = self.current.take() {
            self.retire(current);
        }
    }

    /// A second `TERM`: each serving process gets its second one too, and exits at once.
    async fn exit_now(&mut self) -> ExitCode {
        self.retiring.extend(self.current.take());
        for serving in &self.retiring {
            reaper::kill(serving.pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + EXIT_WAIT;
        while !self.retiring.is_empty() {
            tokio::select! {
                Some((pid, status)) = self.exits.recv() => self.exited(pid, status),
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        ExitCode::FAILURE
    }

    async fn clean_up(&mut self) {
        if let Some(path) = &self.config.pidfile {
            pidfile::remove_if_ours(path, std::process::id());
        }
        self.control.close(true, false).await;
        self.socket_files.remove();
    }
}

/// The outcome of the start in flight, and why it was started; pending while there is none.
async fn finished(
    starting: &mut Option<(Start, JoinHandle<Result<Handed, Failure>>)>,
) -> (Start, Result<Handed, Failure>) {
    let Some((why, task)) = starting.as_mut() else {
        return std::future::pending().await;
    };
    let why = *why;
    let result = match task.await {
        Ok(result) => result,
        Err(e) => Err(Failure::task(e)),
    };
    *starting = None;
    (why, result)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
