//! Listening sockets handed over by a service manager, with the real tools: systemd's
//! `systemd-socket-activate` (LISTEN_FDS) and Server::Starter's `start_server`
//! (SERVER_STARTER_PORT).

use std::time::Duration;
use uninterruptible_tests::load::{self, Options};
use uninterruptible_tests::{
    Address, DEADLINE, SIGHUP, SIGTERM, SIGUSR1, Server, TempDir, alive, echo, environ, free_port,
    read_pidfile, send, wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

/// Waits until `systemd-socket-activate` listens. Its socket file exists from `bind`, before
/// `listen`: a connection in between is refused and would start no server.
fn wait_until_listening(server: &Server) {
    server.log.wait_for("Listening on");
}

#[test]
fn systemd_socket_activation_is_adopted_and_restarts_hand_it_over() {
    let dir = TempDir::new("activate");
    let socket = dir.join("app.sock");
    let pidfile = dir.join("app.pid");
    let server = Server::start_with(
        "systemd-socket-activate",
        &[
            "-l",
            socket.to_str().unwrap(),
            "--fdname=app",
            "-E",
            &format!("PID_FILE={}", pidfile.display()),
            ECHO,
        ],
        None,
        &[],
    );
    wait_until_listening(&server);
    let address = Address::Unix(socket.clone());
    // The first connection starts the server, which serves it on the socket it was given.
    assert_eq!(echo(&address, "activated\n").unwrap(), "activated\n");
    server
        .log
        .wait_for("took over 1 listening sockets: LISTEN_FDS=1 (LISTEN_FDNAMES=app)");
    let first = wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));

    send(first, SIGUSR1);
    let second = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != first)
    });
    let inherited = environ(second);
    assert!(
        !inherited.contains_key("LISTEN_FDS") && !inherited.contains_key("LISTEN_PID"),
        "the variables are removed once read: nothing the server starts inherits them"
    );
    assert_eq!(echo(&address, "handed over\n").unwrap(), "handed over\n");
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(first)).then_some(())
    });
    send(second, SIGTERM);
    wait_for("the server to exit", DEADLINE, || {
        (!alive(second)).then_some(())
    });
    assert!(
        socket.exists(),
        "the socket file is systemd's: never removed"
    );
}

#[test]
fn an_inherited_socket_that_bind_does_not_name_is_a_configuration_error() {
    let dir = TempDir::new("activate-mismatch");
    let socket = dir.join("app.sock");
    let mut server = Server::start_with(
        "systemd-socket-activate",
        &[
            "-l",
            socket.to_str().unwrap(),
            "-E",
            "BIND=tcp://127.0.0.1:0",
            ECHO,
        ],
        None,
        &[],
    );
    wait_until_listening(&server);
    let _ = echo(&Address::Unix(socket.clone()), "x\n");
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(2));
    let line = server.log.wait_for("uninterruptible:");
    assert!(
        line.contains(&format!(
            "LISTEN_FDS=1 handed over unix://{} that BIND=tcp://127.0.0.1:0 does not name",
            socket.display()
        )),
        "{line}"
    );
}

#[test]
fn server_starter_workers_restart_under_load_without_a_failed_request() {
    let dir = TempDir::new("starter");
    let socket = dir.join("app.sock");
    let (server, starter) = starter(
        &dir,
        &format!("--path={}", socket.display()),
        &format!("exec '{ECHO}'"),
    );
    let address = Address::Unix(socket.clone());
    assert_eq!(echo(&address, "worker\n").unwrap(), "worker\n");

    // A worker leaves restarts to start_server.
    let worker: u32 = server
        .log
        .wait_for("(pid ")
        .split("(pid ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    send(worker, SIGUSR1);
    server
        .log
        .wait_for("USR1 received: ignored, start_server restarts its workers");

    let ((), stats) = load::with_load(Options::plain(&address, 8, Duration::ZERO), || {
        for round in 1..=3 {
            send(starter, SIGHUP);
            server.log.wait_for_count("listening on", round + 1);
            server.log.wait_for_count("TERM received: stopping", round);
        }
    });
    println!("start_server, 3 restarts: {stats}");
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 0);
    assert_eq!(echo(&address, "after\n").unwrap(), "after\n");
    assert!(
        socket.exists(),
        "the socket file is start_server's: never removed"
    );
}

/// `systemd-socket-activate -l <listen>` running the echo server, with a pidfile; waits until
/// the socket exists (UNIX) and the first connection has started the server.
fn activated(dir: &TempDir, listen: &str, address: &Address) -> (Server, std::path::PathBuf) {
    let pidfile = dir.join("app.pid");
    let server = Server::start_with(
        "systemd-socket-activate",
        &[
            "-l",
            listen,
            "-E",
            &format!("PID_FILE={}", pidfile.display()),
            ECHO,
        ],
        None,
        &[],
    );
    wait_until_listening(&server);
    assert_eq!(echo(address, "activate\n").unwrap(), "activate\n");
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    (server, pidfile)
}

