//! TLS, client certificates and network restrictions, with certificates made at test time and a
//! rustls client (and `openssl s_client` where it is installed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uninterruptible_tests::certs::{Ca, Client, Pair};
use uninterruptible_tests::load::{self, Options, Target};
use uninterruptible_tests::{
    Address, Conn, DEADLINE, SIGTERM, SIGUSR1, Server, TempDir, alive, fd_count, open_accepted,
    read_pidfile, send, wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const SESSION: &str = env!("CARGO_BIN_EXE_session");
const POOL: &str = env!("CARGO_BIN_EXE_pool");
const TLS_ECHO: &str = env!("CARGO_BIN_EXE_tls_echo");
const WHOAMI: &str = env!("CARGO_BIN_EXE_whoami");

/// A CA, a server certificate for localhost, 127.0.0.1 and ::1, in a directory of their own.
struct Fixture {
    dir: TempDir,
    ca: Ca,
    server: Pair,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = TempDir::new(name);
        let ca = Ca::new("test CA");
        let server = ca.issue(dir.path(), "server", &["localhost", "127.0.0.1", "::1"]);
        ca.write(&dir.join("ca.pem"));
        Fixture { dir, ca, server }
    }

    fn env<'a>(&'a self, bind: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("BIND", bind),
            ("TLS_KEY", self.server.key.to_str().unwrap()),
            ("TLS_CERTIFICATE", self.server.certificate.to_str().unwrap()),
        ]
    }

    fn start(&self, binary: &str, extra: &[(&str, &str)]) -> (Server, SocketAddr) {
        let mut env = self.env("tcp://127.0.0.1:0");
        env.extend_from_slice(extra);
        let server = Server::start(binary, &env);
        let Address::Tcp(addr) = server.address() else {
            panic!("tcp")
        };
        (server, addr)
    }

    fn client(&self) -> Client {
        Client::trusting(&self.ca)
    }
}

#[test]
fn echoes_over_tls_1_2_and_1_3() {
    let fixture = Fixture::new("tls-versions");
    let (_server, addr) = fixture.start(ECHO, &[]);
    let reply = fixture
        .client()
        .echo(addr, "localhost", "over tls 1.3\n")
        .unwrap();
    assert_eq!(reply.text, "over tls 1.3\n");
    assert_eq!(reply.version, Some(rustls::ProtocolVersion::TLSv1_3));

    let tls12 = Client {
        tls12_only: true,
        ..fixture.client()
    };
    let reply = tls12.echo(addr, "127.0.0.1", "over tls 1.2\n").unwrap();
    assert_eq!(reply.text, "over tls 1.2\n");
    assert_eq!(reply.version, Some(rustls::ProtocolVersion::TLSv1_2));
}

#[test]
fn the_tls_example_serves_its_literal_files() {
    let fixture = Fixture::new("tls-example");
    // The example's literals name tls_key.pem and tls_cert.pem in its working directory.
    std::fs::copy(&fixture.server.key, fixture.dir.join("tls_key.pem")).unwrap();
    std::fs::copy(
        &fixture.server.certificate,
        fixture.dir.join("tls_cert.pem"),
    )
    .unwrap();
    let server = Server::start_in(
        TLS_ECHO,
        Some(fixture.dir.path()),
        &[("BIND", "tcp://127.0.0.1:0")],
    );
    let Address::Tcp(addr) = server.address() else {
        panic!("tcp")
    };
    let reply = fixture
        .client()
        .echo(addr, "localhost", "example\n")
        .unwrap();
    assert_eq!(reply.text, "example\n");
}

#[test]
fn tls_1_3_only_refuses_a_tls_1_2_client() {
    let fixture = Fixture::new("tls13");
    let (server, addr) = fixture.start(ECHO, &[("TLS_VERSION", "TLSv1_3")]);
    let tls12 = Client {
        tls12_only: true,
        ..fixture.client()
    };
    let error = tls12.echo(addr, "localhost", "old\n").unwrap_err();
    assert!(error.to_lowercase().contains("version"), "{error}");
    let reply = fixture.client().echo(addr, "localhost", "new\n").unwrap();
    assert_eq!(reply.version, Some(rustls::ProtocolVersion::TLSv1_3));
    drop(server);
}

