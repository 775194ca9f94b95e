//! Reaping in a supervisor: it waits for every child that ends, its own serving processes and
//! the orphans the kernel gives it (as PID 1, or as a subreaper), so that none is left a zombie.
//!
//! One `waitpid(-1)` loop owns every exit; a process the supervisor started is registered under
//! the same lock that spawns it, so its exit can never be taken for an orphan's.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// The exits of the processes started through a [`Reaper`], in order.
pub(crate) type Exits = mpsc::UnboundedReceiver<(u32, ExitStatus)>;

#[derive(Clone, Debug)]
pub(crate) struct Reaper {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    children: Mutex<HashMap<u32, watch::Sender<Option<ExitStatus>>>>,
    exits: mpsc::UnboundedSender<(u32, ExitStatus)>,
}

/// A process started through the reaper.
#[derive(Debug)]
pub(crate) struct Child {
    pid: u32,
    status: watch::Receiver<Option<ExitStatus>>,
}

impl Reaper {
    /// Starts reaping on every `SIGCHLD`. Needs the runtime.
    pub(crate) fn start() -> io::Result<(Reaper, Exits)> {
        let mut sigchld = signal(SignalKind::child())?;
        let (exits, exited) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            children: Mutex::new(HashMap::new()),
            exits,
        });
        let reaping = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                reaping.reap();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok((Reaper { shared }, exited))
    }

    /// Spawns `command` and registers it, so its exit is reported and not taken for an
    /// orphan's.
    pub(crate) fn spawn(&self, command: &mut std::process::Command) -> io::Result<Child> {
        // Held across the spawn: the standard library waits for a child whose exec failed, and
        // that exit must not be reaped by the loop first.
        let mut children = self.shared.lock();
        let child = command.spawn()?;
        let pid = child.id();
        // Dropping std's handle neither waits for the process nor kills it: it is ours to reap.
        drop(child);
        let (tx, status) = watch::channel(None);
        children.insert(pid, tx);
        Ok(Child { pid, status })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, watch::Sender<Option<ExitStatus>>>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps every child that has exited.
    fn reap(&self) {
        let mut children = self.lock();
        loop {
            let mut raw = 0;
            // SAFETY: waitpid writes the status into `raw`, a valid c_int.
            let pid = unsafe { nix::libc::waitpid(-1, &mut raw, nix::libc::WNOHANG) };
            if pid <= 0 {
                // 0: children left, none exited; -1: none left (ECHILD).
                return;
            }
            let pid = pid as u32;
            let status = ExitStatus::from_raw(raw);
            match children.remove(&pid) {
                Some(tx) => {
                    tx.send_replace(Some(status));
                    let _ = self.exits.send((pid, status));
                }
                None => tracing::debug!("reaped orphan process {pid} ({status})"),
            }
        }
    }
}

impl Child {
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self.status.wait_for(Option::is_some).await {
            Ok(status) => Ok(status.unwrap_or_else(|| ExitStatus::from_raw(0))),
            Err(_) => Err(io::Error::other("the reaper has stopped")),
        }
    }

    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        *self.status.borrow()
    }

    /// Sends `SIGKILL`, unless the process has been reaped (its pid may be another's now).
    pub(crate) fn start_kill(&mut self) {
        if self.try_wait().is_none() {
            kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Sends `signal` to `pid`, logging a failure other than "no such process".
pub(crate) fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("cannot send {signal} to process {pid}: {e}"),
    }
}

/// Makes this process the reaper of its orphaned descendants, unless it is PID 1 (which the
/// kernel gives every orphan of its namespace anyway).
pub(crate) fn adopt_orphans() {
    if std::process::id() == 1 {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(
            "cannot become the reaper of orphaned processes (PR_SET_CHILD_SUBREAPER): {e}; those of retired serving processes go to init"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_its_children_and_reaps_orphans() {
        let (reaper, mut exits) = Reaper::start().unwrap();
        let mut child = reaper
            .spawn(std::process::Command::new("/bin/sh").args(["-c", "exit 3"]))
            .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(exits.recv().await, Some((child.id(), status)));

        let mut killed = reaper
            .spawn(std::process::Command::new("/bin/sleep").arg("30"))
            .unwrap();
        killed.start_kill();
        assert_eq!(killed.wait().await.unwrap().signal(), Some(9));
    }
}
