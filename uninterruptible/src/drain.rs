//! Draining, announced: a handler can learn that its process has stopped accepting (after a
//! handover, or on `TERM`/`INT`) and finish its current exchange, instead of holding a retiring
//! process until `DRAIN_TIMEOUT` cuts it.
//!
//! One announcement per process, in a static: a connection that never asks costs nothing, and
//! nothing is added to the accept path.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::sync::watch;

fn announcement() -> &'static watch::Sender<bool> {
    static DRAINING: OnceLock<watch::Sender<bool>> = OnceLock::new();
    DRAINING.get_or_init(|| watch::Sender::new(false))
}

/// Tells every [`Draining`] that this process has stopped accepting.
pub(crate) fn announce() {
    announcement().send_replace(true);
}

/// Whether this process has stopped accepting.
pub(crate) fn is_announced() -> bool {
    *announcement().borrow()
}

/// Completes when this process stops accepting: a new process has taken over, or a `TERM` or
/// `INT` arrived. From then on the process only waits for its open connections (up to
/// `DRAIN_TIMEOUT`), so a long-lived handler should finish its current exchange and close.
///
/// Get one from [`Stream::draining`](crate::Stream::draining). It is owned and cheap to clone:
/// hand a copy to each task that needs it.
///
/// ```no_run
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// // A line protocol that says goodbye between two exchanges when its process retires.
/// async fn session(stream: uninterruptible::Stream) -> std::io::Result<()> {
///     let draining = stream.draining();
///     let (reader, mut writer) = tokio::io::split(stream);
///     let mut lines = BufReader::new(reader).lines();
///     loop {
///         tokio::select! {
///             // `next_line` is cancel-safe: a line half read is kept for the next call.
///             line = lines.next_line() => match line? {
///                 Some(line) => writer.write_all(format!("{line}\n").as_bytes()).await?,
///                 None => return Ok(()),
///             },
///             () = draining.clone() => {
///                 return writer.write_all(b"bye\n").await;
///             }
///         }
///     }
/// }
/// ```
pub struct Draining {
    state: watch::Receiver<bool>,
    /// Made on the first poll that has to wait.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl Draining {
    pub(crate) fn new() -> Draining {
        Draining {
            state: announcement().subscribe(),
            wait: None,
        }
    }

    /// Whether this process has stopped accepting.
    pub fn is_draining(&self) -> bool {
        *self.state.borrow()
    }
}

impl Clone for Draining {
    fn clone(&self) -> Self {
        Draining {
            state: self.state.clone(),
            wait: None,
        }
    }
}

impl Future for Draining {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if *this.state.borrow() {
            return Poll::Ready(());
        }
        let state = &this.state;
        let wait = this.wait.get_or_insert_with(|| {
            let mut state = state.clone();
            Box::pin(async move {
                // The sender is a static: it is never dropped.
                let _ = state.wait_for(|draining| *draining).await;
            })
        });
        wait.as_mut().poll(cx)
    }
}

impl fmt::Debug for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draining")
            .field("draining", &self.is_draining())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn completes_for_every_copy_once_announced() {
        let first = Draining::new();
        let second = first.clone();
        assert!(!first.is_draining());
        let waiting = tokio::spawn(second);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        announce();
        waiting.await.unwrap();
        assert!(first.is_draining());
        first.await;
        // One made after the announcement is complete at once.
        Draining::new().await;
    }
}
