//! The `#[server]` attribute of [uninterruptible](https://docs.rs/uninterruptible).
//!
//! Depend on `uninterruptible` and write `#[uninterruptible::server(...)]`; this crate is an
//! implementation detail and its items are re-exported there.

#![warn(missing_docs)]

mod args;
mod check;
mod defaults;
mod expand;
mod shape;

use proc_macro::TokenStream;

/// Turns an `async fn(uninterruptible::Stream)` into a server binary with zero-downtime restarts.
///
/// ```ignore
/// // (Compiled as a test in the `uninterruptible` crate, which this crate cannot depend on.)
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// #[uninterruptible::server(bind = "tcp://127.0.0.1:6789", drain_timeout = 30)]
/// async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
///     let (reader, mut writer) = tokio::io::split(stream);
///     let mut line = String::new();
///     BufReader::new(reader).read_line(&mut line).await?;
///     writer.write_all(line.as_bytes()).await
/// }
/// ```
///
/// The function stays as written; the attribute adds a `main` that reads the configuration,
/// starts a multi-thread tokio runtime and serves each connection on its own task. The function
/// is an `async fn` taking one `uninterruptible::Stream` and returning `std::io::Result<()>` or
/// `()`; an error or a panic ends only its own connection. Mistakes are compile errors on the
/// offending token. If you depend on the runtime crate under another name, say so with
/// `crate = "that_name"`.
///
/// # Handler shapes, and the keys that name code
///
/// The argument's type chooses the shape: `uninterruptible::Stream` (a task per connection),
/// `uninterruptible::Incoming` (the whole listener), `uninterruptible::Datagram` (a task per
/// datagram, for `udp://` and `unixgram://` listeners), or no argument at all (an HTTP or gRPC
/// service, built once per process; feature `http`). Beside the configuration keys below:
/// - `init = "setup"`: an `async fn() -> Result<State, E>` run before the process is ready; the
///   handler takes its `std::sync::Arc<State>` as a second argument;
/// - `save = "save"` (with `init`): a `fn(&State) -> uninterruptible::Handover` whose result the
///   next process's `init` receives, then an `async fn(Option<Handover>) -> Result<State, E>`;
/// - `datagrams = "answer"`: an `async fn(uninterruptible::Datagram)` beside a handler of
///   connections, for the datagram listeners among them.
///
/// # Configuration
///
/// Literals in the attribute are defaults; the environment overrides them, so operations change
/// any of them without a rebuild (an empty variable counts as unset). Every value is checked
/// before anything is bound, with the same grammar here at compile time and at startup; a bad
/// one ends the process with exit status 2 and one line naming the variable or key, the value
/// and what is accepted.
///
/// <!-- keys: generated from the key table (uninterruptible-grammar); tests/tests/docs.rs checks it -->
/// | attribute key | environment | default | accepted | meaning |
/// |---|---|---|---|---|
/// | `bind` | `BIND`, `PORT` | none | tcp://host:port (e.g. tcp://127.0.0.1:6789 or tcp://\[::1\]:6789), unix:///absolute/path (a path of at most 107 bytes), or for datagrams udp://host:port or unixgram:///absolute/path | one address or several (`["tcp://0.0.0.0:8080", "unix:///run/app.sock"]`, comma-separated in `BIND`), all served by the handler (`udp://` and `unixgram://` ones by a datagram handler). `BIND` wins (`PORT` is then not read); else the literal, with `PORT` replacing the port of its tcp and udp addresses; else `tcp://0.0.0.0:$PORT`; else a config error. Each address once: one written two ways (`[::1]` and `[0:0:0:0:0:0:0:1]`, `127.0.0.1` and a name that resolves only to it, `/run//a.sock`) is a config error |
/// | `start_command` | `START_COMMAND` | the binary's own path and arguments, as captured at startup | a program and its arguments, which the restart runs with exec | command for the new copy, run as `/bin/sh -c 'exec <command>'`: a program and its arguments. Several commands (`;`, `&&`, `|`), a leading variable assignment, or a line the shell cannot read (an open quote, a redirection to nothing) is a config error |
/// | `pidfile` | `PID_FILE` | none | a file path | written atomically (temp file + rename) once the process is serving |
/// | `log_path` | `LOG_PATH` | stdout | a file path | append logs to this file instead |
/// | `log_level` | `LOG_LEVEL`, `RUST_LOG` | `info` | one of trace, debug, info, warn, error, off | `RUST_LOG` (a full tracing filter) wins over `LOG_LEVEL` |
/// | `tls_key` | `TLS_KEY` | none | a file path | PEM file of the private key (PKCS#8, PKCS#1 or SEC1); with `tls_certificate`, enables TLS |
/// | `tls_certificate` | `TLS_CERTIFICATE` | none | a file path | PEM file of the certificate, optionally followed by its chain; with `tls_key`, enables TLS |
/// | `tls_version` | `TLS_VERSION` | `TLSv1_2` | TLSv1_2 or TLSv1_3 | minimum version: `TLSv1_2` (offers 1.2 and 1.3) or `TLSv1_3`; `TLSv1_1` is refused (RFC 8996) |
/// | `tls_handshake_timeout` | `TLS_HANDSHAKE_TIMEOUT` | `10` | a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5) | seconds a client has to finish the TLS handshake |
/// | `verify_client_tls_certificate` | `VERIFY_CLIENT_TLS_CERTIFICATE` | `false` | true, false, 1, 0, yes or no | `true` needs `client_tls_certificate_ca`; an explicit `false` turns client certificates off even when a CA is set (logged as a warning) |
/// | `client_tls_certificate_ca` | `CLIENT_TLS_CERTIFICATE_CA` | none | a file path | PEM file of the CA that signs client certificates; clients must then present one |
/// | `allowed_networks` | `ALLOWED_NETWORKS` | all allowed | comma-separated networks such as 10.0.0.0/8, 2001:db8::/32 or 127.0.0.1 | CIDRs or bare addresses: `"10.0.0.0/8, ::1"` or `["10.0.0.0/8", "::1"]` in the attribute, comma-separated in the environment; TCP only |
/// | `drain_timeout` | `DRAIN_TIMEOUT` | none (wait) | 0, or a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5) | seconds a stopping or retiring process waits for open connections |
/// | `header_read_timeout` | `HEADER_READ_TIMEOUT` | `10` | a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5) | HTTP services (feature `http`): seconds a client has to send a request's head (a connection that sends nothing, or an idle HTTP/1.1 keep-alive one, is closed after it); once the process drains, every request still arriving, head and body, must have arrived this long after the drain began |
/// | `ready_timeout` | `READY_TIMEOUT` | `60` | a number of seconds from 0.001 to 999999999 (e.g. 30 or 2.5) | seconds an old process waits for the new one to report ready |
/// | `max_connections` | `MAX_CONNECTIONS` | unlimited | a whole number from 1 to 2305843009213693951 | connections served at once; beyond it the process stops accepting (the kernel queues new clients) |
/// | `backlog` | `BACKLOG` | `1024` | a whole number from 1 to 65535 | listen queue length of the sockets this process binds, capped by the kernel's `net.core.somaxconn`; a socket taken over keeps its queue |
/// | `supervise` | `SUPERVISE` | `false` | true, false, 1, 0, yes or no | supervised mode, for containers and supervisors that follow one pid: the first process stays as a small supervisor that holds the sockets, runs the serving process, restarts it on `USR1` and starts it again if it dies; its pid never changes |
/// | `control_socket` | `CONTROL_SOCKET` | none | a file path of at most 107 bytes (the longest a UNIX socket address holds) | path of a UNIX socket (mode 0600) answering `restart` (with the outcome) and `status`, one line per request |
/// <!-- /keys -->
///
/// # Signals and exit statuses
///
/// | signal | what happens |
/// |---|---|
/// | `USR1` or `HUP` | hot restart: a new copy of the program takes over the listening socket; this process stops accepting once it is ready, drains and exits 0. If the new copy fails, this one serves on |
/// | `TERM` or `INT` | stop accepting, drain open connections (bounded by `drain_timeout`), remove the pidfile and UNIX socket file if still ours, exit 0 |
/// | `TERM` or `INT` during a restart | the restart goes on; then this process retires (or stops, if the restart failed) |
/// | `TERM` or `INT` to a retiring process | logged; it goes on draining |
/// | a second `TERM` or `INT` | exit 1 at once |
///
/// Exit statuses: 0 after a drain or a handover; 1 for a second `TERM`/`INT` or a start-up
/// failure (address in use, pidfile not writable); 2 for invalid configuration.
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
