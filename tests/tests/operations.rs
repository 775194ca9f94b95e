//! Restarts driven the way operators and service managers drive them, under load: TERM to a
//! retiring process or to the whole process group, TERM right after USR1, a new process that
//! says ready and exits, a restart abandoned after the new process accepted connections, a
//! closed log pipe, a burst of clients, an old process killed mid-handoff, and logs shared by
//! several generations. Each fault these tests cover once lost connections or killed the server.

use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use uninterruptible_tests::fake_old::FakeOld;
use uninterruptible_tests::load::{self, Options};
use uninterruptible_tests::{
    Address, DEADLINE, SIGCONT, SIGKILL, SIGSTOP, SIGTERM, SIGUSR1, Server, TempDir, alive, echo,
    open_accepted, parse_address, read_pidfile, send, start_with_pidfile, started_pid, wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const PROBE: &str = env!("CARGO_BIN_EXE_handoff_probe");

/// Sends USR1 to `old` and waits until the pidfile names the new process; returns its pid.
fn restart(pidfile: &Path, old: u32) -> u32 {
    send(old, SIGUSR1);
    wait_for("the pidfile to name a new process", DEADLINE, || {
        read_pidfile(pidfile).filter(|&p| p != old)
    })
}

fn wait_gone(pid: u32) {
    wait_for(&format!("process {pid} to exit"), DEADLINE, || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn term_to_a_retiring_process_is_logged_and_its_connections_complete() {
    let dir = TempDir::new("retiring-term");
    let (mut server, pidfile) = start_with_pidfile(ECHO, &dir, "tcp://127.0.0.1:0", &[]);
    let address = server.address();
    let old = server.pid();
    let held = open_accepted(old, &address);
    let new = restart(&pidfile, old);
    server.log.wait_for("draining 1 open connections");

    server.signal(SIGTERM);
    server
        .log
        .wait_for("TERM received while retiring: draining goes on (a second TERM exits now)");
    assert!(alive(old), "the retiring process goes on draining");
    assert_eq!(
        held.echo("held across TERM\n").unwrap(),
        "held across TERM\n"
    );
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    assert_eq!(
        server.log.count("second TERM received"),
        0,
        "{}",
        server.log.text()
    );
    assert_eq!(read_pidfile(&pidfile), Some(new));
    assert_eq!(echo(&address, "new\n").unwrap(), "new\n");
}

#[test]
fn a_second_term_to_a_retiring_process_exits_at_once() {
    let dir = TempDir::new("retiring-term-term");
    let (mut server, pidfile) = start_with_pidfile(ECHO, &dir, "tcp://127.0.0.1:0", &[]);
    let address = server.address();
    let old = server.pid();
    let _held = open_accepted(old, &address);
    let new = restart(&pidfile, old);
    server.log.wait_for("draining 1 open connections");
    server.signal(SIGTERM);
    server.log.wait_for("TERM received while retiring");
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
    server
        .log
        .wait_for("second TERM received: exiting now with 1 connections open");
    assert_eq!(
        read_pidfile(&pidfile),
        Some(new),
        "the pidfile is the new process's"
    );
    assert_eq!(echo(&address, "new\n").unwrap(), "new\n");
}

#[test]
fn a_stop_of_the_whole_process_group_lets_every_process_finish_its_connections() {
    // What a service manager's stop does: TERM to every process of the service at once.
    let dir = TempDir::new("group-term");
    let socket = dir.join("echo.sock");
    let bind = format!("unix://{}", socket.display());
    let (mut server, pidfile) = start_with_pidfile(ECHO, &dir, &bind, &[]);
    let address = server.address();
    let old = server.pid();
    let on_old = open_accepted(old, &address);
    let new = restart(&pidfile, old);
    // From here only the new process accepts.
    server.log.wait_for("draining 1 open connections");
    let on_new = open_accepted(new, &address);

    kill(Pid::from_raw(-(old as i32)), SIGTERM).unwrap();
    server.log.wait_for("TERM received while retiring");
    server.log.wait_for("TERM received: stopping");
    assert_eq!(on_old.echo("old\n").unwrap(), "old\n");
    assert_eq!(on_new.echo("new\n").unwrap(), "new\n");
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    wait_gone(new);
    assert!(!pidfile.exists(), "the last process removes the pidfile");
    assert!(!socket.exists(), "the last process removes the socket file");
}

#[test]
fn term_right_after_usr1_under_load_loses_no_request() {
    // `kill -USR1 $P; kill -TERM $P`, 0 to 3 ms apart: the restart goes on, and the TERM'd
    // process retires once the new one is ready.
    let dir = TempDir::new("usr1-term");
    let (server, pidfile) = start_with_pidfile(ECHO, &dir, "tcp://127.0.0.1:0", &[]);
    let address = server.address();
    let ((), stats) = load::with_load(Options::plain(&address, 8, Duration::ZERO), || {
        for round in 0..20u64 {
            let old = read_pidfile(&pidfile).unwrap();
            send(old, SIGUSR1);
            std::thread::sleep(Duration::from_micros(round % 4 * 1000));
            send(old, SIGTERM);
            server
                .log
                .wait_until(&format!("round {round}: a process after {old}"), || {
                    read_pidfile(&pidfile).filter(|&p| p != old)
                });
            server
                .log
                .wait_until(&format!("round {round}: {old} to exit"), || {
                    (!alive(old)).then_some(())
                });
        }
    });
    println!("TERM 0-3 ms after USR1, 20 rounds: {stats}");
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 20, "{stats}");
    assert_eq!(
        server.log.count("restart failed"),
        0,
        "{}",
        server.log.text()
    );
    assert_eq!(echo(&address, "after\n").unwrap(), "after\n");
}

#[test]
fn usr1_and_term_pending_together_are_a_restart_then_a_retirement() {
    // Both queued while the process cannot run (stopped; on a busy machine, not scheduled):
    // the restart is taken first whatever order they were sent in, and nothing is lost.
    let dir = TempDir::new("pending-together");
    let (mut server, pidfile) = start_with_pidfile(ECHO, &dir, "tcp://127.0.0.1:0", &[]);
    let old = server.pid();
    send(old, SIGSTOP);
    send(old, SIGTERM);
    send(old, SIGUSR1);
    send(old, SIGCONT);
    let new = server
        .log
        .wait_until("the pidfile to name a new process", || {
            read_pidfile(&pidfile).filter(|&p| p != old)
        });
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    let text = server.log.text();
    let usr1 = text.find("USR1 received: restarting").unwrap();
    let term = text
        .find("TERM received: this process stops once the restart in progress ends")
        .unwrap();
    assert!(usr1 < term, "{text}");
    assert_eq!(echo(&server.address(), "new\n").unwrap(), "new\n");
    assert!(alive(new));
}

#[test]
fn a_new_process_that_says_ready_and_exits_at_once_is_a_success() {
    // Seen before as "exited before ready": the old process then took the pidfile back and
    // served on beside the new generation.
    let dir = TempDir::new("ready-exit");
    let command = format!("{PROBE} --ready-and-exit");
    let (mut server, pidfile) = start_with_pidfile(
        ECHO,
        &dir,
        "tcp://127.0.0.1:0",
        &[("START_COMMAND", &command)],
    );
    let old = server.pid();
    for _ in 0..5 {
        // Each attempt either is taken as the success it is, or the test fails: an old process
        // that takes it for a failure serves on and is asked again.
        if !alive(old) {
            break;
        }
        send(old, SIGUSR1);
        server.log.wait_for("started new process");
        server
            .log
            .wait_for("is ready: this process stops accepting");
    }
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    assert_eq!(server.log.count("started new process"), 1);
    assert_eq!(
        server.log.count("restart failed"),
        0,
        "{}",
        server.log.text()
    );
    assert_ne!(
        read_pidfile(&pidfile),
        Some(old),
        "the pidfile is not taken back"
    );
}

#[test]
fn a_new_process_that_hangs_up_is_given_time_to_exit_and_its_exit_status_is_the_reason() {
    // A new process that fails at start-up (a broken certificate, say) has connected to the
    // handoff socket and hangs up before it reports why: it must not be killed mid-report.
    let dir = TempDir::new("hang-up");
    let command = format!("{PROBE} --hang-up-and-exit 3");
    let (server, pidfile) = start_with_pidfile(
        ECHO,
        &dir,
        "tcp://127.0.0.1:0",
        &[("START_COMMAND", &command)],
    );
    let old = server.pid();
    send(old, SIGUSR1);
    let failure = server.log.wait_for("restart failed");
    assert!(
        failure.contains("exited before ready (exit status: 3)"),
        "{failure}"
    );
    assert_eq!(read_pidfile(&pidfile), Some(old));
    assert_eq!(echo(&server.address(), "old\n").unwrap(), "old\n");
}

#[test]
fn a_restart_abandoned_after_the_new_process_accepted_loses_no_request() {
    // The new process serves on the socket but is not ready within READY_TIMEOUT: the old one
    // asks it to drain what it accepted (it used to SIGKILL it, losing those connections).
    let dir = TempDir::new("abandon");
    let command = format!("{PROBE} --serve-without-ready");
    let (server, pidfile) = start_with_pidfile(
        ECHO,
        &dir,
        "tcp://127.0.0.1:0",
        &[("START_COMMAND", &command), ("READY_TIMEOUT", "1")],
    );
    let address = server.address();
    let old = server.pid();
    // Clients hold each connection 100 ms: the new process always has some accepted.
    let ((), stats) = load::with_load(
        Options::plain(&address, 16, Duration::from_millis(100)),
        || {
            send(old, SIGUSR1);
            let child = started_pid(&server.log.wait_for("started new process"));
            server.log.wait_for("was not ready within 1s");
            server.log.wait_for(&format!(
                "new process {child} drains the connections it accepted"
            ));
            server.log.wait_for(&format!(
                "abandoned new process {child} exited (exit status: 0)"
            ));
        },
    );
    println!("abandoned restart: {stats}");
    assert_eq!(stats.failed(), 0, "{stats}");
    assert_eq!(read_pidfile(&pidfile), Some(old));
    assert!(alive(old));
    assert_eq!(
        echo(&address, "old serves on\n").unwrap(),
        "old serves on\n"
    );
}

#[test]
fn an_abandoned_new_process_drains_and_leaves_pidfile_and_socket_file_alone() {
    let dir = TempDir::new("abandoned-new");
    let tmp = TempDir::new("abandoned-new-tmp");
    let old = FakeOld::new(&tmp);
    let path = dir.join("echo.sock");
    let listening = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let pidfile = dir.join("echo.pid");
    let mut server = Server::start(
        ECHO,
        &[
            ("BIND", &format!("unix://{}", path.display())),
            ("PID_FILE", pidfile.to_str().unwrap()),
            (
                "FILE_DESCRIPTOR_SERVER_PATH",
                old.socket().to_str().unwrap(),
            ),
        ],
    );
    let mut handoff = old.hand_over(&listening);
    assert_eq!(handoff.read_line(), "ready\n");
    let address = Address::Unix(path.clone());
    let held = open_accepted(server.pid(), &address);

    handoff.send("abort\n");
    assert_eq!(handoff.read_line(), "aborting\n");
    server
        .log
        .wait_for("the old process abandoned the restart that started this one: stopping");
    assert_eq!(held.echo("accepted\n").unwrap(), "accepted\n");
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    assert!(path.exists(), "the socket file is the old process's");
    assert_eq!(
        read_pidfile(&pidfile),
        Some(server.pid()),
        "the pidfile is left for the old process to take back"
    );
}

#[test]
fn the_new_process_removes_the_handoff_socket_and_directory() {
    // An old process SIGKILLed after the handoff cannot remove them: the new one does, as soon
    // as it holds the socket. (The fake old process here never removes them.)
    let tmp = TempDir::new("handoff-dir");
    let old = FakeOld::new(&tmp);
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = format!("tcp://{}", listening.local_addr().unwrap());
    let server = Server::start(
        ECHO,
        &[
            ("BIND", &bind),
            (
                "FILE_DESCRIPTOR_SERVER_PATH",
                old.socket().to_str().unwrap(),
            ),
        ],
    );
    let mut handoff = old.hand_over(&listening);
    assert_eq!(handoff.read_line(), "ready\n");
    assert!(!old.socket().exists(), "handoff socket removed");
    assert!(!old.dir().exists(), "handoff directory removed");
    drop(handoff);
    assert_eq!(echo(&server.address(), "x\n").unwrap(), "x\n");
}

#[test]
fn an_old_process_killed_during_the_handoff_leaves_nothing_in_tmpdir() {
    let dir = TempDir::new("killed-old");
    let tmp = TempDir::new("killed-old-tmp");
    let (server, pidfile) = start_with_pidfile(
        ECHO,
        &dir,
        "tcp://127.0.0.1:0",
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    let address = server.address();
    let old = server.pid();
    send(old, SIGUSR1);
    server
        .log
        .wait_for("handed the listening sockets to new process");
    send(old, SIGKILL);
    let new = wait_for("the new process in the pidfile", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != old)
    });
    assert_eq!(
        echo(&address, "after the kill\n").unwrap(),
        "after the kill\n"
    );
    wait_for("no handoff directory left", DEADLINE, || {
        (std::fs::read_dir(tmp.path()).unwrap().count() == 0).then_some(())
    });
    assert!(alive(new));
}

#[test]
fn a_closed_log_pipe_does_not_stop_the_server() {
    // `server 2>&1 | head -1`: once `head` exits, every log write fails with EPIPE.
    let dir = TempDir::new("pipe");
    let pidfile = dir.join("echo.pid");
    let (reader, writer) = std::io::pipe().unwrap();
    let mut command = Command::new(ECHO);
    command
        .env("BIND", "tcp://127.0.0.1:0")
        .env("PID_FILE", &pidfile)
        .env_remove("RUST_LOG")
        .env_remove("LOG_LEVEL")
        .env_remove("LOG_PATH")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().unwrap();
    drop(command);
    let _group = Group(child.id());
    let mut first = String::new();
    BufReader::new(reader).read_line(&mut first).unwrap();
    let address = parse_address(&first);
    // The reader is gone now.
    let old = child.id();
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));

    let new = restart(&pidfile, old);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the old process retired normally: {status}"
    );
    assert_eq!(echo(&address, "still here\n").unwrap(), "still here\n");

    send(new, SIGTERM);
    wait_gone(new);
    assert!(
        !pidfile.exists(),
        "the last process stopped cleanly and removed its pidfile"
    );
}