#[test]
fn client_certificates_are_required_and_verified() {
    let fixture = Fixture::new("mtls");
    let ca_path = fixture.dir.join("ca.pem");
    let (_server, addr) = fixture.start(
        WHOAMI,
        &[("CLIENT_TLS_CERTIFICATE_CA", ca_path.to_str().unwrap())],
    );
    let good = fixture
        .ca
        .issue(fixture.dir.path(), "client", &["client.example"]);
    let with_good = Client {
        identity: Some(good),
        ..fixture.client()
    };
    let reply = with_good.echo(addr, "localhost", "").unwrap();
    assert!(
        reply.text.contains("tls true certificates ["),
        "{}",
        reply.text
    );
    assert!(
        !reply.text.contains("certificates []"),
        "the handler sees the client's chain: {}",
        reply.text
    );

    let error = fixture.client().echo(addr, "localhost", "").unwrap_err();
    assert!(!error.is_empty());

    let stranger = Ca::new("another CA");
    let bad = stranger.issue(fixture.dir.path(), "stranger", &["client.example"]);
    let with_bad = Client {
        identity: Some(bad),
        ..fixture.client()
    };
    let error = with_bad.echo(addr, "localhost", "").unwrap_err();
    assert!(!error.is_empty());

    // The server serves on after refusing both.
    assert!(with_good.echo(addr, "localhost", "").is_ok());
}

#[test]
fn verify_client_tls_certificate_with_a_ca_works_too() {
    let fixture = Fixture::new("verify");
    let ca_path = fixture.dir.join("ca.pem");
    let (_server, addr) = fixture.start(
        WHOAMI,
        &[
            ("VERIFY_CLIENT_TLS_CERTIFICATE", "yes"),
            ("CLIENT_TLS_CERTIFICATE_CA", ca_path.to_str().unwrap()),
        ],
    );
    assert!(fixture.client().echo(addr, "localhost", "").is_err());
}

#[test]
fn an_explicit_false_wins_over_a_client_ca_and_says_so() {
    // The CA may be compiled into the attribute; operations turn client certificates off with
    // VERIFY_CLIENT_TLS_CERTIFICATE=false, without a rebuild.
    let fixture = Fixture::new("verify-false");
    let ca_path = fixture.dir.join("ca.pem");
    let (server, addr) = fixture.start(
        WHOAMI,
        &[
            ("VERIFY_CLIENT_TLS_CERTIFICATE", "false"),
            ("CLIENT_TLS_CERTIFICATE_CA", ca_path.to_str().unwrap()),
        ],
    );
    let reply = fixture.client().echo(addr, "localhost", "").unwrap();
    assert!(reply.text.contains("certificates []"), "{}", reply.text);
    let warning = server.log.wait_for("client certificates are not required");
    assert!(
        warning.contains(&format!(
            "VERIFY_CLIENT_TLS_CERTIFICATE=false wins over CLIENT_TLS_CERTIFICATE_CA={ca_path:?}"
        )),
        "{warning}"
    );
}

