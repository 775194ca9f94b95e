//! The configuration keys of [uninterruptible](https://docs.rs/uninterruptible) and the grammar of
//! their values: one table and one set of parsers, compiled into both the runtime (which reads
//! the environment) and the `#[server]` attribute (which checks its literals at compile time),
//! so that every value one accepts, the other accepts too.
//!
//! This crate is an implementation detail; use `uninterruptible`.

#![doc(hidden)]
#![warn(missing_docs)]

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::time::Duration;

/// The kind of literal a key takes in the attribute; in the environment every value is text.
///
/// More kinds may come with new keys: a `match` on it needs a `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Literal {
    /// A string literal.
    Str,
    /// A string of comma-separated items, or an array of string literals.
    List,
    /// A number of seconds, integer or decimal.
    Seconds,
    /// A whole number.
    Count,
    /// `true` or `false`.
    Bool,
}

/// One configuration key: a row of the key table.
///
/// Read-only: its fields can be read, but a `Key` cannot be built outside the table, and more
/// fields may come (a pattern on it needs `..`). The texts are the ones the documentation's
/// table and the configuration errors carry.
#[derive(Debug)]
#[non_exhaustive]
pub struct Key {
    /// The attribute key, e.g. `drain_timeout`.
    pub name: &'static str,
    /// The environment variable that overrides it, e.g. `DRAIN_TIMEOUT`.
    pub env: &'static str,
    /// Other variables that bear on it (`PORT` for `bind`, `RUST_LOG` for `log_level`).
    pub also: &'static [&'static str],
    /// The kind of literal the attribute takes for it.
    pub literal: Literal,
    /// The default, as the documentation's table says it (Markdown), e.g. `none` or
    /// `unlimited`.
    pub default: &'static str,
    /// What the value means, as documented (Markdown).
    pub meaning: &'static str,
    /// What is accepted, as said in errors and documentation, e.g. `a whole number from 1 to
    /// 65535`.
    pub accepted: &'static str,
    /// Whether a value, as text (the way the environment gives it; a list comma-separated), is
    /// accepted. The error is what is expected, as a configuration error says it after
    /// "expected": more precise than `accepted` where it can be (it names the item of a list
    /// that is wrong, or the length of a path that is too long).
    pub check: fn(&str) -> Result<(), String>,
}

/// A file path: any text that is not empty.
pub const PATH: &str = "a file path";
/// [`seconds`] with 0 ("at once"): what it takes, exactly (a shorter timer than a millisecond
/// fires at once, so that is refused rather than taken as 0).
pub const SECONDS_FROM_ZERO: &str =
    "0, or a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5)";
/// [`seconds`] from a millisecond: a shorter timer fires at once.
pub const SECONDS_FROM_A_MILLISECOND: &str =
    "a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5)";
/// The most seconds [`seconds`] takes.
const MAX_SECONDS: f64 = 999_999_999.0;
/// The longest path a UNIX socket address holds on Linux: `sun_path` is 108 bytes, the last of
/// them the terminating NUL. A longer path cannot be bound or connected to.
pub const MAX_SOCKET_PATH: usize = 107;
/// The most descriptors one handoff message carries (Linux's `SCM_MAX_FD`): every listener, and
/// the control socket when there is one, go to the new process in one message.
pub const MAX_HANDOFF_FDS: usize = 253;
/// [`bind`].
pub const BIND: &str = "tcp://host:port (e.g. tcp://127.0.0.1:6789 or tcp://[::1]:6789), unix:///absolute/path (a path of at most 107 bytes), or for datagrams udp://host:port or unixgram:///absolute/path";
/// [`socket_path`].
pub const SOCKET_PATH: &str =
    "a file path of at most 107 bytes (the longest a UNIX socket address holds)";
/// [`boolean`].
pub const BOOLEAN: &str = "true, false, 1, 0, yes or no";
/// [`networks`].
pub const NETWORKS: &str =
    "comma-separated networks such as 10.0.0.0/8, 2001:db8::/32 or 127.0.0.1";
/// [`tls_version`].
pub const TLS_VERSIONS: &str = "TLSv1_2 or TLSv1_3";
/// [`log_level`].
pub const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
/// [`command`].
pub const COMMAND: &str = "a program and its arguments, which the restart runs with exec";
/// The most connections tokio's semaphore counts (`Semaphore::MAX_PERMITS`).
pub const MAX_CONNECTIONS: usize = usize::MAX >> 3;
/// The longest listen queue `listen(2)` takes on Linux (the kernel then caps it at somaxconn).
pub const MAX_BACKLOG: u32 = 65535;

