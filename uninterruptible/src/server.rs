//! The serving role: writes the pidfile, accepts, and tells the old process it is ready; then
//! serves until a stop, a handover or an abandoned takeover ([`Machine`] decides), drains, and
//! cleans up what the last process leaves.

use crate::acl::Acl;
use crate::config::{self, Config};
use crate::control::{self, Control, Endpoint};
use crate::datagram::{self, DatagramHandler, Reader};
use crate::error::Error;
use crate::family::{self, Family, Me};
use crate::handle::{HandleRequest, Requests, RestartOutcome, Waiter, Waiters};
use crate::handler::{Handler, HandlerOutput};
use crate::handoff::{self, Failure, Handed, Pending, Verdict};
use crate::incoming::Incoming;
use crate::inherit::Manager;
use crate::init::{self, Init, NotStarted};
use crate::link::Lines;
use crate::listener::{SocketFile, SocketFiles};
use crate::logging;
use crate::machine::{Ending, Machine, Refusal, Restarter, Step};
use crate::notify::Notifier;
use crate::origin::Part;
use crate::pidfile;
use crate::serve::{Accepting, Server, Target};
use crate::setup::{self, Begun, Program, Started, fail};
use crate::shutdown::Shutdown;
use crate::signals::{Received, Request, Signals};
use crate::stream::Stream;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a restart waits for copies of the status links to hand over.
const LINKS_WAIT: Duration = Duration::from_millis(500);
/// How often a drain reports the connections still open.
const DRAIN_PROGRESS: Duration = Duration::from_secs(10);
/// How long a new process that stops before the old one answered `ready` waits for the answer,
/// which says whether the UNIX socket file is its to remove.
const VERDICT_WAIT: Duration = Duration::from_secs(2);

pub(crate) async fn lifecycle<H, F, O>(begun: Begun, init: Init<H>) -> ExitCode
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    let Begun {
        config,
        generation,
        inherited,
        dialed,
        part,
        keep_socket_files,
        program,
    } = begun;
    let started = setup::start(
        &config,
        inherited,
        dialed,
        part,
        keep_socket_files,
        &program,
    );
    let mut started = match started.await {
        Ok(started) => started,
        Err(e) => return fail(&config, e, &[]),
    };
    let present = Present::new(&config, &mut started, generation);
    let built = match init::run(init, config.ready_timeout, &mut started.signals).await {
        Ok(built) => {
            crate::timing::mark("init");
            built
        }
        Err(not_started) => return not_started_exit(&config, started, present, not_started).await,
    };
    let mut serving = match begin(
        &config,
        built.handler,
        started,
        present,
        generation,
        part,
        program,
    ) {
        Ok(serving) => serving,
        Err(code) => return code,
    };
    let ending = serve(&config, &mut serving, built.restart).await;
    end(&config, &mut serving, ending).await
}

/// What a process shows of itself from before its initialiser runs: `status` on its control
/// socket lists it as `starting` (with its age, so a long start-up is seen to progress), and a
/// `restart` asked there or from the program waits, to start once the process serves.
struct Present {
    shutdown: Arc<Shutdown>,
    family: Arc<Family>,
    control: Endpoint,
}

impl Present {
    fn new(config: &Config, started: &mut Started, generation: u64) -> Present {
        let shutdown = Arc::new(Shutdown::new());
        let me = Me::starting(generation, Arc::clone(&shutdown));
        // Received from an old process that reads them until it lets go.
        let held = started.takeover.is_some();
        let family = Family::with_links(me, std::mem::take(&mut started.links), held);
        // Taken over, the control socket is the old process's until it lets go of it.
        let control = Endpoint::new(
            started.control.take(),
            started.by_restart,
            &family,
            config.ready_timeout,
        );
        Present {
            shutdown,
            family,
            control,
        }
    }
}

