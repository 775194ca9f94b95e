//! Configuration: the attribute's literals are defaults, the environment overrides them.
//!
//! Every value is parsed and checked here, before anything is bound, with one parser for both
//! sources; an error names the variable (or key), the value and what is accepted.

use crate::address::{BIND_SYNTAX, BindAddress};
use crate::error::{Error, Source};
use ipnet::IpNet;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Listening address, e.g. `tcp://0.0.0.0:6789`; wins over the attribute and `PORT`.
pub const BIND: &str = "BIND";
/// Port: replaces the port of a TCP `bind` literal, or listens on `tcp://0.0.0.0:$PORT`.
pub const PORT: &str = "PORT";
/// Command that starts the new copy on a restart, run with `/bin/sh -c`.
pub const START_COMMAND: &str = "START_COMMAND";
/// Path of the pidfile.
pub const PID_FILE: &str = "PID_FILE";
/// Path of a file to append logs to, instead of stdout.
pub const LOG_PATH: &str = "LOG_PATH";
/// `trace`, `debug`, `info`, `warn`, `error` or `off`.
pub const LOG_LEVEL: &str = "LOG_LEVEL";
/// A full `tracing` filter; wins over `LOG_LEVEL`.
pub const RUST_LOG: &str = "RUST_LOG";
/// PEM file with the TLS private key.
pub const TLS_KEY: &str = "TLS_KEY";
/// PEM file with the TLS certificate, optionally followed by its chain.
pub const TLS_CERTIFICATE: &str = "TLS_CERTIFICATE";
/// Lowest TLS version offered: `TLSv1_2` or `TLSv1_3`.
pub const TLS_VERSION: &str = "TLS_VERSION";
/// Seconds a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: &str = "TLS_HANDSHAKE_TIMEOUT";
/// Whether client certificates are required and verified.
pub const VERIFY_CLIENT_TLS_CERTIFICATE: &str = "VERIFY_CLIENT_TLS_CERTIFICATE";
/// PEM file with the CA that signs client certificates; implies verification.
pub const CLIENT_TLS_CERTIFICATE_CA: &str = "CLIENT_TLS_CERTIFICATE_CA";
/// Comma-separated CIDRs or addresses that may connect.
pub const ALLOWED_NETWORKS: &str = "ALLOWED_NETWORKS";
/// Seconds a stopping or retiring process waits for open connections.
pub const DRAIN_TIMEOUT: &str = "DRAIN_TIMEOUT";
/// Seconds an old process waits for the new one to report ready.
pub const READY_TIMEOUT: &str = "READY_TIMEOUT";
/// Connections served at once.
pub const MAX_CONNECTIONS: &str = "MAX_CONNECTIONS";
/// Listen queue length of the sockets this process binds.
pub const BACKLOG: &str = "BACKLOG";
/// Set by the old process for the new one: where to fetch the listening socket.
pub const FILE_DESCRIPTOR_SERVER_PATH: &str = "FILE_DESCRIPTOR_SERVER_PATH";
/// Set by the old process for the new one: the new process's generation, for logs.
pub const GENERATION: &str = "UNINTERRUPTIBLE_GENERATION";

/// The literals given to `#[uninterruptible::server(...)]`, as text.
///
/// Each is parsed exactly as the matching environment variable would be, so the attribute and the
/// environment accept the same values. The attribute fills this in; without it, set what you need:
///
/// ```
/// let defaults = uninterruptible::Defaults::new()
///     .bind("tcp://127.0.0.1:6789")
///     .drain_timeout("30");
/// # let _ = defaults;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Defaults {
    bind: Option<&'static str>,
    start_command: Option<&'static str>,
    pidfile: Option<&'static str>,
    log_path: Option<&'static str>,
    log_level: Option<&'static str>,
    tls_key: Option<&'static str>,
    tls_certificate: Option<&'static str>,
    tls_version: Option<&'static str>,
    tls_handshake_timeout: Option<&'static str>,
    verify_client_tls_certificate: Option<&'static str>,
    client_tls_certificate_ca: Option<&'static str>,
    allowed_networks: Option<&'static str>,
    drain_timeout: Option<&'static str>,
    ready_timeout: Option<&'static str>,
    max_connections: Option<&'static str>,
    backlog: Option<&'static str>,
}

