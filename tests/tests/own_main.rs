//! A program that owns its `main` (`examples/own_main.rs`): its own flags over the
//! environment, async start-up before serving, and restarts asked from its own code through a
//! `Handle`, under load, with the outcome the control socket gives.

use std::time::Duration;
use uninterruptible_tests::load::{Options, with_load};
use uninterruptible_tests::{
    Address, DEADLINE, SIGUSR1, Server, TempDir, echo, free_port, read_pidfile, send, wait_for,
};

const OWN_MAIN: &str = env!("CARGO_BIN_EXE_own_main");

/// Starts own_main with `args` and a pidfile in `dir`; waits until it serves.
fn start(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> (Server, std::path::PathBuf) {
    let pidfile = dir.join("server.pid");
    let mut all = vec![("PID_FILE", pidfile.to_str().unwrap())];
    all.extend_from_slice(env);
    let server = Server::start_with(OWN_MAIN, args, None, &all);
    server.address();
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    (server, pidfile)
}

#[test]
fn a_flag_wins_over_port_and_the_start_up_state_is_served() {
    let dir = TempDir::new("own-main-flags");
    let greeting = dir.join("greeting");
    std::fs::write(&greeting, "welcome\nsecond line\n").unwrap();
    let (flag_port, env_port) = (free_port(), free_port());
    let (server, _) = start(
        &dir,
        &[
            "--port",
            &flag_port.to_string(),
            "--greeting-file",
            greeting.to_str().unwrap(),
        ],
        &[("PORT", &env_port.to_string())],
    );
    let address = server.address();
    assert_eq!(
        address,
        Address::Tcp(format!("127.0.0.1:{flag_port}").parse().unwrap())
    );
    assert_eq!(echo(&address, "hi\n").unwrap(), "welcome\nhi\n");
    // Across a restart the new process builds its state again, from the same flags.
    send(server.pid(), SIGUSR1);
    server.log.wait_for_count("listening on ", 2);
    assert_eq!(echo(&address, "again\n").unwrap(), "welcome\nagain\n");
}

#[test]
fn a_bad_flag_exits_2_naming_it() {
    let out = std::process::Command::new(OWN_MAIN)
        .args(["--port", "http"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "--port=\"http\" is invalid: expected a port number from 0 to 65535\n"
    );
}

#[test]
fn restarts_asked_from_the_programs_own_handle_lose_no_request() {
    let dir = TempDir::new("own-main-handle");
    let (mut server, pidfile) = start(&dir, &["--port", "0"], &[]);
    let address = server.address();
    let ((), stats) = with_load(Options::plain(&address, 8, Duration::ZERO), || {
        let mut last = (server.pid(), 1);
        for _ in 0..20 {
            // Each answer names a new process, which then is the service.
            let answer = echo(&address, "restart\n").unwrap();
            let next = match answer.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["ok", pid, generation] => (pid.parse().unwrap(), generation.parse().unwrap()),
                _ => panic!("restart answered {answer:?}"),
            };
            assert!(
                next.1 > last.1 && next.0 != last.0,
                "{answer:?} after {last:?}"
            );
            assert_eq!(read_pidfile(&pidfile), Some(next.0));
            last = next;
        }
    });
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 0);
    // `stop` drains the current process as TERM does.
    let current = read_pidfile(&pidfile).unwrap();
    let stopped = echo(&address, "stop\n");
    assert_eq!(
        stopped.as_deref().ok(),
        Some("stopping\n"),
        "{stopped:?}: {}",
        server.log.text()
    );
    wait_for("the last process to exit", DEADLINE, || {
        (!uninterruptible_tests::alive(current)).then_some(())
    });
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    assert_eq!(server.log.count("exiting with 0"), 21);
}
