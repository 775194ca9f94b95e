//! The processes of one service, as the control socket's `status` lists them.
//!
//! Every handoff connection outlives its handoff as a *status link*: one end asks `status`, the
//! other answers with its own line. The end that asks belongs to the process that owns the
//! control socket:
//! - after a plain restart, the new process asks and the retiring one answers; a new process
//!   also receives, with the listening sockets, the old one's links to processes still retiring
//!   from earlier restarts, so it reaches every live process of the service;
//! - under a supervisor, the supervisor asks and each serving or retiring process answers.
//!
//! A link whose other end has exited reads as closed and is dropped. A process that is alive but
//! does not answer in time (stopped, or too busy) is still listed, from what is known of it: its
//! pid (the link's peer), and the generation, role and age its last answer gave (`?` when it
//! never answered), with `connections=?` and `answered=no`.

use crate::link::Lines;
use crate::shutdown::Shutdown;
use nix::sys::socket::{getsockopt, sockopt};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// What a status link asks.
const STATUS: &str = "status\n";
/// How long a restart's outcome takes at most to be taken in once it has ended.
const OUTCOME_WAIT: Duration = Duration::from_secs(2);
/// How long a process has to answer `status` before it is listed as not answering.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// The role a process plays in its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Holds the sockets and runs the serving process; serves nobody itself.
    Supervisor,
    /// Serves clients: `serving` while it accepts, `retiring` once it drains.
    Server,
}

/// This process, as `status` describes it.
#[derive(Debug)]
pub(crate) struct Me {
    pid: u32,
    generation: u64,
    started: Instant,
    role: Role,
    connections: Option<Arc<Shutdown>>,
    /// Its initialiser runs: it does not accept yet.
    starting: AtomicBool,
    /// Handed over or stopping: no longer the serving process, even before it stops accepting.
    retiring: AtomicBool,
}

impl Me {
    pub(crate) fn new(generation: u64, role: Role, connections: Option<Arc<Shutdown>>) -> Me {
        Me {
            pid: std::process::id(),
            generation,
            started: Instant::now(),
            role,
            connections,
            starting: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
        }
    }

    /// A serving process whose initialiser runs: `role=starting` until [`Me::ready`].
    pub(crate) fn starting(generation: u64, connections: Arc<Shutdown>) -> Me {
        let me = Me::new(generation, Role::Server, Some(connections));
        me.starting.store(true, Ordering::Relaxed);
        me
    }

    /// The initialiser has finished: this process accepts.
    pub(crate) fn ready(&self) {
        self.starting.store(false, Ordering::Relaxed);
    }

    /// This process is no longer the service's serving process: a restart has handed over.
    pub(crate) fn retire(&self) {
        self.retiring.store(true, Ordering::Relaxed);
    }

    /// A restart has handed over from this process (it lets go of the control socket next).
    pub(crate) fn handed_over(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    /// `pid=… generation=… role=… connections=… age=…`: the line `status` prints for it.
    pub(crate) fn line(&self) -> String {
        let role = match self.role {
            Role::Supervisor => "supervisor",
            Role::Server if self.starting.load(Ordering::Relaxed) => "starting",
            Role::Server
                if self.retiring.load(Ordering::Relaxed)
                    || self.connections.as_ref().is_some_and(|c| c.is_announced()) =>
            {
                "retiring"
            }
            Role::Server => "serving",
        };
        let connections = self.connections.as_ref().map_or(0, |c| c.count());
        line(
            self.pid,
            self.generation,
            role,
            &connections.to_string(),
            self.started.elapsed(),
        )
    }
}

fn line(pid: u32, generation: u64, role: &str, connections: &str, age: Duration) -> String {
    format!(
        "pid={pid} generation={generation} role={role} connections={connections} age={}",
        age.as_secs()
    )
}

/// A process being started by a restart: it has no link until it is ready and the restart's
/// outcome is taken in.
#[derive(Clone, Copy, Debug)]
struct Starting {
    pid: u32,
    generation: u64,
    since: Instant,
    /// When its restart ended: ready, it is listed until it is linked (or this process hands
    /// over), which follows at once; failed, it has exited, or is linked to drain.
    ended: Option<Instant>,
}

/// This process and the links to the other live processes of its service.
#[derive(Debug)]
pub(crate) struct Family {
    me: Me,
    links: Mutex<Vec<Link>>,
    starting: Mutex<Option<Starting>>,
    /// Whether this process reads its links. A link is one socket that two processes hold
    /// while it is handed over, and two readers would take each other's answers: a process
    /// started by a restart reads the links it received only once the old one has let go.
    reading: watch::Sender<bool>,
    /// The tasks that keep the links: each reads its link, so letting go of the links for a
    /// new process means ending them, not only dropping their senders.
    keepers: Mutex<JoinSet<()>>,
}

/// A link to another process, kept by a task of its own that asks it `status` when told to,
/// and closes the link as soon as the other process exits.
#[derive(Clone, Debug)]
struct Link {
    requests: mpsc::Sender<LinkRequest>,
}

enum LinkRequest {
    /// The other process's line; `None` once it has exited.
    Status(oneshot::Sender<Option<String>>),
    /// A copy of the link, to hand to a new process.
    Duplicate(oneshot::Sender<Option<OwnedFd>>),
}

impl std::fmt::Debug for LinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkRequest::Status(_) => "Status",
            LinkRequest::Duplicate(_) => "Duplicate",
        })
    }
}