macro_rules! setters {
    ($($key:ident => $env:ident),* $(,)?) => {
        impl Defaults {
            $(
                #[doc = concat!("Sets `", stringify!($key), "`; `", stringify!($env), "` overrides it.")]
                #[must_use]
                pub const fn $key(mut self, value: &'static str) -> Self {
                    self.$key = Some(value);
                    self
                }
            )*
        }
    };
}

setters! {
    bind => BIND,
    start_command => START_COMMAND,
    pidfile => PID_FILE,
    log_path => LOG_PATH,
    log_level => LOG_LEVEL,
    tls_key => TLS_KEY,
    tls_certificate => TLS_CERTIFICATE,
    tls_version => TLS_VERSION,
    tls_handshake_timeout => TLS_HANDSHAKE_TIMEOUT,
    verify_client_tls_certificate => VERIFY_CLIENT_TLS_CERTIFICATE,
    client_tls_certificate_ca => CLIENT_TLS_CERTIFICATE_CA,
    allowed_networks => ALLOWED_NETWORKS,
    drain_timeout => DRAIN_TIMEOUT,
    ready_timeout => READY_TIMEOUT,
    max_connections => MAX_CONNECTIONS,
    backlog => BACKLOG,
}

impl Defaults {
    /// No defaults: every key unset.
    pub const fn new() -> Self {
        Defaults {
            bind: None,
            start_command: None,
            pidfile: None,
            log_path: None,
            log_level: None,
            tls_key: None,
            tls_certificate: None,
            tls_version: None,
            tls_handshake_timeout: None,
            verify_client_tls_certificate: None,
            client_tls_certificate_ca: None,
            allowed_networks: None,
            drain_timeout: None,
            ready_timeout: None,
            max_connections: None,
            backlog: None,
        }
    }
}

/// Lowest TLS protocol version offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// How a restart starts the new copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartCommand {
    /// A command line, run as `/bin/sh -c 'exec <command>'`.
    Shell(String),
    /// The binary's own absolute path and arguments, captured at startup.
    Exec {
        /// Absolute path of the binary.
        program: PathBuf,
        /// Arguments after the program name.
        args: Vec<OsString>,
    },
}

impl std::fmt::Display for StartCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartCommand::Shell(line) => f.write_str(line),
            StartCommand::Exec { program, args } => {
                write!(f, "{}", program.display())?;
                for arg in args {
                    let arg = arg.to_string_lossy();
                    if arg.is_empty() || arg.contains(char::is_whitespace) {
                        write!(f, " {arg:?}")?;
                    } else {
                        write!(f, " {arg}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl StartCommand {
    /// Why the program this command runs cannot be started now, if that can be told without
    /// running it: it does not exist, or is not executable.
    pub(crate) fn program_problem(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let program = match self {
            StartCommand::Exec { program, .. } => program.clone(),
            StartCommand::Shell(line) => {
                let first = line.split_whitespace().next()?;
                let first = first.trim_matches(|c| c == '\'' || c == '"');
                if first.contains('$') || first.contains('`') {
                    return None;
                }
                if !first.contains('/') {
                    let found = std::env::var_os("PATH").is_some_and(|path| {
                        std::env::split_paths(&path).any(|dir| dir.join(first).is_file())
                    });
                    return (!found).then(|| format!("the program `{first}` is not in PATH"));
                }
                PathBuf::from(first)
            }
        };
        match std::fs::metadata(&program) {
            Err(e) => Some(format!(
                "the program {} cannot be found: {e}",
                program.display()
            )),
            Ok(meta) if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 => Some(format!(
                "the program {} is not an executable file",
                program.display()
            )),
            Ok(_) => None,
        }
    }
}

/// TLS files, as configured (read when the server starts).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// PEM private key.
    pub key: PathBuf,
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// Lowest version offered.
    pub version: TlsVersion,
    /// Time a client has to finish the handshake.
    pub handshake_timeout: Duration,
    /// CA for client certificates; when set, clients must present one it signed.
    pub client_ca: Option<PathBuf>,
    /// Where each path came from, for errors about the file.
    pub(crate) origins: TlsOrigins,
}

/// Where each TLS file's path came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TlsOrigins {
    pub(crate) key: Source,
    pub(crate) certificate: Source,
    pub(crate) client_ca: Source,
}

/// Where values that name files came from, so an error about the file blames the right one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origins {
    pub(crate) log_path: Source,
}