/// Kills a process group when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.0 as i32)), SIGKILL);
    }
}

/// The listen queue length of a listening socket, as `ss` reports it.
fn listen_queue(filter: &[&str]) -> u32 {
    let out = Command::new("ss")
        .args(["-lnH"])
        .args(filter)
        .output()
        .expect("ss (Debian package iproute2) is installed by .ci/run");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no socket: {text}"));
    // Netid State Recv-Q Send-Q ...: for a listening socket Send-Q is the queue length.
    let fields: Vec<&str> = line.split_whitespace().collect();
    let at = fields.iter().position(|f| *f == "LISTEN").unwrap();
    fields[at + 2].parse().unwrap()
}

#[test]
fn the_listen_queue_is_1024_by_default_and_backlog_sets_it() {
    let server = Server::start(ECHO, &[("BIND", "tcp://127.0.0.1:0")]);
    let Address::Tcp(addr) = server.address() else {
        unreachable!()
    };
    let port = format!("sport = :{}", addr.port());
    assert_eq!(listen_queue(&["-t", &port]), 1024);

    let dir = TempDir::new("backlog");
    let path = dir.join("echo.sock");
    let unix = Server::start(
        ECHO,
        &[
            ("BIND", &format!("unix://{}", path.display())),
            ("BACKLOG", "300"),
        ],
    );
    unix.address();
    assert_eq!(listen_queue(&["-x", "src", path.to_str().unwrap()]), 300);
}

