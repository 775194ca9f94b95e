//! Who started this process: the variables one process of a service sets for the next (a
//! restart's old process, or a supervisor), read once, first thing, and removed from the
//! environment. Nothing a handler starts inherits a stale handoff path in a shared `TMPDIR`, or
//! takes itself for a serving process.
//!
//! The sockets inherited from systemd or Server::Starter are read the same way, in
//! [`inherit`](crate::inherit).

use crate::config::{
    FILE_DESCRIPTOR_SERVER_PATH, GENERATION, HANDOFF_STATE, KEEP_SOCKET_FILES, SUPERVISOR,
};
use std::path::PathBuf;

/// What the process that started this one said about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Origin {
    /// `FILE_DESCRIPTOR_SERVER_PATH`: started by a restart, the handoff socket to take the
    /// listeners from.
    pub(crate) handoff: Option<PathBuf>,
    /// The generation the old process gave this one.
    pub(crate) generation: Option<u64>,
    /// The pid of the supervisor that started this serving process.
    pub(crate) supervisor: Option<u32>,
    /// The UNIX socket files are a service manager's or a supervisor's: never remove them.
    pub(crate) keep_socket_files: bool,
    /// The pid of an old process that answers `state` on the handoff connection.
    pub(crate) state_from: Option<u32>,
}

impl Origin {
    /// Reads the variables and removes them.
    pub(crate) fn take() -> Origin {
        let var = |name: &str| {
            let value = std::env::var_os(name).filter(|v| !v.is_empty());
            // SAFETY: the standard library's environment functions hold a lock; another
            // thread's direct `getenv(3)` would race, which no runtime thread does.
            unsafe { std::env::remove_var(name) };
            value
        };
        let number = |name| var(name).and_then(|v| v.to_str()?.parse().ok());
        Origin {
            handoff: var(FILE_DESCRIPTOR_SERVER_PATH).map(PathBuf::from),
            generation: number(GENERATION),
            supervisor: number(SUPERVISOR).and_then(|pid: u64| u32::try_from(pid).ok()),
            keep_socket_files: var(KEEP_SOCKET_FILES).is_some(),
            state_from: number(HANDOFF_STATE).and_then(|pid: u64| u32::try_from(pid).ok()),
        }
    }
}

/// The part this process plays in its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Serves, and restarts itself into a new copy.
    Alone,
    /// Supervised mode's first process: holds the sockets, runs the serving process.
    Supervisor,
    /// A serving process started by the supervisor with this pid, which restarts it.
    Supervised(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_are_read_once_and_removed() {
        // SAFETY: the only test of this binary that touches these variables.
        unsafe {
            std::env::set_var(
                FILE_DESCRIPTOR_SERVER_PATH,
                "/tmp/uninterruptible-x/handoff.sock",
            );
            std::env::set_var(GENERATION, "7");
            std::env::set_var(SUPERVISOR, "4242");
            std::env::set_var(KEEP_SOCKET_FILES, "1");
            std::env::set_var(HANDOFF_STATE, "4141");
        }
        let origin = Origin::take();
        assert_eq!(
            origin,
            Origin {
                handoff: Some("/tmp/uninterruptible-x/handoff.sock".into()),
                generation: Some(7),
                supervisor: Some(4242),
                keep_socket_files: true,
                state_from: Some(4141),
            }
        );
        for name in [
            FILE_DESCRIPTOR_SERVER_PATH,
            GENERATION,
            SUPERVISOR,
            KEEP_SOCKET_FILES,
            HANDOFF_STATE,
        ] {
            assert_eq!(std::env::var_os(name), None, "{name} is still set");
        }
        assert_eq!(Origin::take(), Origin::default());
    }
}
