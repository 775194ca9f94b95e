//! Bad configuration: exit status 2, one line on stderr naming the variable, the value and what
//! is accepted; nothing bound, nothing left behind.

use uninterruptible_tests::{DEADLINE, Server, TempDir};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

#[test]
fn each_bad_value_exits_2_naming_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("BIND", "foo://x", "tcp://host:port"),
        ("BIND", "tcp://127.0.0.1", "tcp://host:port"),
        ("BIND", "unix://relative", "unix:///absolute/path"),
        (
            "BIND",
            "tcp://[fe80::1%lo]:80",
            "a scoped address (%lo) is not supported",
        ),
        ("PORT", "99999", "port number"),
        ("PORT", "abc", "port number"),
        ("ALLOWED_NETWORKS", "10.0.0.0/33", "10.0.0.0/8"),
        ("ALLOWED_NETWORKS", "banana", "10.0.0.0/8"),
        ("DRAIN_TIMEOUT", "soon", "seconds"),
        ("READY_TIMEOUT", "-1", "seconds"),
        ("READY_TIMEOUT", "0", "seconds from 0.001 to 999999999"),
        // 0 would refuse every request's head at once.
        (
            "HEADER_READ_TIMEOUT",
            "0",
            "seconds from 0.001 to 999999999",
        ),
        (
            "HEADER_READ_TIMEOUT",
            "soon",
            "seconds from 0.001 to 999999999",
        ),
        // Below a millisecond a timer fires at once: every restart would fail.
        ("READY_TIMEOUT", "0.0004", "seconds from 0.001 to 999999999"),
        (
            "TLS_HANDSHAKE_TIMEOUT",
            "0.0001",
            "seconds from 0.001 to 999999999",
        ),
        // The range the message states, exactly.
        (
            "DRAIN_TIMEOUT",
            "1e10",
            "0, or a number of seconds from 0.001 to 999999999",
        ),
        (
            "DRAIN_TIMEOUT",
            "999999999.5",
            "0, or a number of seconds from 0.001 to 999999999",
        ),
        (
            "DRAIN_TIMEOUT",
            "0.0005",
            "0, or a number of seconds from 0.001 to 999999999",
        ),
        (
            "READY_TIMEOUT",
            "999999999.5",
            "seconds from 0.001 to 999999999",
        ),
        (
            "MAX_CONNECTIONS",
            "lots",
            "whole number from 1 to 2305843009213693951",
        ),
        (
            "MAX_CONNECTIONS",
            "0",
            "whole number from 1 to 2305843009213693951",
        ),
        // Past what tokio's semaphore can count: this used to panic after binding.
        (
            "MAX_CONNECTIONS",
            "2305843009213693952",
            "whole number from 1 to 2305843009213693951",
        ),
        ("BACKLOG", "0", "whole number from 1 to 65535"),
        ("BACKLOG", "65536", "whole number from 1 to 65535"),
        // Forms `exec` can never run: refused at startup, not at the first restart.
        (
            "START_COMMAND",
            "RUST_LOG=debug ./server",
            "starts with a variable assignment",
        ),
        (
            "START_COMMAND",
            "cd /srv/app && ./server",
            "starts with the shell builtin `cd`",
        ),
        (
            "START_COMMAND",
            "./migrate; ./server",
            "chains commands with `;`",
        ),
        (
            "START_COMMAND",
            "./server | logger",
            "chains commands with `|`",
        ),
        ("VERIFY_CLIENT_TLS_CERTIFICATE", "maybe", "true, false"),
        ("SUPERVISE", "sometimes", "true, false, 1, 0, yes or no"),
        // A line the shell cannot read would make every restart fail.
        (
            "START_COMMAND",
            "./server 'a",
            "that /bin/sh can read; a `'` quote in it is not closed",
        ),
        ("TLS_VERSION", "TLSv1_1", "RFC 8996"),
        ("TLS_VERSION", "SSLv2", "TLSv1_2 or TLSv1_3"),
        ("TLS_HANDSHAKE_TIMEOUT", "never", "seconds"),
        ("LOG_LEVEL", "chatty", "trace, debug, info"),
        ("RUST_LOG", "[[[", "tracing filter"),
    ];
    let mut failures = Vec::new();
    for (var, value, accepted) in cases {
        failures.extend(refused(var, value, accepted, &[]));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Starts the echo server with `var=value` and `also`, everything else valid (including a
/// pidfile and a UNIX socket that must not appear); returns what is wrong with how it refused:
/// exit status 2, one line naming the variable, the value and what is `accepted`, no panic,
/// nothing left behind.
fn refused(var: &str, value: &str, accepted: &str, also: &[(&str, &str)]) -> Vec<String> {
    let dir = TempDir::new("config");
    let pidfile = dir.join("echo.pid");
    let socket = dir.join("echo.sock");
    let bind = format!("unix://{}", socket.display());
    let mut env = vec![
        ("PID_FILE", pidfile.to_str().unwrap()),
        ("BIND", bind.as_str()),
    ];
    if var == "BIND" || var == "PORT" || var == "ALLOWED_NETWORKS" {
        env.retain(|(k, _)| *k != "BIND");
    }
    env.extend_from_slice(also);
    env.push((var, value));
    let mut server = Server::start(ECHO, &env);
    let status = server.wait_exit(DEADLINE);
    // The pipes close with the process; wait for the line to be read.
    let line = server.log.wait_for("uninterruptible:");
    let lines = server.log.lines();
    let problems = [
        (status.code() != Some(2)).then(|| format!("exit status {status}")),
        (lines.len() != 1).then(|| format!("{} lines", lines.len())),
        (!line.contains(&format!("{var}=\"{value}\"")))
            .then(|| "variable and value not named".into()),
        (!line.contains(accepted)).then(|| format!("does not say what is accepted ({accepted})")),
        (line.contains("panicked") || line.contains("backtrace")).then(|| "panicked".into()),
        (std::fs::read_dir(dir.path()).unwrap().count() != 0).then(|| "left a file behind".into()),
    ];
    problems
        .into_iter()
        .flatten()
        .map(|problem| format!("{var}={value}: {problem}: {}", lines.join(" | ")))
        .collect()
}

#[test]
fn socket_paths_longer_than_a_socket_address_holds_exit_2() {
    let dir = TempDir::new("socket-path");
    // 107 bytes, the most sun_path holds with its terminating NUL, and one more.
    let base = format!("{}/", dir.path().display());
    let fits = format!("{base}{}", "s".repeat(107 - base.len()));
    let path = format!("{fits}s");
    let too_long = "a UNIX socket path of at most 107 bytes (the longest a socket address holds); this one has 108";
    let mut failures = refused("BIND", &format!("unix://{path}"), too_long, &[]);
    failures.extend(refused("CONTROL_SOCKET", &path, too_long, &[]));
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // The longest that fits is taken.
    let server = Server::start(
        ECHO,
        &[("BIND", "tcp://127.0.0.1:0"), ("CONTROL_SOCKET", &fits)],
    );
    server.address();
    assert!(std::path::Path::new(&fits).exists());
}

#[test]
fn more_listeners_than_a_restart_hands_over_exit_2() {
    let addresses = |n: u16| {
        (1..=n)
            .map(|i| format!("tcp://127.0.0.1:{}", 40000 + i))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut failures = refused(
        "BIND",
        &addresses(254),
        "at most 253 addresses (a restart hands every listener over in one message, which carries at most 253 descriptors); there are 254",
        &[],
    );
    // The control socket goes in the same message.
    let dir = TempDir::new("fds");
    let control = dir.join("echo.ctl");
    let mut server = Server::start(
        ECHO,
        &[
            ("BIND", &addresses(253)),
            ("CONTROL_SOCKET", control.to_str().unwrap()),
        ],
    );
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(2));
    let line = server.log.wait_for("uninterruptible:");
    assert_eq!(
        line,
        format!(
            "uninterruptible: BIND has 253 addresses and CONTROL_SOCKET={control:?} is set: a restart hands the listeners and the control socket over in one message, which carries at most 253 descriptors; use at most 252 addresses, or no control socket"
        )
    );
    assert!(!control.exists());
    failures.extend(
        (server.log.lines().len() != 1).then(|| format!("{} lines", server.log.lines().len())),
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn settings_that_do_not_go_together_name_both() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (&[("TLS_KEY", "/k.pem")], &["TLS_KEY", "TLS_CERTIFICATE"]),
        (
            &[("VERIFY_CLIENT_TLS_CERTIFICATE", "yes")],
            &["VERIFY_CLIENT_TLS_CERTIFICATE", "CLIENT_TLS_CERTIFICATE_CA"],
        ),
        (
            &[
                ("BIND", "unix:///tmp/x.sock"),
                ("ALLOWED_NETWORKS", "10.0.0.0/8"),
            ],
            &["ALLOWED_NETWORKS", "UNIX"],
        ),
        (
            &[
                ("BIND", "unix:///tmp/x.sock"),
                ("CONTROL_SOCKET", "/tmp/x.sock"),
            ],
            &[
                "CONTROL_SOCKET=\"/tmp/x.sock\"",
                "not one of the listening sockets (BIND)",
            ],
        ),
    ];
    for (env, names) in cases {
        let mut server = Server::start(ECHO, env);
        assert_eq!(server.wait_exit(DEADLINE).code(), Some(2), "{env:?}");
        let line = server.log.wait_for("uninterruptible:");
        for name in *names {
            assert!(line.contains(name), "{env:?}: {line}");
        }
    }
}

#[test]
fn an_unwritable_log_path_exits_2() {
    let mut server = Server::start(ECHO, &[("LOG_PATH", "/nonexistent/dir/echo.log")]);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(2));
    let line = server.log.wait_for("uninterruptible:");
    assert!(
        line.contains("LOG_PATH=\"/nonexistent/dir/echo.log\""),
        "{line}"
    );
}

#[test]
fn a_start_command_with_quoted_operators_is_accepted() {
    let dir = TempDir::new("quoted");
    let command = format!("{ECHO} 'a;b' \"c && d\"");
    let server = Server::start(
        ECHO,
        &[("BIND", "tcp://127.0.0.1:0"), ("START_COMMAND", &command)],
    );
    server.address();
    assert!(!server.log.text().contains("uninterruptible:"));
    drop(dir);
}

#[test]
fn a_missing_program_in_start_command_is_a_warning_at_startup() {
    let server = Server::start(
        ECHO,
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("START_COMMAND", "/nonexistent/release/server --flag"),
        ],
    );
    server.address();
    let line = server
        .log
        .wait_for("restarts will fail until this is fixed");
    assert!(
        line.contains("the program /nonexistent/release/server cannot be found"),
        "{line}"
    );
    assert!(
        line.contains("start command: /nonexistent/release/server --flag"),
        "{line}"
    );
}