#[test]
fn a_burst_of_600_clients_waits_in_the_queue_without_a_dropped_syn() {
    // With one connection held and MAX_CONNECTIONS=1 the server accepts no more: every other
    // client waits in the kernel's queue. With the old queue of 128, the 130th client's SYN was
    // dropped and its connect took a second.
    let server = Server::start(
        ECHO,
        &[("BIND", "tcp://127.0.0.1:0"), ("MAX_CONNECTIONS", "1")],
    );
    let address = server.address();
    let Address::Tcp(addr) = address else {
        unreachable!()
    };
    let held = open_accepted(server.pid(), &address);
    let mut queued: Vec<TcpStream> = Vec::new();
    for i in 0..600 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => queued.push(stream),
            Err(e) => panic!("client {i} was not queued: {e}"),
        }
    }
    assert_eq!(held.echo("held\n").unwrap(), "held\n");
    drop(queued);
}

#[test]
fn every_log_line_names_its_process_and_a_drain_reports_progress() {
    let dir = TempDir::new("attribution");
    let (server, pidfile) = start_with_pidfile(ECHO, &dir, "tcp://127.0.0.1:0", &[]);
    let address = server.address();
    let old = server.pid();
    let held = open_accepted(old, &address);
    let new = restart(&pidfile, old);

    let started = server.log.wait_for("started new process");
    assert_eq!(started_pid(&started), new);
    assert!(
        started.contains(&format!(
            "pid={old} generation=1: started new process {new} (generation 2): {ECHO}"
        )),
        "the start command is logged: {started}"
    );
    let draining = server.log.wait_for("draining 1 open connections");
    assert!(
        draining.contains(&format!("pid={old} generation=1:")),
        "{draining}"
    );
    let listening = server.log.wait_for(&format!("(pid {new}, generation 2)"));
    assert!(
        listening.contains(&format!("pid={new} generation=2:")),
        "{listening}"
    );
    // No deadline: the retiring process says how many connections it still waits for.
    let progress = server
        .log
        .wait_for("draining: 1 connections still open after 10 s");
    assert!(
        progress.contains(&format!("pid={old} generation=1:")),
        "{progress}"
    );
    assert!(progress.contains("no DRAIN_TIMEOUT"), "{progress}");
    for line in server.log.lines() {
        assert!(
            line.contains(&format!("pid={old} generation=1: "))
                || line.contains(&format!("pid={new} generation=2: ")),
            "a line that names no process: {line}"
        );
    }
    assert_eq!(held.echo("done\n").unwrap(), "done\n");
    wait_gone(old);
}

