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

use crate::drain;
use crate::handoff::Lines;
use crate::shutdown::Connections;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    connections: Option<Arc<Connections>>,
}

impl Me {
    pub(crate) fn new(generation: u64, role: Role, connections: Option<Arc<Connections>>) -> Me {
        Me {
            pid: std::process::id(),
            generation,
            started: Instant::now(),
            role,
            connections,
        }
    }

    /// `pid=… generation=… role=… connections=… age=…`: the line `status` prints for it.
    pub(crate) fn line(&self) -> String {
        let role = match self.role {
            Role::Supervisor => "supervisor",
            Role::Server if drain::is_announced() => "retiring",
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
    links: tokio::sync::Mutex<Vec<Lines>>,
    starting: Mutex<Option<Starting>>,
}

impl Family {
    pub(crate) fn new(me: Me) -> Arc<Family> {
        Arc::new(Family {
            me,
            links: tokio::sync::Mutex::new(Vec::new()),
            starting: Mutex::new(None),
        })
    }

    /// Asks `status` on `link` from now on.
    pub(crate) async fn add_link(&self, link: Lines) {
        self.links.lock().await.push(link);
    }

    /// This process no longer owns the control socket: it asks nobody any more.
    pub(crate) async fn drop_links(&self) {
        self.links.lock().await.clear();
    }

    /// Copies of the links, to hand to a new process with the listening sockets.
    pub(crate) async fn link_fds(&self) -> Vec<OwnedFd> {
        let links = self.links.lock().await;
        links
            .iter()
            .filter_map(|link| link.stream().as_fd().try_clone_to_owned().ok())
            .collect()
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
        {
            let mut links = self.links.lock().await;
            let mut alive = Vec::with_capacity(links.len());
            for mut link in links.drain(..) {
                if let Some(answer) = ask(&mut link).await {
                    lines.push((generation_of(&answer), answer));
                    alive.push(link);
                }
            }
            *links = alive;
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
        let connections = Arc::new(Connections::new());
        let _open = connections.guard();
        let other = Family::new(Me::new(2, Role::Supervisor, Some(connections)));
        let (asker, answerer) = UnixStream::pair().unwrap();
        family.add_link(Lines::new(asker)).await;
        let answering = tokio::spawn(answer(Lines::new(answerer), Arc::clone(&other)));
        let (gone, closed) = UnixStream::pair().unwrap();
        drop(closed);
        family.add_link(Lines::new(gone)).await;
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
        assert_eq!(family.links.lock().await.len(), 1);
        family.drop_links().await;
        answering.await.unwrap();
    }
}