/// The validated configuration of a server.
///
/// Built by [`Config::from_env`]; every field has been checked.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen.
    pub bind: BindAddress,
    /// How a restart starts the new copy.
    pub start_command: StartCommand,
    /// Pidfile path.
    pub pidfile: Option<PathBuf>,
    /// Log file path; stdout when `None`.
    pub log_path: Option<PathBuf>,
    /// A `tracing` filter, already checked.
    pub log_filter: String,
    /// TLS, when a key and certificate are configured.
    pub tls: Option<TlsFiles>,
    /// Networks allowed to connect; everyone when `None`.
    pub allowed_networks: Option<Vec<IpNet>>,
    /// How long to wait for open connections when stopping or retiring; forever when `None`.
    pub drain_timeout: Option<Duration>,
    /// How long an old process waits for the new one's `ready`.
    pub ready_timeout: Duration,
    /// Connections served at once; unlimited when `None`.
    pub max_connections: Option<usize>,
    /// Listen queue length of the sockets this process binds (the kernel caps it at
    /// `net.core.somaxconn`).
    pub backlog: u32,
    pub(crate) origins: Origins,
    /// Settings that are valid but deserve a word in the log once it is open.
    pub(crate) warnings: Vec<String>,
}

const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BACKLOG: u32 = 1024;
/// The largest listen queue `listen(2)` takes on Linux (it is then capped by `somaxconn`).
const MAX_BACKLOG: u32 = 65535;
/// The most connections a semaphore can count.
pub(crate) const MAX_MAX_CONNECTIONS: usize = tokio::sync::Semaphore::MAX_PERMITS;
/// Timers tick in milliseconds: a shorter timeout would fire at once.
const MIN_TIMEOUT: f64 = 0.001;
/// About 31 years: beyond it a number of seconds is surely a mistake.
const MAX_SECONDS: f64 = 1e9;

/// One value and where it came from.
struct Setting {
    source: Source,
    value: String,
}

/// Reads each setting from the environment, falling back to the attribute's literal.
struct Lookup<'a> {
    env: &'a dyn Fn(&str) -> Option<OsString>,
}

impl Lookup<'_> {
    /// The environment variable if set and not empty, else the literal.
    fn get(
        &self,
        env: &'static str,
        key: &'static str,
        literal: Option<&'static str>,
    ) -> Result<Option<Setting>, Error> {
        if let Some(value) = self.env_var(env)? {
            return Ok(Some(Setting {
                source: Source::Env(env),
                value,
            }));
        }
        Ok(literal.map(|value| Setting {
            source: Source::Attribute(key),
            value: value.to_owned(),
        }))
    }

    fn env_var(&self, name: &'static str) -> Result<Option<String>, Error> {
        match (self.env)(name) {
            None => Ok(None),
            Some(os) if os.is_empty() => Ok(None),
            Some(os) => os.into_string().map(Some).map_err(|os| {
                Error::invalid(Source::Env(name), &os.to_string_lossy(), "valid UTF-8 text")
            }),
        }
    }
}