/// After serving: drains, cleans up what a stopping process leaves, and returns the exit status.
async fn end(config: &Config, serving: &mut Serving, ending: Ending) -> ExitCode {
    // A retiring process is not the service any more: only a real stop is announced, and cleans
    // up after itself.
    let stopping = matches!(ending, Ending::Stop | Ending::ExitNow);
    if stopping {
        serving
            .notifier
            .stopping("stopping: draining open connections");
    }
    let drained = match ending {
        Ending::ExitNow => Drained::Cut,
        _ => drain(config, serving, stopping).await,
    };
    if stopping {
        clean_up(config, serving).await;
    }
    // The last process removes the file; a retiring one left it to its successor.
    serving
        .control
        .close(stopping, drained == Drained::Cut)
        .await;
    let answer = retired_answer(serving);
    serving.requests.answer_remaining(&answer);
    if logging::dropped() > 0 {
        logging::to_stderr(format_args!(
            "{} log lines could not be written",
            logging::dropped()
        ));
    }
    let cut = drained == Drained::Cut;
    tracing::info!("exiting with {}", u8::from(cut));
    if cut {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The initialiser failed, or a stop came first: the process never served. A restart's old
/// process hears why; the socket files this process made are removed, and the control socket's
/// file when it is ours.
async fn not_started_exit(
    config: &Config,
    started: Started,
    mut present: Present,
    not_started: NotStarted,
) -> ExitCode {
    let by_restart = started.takeover.is_some();
    let files = SocketFiles::new(&started.addresses, started.keeps_socket_files, by_restart);
    // A restart asked while it started is told why there will be none.
    let why = match &not_started {
        NotStarted::Failed(why) => {
            format!("this process did not start: the initialiser failed: {why}")
        }
        NotStarted::Stopped(name) => {
            format!("this process did not start: {name} received while starting")
        }
    };
    present.control.refuse_waiting(&RestartOutcome::failed(why));
    present.control.close(true, false).await;
    match not_started {
        NotStarted::Failed(why) => {
            if let Some(takeover) = started.takeover {
                takeover.failed(&why);
            } else {
                Notifier::from_env().status(&format!("the initialiser failed: {why}"));
            }
            fail(config, Error::Init(why), files.owned())
        }
        NotStarted::Stopped(name) => {
            tracing::info!("{name} received while starting: exiting before serving");
            files.remove();
            ExitCode::SUCCESS
        }
    }
}

/// A process that is serving, and what its later phases need.
struct Serving {
    signals: Signals,
    accepting: Option<Accepting>,
    /// Descriptors of our own to hand over on restart; closed when we stop accepting.
    handoff_fds: Vec<OwnedFd>,
    shutdown: Arc<Shutdown>,
    socket_files: SocketFiles,
    /// Until the old process answers our `ready`: we may yet be abandoned.
    pending: Option<Pending>,
    /// Where the serving role is: accepting, restarting, deferred or retiring.
    machine: Machine,
    plan: handoff::Plan,
    /// An `async fn(Incoming)` handler's task: the process retires when it returns.
    listener: Option<JoinHandle<io::Result<()>>>,
    /// systemd, when it asked to be told (`NOTIFY_SOCKET`).
    notifier: Notifier,
    part: Part,
    /// This process and its links to the others of the service, for `status`.
    family: Arc<Family>,
    /// The control socket, and the restarts asked on it.
    control: Endpoint,
    /// Who waits for the outcome of the restart in progress (or deferred).
    waiters: Waiters,
    /// Once handed over: the answer to a restart asked as it happened.
    handed_answer: Option<RestartOutcome>,
    /// A supervised serving process: completes when its supervisor is gone.
    supervisor_gone: Option<oneshot::Receiver<()>>,
    /// What the program's [`Handle`](crate::Handle)s ask.
    requests: Requests,
}

/// Writes the pidfile, starts accepting, and tells the old process (if any) that we are ready.
fn begin<H, F, O>(
    config: &Config,
    handler: Handler<H>,
    started: Started,
    present: Present,
    generation: u64,
    part: Part,
    program: Program,
) -> Result<Serving, ExitCode>
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    let address = config::list(&started.addresses);
    let offer = handoff::Offer {
        tickets: started.tls.as_ref().map(|tls| Arc::clone(&tls.tickets)),
        app: program.carry,
    };
    let plan = restart_plan(config, generation, &started, address.clone(), offer);
    let restarter = restarter(part, started.manager);
    let Started {
        by_restart,
        signals,
        listeners,
        addresses,
        takeover,
        tls,
        ..
    } = started;
    let socket_files = SocketFiles::new(&addresses, plan.keep_socket_files, takeover.is_some());
    let owned = socket_files.owned();
    let handoff_fds = setup::duplicate(&listeners).map_err(|e| fail(config, e, owned))?;
    let (server, listener_task) =
        acceptor(config, handler, program.datagrams, tls, &present.shutdown);
    write_pidfile(config, part, owned)?;
    let accepting = server.start(listeners);
    crate::timing::mark("pidfile and accept");
    let pending = takeover.and_then(say_ready);
    let awaiting_verdict = pending.is_some();
    present.family.me().ready();
    if !awaiting_verdict {
        // The old process that handed the links over is gone, or there was none.
        present.family.read();
    }
    let notifier = announce(config, &address, generation, by_restart);
    if restarter == Restarter::Itself {
        // What would make every restart fail is said at start.
        handoff::preflight(&plan);
    }
    Ok(Serving {
        signals,
        accepting: Some(accepting),
        handoff_fds,
        shutdown: present.shutdown,
        socket_files,
        pending,
        machine: Machine::new(restarter, awaiting_verdict),
        plan,
        listener: listener_task,
        notifier,
        part,
        family: present.family,
        control: present.control,
        waiters: Waiters::default(),
        handed_answer: None,
        supervisor_gone: supervisor_link(part, awaiting_verdict),
        requests: program.requests,
    })
}

/// Writes the pidfile, before accepting: once a connection is accepted nothing may fail, or that
/// connection would be lost with the process. Under a supervisor the pidfile names the
/// supervisor, which wrote it.
fn write_pidfile(config: &Config, part: Part, owned: &[SocketFile]) -> Result<(), ExitCode> {
    match (&config.pidfile, part) {
        (Some(path), Part::Alone) => {
            pidfile::write(path, std::process::id()).map_err(|e| fail(config, e, owned))
        }
        _ => Ok(()),
    }
}

/// For a supervised process that could not tell its supervisor it is ready: that supervisor is
/// gone (killed as it started this one), so the process stops at once.
fn supervisor_link(part: Part, awaiting_verdict: bool) -> Option<oneshot::Receiver<()>> {
    match part {
        Part::Supervised(_) if !awaiting_verdict => {
            let (gone, when_gone) = oneshot::channel::<()>();
            drop(gone);
            Some(when_gone)
        }
        _ => None,
    }
}

/// What accepts and where connections go: a task per connection, or the handler's
/// [`Incoming`] (whose task is returned).
fn acceptor<H, F, O>(
    config: &Config,
    handler: Handler<H>,
    datagrams: Option<DatagramHandler>,
    tls: Option<crate::tls::Tls>,
    shutdown: &Arc<Shutdown>,
) -> (Server<H>, Option<JoinHandle<io::Result<()>>>)
where
    H: Fn(Stream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = O> + Send + 'static,
    O: HandlerOutput,
{
    let (target, listener_task) = match handler {
        Handler::PerConnection(handler) => (Target::PerConnection(handler), None),
        Handler::Listener(handler) => {
            let (streams, incoming) = mpsc::unbounded_channel();
            let task = tokio::spawn(handler(Incoming::new(incoming, Arc::clone(shutdown))));
            (Target::Listener(streams), Some(task))
        }
    };
    let acl = config.allowed_networks.clone().map(Acl::new);
    let datagrams = datagrams.map(|handler| Reader {
        handler,
        shutdown: Arc::clone(shutdown),
        in_flight: Arc::new(Semaphore::new(
            config
                .max_connections
                .unwrap_or(datagram::DEFAULT_IN_FLIGHT),
        )),
        acl: acl.clone(),
    });
    let server = Server {
        target,
        shutdown: Arc::clone(shutdown),
        limit: config.max_connections.map(|n| Arc::new(Semaphore::new(n))),
        acl,
        tls,
        datagrams,
    };
    (server, listener_task)
}

/// Tells the old process this one is ready; `None` when it cannot be told (it is gone).
fn say_ready(takeover: handoff::Takeover) -> Option<Pending> {
    let path = takeover.path().to_owned();
    takeover
        .ready()
        .map_err(|e| {
            tracing::warn!(
                "cannot tell the old process we are ready on {}: {e}",
                path.display()
            )
        })
        .ok()
}

/// Logs that this process serves, and tells systemd on a first start (after a restart the old
/// process tells it).
fn announce(config: &Config, address: &str, generation: u64, by_restart: bool) -> Notifier {
    let pid = std::process::id();
    let tls_note = if config.tls.is_some() {
        " with TLS"
    } else {
        ""
    };
    tracing::info!("listening on {address}{tls_note} (pid {pid}, generation {generation})");
    crate::timing::report();
    let notifier = Notifier::from_env();
    if !by_restart {
        notifier.ready(&format!("serving on {address} (pid {pid})"));
    }
    notifier
}

/// What this process's restarts start: the next generation, told what it inherits.
fn restart_plan(
    config: &Config,
    generation: u64,
    started: &Started,
    address: String,
    offer: handoff::Offer,
) -> handoff::Plan {
    handoff::Plan {
        command: config.start_command.clone(),
        ready_timeout: config.ready_timeout,
        generation: generation + 1,
        keep_socket_files: started.keeps_socket_files,
        // Inherited sockets replace the attribute's bind: the next process is told so.
        bind: (started.manager.is_some() && !config.origins.bind_from_env()).then_some(address),
        supervisor: None,
        offer,
    }
}

/// Who restarts a process of this part, under this service manager.
fn restarter(part: Part, manager: Option<Manager>) -> Restarter {
    match (part, manager) {
        (Part::Supervised(pid), _) => Restarter::Supervisor(pid),
        (_, Some(Manager::ServerStarter)) => Restarter::ServerStarter,
        _ => Restarter::Itself,
    }
}

/// Serves until a stop, a handover or an abandonment. Restarts run on a task of their own;
/// `deferred` names a restart asked while the initialiser ran, which starts first.
async fn serve(config: &Config, s: &mut Serving, deferred: Option<&'static str>) -> Ending {
    let mut restart: Option<JoinHandle<Result<Handed, Failure>>> = None;
    let mut deferred = deferred;
    loop {
        let step = match deferred.take() {
            Some(name) => restart_asked(s, name, None),
            None => next_step(config, s, &mut restart).await,
        };
        match step {
            Step::End(ending) => {
                if let (Ending::ExitNow, Some(task)) = (ending, restart.take()) {
                    end_restart_now(s, task).await;
                }
                return ending;
            }
            Step::Restart => {
                restart = begin_restart(s);
                if restart.is_none() {
                    if let Step::End(ending) = s.machine.restart_ended(false) {
                        return ending;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The next event, as the machine's step: a signal, a restart asked, the restart in progress
/// ending, the supervisor gone, the handler returning, or the old process's verdict.
async fn next_step(
    config: &Config,
    s: &mut Serving,
    restart: &mut Option<JoinHandle<Result<Handed, Failure>>>,
) -> Step {
    tokio::select! {
        received = s.signals.recv() => match received.request {
            Request::Stop(name) => stop(s, name, received.sender),
            Request::Restart(name) => restart_asked(s, name, None),
        },
        reply = s.control.next() => restart_asked(s, "a restart on the control socket", Some(Waiter::Control(reply))),
        request = s.requests.recv() => match request {
            HandleRequest::Restart(reply) => restart_asked(s, "a restart from the program", Some(Waiter::Program(reply))),
            HandleRequest::Stop => stop_from_program(s),
        },
        result = finished(restart) => {
            *restart = None;
            restart_ended(config, s, result)
        }
        () = supervisor_gone(&mut s.supervisor_gone) => {
            if let Part::Supervised(supervisor) = s.part {
                // Killed (SIGKILL, the OOM killer): no one can restart or stop this process
                // any more, and it holds the service's sockets. It drains and exits, so the
                // service manager's next start can bind them.
                tracing::warn!(
                    "the supervisor (process {supervisor}) is gone: stopping, so the service can be started again"
                );
                if let Some(path) = &config.pidfile {
                    pidfile::remove_if_ours(path, supervisor);
                }
            }
            s.machine.must_stop()
        }
        result = returned(&mut s.listener) => {
            match result {
                Ok(()) => tracing::warn!("the handler returned while the process was accepting: stopping"),
                Err(e) => tracing::error!("the handler failed while the process was accepting: {e}; stopping"),
            }
            s.machine.must_stop()
        }
        (verdict, link) = handoff::verdict(&mut s.pending) => verdict_came(s, verdict, link),
    }
}

/// Ends the restart in progress as the process exits at once (a second `TERM`): the process it
/// started is killed, ready or not, so that nothing serves on after the operator said to stop
/// now; the handoff directory goes with the restart's task.
async fn end_restart_now(s: &Serving, task: JoinHandle<Result<Handed, Failure>>) {
    kill_unsettled(&s.family, "stopping at once");
    task.abort();
    let _ = task.await;
}

/// Kills the process a restart started and did not settle (ready and handed over, failed, or
/// asked to drain), saying why; it is no longer listed as starting.
fn kill_unsettled(family: &Family, why: &str) {
    if let Some(pid) = family.unsettled() {
        tracing::warn!("killing new process {pid}: {why}");
        crate::reaper::kill(pid, nix::sys::signal::Signal::SIGKILL);
        family.starting(None);
    }
}

/// `TERM` or `INT`.
fn stop(s: &mut Serving, name: &str, sender: u32) -> Step {
    let step = s.machine.stop(sender);
    match step {
        Step::End(Ending::ExitNow) => tracing::warn!("second {name} received: exiting now"),
        Step::End(_) => tracing::info!("{name} received: stopping"),
        _ => tracing::info!(
            "{name} received: this process stops once the restart in progress ends (a second {name} exits now)"
        ),
    }
    step
}

/// [`Handle::stop`](crate::Handle::stop): `TERM` from this process, or, in a supervised serving
/// process, `TERM` to the supervisor, which stops the service.
fn stop_from_program(s: &mut Serving) -> Step {
    if let Part::Supervised(supervisor) = s.part {
        tracing::info!(
            "a stop from the program: stopping the service (TERM to the supervisor, process {supervisor})"
        );
        crate::reaper::kill(supervisor, nix::sys::signal::Signal::SIGTERM);
        return Step::Continue;
    }
    stop(s, "a stop from the program", std::process::id())
}

/// A restart asked by a signal (no one waits for the answer) or on the control socket.
fn restart_asked(s: &mut Serving, name: &str, reply: Option<Waiter>) -> Step {
    let step = s.machine.restart_asked();
    match step {
        Step::Refuse(why) => {
            match why {
                Refusal::ServerStarter => tracing::info!(
                    "{name} received: ignored, start_server restarts its workers (send HUP to start_server)"
                ),
                Refusal::Supervised(supervisor) => tracing::info!(
                    "{name} received: ignored, the supervisor restarts this process (send USR1 to process {supervisor})"
                ),
                Refusal::Stopping => tracing::info!("{name} received: ignored while stopping"),
            }
            if let Some(reply) = reply {
                reply.answer(&RestartOutcome::failed(why.reason()));
            }
            return step;
        }
        Step::Join => tracing::info!("{name} received: a restart is already in progress"),
        Step::Defer => tracing::info!(
            "{name} received: restarting once the old process has let go of the socket"
        ),
        _ => tracing::info!("{name} received: restarting"),
    }
    s.waiters.extend(reply);
    step
}

/// The restart in progress ended.
fn restart_ended(config: &Config, s: &mut Serving, result: Result<Handed, Failure>) -> Step {
    let failure = match result {
        Ok(handed) => {
            handed_over(s, handed);
            return s.machine.restart_ended(true);
        }
        Err(failure) => failure,
    };
    // A restart's task that ended without settling its new process (it panicked).
    kill_unsettled(&s.family, "its restart ended without an outcome");
    let mut failure = failure;
    restore_pidfile(config);
    tracing::warn!("restart failed: {failure}; still serving");
    s.notifier.restart_failed(&failure.to_string());
    s.waiters.answer(&RestartOutcome::failed(&failure));
    if let Some(link) = failure.draining.take() {
        s.family.add_link(link);
    }
    let step = s.machine.restart_ended(false);
    if let Step::End(_) = step {
        tracing::info!("stopping, as asked while the restart was in progress");
    }
    step
}

/// A new process is serving: it owns the socket, the pidfile and the control socket now.
fn handed_over(s: &mut Serving, handed: Handed) {
    let Handed {
        pid,
        generation,
        link,
        ..
    } = handed;
    tracing::info!("new process {pid} is ready: this process stops accepting");
    let answer = RestartOutcome::Restarted { pid, generation };
    s.family.me().retire();
    // The new process owns the control socket and asks the others now; this one answers it.
    // Let go first: a client that hears the answer and asks again must reach the new process.
    if let Some(control) = s.control.served() {
        control.let_go(&answer);
    }
    // Those waiting hear it once this process has stopped accepting (`drain`), so that a
    // client that hears it and connects again reaches the new process.
    s.handed_answer = Some(answer);
    s.family.drop_links();
    tokio::spawn(family::answer(link, Arc::clone(&s.family)));
    // The new process wrote the pidfile before it said ready.
    s.notifier
        .handed_over(pid, &format!("new process {pid} is serving"));
}

/// The old process's verdict on this one.
fn verdict_came(s: &mut Serving, verdict: Verdict, link: Option<Lines>) -> Step {
    match verdict {
        Verdict::Committed => {
            s.socket_files.verdict(true);
            committed(s, link);
            let step = s.machine.verdict(true);
            if step == Step::Restart {
                tracing::info!("the old process let go of the socket: restarting");
            }
            step
        }
        Verdict::Abandoned => {
            tracing::info!("the old process abandoned the restart that started this one: stopping");
            if let Some(link) = link {
                tokio::spawn(family::answer(link, Arc::clone(&s.family)));
            }
            s.waiters.answer(&RestartOutcome::failed(
                "the old process abandoned the restart that started this one",
            ));
            s.machine.verdict(false)
        }
    }
}

/// The old process let go of the socket: this one is the service now.
fn committed(s: &mut Serving, link: Option<Lines>) {
    s.family.read();
    let Some(link) = link else { return };
    match s.part {
        // The supervisor asks this process for its status on the link, which stays open for
        // the supervisor's life: its end means the supervisor is gone.
        Part::Supervised(_) => {
            let (gone, when_gone) = oneshot::channel();
            s.supervisor_gone = Some(when_gone);
            let family = Arc::clone(&s.family);
            tokio::spawn(async move {
                family::answer(link, family).await;
                let _ = gone.send(());
            });
        }
        _ => {
            s.family.add_link(link);
            s.control.commit();
        }
    }
}

/// Tells everyone waiting on the control socket how the restart went.
/// Starts a restart on a task of its own. Each attempt gets a generation of its own, so a failed
/// attempt and the next one are told apart in the log. When it cannot start, those waiting on
/// the control socket are told so.
fn begin_restart(s: &mut Serving) -> Option<JoinHandle<Result<Handed, Failure>>> {
    let copies = if s.handoff_fds.is_empty() {
        None
    } else {
        let control = s.control.served().map(Control::duplicate).transpose();
        let fds: io::Result<Vec<OwnedFd>> = s.handoff_fds.iter().map(OwnedFd::try_clone).collect();
        fds.and_then(|fds| control.map(|control| (fds, control)))
            .map_err(|e| {
                tracing::error!(
                    "restart failed: cannot duplicate a listening socket: {e}; still serving"
                )
            })
            .ok()
    };
    let Some((mut fds, control)) = copies else {
        s.waiters.answer(&RestartOutcome::failed(
            "cannot duplicate a listening socket",
        ));
        return None;
    };
    s.notifier
        .reloading(&format!("restarting: starting {}", s.plan.command));
    fds.extend(control);
    let family = Arc::clone(&s.family);
    let plan = s.plan.clone();
    s.plan.generation += 1;
    Some(tokio::spawn(async move {
        // The new process asks the processes this one knows of from now on.
        let room = handoff::MAX_FDS.saturating_sub(fds.len());
        // Links only serve `status`: they never hold up a restart.
        match tokio::time::timeout(LINKS_WAIT, family.link_fds(room)).await {
            Ok(links) => fds.extend(links),
            Err(_) => tracing::warn!(
                "the status links were not ready within {LINKS_WAIT:?}: the new process will list only itself and its predecessor"
            ),
        }
        handoff::restart(plan, fds, &family).await
    }))
}

/// The outcome of the restart in flight; pending while there is none.
pub(crate) async fn finished(
    restart: &mut Option<JoinHandle<Result<Handed, Failure>>>,
) -> Result<Handed, Failure> {
    match restart {
        Some(task) => match task.await {
            Ok(result) => result,
            Err(e) => Err(Failure::task(e)),
        },
        None => std::future::pending().await,
    }
}

/// Completes when the link to this process's supervisor ends; pending while there is none.
async fn supervisor_gone(gone: &mut Option<oneshot::Receiver<()>>) {
    match gone {
        Some(when) => {
            let _ = when.await;
            *gone = None;
        }
        None => std::future::pending().await,
    }
}

/// What an `async fn(Incoming)` handler returned; pending while it runs, or when there is none.
/// Once it has returned, there is nothing left to wait for.
async fn returned(listener: &mut Option<JoinHandle<io::Result<()>>>) -> io::Result<()> {
    let Some(task) = listener else {
        return std::future::pending().await;
    };
    let result = match task.await {
        Ok(result) => result,
        Err(e) => Err(io::Error::other(format!("it panicked: {e}"))),
    };
    *listener = None;
    result
}

/// Gives the pidfile back to this process after a failed restart: the new process may have
/// written its own pid, and it is gone or draining.
fn restore_pidfile(config: &Config) {
    if let Some(path) = &config.pidfile {
        if let Err(e) = pidfile::write(path, std::process::id()) {
            tracing::warn!("cannot restore the pidfile: {e}");
        }
    }
}

/// How the drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drained {
    All,
    TimedOut,
    /// A second `TERM`/`INT`: exit now with what is still open.
    Cut,
}

/// Stops accepting and waits for the open connections, bounded by `DRAIN_TIMEOUT`. A process
/// that stops (rather than retires) first serves what its listening sockets still queue.
async fn drain(config: &Config, s: &mut Serving, stopping: bool) -> Drained {
    stop_accepting(s, stopping).await;
    let started = tokio::time::Instant::now();
    let mut listener = s.listener.take();
    // An `async fn(Incoming)` handler is waited for; per-connection handlers are counted.
    let waits_for_handler = listener.is_some();
    if waits_for_handler {
        tracing::info!("draining: waiting for the handler to return");
    } else {
        tracing::info!("draining {} open connections", s.shutdown.count());
    }
    let shutdown = Arc::clone(&s.shutdown);
    let drain = drained(&shutdown, &mut listener, config.drain_timeout);
    tokio::pin!(drain);
    let mut progress = tokio::time::interval_at(started + DRAIN_PROGRESS, DRAIN_PROGRESS);
    loop {
        tokio::select! {
            all = &mut drain => {
                if all {
                    return Drained::All;
                }
                tracing::warn!(
                    "drain timeout: closing {} connections still open",
                    s.shutdown.count()
                );
                return Drained::TimedOut;
            }
            _ = progress.tick() => report_progress(config, s, started, waits_for_handler),
            received = s.signals.recv() => {
                if signal_while_draining(s, received) {
                    return Drained::Cut;
                }
            }
            // A restart asked now was asked as the one that handed over ended: the same
            // restart, the same answer; else this process is stopping.
            reply = s.control.next() => Waiter::Control(reply).answer(&retired_answer(s)),
            request = s.requests.recv() => match request {
                HandleRequest::Restart(reply) => Waiter::Program(reply).answer(&retired_answer(s)),
                HandleRequest::Stop => {
                    if stop_while_draining(s, "a second stop from the program", std::process::id()) {
                        return Drained::Cut;
                    }
                }
            },
            (verdict, link) = handoff::verdict(&mut s.pending) => verdict_while_draining(s, verdict, link),
        }
    }
}

/// A signal heard while draining; true when it cuts the drain short.
fn signal_while_draining(s: &mut Serving, received: Received) -> bool {
    match received.request {
        Request::Stop(name) => {
            if stop_while_draining(s, &format!("second {name} received"), received.sender) {
                return true;
            }
            // A service manager stopping the service signals every process in it; a retiring
            // one goes on draining.
            tracing::info!(
                "{name} received while retiring: draining goes on (a second {name} exits now)"
            );
        }
        Request::Restart(name) => tracing::info!("{name} received: ignored while draining"),
    }
    false
}

/// Whether everything open ended within `limit`: the connections counted by `shutdown`, or an
/// `async fn(Incoming)` handler's task.
async fn drained(
    shutdown: &Shutdown,
    listener: &mut Option<JoinHandle<io::Result<()>>>,
    limit: Option<Duration>,
) -> bool {
    if listener.is_none() {
        return shutdown.drained(limit).await;
    }
    match limit {
        None => {
            let _ = returned(listener).await;
            true
        }
        Some(limit) => tokio::time::timeout(limit, returned(listener))
            .await
            .is_ok(),
    }
}

/// The verdict of a takeover heard while this process drains (it stopped before the old one
/// answered): whether the socket files are ours, and the link to the old process.
fn verdict_while_draining(s: &mut Serving, verdict: Verdict, link: Option<Lines>) {
    s.socket_files.verdict(verdict == Verdict::Committed);
    if let Some(link) = link {
        tokio::spawn(family::answer(link, Arc::clone(&s.family)));
    }
}

/// Stops accepting: the accept task drops its listener, and this process closes its duplicate.
/// Both are closed, never shut down, so a new process sharing the socket keeps accepting. A
/// process that stops is likely the last to hold the sockets: the connections they still queue
/// are taken and served first, since the kernel resets them when the last descriptor closes.
/// Then those waiting for the restart that handed over hear its outcome, and long-lived
/// handlers that listen for it hear that this process drains.
async fn stop_accepting(s: &mut Serving, stopping: bool) {
    if let Some(accepting) = s.accepting.take() {
        if stopping {
            let taken = accepting.stop_sweeping(&s.handoff_fds).await;
            if taken > 0 {
                tracing::info!("{taken} connections still queued were taken to be served");
            }
        } else {
            accepting.stop().await;
        }
    }
    s.handoff_fds.clear();
    if let Some(answer) = s.handed_answer.clone() {
        s.waiters.answer(&answer);
    }
    s.shutdown.announce();
}

/// How the drain is going, at least every [`DRAIN_PROGRESS`].
fn report_progress(
    config: &Config,
    s: &Serving,
    started: tokio::time::Instant,
    waits_for_handler: bool,
) {
    let waited = started.elapsed().as_secs();
    let open = if waits_for_handler {
        "the handler has not returned".to_owned()
    } else {
        format!("{} connections still open", s.shutdown.count())
    };
    match config.drain_timeout {
        None => tracing::info!("draining: {open} after {waited} s (no DRAIN_TIMEOUT: waiting)"),
        Some(limit) => tracing::info!(
            "draining: {open} after {waited} s (ended at DRAIN_TIMEOUT, {} s)",
            limit.as_secs_f64()
        ),
    }
}

/// A stop while draining from `sender`: `true` when it is the second from that side, and the
/// process exits now (logged as `what`).
fn stop_while_draining(s: &mut Serving, what: &str, sender: u32) -> bool {
    let cut = s.machine.stop(sender) == Step::End(Ending::ExitNow);
    if cut {
        tracing::warn!(
            "{what}: exiting now with {} connections open",
            s.shutdown.count()
        );
    }
    cut
}

/// The answer to a restart asked of a process that has stopped accepting.
fn retired_answer(s: &Serving) -> RestartOutcome {
    s.handed_answer
        .clone()
        .unwrap_or_else(|| RestartOutcome::failed(control::STOPPED))
}

/// Removes what the last process leaves: the pidfile and UNIX socket file, if still ours.
async fn clean_up(config: &Config, s: &mut Serving) {
    if let Some(path) = &config.pidfile {
        pidfile::remove_if_ours(path, std::process::id());
    }
    if s.pending.is_some() {
        match tokio::time::timeout(VERDICT_WAIT, handoff::verdict(&mut s.pending)).await {
            Ok((v, _)) => s.socket_files.verdict(v == Verdict::Committed),
            Err(_) => {
                tracing::warn!("the old process has not answered: leaving the socket file to it")
            }
        }
    }
    s.socket_files.remove();
}