#[test]
fn socket_activated_servers_restart_under_load_over_tcp_and_unix() {
    for kind in ["tcp", "unix"] {
        let dir = TempDir::new("activate-storm");
        let (listen, address) = match kind {
            "tcp" => {
                let port = free_port();
                let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                (addr.to_string(), Address::Tcp(addr))
            }
            _ => {
                let path = dir.join("app.sock");
                (path.display().to_string(), Address::Unix(path))
            }
        };
        let (server, pidfile) = activated(&dir, &listen, &address);
        let (restarts, stats) =
            load::with_load(Options::plain(&address, 8, Duration::ZERO), || {
                load::restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(10), None)
            });
        println!(
            "systemd-socket-activate over {kind}, {} restarts: {stats}",
            restarts.handoffs.len()
        );
        assert_eq!(stats.failed(), 0, "{kind}: {stats}");
        assert!(stats.ok > 0);
        server.log.wait_for("generation 11");
        assert_eq!(echo(&address, "after\n").unwrap(), "after\n");
    }
}

/// `start_server` running `command` (a shell line) on `port_or_path`.
fn starter(dir: &TempDir, option: &str, command: &str) -> (Server, u32) {
    let starter_pid = dir.join("start_server.pid");
    let server = Server::start_with(
        "start_server",
        &[
            option,
            &format!("--pid-file={}", starter_pid.display()),
            "--",
            "/bin/sh",
            "-c",
            command,
        ],
        None,
        &[],
    );
    server
        .log
        .wait_for("took over 1 listening sockets: SERVER_STARTER_PORT=");
    let pid = wait_for("start_server's pid", DEADLINE, || {
        read_pidfile(&starter_pid)
    });
    (server, pid)
}

#[test]
fn start_server_storm_over_tcp_fails_no_request() {
    let dir = TempDir::new("starter-tcp");
    let port = free_port();
    let address = Address::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let (server, starter_pid) = starter(
        &dir,
        &format!("--port=127.0.0.1:{port}"),
        &format!("exec '{ECHO}'"),
    );
    let ((), stats) = load::with_load(Options::plain(&address, 8, Duration::ZERO), || {
        for round in 1..=10 {
            send(starter_pid, SIGHUP);
            server.log.wait_for_count("listening on", round + 1);
            server.log.wait_for_count("TERM received: stopping", round);
        }
    });
    println!("start_server over tcp, 10 restarts: {stats}");
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 0);
}

#[test]
fn a_worker_that_fails_to_start_leaves_the_old_one_serving() {
    let dir = TempDir::new("starter-fail");
    let socket = dir.join("app.sock");
    let flag = dir.join("broken");
    // The command fails while the flag exists: a broken release.
    let command = format!(
        "if [ -e '{}' ]; then exit 3; fi; exec '{ECHO}'",
        flag.display()
    );
    let (server, starter_pid) = starter(&dir, &format!("--path={}", socket.display()), &command);
    let address = Address::Unix(socket.clone());
    std::fs::write(&flag, "").unwrap();
    let ((), stats) = load::with_load(Options::plain(&address, 8, Duration::ZERO), || {
        send(starter_pid, SIGHUP);
        // start_server tries the new worker, sees it die, and keeps the old one.
        server.log.wait_for("seems to have failed to start");
        // It tries again every second, and the old worker serves meanwhile.
        server
            .log
            .wait_for_count("seems to have failed to start", 2);
    });
    println!("start_server with a broken worker: {stats}");
    assert_eq!(stats.failed(), 0, "{stats}");
    assert_eq!(
        server.log.count("TERM received"),
        0,
        "the old worker was not stopped"
    );
    assert_eq!(echo(&address, "old\n").unwrap(), "old\n");
}

/// Starts the echo server through `bash -c '<setup>; export LISTEN_PID=$$; exec echo'`, so that
/// `LISTEN_PID` is its pid, with `env` and a pidfile; returns its one line on stderr once it has
/// exited 2 without leaving the pidfile behind.
fn refused_with_our_pid(setup: &str, env: &[(&str, &str)]) -> String {
    let dir = TempDir::new("inherit-refused");
    let pidfile = dir.join("echo.pid");
    let mut all = vec![("PID_FILE", pidfile.to_str().unwrap())];
    all.extend_from_slice(env);
    let script = format!("{setup}; export LISTEN_PID=$$; exec \"$0\"");
    let server = Server::start_with("bash", &["-c", &script, ECHO], None, &all);
    refusal(server, &dir)
}