#[test]
fn an_expired_or_future_certificate_is_served_with_a_warning_naming_file_and_dates() {
    let fixture = Fixture::new("dates");
    let cases = [
        ("expired", (2020, 1, 1), (2021, 6, 30), "has expired"),
        ("future", (2099, 1, 1), (2100, 1, 1), "is not valid yet"),
    ];
    for (stem, from, until, state) in cases {
        let pair = fixture
            .ca
            .issue_valid(fixture.dir.path(), stem, &["localhost"], from, until);
        let server = Server::start(
            ECHO,
            &[
                ("BIND", "tcp://127.0.0.1:0"),
                ("TLS_KEY", pair.key.to_str().unwrap()),
                ("TLS_CERTIFICATE", pair.certificate.to_str().unwrap()),
            ],
        );
        server.address();
        let warning = server.log.wait_for("the certificate in TLS_CERTIFICATE=");
        let expected = format!(
            "the certificate in TLS_CERTIFICATE={:?} {state} (valid from {}-{:02}-{:02} 00:00:00 UTC until {}-{:02}-{:02} 00:00:00 UTC)",
            pair.certificate, from.0, from.1, from.2, until.0, until.1, until.2
        );
        assert!(
            warning.contains(&expected),
            "{warning}\nexpected: {expected}"
        );
    }
    // A current certificate brings no such line.
    let (server, _) = fixture.start(ECHO, &[]);
    assert_eq!(
        server.log.count("the certificate in"),
        0,
        "{}",
        server.log.text()
    );
}

/// Runs `openssl` with `args` and checks that it succeeded; `None` when it is not installed.
fn openssl(args: &[&str]) -> Option<()> {
    let out = Command::new("openssl").args(args).output().ok()?;
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

fn assert_pem(path: &Path, label: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(&format!("BEGIN {label}")),
        "{}: {text}",
        path.display()
    );
}

#[test]
fn rsa_pkcs1_and_sec1_keys_are_accepted() {
    let fixture = Fixture::new("keys");
    let dir = fixture.dir.path();
    let rsa8 = dir.join("rsa8.key");
    let rsa8 = rsa8.to_str().unwrap();
    let made = openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        rsa8,
    ]);
    if made.is_none() {
        println!("skipped: openssl is not installed, so no RSA key can be made here");
        return;
    }
    let rsa = fixture.ca.issue_for_pem(
        &std::fs::read_to_string(rsa8).unwrap(),
        dir,
        "rsa",
        &["localhost"],
    );
    // The same key as PKCS#1.
    openssl(&[
        "rsa",
        "-in",
        rsa8,
        "-traditional",
        "-out",
        rsa.key.to_str().unwrap(),
    ])
    .unwrap();
    assert_pem(&rsa.key, "RSA PRIVATE KEY");
    // An ECDSA key as SEC1.
    let ec = fixture.ca.issue(dir, "ec", &["localhost"]);
    let ec_key = ec.key.to_str().unwrap();
    openssl(&["ec", "-in", ec_key, "-out", ec_key]).unwrap();
    assert_pem(&ec.key, "EC PRIVATE KEY");

    for pair in [rsa, ec] {
        let server = Server::start(
            ECHO,
            &[
                ("BIND", "tcp://127.0.0.1:0"),
                ("TLS_KEY", pair.key.to_str().unwrap()),
                ("TLS_CERTIFICATE", pair.certificate.to_str().unwrap()),
            ],
        );
        let Address::Tcp(addr) = server.address() else {
            panic!("tcp")
        };
        let reply = fixture.client().echo(addr, "localhost", "key\n").unwrap();
        assert_eq!(reply.text, "key\n", "{}", pair.key.display());
    }
}

#[test]
fn a_plaintext_client_on_the_tls_port_disturbs_no_one() {
    let fixture = Fixture::new("plain");
    let (_server, addr) = fixture.start(ECHO, &[]);
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        fixture
            .client()
            .echo(addr, "localhost", "fine\n")
            .unwrap()
            .text,
        "fine\n"
    );
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("GET"),
        "no plaintext echo"
    );
    assert_eq!(
        fixture
            .client()
            .echo(addr, "localhost", "still fine\n")
            .unwrap()
            .text,
        "still fine\n"
    );
}