impl Family {
    pub(crate) fn me(&self) -> &Me {
        &self.me
    }

    pub(crate) fn new(me: Me) -> Arc<Family> {
        Arc::new(Family {
            me,
            links: Mutex::new(Vec::new()),
            starting: Mutex::new(None),
            reading: watch::Sender::new(true),
            keepers: Mutex::new(JoinSet::new()),
        })
    }

    /// A family with the links received with the sockets. `held`: the old process that handed
    /// them over still reads them, until it lets go ([`Family::read`]).
    pub(crate) fn with_links(me: Me, links: Vec<Lines>, held: bool) -> Arc<Family> {
        let family = Family::new(me);
        if held {
            family.hold();
        }
        for link in links {
            family.add_link(link);
        }
        family
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Vec<Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks `status` on `link` from now on, until the other process exits.
    /// Links added from now on are not read until [`Family::read`]: they were received from
    /// an old process that still reads them.
    pub(crate) fn hold(&self) {
        self.reading.send_replace(false);
    }

    /// The old process has let go: its links are this process's to read.
    pub(crate) fn read(&self) {
        self.reading.send_replace(true);
    }

    pub(crate) fn add_link(&self, link: Lines) {
        let known = Known::of(&link);
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if starting.is_some_and(|s| Some(s.pid) == known.pid) {
            // Listed by its link from now on.
            *starting = None;
        }
        drop(starting);
        let (requests, received) = mpsc::channel(4);
        let mut reading = self.reading.subscribe();
        let mut keepers = self.keepers.lock().unwrap_or_else(|e| e.into_inner());
        while keepers.try_join_next().is_some() {}
        keepers.spawn(async move {
            // Never announced: the process ends (abandoned) without reading them.
            if reading.wait_for(|reading| *reading).await.is_ok() {
                keep(link, known, received).await;
            }
        });
        drop(keepers);
        let mut links = self.links();
        links.retain(|link| !link.requests.is_closed());
        links.push(Link { requests });
    }

    /// This process no longer owns the control socket: it asks nobody any more.
    pub(crate) fn drop_links(&self) {
        self.links().clear();
        *self.starting.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.keepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }

    /// [`Family::drop_links`], and returns once no task of this process reads a link: the
    /// copies handed to a new process are then its alone to read. (A task still reading would
    /// take the new process's answers, or half of one.)
    pub(crate) async fn let_go_of_links(&self) {
        self.drop_links();
        let mut keepers =
            std::mem::take(&mut *self.keepers.lock().unwrap_or_else(|e| e.into_inner()));
        keepers.shutdown().await;
    }

    /// Copies of the links to processes still alive, to hand to a new process with the
    /// listening sockets, at most `room` of them (the newest).
    pub(crate) async fn link_fds(&self, room: usize) -> Vec<OwnedFd> {
        let links: Vec<Link> = {
            let mut links = self.links();
            links.retain(|link| !link.requests.is_closed());
            links.clone()
        };
        let skip = links.len().saturating_sub(room);
        if skip > 0 {
            tracing::warn!(
                "{skip} processes still retiring are too many to hand over: status will not list them"
            );
        }
        let mut fds = Vec::new();
        for link in links.iter().skip(skip) {
            let (tx, rx) = oneshot::channel();
            if link.requests.send(LinkRequest::Duplicate(tx)).await.is_ok() {
                fds.extend(rx.await.ok().flatten());
            }
        }
        fds
    }

    /// A restart has started process `pid`; `None` once the restart has ended, ready or not.
    pub(crate) fn starting(&self, started: Option<(u32, u64)>) {
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        match started {
            Some((pid, generation)) => {
                *starting = Some(Starting {
                    pid,
                    generation,
                    since: Instant::now(),
                    ended: None,
                })
            }
            // Between the end of the restart and its outcome taken in (linked, or handed over),
            // a ready process is still listed: so that `status` never misses it.
            None => {
                if let Some(s) = starting.as_mut() {
                    s.ended = Some(Instant::now());
                }
            }
        }
    }

    /// The process the restart in progress has started, while that restart has not ended.
    pub(crate) fn unsettled(&self) -> Option<u32> {
        let starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        starting.filter(|s| s.ended.is_none()).map(|s| s.pid)
    }

    /// One line per live process of the service, oldest generation first (a process whose
    /// generation is not known came with a link handed over, from an older process: first).
    pub(crate) async fn status(&self) -> Vec<String> {
        let mut lines = vec![(Some(self.me.generation), self.me.line())];
        let starting = {
            let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
            // Kept briefly: the pid linked may be another (a start command that runs the
            // server as its child).
            let over = |ended: Instant| ended.elapsed() > OUTCOME_WAIT;
            if starting.is_some_and(|s| s.ended.is_some_and(|e| over(e) || !alive(s.pid))) {
                *starting = None;
            }
            *starting
        };
        let links = self.links().clone();
        // Every link asked before any answer is awaited: a process that does not answer holds
        // the list up once, not once per process.
        let mut asked = Vec::new();
        for link in links {
            let (tx, rx) = oneshot::channel();
            if link.requests.send(LinkRequest::Status(tx)).await.is_ok() {
                asked.push(rx);
            }
        }
        for answer in asked {
            if let Ok(Some(answer)) = answer.await {
                lines.push((generation_of(&answer), answer));
            }
        }
        if let Some(s) = starting {
            // Not ready yet, so not linked: what this process knows of it.
            lines.push((
                Some(s.generation),
                line(s.pid, s.generation, "starting", "?", s.since.elapsed()),
            ));
        }
        lines.sort_by_key(|(generation, _)| *generation);
        lines.into_iter().map(|(_, line)| line).collect()
    }
}

/// Whether process `pid` exists (a failed restart's process has been reaped).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// What is known of the process at the other end of a link without asking it.
#[derive(Debug, Default)]
struct Known {
    /// The link's peer, as the kernel recorded it when the link was made.
    pid: Option<u32>,
    generation: Option<u64>,
    role: Option<String>,
    /// Its age when it last answered, and when that was.
    age: Option<(u64, Instant)>,
}

impl Known {
    fn of(link: &Lines) -> Known {
        Known {
            pid: getsockopt(link.stream(), sockopt::PeerCredentials)
                .ok()
                .and_then(|cred| u32::try_from(cred.pid()).ok()),
            ..Known::default()
        }
    }

