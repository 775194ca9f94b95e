//! Open connections: counted by a guard each connection task holds, and waited for in one place.

use std::time::Duration;
use tokio::sync::watch;

/// The set of open connections.
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
