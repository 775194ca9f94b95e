//! The whole-listener handler shape: the handler takes the accepted connections itself and
//! decides how they are run (a worker pool, a framework's own serve loop), as the gem's servers
//! do by overriding `accept_client_connection`.

use crate::drain::Draining;
use crate::shutdown::Shutdown;
use crate::stream::Stream;
use std::fmt;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

/// The connections a process accepts, for a handler that runs them itself:
/// `async fn serve(incoming: uninterruptible::Incoming)`.
///
/// [`accept`](Incoming::accept) yields each connection once network restrictions, TLS and
/// `MAX_CONNECTIONS` have been applied, and `None` once the process has stopped accepting (after
/// a handover, or on `TERM`/`INT`) and every connection it accepted has been handed out. The
/// process retires when the handler returns, or at `DRAIN_TIMEOUT`. Clones share the same
/// connections: give one to each worker.
///
/// ```no_run
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// // Four workers, each serving one connection at a time.
/// #[uninterruptible::server(bind = "tcp://127.0.0.1:6794")]
/// async fn pool(incoming: uninterruptible::Incoming) {
///     let workers: Vec<_> = (0..4)
///         .map(|_| {
///             let incoming = incoming.clone();
///             tokio::spawn(async move {
///                 while let Some(stream) = incoming.accept().await {
///                     let (reader, mut writer) = tokio::io::split(stream);
///                     let mut line = String::new();
///                     if BufReader::new(reader).read_line(&mut line).await.is_ok() {
///                         let _ = writer.write_all(line.as_bytes()).await;
///                     }
///                 }
///             })
///         })
///         .collect();
///     for worker in workers {
///         let _ = worker.await;
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Incoming {
    streams: Arc<Mutex<mpsc::UnboundedReceiver<Stream>>>,
    shutdown: Arc<Shutdown>,
}

impl Incoming {
    pub(crate) fn new(
        streams: mpsc::UnboundedReceiver<Stream>,
        shutdown: Arc<Shutdown>,
    ) -> Incoming {
        Incoming {
            streams: Arc::new(Mutex::new(streams)),
            shutdown,
        }
    }

    /// The next connection; `None` once the process has stopped accepting and handed out every
    /// connection it accepted. Cancel-safe.
    pub async fn accept(&self) -> Option<Stream> {
        self.streams.lock().await.recv().await
    }

    /// Completes when this process stops accepting: see [`Draining`].
    pub fn draining(&self) -> Draining {
        self.shutdown.draining()
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}
