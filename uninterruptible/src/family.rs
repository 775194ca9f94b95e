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
//! A link whose other end has exited reads as closed and is dropped.

use crate::link::Lines;
use crate::shutdown::Shutdown;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What a status link asks.
const STATUS: &str = "status\n";
/// How long a process has to answer `status` before it is left out.
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
            retiring: AtomicBool::new(false),
        }
    }

    /// This process is no longer the service's serving process.
    pub(crate) fn retire(&self) {
        self.retiring.store(true, Ordering::Relaxed);
    }

    /// `pid=… generation=… role=… connections=… age=…`: the line `status` prints for it.
    pub(crate) fn line(&self) -> String {
        let role = match self.role {
            Role::Supervisor => "supervisor",
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

/// A process being started by a restart, not yet ready: it has no link until it is.
#[derive(Clone, Copy, Debug)]
struct Starting {
    pid: u32,
    generation: u64,
    since: Instant,
}

/// This process and the links to the other live processes of its service.
#[derive(Debug)]
pub(crate) struct Family {
    me: Me,
    links: Mutex<Vec<Link>>,
    starting: Mutex<Option<Starting>>,
}

/// A link to another process, kept by a task of its own that asks it `status` when told to,
/// and closes the link as soon as the other process exits.
#[derive(Clone, Debug)]
struct Link {
    requests: mpsc::Sender<LinkRequest>,
}

enum LinkRequest {
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
        })
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Vec<Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks `status` on `link` from now on, until the other process exits.
    pub(crate) fn add_link(&self, link: Lines) {
        let (requests, received) = mpsc::channel(4);
        tokio::spawn(keep(link, received));
        let mut links = self.links();
        links.retain(|link| !link.requests.is_closed());
        links.push(Link { requests });
    }

    /// This process no longer owns the control socket: it asks nobody any more.
    pub(crate) fn drop_links(&self) {
        self.links().clear();
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

    /// A restart has started process `pid`; `None` once it is ready or gone.
    pub(crate) fn starting(&self, started: Option<(u32, u64)>) {
        let starting = started.map(|(pid, generation)| Starting {
            pid,
            generation,
            since: Instant::now(),
        });
        *self.starting.lock().unwrap_or_else(|e| e.into_inner()) = starting;
    }

    /// One line per live process of the service, oldest generation first.
    pub(crate) async fn status(&self) -> Vec<String> {
        let mut lines = vec![(self.me.generation, self.me.line())];
        let starting = *self.starting.lock().unwrap_or_else(|e| e.into_inner());
        let links = self.links().clone();
        for link in links {
            let (tx, rx) = oneshot::channel();
            if link.requests.send(LinkRequest::Status(tx)).await.is_err() {
                continue;
            }
            if let Ok(Some(answer)) = rx.await {
                lines.push((generation_of(&answer), answer));
            }
        }
        if let Some(s) = starting {
            // Not ready yet, so not linked: what this process knows of it.
            lines.push((
                s.generation,
                line(s.pid, s.generation, "starting", "?", s.since.elapsed()),
            ));
        }
        lines.sort_by_key(|(generation, _)| *generation);
        lines.into_iter().map(|(_, line)| line).collect()
    }
}

/// Keeps one link: answers requests until the other process closes it (or every sender is
/// gone), then closes it too.
async fn keep(mut link: Lines, mut requests: mpsc::Receiver<LinkRequest>) {
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                None => return,
                Some(LinkRequest::Status(reply)) => {
                    let answer = ask(&mut link).await;
                    let gone = answer.is_none();
                    let _ = reply.send(answer);
                    if gone {
                        return;
                    }
                }
                Some(LinkRequest::Duplicate(reply)) => {
                    let _ = reply.send(link.stream().as_fd().try_clone_to_owned().ok());
                }
            },
            readable = link.stream().readable() => {
                // Unasked, only the end of the link (or a stale answer) can arrive.
                if readable.is_err() || link.discard_unasked() {
                    return;
                }
            }
        }
    }
}

/// The generation in a status line, to sort by.
fn generation_of(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("generation="))
        .and_then(|g| g.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Asks `status` on a link; `None` when the other process is gone or does not answer.
async fn ask(link: &mut Lines) -> Option<String> {
    // A late answer to an earlier question, left by a timeout, is stale.
    while link.buffered_line().is_some() {}
    let asked = async {
        link.send(STATUS).await?;
        link.read_line().await
    };
    match tokio::time::timeout(ANSWER_WAIT, asked).await {
        Ok(Ok(Some(answer))) => Some(answer.trim_end().to_owned()),
        Ok(Ok(None) | Err(_)) => None,
        Err(_) => {
            tracing::debug!("a process of the service did not answer status in time");
            None
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
}
