//! The crate's one error type. Every message names its cause and, for configuration, where the
//! value came from (the variable or the attribute key), the value, and what is accepted.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a configuration value came from: an environment variable or an attribute key.
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
/// [`source`](std::error::Error::source). The server prints both on one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is not one that is accepted.
    #[error("{name}={value:?} is invalid: expected {expected}")]
    InvalidValue {
        /// The variable or key.
        name: Source,
        /// The value as given.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// Configuration values that do not go together, or one that is missing.
    #[error("{0}")]
    InvalidConfig(String),
    /// A file named by the configuration cannot be used.
    #[error("{name}={path:?}: {reason}")]
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
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address, as configured.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The pidfile could not be written.
    #[error("cannot write the pidfile {path:?}")]
    Pidfile {
        /// The pidfile's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another operating system call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
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

    /// The process exit status for this error: 2 for configuration, 1 for the rest.
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