    /// Learns what an answer says.
    fn learn(&mut self, answer: &str) {
        for field in answer.split_whitespace() {
            match field.split_once('=') {
                Some(("pid", pid)) => self.pid = pid.parse().ok().or(self.pid),
                Some(("generation", generation)) => self.generation = generation.parse().ok(),
                Some(("role", role)) => self.role = Some(role.to_owned()),
                Some(("age", age)) => self.age = age.parse().ok().map(|age| (age, Instant::now())),
                _ => {}
            }
        }
    }

    /// The line of a process that did not answer in time: what is known of it, marked.
    fn unanswered(&self) -> Option<String> {
        let unknown = || "?".to_owned();
        let pid = self.pid?;
        let generation = self.generation.map_or_else(unknown, |g| g.to_string());
        let role = self.role.clone().unwrap_or_else(unknown);
        let age = self.age.map_or_else(unknown, |(age, at)| {
            (age + at.elapsed().as_secs()).to_string()
        });
        Some(format!(
            "pid={pid} generation={generation} role={role} connections=? age={age} answered=no"
        ))
    }
}

/// Keeps one link: answers requests until the other process closes it (or every sender is
/// gone), then closes it too. It asks at once, to learn what the other process is (a link handed
/// over comes without it), and then once for all the requests that come while it asks.
async fn keep(mut link: Lines, mut known: Known, mut requests: mpsc::Receiver<LinkRequest>) {
    // Kept aside so that a copy can be made while a question is out.
    let Ok(copy) = link.stream().as_fd().try_clone_to_owned() else {
        return;
    };
    let duplicate = |reply: oneshot::Sender<Option<OwnedFd>>| {
        let _ = reply.send(copy.try_clone().ok());
    };
    let mut waiting = Vec::new();
    let mut learning = true;
    loop {
        if waiting.is_empty() && !learning {
            tokio::select! {
                request = requests.recv() => match request {
                    None => return,
                    Some(LinkRequest::Status(reply)) => waiting.push(reply),
                    Some(LinkRequest::Duplicate(reply)) => duplicate(reply),
                },
                readable = link.stream().readable() => {
                    // Unasked, only the end of the link (or a late answer) can arrive.
                    if readable.is_err() || link.discard_unasked() {
                        return;
                    }
                }
            }
            continue;
        }
        learning = false;
        let answer = {
            let asked = ask(&mut link);
            tokio::pin!(asked);
            loop {
                tokio::select! {
                    answer = &mut asked => break answer,
                    Some(request) = requests.recv() => match request {
                        LinkRequest::Status(reply) => waiting.push(reply),
                        LinkRequest::Duplicate(reply) => duplicate(reply),
                    },
                }
            }
        };
        let line = match &answer {
            Asked::Answered(line) => {
                known.learn(line);
                Some(line.clone())
            }
            Asked::Late => known.unanswered(),
            Asked::Gone => None,
        };
        for reply in waiting.drain(..) {
            let _ = reply.send(line.clone());
        }
        if matches!(answer, Asked::Gone) {
            return;
        }
    }
}

/// The generation in a status line, to sort by.
fn generation_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("generation="))
        .and_then(|g| g.parse().ok())
}