#[test]
fn a_restart_storm_over_tls_fails_no_request() {
    let fixture = Fixture::new("tls-storm");
    let pidfile = fixture.dir.join("echo.pid");
    let (server, addr) = fixture.start(ECHO, &[("PID_FILE", pidfile.to_str().unwrap())]);
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    let options = Options {
        target: Target::Tcp(addr),
        clients: 16,
        hold: Duration::ZERO,
        timeout: Duration::from_secs(10),
        tls: Some(fixture.client().connector("localhost")),
    };
    let (restarts, stats) = load::with_load(options, || {
        load::restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(100), None)
    });
    println!(
        "TLS: 100 restarts, {stats}; handoff p50 {:?}, max {:?}",
        restarts.quantile(0.5),
        restarts.quantile(1.0)
    );
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 100, "{stats}");
    server.log.wait_for("generation 101");
}

#[test]
fn usr1_rotates_the_certificate_and_a_broken_one_leaves_the_old_serving() {
    let fixture = Fixture::new("rotate");
    let pidfile = fixture.dir.join("echo.pid");
    let (server, addr) = fixture.start(ECHO, &[("PID_FILE", pidfile.to_str().unwrap())]);
    let first = wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    let client = fixture.client();
    let before = client
        .echo(addr, "localhost", "a\n")
        .unwrap()
        .server_certificate
        .unwrap();

    // A new certificate and key in place of the old ones, then USR1.
    let renewed = fixture
        .ca
        .issue(fixture.dir.path(), "renewed", &["localhost"]);
    std::fs::rename(&renewed.certificate, &fixture.server.certificate).unwrap();
    std::fs::rename(&renewed.key, &fixture.server.key).unwrap();
    send(first, SIGUSR1);
    let second = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != first)
    });
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(first)).then_some(())
    });
    let after = client
        .echo(addr, "localhost", "b\n")
        .unwrap()
        .server_certificate
        .unwrap();
    assert_ne!(
        before, after,
        "the new process serves the renewed certificate"
    );

    // A broken certificate: the new process fails before ready; the old one serves on.
    std::fs::write(
        &fixture.server.certificate,
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    send(second, SIGUSR1);
    server.log.wait_for("restart failed");
    let message = server.log.wait_for("TLS_CERTIFICATE=");
    assert!(
        message.contains("not valid PEM") || message.contains("no certificate"),
        "{message}"
    );
    assert_eq!(read_pidfile(&pidfile), Some(second));
    let still = client.echo(addr, "localhost", "c\n").unwrap();
    assert_eq!(still.text, "c\n");
    assert_eq!(still.server_certificate.unwrap(), after);
}

#[test]
fn allowed_networks_for_ipv4_ipv6_and_mapped_peers() {
    let cases: &[(&str, &str, &str, bool)] = &[
        ("tcp://127.0.0.1:0", "127.0.0.0/8", "127.0.0.1", true),
        ("tcp://127.0.0.1:0", "127.0.0.1", "127.0.0.1", true),
        ("tcp://127.0.0.1:0", "10.0.0.0/8", "127.0.0.1", false),
        ("tcp://127.0.0.1:0", "127.0.0.2/32", "127.0.0.1", false),
        ("tcp://[::1]:0", "::1", "::1", true),
        ("tcp://[::1]:0", "2001:db8::/32", "::1", false),
        // An IPv4 client of a [::] listener arrives as ::ffff:127.0.0.1 and matches IPv4 networks.
        ("tcp://[::]:0", "127.0.0.0/8", "127.0.0.1", true),
        ("tcp://[::]:0", "10.0.0.0/8", "127.0.0.1", false),
    ];
    for (bind, networks, client, expected) in cases {
        let server = Server::start(
            ECHO,
            &[
                ("BIND", bind),
                ("ALLOWED_NETWORKS", networks),
                ("LOG_LEVEL", "debug"),
            ],
        );
        let Address::Tcp(addr) = server.address() else {
            panic!("tcp")
        };
        let to = SocketAddr::new(client.parse().unwrap(), addr.port());
        // Loopback connections come from the address they go to.
        let mut stream = TcpStream::connect(to).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(b"who\n");
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert_eq!(
            reply == b"who\n",
            *expected,
            "bind {bind}, allowed {networks}, client {client}"
        );
        if !expected {
            server.log.wait_for("refused: not in ALLOWED_NETWORKS");
        }
    }
}

