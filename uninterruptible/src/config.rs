//! Configuration: the attribute's literals are defaults, the environment overrides them.
//!
//! Every key is in one table ([`KEYS`], shared with the attribute, which checks its literals
//! with the same parsers); every value is parsed and checked here, before anything is bound. An
//! error names the variable or key the value really came from, the value, and what is accepted.

use crate::address::BindAddress;
use crate::error::{Error, Source};
use ipnet::IpNet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uninterruptible_grammar::{self as grammar, KEYS, Key};

/// Set by the old process for the new one: where to fetch the listening socket.
pub(crate) const FILE_DESCRIPTOR_SERVER_PATH: &str = "FILE_DESCRIPTOR_SERVER_PATH";
/// Set by the old process for the new one: the new process's generation, for logs.
pub(crate) const GENERATION: &str = "UNINTERRUPTIBLE_GENERATION";
/// Set by an old process that answers `state` on the handoff connection: its pid.
pub(crate) const HANDOFF_STATE: &str = "UNINTERRUPTIBLE_HANDOFF_STATE";
/// Set by the old process for the new one when the UNIX socket files are a service manager's.
pub(crate) const KEEP_SOCKET_FILES: &str = "UNINTERRUPTIBLE_KEEP_SOCKET_FILES";
/// Set by a supervisor for the serving processes it starts: its pid.
pub(crate) const SUPERVISOR: &str = "UNINTERRUPTIBLE_SUPERVISOR";

uninterruptible_macros::__defaults! {
    /// The literals given to `#[uninterruptible::server(...)]`, as text: the defaults that the
    /// environment overrides.
    ///
    /// Each is parsed exactly as the matching environment variable would be. The attribute fills
    /// this in; without it, set what you need and pass it to [`Config::from_env`]:
    ///
    /// ```
    /// let defaults = uninterruptible::Defaults::new()
    ///     .bind("tcp://127.0.0.1:6789")
    ///     .drain_timeout("30");
    /// let config = uninterruptible::Config::from_env(defaults);
    /// # let _ = config;
    /// ```
    pub struct Defaults;
}

/// Lowest TLS protocol version offered (`TLS_VERSION`: `TLSv1_2`, the default, or `TLSv1_3`).
/// TLS 1.0 and 1.1 are never offered: RFC 8996 deprecates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// How a restart starts the new copy (`START_COMMAND`).
///
/// Its `Display` is the command line as logs and the control socket's replies show it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartCommand {
    /// A command line from `START_COMMAND`, run as `/bin/sh -c 'exec <command>'`: a program and
    /// its arguments (a leading `exec` is taken off).
    Shell(String),
    /// The binary's own absolute path and arguments, captured at startup: the default. The path
    /// is made absolute with the working directory as the shell named it (`$PWD`), so a
    /// restart from a symlinked release directory runs the release the link names then.
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

/// TLS files, as configured: paths only, read when the server starts (and again by the new
/// process at each restart).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// `TLS_KEY`: PEM file of the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `TLS_CERTIFICATE`: PEM file of the certificate, optionally followed by its chain.
    pub certificate: PathBuf,
    /// `TLS_VERSION`: lowest version offered.
    pub version: TlsVersion,
    /// `TLS_HANDSHAKE_TIMEOUT`: time a client has to finish the handshake; 10 s by default.
    pub handshake_timeout: Duration,
    /// `CLIENT_TLS_CERTIFICATE_CA`: PEM file of the CA for client certificates; when set,
    /// clients must present one it signed. `None` when unset, or when
    /// `VERIFY_CLIENT_TLS_CERTIFICATE=false` turns it off.
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
    /// Where the addresses came from, to name it in an error found when binding them (with
    /// `PORT`, the attribute's key).
    pub(crate) bind: Source,
}

impl Origins {
    /// `BIND` (or the program) set the addresses: sockets handed over by a service manager are
    /// matched to them, instead of replacing the attribute's literal.
    pub(crate) fn bind_from_env(&self) -> bool {
        !matches!(self.bind, Source::Attribute(_))
    }
}

