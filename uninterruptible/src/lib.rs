//! Zero-downtime restarts for TCP and UNIX socket servers, from one attribute.
//!
//! ```no_run
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! #[uninterruptible::server(bind = "tcp://127.0.0.1:6789", drain_timeout = 30)]
//! async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
//!     let (reader, mut writer) = tokio::io::split(stream);
//!     let mut line = String::new();
//!     BufReader::new(reader).read_line(&mut line).await?;
//!     writer.write_all(line.as_bytes()).await
//! }
//! ```
//!
//! The attribute keeps the function and generates `main`: it reads the configuration (the
//! attribute's literals, overridden by environment variables such as `BIND` and `PORT`), binds,
//! and serves each connection on its own tokio task.
//!
//! - `kill -USR1 <pid>` (or `HUP`) starts a new copy of the binary, which takes over the *same*
//!   listening socket; the old copy stops accepting only once the new one reports ready, then
//!   drains its open connections and exits. No client sees a refused or reset connection.
//! - `kill -TERM <pid>` (or `INT`) stops accepting, drains and exits 0; a second one exits 1 at once.
//! - With `CONTROL_SOCKET=/run/app.ctl`, `echo restart | socat -t 70 - UNIX-CONNECT:/run/app.ctl`
//!   restarts and answers `ok <pid> <generation>` or `failed <reason>`; `status` lists every live
//!   process of the service.
//! - With `SUPERVISE=true`, the first process stays as a supervisor whose pid never changes (for
//!   a container's PID 1, or a supervisor that follows one pid): it restarts the serving process
//!   on `USR1` and starts it again if it dies.
//!
//! The keys, their environment variables and the lifecycle are documented on [`server`]; the
//! same table is in [`KEYS`].
//!
//! # Without the attribute
//!
//! [`Config::from_env`] reads the same configuration from [`Defaults`] (what the attribute's
//! literals would say) and the environment, and returns an [`Error`] naming the variable or key
//! that is wrong. [`run`] then serves it with a handler per connection, which takes a
//! [`Stream`]; [`run_incoming`] with one handler that takes the whole listener, an
//! [`Incoming`]. Either handler returns a [`HandlerOutput`]: `std::io::Result<()>` or `()`.
//!
//! # An API that can grow
//!
//! Enums and structs that may gain variants or fields are `#[non_exhaustive]`: match them with a
//! `_` arm, and read the fields of a struct you did not build. [`HandlerOutput`] is sealed.
//! Every public item has one path, at the crate root.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acl;
mod address;
mod config;
mod control;
mod datagram;
mod drain;
mod error;
mod family;
mod handle;
mod handler;
mod handoff;
mod handover;
#[cfg(feature = "http")]
mod http;
mod incoming;
mod inherit;
mod init;
mod link;
mod listener;
mod logging;
mod machine;
mod notify;
mod origin;
mod pidfile;
mod reaper;
mod run;
mod serve;
mod server;
mod setup;
mod shutdown;
mod signals;
mod stream;
mod supervise;
mod tickets;
mod timing;
mod tls;

pub use address::{AddressParseError, BindAddress};
pub use config::{Config, ConfigBuilder, Defaults, StartCommand, TlsFiles, TlsVersion};
pub use datagram::Datagram;
pub use drain::Draining;
pub use error::{Error, Source};
pub use handle::{Handle, RestartOutcome};
pub use handler::HandlerOutput;
pub use handover::{Handover, MAX_HANDOVER_BYTES};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http::{HttpService, RequestBody};
pub use incoming::Incoming;
pub use run::{Server, run, run_incoming};
pub use stream::{PeerAddr, Stream};
pub use uninterruptible_macros::server;

/// Re-exported from `rustls-pki-types` for [`Stream::peer_certificates`], so that a handler
/// reading client certificates needs no dependency of its own.
pub use stream::CertificateDer;

/// Every configuration key, in the order of the documentation: the table the attribute checks
/// its literals with, the runtime reads the environment with, and the documentation's table is
/// generated from. Read-only: see [`Key`].
///
/// ```
/// // The variables a deployment may set, e.g. to clear them before starting a server.
/// let variables: Vec<&str> = uninterruptible::KEYS
///     .iter()
///     .flat_map(|key| std::iter::once(key.env).chain(key.also.iter().copied()))
///     .collect();
/// assert!(variables.contains(&"DRAIN_TIMEOUT") && variables.contains(&"PORT"));
///
/// // A value checked as the runtime and the attribute check it.
/// let drain = uninterruptible::KEYS
///     .iter()
///     .find(|key| key.name == "drain_timeout")
///     .unwrap();
/// assert!((drain.check)("2.5").is_ok());
/// assert_eq!((drain.check)("soon"), Err(drain.accepted.to_owned()));
/// ```
pub static KEYS: &[Key] = uninterruptible_grammar::KEYS;
pub use uninterruptible_grammar::{Key, Literal};