/// Every configuration key, in the order of the documentation: the table the attribute checks
/// its literals with, the runtime reads the environment with, and the documentation is
/// generated from.
pub static KEYS: &[Key] = &[
    Key {
        name: "bind",
        env: "BIND",
        also: &["PORT"],
        literal: Literal::List,
        default: "none",
        meaning: "one address or several (`[\"tcp://0.0.0.0:8080\", \"unix:///run/app.sock\"]`, comma-separated in `BIND`), all served by the handler (`udp://` and `unixgram://` ones by a datagram handler). `BIND` wins (`PORT` is then not read); else the literal, with `PORT` replacing the port of its tcp and udp addresses; else `tcp://0.0.0.0:$PORT`; else a config error. Each address once: one written two ways (`[::1]` and `[0:0:0:0:0:0:0:1]`, `127.0.0.1` and a name that resolves only to it, `/run//a.sock`) is a config error",
        accepted: BIND,
        check: |s| binds(s).map(drop),
    },
    Key {
        name: "start_command",
        env: "START_COMMAND",
        also: &[],
        literal: Literal::Str,
        default: "the binary's own path and arguments, as captured at startup",
        meaning: "command for the new copy, run as `/bin/sh -c 'exec <command>'`: a program and its arguments. Several commands (`;`, `&&`, `|`), a leading variable assignment, or a line the shell cannot read (an open quote, a redirection to nothing) is a config error",
        accepted: COMMAND,
        check: |s| command(s).map(drop),
    },
    Key {
        name: "pidfile",
        env: "PID_FILE",
        also: &[],
        literal: Literal::Str,
        default: "none",
        meaning: "written atomically (temp file + rename) once the process is serving",
        accepted: PATH,
        check: |s| path(s).map(drop),
    },
    Key {
        name: "log_path",
        env: "LOG_PATH",
        also: &[],
        literal: Literal::Str,
        default: "stdout",
        meaning: "append logs to this file instead",
        accepted: PATH,
        check: |s| path(s).map(drop),
    },
    Key {
        name: "log_level",
        env: "LOG_LEVEL",
        also: &["RUST_LOG"],
        literal: Literal::Str,
        default: "`info`",
        meaning: "`RUST_LOG` (a full tracing filter) wins over `LOG_LEVEL`",
        accepted: "one of trace, debug, info, warn, error, off",
        check: |s| log_level(s).map(drop),
    },
    Key {
        name: "tls_key",
        env: "TLS_KEY",
        also: &[],
        literal: Literal::Str,
        default: "none",
        meaning: "PEM file of the private key (PKCS#8, PKCS#1 or SEC1); with `tls_certificate`, enables TLS",
        accepted: PATH,
        check: |s| path(s).map(drop),
    },
    Key {
        name: "tls_certificate",
        env: "TLS_CERTIFICATE",
        also: &[],
        literal: Literal::Str,
        default: "none",
        meaning: "PEM file of the certificate, optionally followed by its chain; with `tls_key`, enables TLS",
        accepted: PATH,
        check: |s| path(s).map(drop),
    },
    Key {
        name: "tls_version",
        env: "TLS_VERSION",
        also: &[],
        literal: Literal::Str,
        default: "`TLSv1_2`",
        meaning: "minimum version: `TLSv1_2` (offers 1.2 and 1.3) or `TLSv1_3`; `TLSv1_1` is refused (RFC 8996)",
        accepted: TLS_VERSIONS,
        check: |s| tls_version(s).map(drop),
    },
    Key {
        name: "tls_handshake_timeout",
        env: "TLS_HANDSHAKE_TIMEOUT",
        also: &[],
        literal: Literal::Seconds,
        default: "`10`",
        meaning: "seconds a client has to finish the TLS handshake",
        accepted: SECONDS_FROM_A_MILLISECOND,
        check: |s| seconds(s, false).map(drop),
    },
    Key {
        name: "verify_client_tls_certificate",
        env: "VERIFY_CLIENT_TLS_CERTIFICATE",
        also: &[],
        literal: Literal::Bool,
        default: "`false`",
        meaning: "`true` needs `client_tls_certificate_ca`; an explicit `false` turns client certificates off even when a CA is set (logged as a warning)",
        accepted: BOOLEAN,
        check: |s| boolean(s).map(drop),
    },
    Key {
        name: "client_tls_certificate_ca",
        env: "CLIENT_TLS_CERTIFICATE_CA",
        also: &[],
        literal: Literal::Str,
        default: "none",
        meaning: "PEM file of the CA that signs client certificates; clients must then present one",
        accepted: PATH,
        check: |s| path(s).map(drop),
    },
    Key {
        name: "allowed_networks",
        env: "ALLOWED_NETWORKS",
        also: &[],
        literal: Literal::List,
        default: "all allowed",
        meaning: "CIDRs or bare addresses: `\"10.0.0.0/8, ::1\"` or `[\"10.0.0.0/8\", \"::1\"]` in the attribute, comma-separated in the environment; TCP only",
        accepted: NETWORKS,
        check: |s| networks(s).map(drop),
    },
    Key {
        name: "drain_timeout",
        env: "DRAIN_TIMEOUT",
        also: &[],
        literal: Literal::Seconds,
        default: "none (wait)",
        meaning: "seconds a stopping or retiring process waits for open connections",
        accepted: SECONDS_FROM_ZERO,
        check: |s| seconds(s, true).map(drop),
    },
    Key {
        name: "header_read_timeout",
        env: "HEADER_READ_TIMEOUT",
        also: &[],
        literal: Literal::Seconds,
        default: "`10`",
        meaning: "HTTP services (feature `http`): seconds a client has to send a request's head (a connection that sends nothing, or an idle HTTP/1.1 keep-alive one, is closed after it); once the process drains, every request still arriving, head and body, must have arrived this long after the drain began",
        accepted: SECONDS_FROM_A_MILLISECOND,
        check: |s| seconds(s, false).map(drop),
    },
    Key {
        name: "ready_timeout",
        env: "READY_TIMEOUT",
        also: &[],
        literal: Literal::Seconds,
        default: "`60`",
        meaning: "seconds an old process waits for the new one to report ready",
        accepted: SECONDS_FROM_A_MILLISECOND,
        check: |s| seconds(s, false).map(drop),
    },
    Key {
        name: "max_connections",
        env: "MAX_CONNECTIONS",
        also: &[],
        literal: Literal::Count,
        default: "unlimited",
        meaning: "connections served at once; beyond it the process stops accepting (the kernel queues new clients)",
        accepted: "a whole number from 1 to 2305843009213693951",
        check: |s| count(s, 1..=MAX_CONNECTIONS).map(drop),
    },
    Key {
        name: "backlog",
        env: "BACKLOG",
        also: &[],
        literal: Literal::Count,
        default: "`1024`",
        meaning: "listen queue length of the sockets this process binds, capped by the kernel's `net.core.somaxconn`; a socket taken over keeps its queue",
        accepted: "a whole number from 1 to 65535",
        check: |s| count(s, 1..=MAX_BACKLOG).map(drop),
    },
    Key {
        name: "supervise",
        env: "SUPERVISE",
        also: &[],
        literal: Literal::Bool,
        default: "`false`",
        meaning: "supervised mode, for containers and supervisors that follow one pid: the first process stays as a small supervisor that holds the sockets, runs the serving process, restarts it on `USR1` and starts it again if it dies; its pid never changes",
        accepted: BOOLEAN,
        check: |s| boolean(s).map(drop),
    },
    Key {
        name: "control_socket",
        env: "CONTROL_SOCKET",
        also: &[],
        literal: Literal::Str,
        default: "none",
        meaning: "path of a UNIX socket (mode 0600) answering `restart` (with the outcome) and `status`, one line per request",
        accepted: SOCKET_PATH,
        check: |s| socket_path(s).map(drop),
    },
];