/// The validated configuration of a server.
///
/// Built by [`Config::from_env`]; every field has been checked. Each field names the
/// environment variable it comes from (the attribute key is the same in lower case, `pidfile`
/// for `PID_FILE`); the table on [`server`](crate::server) says the rest.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// `BIND` (with `PORT`): where to listen, one address or several (never none), all served
    /// by the handler.
    pub bind: Vec<BindAddress>,
    /// `START_COMMAND`: how a restart starts the new copy.
    pub start_command: StartCommand,
    /// `PID_FILE`: written atomically (temp file + rename) once the process serves; none when
    /// `None`.
    pub pidfile: Option<PathBuf>,
    /// `LOG_PATH`: logs are appended to this file; stdout when `None`.
    pub log_path: Option<PathBuf>,
    /// A `tracing` filter, already checked: `RUST_LOG` as given, else `LOG_LEVEL` in lower
    /// case, else `info`.
    pub log_filter: String,
    /// TLS, when `TLS_KEY` and `TLS_CERTIFICATE` are both set; plain when `None`.
    pub tls: Option<TlsFiles>,
    /// `ALLOWED_NETWORKS`: the networks TCP clients may connect from (a bare address is a /32
    /// or /128); others are closed before any TLS handshake. Everyone when `None`.
    pub allowed_networks: Option<Vec<IpNet>>,
    /// `DRAIN_TIMEOUT`: how long a stopping or retiring process waits for open connections
    /// before it closes them; `Duration::ZERO` closes them at once, `None` waits for ever.
    pub drain_timeout: Option<Duration>,
    /// `READY_TIMEOUT`: how long an old process waits for the new one's `ready` before the
    /// restart fails and the old one serves on; 60 s by default.
    pub ready_timeout: Duration,
    /// `MAX_CONNECTIONS`: connections served at once, at least 1; beyond it the process stops
    /// accepting and the kernel queues new clients. Unlimited when `None`.
    pub max_connections: Option<usize>,
    /// `BACKLOG`: listen queue length of the sockets this process binds, 1 to 65535 (the kernel
    /// caps it at `net.core.somaxconn`); 1024 by default. A socket taken over keeps its queue.
    pub backlog: u32,
    /// `SUPERVISE`: the first process stays as a supervisor that holds the sockets and runs the
    /// serving process; its pid never changes.
    pub supervise: bool,
    /// `CONTROL_SOCKET`: path of the UNIX socket (mode 0600) answering `restart` and `status`;
    /// none when `None`.
    pub control_socket: Option<PathBuf>,
    /// `HEADER_READ_TIMEOUT`: see [`Config::header_read_timeout`].
    header_read_timeout: Duration,
    /// The application protocols offered over TLS (ALPN, RFC 7301): an HTTP service's; none for
    /// a line protocol.
    pub(crate) alpn: &'static [&'static [u8]],
    /// The attribute's `datagrams = "..."`: a datagram handler beside the main one, taken by
    /// [`Server::new`](crate::Server::new).
    pub(crate) datagrams: Option<crate::datagram::DatagramHandler>,
    pub(crate) origins: Origins,
    /// Settings that are valid but deserve a word in the log once it is open.
    pub(crate) warnings: Vec<String>,
}

const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BACKLOG: u32 = 1024;
/// A real client sends a request's head in a round trip or two, so this is generous; it is short
/// because it is also how long one client still sending a request can hold a retiring process
/// (hyper's own default, 30 s, would be that long), and it matches `TLS_HANDSHAKE_TIMEOUT`'s.
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of this attribute name; every name used here is in the table (a test reads them all).
fn key(name: &str) -> &'static Key {
    grammar::key(name).unwrap_or_else(|| panic!("`{name}` is not in the key table"))
}

/// One value and where it came from.
struct Setting {
    source: Source,
    value: String,
}

/// Reads each key from the program's code (a [`ConfigBuilder`] setter), then the environment,
/// falling back to the attribute's literal.
struct Lookup<'a> {
    code: &'a Code,
    env: &'a dyn Fn(&str) -> Option<OsString>,
    defaults: Defaults,
}

impl Lookup<'_> {
    /// The environment variable if set and not empty, else the literal.
    fn setting(&self, name: &str) -> Result<Option<Setting>, Error> {
        let key = key(name);
        if let Some((_, value)) = self.code.values.iter().find(|(k, _)| *k == key.name) {
            return Ok(Some(Setting {
                source: Source::Code(key.name),
                value: value.clone(),
            }));
        }
        if let Some(value) = self.env_var(key.env)? {
            return Ok(Some(Setting {
                source: Source::Env(key.env),
                value,
            }));
        }
        let index = KEYS.iter().position(|k| std::ptr::eq(k, key)).unwrap_or(0);
        Ok(self.defaults.at(index).map(|value| Setting {
            source: Source::Attribute(key.name),
            value: value.to_owned(),
        }))
    }

    /// The key's value parsed with `parse`, which says what it expected when it refuses one.
    fn value<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        self.setting(name)?.map(|s| s.parse(parse)).transpose()
    }

    /// A path, and where it came from (or the variable that would have set it).
    fn path(&self, name: &str) -> Result<(Option<PathBuf>, Source), Error> {
        match self.setting(name)? {
            Some(s) => Ok((Some(PathBuf::from(s.parse(grammar::path)?)), s.source)),
            None => Ok((None, Source::Env(key(name).env))),
        }
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
    fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, Error> {
        parse(&self.value).map_err(|expected| Error::invalid(self.source, &self.value, expected))
    }
}

impl Config {
    /// Reads the configuration from the environment, with `defaults` (the attribute's literals)
    /// where a variable is unset or empty.
    ///
    /// Every value is checked; the error names the variable or key, the value and what is
    /// accepted, and [`Error::exit_status`] is 2 for it.
    ///
    /// ```
    /// let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:6789");
    /// match uninterruptible::Config::from_env(defaults) {
    ///     Ok(config) => println!("listening on {:?}", config.bind),
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// ```
    pub fn from_env(defaults: Defaults) -> Result<Config, Error> {
        let env = |name: &str| std::env::var_os(name);
        Self::from_lookup(defaults, &Code::default(), &env, own_command())
    }

