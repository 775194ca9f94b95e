//! Datagram listeners (`udp://`, `unixgram://`) with `examples/udp_echo.rs`: every datagram
//! sent across a storm of restarts is answered (loopback drops nothing, so a lost one is ours),
//! bursts sent while processes switch included; and the configurations that cannot work exit 2
//! saying why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use uninterruptible_tests::load::{restart_loop, while_running};
use uninterruptible_tests::udp::{self, REPLY_WAIT, kernel_drops};
use uninterruptible_tests::{DEADLINE, SIGTERM, SIGUSR1, Server, TempDir, read_pidfile, wait_for};

const UDP_ECHO: &str = env!("CARGO_BIN_EXE_udp_echo");
const ECHO: &str = env!("CARGO_BIN_EXE_echo");
/// Datagrams sent at once by the burst client, then answered: fewer than a default receive
/// queue (`net.core.rmem_default`) holds even if no process read for a while.
const BURST: usize = 64;

/// The UDP echo server on a free port, with a pidfile, answering each datagram `delay_ms` late;
/// its address.
fn start(dir: &TempDir, delay_ms: &str) -> (Server, PathBuf, SocketAddr) {
    let pidfile = dir.join("server.pid");
    let server = Server::start(
        UDP_ECHO,
        &[
            ("BIND", "udp://127.0.0.1:0"),
            ("PID_FILE", pidfile.to_str().unwrap()),
            ("ECHO_DELAY_MS", delay_ms),
        ],
    );
    let address = udp::listening_on(&server);
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    (server, pidfile, address)
}

/// Each datagram is answered 5 ms late: every retiring process owes replies as it stops
/// reading, and must send them before it exits.
#[test]
fn two_hundred_restarts_under_udp_load_leave_no_datagram_unanswered() {
    let dir = TempDir::new("udp-storm");
    let (server, pidfile, address) = start(&dir, "5");
    let drops_before = kernel_drops();
    let (restarts, counts) = while_running(
        move |stop| udp::run(address, 8, BURST, stop),
        || restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(200), None),
    );
    let drops = kernel_drops() - drops_before;
    println!(
        "udp: 200 restarts, {} answered ({} bursts of {BURST}), {} lost, {} wrong; handoff p50 {:?}, max {:?}; kernel receive-queue drops {drops}",
        counts.answered,
        counts.bursts,
        counts.lost.len(),
        counts.wrong.len(),
        restarts.quantile(0.5),
        restarts.quantile(1.0)
    );
    assert_eq!(restarts.handoffs.len(), 200);
    assert!(
        counts.lost.is_empty() && counts.wrong.is_empty(),
        "{} lost, {} wrong (kernel receive-queue drops meanwhile: {drops}); first: {:?} {:?}",
        counts.lost.len(),
        counts.wrong.len(),
        counts.lost.iter().take(5).collect::<Vec<_>>(),
        counts.wrong.iter().take(5).collect::<Vec<_>>()
    );
    assert!(counts.answered > 400, "{counts:?}");
    assert!(counts.bursts > 0, "{counts:?}");
    server.log.wait_for("generation 201");
}

#[test]
fn a_unix_datagram_socket_is_handed_over_and_its_file_removed_at_the_end() {
    let dir = TempDir::new("unixgram");
    let path = dir.join("echo.sock");
    let client_path = dir.join("client.sock");
    let pidfile = dir.join("server.pid");
    let mut server = Server::start(
        UDP_ECHO,
        &[
            ("BIND", &format!("unixgram://{}", path.display())),
            ("PID_FILE", pidfile.to_str().unwrap()),
        ],
    );
    server.log.wait_for("listening on unixgram://");
    let first = wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    let client = std::os::unix::net::UnixDatagram::bind(&client_path).unwrap();
    client.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    let ask = |text: &str| {
        client.send_to(text.as_bytes(), &path).unwrap();
        let mut buf = [0; 64];
        let len = client.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    assert_eq!(ask("before"), "before");
    uninterruptible_tests::send(first, SIGUSR1);
    let second = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&pid| pid != first)
    });
    assert_eq!(ask("after"), "after");
    assert!(path.exists(), "the socket file is handed over, not removed");
    uninterruptible_tests::send(second, SIGTERM);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    wait_for("the last process to exit", DEADLINE, || {
        (!uninterruptible_tests::alive(second)).then_some(())
    });
    assert!(!path.exists(), "the last process removes its socket file");
}

