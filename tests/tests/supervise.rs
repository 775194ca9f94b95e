//! Supervised mode (`SUPERVISE=true`): the first process stays as the supervisor, its pid never
//! changes, and it restarts, starts again and drains the serving process. Real processes, real
//! signals, under load.

use std::time::{Duration, Instant};
use uninterruptible_tests::load::{Options, Stats, with_load};
use uninterruptible_tests::{
    DEADLINE, SIGINT, SIGKILL, SIGTERM, SIGUSR1, Server, TempDir, alive, children, control,
    control_restart, control_status, echo, open_accepted, read_pidfile, send, start_with_pidfile,
    wait_for, wait_until_draining,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

/// An echo server in supervised mode on a free TCP port with a pidfile in `dir`, plus `env`.
fn supervised(dir: &TempDir, env: &[(&str, &str)]) -> (Server, std::path::PathBuf) {
    let mut all = vec![("SUPERVISE", "true")];
    all.extend_from_slice(env);
    start_with_pidfile(ECHO, dir, "tcp://127.0.0.1:0", &all)
}

/// The pid of the serving process of generation `generation`, from the supervisor's log.
fn serving(server: &Server, generation: u64) -> u32 {
    let needle = format!("(generation {generation}) is ready");
    let line = server.log.wait_for(&needle);
    let after = line
        .split("serving process ")
        .nth(1)
        .expect("a serving process line");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// Waits until the supervisor's only live child is `pid`, and none is a zombie.
fn wait_for_only_child(supervisor: u32, pid: u32) {
    wait_for(
        &format!("process {pid} to be the only child of {supervisor}, and no zombie"),
        DEADLINE,
        || {
            (children(supervisor) == [(pid, 'S')] || children(supervisor) == [(pid, 'R')])
                .then_some(())
        },
    );
}

#[test]
fn two_hundred_restarts_under_load_and_the_pid_never_changes() {
    let dir = TempDir::new("supervise-storm");
    let (server, pidfile) = supervised(&dir, &[]);
    let supervisor = server.pid();
    assert_eq!(read_pidfile(&pidfile), Some(supervisor));
    let address = server.address();
    let first = serving(&server, 1);
    assert_ne!(first, supervisor, "the supervisor never serves itself");

    let ((), stats) = with_load(Options::plain(&address, 16, Duration::ZERO), || {
        for i in 0..200u64 {
            send(supervisor, SIGUSR1);
            serving(&server, i + 2);
            assert_eq!(read_pidfile(&pidfile), Some(supervisor));
        }
    });
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 200, "{stats}");
    let last = serving(&server, 201);
    wait_for_only_child(supervisor, last);
    assert_eq!(server.log.count("is ready: process"), 200);
    eprintln!("200 supervised restarts under 16 clients: {stats}");
}

/// Kills the serving process `kills` times under load and returns, for each, the time from the
/// kill until a new client is answered, and the load's counts.
fn kill_under_load(server: &Server, kills: u64, pause: Duration) -> (Vec<Duration>, Stats) {
    let address = server.address();
    with_load(Options::plain(&address, 8, Duration::ZERO), || {
        let mut took = Vec::new();
        for generation in 1..=kills {
            let pid = serving(server, generation);
            std::thread::sleep(pause);
            let killed = Instant::now();
            send(pid, SIGKILL);
            // The client connects at once (the supervisor holds the socket) and is answered
            // when the next serving process accepts.
            assert_eq!(echo(&address, "back\n").unwrap(), "back\n");
            took.push(killed.elapsed());
            serving(server, generation + 1);
        }
        took
    })
}

#[test]
fn a_killed_serving_process_is_started_again_and_no_client_is_refused() {
    let dir = TempDir::new("supervise-kill");
    let (server, pidfile) = supervised(&dir, &[]);
    let supervisor = server.pid();
    // Killed 5 times, each after serving a while: started again at once every time? No: only a
    // process that served 10 s counts as stable, so the pauses grow 0, 0.1, 0.2, 0.4, 0.8 s.
    let (took, stats) = kill_under_load(&server, 5, Duration::from_millis(200));
    // Only the requests in flight on the killed process are lost; nobody is refused or left
    // waiting.
    assert_eq!(stats.refused, 0, "{stats}");
    assert_eq!(stats.timeout, 0, "{stats}");
    assert_eq!(stats.wrong_reply + stats.other, 0, "{stats}");
    assert!(
        stats.failed() <= 5 * 8,
        "at most the clients in flight: {stats}"
    );
    assert_eq!(read_pidfile(&pidfile), Some(supervisor));
    for pause in ["0.1 s", "0.2 s", "0.4 s", "0.8 s"] {
        assert_eq!(
            server
                .log
                .count(&format!("starting a serving process again in {pause}")),
            1,
            "{}",
            server.log.text()
        );
    }
    assert!(took[0] < took[4], "the pause grows: {took:?}");
    eprintln!(
        "serving process killed 5 times under 8 clients: answered again after {:?}; {stats}",
        took
    );
}

#[test]
fn term_drains_the_serving_processes_and_exits_0() {
    let dir = TempDir::new("supervise-term");
    let socket = dir.join("echo.sock");
    let ctl = dir.join("app.ctl");
    let (mut server, pidfile) = start_with_pidfile(
        ECHO,
        &dir,
        &format!("unix://{}", socket.display()),
        &[
            ("SUPERVISE", "true"),
            ("CONTROL_SOCKET", ctl.to_str().unwrap()),
        ],
    );
    let address = server.address();
    let first = serving(&server, 1);
    let held_by_first = open_accepted(first, &address);
    let (second, _) = control_restart(&ctl);
    wait_until_draining(&server, first);
    let held_by_second = open_accepted(second, &address);
    send(server.pid(), SIGTERM);
    server.log.wait_for("stopping the serving processes");
    // The socket stays until every serving process has drained.
    assert!(socket.exists() && alive(server.pid()));
    assert_eq!(held_by_first.echo("first\n").unwrap(), "first\n");
    assert_eq!(held_by_second.echo("second\n").unwrap(), "second\n");
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    assert!(!socket.exists(), "socket file removed");
    assert!(!ctl.exists(), "control socket removed");
    assert!(!pidfile.exists(), "pidfile removed");
    assert!(!alive(first) && !alive(second));
}

#[test]
fn status_and_restart_on_the_supervisors_control_socket() {
    let dir = TempDir::new("supervise-control");
    let ctl = dir.join("app.ctl");
    let (server, _) = supervised(&dir, &[("CONTROL_SOCKET", ctl.to_str().unwrap())]);
    let address = server.address();
    let supervisor = server.pid();
    let first = serving(&server, 1);
    let held = open_accepted(first, &address);
    let (second, generation) = control_restart(&ctl);
    assert_eq!(generation, 2);
    // The first process retires when it reads the TERM the supervisor sent it, just after the
    // answer.
    wait_for(
        "the first process to be listed as retiring",
        DEADLINE,
        || {
            let status = control_status(&ctl);
            let seen: Vec<(u32, u64, String, String)> = status
                .into_iter()
                .map(|p| (p.pid, p.generation, p.role, p.connections))
                .collect();
            let expected = [
                (supervisor, 0, "supervisor", "0"),
                (first, 1, "retiring", "1"),
                (second, 2, "serving", "0"),
            ]
            .map(|(pid, generation, role, connections)| {
                (pid, generation, role.to_owned(), connections.to_owned())
            });
            (seen == expected).then_some(())
        },
    );
    eprintln!(
        "supervised status during a drain:\n{}",
        control(&ctl, "status\n")
    );
    assert_eq!(held.echo("done\n").unwrap(), "done\n");
    wait_for_only_child(supervisor, second);
    // USR1 to a serving process is not a restart: the supervisor restarts.
    send(second, SIGUSR1);
    server
        .log
        .wait_for("ignored, the supervisor restarts this process");
    assert_eq!(serving(&server, 2), second);
}

#[test]
fn a_failed_restart_leaves_the_serving_process_serving() {
    let dir = TempDir::new("supervise-failed");
    let ctl = dir.join("app.ctl");
    let flag = dir.join("broken");
    // Starts the server, unless the release is "broken".
    let command = format!("/bin/sh -c 'test ! -e {} && exec {ECHO}'", flag.display());
    let (server, _) = supervised(
        &dir,
        &[
            ("CONTROL_SOCKET", ctl.to_str().unwrap()),
            ("START_COMMAND", &command),
        ],
    );
    let first = serving(&server, 1);
    std::fs::write(&flag, "").unwrap();
    let answer = control(&ctl, "restart\n");
    assert!(
        answer.starts_with("failed new process ")
            && answer.ends_with(&format!(
                " exited before ready (exit status: 1); start command: {command}\n"
            )),
        "{answer:?}"
    );
    assert_eq!(echo(&server.address(), "on\n").unwrap(), "on\n");
    wait_for_only_child(server.pid(), first);
    std::fs::remove_file(&flag).unwrap();
    let (second, generation) = control_restart(&ctl);
    assert_eq!(generation, 3, "the failed attempt was generation 2");
    wait_for_only_child(server.pid(), second);
}

#[test]
fn orphans_of_serving_processes_are_reaped() {
    let dir = TempDir::new("supervise-orphans");
    // Each serving process starts with an orphan beside it: a sleep whose parent has gone.
    let command = format!("/bin/sh -c '(sleep 0.3 &); exec {ECHO}'");
    let (server, _) = supervised(&dir, &[("START_COMMAND", &command)]);
    let supervisor = server.pid();
    // A USR1 while a serving process is being started is ignored: wait for the first one.
    serving(&server, 1);
    for generation in 2..=6 {
        send(supervisor, SIGUSR1);
        serving(&server, generation);
    }
    // The sleeps were given to the supervisor (the subreaper), which reaps them.
    let last = serving(&server, 6);
    wait_for_only_child(supervisor, last);
}

#[test]
fn a_server_restarted_into_supervised_mode_hands_over_once_the_serving_process_is_ready() {
    let dir = TempDir::new("supervise-switch");
    let command = format!("env SUPERVISE=true {ECHO}");
    let (server, pidfile) = start_with_pidfile(
        ECHO,
        &dir,
        "tcp://127.0.0.1:0",
        &[("START_COMMAND", &command)],
    );
    let address = server.address();
    let old = server.pid();
    let ((), stats) = with_load(Options::plain(&address, 8, Duration::ZERO), || {
        send(old, SIGUSR1);
        wait_for("the old process to exit", DEADLINE, || {
            (!alive(old)).then_some(())
        });
    });
    assert_eq!(stats.failed(), 0, "{stats}");
    // The new process is a supervisor (generation 2), its serving process generation 3.
    let supervisor = read_pidfile(&pidfile).unwrap();
    server.log.wait_for(&format!(
        "pid={supervisor} generation=2: supervising on {}",
        match &address {
            uninterruptible_tests::Address::Tcp(a) => format!("tcp://{a}"),
            uninterruptible_tests::Address::Unix(p) => format!("unix://{}", p.display()),
        }
    ));
    let serving = serving(&server, 3);
    assert_eq!(children(supervisor).len(), 1);
    assert_eq!(children(supervisor)[0].0, serving);
    assert_eq!(echo(&address, "supervised\n").unwrap(), "supervised\n");
}

/// Sends `signal` to every process of the server's process group, as a terminal's Ctrl-C or
/// systemd's default `KillMode=control-group` does.
fn signal_group(server: &Server, signal: nix::sys::signal::Signal) {
    let group = nix::unistd::Pid::from_raw(-(server.pid() as i32));
    nix::sys::signal::kill(group, signal).unwrap();
}

#[test]
fn a_stop_sent_to_the_whole_process_group_is_one_stop() {
    for (signal, name) in [(SIGTERM, "TERM"), (SIGINT, "INT")] {
        let dir = TempDir::new("supervise-group-stop");
        let (mut server, _pidfile) = supervised(&dir, &[]);
        let address = server.address();
        let first = serving(&server, 1);
        let held = open_accepted(first, &address);
        signal_group(&server, signal);
        server.log.wait_for("stopping the serving processes");
        wait_until_draining(&server, first);
        // The serving process had it from the sender and again from its supervisor: one stop.
        assert_eq!(held.echo("held\n").unwrap(), "held\n", "{name}");
        assert_eq!(server.wait_exit(DEADLINE).code(), Some(0), "{name}");
        assert!(!alive(first));
        // The last lines may still be on their way through the log pipe.
        server.log.wait_for_count("exiting with 0", 2);
        assert_eq!(
            server.log.count(&format!("second {name} received")),
            0,
            "{}",
            server.log.text()
        );
        assert_eq!(
            server.log.count("exiting with 0"),
            2,
            "{}",
            server.log.text()
        );
    }
}

#[test]
fn a_second_stop_sent_to_the_whole_process_group_exits_now() {
    let dir = TempDir::new("supervise-group-stop-twice");
    let (mut server, _pidfile) = supervised(&dir, &[]);
    let address = server.address();
    let first = serving(&server, 1);
    let _held = open_accepted(first, &address);
    signal_group(&server, SIGINT);
    wait_until_draining(&server, first);
    signal_group(&server, SIGINT);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
    wait_for("the serving process to exit", DEADLINE, || {
        (!alive(first)).then_some(())
    });
}

#[test]
fn clients_that_connect_while_a_supervised_service_stops_are_refused() {
    let dir = TempDir::new("supervise-stop-refuses");
    let (mut server, _pidfile) = supervised(&dir, &[]);
    let address = server.address();
    let first = serving(&server, 1);
    let held = open_accepted(first, &address);
    send(server.pid(), SIGTERM);
    wait_until_draining(&server, first);
    // Nobody accepts any more: refused at once, so the client can go elsewhere, as a plain
    // server's clients are.
    match uninterruptible_tests::Conn::open(&address) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a client connected to a service that is stopping"),
    }
    assert_eq!(held.echo("held\n").unwrap(), "held\n");
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn a_serving_process_whose_supervisor_is_killed_drains_and_exits() {
    let dir = TempDir::new("supervise-killed");
    let port = uninterruptible_tests::free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let (server, pidfile) = start_with_pidfile(ECHO, &dir, &bind, &[("SUPERVISE", "true")]);
    let supervisor = server.pid();
    let address = server.address();
    let first = serving(&server, 1);
    let held = open_accepted(first, &address);
    let descriptors = || std::fs::read_dir(format!("/proc/{first}/fd")).map_or(0, |d| d.count());
    let before = descriptors();
    // Clients that hold their connection a while before sending: the supervisor dies once at
    // least four of them are accepted and in flight.
    let load = Options::plain(&address, 8, Duration::from_millis(200));
    let ((), stats) = with_load(load, || {
        server
            .log
            .wait_until("load clients in flight on the serving process", || {
                (descriptors() >= before + 4).then_some(())
            });
        send(supervisor, SIGKILL);
        server
            .log
            .wait_for(&format!("the supervisor (process {supervisor}) is gone"));
        assert_eq!(held.echo("held\n").unwrap(), "held\n");
        wait_for("the orphaned serving process to exit", DEADLINE, || {
            (!alive(first)).then_some(())
        });
    });
    // Every client it had accepted was answered; afterwards the port refuses, as a stopped
    // service's does.
    assert_eq!(
        (
            stats.reset,
            stats.eof,
            stats.timeout,
            stats.wrong_reply,
            stats.other
        ),
        (0, 0, 0, 0, 0),
        "{stats}"
    );
    assert!(stats.ok > 0, "{stats}");
    assert_eq!(
        read_pidfile(&pidfile),
        None,
        "the dead supervisor's pidfile is removed"
    );
    // The service manager's next start binds the same port.
    let (again, _) = start_with_pidfile(ECHO, &dir, &bind, &[("SUPERVISE", "true")]);
    assert_eq!(echo(&again.address(), "again\n").unwrap(), "again\n");
}

#[test]
fn a_serving_process_whose_supervisor_dies_during_its_start_never_serves_alone() {
    // The supervisor is gone before it handed the sockets over: the serving process must not
    // bind the service's port itself.
    let port = uninterruptible_tests::free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let supervisor = std::process::id().to_string();
    let mut orphan = Server::start(
        ECHO,
        &[
            ("BIND", &bind),
            ("UNINTERRUPTIBLE_SUPERVISOR", &supervisor),
            ("FILE_DESCRIPTOR_SERVER_PATH", "/nonexistent/handoff.sock"),
        ],
    );
    assert_eq!(orphan.wait_exit(DEADLINE).code(), Some(1));
    orphan
        .log
        .wait_for("cannot take the listening sockets from the supervisor");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());

    // Killed after it made the handoff socket: nobody listens there, and the serving process
    // removes what the supervisor left in TMPDIR.
    let tmp = TempDir::new("supervisor-killed-at-start");
    let dir = tmp.join("uninterruptible-1-2-left");
    std::fs::create_dir(&dir).unwrap();
    let socket = dir.join("handoff.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut orphan = Server::start(
        ECHO,
        &[
            ("BIND", &bind),
            ("UNINTERRUPTIBLE_SUPERVISOR", &supervisor),
            ("FILE_DESCRIPTOR_SERVER_PATH", socket.to_str().unwrap()),
        ],
    );
    assert_eq!(orphan.wait_exit(DEADLINE).code(), Some(1));
    let line = orphan
        .log
        .wait_for("cannot take the listening sockets from the supervisor");
    assert!(line.contains("Connection refused"), "{line}");
    assert!(!dir.exists(), "the handoff directory was left behind");

    // Gone right after handing them over: the serving process stops instead of serving on.
    let tmp = TempDir::new("supervisor-gone-at-start");
    let old = uninterruptible_tests::fake_old::FakeOld::new(&tmp);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut orphan = Server::start(
        ECHO,
        &[
            ("BIND", &format!("tcp://{}", listener.local_addr().unwrap())),
            ("UNINTERRUPTIBLE_SUPERVISOR", &supervisor),
            ("UNINTERRUPTIBLE_KEEP_SOCKET_FILES", "1"),
            (
                "FILE_DESCRIPTOR_SERVER_PATH",
                old.socket().to_str().unwrap(),
            ),
        ],
    );
    drop(old.hand_over(&listener));
    orphan
        .log
        .wait_for(&format!("the supervisor (process {supervisor}) is gone"));
    assert_eq!(orphan.wait_exit(DEADLINE).code(), Some(0));
}