    /// [`Config::from_env`] as a pure function: the environment as a lookup, and the command
    /// that restarts this program (read from the process at the edge).
    pub(crate) fn from_lookup(
        defaults: Defaults,
        code: &Code,
        env: &dyn Fn(&str) -> Option<OsString>,
        own_command: Option<StartCommand>,
    ) -> Result<Config, Error> {
        let l = Lookup {
            code,
            env,
            defaults,
        };
        let mut warnings = Vec::new();

        if let Some((name, value)) = &code.refused {
            return Err(Error::invalid(
                Source::Code(name),
                value,
                "valid UTF-8 text",
            ));
        }
        let (bind, bind_source) = bind(&l)?;
        let start_command = match &code.start_command {
            // The program's command is the one used: the variable it overrides is not read.
            Some(StartCommand::Shell(line)) => {
                let source = Source::Code(key("start_command").name);
                let checked = grammar::command(line)
                    .map_err(|expected| Error::invalid(source, line, expected))?;
                StartCommand::Shell(checked)
            }
            Some(command) => command.clone(),
            None => match l.value("start_command", grammar::command)? {
                Some(line) => StartCommand::Shell(line),
                None => own_command.ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "cannot find this program's path to restart it: set {}",
                        key("start_command").env
                    ))
                })?,
            },
        };
        let pidfile = l.value("pidfile", grammar::path)?.map(PathBuf::from);
        let (log_path, log_path_origin) = l.path("log_path")?;
        let log_filter = log_filter(&l)?;
        let tls = tls(&l, &mut warnings)?;
        if let (Some(_), Some(datagram)) = (&tls, bind.iter().find(|a| a.is_datagram())) {
            return Err(Error::InvalidConfig(format!(
                "{0} is set and {datagram} takes datagrams, which TLS does not protect: serve it from a server without TLS, or unset {0}",
                key("tls_certificate").env,
            )));
        }
        let allowed_networks = l.value("allowed_networks", grammar::networks)?;
        let only_unix = bind.iter().all(|a| a.path().is_some());
        if allowed_networks.is_some() && only_unix {
            return Err(Error::InvalidConfig(format!(
                "{} cannot be used with a UNIX socket ({}): UNIX peers have no network address; unset it or bind to tcp:// or udp://",
                key("allowed_networks").env,
                list(&bind)
            )));
        }
        let drain_timeout = l.value("drain_timeout", |s| grammar::seconds(s, true))?;
        let header_read_timeout = l
            .value("header_read_timeout", |s| grammar::seconds(s, false))?
            .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT);
        let ready_timeout = l
            .value("ready_timeout", |s| grammar::seconds(s, false))?
            .unwrap_or(DEFAULT_READY_TIMEOUT);
        let max_connections = l.value("max_connections", |s| {
            grammar::count(s, 1..=grammar::MAX_CONNECTIONS)
        })?;
        let backlog = l
            .value("backlog", |s| grammar::count(s, 1..=grammar::MAX_BACKLOG))?
            .unwrap_or(DEFAULT_BACKLOG);
        let supervise = l.value("supervise", grammar::boolean)?.unwrap_or(false);
        let control_socket = control_socket(&l, &bind)?;

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
            supervise,
            control_socket,
            header_read_timeout,
            alpn: &[],
            datagrams: None,
            origins: Origins {
                log_path: log_path_origin,
                bind: bind_source,
            },
            warnings,
        })
    }
}

impl Config {
    /// `HEADER_READ_TIMEOUT`, for HTTP services (feature `http`): how long a client has to send a
    /// request's head (a connection that sends nothing, or an idle HTTP/1.1 keep-alive one, is
    /// closed after it too), and, once
    /// the process drains, how long after the drain's start every request still arriving (head or
    /// body) has to arrive; 10 s by default.
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "read by an HTTP service's start-up")
    )]
    pub(crate) fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// How many listening sockets a restart can hand over: one message carries
    /// [`grammar::MAX_HANDOFF_FDS`] descriptors, one of them the control socket when there is
    /// one.
    pub(crate) fn max_listeners(&self) -> usize {
        grammar::MAX_HANDOFF_FDS - usize::from(self.control_socket.is_some())
    }
}

