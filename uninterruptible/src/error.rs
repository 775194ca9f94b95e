//! The crate's one error type. Every message names its cause and, for configuration, the
//! variable or key, the value, and what is accepted.

use std::io;
use std::path::PathBuf;

/// Where a configuration value came from: an environment variable or an attribute key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The environment variable of this name.
    Env(&'static str),
    /// The key of this name in `#[uninterruptible::server(...)]`.
    Attribute(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env(name) => f.write_str(name),
            Source::Attribute(key) => write!(f, "{key} (in #[uninterruptible::server])"),
        }
    }
}

/// Everything that can stop a server from starting.
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
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}: {reason}")]
    Bind {
        /// The address, as configured.
        address: String,
        /// Why.
        reason: String,
    },
    /// The pidfile could not be written.
    #[error("cannot write the pidfile {path:?}: {error}")]
    Pidfile {
        /// The pidfile's path.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// Another operating system call failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        error: io::Error,
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
        move |error| Error::Io { what, error }
    }

    /// The process exit status for this error: 2 for configuration, 1 for the rest.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::InvalidValue { .. } | Error::InvalidConfig(_) | Error::BadFile { .. } => 2,
            _ => 1,
        }
    }

    /// Prints this error as one line on stderr and exits with [`Error::exit_status`].
    pub fn exit(&self) -> ! {
        crate::logging::to_stderr(format_args!("{self}"));
        std::process::exit(self.exit_status().into())
    }
}
