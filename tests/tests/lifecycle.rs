//! The example servers as real processes: echo over TCP and UNIX, configuration precedence,
//! pidfile, graceful TERM, a second TERM, a live UNIX path.

use std::io::{Read, Write};
use std::time::Duration;
use uninterruptible_tests::{
    Address, Conn, DEADLINE, SIGINT, SIGTERM, Server, TempDir, echo, open_accepted, read_pidfile,
    wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const UNIX_ECHO: &str = env!("CARGO_BIN_EXE_unix_echo");

#[test]
fn echoes_over_tcp() {
    let server = Server::start(ECHO, &[("BIND", "tcp://127.0.0.1:0")]);
    let address = server.address();
    assert_eq!(echo(&address, "hello\n").unwrap(), "hello\n");
    assert_eq!(echo(&address, "no newline").unwrap(), "no newline");
    let line = server.log.wait_for("listening on");
    assert!(line.contains(&format!("pid {}", server.pid())), "{line}");
    assert!(line.contains("generation 1"), "{line}");
}

#[test]
fn echoes_over_ipv6() {
    let server = Server::start(ECHO, &[("BIND", "tcp://[::1]:0")]);
    let address = server.address();
    assert!(matches!(address, Address::Tcp(a) if a.is_ipv6()));
    assert_eq!(echo(&address, "v6\n").unwrap(), "v6\n");
}

#[test]
fn echoes_over_unix_and_removes_the_socket_file_on_exit() {
    let dir = TempDir::new("unix");
    let path = dir.join("echo.sock");
    let bind = format!("unix://{}", path.display());
    let mut server = Server::start(UNIX_ECHO, &[("BIND", &bind)]);
    assert_eq!(server.address(), Address::Unix(path.clone()));
    assert_eq!(
        echo(&server.address(), "over unix\n").unwrap(),
        "over unix\n"
    );
    server.signal(SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    assert!(!path.exists(), "the socket file is removed on exit");
}

#[test]
fn replaces_a_stale_unix_socket_file() {
    let dir = TempDir::new("stale");
    let path = dir.join("echo.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let bind = format!("unix://{}", path.display());
    let server = Server::start(UNIX_ECHO, &[("BIND", &bind)]);
    assert_eq!(echo(&server.address(), "fresh\n").unwrap(), "fresh\n");
}

#[test]
fn a_second_server_on_a_live_unix_path_fails_and_the_first_serves_on() {
    let dir = TempDir::new("live");
    let path = dir.join("echo.sock");
    let bind = format!("unix://{}", path.display());
    let first = Server::start(UNIX_ECHO, &[("BIND", &bind)]);
    let address = first.address();

    let mut second = Server::start(UNIX_ECHO, &[("BIND", &bind)]);
    let status = second.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", second.log.text());
    let message = second.log.wait_for("already answering");
    assert!(message.contains(&path.display().to_string()), "{message}");

    assert!(path.exists());
    assert_eq!(echo(&address, "still here\n").unwrap(), "still here\n");
}

#[test]
fn bind_wins_over_port_and_the_literal() {
    let server = Server::start(ECHO, &[("BIND", "tcp://127.0.0.1:0"), ("PORT", "1")]);
    let Address::Tcp(addr) = server.address() else {
        panic!("tcp")
    };
    assert_ne!(addr.port(), 1);
    assert_eq!(echo(&server.address(), "bind\n").unwrap(), "bind\n");
}

#[test]
fn port_replaces_the_port_of_the_literal() {
    // A free port, found by binding port 0; released just before the server takes it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(ECHO, &[("PORT", &port.to_string())]);
    let address = server.address();
    assert_eq!(
        address,
        Address::Tcp(format!("127.0.0.1:{port}").parse().unwrap())
    );
    assert_eq!(echo(&address, "port\n").unwrap(), "port\n");
}

#[test]
fn the_literal_is_the_default() {
    let mut server = Server::start(ECHO, &[]);
    // The literal is tcp://127.0.0.1:6789; another program may hold that port on this machine,
    // in which case the error must name the same address.
    let line = wait_for("listening or a bind error", DEADLINE, || {
        server
            .log
            .lines()
            .into_iter()
            .find(|l| l.contains("listening on") || l.contains("cannot listen on"))
    });
    assert!(line.contains("tcp://127.0.0.1:6789"), "{line}");
    if line.contains("cannot listen") {
        println!("port 6789 is taken on this machine: {line}");
        assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
    }
}

#[test]
fn pidfile_is_written_and_removed() {
    let dir = TempDir::new("pid");
    let pidfile = dir.join("echo.pid");
    let mut server = Server::start(
        ECHO,
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("PID_FILE", pidfile.to_str().unwrap()),
        ],
    );
    server.address();
    assert_eq!(read_pidfile(&pidfile), Some(server.pid()));
    server.signal(SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    assert!(!pidfile.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn term_drains_an_open_connection_and_refuses_new_ones() {
    for signal in [SIGTERM, SIGINT] {
        let mut server = Server::start(ECHO, &[("BIND", "tcp://127.0.0.1:0")]);
        let address = server.address();
        let held = open_accepted(server.pid(), &address);
        server.signal(signal);
        server.log.wait_for("draining 1 open connections");

        // New clients are refused once the process stops accepting.
        wait_for("new connections to be refused", DEADLINE, || {
            Conn::open(&address)
                .err()
                .filter(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        // The held client is still answered, then the process exits 0.
        assert_eq!(held.echo("last words\n").unwrap(), "last words\n");
        assert!(
            server.wait_exit(DEADLINE).success(),
            "{}",
            server.log.text()
        );
    }
}

#[test]
fn a_second_term_exits_1_at_once() {
    let mut server = Server::start(ECHO, &[("BIND", "tcp://127.0.0.1:0")]);
    let address = server.address();
    let mut held = match open_accepted(server.pid(), &address) {
        Conn::Tcp(s) => s,
        Conn::Unix(_) => unreachable!(),
    };
    server.signal(SIGTERM);
    server.log.wait_for("draining 1 open connections");
    server.signal(SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    // The held connection is closed with the process.
    let _ = held.write_all(b"anyone?\n");
    let mut rest = Vec::new();
    let _ = held.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn drain_timeout_bounds_the_wait() {
    let mut server = Server::start(
        ECHO,
        &[("BIND", "tcp://127.0.0.1:0"), ("DRAIN_TIMEOUT", "0.3")],
    );
    let _held = open_accepted(server.pid(), &server.address());
    server.signal(SIGTERM);
    server.log.wait_for("draining 1 open connections");
    assert!(server.wait_exit(DEADLINE).success());
    server.log.wait_for("drain timeout");
}

#[test]
fn max_connections_queues_the_rest() {
    let server = Server::start(
        ECHO,
        &[("BIND", "tcp://127.0.0.1:0"), ("MAX_CONNECTIONS", "1")],
    );
    let address = server.address();
    let first = open_accepted(server.pid(), &address);
    // The second client connects (the kernel queues it) but is served only once the first ends.
    let second = std::thread::spawn({
        let address = address.clone();
        move || echo(&address, "second\n").unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(!second.is_finished(), "served beyond MAX_CONNECTIONS");
    assert_eq!(first.echo("first\n").unwrap(), "first\n");
    assert_eq!(second.join().unwrap(), "second\n");
}

#[test]
fn clients_still_queued_when_the_last_process_stops_are_answered() {
    // The kernel resets every connection left in a listening socket's queue when its last
    // descriptor closes: a stopping process takes them and serves them first.
    let mut server = Server::start(
        ECHO,
        &[("BIND", "tcp://127.0.0.1:0"), ("MAX_CONNECTIONS", "1")],
    );
    let address = server.address();
    let held = open_accepted(server.pid(), &address);
    // Queued by the kernel: the process accepts no more while it is at MAX_CONNECTIONS.
    let queued: Vec<Conn> = (0..5).map(|_| Conn::open(&address).unwrap()).collect();
    server.signal(SIGTERM);
    server.log.wait_for("draining ");
    assert_eq!(held.echo("held\n").unwrap(), "held\n");
    // Served one at a time, in whatever order they take the permit: each client talks at once.
    let talking: Vec<_> = queued
        .into_iter()
        .enumerate()
        .map(|(i, conn)| std::thread::spawn(move || (i, conn.echo(&format!("queued {i}\n")))))
        .collect();
    for client in talking {
        let (i, reply) = client.join().unwrap();
        assert_eq!(reply.unwrap(), format!("queued {i}\n"));
    }
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    server
        .log
        .wait_for("5 connections still queued were taken to be served");
}

#[test]
fn logs_go_to_log_path_at_the_level_asked() {
    let dir = TempDir::new("log");
    let log = dir.join("echo.log");
    let mut server = Server::start(
        ECHO,
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("LOG_PATH", log.to_str().unwrap()),
            ("LOG_LEVEL", "warn"),
            ("RUST_LOG", "info"),
        ],
    );
    wait_for("the log file to say listening", DEADLINE, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("listening on"))
    });
    assert!(
        server.log.lines().is_empty(),
        "nothing on stdout: {}",
        server.log.text()
    );
    server.signal(SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("exiting"), "{text}");
}