/// Addresses as a list, as they are written in `BIND`.
pub(crate) fn list(addresses: &[BindAddress]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `BIND` wins; else the literal, with `PORT` replacing the port of its tcp addresses; else
/// `tcp://0.0.0.0:$PORT`.
fn bind(l: &Lookup<'_>) -> Result<(Vec<BindAddress>, Source), Error> {
    let key = key("bind");
    if let Some(addresses) = &l.code.bind {
        let source = Source::Code(key.name);
        let checked = checked_binds(addresses)
            .map_err(|expected| Error::invalid(source, &list(addresses), expected))?;
        return Ok((checked, source));
    }
    let port_var = key.also[0];
    let setting = l.setting("bind")?;
    // PORT replaces the port of the attribute's addresses, never of BIND's or the program's: it
    // is read only where it is used, so a value BIND overrides is not an error.
    let explicit = setting
        .as_ref()
        .is_some_and(|s| !matches!(s.source, Source::Attribute(_)));
    let port = if explicit {
        None
    } else {
        l.env_var(port_var)?
            .map(|value| {
                grammar::port(&value)
                    .map_err(|expected| Error::invalid(Source::Env(port_var), &value, expected))
            })
            .transpose()?
    };
    let addresses = |s: &str| {
        grammar::binds(s).map(|all| {
            all.into_iter()
                .map(BindAddress::from_grammar)
                .collect::<Vec<_>>()
        })
    };
    match (setting, port) {
        (Some(setting), Some(port)) => {
            let addresses = setting.parse(addresses)?;
            let ported = addresses.into_iter().map(|a| a.with_port(port)).collect();
            Ok((ported, setting.source))
        }
        (Some(setting), None) => Ok((setting.parse(addresses)?, setting.source)),
        (None, Some(port)) => Ok((
            vec![BindAddress::Tcp {
                host: "0.0.0.0".into(),
                port,
            }],
            Source::Env(port_var),
        )),
        (None, None) => Err(Error::InvalidConfig(format!(
            "no address to listen on: set {0} (e.g. {0}=tcp://0.0.0.0:6789) or {port_var}, or write bind = \"...\" in #[uninterruptible::server]",
            key.env
        ))),
    }
}

/// The program's addresses, checked as `BIND`'s are: each one as if written alone (so a path may
/// hold a comma), then the list as a whole. A path that is not UTF-8 text is refused, as it is in
/// `BIND`, rather than changed.
fn checked_binds(addresses: &[BindAddress]) -> Result<Vec<BindAddress>, String> {
    let mut checked = Vec::new();
    for address in addresses {
        let text = address.to_string();
        let parsed =
            grammar::bind(&text).map_err(|expected| format!("{expected}; {text:?} is not one"))?;
        if BindAddress::from_grammar(parsed.clone()) != *address {
            return Err(format!("addresses of UTF-8 text; {text:?} is not one"));
        }
        checked.push(parsed);
    }
    Ok(grammar::bind_list(checked)?
        .into_iter()
        .map(BindAddress::from_grammar)
        .collect())
}

/// The control socket's path, which must not be one of the listening sockets.
fn control_socket(l: &Lookup<'_>, bind: &[BindAddress]) -> Result<Option<PathBuf>, Error> {
    let Some(setting) = l.setting("control_socket")? else {
        return Ok(None);
    };
    let path = PathBuf::from(setting.parse(grammar::socket_path)?);
    if bind.iter().any(|a| a.path() == Some(&path)) {
        return Err(Error::invalid(
            setting.source,
            &setting.value,
            "a path that is not one of the listening sockets (BIND)",
        ));
    }
    // The grammar keeps the addresses to what one handoff message carries; the control socket
    // goes in the same message.
    if bind.len() >= grammar::MAX_HANDOFF_FDS {
        let bind_source = l
            .setting("bind")?
            .map_or(Source::Env(key("bind").env), |s| s.source);
        return Err(Error::InvalidConfig(format!(
            "{bind_source} has {} addresses and {}={:?} is set: a restart hands the listeners and the control socket over in one message, which carries at most {} descriptors; use at most {} addresses, or no control socket",
            bind.len(),
            setting.source,
            setting.value,
            grammar::MAX_HANDOFF_FDS,
            grammar::MAX_HANDOFF_FDS - 1
        )));
    }
    Ok(Some(path))
}

/// The binary's own path, made absolute now (so a later `cd` or a replaced binary does not
/// matter), and its arguments. Not `/proc/self/exe`: that names a deleted file once replaced.
fn own_command() -> Option<StartCommand> {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<OsString> = argv.collect();
    let program = resolve_program(&argv0).or_else(|| std::env::current_exe().ok())?;
    Some(StartCommand::Exec { program, args })
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

/// `RUST_LOG` (a full filter) wins over `LOG_LEVEL` (one level).
fn log_filter(l: &Lookup<'_>) -> Result<String, Error> {
    let level = l.value("log_level", grammar::log_level)?;
    let rust_log = key("log_level").also[0];
    if let Some(filter) = l.env_var(rust_log)? {
        return match tracing_subscriber::EnvFilter::builder().parse(&filter) {
            Ok(_) => Ok(filter),
            Err(e) => Err(Error::invalid(
                Source::Env(rust_log),
                &filter,
                format!("a tracing filter such as info or uninterruptible=debug,warn ({e})"),
            )),
        };
    }
    Ok(level.unwrap_or_else(|| "info".into()))
}

fn tls(l: &Lookup<'_>, warnings: &mut Vec<String>) -> Result<Option<TlsFiles>, Error> {
    let (key_path, key_origin) = l.path("tls_key")?;
    let (certificate, certificate_origin) = l.path("tls_certificate")?;
    let version = match l.value("tls_version", grammar::tls_version)? {
        None | Some(grammar::TlsVersion::Tls12) => TlsVersion::Tls12,
        Some(grammar::TlsVersion::Tls13) => TlsVersion::Tls13,
    };
    let handshake_timeout = l
        .value("tls_handshake_timeout", |s| grammar::seconds(s, false))?
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let verify = l
        .setting("verify_client_tls_certificate")?
        .map(|s| s.parse(grammar::boolean).map(|v| (v, s.source)))
        .transpose()?;
    let (mut client_ca, client_ca_origin) = l.path("client_tls_certificate_ca")?;
    // An explicit `false` wins over a CA: it is how operations turn client certificates off
    // without a rebuild when the CA is compiled into the attribute.
    if let (Some((false, verify_origin)), Some(ca)) = (verify, &client_ca) {
        warnings.push(format!(
            "client certificates are not required: {verify_origin}=false wins over {client_ca_origin}={ca:?}"
        ));
        client_ca = None;
    }
    let verify = verify.map(|(v, _)| v);
    let (verify_var, ca_var) = (
        key("verify_client_tls_certificate").env,
        key("client_tls_certificate_ca").env,
    );
    let (key_var, certificate_var) = (key("tls_key").env, key("tls_certificate").env);

    if verify == Some(true) && client_ca.is_none() {
        return Err(Error::InvalidConfig(format!(
            "{verify_var}=true needs {ca_var}: set it to the PEM file of the CA that signs client certificates"
        )));
    }
    match (key_path, certificate) {
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
        (None, None) if client_ca.is_some() || verify == Some(true) => Err(Error::InvalidConfig(
            format!("{ca_var} needs TLS: set {key_var} and {certificate_var} too"),
        )),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::InvalidConfig(format!(
            "{key_var} is set but {certificate_var} is not: TLS needs both files"
        ))),
        (None, Some(_)) => Err(Error::InvalidConfig(format!(
            "{certificate_var} is set but {key_var} is not: TLS needs both files"
        ))),
    }
}

/// A [`Config`] set from the program's own code, over the environment: for a `main` of your
/// own, with flags parsed by your own means.
///
/// Precedence, highest first:
/// 1. a value set with a setter here (a command-line flag the program parsed, say);
/// 2. the environment variable (`BIND`, `PORT`, `DRAIN_TIMEOUT`, ...);
/// 3. the default: [`Defaults`] (the attribute's literals).
///
/// So a flag the program sets wins over `BIND` and `PORT`; a value it leaves unset stays the
/// operator's to set. Every value goes through the checks the environment's go through, and
/// an error names the setter (`drain_timeout (set by the program)`), the value and what is
/// accepted; [`Error::exit_status`] is 2 for it.
///
/// ```
/// use std::time::Duration;
/// use uninterruptible::{BindAddress, Config, Defaults};
///
/// // `--port 7001` on the command line, say.
/// let port: Option<u16> = Some(7001);
/// let mut builder = Config::builder(Defaults::new().bind("tcp://127.0.0.1:7000"))
///     .drain_timeout(Duration::from_secs(30));
/// if let Some(port) = port {
///     builder = builder.bind([BindAddress::Tcp { host: "127.0.0.1".into(), port }]);
/// }
/// let config = builder.build().expect("a valid configuration");
/// assert_eq!(config.bind[0].to_string(), "tcp://127.0.0.1:7001");
/// assert_eq!(config.drain_timeout, Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ConfigBuilder {
    defaults: Defaults,
    code: Code,
}