/// The table of keys as Markdown, as the README and the attribute's documentation carry it.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| attribute key | environment | default | accepted | meaning |\n|---|---|---|---|---|\n",
    );
    for key in KEYS {
        let variables: Vec<String> = std::iter::once(key.env)
            .chain(key.also.iter().copied())
            .map(|v| format!("`{v}`"))
            .collect();
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            key.name,
            variables.join(", "),
            key.default,
            // Brackets outside code would be read as links.
            key.accepted.replace('[', "\\[").replace(']', "\\]"),
            key.meaning
        ));
    }
    table
}

/// The key of this attribute name.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// How the attribute writes `key`, for an error about a literal of the wrong kind, e.g.
/// `drain_timeout = 30 (seconds)`. Here rather than in the attribute so that a new kind of
/// [`Literal`] cannot be left without one.
pub fn literal_example(key: &Key) -> String {
    let name = key.name;
    match key.literal {
        Literal::Str => format!("{name} = \"...\""),
        Literal::List => format!("{name} = \"...\" or {name} = [\"...\", \"...\"]"),
        Literal::Seconds => format!("{name} = 30 (seconds)"),
        Literal::Count => format!("{name} = 1000"),
        Literal::Bool => format!("{name} = true"),
    }
}

/// A listening address as written: `tcp://host:port`, `tcp://[v6]:port`, `unix:///path`, and
/// for datagrams `udp://host:port`, `udp://[v6]:port` or `unixgram:///path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A host (an IP address, IPv6 without brackets, or a name) and a port.
    Tcp(String, u16),
    /// An absolute path.
    Unix(String),
    /// A UDP host and port, as [`Address::Tcp`].
    Udp(String, u16),
    /// An absolute path of a UNIX datagram socket.
    UnixDatagram(String),
}

