//! What a handler may return.

use std::io;

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
