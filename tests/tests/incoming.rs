//! The whole-listener handler shape (`async fn(Incoming)`), with `examples/pool.rs`: four
//! workers taking connections from one `Incoming`.

use std::time::Duration;
use uninterruptible_tests::load::{self, Options};
use uninterruptible_tests::{
    Conn, DEADLINE, SIGTERM, SIGUSR1, Server, TempDir, echo, open_accepted, start_with_pidfile,
};

const POOL: &str = env!("CARGO_BIN_EXE_pool");

#[test]
fn the_pool_echoes_and_restarts_under_load_without_a_failed_request() {
    let dir = TempDir::new("pool-storm");
    let (server, pidfile) = start_with_pidfile(POOL, &dir, "tcp://127.0.0.1:0", &[]);
    let address = server.address();
    assert_eq!(echo(&address, "pool\n").unwrap(), "pool\n");
    let (restarts, stats) = load::with_load(Options::plain(&address, 16, Duration::ZERO), || {
        load::restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(200), None)
    });
    println!("pool, 200 restarts: {stats}");
    assert_eq!(restarts.handoffs.len(), 200);
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 200, "{stats}");
    server.log.wait_for("generation 201");
}

#[test]
fn max_connections_counts_the_streams_the_handler_holds() {
    // One worker's connection held open: with MAX_CONNECTIONS=1 the next client waits in the
    // queue until it is released, then is served.
    let server = Server::start(
        POOL,
        &[("BIND", "tcp://127.0.0.1:0"), ("MAX_CONNECTIONS", "1")],
    );
    let address = server.address();
    let held = open_accepted(server.pid(), &address);
    let waiting = std::thread::spawn({
        let address = address.clone();
        move || echo(&address, "second\n")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "the second client waits for the first to end"
    );
    assert_eq!(held.echo("first\n").unwrap(), "first\n");
    assert_eq!(waiting.join().unwrap().unwrap(), "second\n");
}

#[test]
fn term_lets_the_workers_finish_then_the_process_exits() {
    let mut server = Server::start(POOL, &[("BIND", "tcp://127.0.0.1:0")]);
    let address = server.address();
    let held = open_accepted(server.pid(), &address);
    server.signal(SIGTERM);
    server
        .log
        .wait_for("draining: waiting for the handler to return");
    assert!(Conn::open(&address).is_err(), "no longer accepting");
    assert_eq!(held.echo("last\n").unwrap(), "last\n");
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
}