impl Address {
    /// Whether both name one socket, however written: an IP address in any of its spellings
    /// (`[::1]` and `[0:0:0:0:0:0:0:1]`; an IPv4-mapped IPv6 address and the IPv4 one), a host
    /// name in any case, a path with `//` or `/./` in it. Names that resolve alike (`localhost`)
    /// are found when they are bound.
    pub fn same_socket(&self, other: &Address) -> bool {
        match (self, other) {
            (Address::Tcp(a, p), Address::Tcp(b, q)) | (Address::Udp(a, p), Address::Udp(b, q)) => {
                p == q && host_identity(a) == host_identity(b)
            }
            (Address::Unix(a), Address::Unix(b))
            | (Address::UnixDatagram(a), Address::UnixDatagram(b)) => {
                path_identity(a) == path_identity(b)
            }
            _ => false,
        }
    }
}

/// An IP address in one spelling (IPv4-mapped IPv6 as IPv4), or a host name in lower case.
fn host_identity(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// An absolute path's components, without empty ones and `.` (`..` is kept: a symbolic link
/// may stand before it).
fn path_identity(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// The address as written in `BIND`, IPv6 hosts in brackets.
impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host_port =
            |f: &mut std::fmt::Formatter<'_>, scheme, host: &str, port| match host.contains(':') {
                true => write!(f, "{scheme}[{host}]:{port}"),
                false => write!(f, "{scheme}{host}:{port}"),
            };
        match self {
            Address::Tcp(host, port) => host_port(f, "tcp://", host, port),
            Address::Udp(host, port) => host_port(f, "udp://", host, port),
            Address::Unix(path) => write!(f, "unix://{path}"),
            Address::UnixDatagram(path) => write!(f, "unixgram://{path}"),
        }
    }
}

/// `tcp://host:port`, `tcp://[v6]:port`, `unix:///absolute/path`, `udp://host:port`,
/// `udp://[v6]:port` or `unixgram:///absolute/path`.
pub fn bind(s: &str) -> Result<Address, String> {
    let err = || BIND.to_owned();
    for (scheme, make) in [
        ("unix://", Address::Unix as fn(String) -> Address),
        ("unixgram://", Address::UnixDatagram),
    ] {
        if let Some(path) = s.strip_prefix(scheme) {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(err());
            }
            if path.len() > MAX_SOCKET_PATH {
                return Err(too_long(path));
            }
            return Ok(make(path.to_owned()));
        }
    }
    let (rest, make) = match (s.strip_prefix("tcp://"), s.strip_prefix("udp://")) {
        (Some(rest), _) => (rest, Address::Tcp as fn(String, u16) -> Address),
        (_, Some(rest)) => (rest, Address::Udp as fn(String, u16) -> Address),
        _ => return Err(err()),
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(err)?;
    let port = port.parse::<u16>().map_err(|_| err())?;
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.strip_suffix(']').ok_or_else(err)?;
            if let Some((_, zone)) = v6.split_once('%') {
                return Err(format!(
                    "{BIND}, with an IPv6 address that names no zone: a scoped address (%{zone}) is not supported; bind to [::] and restrict clients with ALLOWED_NETWORKS"
                ));
            }
            v6.parse::<Ipv6Addr>().map_err(|_| err())?;
            v6
        }
        None if host.is_empty() || host.contains([':', '/', '[', ']']) => return Err(err()),
        None => host,
    };
    Ok(make(host.to_owned(), port))
}

/// What is wrong with a UNIX socket path longer than [`MAX_SOCKET_PATH`].
fn too_long(path: &str) -> String {
    format!(
        "a UNIX socket path of at most {MAX_SOCKET_PATH} bytes (the longest a socket address holds); this one has {}",
        path.len()
    )
}

/// One address or several, comma-separated, each said once; no more than a restart can hand
/// over ([`MAX_HANDOFF_FDS`]).
pub fn binds(s: &str) -> Result<Vec<Address>, String> {
    let mut addresses = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        addresses.push(bind(item).map_err(|expected| format!("{expected}; {item:?} is not one"))?);
    }
    bind_list(addresses)
}

/// A list of addresses as a whole: at least one, each once, and no more than a restart hands
/// over in one message.
pub fn bind_list(addresses: Vec<Address>) -> Result<Vec<Address>, String> {
    if addresses.is_empty() {
        return Err(BIND.to_owned());
    }
    for (i, address) in addresses.iter().enumerate() {
        if let Some(earlier) = addresses[..i].iter().find(|a| a.same_socket(address)) {
            let text = address.to_string();
            return Err(match earlier == address {
                true => format!("each address once; {text:?} is there twice"),
                false => format!("each address once; {text:?} is {:?}", earlier.to_string()),
            });
        }
    }
    if addresses.len() > MAX_HANDOFF_FDS {
        return Err(format!(
            "at most {MAX_HANDOFF_FDS} addresses (a restart hands every listener over in one message, which carries at most {MAX_HANDOFF_FDS} descriptors); there are {}",
            addresses.len()
        ));
    }
    Ok(addresses)
}

