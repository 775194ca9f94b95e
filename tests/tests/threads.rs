//! A program that owns its `main` and its threads: it builds a tokio runtime before calling
//! `uninterruptible::run`, or calls it from inside that runtime. A restart signal must restart
//! it, never kill it, whichever thread the kernel gives the signal to.

use std::path::Path;
use uninterruptible_tests::{
    DEADLINE, SIGTERM, SIGUSR1, Server, TempDir, alive, echo, read_pidfile, send,
    start_with_pidfile, wait_for,
};

const OWN_THREADS: &str = env!("CARGO_BIN_EXE_own_threads");

/// Restarts the server `times` times, checking each new process answers and each old one
/// exits 0 (its log says so); then stops it with TERM.
fn restarts_and_stops(server: &mut Server, pidfile: &Path, times: usize) {
    let address = server.address();
    let mut current = server.pid();
    for i in 0..times {
        send(current, SIGUSR1);
        let new = wait_for("the pidfile to name a new process", DEADLINE, || {
            read_pidfile(pidfile).filter(|&p| p != current)
        });
        wait_for(&format!("process {current} to exit"), DEADLINE, || {
            (!alive(current)).then_some(())
        });
        assert_eq!(echo(&address, &format!("{i}\n")).unwrap(), format!("{i}\n"));
        current = new;
    }
    assert_eq!(
        server.log.count("exiting with 0"),
        times,
        "every retired process exits 0: {}",
        server.log.text()
    );
    send(current, SIGTERM);
    wait_for(&format!("process {current} to exit"), DEADLINE, || {
        (!alive(current)).then_some(())
    });
    assert_eq!(server.log.count("exiting with 0"), times + 1);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn usr1_restarts_a_program_whose_own_runtime_started_first() {
    let dir = TempDir::new("own-threads");
    let (mut server, pidfile) = start_with_pidfile(OWN_THREADS, &dir, "tcp://127.0.0.1:0", &[]);
    restarts_and_stops(&mut server, &pidfile, 10);
}

#[test]
fn run_called_inside_a_runtime_serves_and_restarts() {
    let dir = TempDir::new("in-runtime");
    let (mut server, pidfile) = start_with_pidfile(
        OWN_THREADS,
        &dir,
        "tcp://127.0.0.1:0",
        &[("IN_RUNTIME", "1")],
    );
    restarts_and_stops(&mut server, &pidfile, 5);
}
