//! A process's shutdown, owned by it: the announcement that it has stopped accepting (handed out
//! as [`Draining`]), and its open connections, counted by a guard each connection task holds
//! and waited for in one place.

use crate::drain::Draining;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One process's shutdown: whether it has stopped accepting, and its open connections.
#[derive(Debug)]
pub(crate) struct Shutdown {
    connections: Connections,
    /// When the process stopped accepting; `None` while it accepts.
    draining: watch::Sender<Option<Instant>>,
}

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        Shutdown {
            connections: Connections::new(),
            draining: watch::Sender::new(None),
        }
    }

    /// Held by one connection's task for as long as the connection is open.
    pub(crate) fn guard(&self) -> ConnectionGuard {
        self.connections.guard()
    }

    /// Connections open now.
    pub(crate) fn count(&self) -> usize {
        self.connections.count()
    }

    /// Waits until no connection is open, or `limit` has passed; true when all closed.
    pub(crate) async fn drained(&self, limit: Option<Duration>) -> bool {
        self.connections.drained(limit).await
    }

    /// Tells every [`Draining`] that this process has stopped accepting, and when: the first
    /// announcement's time is kept.
    pub(crate) fn announce(&self) {
        self.draining.send_if_modified(|since| {
            let first = since.is_none();
            since.get_or_insert_with(Instant::now);
            first
        });
    }

    /// Whether this process has stopped accepting.
    pub(crate) fn is_announced(&self) -> bool {
        self.draining.borrow().is_some()
    }

    /// Completes once [`Shutdown::announce`] has run.
    pub(crate) fn draining(&self) -> Draining {
        Draining::new(self.draining.subscribe())
    }
}

/// The set of open connections (and, on an HTTP connection, of its requests in flight).
///
/// Each connection holds a [`ConnectionGuard`]; the count is the number of guards alive, so a
/// handler that panics (its task unwinds and drops the guard) is counted out like any other.
#[derive(Debug)]
pub(crate) struct Connections {
    tx: watch::Sender<()>,
}

/// Held by one connection's task for as long as the connection is open.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    _rx: watch::Receiver<()>,
}

impl Connections {
    pub(crate) fn new() -> Connections {
        Connections {
            tx: watch::Sender::new(()),
        }
    }

    pub(crate) fn guard(&self) -> ConnectionGuard {
        ConnectionGuard {
            _rx: self.tx.subscribe(),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Waits until no connection is open, or `limit` has passed; true when all closed.
    pub(crate) async fn drained(&self, limit: Option<Duration>) -> bool {
        match limit {
            None => {
                self.tx.closed().await;
                true
            }
            Some(limit) => tokio::time::timeout(limit, self.tx.closed()).await.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_draining_completes_once_announced() {
        let shutdown = Shutdown::new();
        let first = shutdown.draining();
        let second = first.clone();
        assert!(!first.is_draining() && !shutdown.is_announced());
        let waiting = tokio::spawn(second);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        shutdown.announce();
        waiting.await.unwrap();
        assert!(first.is_draining() && shutdown.is_announced());
        let since = first.since().unwrap();
        first.await;
        // A second announcement keeps the time of the first.
        shutdown.announce();
        assert_eq!(shutdown.draining().since(), Some(since));
        // One handed out after the announcement is complete at once.
        shutdown.draining().await;
        // Another process's shutdown (another test's) is its own.
        assert!(!Shutdown::new().is_announced());
    }

    #[tokio::test]
    async fn counts_guards_and_waits_for_zero() {
        let connections = Connections::new();
        assert!(connections.drained(Some(Duration::ZERO)).await);
        let a = connections.guard();
        let b = connections.guard();
        assert_eq!(connections.count(), 2);
        let panicking = tokio::spawn(async move {
            let _b = b;
            panic!("handler failure");
        });
        assert!(panicking.await.is_err());
        assert_eq!(connections.count(), 1);
        assert!(!connections.drained(Some(Duration::from_millis(10))).await);
        drop(a);
        assert!(connections.drained(Some(Duration::from_secs(5))).await);
    }
}