/// Used by the code `#[uninterruptible::server]` generates. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::config::Defaults;
    use crate::incoming::Incoming;
    pub use crate::run::{
        config_or_exit, run, run_datagrams, run_http, run_incoming, run_incoming_with, run_with,
        run_with_handover, with_datagrams,
    };
    use crate::stream::Stream;

    /// Implemented by nothing: the bound that turns an HTTP handler without the `http` feature into
    /// an error that says what to do.
    #[cfg(not(feature = "http"))]
    #[diagnostic::on_unimplemented(
        message = "a handler without arguments serves HTTP, which needs the `http` feature of uninterruptible",
        label = "serves HTTP",
        note = "in Cargo.toml: uninterruptible = {{ version = \"0.1\", features = [\"http\"] }}; or take `stream: uninterruptible::Stream` to serve a protocol of your own"
    )]
    pub trait NeedsHttpFeature {}

    /// The per-connection handler's argument: only [`Stream`](crate::Stream).
    #[diagnostic::on_unimplemented(
        message = "the server handler's argument must be `uninterruptible::Stream` (a task per connection) or `uninterruptible::Incoming` (the whole listener), not `{Self}`",
        label = "write `stream: uninterruptible::Stream` here"
    )]
    pub trait IsStream: Sized {
        fn from_stream(stream: Stream) -> Self;
    }

    impl IsStream for Stream {
        #[inline(always)]
        fn from_stream(stream: Stream) -> Self {
            stream
        }
    }

    /// The datagram handler's argument: only [`Datagram`](crate::Datagram).
    #[diagnostic::on_unimplemented(
        message = "the datagram handler's argument must be `uninterruptible::Datagram`, not `{Self}`",
        label = "write `datagram: uninterruptible::Datagram` here"
    )]
    pub trait IsDatagram: Sized {
        fn from_datagram(datagram: crate::Datagram) -> Self;
    }

    impl IsDatagram for crate::Datagram {
        #[inline(always)]
        fn from_datagram(datagram: crate::Datagram) -> Self {
            datagram
        }
    }

    /// What `init = "..."` names: an `async fn() -> Result<S, E>`.
    #[diagnostic::on_unimplemented(
        message = "`init` names an `async fn() -> Result<State, E>` (E: Display) that builds the handler's state; `{Self}` is not one",
        label = "an `async fn() -> Result<State, E>`"
    )]
    pub trait IsInit<S, E> {}

    impl<I, IF, S, E> IsInit<S, E> for I
    where
        I: FnOnce() -> IF,
        IF: std::future::Future<Output = Result<S, E>>,
        E: std::fmt::Display,
    {
    }

    /// `init`, checked as an initialiser where the attribute names it.
    #[inline(always)]
    pub fn init<I: IsInit<S, E>, S, E>(init: I) -> I {
        init
    }

    /// What `init = "..."` names beside `save = "..."`: an
    /// `async fn(Option<Handover>) -> Result<S, E>`.
    #[diagnostic::on_unimplemented(
        message = "with `save`, `init` names an `async fn(previous: Option<uninterruptible::Handover>) -> Result<State, E>` (E: Display): it receives what the old process saved; `{Self}` is not one",
        label = "an `async fn(Option<uninterruptible::Handover>) -> Result<State, E>`"
    )]
    pub trait IsHandoverInit<S, E> {}

    impl<I, IF, S, E> IsHandoverInit<S, E> for I
    where
        I: FnOnce(Option<crate::Handover>) -> IF,
        IF: std::future::Future<Output = Result<S, E>>,
        E: std::fmt::Display,
    {
    }

    /// `init`, checked as an initialiser that receives handed-over state.
    #[inline(always)]
    pub fn handover_init<I: IsHandoverInit<S, E>, S, E>(init: I) -> I {
        init
    }

    /// What `save = "..."` names: a `fn(&State) -> Handover`.
    #[diagnostic::on_unimplemented(
        message = "`save` names a `fn(&State) -> uninterruptible::Handover` that saves what `init` built for the next process; `{Self}` is not one",
        label = "a `fn(&State) -> uninterruptible::Handover`"
    )]
    pub trait IsSave<S> {}

    impl<V, S> IsSave<S> for V where V: Fn(&S) -> crate::Handover {}

    /// `save`, checked where the attribute names it.
    #[inline(always)]
    pub fn save<V: IsSave<S>, S>(save: V) -> V {
        save
    }

    /// The state argument of a handler with `init`: the `Arc<S>` of what `init` built.
    #[diagnostic::on_unimplemented(
        message = "the handler's second argument is what `init` built, as `std::sync::Arc<{S}>`, not `{Self}`",
        label = "write `state: std::sync::Arc<{S}>` here"
    )]
    pub trait IsState<S>: Sized {
        fn from_state(state: std::sync::Arc<S>) -> Self;
    }

    impl<S> IsState<S> for std::sync::Arc<S> {
        #[inline(always)]
        fn from_state(state: std::sync::Arc<S>) -> Self {
            state
        }
    }

    /// The whole-listener handler's argument: only [`Incoming`](crate::Incoming).
    #[diagnostic::on_unimplemented(
        message = "a handler taking the listener takes `uninterruptible::Incoming`, not `{Self}`",
        label = "write `incoming: uninterruptible::Incoming` here"
    )]
    pub trait IsIncoming: Sized {
        fn from_incoming(incoming: Incoming) -> Self;
    }

    impl IsIncoming for Incoming {
        #[inline(always)]
        fn from_incoming(incoming: Incoming) -> Self {
            incoming
        }
    }
}
