//! What a handler may return.

use crate::incoming::Incoming;
use crate::stream::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;

/// What a handler may return: `std::io::Result<()>` or `()`.
///
/// A per-connection handler's error ends only its own connection (it is logged at debug level
/// with the peer). A handler that takes the listener ([`Incoming`](crate::Incoming)) returning
/// while the process accepts stops the process, as `TERM` does; its error is logged.
///
/// The trait is sealed: it is implemented for exactly these two types, and cannot be
/// implemented outside this crate, so that the runtime is free to add to it. A handler with
/// another return type is refused at compile time on its return type.
#[diagnostic::on_unimplemented(
    message = "a server handler must return `std::io::Result<()>` or `()`, not `{Self}`",
    label = "change the return type to `std::io::Result<()>`"
)]
pub trait HandlerOutput: sealed::Sealed + Send + 'static {
    /// The outcome as an `io::Result`: `()` is `Ok(())`.
    fn into_result(self) -> io::Result<()>;
}

/// The private supertrait that keeps [`HandlerOutput`] to the types here.
mod sealed {
    /// Implemented by the types that may implement `HandlerOutput`; unnameable outside the
    /// crate.
    #[diagnostic::on_unimplemented(
        message = "`uninterruptible::HandlerOutput` cannot be implemented for `{Self}`: a server handler returns `std::io::Result<()>` or `()`",
        label = "return `std::io::Result<()>` or `()` from the handler instead"
    )]
    pub trait Sealed {}

    impl Sealed for std::io::Result<()> {}
    impl Sealed for () {}
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

impl Handler<NoHandler> {
    /// The whole-listener shape, from an `async fn(Incoming)`.
    pub(crate) fn listener<G, F, O>(handler: G) -> Handler<NoHandler>
    where
        G: FnOnce(Incoming) -> F + Send + 'static,
        F: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        Handler::Listener(Box::new(move |incoming| {
            Box::pin(async move { handler(incoming).await.into_result() })
        }))
    }
}

pub(crate) type ListenerHandler =
    Box<dyn FnOnce(Incoming) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>> + Send>;
/// The per-connection handler type of a process whose handler takes the listener.
pub(crate) type NoHandler = fn(Stream) -> std::future::Ready<()>;