/// A real ClientHello, from a rustls client that writes into a buffer.
fn client_hello(fixture: &Fixture) -> Vec<u8> {
    let name = "localhost".try_into().unwrap();
    let mut connection = rustls::ClientConnection::new(fixture.client().config(), name).unwrap();
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).unwrap();
    hello
}

#[test]
fn a_refused_peer_receives_no_server_hello() {
    let fixture = Fixture::new("refused");
    let (server, addr) = fixture.start(
        ECHO,
        &[("ALLOWED_NETWORKS", "10.0.0.0/8"), ("LOG_LEVEL", "debug")],
    );
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(&client_hello(&fixture));
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        reply.is_empty(),
        "the refused peer got {} bytes",
        reply.len()
    );
    server.log.wait_for("refused: not in ALLOWED_NETWORKS");
}

#[test]
fn silent_clients_hold_a_stopping_process_no_longer_than_the_handshake_timeout() {
    let fixture = Fixture::new("silent");
    let (mut server, addr) = fixture.start(ECHO, &[("TLS_HANDSHAKE_TIMEOUT", "1")]);
    let before = fd_count(server.pid());
    let silent: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    wait_for("all 50 to be accepted", DEADLINE, || {
        (fd_count(server.pid()) >= before + 50).then_some(())
    });
    let stopped = Instant::now();
    server.signal(SIGTERM);
    let status = server.wait_exit(DEADLINE);
    let took = stopped.elapsed();
    assert!(status.success());
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after TERM; handshake timeout is 1 s"
    );
    drop(silent);
}

/// The debug line of a handshake dropped to make room in a full handshake budget.
const DROPPED: &str = "TLS handshake dropped unfinished";

