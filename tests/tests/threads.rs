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

/// The signals this library blocks (TERM, INT, USR1, HUP) in `pid`'s threads named `name`: a
/// `SigBlk` mask of /proc per thread.
fn blocked_in(pid: u32, name: &str) -> Vec<u64> {
    // Bit n - 1 for signal n: TERM 15, INT 2, USR1 10, HUP 1.
    const OURS: u64 = 0x4203;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut masks = Vec::new();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        masks.push(mask & OURS);
    }
    masks
}

#[test]
fn a_restarted_program_starts_as_the_first_did_with_the_signals_unblocked() {
    // A process inherits the mask of the thread that starts it: the new copy's own threads,
    // started before `run`, must not begin with the signals blocked (a signal sent to one of
    // them would then never be read), nor anything they start.
    let dir = TempDir::new("own-threads-mask");
    let (mut server, pidfile) = start_with_pidfile(OWN_THREADS, &dir, "tcp://127.0.0.1:0", &[]);
    let first = server.pid();
    assert_eq!(blocked_in(first, "own-worker"), vec![0, 0]);
    send(first, SIGUSR1);
    let second = wait_for("the pidfile to name a new process", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != first)
    });
    assert_eq!(blocked_in(second, "own-worker"), vec![0, 0]);
    send(second, SIGTERM);
    wait_for(&format!("process {second} to exit"), DEADLINE, || {
        (!alive(second)).then_some(())
    });
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
}