/// A port number, for `PORT`.
pub fn port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse()
        .map_err(|_| "a port number from 0 to 65535".to_owned())
}

/// Any text that is not empty (surrounding spaces are not part of it).
pub fn path(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(PATH.to_owned());
    }
    Ok(s.to_owned())
}

/// A UNIX socket's path: [`path`], no longer than a socket address holds.
pub fn socket_path(s: &str) -> Result<String, String> {
    let path = path(s).map_err(|_| SOCKET_PATH.to_owned())?;
    if path.len() > MAX_SOCKET_PATH {
        return Err(too_long(&path));
    }
    Ok(path)
}

/// Seconds, decimal allowed, from 0.001 to 999999999, and 0 ("at once") with `zero_ok`:
/// exactly the range the message states.
pub fn seconds(s: &str, zero_ok: bool) -> Result<Duration, String> {
    let expected = if zero_ok {
        SECONDS_FROM_ZERO
    } else {
        SECONDS_FROM_A_MILLISECOND
    };
    let secs: f64 = s.trim().parse().map_err(|_| expected.to_owned())?;
    let ok = secs.is_finite() && (secs >= 0.001 || zero_ok && secs == 0.0) && secs <= MAX_SECONDS;
    if !ok {
        return Err(expected.to_owned());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A whole number in `range`.
pub fn count<T>(s: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    s.trim()
        .parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("a whole number from {} to {}", range.start(), range.end()))
}

/// `true`, `false`, `1`, `0`, `yes` or `no`, in any case.
pub fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(BOOLEAN.to_owned()),
    }
}

/// One of [`LEVELS`], in any case; returned in lower case.
pub fn log_level(s: &str) -> Result<String, String> {
    let level = s.trim().to_ascii_lowercase();
    if LEVELS.contains(&level.as_str()) {
        return Ok(level);
    }
    Err(format!("one of {}", LEVELS.join(", ")))
}

/// The lowest TLS version offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// 1.2 and 1.3.
    Tls12,
    /// 1.3 only.
    Tls13,
}

/// `TLSv1_2` or `TLSv1_3`; older versions are refused with the reason.
pub fn tls_version(s: &str) -> Result<TlsVersion, String> {
    match s.trim() {
        "TLSv1_2" => Ok(TlsVersion::Tls12),
        "TLSv1_3" => Ok(TlsVersion::Tls13),
        "TLSv1_1" | "TLSv1" | "TLSv1_0" | "SSLv3" => Err(format!(
            "{TLS_VERSIONS} (TLS 1.0 and 1.1 are deprecated by RFC 8996 and not implemented by rustls)"
        )),
        _ => Err(TLS_VERSIONS.to_owned()),
    }
}

/// One network: a CIDR, or a bare address (a /32 or /128).
pub fn network(item: &str) -> Result<IpNet, String> {
    let item = item.trim();
    item.parse::<IpNet>()
        .ok()
        .or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from))
        .ok_or_else(|| format!("{NETWORKS}; {item:?} is neither"))
}

/// Comma-separated networks, at least one.
pub fn networks(s: &str) -> Result<Vec<IpNet>, String> {
    let networks = s
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(network)
        .collect::<Result<Vec<_>, _>>()?;
    if networks.is_empty() {
        return Err(NETWORKS.to_owned());
    }
    Ok(networks)
}

