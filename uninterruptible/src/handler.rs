//! What a handler may return.

use crate::incoming::Incoming;
use crate::stream::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;

/// What a handler may return: `std::io::Result<()>` or `()`. An error ends only its own
/// connection (it is logged at debug level with the peer).
#[diagnostic::on_unimplemented(
    message = "a server handler must return `std::io::Result<()>` or `()`, not `{Self}`",
    label = "change the return type to `std::io::Result<()>`"
)]
pub trait HandlerOutput: Send + 'static {
    /// The outcome as an `io::Result`.
    fn into_result(self) -> io::Result<()>;
}

impl HandlerOutput for io::Result<()> {
    #[inline(always)]
    fn into_result(self) -> io::Result<()> {
        self
    }
}

impl HandlerOutput for () {
    #[inline(always)]
    fn into_result(self) -> io::Result<()> {
        Ok(())
    }
}

/// The two shapes of handler.
pub(crate) enum Handler<H> {
    /// `async fn(Stream)`: one task per connection.
    PerConnection(H),
    /// `async fn(Incoming)`: one task for the whole listener (boxed: it is made once).
    Listener(ListenerHandler),
}

pub(crate) type ListenerHandler =
    Box<dyn FnOnce(Incoming) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>> + Send>;
/// The per-connection handler type of a process whose handler takes the listener.
pub(crate) type NoHandler = fn(Stream) -> std::future::Ready<()>;