/// What the program set with a [`ConfigBuilder`]: the values as the environment would spell
/// them, and those the environment's text cannot carry whole.
#[derive(Clone, Debug, Default)]
pub(crate) struct Code {
    /// Key name and value.
    values: Vec<(&'static str, String)>,
    /// The addresses, as the program gave them (a path may hold a comma).
    bind: Option<Vec<BindAddress>>,
    start_command: Option<StartCommand>,
    /// A path that is not UTF-8 text: the key, and the path as far as it can be shown.
    refused: Option<(&'static str, String)>,
}

impl Config {
    /// A [`ConfigBuilder`] over `defaults`: set what the program decides, then
    /// [`build`](ConfigBuilder::build).
    pub fn builder(defaults: Defaults) -> ConfigBuilder {
        ConfigBuilder {
            defaults,
            code: Code::default(),
        }
    }
}

impl ConfigBuilder {
    fn set(mut self, name: &str, value: String) -> Self {
        let name = key(name).name;
        self.code.values.retain(|(k, _)| *k != name);
        self.code.values.push((name, value));
        self
    }

    fn seconds(self, name: &str, value: Duration) -> Self {
        self.set(name, value.as_secs_f64().to_string())
    }

    fn path(mut self, name: &str, value: impl Into<PathBuf>) -> Self {
        match value.into().into_os_string().into_string() {
            Ok(text) => self.set(name, text),
            Err(os) => {
                let name = key(name).name;
                self.code.refused = Some((name, os.to_string_lossy().into_owned()));
                self
            }
        }
    }

    /// The addresses to listen on (`bind`), over `BIND` and `PORT`. Checked as `BIND` is (each
    /// address once, at most as many as a restart hands over), when [`build`](Self::build) runs.
    pub fn bind(mut self, addresses: impl IntoIterator<Item = BindAddress>) -> Self {
        self.code.bind = Some(addresses.into_iter().collect());
        self
    }

    /// The command a restart runs for the new copy (`start_command`), over `START_COMMAND`.
    pub fn start_command(mut self, command: StartCommand) -> Self {
        self.code.start_command = Some(command);
        self
    }

    /// The pidfile (`pidfile`), over `PID_FILE`.
    pub fn pidfile(self, path: impl Into<PathBuf>) -> Self {
        self.path("pidfile", path)
    }

    /// The log file (`log_path`), over `LOG_PATH`.
    pub fn log_path(self, path: impl Into<PathBuf>) -> Self {
        self.path("log_path", path)
    }

    /// The log level (`log_level`: trace, debug, info, warn, error or off), over `LOG_LEVEL`;
    /// `RUST_LOG` still wins, as a full tracing filter.
    pub fn log_level(self, level: impl Into<String>) -> Self {
        self.set("log_level", level.into())
    }

    /// The TLS private key and certificate chain, PEM files (`tls_key`, `tls_certificate`),
    /// over `TLS_KEY` and `TLS_CERTIFICATE`.
    pub fn tls(self, key: impl Into<PathBuf>, certificate: impl Into<PathBuf>) -> Self {
        self.path("tls_key", key)
            .path("tls_certificate", certificate)
    }

    /// The lowest TLS version offered (`tls_version`), over `TLS_VERSION`.
    pub fn tls_version(self, version: TlsVersion) -> Self {
        let text = match version {
            TlsVersion::Tls12 => "TLSv1_2",
            TlsVersion::Tls13 => "TLSv1_3",
        };
        self.set("tls_version", text.into())
    }

    /// How long a client has to finish its TLS handshake (`tls_handshake_timeout`), over
    /// `TLS_HANDSHAKE_TIMEOUT`.
    pub fn tls_handshake_timeout(self, limit: Duration) -> Self {
        self.seconds("tls_handshake_timeout", limit)
    }

    /// The networks clients may connect from (`allowed_networks`), over `ALLOWED_NETWORKS`.
    pub fn allowed_networks(self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        let list: Vec<String> = networks.into_iter().map(|n| n.to_string()).collect();
        self.set("allowed_networks", list.join(","))
    }

    /// How long a stopping or retiring process waits for its open connections
    /// (`drain_timeout`), over `DRAIN_TIMEOUT`.
    pub fn drain_timeout(self, limit: Duration) -> Self {
        self.seconds("drain_timeout", limit)
    }

    /// How long an HTTP client has to send a request's head, and after a drain begins to finish
    /// every request it is still sending (`header_read_timeout`), over `HEADER_READ_TIMEOUT`.
    /// Used by HTTP services (feature `http`).
    pub fn header_read_timeout(self, limit: Duration) -> Self {
        self.seconds("header_read_timeout", limit)
    }

    /// How long the old process waits for the new one to be ready (`ready_timeout`), over
    /// `READY_TIMEOUT`.
    pub fn ready_timeout(self, limit: Duration) -> Self {
        self.seconds("ready_timeout", limit)
    }

    /// The most connections served at once (`max_connections`), over `MAX_CONNECTIONS`.
    pub fn max_connections(self, count: usize) -> Self {
        self.set("max_connections", count.to_string())
    }

    /// The listen queue of the sockets this process binds (`backlog`), over `BACKLOG`.
    pub fn backlog(self, length: u32) -> Self {
        self.set("backlog", length.to_string())
    }

    /// Supervised mode (`supervise`), over `SUPERVISE`.
    pub fn supervise(self, on: bool) -> Self {
        self.set("supervise", on.to_string())
    }

    /// The control socket's path (`control_socket`), over `CONTROL_SOCKET`.
    pub fn control_socket(self, path: impl Into<PathBuf>) -> Self {
        self.path("control_socket", path)
    }

    /// Reads the environment and checks every value: the [`Config`], or the first value refused
    /// ([`Error::exit_status`] 2). A variable whose key the program set is not read, so a bad
    /// value there is no error.
    pub fn build(self) -> Result<Config, Error> {
        let env = |name: &str| std::env::var_os(name);
        Config::from_lookup(self.defaults, &self.code, &env, own_command())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    const BIND: &str = "BIND";
    const PORT: &str = "PORT";
    const START_COMMAND: &str = "START_COMMAND";
    const LOG_LEVEL: &str = "LOG_LEVEL";
    const RUST_LOG: &str = "RUST_LOG";
    const TLS_VERSION: &str = "TLS_VERSION";
    const TLS_KEY: &str = "TLS_KEY";
    const VERIFY_CLIENT_TLS_CERTIFICATE: &str = "VERIFY_CLIENT_TLS_CERTIFICATE";
    const CLIENT_TLS_CERTIFICATE_CA: &str = "CLIENT_TLS_CERTIFICATE_CA";
    const ALLOWED_NETWORKS: &str = "ALLOWED_NETWORKS";
    const DRAIN_TIMEOUT: &str = "DRAIN_TIMEOUT";
    const READY_TIMEOUT: &str = "READY_TIMEOUT";
    const HEADER_READ_TIMEOUT: &str = "HEADER_READ_TIMEOUT";
    const MAX_CONNECTIONS: &str = "MAX_CONNECTIONS";

    /// The builder's layers: the program's values, then the environment, then the defaults.
    fn built(builder: ConfigBuilder, env: &[(&str, &str)]) -> Result<Config, Error> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(
            builder.defaults,
            &builder.code,
            &move |name| {
                env.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| OsString::from(v))
            },
            Some(StartCommand::Shell("./server".into())),
        )
    }

    #[test]
    fn the_programs_values_win_over_the_environment_which_wins_over_the_defaults() {
        let defaults = Defaults::new()
            .bind("tcp://127.0.0.1:7000")
            .drain_timeout("5");
        let flag = BindAddress::Tcp {
            host: "127.0.0.1".into(),
            port: 7001,
        };
        let builder = Config::builder(defaults).bind([flag.clone()]);
        // A flag wins over BIND, and over PORT, which only replaces the attribute's port.
        let env = [
            (BIND, "tcp://0.0.0.0:9000"),
            (PORT, "9001"),
            (DRAIN_TIMEOUT, "7"),
        ];
        let config = built(builder.clone(), &env).unwrap();
        assert_eq!(config.bind, vec![flag.clone()]);
        assert_eq!(config.drain_timeout, Some(Duration::from_secs(7)));
        assert!(config.origins.bind_from_env());
        let config = built(
            builder.clone().drain_timeout(Duration::from_millis(2500)),
            &env,
        )
        .unwrap();
        assert_eq!(config.drain_timeout, Some(Duration::from_millis(2500)));
        let config = built(
            builder.header_read_timeout(Duration::from_secs(3)),
            &[(HEADER_READ_TIMEOUT, "7")],
        )
        .unwrap();
        assert_eq!(config.header_read_timeout(), Duration::from_secs(3));
        // Unset in code, the environment and the defaults act as they always do.
        let config = built(Config::builder(defaults), &[(PORT, "9001")]).unwrap();
        assert_eq!(config.bind[0].to_string(), "tcp://127.0.0.1:9001");
        assert!(!config.origins.bind_from_env());
        assert_eq!(config.drain_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_value_the_program_sets_is_checked_and_named_in_the_error() {
        let builder = Config::builder(Defaults::new().bind("tcp://127.0.0.1:7000"))
            .ready_timeout(Duration::from_micros(10));
        let e = built(builder, &[]).unwrap_err();
        assert_eq!(e.exit_status(), 2);
        assert_eq!(
            e.to_string(),
            "ready_timeout (set by the program)=\"0.00001\" is invalid: expected a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5)"
        );
        let builder = Config::builder(Defaults::new())
            .bind([BindAddress::Unix(PathBuf::from("/run/app.sock"))])
            .allowed_networks(["10.0.0.0/8".parse().unwrap()]);
        let e = built(builder, &[]).unwrap_err();
        assert!(
            e.to_string().contains("cannot be used with a UNIX socket"),
            "{e}"
        );
    }

    #[test]
    fn a_variable_the_program_overrides_is_not_read() {
        let defaults = Defaults::new().bind("tcp://127.0.0.1:7000");
        let flag = BindAddress::Tcp {
            host: "127.0.0.1".into(),
            port: 7001,
        };
        let builder = Config::builder(defaults).bind([flag.clone()]);
        let config = built(builder, &[(PORT, "abc"), (BIND, "garbage")]).unwrap();
        assert_eq!(config.bind, vec![flag]);
        // BIND overrides PORT in the same way.
        let config = built(
            Config::builder(defaults),
            &[(BIND, "tcp://127.0.0.1:7002"), (PORT, "abc")],
        )
        .unwrap();
        assert_eq!(list(&config.bind), "tcp://127.0.0.1:7002");
        let command = StartCommand::Exec {
            program: PathBuf::from("/srv/app/server"),
            args: vec!["--port".into(), "7001".into()],
        };
        let builder = Config::builder(defaults).start_command(command.clone());
        let config = built(builder, &[(START_COMMAND, "FOO=1 ./x")]).unwrap();
        assert_eq!(config.start_command, command);
        // The program's own command line is checked as the variable's would be.
        let builder = Config::builder(defaults).start_command(StartCommand::Shell("./x 'a".into()));
        let e = built(builder, &[]).unwrap_err();
        assert_eq!(e.exit_status(), 2);
        assert!(
            e.to_string().starts_with("start_command (set by the program)=\"./x 'a\" is invalid: expected a program and its arguments, which the restart runs with exec that /bin/sh can read; a `'` quote in it is not closed"),
            "{e}"
        );
        // Where PORT is used, it is checked.
        let e = built(Config::builder(defaults), &[(PORT, "abc")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PORT=\"abc\" is invalid: expected a port number from 0 to 65535"
        );
    }

    #[test]
    fn the_programs_addresses_and_paths_are_kept_whole() {
        let defaults = Defaults::new();
        let comma = BindAddress::Unix(PathBuf::from("/run/a,b.sock"));
        let builder = Config::builder(defaults).bind([comma.clone()]);
        assert_eq!(built(builder, &[]).unwrap().bind, vec![comma]);
        let twice = [
            BindAddress::Tcp {
                host: "::1".into(),
                port: 80,
            },
            BindAddress::Tcp {
                host: "0:0:0:0:0:0:0:1".into(),
                port: 80,
            },
        ];
        let e = built(Config::builder(defaults).bind(twice), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bind (set by the program)=\"tcp://[::1]:80, tcp://[0:0:0:0:0:0:0:1]:80\" is invalid: expected each address once; \"tcp://[0:0:0:0:0:0:0:1]:80\" is \"tcp://[::1]:80\""
        );
        let spaced = BindAddress::Unix(PathBuf::from("/run/a.sock "));
        let builder = Config::builder(defaults).bind([spaced.clone()]);
        assert_eq!(built(builder, &[]).unwrap().bind, vec![spaced]);
        let not_utf8 =
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"/run/p\xff.pid");
        let builder = Config::builder(defaults)
            .bind([BindAddress::Unix(PathBuf::from("/run/a.sock"))])
            .pidfile(not_utf8);
        let e = built(builder, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pidfile (set by the program)=\"/run/p\u{FFFD}.pid\" is invalid: expected valid UTF-8 text"
        );
        let builder = Config::builder(defaults).bind([BindAddress::Unix(PathBuf::from(not_utf8))]);
        let e = built(builder, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bind (set by the program)=\"unix:///run/p\u{FFFD}.pid\" is invalid: expected addresses of UTF-8 text; \"unix:///run/p\u{FFFD}.pid\" is not one"
        );
    }

    #[test]
    fn reads_exactly_the_variables_of_the_key_table() {
        let asked = Mutex::new(BTreeSet::new());
        let lookup = |name: &str| {
            asked.lock().unwrap().insert(name.to_owned());
            None
        };
        let defaults = Defaults::new().bind("tcp://127.0.0.1:1");
        let own = StartCommand::Shell("./server".into());
        Config::from_lookup(defaults, &Code::default(), &lookup, Some(own)).unwrap();
        let table: BTreeSet<String> = KEYS
            .iter()
            .flat_map(|k| std::iter::once(k.env).chain(k.also.iter().copied()))
            .map(str::to_owned)
            .collect();
        assert_eq!(*asked.lock().unwrap(), table);
    }

    /// The text a literal stands for, as the attribute passes it on (and as the environment
    /// would give it).
    fn text_of(literal: &str) -> String {
        if let Some(items) = literal.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            return items
                .split(',')
                .map(|item| item.trim().trim_matches('"'))
                .collect::<Vec<_>>()
                .join(",");
        }
        literal.trim_matches('"').to_owned()
    }

    #[test]
    fn the_runtime_accepts_what_the_attribute_accepts() {
        for (name, literal, accepted) in grammar::SAMPLES {
            let key = key(name);
            let text: &'static str = Box::leak(text_of(literal).into_boxed_str());
            let index = KEYS.iter().position(|k| std::ptr::eq(k, key)).unwrap();
            let mut defaults = Defaults::new().bind("tcp://127.0.0.1:1");
            defaults.set_at(index, text);
            // TLS keys need their partner to be valid; the partner is fine in every row.
            let partner: &[(&str, &str)] = match *name {
                "tls_key" => &[("TLS_CERTIFICATE", "c.pem")],
                "tls_certificate"
                | "client_tls_certificate_ca"
                | "tls_version"
                | "tls_handshake_timeout" => &[("TLS_KEY", "k.pem"), ("TLS_CERTIFICATE", "c.pem")],
                _ => &[],
            };
            let from_literal = config(defaults, partner).is_ok();
            assert_eq!(from_literal, *accepted, "literal {name} = {literal}");
            let mut env = partner.to_vec();
            env.push((key.env, text));
            let from_env = config(Defaults::new().bind("tcp://127.0.0.1:1"), &env).is_ok();
            assert_eq!(from_env, *accepted, "{}={text}", key.env);
        }
    }

    #[test]
    fn the_semaphore_counts_what_max_connections_accepts() {
        assert_eq!(
            grammar::MAX_CONNECTIONS,
            tokio::sync::Semaphore::MAX_PERMITS
        );
    }

    fn config(defaults: Defaults, env: &[(&str, &str)]) -> Result<Config, Error> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let own = StartCommand::Exec {
            program: PathBuf::from("/srv/app/server"),
            args: vec![],
        };
        Config::from_lookup(
            defaults,
            &Code::default(),
            &move |name| {
                env.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| OsString::from(v))
            },
            Some(own),
        )
    }

