//! Start-up work before ready (`init`), with `examples/stateful.rs`: a restart waits for the new
//! process's initialiser, one whose initialiser fails says why and leaves the old process
//! serving, and a first start that fails exits 1 naming it.

use std::process::Command;
use std::time::Duration;
use uninterruptible_tests::load::{Options, with_load};
use uninterruptible_tests::{
    Address, Conn, DEADLINE, SIGTERM, SIGUSR1, Server, TempDir, control, control_restart,
    control_status, echo, read_pidfile, start_with_pidfile, wait_for,
};

const STATEFUL: &str = env!("CARGO_BIN_EXE_stateful");

/// The stateful example on a free port with a pidfile and a control socket; its initialiser
/// fails while `db-down` exists in the directory. Returns the directory, the control socket,
/// the server, its pidfile and the file that takes the database down.
fn start(
    name: &str,
    env: &[(&str, &str)],
) -> (
    TempDir,
    std::path::PathBuf,
    Server,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = TempDir::new(name);
    let ctl = dir.join("app.ctl");
    let down = dir.join("db-down");
    let mut all = vec![
        ("CONTROL_SOCKET", ctl.to_str().unwrap()),
        ("POOL_FAIL_FILE", down.to_str().unwrap()),
        ("DATABASE_URL", "postgres://db/app"),
    ];
    all.extend_from_slice(env);
    let (server, pidfile) = start_with_pidfile(STATEFUL, &dir, "tcp://127.0.0.1:0", &all);
    (dir, ctl, server, pidfile, down)
}

fn ask(address: &Address, line: &str) -> String {
    Conn::open(address).unwrap().echo(line).unwrap()
}

#[test]
fn the_handler_gets_what_init_built() {
    let (_dir, _ctl, server, _pidfile, _down) = start("init-state", &[("POOL_SIZE", "7")]);
    let address = server.address();
    assert_eq!(
        ask(&address, "pool\n"),
        "pool of 7 connections to postgres://db/app\n"
    );
    assert_eq!(ask(&address, "hi\n"), "hi\n");
}

#[test]
fn a_restart_whose_init_fails_answers_failed_with_its_message_and_the_old_process_serves_on() {
    let (_dir, ctl, server, pidfile, down) = start("init-fails", &[]);
    let address = server.address();
    let old = read_pidfile(&pidfile).unwrap();
    std::fs::write(&down, "connection refused\n").unwrap();

    let answer = control(&ctl, "restart\n");
    let new = server.log.wait_for("started new process ");
    let new_pid = uninterruptible_tests::started_pid(&new);
    assert_eq!(
        answer,
        format!(
            "failed new process {new_pid} failed to start: cannot connect to postgres://db/app: connection refused; start command: {STATEFUL}\n"
        )
    );
    // The old process's log says the same, and it serves on.
    server.log.wait_for(&format!(
        "restart failed: new process {new_pid} failed to start: cannot connect to postgres://db/app: connection refused;"
    ));
    assert_eq!(read_pidfile(&pidfile), Some(old));
    assert_eq!(ask(&address, "still there\n"), "still there\n");
    let status = control_status(&ctl);
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!((status[0].pid, status[0].role.as_str()), (old, "serving"));

    // The database is back: the next restart works.
    std::fs::remove_file(&down).unwrap();
    let (pid, generation) = control_restart(&ctl);
    assert_eq!(generation, 3);
    wait_for("the new pidfile", DEADLINE, || {
        (read_pidfile(&pidfile) == Some(pid)).then_some(())
    });
    assert_eq!(
        ask(&address, "pool\n"),
        "pool of 4 connections to postgres://db/app\n"
    );
}

#[test]
fn a_restart_whose_init_takes_3_s_loses_no_request_and_is_listed_as_starting() {
    let (_dir, ctl, server, pidfile, _down) = start("init-slow", &[("POOL_CONNECT_MS", "3000")]);
    let address = server.address();
    let old = read_pidfile(&pidfile).unwrap();
    let ((restarted, listed), stats) =
        with_load(Options::plain(&address, 8, Duration::ZERO), || {
            let asking = std::thread::spawn({
                let ctl = ctl.clone();
                move || control_restart(&ctl)
            });
            // While the new process connects its pool, status lists it as starting.
            let listed = wait_for("the new process listed as starting", DEADLINE, || {
                let status = control_status(&ctl);
                status
                    .iter()
                    .find(|p| p.role == "starting")
                    .map(|p| (p.generation, status.len()))
            });
            (asking.join().unwrap(), listed)
        });
    assert_eq!(listed, (2, 2));
    assert_eq!(restarted.1, 2);
    assert_ne!(restarted.0, old);
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 100, "{stats}");
    // The old process answered everything while the new one started: it retired only once the
    // new one was ready, 3 s later.
    let ready = server
        .log
        .wait_for(&format!("pid={} generation=2: ready ", restarted.0));
    assert!(ready.contains(" after the restart started"), "{ready}");
    // The wait is the initialiser's, and its step says so.
    let init_ms: f64 = ready
        .split(", init ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no init step: {ready}"));
    assert!(init_ms >= 3000.0, "{ready}");
}

