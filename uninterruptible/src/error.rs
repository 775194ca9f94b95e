//! The crate's one error type. Every message names its cause and, for configuration, where the
//! value came from (the variable or the attribute key), the value, and what is accepted.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a configuration value came from: an environment variable or an attribute key.
///
/// Its `Display` is how errors name it: the variable as it is (`DRAIN_TIMEOUT`), or the key
/// and where it was written (`drain_timeout (in #[uninterruptible::server])`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The environment variable of this name.
    Env(&'static str),
    /// The key of this name in `#[uninterruptible::server(...)]`.
    Attribute(&'static str),
    /// The [`ConfigBuilder`](crate::ConfigBuilder) setter of this name: the program set it.
    Code(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env(name) => f.write_str(name),
            Source::Attribute(key) => write!(f, "{key} (in #[uninterruptible::server])"),
            Source::Code(key) => write!(f, "{key} (set by the program)"),
        }
    }
}

/// Everything that can stop a server from starting.
///
/// `Display` is this error's own message; an operating system error behind it is its
/// [`source`](std::error::Error::source). The server prints both on one line on stderr, and
/// exits with [`exit_status`](Error::exit_status): 2 for configuration, 1 for the rest.
///
/// More variants, and more fields in each struct-like variant, may come: match with `_` and
/// `..`.
///
/// ```
/// use uninterruptible::{Config, Defaults, Error, Source};
///
/// let defaults = Defaults::new()
///     .bind("tcp://127.0.0.1:6789")
///     .drain_timeout("soon");
/// # // The environment overrides the literal: here, it must not.
/// # if std::env::var_os("DRAIN_TIMEOUT").is_some_and(|v| !v.is_empty()) { return; }
/// let error = Config::from_env(defaults).unwrap_err();
/// assert_eq!(error.exit_status(), 2);
/// match &error {
///     Error::InvalidValue { name, value, .. } => {
///         assert_eq!(*name, Source::Attribute("drain_timeout"));
///         assert_eq!(value, "soon");
///     }
///     other => panic!("{other}"),
/// }
/// assert!(error.to_string().starts_with(
///     r#"drain_timeout (in #[uninterruptible::server])="soon" is invalid: expected 0, or a number of seconds"#
/// ));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is not one that is accepted.
    #[error("{name}={value:?} is invalid: expected {expected}")]
    #[non_exhaustive]
    InvalidValue {
        /// The variable or key.
        name: Source,
        /// The value as given.
        value: String,
        /// What would be accepted, as the documentation's table says it, or more precisely
        /// (the item of a list that is wrong, the length of a path that is too long).
        expected: String,
    },
    /// Configuration values that do not go together, or one that is missing: the message names
    /// each variable involved and says what to set.
    #[error("{0}")]
    InvalidConfig(String),
    /// A file named by the configuration cannot be used: it cannot be read or created, or its
    /// contents are not what it should hold (a TLS key or certificate that is not PEM).
    #[error("{name}={path:?}: {reason}")]
    #[non_exhaustive]
    BadFile {
        /// The variable or key naming the file.
        name: Source,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The error reading it, if that is what is wrong.
        #[source]
        source: Option<io::Error>,
    },
    /// A listening socket, or the control socket, could not be bound: the address is in use, a
    /// live server answers on the UNIX socket path, the port needs privileges.
    #[error("cannot listen on {address}")]
    #[non_exhaustive]
    Bind {
        /// The address as configured (`tcp://host:port`, `unix:///path`), or `control socket`
        /// and its path.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The pidfile could not be written.
    #[error("cannot write the pidfile {path:?}")]
    #[non_exhaustive]
    Pidfile {
        /// The pidfile's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The program's initialiser (`init`, or [`Server::run_with`](crate::Server::run_with))
    /// returned an error, panicked, or did not finish within `READY_TIMEOUT`: its message.
    #[error("the initialiser failed: {0}")]
    Init(String),
    /// Another operating system call failed.
    #[error("{what}")]
    #[non_exhaustive]
    Io {
        /// What was being done, e.g. `cannot start the tokio runtime`.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(source: Source, value: &str, expected: impl Into<String>) -> Error {
        Error::InvalidValue {
            name: source,
            value: value.to_owned(),
            expected: expected.into(),
        }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { what, source }
    }

    /// The process exit status for this error, as the `main` the attribute generates exits
    /// with: 2 for configuration ([`InvalidValue`](Error::InvalidValue),
    /// [`InvalidConfig`](Error::InvalidConfig), [`BadFile`](Error::BadFile)), which a retry will
    /// not fix; 1 for the rest.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::InvalidValue { .. } | Error::InvalidConfig(_) | Error::BadFile { .. } => 2,
            _ => 1,
        }
    }

    /// The message and every cause behind it, on one line.
    pub(crate) fn report(&self) -> String {
        let mut line = self.to_string();
        let mut cause = self.source();
        while let Some(error) = cause {
            line.push_str(": ");
            line.push_str(&error.to_string());
            cause = error.source();
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_and_reported_on_the_same_line() {
        let error = Error::Bind {
            address: "tcp://127.0.0.1:80".into(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(error.to_string(), "cannot listen on tcp://127.0.0.1:80");
        let cause = error.source().unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(cause.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            error.report(),
            "cannot listen on tcp://127.0.0.1:80: address in use"
        );
    }
}