/// Whether the server has closed `conn`, which sends nothing: it would read the end or a reset.
fn closed_by_server(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let closed =
        !matches!(conn.peek(&mut [0]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    conn.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn stalled_clients_beyond_the_handshake_budget_lock_out_no_one() {
    // MAX_CONNECTIONS=4 used to be four silent clients away from a lockout: each held a
    // connection slot for the whole TLS_HANDSHAKE_TIMEOUT, and reconnecting ones kept it so.
    let fixture = Fixture::new("flood");
    let mut env = fixture.env("tcp://[::]:0");
    env.extend([
        ("MAX_CONNECTIONS", "4"),
        ("TLS_HANDSHAKE_TIMEOUT", "30"),
        ("ALLOWED_NETWORKS", "::1"),
        ("LOG_LEVEL", "debug"),
    ]);
    // The handshake budget is half the descriptor limit: 64 here.
    let budget = 64;
    let server = Server::start_with("prlimit", &["--nofile=128", "--", ECHO], None, &env);
    let Address::Tcp(listening) = server.address() else {
        panic!("tcp")
    };
    // Over IPv4 a client comes from 127.0.0.1, which is refused.
    let addr = SocketAddr::new("::1".parse().unwrap(), listening.port());
    let refused_addr = SocketAddr::from(([127, 0, 0, 1], listening.port()));

    // Silent clients, and slow ones that send half a ClientHello.
    let hello = client_hello(&fixture);
    let stalled: Vec<TcpStream> = (0..budget + 36)
        .map(|i| {
            let mut conn = TcpStream::connect(addr).unwrap();
            if i % 2 == 1 {
                conn.write_all(&hello[..hello.len() / 2]).unwrap();
            }
            conn
        })
        .collect();
    // Refused before any handshake, they take no place in the budget.
    let refused: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(refused_addr).unwrap())
        .collect();

    // Accepted after all of them, it is answered while they are still connected.
    let reply = fixture.client().echo(addr, "localhost", "real\n").unwrap();
    assert_eq!(reply.text, "real\n");

    // Each connection past the budget dropped the oldest unfinished handshake: 36 stalled ones,
    // and one more for the real client. The others wait on in their handshakes.
    let dropped = stalled.len() + 1 - budget;
    server.log.wait_for_count(DROPPED, dropped);
    for (i, conn) in stalled.iter().enumerate().skip(dropped) {
        assert!(!closed_by_server(conn), "stalled client {i} was closed");
    }
    wait_for(
        "the dropped and refused clients to be closed",
        DEADLINE,
        || {
            (stalled[..dropped].iter().chain(&refused))
                .all(closed_by_server)
                .then_some(())
        },
    );
    server
        .log
        .wait_for_count("refused: not in ALLOWED_NETWORKS", refused.len());
    assert_eq!(server.log.count(DROPPED), dropped, "{}", server.log.text());
    let line = server.log.wait_for(DROPPED);
    assert!(
        line.contains(&format!(
            "{budget} connections were in their handshake or waiting for a permit"
        )),
        "{line}"
    );
}

#[test]
fn a_flood_of_connections_that_come_and_go_never_exhausts_descriptors() {
    // Connections dropped to make room close with their task, later than they leave the
    // budget: the accept loop must wait for that, or a flood that keeps connecting and leaving
    // piles them up past the descriptor limit and every accept fails with EMFILE.
    // The flood comes from 127.0.0.1, the real clients from ::1: a full budget drops the flood's
    // own handshakes, not those of the clients it outpaces.
    let fixture = Fixture::new("churn");
    let mut env = fixture.env("tcp://[::]:0");
    env.extend([("MAX_CONNECTIONS", "100"), ("LOG_LEVEL", "debug")]);
    let server = Server::start_with("prlimit", &["--nofile=256", "--", ECHO], None, &env);
    let Address::Tcp(listening) = server.address() else {
        panic!("tcp")
    };
    let addr = SocketAddr::new("::1".parse().unwrap(), listening.port());
    let flooded = SocketAddr::from(([127, 0, 0, 1], listening.port()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut open = std::collections::VecDeque::new();
                let mut opened = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(conn) = TcpStream::connect(flooded) {
                        open.push_back(conn);
                        opened += 1;
                    }
                    if open.len() > 300 {
                        open.pop_front();
                    }
                }
                opened
            })
        })
        .collect();
    // Real clients keep being served throughout.
    let client = fixture.client();
    for i in 0..20 {
        let line = format!("real {i}\n");
        assert_eq!(client.echo(addr, "localhost", &line).unwrap().text, line);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    assert!(opened > 1000, "the flood opened only {opened} connections");
    assert!(server.log.count(DROPPED) > 0, "{}", server.log.text());
    assert_eq!(
        server.log.count("Too many open files"),
        0,
        "{}",
        server.log.text()
    );
}

/// A TLS connection to the `session` server, which answers each line with itself.
struct Session(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl Session {
    /// TLS over `tcp`, returned once the client has finished its handshake.
    fn over(client: &Client, mut tcp: TcpStream) -> Session {
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = "localhost".try_into().unwrap();
        let mut tls = rustls::ClientConnection::new(client.config(), name).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).unwrap();
        }
        Session(rustls::StreamOwned::new(tls, tcp))
    }

    fn open(client: &Client, addr: SocketAddr) -> Session {
        Session::over(client, TcpStream::connect(addr).unwrap())
    }

    /// Sends `line` and reads the line that comes back.
    fn exchange(&mut self, line: &str) -> String {
        self.0.write_all(line.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0];
        while reply.last() != Some(&b'\n') {
            match self.0.read(&mut byte) {
                Ok(1) => reply.push(byte[0]),
                other => panic!("reading the answer to {line:?}: {other:?}"),
            }
        }
        String::from_utf8(reply).unwrap()
    }
}