#[test]
fn an_unusable_tmpdir_is_a_warning_at_startup() {
    let server = Server::start(
        ECHO,
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("TMPDIR", "/nonexistent/tmp"),
        ],
    );
    server.address();
    let line = server
        .log
        .wait_for("restarts will fail until this is fixed");
    assert!(
        line.contains("cannot create a handoff directory in /nonexistent/tmp"),
        "{line}"
    );
    assert!(line.contains("set TMPDIR"), "{line}");
}

#[test]
fn a_startup_failure_is_reported_once_naming_the_attribute_key() {
    // tls_echo names its files in the attribute; here they do not exist.
    let dir = TempDir::new("attr-tls");
    let mut server = Server::start_in(
        env!("CARGO_BIN_EXE_tls_echo"),
        Some(dir.path()),
        &[("BIND", "tcp://127.0.0.1:0")],
    );
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(2));
    let line = server.log.wait_for("uninterruptible:");
    assert_eq!(
        line,
        "uninterruptible: tls_certificate (in #[uninterruptible::server])=\"tls_cert.pem\": cannot read it: No such file or directory (os error 2)"
    );
    assert_eq!(server.log.lines().len(), 1, "{}", server.log.text());
}

#[test]
fn an_address_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = format!("tcp://{}", taken.local_addr().unwrap());
    let mut server = Server::start(ECHO, &[("BIND", &bind)]);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
    let line = server.log.wait_for("uninterruptible:");
    assert!(
        line.starts_with(&format!(
            "uninterruptible: cannot listen on {bind}: Address already in use"
        )),
        "{line}"
    );
    assert_eq!(server.log.lines().len(), 1, "{}", server.log.text());
}