#[test]
fn datagram_and_stream_addresses_without_a_handler_for_them_exit_2_saying_so() {
    let port = uninterruptible_tests::free_port();
    let cases = [
        (
            UDP_ECHO,
            format!("udp://127.0.0.1:0,tcp://127.0.0.1:{port}"),
            format!(
                "uninterruptible: tcp://127.0.0.1:{port} takes connections, and this server only handles datagrams: bind it to udp:// or unixgram://\n"
            ),
        ),
        (
            ECHO,
            format!("tcp://127.0.0.1:{port},udp://127.0.0.1:{port}"),
            format!(
                "uninterruptible: udp://127.0.0.1:{port} takes datagrams, and this server has no datagram handler: bind it to tcp:// or unix://, or give the server one (a handler taking `uninterruptible::Datagram`, or one beside a handler of connections: `datagrams = \"...\"` in the attribute, Server::datagrams in the library)\n"
            ),
        ),
    ];
    for (binary, bind, expected) in cases {
        let output = std::process::Command::new(binary)
            .env("BIND", &bind)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bind}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), expected);
    }
}

/// systemd's `ListenDatagram=`, as `systemd-socket-activate --datagram` hands it over: the first
/// datagram starts the server, which answers it on the socket it was given, and restarts hand
/// that socket on.
#[test]
fn a_socket_activated_udp_socket_is_adopted_and_handed_over() {
    let dir = TempDir::new("udp-activate");
    let pidfile = dir.join("server.pid");
    let port = uninterruptible_tests::free_port();
    let server = Server::start_with(
        "systemd-socket-activate",
        &[
            "--datagram",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-E",
            &format!("PID_FILE={}", pidfile.display()),
            UDP_ECHO,
        ],
        None,
        &[],
    );
    server.log.wait_for("Listening on");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    let ask = |text: &str| {
        client.send(text.as_bytes()).unwrap();
        let mut buf = [0; 64];
        let len = client.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    assert_eq!(ask("activated"), "activated");
    server
        .log
        .wait_for("took over 1 listening sockets: LISTEN_FDS=1");
    let first = wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    uninterruptible_tests::send(first, SIGUSR1);
    let second = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&pid| pid != first)
    });
    assert_eq!(ask("handed over"), "handed over");
    uninterruptible_tests::send(second, SIGTERM);
    wait_for("the server to exit", DEADLINE, || {
        (!uninterruptible_tests::alive(second)).then_some(())
    });
}

/// `Server::datagrams` beside a handler of connections: TCP and UDP on one port, both handed
/// over at a restart.
#[test]
fn stream_and_datagram_listeners_on_one_port_are_served_and_handed_over_together() {
    let dir = TempDir::new("mixed");
    let pidfile = dir.join("server.pid");
    let port = uninterruptible_tests::free_port();
    let bind = format!("tcp://127.0.0.1:{port},udp://127.0.0.1:{port}");
    let server = Server::start(
        env!("CARGO_BIN_EXE_mixed"),
        &[("BIND", &bind), ("PID_FILE", pidfile.to_str().unwrap())],
    );
    server.log.wait_for(&format!(
        "listening on tcp://127.0.0.1:{port}, udp://127.0.0.1:{port}"
    ));
    let first = wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    let tcp = uninterruptible_tests::Address::Tcp(([127, 0, 0, 1], port).into());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(("127.0.0.1", port)).unwrap();
    udp.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    let ask_udp = |text: &str| {
        udp.send(text.as_bytes()).unwrap();
        let mut buf = [0; 64];
        let len = udp.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    assert_eq!(
        uninterruptible_tests::echo(&tcp, "a\n").unwrap(),
        "tcp: a\n"
    );
    assert_eq!(ask_udp("b"), "udp: b");
    uninterruptible_tests::send(first, SIGUSR1);
    let second = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&pid| pid != first)
    });
    server
        .log
        .wait_for("took over 2 listening sockets from the old process");
    assert_eq!(
        uninterruptible_tests::echo(&tcp, "c\n").unwrap(),
        "tcp: c\n"
    );
    assert_eq!(ask_udp("d"), "udp: d");
    uninterruptible_tests::send(second, SIGTERM);
}