    fn bind_of(defaults: Defaults, env: &[(&str, &str)]) -> String {
        list(&config(defaults, env).unwrap().bind)
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
            (&[(HEADER_READ_TIMEOUT, "0")], "HEADER_READ_TIMEOUT=\"0\""),
            (
                &[(HEADER_READ_TIMEOUT, "soon")],
                "HEADER_READ_TIMEOUT=\"soon\"",
            ),
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
        assert_eq!(
            config(d, &[]).unwrap().header_read_timeout(),
            DEFAULT_HEADER_READ_TIMEOUT
        );
        let c = config(d, &[(HEADER_READ_TIMEOUT, "2.5")]).unwrap();
        assert_eq!(c.header_read_timeout(), Duration::from_millis(2500));
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
    fn the_listeners_and_the_control_socket_fit_one_handoff_message() {
        let addresses = |n: u16| {
            (1..=n)
                .map(|port| format!("tcp://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let none = Defaults::new();
        let c = config(none, &[("BIND", &addresses(253))]).unwrap();
        assert_eq!((c.bind.len(), c.max_listeners()), (253, 253));
        let c = config(
            none,
            &[("BIND", &addresses(252)), ("CONTROL_SOCKET", "/run/a.ctl")],
        )
        .unwrap();
        assert_eq!(c.max_listeners(), 252);
        let error = config(
            none,
            &[("BIND", &addresses(253)), ("CONTROL_SOCKET", "/run/a.ctl")],
        )
        .unwrap_err();
        assert_eq!(error.exit_status(), 2);
        assert_eq!(
            error.to_string(),
            "BIND has 253 addresses and CONTROL_SOCKET=\"/run/a.ctl\" is set: a restart hands the listeners and the control socket over in one message, which carries at most 253 descriptors; use at most 252 addresses, or no control socket"
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