#[test]
fn max_connections_counts_connections_whose_handshake_is_done() {
    let fixture = Fixture::new("tls-limit");
    let (server, addr) = fixture.start(
        SESSION,
        &[("MAX_CONNECTIONS", "4"), ("TLS_HANDSHAKE_TIMEOUT", "30")],
    );
    // Accepted, and not yet started on its handshake: it takes no connection slot meanwhile.
    let Conn::Tcp(late) = open_accepted(server.pid(), &Address::Tcp(addr)) else {
        panic!("tcp")
    };
    let client = fixture.client();
    let mut held: Vec<Session> = (0..4)
        .map(|i| {
            let mut session = Session::open(&client, addr);
            let line = format!("held {i}\n");
            assert_eq!(session.exchange(&line), line);
            session
        })
        .collect();

    // Its handshake done, it is the fifth: it is served once one of the four closes.
    let mut late = Session::over(&client, late);
    let late = std::thread::spawn(move || {
        let reply = late.exchange("late\n");
        (late, reply)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!late.is_finished(), "served beyond MAX_CONNECTIONS");
    drop(held.pop());
    let (_late, reply) = late.join().unwrap();
    assert_eq!(reply, "late\n");

    // Four served again: a new client waits until one closes.
    let next = std::thread::spawn(move || Session::open(&client, addr).exchange("next\n"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!next.is_finished(), "served beyond MAX_CONNECTIONS");
    drop(held.pop());
    assert_eq!(next.join().unwrap(), "next\n");
}

#[test]
fn an_incoming_handler_gets_connections_whose_handshake_is_done() {
    let fixture = Fixture::new("tls-pool");
    let (server, addr) = fixture.start(
        POOL,
        &[("MAX_CONNECTIONS", "1"), ("TLS_HANDSHAKE_TIMEOUT", "30")],
    );
    let _silent = open_accepted(server.pid(), &Address::Tcp(addr));
    let reply = fixture.client().echo(addr, "localhost", "pool\n").unwrap();
    assert_eq!(reply.text, "pool\n");
}

#[test]
fn tls_startup_errors_exit_2_naming_the_variable() {
    let fixture = Fixture::new("tls-errors");
    let dir = fixture.dir.path();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let other = fixture.ca.issue(dir, "other", &["localhost"]);
    let cert = fixture.server.certificate.to_str().unwrap();
    let key = fixture.server.key.to_str().unwrap();
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("TLS_KEY", key), ("TLS_CERTIFICATE", missing)],
            "TLS_CERTIFICATE=",
        ),
        (
            &[("TLS_KEY", missing), ("TLS_CERTIFICATE", cert)],
            "TLS_KEY=",
        ),
        (
            &[
                ("TLS_KEY", key),
                ("TLS_CERTIFICATE", garbage.to_str().unwrap()),
            ],
            "TLS_CERTIFICATE=",
        ),
        (
            &[
                ("TLS_KEY", key),
                ("TLS_CERTIFICATE", empty.to_str().unwrap()),
            ],
            "TLS_CERTIFICATE=",
        ),
        // A key file holding only a certificate: no key in it.
        (
            &[("TLS_KEY", cert), ("TLS_CERTIFICATE", cert)],
            "no private key",
        ),
        // A key that belongs to another certificate.
        (
            &[
                ("TLS_KEY", other.key.to_str().unwrap()),
                ("TLS_CERTIFICATE", cert),
            ],
            "does not belong",
        ),
        (
            &[
                ("TLS_KEY", key),
                ("TLS_CERTIFICATE", cert),
                ("CLIENT_TLS_CERTIFICATE_CA", missing),
            ],
            "CLIENT_TLS_CERTIFICATE_CA=",
        ),
    ];
    let socket = dir.join("never.sock");
    let bind = format!("unix://{}", socket.display());
    for (env, needle) in cases {
        let mut all = vec![("BIND", bind.as_str())];
        all.extend_from_slice(env);
        let mut server = Server::start(ECHO, &all);
        let status = server.wait_exit(DEADLINE);
        let line = server.log.wait_for("uninterruptible:");
        assert_eq!(status.code(), Some(2), "{env:?}: {line}");
        assert!(line.contains(needle), "{env:?}: {line}");
        assert!(!socket.exists(), "nothing is bound: {env:?}");
    }
}