/// What `/bin/sh -c 'exec <command>'` can run: a program and its arguments. A leading `exec` is
/// taken off (the restart adds it). A command that starts with a variable assignment or a shell
/// builtin, or chains commands, can never be `exec`ed.
pub fn command(s: &str) -> Result<String, String> {
    let trimmed = s.trim();
    let line = match trimmed.strip_prefix("exec") {
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
        _ => trimmed,
    };
    let refuse = |why: &str| {
        Err(format!(
            "{COMMAND}; {why}: put the steps in a script that ends with `exec <server>` and name the script"
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
    match lex(line) {
        Some(Lexed::Chain(op)) => refuse(&format!("it chains commands with `{op}`")),
        Some(Lexed::Syntax(why)) => Err(format!(
            "{COMMAND} that /bin/sh can read; {why}, so every restart would fail"
        )),
        None => Ok(line.to_owned()),
    }
}

/// What a restart's `/bin/sh -c 'exec <line>'` would make of a command line, where it is not
/// one program run: the first problem found.
#[derive(Debug, PartialEq, Eq)]
enum Lexed {
    /// `&&`, `||`, `;`, `|` or `&` outside quotes: several commands.
    Chain(&'static str),
    /// What the shell would refuse to read, so that every restart would fail.
    Syntax(String),
}

/// Reads `line` as `/bin/sh` does, as far as telling a syntax error goes: quotes (`'`, `"`, and
/// a backslash in them), backslashes, `` ` ``, `$(...)`, `${...}`, redirections and parentheses.
/// (A trailing backslash is a character of the last word to the shell, not an error.)
fn lex(line: &str) -> Option<Lexed> {
    let syntax = |why: String| Some(Lexed::Syntax(why));
    let mut chars = line.chars().peekable();
    // A redirection waiting for the word it redirects to.
    let mut redirect = None;
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => continue,
            '\\' => {
                chars.next();
            }
            '\'' if !chars.any(|d| d == '\'') => {
                return syntax("a `'` quote in it is not closed".into());
            }
            '"' | '`' if !closed(&mut chars, c) => {
                return syntax(format!("a `{c}` quote in it is not closed"));
            }
            '$' if chars.peek() == Some(&'(') || chars.peek() == Some(&'{') => {
                let open = chars.next().unwrap_or('(');
                let close = if open == '(' { ')' } else { '}' };
                if !closed_nested(&mut chars, open, close) {
                    return syntax(format!("a `${open}` in it is not closed with `{close}`"));
                }
            }
            '(' | ')' => return syntax(format!("it has a `{c}` outside quotes")),
            ';' => return Some(Lexed::Chain(";")),
            '&' if chars.next_if_eq(&'&').is_some() => return Some(Lexed::Chain("&&")),
            '|' if chars.next_if_eq(&'|').is_some() => return Some(Lexed::Chain("||")),
            '&' => return Some(Lexed::Chain("&")),
            '|' => return Some(Lexed::Chain("|")),
            '>' | '<' => {
                if let Some(before) = redirect {
                    return syntax(format!("its `{before}` redirects to nothing"));
                }
                while chars
                    .next_if(|d| matches!(d, '>' | '<' | '&' | '|'))
                    .is_some()
                {}
                redirect = Some(c);
                continue;
            }
            _ => {}
        }
        redirect = None;
    }
    redirect.and_then(|before| syntax(format!("its `{before}` redirects to nothing")))
}

/// Consumes up to the `quote` that closes a `"` or `` ` `` string (a backslash escapes the next
/// character; in `"`, a `$(...)`, `${...}` or `` `...` `` is read whole); whether there was one.
fn closed(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, quote: char) -> bool {
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            c if c == quote => return true,
            '$' if quote == '"' && matches!(chars.peek(), Some('(' | '{')) => {
                let open = chars.next().unwrap_or('(');
                let close = if open == '(' { ')' } else { '}' };
                if !closed_nested(chars, open, close) {
                    return false;
                }
            }
            '`' if quote == '"' && !closed(chars, '`') => return false,
            _ => {}
        }
    }
    false
}

