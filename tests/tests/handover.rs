//! Application state handed to the next process (`save`, and `init` receiving it), with
//! `examples/counter.rs`: a count survives 100 restarts exactly, and a new version that cannot
//! read the old format says so and starts empty.

use uninterruptible_tests::{
    Conn, DEADLINE, SIGUSR1, TempDir, alive, read_pidfile, send, start_with_pidfile, wait_for,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_counter");

fn ask(server: &uninterruptible_tests::Server, line: &str) -> String {
    Conn::open(&server.address()).unwrap().echo(line).unwrap()
}

/// Restarts the server named by `pidfile` and waits until the old process has exited: from then
/// on every request reaches the new one.
fn restart(pidfile: &std::path::Path) -> u32 {
    let old = read_pidfile(pidfile).unwrap();
    send(old, SIGUSR1);
    let new = wait_for("a new pid", DEADLINE, || {
        read_pidfile(pidfile).filter(|&pid| pid != old)
    });
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(old)).then_some(())
    });
    new
}

#[test]
fn a_count_survives_a_hundred_restarts_exactly() {
    let dir = TempDir::new("handover");
    let (server, pidfile) = start_with_pidfile(COUNTER, &dir, "tcp://127.0.0.1:0", &[]);
    for n in 1..=100 {
        assert_eq!(ask(&server, "incr\n"), format!("{n}\n"));
        restart(&pidfile);
    }
    assert_eq!(ask(&server, "get\n"), "100\n");
    server.log.wait_for("generation 101");
    server
        .log
        .wait_for("received 8 bytes of state (format 1) from the old process");
}

#[test]
fn a_version_that_cannot_read_the_old_format_says_so_and_starts_empty() {
    let dir = TempDir::new("handover-format");
    // The next process is started as a new version: format 2.
    let start = format!("env HANDOVER_FORMAT=2 {COUNTER}");
    let (server, pidfile) = start_with_pidfile(
        COUNTER,
        &dir,
        "tcp://127.0.0.1:0",
        &[("START_COMMAND", &start)],
    );
    assert_eq!(ask(&server, "incr\n"), "1\n");
    assert_eq!(ask(&server, "incr\n"), "2\n");
    restart(&pidfile);
    server.log.wait_for(
        "counter: cannot read handed-over state of format 1 (this version reads format 2): starting at 0",
    );
    assert_eq!(ask(&server, "get\n"), "0\n");
    // The new version hands its own format on.
    assert_eq!(ask(&server, "incr\n"), "1\n");
    restart(&pidfile);
    assert_eq!(ask(&server, "get\n"), "1\n");
}