/// How a process answered `status` on its link.
enum Asked {
    Answered(String),
    /// Not within [`ANSWER_WAIT`]: stopped, or busy; still linked.
    Late,
    /// The link is closed: the process has exited.
    Gone,
}

/// Asks `status` on a link.
async fn ask(link: &mut Lines) -> Asked {
    // A late answer to an earlier question, left by a timeout, is stale.
    while link.buffered_line().is_some() {}
    let asked = async {
        link.send(STATUS).await?;
        link.read_line().await
    };
    match tokio::time::timeout(ANSWER_WAIT, asked).await {
        Ok(Ok(Some(answer))) => Asked::Answered(answer.trim_end().to_owned()),
        Ok(Ok(None) | Err(_)) => Asked::Gone,
        Err(_) => {
            tracing::debug!("a process of the service did not answer status in time");
            Asked::Late
        }
    }
}

/// Answers `status` on `link` with this process's line until the other end closes it.
pub(crate) async fn answer(mut link: Lines, family: Arc<Family>) {
    let result: io::Result<()> = async {
        while let Some(question) = link.read_line().await? {
            if question == STATUS {
                link.send(&format!("{}\n", family.me.line())).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("status link closed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    #[tokio::test]
    async fn status_asks_every_link_and_drops_the_closed_ones() {
        // Supervisors both: a server's role depends on this process's drain, which another
        // test announces.
        let family = Family::new(Me::new(3, Role::Supervisor, None));
        let connections = Arc::new(Shutdown::new());
        let _open = connections.guard();
        let other = Family::new(Me::new(2, Role::Supervisor, Some(connections)));
        let (asker, answerer) = UnixStream::pair().unwrap();
        family.add_link(Lines::new(asker));
        let answering = tokio::spawn(answer(Lines::new(answerer), Arc::clone(&other)));
        let (gone, closed) = UnixStream::pair().unwrap();
        drop(closed);
        family.add_link(Lines::new(gone));
        family.starting(Some((4242, 4)));

        let lines = family.status().await;
        let pid = std::process::id();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[0],
            format!("pid={pid} generation=2 role=supervisor connections=1 age=0")
        );
        assert_eq!(
            lines[1],
            format!("pid={pid} generation=3 role=supervisor connections=0 age=0")
        );
        assert_eq!(
            lines[2],
            "pid=4242 generation=4 role=starting connections=? age=0"
        );
        // The closed link's task has ended.
        assert_eq!(family.link_fds(10).await.len(), 1);
        family.drop_links();
        answering.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn links_let_go_of_are_read_by_no_task_of_this_process() {
        for _ in 0..20 {
            let family = Family::new(Me::new(3, Role::Supervisor, None));
            let (here, there) = UnixStream::pair().unwrap();
            let mut there = Lines::new(there);
            family.add_link(Lines::new(here));
            // The link is learnt at once: the question is out when this process lets go.
            assert_eq!(
                there.read_line().await.unwrap().as_deref(),
                Some("status\n")
            );
            let line = "pid=4242 generation=2 role=retiring connections=0 age=0\n";
            let copy = family.link_fds(1).await.pop().unwrap();
            family.let_go_of_links().await;
            // The copy is the new owner's: what arrives now is whole, and its alone.
            let mut new_owner = Lines::new(UnixStream::from_std(copy.into()).unwrap());
            while new_owner.buffered_line().is_some() {}
            there.send(line).await.unwrap();
            there.send(line).await.unwrap();
            let timeout = Duration::from_secs(5);
            for _ in 0..2 {
                let read = tokio::time::timeout(timeout, new_owner.read_line()).await;
                assert_eq!(read.unwrap().unwrap().as_deref(), Some(line));
            }
        }
    }

    #[tokio::test]
    async fn a_process_that_does_not_answer_is_listed_from_what_is_known_and_marked() {
        let family = Family::new(Me::new(3, Role::Supervisor, None));
        let (asker, answerer) = UnixStream::pair().unwrap();
        family.add_link(Lines::new(asker));
        // The other process answers while told to, and counts the questions.
        let (answers, answering) = tokio::sync::watch::channel(true);
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peer = tokio::spawn({
            let asked = Arc::clone(&asked);
            async move {
                let mut link = Lines::new(answerer);
                while let Ok(Some(_)) = link.read_line().await {
                    asked.fetch_add(1, Ordering::Relaxed);
                    if *answering.borrow() {
                        let line = "pid=4242 generation=2 role=retiring connections=5 age=7\n";
                        link.send(line).await.unwrap();
                    }
                }
            }
        });
        let pid = std::process::id();
        let me = format!("pid={pid} generation=3 role=supervisor connections=0 age=0");
        assert_eq!(
            family.status().await,
            [
                "pid=4242 generation=2 role=retiring connections=5 age=7",
                me.as_str()
            ]
        );

        answers.send_replace(false);
        let before = asked.load(Ordering::Relaxed);
        // Several asking at once share one question.
        let (a, b) = tokio::join!(family.status(), family.status());
        assert_eq!(asked.load(Ordering::Relaxed), before + 1);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a[1], me);
        // Its age goes on from what it last said.
        let age = a[0]
            .strip_prefix("pid=4242 generation=2 role=retiring connections=? age=")
            .and_then(|rest| rest.strip_suffix(" answered=no"))
            .and_then(|age| age.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{a:?}"));
        assert!(age >= 8, "{a:?}");

        // A link that has never answered: only its pid (the link's peer) is known.
        let (asker, _silent) = UnixStream::pair().unwrap();
        family.add_link(Lines::new(asker));
        let lines = family.status().await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[0],
            format!("pid={pid} generation=? role=? connections=? age=? answered=no")
        );
        family.drop_links();
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn a_started_process_is_listed_until_linked_or_gone() {
        let family = Family::new(Me::new(1, Role::Supervisor, None));
        let pid = std::process::id();
        let me = format!("pid={pid} generation=1 role=supervisor connections=0 age=0");
        // Its restart has ended (ready), the outcome is not taken in yet: still listed.
        family.starting(Some((pid, 2)));
        family.starting(None);
        let starting = format!("pid={pid} generation=2 role=starting connections=? age=0");
        assert_eq!(family.status().await, [me.clone(), starting]);
        // Linked (the link's peer is this process here): listed by its link.
        let (asker, answerer) = UnixStream::pair().unwrap();
        let other = Family::new(Me::new(2, Role::Supervisor, None));
        let answering = tokio::spawn(answer(Lines::new(answerer), other));
        family.add_link(Lines::new(asker));
        let linked = format!("pid={pid} generation=2 role=supervisor connections=0 age=0");
        assert_eq!(family.status().await, [me.clone(), linked.clone()]);
        // A failed restart's process, exited and reaped: not listed.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        family.starting(Some((gone, 3)));
        family.starting(None);
        assert_eq!(family.status().await, [me, linked]);
        family.drop_links();
        answering.await.unwrap();
    }
}