#[test]
fn a_restart_asked_before_the_old_process_answered_is_not_lost_to_a_term() {
    // USR1 then TERM reach a new process whose `ok` from the old one is not read yet: the USR1
    // waits for the answer, and the TERM must not drop it (the server would stop instead).
    let tmp = TempDir::new("deferred");
    let old = FakeOld::new(&tmp);
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = Address::Tcp(listening.local_addr().unwrap());
    let bind = format!("tcp://{}", listening.local_addr().unwrap());
    let mut server = Server::start(
        ECHO,
        &[
            ("BIND", &bind),
            (
                "FILE_DESCRIPTOR_SERVER_PATH",
                old.socket().to_str().unwrap(),
            ),
        ],
    );
    let mut handoff = old.hand_over(&listening);
    assert_eq!(handoff.read_line(), "ready\n");
    server.signal(SIGUSR1);
    server
        .log
        .wait_for("USR1 received: restarting once the old process has let go of the socket");
    server.signal(SIGTERM);
    server
        .log
        .wait_for("TERM received: this process stops once the restart in progress ends");
    assert!(alive(server.pid()));

    handoff.send("ok\n");
    server
        .log
        .wait_for("the old process let go of the socket: restarting");
    let next = started_pid(&server.log.wait_for("started new process"));
    server.log.wait_for(&format!(
        "new process {next} is ready: this process stops accepting"
    ));
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    drop(listening);
    assert_eq!(echo(&address, "next\n").unwrap(), "next\n");
    assert!(alive(next));
    send(next, SIGKILL);
}