/// The one line `server` wrote on stderr once it exited 2, having left nothing in `dir`.
fn refusal(mut server: Server, dir: &TempDir) -> String {
    let status = server.wait_exit(DEADLINE);
    let line = server.log.wait_for("uninterruptible:");
    assert_eq!(status.code(), Some(2), "{}", server.log.text());
    assert_eq!(server.log.lines().len(), 1, "{}", server.log.text());
    assert!(!line.contains("panicked"), "{line}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{line}");
    line
}

#[test]
fn listen_fds_that_pass_no_socket_exit_2_naming_the_variable() {
    let count = |value: &str, most: usize| {
        format!(
            "uninterruptible: LISTEN_FDS=\"{value}\" is invalid: expected a whole number from 1 to {most}: how many listening sockets are passed from descriptor 3 on (a restart hands them all over in one message of at most 253 descriptors, the control socket included)"
        )
    };
    for value in ["0", "-1", "2147483647", "254"] {
        let line = refused_with_our_pid(":", &[("LISTEN_FDS", value)]);
        assert_eq!(line, count(value, 253));
    }
    // Supervised, the supervisor refuses them too, rather than a serving process binding the
    // attribute's default.
    let line = refused_with_our_pid(":", &[("LISTEN_FDS", "0"), ("SUPERVISE", "true")]);
    assert_eq!(line, count("0", 253));
    // The control socket takes a descriptor of the handoff message.
    let dir = TempDir::new("inherit-control");
    let control = dir.join("echo.ctl");
    let line = refused_with_our_pid(
        ":",
        &[
            ("LISTEN_FDS", "253"),
            ("CONTROL_SOCKET", control.to_str().unwrap()),
        ],
    );
    assert_eq!(line, count("253", 252));
}

#[test]
fn listen_fds_that_are_not_listening_sockets_exit_2_naming_the_descriptor() {
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = peer.local_addr().unwrap().port();
    let cases = [
        // More than the descriptors open.
        (":", "descriptor 3 is not open"),
        ("exec 3</dev/null", "descriptor 3 is not a socket"),
        (
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port}") as &str,
            "descriptor 3 is a socket that is not listening",
        ),
    ];
    for (setup, why) in cases {
        let line = refused_with_our_pid(setup, &[("LISTEN_FDS", "1")]);
        assert_eq!(
            line,
            format!(
                "uninterruptible: LISTEN_FDS=\"1\" is invalid: expected as many listening sockets as descriptors 3 to 3 hold; {why}"
            ),
            "{setup}"
        );
    }
}

#[test]
fn listen_fdnames_that_do_not_match_listen_fds_exit_2() {
    let line = refused_with_our_pid(":", &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "web:admin")]);
    assert_eq!(
        line,
        "uninterruptible: LISTEN_FDNAMES=\"web:admin\" is invalid: expected one name per socket, separated by `:` (LISTEN_FDS=1 passes 1); it has 2"
    );
}

#[test]
fn server_starter_ports_that_name_no_socket_exit_2_naming_the_variable() {
    let expected =
        "host:port=fd or path=fd entries separated by `;`, each a listening socket named once";
    for (value, why) in [
        (";;;", "there is none".to_owned()),
        (
            "127.0.0.1:6789=-1",
            "\"127.0.0.1:6789=-1\" is not one".to_owned(),
        ),
    ] {
        let dir = TempDir::new("starter-refused");
        let pidfile = dir.join("echo.pid");
        let server = Server::start(
            ECHO,
            &[
                ("SERVER_STARTER_PORT", value),
                ("PID_FILE", pidfile.to_str().unwrap()),
            ],
        );
        let line = refusal(server, &dir);
        assert_eq!(
            line,
            format!(
                "uninterruptible: SERVER_STARTER_PORT=\"{value}\" is invalid: expected {expected}; {why}"
            )
        );
    }
}

#[test]
fn a_descriptor_server_starter_names_twice_exits_2() {
    let port = free_port();
    // start_server's variable, with its socket named a second time.
    let server = Server::start_with(
        "start_server",
        &[
            &format!("--port=127.0.0.1:{port}"),
            "--",
            "bash",
            "-c",
            "export SERVER_STARTER_PORT=\"$SERVER_STARTER_PORT;again=${SERVER_STARTER_PORT##*=}\"; exec \"$0\"",
            ECHO,
        ],
        None,
        &[],
    );
    let line = server.log.wait_for("uninterruptible: SERVER_STARTER_PORT=");
    let fd = line
        .split(&format!("127.0.0.1:{port}="))
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(
        line,
        format!(
            "uninterruptible: SERVER_STARTER_PORT=\"127.0.0.1:{port}={fd};again={fd}\" is invalid: expected host:port=fd or path=fd entries separated by `;`, each a listening socket named once; descriptor {fd} is named twice"
        )
    );
    server.log.wait_for("seems to have failed to start");
}
