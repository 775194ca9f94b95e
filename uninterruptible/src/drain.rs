//! Draining, announced: a handler can learn that its process has stopped accepting (after a
//! handover, or on `TERM`/`INT`) and finish its current exchange, instead of holding a retiring
//! process until `DRAIN_TIMEOUT` cuts it.
//!
//! The announcement belongs to the process's [`Shutdown`](crate::shutdown::Shutdown), which
//! hands out a [`Draining`] to whoever asks; a connection that never asks costs nothing more.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::watch;
use tokio::time::Instant;

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
    /// When the process stopped accepting; `None` while it accepts.
    state: watch::Receiver<Option<Instant>>,
    /// Made on the first poll that has to wait.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl Draining {
    pub(crate) fn new(state: watch::Receiver<Option<Instant>>) -> Draining {
        Draining { state, wait: None }
    }

    /// Whether this process has stopped accepting.
    pub fn is_draining(&self) -> bool {
        self.state.borrow().is_some()
    }

    /// When this process stopped accepting, if it has: the start of the bounds that count from
    /// the drain (an HTTP request still arriving gets the header-read time from then).
    #[cfg_attr(
        not(any(test, feature = "http")),
        expect(dead_code, reason = "read by the HTTP server")
    )]
    pub(crate) fn since(&self) -> Option<Instant> {
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
        if this.is_draining() {
            return Poll::Ready(());
        }
        let state = &this.state;
        let wait = this.wait.get_or_insert_with(|| {
            let mut state = state.clone();
            Box::pin(async move {
                // A shutdown dropped without announcing is the end of its process: never.
                if state.wait_for(Option::is_some).await.is_err() {
                    std::future::pending::<()>().await;
                }
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
