//! Listening sockets handed over by a service manager, with the real tools: systemd's
//! `systemd-socket-activate` (LISTEN_FDS) and Server::Starter's `start_server`
//! (SERVER_STARTER_PORT).

use std::path::Path;
use std::time::Duration;
use uninterruptible_tests::load::{self, Options};
use uninterruptible_tests::{
    Address, DEADLINE, SIGHUP, SIGTERM, SIGUSR1, Server, TempDir, alive, echo, environ, free_port,
    read_pidfile, send, wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

fn wait_for_file(path: &Path) {
    wait_for(&format!("{} to exist", path.display()), DEADLINE, || {
        path.exists().then_some(())
    });
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
    wait_for_file(&socket);
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
    wait_for_file(&socket);
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
    server.log.wait_for("Listening on");
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