impl Setting {
    fn parse<T>(&self, expected: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, Error> {
        parse(self.value.trim()).ok_or_else(|| Error::invalid(self.source, &self.value, expected))
    }

    fn path(&self) -> Result<PathBuf, Error> {
        self.parse("a file path", |s| (!s.is_empty()).then(|| PathBuf::from(s)))
    }

    /// Seconds, decimal allowed: from 0 (`zero_ok`, meaning "at once") or from 0.001.
    fn seconds(&self, zero_ok: bool) -> Result<Duration, Error> {
        let expected = if zero_ok {
            "a number of seconds from 0 to 999999999 (e.g. 30 or 2.5)"
        } else {
            "a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5)"
        };
        self.parse(expected, |s| {
            let secs: f64 = s.parse().ok()?;
            let ok = secs.is_finite()
                && (secs >= MIN_TIMEOUT || zero_ok && secs == 0.0)
                && secs < MAX_SECONDS;
            ok.then(|| Duration::from_secs_f64(secs))
        })
    }

    /// A whole number in `range`.
    fn count<T>(&self, range: std::ops::RangeInclusive<T>) -> Result<T, Error>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        self.parse(&expected, |s| {
            s.parse::<T>().ok().filter(|n| range.contains(n))
        })
    }

    fn boolean(&self) -> Result<bool, Error> {
        self.parse("true, false, 1, 0, yes or no", |s| {
            match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" => Some(false),
                _ => None,
            }
        })
    }
}

impl Config {
    /// Reads the configuration from the environment, with `defaults` (the attribute's literals)
    /// where a variable is unset or empty.
    ///
    /// Every value is checked; the error names the variable or key, the value and what is
    /// accepted. [`Error::exit`] prints it and exits with status 2.
    pub fn from_env(defaults: Defaults) -> Result<Config, Error> {
        Self::from_lookup(defaults, &|name| std::env::var_os(name))
    }