/// Consumes up to the `close` that ends a `$(` or `${` (nested pairs and quotes inside count);
/// whether there was one.
fn closed_nested(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    open: char,
    close: char,
) -> bool {
    let mut depth = 1;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if !chars.any(|d| d == '\'') => return false,
            '"' | '`' if !closed(chars, c) => return false,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Values for every key, as the attribute writes them (Rust literal tokens), with whether they
/// are accepted. The attribute's tests and the runtime's tests both check every row, so the two
/// cannot disagree on any of them.
pub const SAMPLES: &[(&str, &str, bool)] = &[
    ("bind", r#""tcp://127.0.0.1:6789""#, true),
    ("bind", r#""tcp://[::1]:0""#, true),
    ("bind", r#""tcp://localhost:80""#, true),
    ("bind", r#""unix:///run/app.sock""#, true),
    ("bind", r#""tcp://a]b:80""#, false),
    ("bind", r#""tcp://127.0.0.1""#, false),
    ("bind", r#""udp://0.0.0.0:53""#, true),
    ("bind", r#""udp://0.0.0.0""#, false),
    ("bind", r#""unix://relative""#, false),
    (
        "bind",
        r#"["tcp://127.0.0.1:80", "tcp://[::1]:80", "unix:///run/a.sock"]"#,
        true,
    ),
    ("bind", r#""tcp://127.0.0.1:80, unix:///run/a.sock""#, true),
    (
        "bind",
        r#"["tcp://127.0.0.1:80", "tcp://127.0.0.1:80"]"#,
        false,
    ),
    // One socket written two ways is there twice too; TCP and UDP on one port are two.
    (
        "bind",
        r#""tcp://[::1]:80,tcp://[0:0:0:0:0:0:0:1]:80""#,
        false,
    ),
    (
        "bind",
        r#""tcp://[::ffff:127.0.0.1]:80,tcp://127.0.0.1:80""#,
        false,
    ),
    ("bind", r#""tcp://LocalHost:80,tcp://localhost:80""#, false),
    (
        "bind",
        r#""unix:///run/a.sock,unix:///run//./a.sock""#,
        false,
    ),
    ("bind", r#""tcp://127.0.0.1:80,udp://127.0.0.1:80""#, true),
    ("bind", r#""tcp://[fe80::1%lo]:80""#, false),
    ("bind", r#"["tcp://127.0.0.1:80", "udp://x:1"]"#, true),
    ("bind", r#"["tcp://127.0.0.1:80", "sctp://x:1"]"#, false),
    ("bind", r#""unixgram:///run/a.sock""#, true),
    // The longest path a UNIX socket address holds, and one byte more.
    (
        "bind",
        r#""unix:///ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss""#,
        true,
    ),
    (
        "bind",
        r#""unix:///sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss""#,
        false,
    ),
    ("start_command", r#""/srv/app/server --flag""#, true),
    ("start_command", r#""exec ./server""#, true),
    ("start_command", r#""RUST_LOG=debug ./server""#, false),
    ("start_command", r#""cd /srv && ./server""#, false),
    ("start_command", r#""./server 'unterminated""#, false),
    ("start_command", r#""./server > /var/log/server.log""#, true),
    ("pidfile", r#""/run/app.pid""#, true),
    ("pidfile", r#""  ""#, false),
    ("log_path", r#""app.log""#, true),
    ("log_level", r#""DEBUG""#, true),
    ("log_level", r#""off""#, true),
    ("log_level", r#""loud""#, false),
    ("tls_key", r#""key.pem""#, true),
    ("tls_certificate", r#""cert.pem""#, true),
    ("tls_version", r#""TLSv1_3""#, true),
    ("tls_version", r#""TLSv1_1""#, false),
    ("tls_version", r#""tls1.2""#, false),
    ("tls_handshake_timeout", "2.5", true),
    ("tls_handshake_timeout", "0.0004", false),
    ("verify_client_tls_certificate", "false", true),
    ("client_tls_certificate_ca", r#""ca.pem""#, true),
    ("allowed_networks", r#""10.0.0.0/8, ::1""#, true),
    (
        "allowed_networks",
        r#"["192.0.2.7", "2001:db8::/32"]"#,
        true,
    ),
    ("allowed_networks", r#""10.0.0.0/33""#, false),
    ("allowed_networks", r#"["10.0.0.0/8", "banana"]"#, false),
    ("drain_timeout", "0", true),
    ("drain_timeout", "30", true),
    ("drain_timeout", "0.0005", false),
    ("drain_timeout", "999999999", true),
    ("drain_timeout", "999999999.5", false),
    ("drain_timeout", "1000000000", false),
    ("header_read_timeout", "10", true),
    ("header_read_timeout", "0.5", true),
    ("header_read_timeout", "0", false),
    ("ready_timeout", "0.001", true),
    ("ready_timeout", "0", false),
    ("max_connections", "1", true),
    ("max_connections", "2305843009213693951", true),
    ("max_connections", "0", false),
    ("max_connections", "2305843009213693952", false),
    ("backlog", "65535", true),
    ("backlog", "65536", false),
    ("supervise", "true", true),
    ("supervise", "sometimes", false),
    ("control_socket", r#""/run/app.ctl""#, true),
    ("control_socket", r#""  ""#, false),
    (
        "control_socket",
        r#""/ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss""#,
        true,
    ),
    (
        "control_socket",
        r#""/sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss""#,
        false,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_documented() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
        for key in KEYS {
            assert_eq!(
                key.env,
                key.name.to_ascii_uppercase().replace("PIDFILE", "PID_FILE")
            );
            assert!(!key.meaning.is_empty() && !key.accepted.is_empty());
        }
    }

    #[test]
    fn addresses() {
        for s in [
            "tcp://127.0.0.1:6789",
            "tcp://[::1]:80",
            "tcp://localhost:0",
            "unix:///tmp/x.sock",
            "udp://0.0.0.0:53",
            "udp://[::]:53",
            "unixgram:///tmp/x.sock",
        ] {
            assert!(bind(s).is_ok(), "{s}");
        }
        assert_eq!(bind("udp://[::1]:53"), Ok(Address::Udp("::1".into(), 53)));
        assert_eq!(
            bind("unixgram:///run/log"),
            Ok(Address::UnixDatagram("/run/log".into()))
        );
        for s in [
            "",
            "tcp://a]b:80",
            "tcp://[::1:80",
            "tcp://::1:80",
            "tcp://127.0.0.1",
            "tcp://x:99999",
            "unix://relative",
            "unix:///",
            "udp://127.0.0.1",
            "unixgram://relative",
            "sctp://127.0.0.1:80",
        ] {
            assert_eq!(bind(s), Err(BIND.to_owned()), "{s}");
        }
    }

    #[test]
    fn the_accepted_text_states_the_limits_the_parsers_apply() {
        assert!(BIND.contains(&format!("at most {MAX_SOCKET_PATH} bytes")));
        assert!(SOCKET_PATH.contains(&format!("at most {MAX_SOCKET_PATH} bytes")));
        let most = format!("to {MAX_SECONDS}");
        assert!(SECONDS_FROM_ZERO.contains(&most) && SECONDS_FROM_A_MILLISECOND.contains(&most));
    }

    #[test]
    fn seconds_take_exactly_the_range_they_state() {
        for s in ["0", "0.001", "30", "999999999"] {
            assert!(seconds(s, true).is_ok(), "{s}");
        }
        // Between 0 and a millisecond a timer would fire at once, not when asked.
        for s in ["0.0005", "-0.5", "999999999.5", "1e9", "inf", "NaN", "soon"] {
            assert_eq!(seconds(s, true), Err(SECONDS_FROM_ZERO.to_owned()), "{s}");
        }
        assert!(seconds("0.001", false).is_ok() && seconds("999999999", false).is_ok());
        for s in ["0", "0.0005", "999999999.5"] {
            assert_eq!(
                seconds(s, false),
                Err(SECONDS_FROM_A_MILLISECOND.to_owned()),
                "{s}"
            );
        }
    }

    #[test]
    fn socket_paths_fit_a_socket_address() {
        let longest = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
        assert!(bind(&format!("unix://{longest}")).is_ok());
        assert_eq!(socket_path(&longest), Ok(longest.clone()));
        let over = format!("{longest}s");
        let expected = "a UNIX socket path of at most 107 bytes (the longest a socket address holds); this one has 108";
        assert_eq!(bind(&format!("unix://{over}")), Err(expected.to_owned()));
        assert_eq!(socket_path(&over), Err(expected.to_owned()));
        assert_eq!(socket_path("  "), Err(SOCKET_PATH.to_owned()));
    }

    #[test]
    fn no_more_addresses_than_a_restart_hands_over() {
        let list = |n: u16| {
            (1..=n)
                .map(|port| format!("tcp://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(binds(&list(253)).unwrap().len(), MAX_HANDOFF_FDS);
        let error = binds(&list(254)).unwrap_err();
        assert!(error.starts_with("at most 253 addresses"), "{error}");
        assert!(error.ends_with("there are 254"), "{error}");
    }

    #[test]
    fn commands() {
        assert_eq!(command("exec ./server --x").unwrap(), "./server --x");
        assert!(command("./server 'a;b' \"c && d\"").is_ok());
        for (line, why) in [
            ("A=1 ./server", "variable assignment"),
            ("cd /srv && ./server", "builtin `cd`"),
            ("./a; ./b", "`;`"),
            ("./a | logger", "`|`"),
            ("./a & ", "`&`"),
            ("  ", "it is empty"),
        ] {
            let error = command(line).unwrap_err();
            assert!(error.contains(why), "{line}: {error}");
        }
    }
}

#[cfg(test)]
mod shell {
    use super::*;

    /// Whether `/bin/sh -n` (parse only) reads `exec <line>` without a syntax error.
    fn sh_reads(line: &str) -> bool {
        std::process::Command::new("/bin/sh")
            .arg("-n")
            .arg("-c")
            .arg(format!("exec {line}"))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("/bin/sh runs")
            .success()
    }

    #[test]
    fn a_command_is_refused_exactly_where_sh_cannot_read_it() {
        let lines = [
            "./server --flag",
            "./server 'a b' \"c \\\" d\" \\' e",
            "./server \"$HOME\" $(dirname \"$0\") ${PORT:-80} `id -u`",
            "./server > /var/log/app.log 2>&1",
            "./server >> log <input",
            "./server # a comment",
            "'unterminated",
            "./server 'a",
            "./server \"a",
            "./server `id",
            "./server \\",
            "./server >",
            "./server > >",
            "./server 2>&",
            "./server $(dirname",
            "./server ${PORT",
            "./server (x)",
            "./server x)",
            "./server \"$(echo \")\")\"",
            "./server \"$(echo \"(\")\"",
            "./server \"$(printf '%s' \")\")\"",
            "./server \"${X:-)}\" \"`echo \\\")\\\"`\"",
            "./server \"$(echo \")\"",
        ];
        for line in lines {
            let ours = lex(line).is_none();
            assert_eq!(ours, sh_reads(line), "{line:?}: {:?}", lex(line));
            if !ours {
                let error = command(line).unwrap_err();
                assert!(error.contains("that /bin/sh can read"), "{line}: {error}");
                assert!(error.ends_with("so every restart would fail"), "{error}");
            }
        }
    }
}