#[test]
fn tls_over_a_unix_socket() {
    let fixture = Fixture::new("tls-unix");
    let path = fixture.dir.join("tls.sock");
    let bind = format!("unix://{}", path.display());
    let server = Server::start(ECHO, &fixture.env(&bind));
    assert_eq!(server.address(), Address::Unix(path.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (connector, name) = fixture.client().connector("localhost");
        let unix = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut tls = connector.connect(name, unix).await.unwrap();
        tls.write_all(b"tls over unix\n").await.unwrap();
        let mut reply = String::new();
        tls.read_to_string(&mut reply).await.unwrap();
        reply
    });
    assert_eq!(reply, "tls over unix\n");
}

#[test]
fn openssl_s_client_talks_to_the_server() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("skipped: openssl is not installed");
        return;
    }
    let fixture = Fixture::new("s-client");
    let (_server, addr) = fixture.start(ECHO, &[]);
    let ca = fixture.dir.join("ca.pem");
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(Path::new(&ca))
        .args(["-verify_return_error", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello from openssl\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("hello from openssl"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One `openssl s_client` exchange over `version` (`-tls1_2` or `-tls1_3`), saving the session
/// to `out` and, with `resume`, offering the one saved there; what it printed.
fn s_client_session(
    addr: SocketAddr,
    ca: &Path,
    version: &str,
    session: &Path,
    resume: bool,
) -> String {
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
            version,
        ])
        .arg("-CAfile")
        .arg(ca)
        // Reads until the server closes, not until its own input ends.
        .arg("-ign_eof")
        .arg("-sess_out")
        .arg(session);
    if resume {
        command.arg("-sess_in").arg(session);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The echo answers one line and closes: s_client has read the session tickets by then.
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"resume me\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        stdout.contains("resume me"),
        "no echo: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// What s_client says of the handshake: `New, TLSv1.3, ...` or `Reused, TLSv1.3, ...`.
fn handshake_kind(stdout: &str) -> String {
    stdout
        .lines()
        .find(|line| line.starts_with("New, ") || line.starts_with("Reused, "))
        .unwrap_or_else(|| panic!("no handshake line in {stdout}"))
        .split(',')
        .take(2)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_tls_session_from_before_a_restart_resumes_after_it_over_tls_1_2_and_1_3() {
    let fixture = Fixture::new("resume");
    let pidfile = fixture.dir.join("echo.pid");
    let (_server, addr) = fixture.start(ECHO, &[("PID_FILE", pidfile.to_str().unwrap())]);
    let ca = fixture.dir.join("ca.pem");
    for (version, name) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let session = fixture.dir.join(&format!("session{version}.pem"));
        let first = s_client_session(addr, &ca, version, &session, false);
        assert_eq!(handshake_kind(&first), format!("New, {name}"));
        // The same process resumes it.
        let again = s_client_session(addr, &ca, version, &session, true);
        assert_eq!(handshake_kind(&again), format!("Reused, {name}"));

        let old = wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
        send(old, SIGUSR1);
        wait_for("a new pid", DEADLINE, || {
            read_pidfile(&pidfile).filter(|&p| p != old)
        });
        wait_for("the old process to exit", DEADLINE, || {
            (!alive(old)).then_some(())
        });
        // A new process, with the old one's ticket keys: the session still resumes.
        let after = s_client_session(addr, &ca, version, &session, true);
        assert_eq!(
            handshake_kind(&after),
            format!("Reused, {name}"),
            "{version} after a restart"
        );
    }
}