    /// [`Config::from_env`] with the environment given as a function, for tests.
    pub(crate) fn from_lookup(
        d: Defaults,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Config, Error> {
        let l = Lookup { env };

        let bind = bind(&l, d.bind)?;
        let start_command = match l.get(START_COMMAND, "start_command", d.start_command)? {
            Some(s) => StartCommand::Shell(shell_command(&s)?),
            None => own_command()?,
        };
        let pidfile = l
            .get(PID_FILE, "pidfile", d.pidfile)?
            .map(|s| s.path())
            .transpose()?;
        let log_path_setting = l.get(LOG_PATH, "log_path", d.log_path)?;
        let origins = Origins {
            log_path: log_path_setting
                .as_ref()
                .map_or(Source::Env(LOG_PATH), |s| s.source),
        };
        let log_path = log_path_setting.map(|s| s.path()).transpose()?;
        let log_filter = log_filter(&l, d.log_level)?;
        let mut warnings = Vec::new();
        let tls = tls(&l, &d, &mut warnings)?;
        let allowed_networks =
            match l.get(ALLOWED_NETWORKS, "allowed_networks", d.allowed_networks)? {
                Some(s) => Some(networks(&s)?),
                None => None,
            };
        if let (Some(_), BindAddress::Unix(_)) = (&allowed_networks, &bind) {
            return Err(Error::InvalidConfig(format!(
                "{ALLOWED_NETWORKS} cannot be used with a UNIX socket ({bind}): UNIX peers have no network address; unset it or bind to tcp://"
            )));
        }
        let drain_timeout = l
            .get(DRAIN_TIMEOUT, "drain_timeout", d.drain_timeout)?
            .map(|s| s.seconds(true))
            .transpose()?;
        let ready_timeout = l
            .get(READY_TIMEOUT, "ready_timeout", d.ready_timeout)?
            .map(|s| s.seconds(false))
            .transpose()?
            .unwrap_or(DEFAULT_READY_TIMEOUT);
        let max_connections = l
            .get(MAX_CONNECTIONS, "max_connections", d.max_connections)?
            .map(|s| s.count(1..=MAX_MAX_CONNECTIONS))
            .transpose()?;
        let backlog = l
            .get(BACKLOG, "backlog", d.backlog)?
            .map(|s| s.count(1..=MAX_BACKLOG))
            .transpose()?
            .unwrap_or(DEFAULT_BACKLOG);

        Ok(Config {
            bind,
            start_command,
            pidfile,
            log_path,
            log_filter,
            tls,
            allowed_networks,
            drain_timeout,
            ready_timeout,
            max_connections,
            backlog,
            origins,
            warnings,
        })
    }
}

/// `BIND` wins; else the literal, with `PORT` replacing a TCP port; else `tcp://0.0.0.0:$PORT`.
fn bind(l: &Lookup<'_>, literal: Option<&'static str>) -> Result<BindAddress, Error> {
    let address = |s: Setting| s.parse(BIND_SYNTAX, |v| v.parse::<BindAddress>().ok());
    let port = l
        .env_var(PORT)?
        .map(|value| {
            value.trim().parse::<u16>().map_err(|_| {
                Error::invalid(Source::Env(PORT), &value, "a port number from 0 to 65535")
            })
        })
        .transpose()?;
    if let Some(value) = l.env_var(BIND)? {
        return address(Setting {
            source: Source::Env(BIND),
            value,
        });
    }
    match (literal, port) {
        (Some(value), port) => {
            let literal = address(Setting {
                source: Source::Attribute("bind"),
                value: value.to_owned(),
            })?;
            Ok(match port {
                Some(port) => literal.with_port(port),
                None => literal,
            })
        }
        (None, Some(port)) => Ok(BindAddress::Tcp {
            host: "0.0.0.0".into(),
            port,
        }),
        (None, None) => Err(Error::InvalidConfig(format!(
            "no address to listen on: set {BIND} (e.g. {BIND}=tcp://0.0.0.0:6789) or {PORT}, or write bind = \"...\" in #[uninterruptible::server]"
        ))),
    }
}

/// The binary's own path, made absolute now (so a later `cd` or a replaced binary does not
/// matter), and its arguments. Not `/proc/self/exe`: that names a deleted file once replaced.
fn own_command() -> Result<StartCommand, Error> {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<OsString> = argv.collect();
    let program = resolve_program(&argv0)
        .or_else(|| std::env::current_exe().ok())
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "cannot find this program's path from {argv0:?} to restart it: set {START_COMMAND}"
            ))
        })?;
    Ok(StartCommand::Exec { program, args })
}

