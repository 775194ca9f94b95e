//! Several listeners in one server: IPv4, IPv6 and UNIX at once, all served by the one handler,
//! all handed over in one restart.

use std::time::Duration;
use uninterruptible_tests::load::{self, Options};
use uninterruptible_tests::{
    Address, Conn, DEADLINE, SIGTERM, SIGUSR1, Server, TempDir, alive, echo, free_port,
    read_pidfile, send, start_with_pidfile, wait_for,
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

/// Whether this machine has an IPv6 loopback; the tests that need one say so when it has not.
fn ipv6_loopback() -> bool {
    let there = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !there {
        println!("skipped: no IPv6 loopback (::1) on this machine");
    }
    there
}

/// What the listener that accepted a connection to `to` says of it: `local tcp://...`, the
/// address the connection came in on.
fn local(to: &str) -> String {
    let address = Address::Tcp(to.parse().unwrap());
    let reply = Conn::open(&address).unwrap().echo("").unwrap();
    reply
        .split(" local ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{reply}"))
        .to_owned()
}

#[test]
fn ipv4_and_ipv6_wildcards_listen_together_in_either_order_and_across_a_restart() {
    if !ipv6_loopback() {
        return;
    }
    for order in ["v4 first", "v6 first"] {
        let port = free_port();
        let (v4, v6) = (
            format!("tcp://0.0.0.0:{port}"),
            format!("tcp://[::]:{port}"),
        );
        let bind = match order {
            "v4 first" => format!("{v4},{v6}"),
            _ => format!("{v6},{v4}"),
        };
        let dir = TempDir::new("wildcards");
        let (server, pidfile) = start_with_pidfile(WHOAMI, &dir, &bind, &[]);
        let old = server.pid();
        for generation in 1..=2 {
            // Each family reaches its own listener: `[::]` is IPv6-only beside `0.0.0.0`.
            assert_eq!(
                local(&format!("127.0.0.1:{port}")),
                format!("tcp://127.0.0.1:{port}"),
                "{order}, generation {generation}"
            );
            assert_eq!(
                local(&format!("[::1]:{port}")),
                format!("tcp://[::1]:{port}"),
                "{order}, generation {generation}"
            );
            if generation == 1 {
                // The sockets keep their setting in the new process.
                send(old, SIGUSR1);
                wait_for("a new pid", DEADLINE, || {
                    read_pidfile(&pidfile).filter(|&p| p != old)
                });
                wait_for("the old process to exit", DEADLINE, || {
                    (!alive(old)).then_some(())
                });
            }
        }
    }
}

#[test]
fn the_ipv6_wildcard_alone_takes_ipv4_clients_too() {
    if !ipv6_loopback() {
        return;
    }
    let dual_stack = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
        .is_ok_and(|value| value.trim() == "0");
    if !dual_stack {
        println!("skipped: net.ipv6.bindv6only is set, so [::] takes IPv6 only on this machine");
        return;
    }
    let port = free_port();
    let server = Server::start(WHOAMI, &[("BIND", &format!("tcp://[::]:{port}"))]);
    server.address();
    // An IPv4 client arrives as an IPv4-mapped IPv6 address.
    assert_eq!(
        local(&format!("127.0.0.1:{port}")),
        format!("tcp://[::ffff:127.0.0.1]:{port}")
    );
    assert_eq!(
        local(&format!("[::1]:{port}")),
        format!("tcp://[::1]:{port}")
    );
}
