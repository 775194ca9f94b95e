//! The `#[server]` attribute of [uninterruptible](https://docs.rs/uninterruptible).
//!
//! Depend on `uninterruptible` and write `#[uninterruptible::server(...)]`; this crate is an
//! implementation detail and its items are re-exported there.

mod args;
mod check;
mod defaults;
mod expand;

use proc_macro::TokenStream;

/// Turns an `async fn(uninterruptible::Stream)` into a server binary with zero-downtime restarts.
///
/// See the `uninterruptible` crate for the keys, their environment overrides and the lifecycle.
#[proc_macro_attribute]
pub fn server(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::server(args.into(), item.into()).into()
}

/// Generates the runtime crate's `Defaults` from the key table. Not part of the public API.
#[doc(hidden)]
#[proc_macro]
pub fn __defaults(input: TokenStream) -> TokenStream {
    defaults::defaults(input.into()).into()
}