#[test]
fn one_address_written_two_ways_exits_2() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "BIND",
            "tcp://[::1]:7,tcp://[0:0:0:0:0:0:0:1]:7",
            "each address once; \"tcp://[0:0:0:0:0:0:0:1]:7\" is \"tcp://[::1]:7\"",
        ),
        (
            "BIND",
            "tcp://127.0.0.1:7,tcp://[::ffff:127.0.0.1]:7",
            "each address once; \"tcp://[::ffff:127.0.0.1]:7\" is \"tcp://127.0.0.1:7\"",
        ),
        (
            "BIND",
            "unix:///tmp/no-such-dir/a.sock,unix:///tmp/no-such-dir//./a.sock",
            "each address once",
        ),
    ];
    let mut failures = Vec::new();
    for (var, value, accepted) in cases {
        failures.extend(refused(var, value, accepted, &[]));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn two_names_of_one_address_exit_2_naming_both() {
    // Names the kernel's resolver reads as one address are found when the second is bound.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("tcp://127.0.0.1:{port},tcp://127.000.000.001:{port}");
    let mut server = Server::start(ECHO, &[("BIND", &bind)]);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(2));
    let line = server.log.wait_for("uninterruptible:");
    assert_eq!(
        line,
        format!(
            "uninterruptible: BIND=\"tcp://127.0.0.1:{port}, tcp://127.000.000.001:{port}\" is invalid: expected each address once; tcp://127.000.000.001:{port} is tcp://127.0.0.1:{port}, listed before it"
        )
    );
    assert_eq!(server.log.lines().len(), 1, "{}", server.log.text());
}