#[test]
fn a_first_start_whose_init_fails_exits_1_naming_it_and_leaves_nothing() {
    let dir = TempDir::new("init-first");
    let down = dir.join("db-down");
    std::fs::write(&down, "no route to host").unwrap();
    let socket = dir.join("app.sock");
    let bind = format!("unix://{}", socket.display());
    let pidfile = dir.join("app.pid");
    let output = Command::new(STATEFUL)
        .env("BIND", &bind)
        .env("PID_FILE", &pidfile)
        .env("POOL_FAIL_FILE", &down)
        .env("CONTROL_SOCKET", dir.join("app.ctl"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "uninterruptible: the initialiser failed: cannot connect to memory://: no route to host\n"
    );
    assert!(!socket.exists(), "the socket file is removed");
    assert!(!pidfile.exists(), "no pidfile is written");
    assert!(
        !dir.join("app.ctl").exists(),
        "the control socket file is removed"
    );
}

#[test]
fn term_while_init_runs_at_first_start_exits_0_without_serving() {
    let dir = TempDir::new("init-term");
    let port = uninterruptible_tests::free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let mut server = Server::start(STATEFUL, &[("BIND", &bind), ("POOL_CONNECT_MS", "60000")]);
    // Bound (the port takes connections into its queue) but not serving yet.
    wait_for("the port bound", DEADLINE, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    server.signal(SIGTERM);
    let status = server.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", server.log.text());
    server
        .log
        .wait_for("TERM received while starting: exiting before serving");
    assert_eq!(server.log.count("listening on "), 0);
    assert!(echo(&Address::Tcp(([127, 0, 0, 1], port).into()), "hi\n").is_err());
    drop(dir);
}

#[test]
fn a_first_start_is_listed_as_starting_and_restarts_asked_meanwhile_follow_it() {
    let dir = TempDir::new("init-first-status");
    let ctl = dir.join("app.ctl");
    let pidfile = dir.join("app.pid");
    let port = uninterruptible_tests::free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let server = Server::start(
        STATEFUL,
        &[
            ("BIND", &bind),
            ("PID_FILE", pidfile.to_str().unwrap()),
            ("CONTROL_SOCKET", ctl.to_str().unwrap()),
            ("POOL_CONNECT_MS", "3000"),
        ],
    );
    // Its control socket answers while the initialiser runs, and lists it as starting.
    let listed = wait_for("the control socket to answer", DEADLINE, || {
        uninterruptible_tests::try_control(&ctl, "status\n").ok()?;
        Some(control_status(&ctl))
    });
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].pid, listed[0].generation, listed[0].role.as_str()),
        (server.pid(), 1, "starting")
    );
    assert_eq!(
        server.log.count("listening on "),
        0,
        "{}",
        server.log.text()
    );

    // A restart asked by a signal, and one asked on the control socket, wait for the start to
    // end, then are one restart.
    server.signal(SIGUSR1);
    server
        .log
        .wait_for("USR1 received while starting: restarting once this process serves");
    let (pid, generation) = control_restart(&ctl);
    assert_ne!(pid, server.pid());
    assert_eq!(generation, 2);
    wait_for("the new pidfile", DEADLINE, || {
        (read_pidfile(&pidfile) == Some(pid)).then_some(())
    });
    assert_eq!(
        server.log.count("started new process "),
        1,
        "{}",
        server.log.text()
    );
    assert_eq!(
        ask(&server.address(), "pool\n"),
        "pool of 4 connections to memory://\n"
    );
}

#[test]
fn a_restart_asked_while_a_first_start_fails_is_told_why() {
    let dir = TempDir::new("init-first-fails-asked");
    let ctl = dir.join("app.ctl");
    let down = dir.join("db-down");
    std::fs::write(&down, "db is down").unwrap();
    let port = uninterruptible_tests::free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let mut server = Server::start(
        STATEFUL,
        &[
            ("BIND", &bind),
            ("CONTROL_SOCKET", ctl.to_str().unwrap()),
            ("POOL_FAIL_FILE", down.to_str().unwrap()),
            ("POOL_CONNECT_MS", "3000"),
        ],
    );
    wait_for("the control socket to answer", DEADLINE, || {
        uninterruptible_tests::try_control(&ctl, "status\n").ok()
    });
    let answer = control(&ctl, "restart\n");
    assert_eq!(
        answer,
        "failed this process did not start: the initialiser failed: cannot connect to memory://: db is down\n"
    );
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
}

#[test]
fn a_second_term_during_a_restart_ends_the_new_process_too() {
    let (_dir, _ctl, mut server, pidfile, _down) =
        start("init-exit-now", &[("POOL_CONNECT_MS", "5000")]);
    let old = read_pidfile(&pidfile).unwrap();
    uninterruptible_tests::send(old, uninterruptible_tests::SIGUSR1);
    let started = server.log.wait_for("started new process ");
    let new = uninterruptible_tests::started_pid(&started);
    // The new process has the sockets and runs its 5 s init: two TERMs end the old one now.
    server
        .log
        .wait_for("handed the listening sockets to new process");
    uninterruptible_tests::send(old, SIGTERM);
    server
        .log
        .wait_for("TERM received: this process stops once the restart in progress ends");
    uninterruptible_tests::send(old, SIGTERM);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
    server
        .log
        .wait_for(&format!("killing new process {new}: stopping at once"));
    wait_for("the new process to be gone", DEADLINE, || {
        (!uninterruptible_tests::alive(new)).then_some(())
    });
}
