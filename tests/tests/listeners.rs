//! Several listeners in one server: IPv4, IPv6 and UNIX at once, all served by the one handler,
//! all handed over in one restart.

use std::time::Duration;
use uninterruptible_tests::load::{self, Options};
use uninterruptible_tests::{
    Address, Conn, DEADLINE, SIGTERM, SIGUSR1, Server, TempDir, echo, start_with_pidfile,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const WHOAMI: &str = env!("CARGO_BIN_EXE_whoami");

/// The addresses of a `listening on a, b, c (pid ...)` line.
fn addresses(server: &Server) -> Vec<Address> {
    let line = server.log.wait_for("listening on ");
    let list = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(" (pid")
        .next()
        .unwrap();
    list.split(", ")
        .map(|a| uninterruptible_tests::parse_address(&format!("listening on {a}")))
        .collect()
}

#[test]
fn three_listeners_restart_under_load_without_a_failed_request_on_any() {
    let dir = TempDir::new("three");
    let socket = dir.join("echo.sock");
    let bind = format!(
        "tcp://127.0.0.1:0, tcp://[::1]:0, unix://{}",
        socket.display()
    );
    let (server, pidfile) = start_with_pidfile(ECHO, &dir, &bind, &[]);
    let all = addresses(&server);
    assert_eq!(all.len(), 3, "{}", server.log.text());
    for address in &all {
        assert_eq!(echo(address, "each\n").unwrap(), "each\n");
    }
    // Load on every listener at once while the server restarts 50 times.
    let ((restarts, ipv6), ipv4) =
        load::with_load(Options::plain(&all[0], 6, Duration::ZERO), || {
            load::with_load(Options::plain(&all[1], 6, Duration::ZERO), || {
                let (restarts, unix) =
                    load::with_load(Options::plain(&all[2], 6, Duration::ZERO), || {
                        load::restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(50), None)
                    });
                println!("unix: {unix}");
                assert_eq!(unix.failed(), 0, "unix: {unix}");
                restarts
            })
        });
    println!(
        "ipv4: {ipv4}; ipv6: {ipv6}; {} restarts",
        restarts.handoffs.len()
    );
    assert_eq!(ipv4.failed(), 0, "ipv4: {ipv4}");
    assert_eq!(ipv6.failed(), 0, "ipv6: {ipv6}");
    assert!(ipv4.ok > 0 && ipv6.ok > 0);
    // The last generation still serves all three, on the same sockets.
    server.log.wait_for("generation 51");
    for address in &all {
        assert_eq!(echo(address, "after\n").unwrap(), "after\n");
    }
    assert!(
        socket.exists(),
        "the socket file is never unlinked in a handoff"
    );
}

#[test]
fn a_stream_knows_the_listener_it_came_in_on() {
    let dir = TempDir::new("local");
    let socket = dir.join("who.sock");
    let bind = format!("tcp://127.0.0.1:0, unix://{}", socket.display());
    let server = Server::start(WHOAMI, &[("BIND", &bind)]);
    let all = addresses(&server);
    let Address::Tcp(tcp) = all[0] else {
        panic!("tcp first")
    };
    let reply = Conn::open(&all[0]).unwrap().echo("").unwrap();
    assert!(reply.contains(&format!(" local tcp://{tcp} ")), "{reply}");
    let reply = Conn::open(&all[1]).unwrap().echo("").unwrap();
    assert!(
        reply.contains(&format!(" local unix://{} ", socket.display())),
        "{reply}"
    );
}

#[test]
fn a_failure_on_the_second_address_leaves_nothing_behind() {
    let dir = TempDir::new("second-fails");
    let socket = dir.join("echo.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = format!(
        "unix://{}, tcp://{}",
        socket.display(),
        taken.local_addr().unwrap()
    );
    let mut server = Server::start(ECHO, &[("BIND", &bind)]);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
    let line = server.log.wait_for("uninterruptible:");
    assert!(
        line.contains(&format!(
            "cannot listen on tcp://{}",
            taken.local_addr().unwrap()
        )),
        "{line}"
    );
    assert!(
        !socket.exists(),
        "the first listener's socket file is removed"
    );
}

#[test]
fn term_stops_every_listener_and_removes_the_socket_file() {
    let dir = TempDir::new("term-all");
    let socket = dir.join("echo.sock");
    let bind = format!("tcp://127.0.0.1:0, unix://{}", socket.display());
    let mut server = Server::start(ECHO, &[("BIND", &bind)]);
    let all = addresses(&server);
    server.signal(SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());
    for address in &all {
        assert!(
            Conn::open(address).is_err(),
            "{address:?} no longer accepts"
        );
    }
    assert!(!socket.exists());
}