fn resolve_program(argv0: &OsStr) -> Option<PathBuf> {
    let path = Path::new(argv0);
    if argv0.is_empty() {
        return None;
    }
    if path.components().count() > 1 || path.is_absolute() {
        return Some(logical_cwd()?.join(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(path))
        .find(|candidate| candidate.is_file())
        .map(|found| logical_cwd().map(|cwd| cwd.join(&found)).unwrap_or(found))
}

/// The working directory as the shell that started us names it (`$PWD`, as `pwd -L` prints it),
/// when that names the real working directory; else the real one. A server started as
/// `./server` from `/srv/app/current`, a symlink to a release directory, restarts as
/// `/srv/app/current/server`: the release the link names at the time of the restart.
fn logical_cwd() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let real = std::env::current_dir().ok()?;
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    match std::env::var_os("PWD").map(PathBuf::from) {
        Some(pwd) if pwd.is_absolute() && same(&pwd, &real) => Some(pwd),
        _ => Some(real),
    }
}

/// What `/bin/sh -c 'exec <command>'` can run: a program and its arguments. A command that
/// starts with a variable assignment or a shell builtin, or chains commands, can never be
/// `exec`ed, so it is refused now rather than at the first restart.
fn shell_command(s: &Setting) -> Result<String, Error> {
    let trimmed = s.value.trim();
    // The restart adds `exec` itself; one written by hand is taken off.
    let line = match trimmed.strip_prefix("exec") {
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
        _ => trimmed,
    };
    let refuse = |why: &str| {
        Err(Error::invalid(
            s.source,
            &s.value,
            format!(
                "a program and its arguments, which the restart runs with exec; {why}: put the steps in a script that ends with `exec <server>` and name the script"
            ),
        ))
    };
    let Some(first) = line.split_whitespace().next() else {
        return refuse("it is empty");
    };
    let assignment = first.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if assignment {
        return refuse(
            "it starts with a variable assignment (set variables in the environment, or write `env NAME=value program`)",
        );
    }
    const BUILTINS: &[&str] = &[
        "cd", "export", "set", "unset", "source", ".", "eval", "exec", "if", "for", "while",
        "until", "case", "{", "(", "!", "ulimit", "umask",
    ];
    if BUILTINS.contains(&first) {
        return refuse(&format!("it starts with the shell builtin `{first}`"));
    }
    if let Some(op) = unquoted_operator(line) {
        return refuse(&format!("it chains commands with `{op}`"));
    }
    Ok(line.to_owned())
}

/// The first `&&`, `||`, `;`, `|` or `&` outside quotes, if any.
fn unquoted_operator(line: &str) -> Option<&'static str> {
    let mut quote = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\\') => {
                chars.next();
            }
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => return Some(";"),
            (None, '&') if chars.peek() == Some(&'&') => return Some("&&"),
            (None, '|') if chars.peek() == Some(&'|') => return Some("||"),
            (None, '&') => return Some("&"),
            (None, '|') => return Some("|"),
            _ => {}
        }
    }
    None
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// `RUST_LOG` (a full filter) wins over `LOG_LEVEL` (one level).
fn log_filter(l: &Lookup<'_>, literal: Option<&'static str>) -> Result<String, Error> {
    let level = match l.get(LOG_LEVEL, "log_level", literal)? {
        Some(s) => Some(s.parse(&format!("one of {}", LEVELS.join(", ")), |v| {
            let v = v.to_ascii_lowercase();
            LEVELS.contains(&v.as_str()).then_some(v)
        })?),
        None => None,
    };
    if let Some(filter) = l.env_var(RUST_LOG)? {
        return match tracing_subscriber::EnvFilter::builder().parse(&filter) {
            Ok(_) => Ok(filter),
            Err(e) => Err(Error::invalid(
                Source::Env(RUST_LOG),
                &filter,
                format!("a tracing filter such as info or uninterruptible=debug,warn ({e})"),
            )),
        };
    }
    Ok(level.unwrap_or_else(|| "info".into()))
}

/// A path setting and where it came from.
fn located(
    setting: Option<Setting>,
    default: &'static str,
) -> Result<(Option<PathBuf>, Source), Error> {
    match setting {
        Some(s) => Ok((Some(s.path()?), s.source)),
        None => Ok((None, Source::Env(default))),
    }
}

fn tls(
    l: &Lookup<'_>,
    d: &Defaults,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsFiles>, Error> {
    let (key, key_origin) = located(l.get(TLS_KEY, "tls_key", d.tls_key)?, TLS_KEY)?;
    let (certificate, certificate_origin) = located(
        l.get(TLS_CERTIFICATE, "tls_certificate", d.tls_certificate)?,
        TLS_CERTIFICATE,
    )?;
    let version = match l.get(TLS_VERSION, "tls_version", d.tls_version)? {
        None => TlsVersion::default(),
        Some(s) => match s.value.trim() {
            "TLSv1_2" => TlsVersion::Tls12,
            "TLSv1_3" => TlsVersion::Tls13,
            "TLSv1_1" | "TLSv1" | "TLSv1_0" | "SSLv3" => {
                return Err(Error::invalid(
                    s.source,
                    &s.value,
                    "TLSv1_2 or TLSv1_3 (TLS 1.0 and 1.1 are deprecated by RFC 8996 and not implemented by rustls)",
                ));
            }
            _ => return Err(Error::invalid(s.source, &s.value, "TLSv1_2 or TLSv1_3")),
        },
    };
    let handshake_timeout = l
        .get(
            TLS_HANDSHAKE_TIMEOUT,
            "tls_handshake_timeout",
            d.tls_handshake_timeout,
        )?
        .map(|s| s.seconds(false))
        .transpose()?
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let verify = l
        .get(
            VERIFY_CLIENT_TLS_CERTIFICATE,
            "verify_client_tls_certificate",
            d.verify_client_tls_certificate,
        )?
        .map(|s| s.boolean().map(|v| (v, s.source)))
        .transpose()?;
    let (mut client_ca, client_ca_origin) = located(
        l.get(
            CLIENT_TLS_CERTIFICATE_CA,
            "client_tls_certificate_ca",
            d.client_tls_certificate_ca,
        )?,
        CLIENT_TLS_CERTIFICATE_CA,
    )?;
    // An explicit `false` wins over a CA: it is how operations turn client certificates off
    // without a rebuild when the CA is compiled into the attribute.
    if let (Some((false, verify_origin)), Some(ca)) = (verify, &client_ca) {
        warnings.push(format!(
            "client certificates are not required: {verify_origin}=false wins over {client_ca_origin}={ca:?}"
        ));
        client_ca = None;
    }
    let verify = verify.map(|(v, _)| v);

    if verify == Some(true) && client_ca.is_none() {
        return Err(Error::InvalidConfig(format!(
            "{VERIFY_CLIENT_TLS_CERTIFICATE}=true needs {CLIENT_TLS_CERTIFICATE_CA}: set it to the PEM file of the CA that signs client certificates"
        )));
    }
    match (key, certificate) {
        (Some(key), Some(certificate)) => Ok(Some(TlsFiles {
            key,
            certificate,
            version,
            handshake_timeout,
            client_ca,
            origins: TlsOrigins {
                key: key_origin,
                certificate: certificate_origin,
                client_ca: client_ca_origin,
            },
        })),
        (None, None) if client_ca.is_some() || verify == Some(true) => {
            Err(Error::InvalidConfig(format!(
                "{CLIENT_TLS_CERTIFICATE_CA} needs TLS: set {TLS_KEY} and {TLS_CERTIFICATE} too"
            )))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::InvalidConfig(format!(
            "{TLS_KEY} is set but {TLS_CERTIFICATE} is not: TLS needs both files"
        ))),
        (None, Some(_)) => Err(Error::InvalidConfig(format!(
            "{TLS_CERTIFICATE} is set but {TLS_KEY} is not: TLS needs both files"
        ))),
    }
}

/// Comma-separated CIDRs or bare addresses (a /32 or /128).
fn networks(s: &Setting) -> Result<Vec<IpNet>, Error> {
    let expected = "comma-separated networks such as 10.0.0.0/8, 2001:db8::/32 or 127.0.0.1";
    let mut networks = Vec::new();
    for item in s.value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let net = item
            .parse::<IpNet>()
            .ok()
            .or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from))
            .ok_or_else(|| {
                Error::invalid(
                    s.source,
                    &s.value,
                    format!("{expected}; {item:?} is neither"),
                )
            })?;
        networks.push(net);
    }
    if networks.is_empty() {
        return Err(Error::invalid(s.source, &s.value, expected));
    }
    Ok(networks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(defaults: Defaults, env: &[(&str, &str)]) -> Result<Config, Error> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(defaults, &move |name| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn bind_of(defaults: Defaults, env: &[(&str, &str)]) -> String {
        config(defaults, env).unwrap().bind.to_string()
    }

    #[test]
    fn bind_precedence() {
        let lit = Defaults::new().bind("tcp://127.0.0.1:6789");
        assert_eq!(bind_of(lit, &[]), "tcp://127.0.0.1:6789");
        assert_eq!(bind_of(lit, &[(PORT, "7000")]), "tcp://127.0.0.1:7000");
        assert_eq!(
            bind_of(lit, &[(PORT, "7000"), (BIND, "tcp://[::1]:8000")]),
            "tcp://[::1]:8000"
        );
        assert_eq!(
            bind_of(Defaults::new(), &[(PORT, "7000")]),
            "tcp://0.0.0.0:7000"
        );
        let unix = Defaults::new().bind("unix:///tmp/x.sock");
        assert_eq!(bind_of(unix, &[(PORT, "7000")]), "unix:///tmp/x.sock");
        assert_eq!(bind_of(lit, &[(BIND, "")]), "tcp://127.0.0.1:6789");
        assert!(matches!(
            config(Defaults::new(), &[]),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn errors_name_the_variable_or_key() {
        let lit = Defaults::new().bind("tcp://127.0.0.1:6789");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(BIND, "foo://x")], "BIND=\"foo://x\""),
            (&[(PORT, "99999")], "PORT=\"99999\""),
            (&[(DRAIN_TIMEOUT, "soon")], "DRAIN_TIMEOUT=\"soon\""),
            (&[(READY_TIMEOUT, "0")], "READY_TIMEOUT=\"0\""),
            (&[(READY_TIMEOUT, "-1")], "READY_TIMEOUT=\"-1\""),
            (&[(DRAIN_TIMEOUT, "inf")], "DRAIN_TIMEOUT=\"inf\""),
            (&[(MAX_CONNECTIONS, "0")], "MAX_CONNECTIONS=\"0\""),
            (&[(LOG_LEVEL, "loud")], "LOG_LEVEL=\"loud\""),
            (&[(RUST_LOG, "=[")], "RUST_LOG=\"=[\""),
            (&[(TLS_VERSION, "TLSv1_1")], "RFC 8996"),
            (
                &[(ALLOWED_NETWORKS, "10.0.0.0/8,banana")],
                "\"banana\" is neither",
            ),
            (&[(ALLOWED_NETWORKS, ",")], "ALLOWED_NETWORKS"),
            (&[(TLS_KEY, "k.pem")], "TLS_CERTIFICATE is not"),
            (
                &[(VERIFY_CLIENT_TLS_CERTIFICATE, "true")],
                "needs CLIENT_TLS_CERTIFICATE_CA",
            ),
            (&[(CLIENT_TLS_CERTIFICATE_CA, "ca.pem")], "needs TLS"),
            (&[(START_COMMAND, "  ")], "START_COMMAND"),
        ];
        for (env, needle) in cases {
            let message = config(lit, env).unwrap_err().to_string();
            assert!(message.contains(needle), "{env:?}: {message}");
            assert!(!message.contains('\n'));
        }
        let message = config(Defaults::new().bind("tcp://x:1").drain_timeout("soon"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("drain_timeout (in #[uninterruptible::server])"),
            "{message}"
        );
    }

    #[test]
    fn values() {
        let d = Defaults::new()
            .bind("tcp://[::]:1")
            .allowed_networks("10.0.0.0/8, ::1")
            .drain_timeout("2.5")
            .max_connections("10")
            .log_level("DEBUG");
        let c = config(d, &[(RUST_LOG, "uninterruptible=trace")]).unwrap();
        assert_eq!(
            c.allowed_networks.unwrap(),
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert_eq!(c.drain_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.max_connections, Some(10));
        assert_eq!(c.log_filter, "uninterruptible=trace");
        assert_eq!(c.ready_timeout, DEFAULT_READY_TIMEOUT);
        let c = config(d, &[(LOG_LEVEL, "warn")]).unwrap();
        assert_eq!(c.log_filter, "warn");
        assert!(
            matches!(c.start_command, StartCommand::Exec { ref program, .. } if program.is_absolute())
        );
        let c = config(d, &[(START_COMMAND, "bin/server --flag")]).unwrap();
        assert_eq!(
            c.start_command,
            StartCommand::Shell("bin/server --flag".into())
        );
    }

    #[test]
    fn networks_with_unix_bind_is_an_error() {
        let d = Defaults::new().bind("unix:///tmp/s.sock");
        let err = config(d, &[(ALLOWED_NETWORKS, "10.0.0.0/8")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("ALLOWED_NETWORKS cannot be used with a UNIX socket")
        );
    }
}
