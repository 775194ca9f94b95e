//! The control socket of a server that restarts itself (no supervisor): `restart` answers with
//! the outcome, `status` lists every live process, the socket is handed over with the listeners.
//! Asked from Rust and with `socat`.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use uninterruptible_tests::load::{Options, with_load};
use uninterruptible_tests::{
    Address, Conn, DEADLINE, ProcessStatus, SIGCONT, SIGSTOP, SIGTERM, Server, TempDir, control,
    control_restart, control_status, echo, open_accepted, read_pidfile, start_with_pidfile,
    try_control, wait_for, wait_until_draining,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

/// An echo server on a free TCP port with a pidfile and a control socket, plus `env`; returns
/// its directory, the control socket's path, the server and its pidfile.
fn start(name: &str, env: &[(&str, &str)]) -> (TempDir, PathBuf, Server, PathBuf) {
    let dir = TempDir::new(name);
    let ctl = dir.join("app.ctl");
    let mut all = vec![("CONTROL_SOCKET", ctl.to_str().unwrap())];
    all.extend_from_slice(env);
    let (server, pidfile) = start_with_pidfile(ECHO, &dir, "tcp://127.0.0.1:0", &all);
    (dir, ctl, server, pidfile)
}

/// A start command that waits half a second before it runs the server: a restart long enough
/// to ask something while it runs.
fn slow_start() -> String {
    format!("/bin/sh -c 'sleep 0.5 && exec {ECHO}'")
}

fn roles(status: &[ProcessStatus]) -> Vec<(u64, &str, &str)> {
    status
        .iter()
        .map(|p| (p.generation, p.role.as_str(), p.connections.as_str()))
        .collect()
}

#[test]
fn restart_answers_with_the_new_process_under_load_and_the_socket_is_handed_over() {
    let (_dir, ctl, server, pidfile) = start("control-restart", &[]);
    let address = server.address();
    let meta = std::fs::metadata(&ctl).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let inode = meta.ino();

    let (answers, stats) = with_load(Options::plain(&address, 8, Duration::ZERO), || {
        (0..50)
            .map(|_| {
                std::panic::catch_unwind(|| control_restart(&ctl))
                    .unwrap_or_else(|_| panic!("the log:\n{}", server.log.text()))
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 0, "{stats}");
    for (i, (_, generation)) in answers.iter().enumerate() {
        assert_eq!(*generation, i as u64 + 2, "{answers:?}");
    }
    // The answer names the process the pidfile names: it came once the new one was serving.
    let (last_pid, _) = answers[answers.len() - 1];
    assert_eq!(read_pidfile(&pidfile), Some(last_pid));
    // Handed over, never bound again.
    assert_eq!(std::fs::metadata(&ctl).unwrap().ino(), inode);
    eprintln!("50 restarts on the control socket under 8 clients: {stats}");
}

#[test]
fn two_restarts_asked_at_once_get_one_restart_and_the_same_answer() {
    // The second request comes while the first restart runs.
    let command = slow_start();
    let (_dir, ctl, server, pidfile) = start("control-coalesce", &[("START_COMMAND", &command)]);
    let first = std::thread::spawn({
        let ctl = ctl.clone();
        move || control(&ctl, "restart\n")
    });
    server.log.wait_for("started new process");
    let second = control(&ctl, "restart\n");
    let first = first.join().unwrap();
    assert_eq!(first, second);
    let pid = read_pidfile(&pidfile).unwrap();
    assert_eq!(first, format!("ok {pid} 2\n"));
    assert_eq!(server.log.count("started new process"), 1);
    assert_eq!(
        echo(&server.address(), "still one\n").unwrap(),
        "still one\n"
    );
}

#[test]
fn a_failed_restart_answers_why_and_the_old_process_serves_on() {
    let (_dir, ctl, server, pidfile) = start("control-failed", &[("START_COMMAND", "/bin/false")]);
    let answer = control(&ctl, "restart\n");
    let new = answer
        .strip_prefix("failed new process ")
        .and_then(|rest| {
            rest.strip_suffix(" exited before ready (exit status: 1); start command: /bin/false\n")
        })
        .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
    new.parse::<u32>().expect("the pid of the new process");
    assert_eq!(read_pidfile(&pidfile), Some(server.pid()));
    assert_eq!(echo(&server.address(), "on\n").unwrap(), "on\n");
    // And the control socket still answers (the echo's connection may take a moment to be
    // counted out).
    let status = wait_for("no open connection", DEADLINE, || {
        let status = control_status(&ctl);
        (roles(&status) == [(1, "serving", "0")]).then_some(status)
    });
    assert_eq!(status[0].pid, server.pid());
}

#[test]
fn status_lists_every_live_process_of_the_service() {
    let command = slow_start();
    let (_dir, ctl, server, pidfile) = start("control-status", &[("START_COMMAND", &command)]);
    let address = server.address();
    let first = server.pid();
    let held_by_first = open_accepted(first, &address);

    // While the restart runs, the new process is listed as starting.
    let restarting = std::thread::spawn({
        let ctl = ctl.clone();
        move || control_restart(&ctl)
    });
    server.log.wait_for("started new process");
    let during = control_status(&ctl);
    assert_eq!(roles(&during), [(1, "serving", "1"), (2, "starting", "?")]);
    let (second, _) = restarting.join().unwrap();
    wait_until_draining(&server, first);
    let held_by_second = open_accepted(second, &address);
    let (third, _) = control_restart(&ctl);
    wait_until_draining(&server, second);
    assert_eq!(read_pidfile(&pidfile), Some(third));

    // The third process reaches the first through the link the second handed it.
    let status = control_status(&ctl);
    assert_eq!(
        roles(&status),
        [
            (1, "retiring", "1"),
            (2, "retiring", "1"),
            (3, "serving", "0")
        ]
    );
    let pids: Vec<u32> = status.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [first, second, third]);
    eprintln!(
        "status with two processes retiring:\n{}",
        control(&ctl, "status\n")
    );

    // A process that exits leaves the list.
    assert_eq!(held_by_first.echo("one\n").unwrap(), "one\n");
    wait_for("the first process to leave the list", DEADLINE, || {
        let status = control_status(&ctl);
        (roles(&status) == [(2, "retiring", "1"), (3, "serving", "0")]).then_some(())
    });
    assert_eq!(held_by_second.echo("two\n").unwrap(), "two\n");
    wait_for("the second process to leave the list", DEADLINE, || {
        let status = control_status(&ctl);
        (roles(&status) == [(3, "serving", "0")]).then_some(())
    });
}

/// A connection to the control socket that `pid` has accepted.
fn accepted_by(pid: u32, ctl: &Path) -> UnixStream {
    match open_accepted(pid, &Address::Unix(ctl.to_owned())) {
        Conn::Unix(conn) => conn,
        Conn::Tcp(_) => unreachable!("a UNIX socket"),
    }
}

/// Reads to the end of the connection, which must come within `limit`, without an error.
fn read_to_end_within(conn: &mut UnixStream, limit: Duration) -> String {
    conn.set_read_timeout(Some(limit)).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .expect("the end of the connection, not an error");
    answer
}

#[test]
fn a_client_that_says_nothing_holds_nothing_and_one_accepted_before_a_restart_is_answered() {
    let (_dir, ctl, mut server, pidfile) = start("control-silent", &[]);
    let first = server.pid();
    let mut late = accepted_by(first, &ctl);
    let mut silent = accepted_by(first, &ctl);
    let connected = Instant::now();
    // Others are answered, and a restart happens, while they say nothing.
    let (pid, generation) = control_restart(&ctl);
    assert_eq!((Some(pid), generation), (read_pidfile(&pidfile), 2));
    // The first process has handed the socket over, and still answers the clients it had
    // accepted: by the new owner, to which it passes their requests on.
    late.write_all(b"status\n").unwrap();
    late.shutdown(std::net::Shutdown::Write).unwrap();
    let status = read_to_end_within(&mut late, DEADLINE);
    assert!(
        status.starts_with(&format!(
            "pid={first} generation=1 role=retiring connections=0 age="
        )) && status.contains(&format!(
            "\npid={pid} generation=2 role=serving connections=0 age="
        )) && status.ends_with("\n\n"),
        "{status:?}"
    );
    // The silent one is closed at the idle limit (10 s), and the first process exits then.
    assert_eq!(read_to_end_within(&mut silent, DEADLINE), "");
    assert!(
        connected.elapsed() >= Duration::from_secs(9),
        "{:?}",
        connected.elapsed()
    );
    wait_for("the first process to leave the list", DEADLINE, || {
        (roles(&control_status(&ctl)) == [(2, "serving", "0")]).then_some(())
    });
    // Its links close as it exits, a moment before the kernel has it gone.
    wait_for("the first process to exit", DEADLINE, || {
        (!uninterruptible_tests::alive(first)).then_some(())
    });

    // A request left without its end of line is answered at the idle limit.
    let mut unfinished = UnixStream::connect(&ctl).unwrap();
    unfinished.write_all(b"stat").unwrap();
    let since = Instant::now();
    assert_eq!(
        read_to_end_within(&mut unfinished, DEADLINE),
        "error request incomplete\n"
    );
    assert!(
        since.elapsed() >= Duration::from_secs(9),
        "{:?}",
        since.elapsed()
    );

    // And a stop is not held up by a silent client: it is closed at once.
    let mut silent_again = accepted_by(pid, &ctl);
    uninterruptible_tests::send(pid, SIGTERM);
    let stopping = Instant::now();
    assert_eq!(read_to_end_within(&mut silent_again, DEADLINE), "");
    assert!(
        stopping.elapsed() < Duration::from_secs(9),
        "{:?}",
        stopping.elapsed()
    );
    wait_for("the server to exit", DEADLINE, || {
        (!uninterruptible_tests::alive(pid)).then_some(())
    });
    assert!(!ctl.exists(), "the last process removes the control socket");
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
}

fn socat(ctl: &Path, request: &str) -> String {
    // -t: how long socat waits for the answer after sending; a restart takes up to READY_TIMEOUT.
    let output = Command::new("socat")
        .args(["-t", "70", "-", &format!("UNIX-CONNECT:{}", ctl.display())])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(request.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run socat (Debian package socat)");
    assert!(output.status.success(), "socat: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn socat_asks_restart_and_status_and_hears_unknown_commands_refused() {
    let (_dir, ctl, server, pidfile) = start("control-socat", &[]);
    let first = server.pid();
    let status = socat(&ctl, "status\n");
    assert!(
        status.starts_with(&format!(
            "pid={first} generation=1 role=serving connections=0 age="
        )),
        "{status:?}"
    );
    assert!(status.ends_with("\n\n"), "{status:?}");
    let restarted = socat(&ctl, "restart\n");
    let pid = read_pidfile(&pidfile).unwrap();
    assert_ne!(pid, first);
    assert_eq!(restarted, format!("ok {pid} 2\n"));
    assert_eq!(socat(&ctl, "reload\n"), "error unknown command\n");
    // Several requests on one connection, answered in order.
    let both = socat(&ctl, "status\nnonsense\n");
    assert!(
        both.starts_with(&format!("pid={pid} generation=2 role=serving")),
        "{both:?}"
    );
    assert!(both.ends_with("\n\nerror unknown command\n"), "{both:?}");
}

#[test]
fn a_control_socket_a_live_server_answers_on_is_refused_and_nothing_is_left() {
    let (dir, ctl, _first, _) = start("control-taken", &[]);
    let socket = dir.join("second.sock");
    let mut second = uninterruptible_tests::Server::start(
        ECHO,
        &[
            ("BIND", &format!("unix://{}", socket.display())),
            ("CONTROL_SOCKET", ctl.to_str().unwrap()),
        ],
    );
    assert_eq!(second.wait_exit(DEADLINE).code(), Some(1));
    let line = second.log.wait_for("uninterruptible:");
    assert!(
        line.contains(&format!("control socket {}", ctl.display()))
            && line.contains("a server is already answering on this socket"),
        "{line}"
    );
    assert!(!socket.exists(), "the listening socket file is removed");
    assert!(
        ctl.exists(),
        "the first server's control socket is left alone"
    );
}

/// Checks that `answer` is, line by line, what the README documents for `requests` (one per
/// line, answered in order): `ok <pid> <generation>` or `failed <reason>` for `restart`; status
/// lines then an empty line for `status`; `error unknown command` for anything else. A client
/// turned away gets `error busy: ...` instead, as its only line.
fn documented(requests: &str, answer: &str) -> Result<(), String> {
    let mut lines = answer.split_inclusive('\n');
    let wrong = |why: &str| Err(format!("{why}: {requests:?} answered {answer:?}"));
    if answer.starts_with("error busy: ") && answer.ends_with('\n') && answer.lines().count() == 1 {
        return Ok(());
    }
    for request in requests.lines() {
        match request {
            "restart" => match lines.next() {
                Some(line) if line.starts_with("failed ") && line.ends_with('\n') => {}
                Some(line) => {
                    let fields: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
                    let ok = matches!(fields.as_slice(), ["ok", pid, generation]
                        if pid.parse::<u32>().is_ok() && generation.parse::<u64>().is_ok());
                    if !ok || !line.ends_with('\n') {
                        return wrong("not an answer to restart");
                    }
                }
                None => return wrong("no answer to restart"),
            },
            "status" => {
                let mut serving = 0;
                loop {
                    match lines.next() {
                        Some("\n") => break,
                        Some(line) if status_line(line) => {
                            serving += usize::from(line.contains(" role=serving "));
                        }
                        Some(_) => return wrong("not a status line"),
                        None => return wrong("status not ended by an empty line"),
                    }
                }
                if serving != 1 {
                    return wrong("not one serving process");
                }
            }
            _ => {
                if lines.next() != Some("error unknown command\n") {
                    return wrong("not the answer to an unknown command");
                }
            }
        }
    }
    match lines.next() {
        None => Ok(()),
        Some(_) => wrong("more lines than requests"),
    }
}

/// `pid=… generation=… role=… connections=… age=…`, then `answered=no` for a process that did
/// not answer in time.
fn status_line(line: &str) -> bool {
    let Some(line) = line.strip_suffix('\n') else {
        return false;
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let number_or_unknown = |v: &str| v == "?" || v.parse::<u64>().is_ok();
    let (fixed, rest) = fields.split_at(fields.len().min(5));
    let fixed_ok = match fixed {
        [pid, generation, role, connections, age] => {
            pid.strip_prefix("pid=")
                .is_some_and(|v| v.parse::<u32>().is_ok())
                && generation
                    .strip_prefix("generation=")
                    .is_some_and(number_or_unknown)
                && role.strip_prefix("role=").is_some_and(|v| {
                    ["serving", "retiring", "starting", "supervisor", "?"].contains(&v)
                })
                && connections
                    .strip_prefix("connections=")
                    .is_some_and(number_or_unknown)
                && age.strip_prefix("age=").is_some_and(number_or_unknown)
        }
        _ => false,
    };
    fixed_ok && (rest.is_empty() || rest == ["answered=no"])
}

/// Asks `requests` with socat, as a deploy script does; its exit status must be 0 (socat fails
/// on a reset).
fn try_socat(ctl: &Path, requests: &str) -> std::io::Result<String> {
    let output = Command::new("socat")
        .args(["-t", "70", "-", &format!("UNIX-CONNECT:{}", ctl.display())])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(requests.as_bytes())?;
            child.wait_with_output()
        })?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "socat: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8(output.stdout).unwrap())
}

#[test]
fn concurrent_clients_during_restarts_each_get_one_documented_answer() {
    let (_dir, ctl, server, _pidfile) = start("control-concurrent", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // Status pollers through all the restarts: alone, several requests on one connection, and
    // socat.
    let pollers: Vec<_> = [
        ("status\n", false),
        ("status\nnonsense\nstatus\n", false),
        ("status\n", true),
    ]
    .into_iter()
    .map(|(requests, with_socat)| {
        let (ctl, stop) = (ctl.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut heard = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = if with_socat {
                    try_socat(&ctl, requests)
                } else {
                    try_control(&ctl, requests)
                };
                heard.push((requests, answer));
            }
            heard
        })
    })
    .collect();
    // Waves of 50 restarts asked at once.
    let mut heard = Vec::new();
    for _ in 0..3 {
        let barrier = Arc::new(Barrier::new(50));
        let wave: Vec<_> = (0..50)
            .map(|_| {
                let (ctl, barrier) = (ctl.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    ("restart\n", try_control(&ctl, "restart\n"))
                })
            })
            .collect();
        heard.extend(wave.into_iter().map(|t| t.join().unwrap()));
    }
    stop.store(true, Ordering::Relaxed);
    for poller in pollers {
        heard.extend(poller.join().unwrap());
    }
    let mut wrong = Vec::new();
    let (mut restarts, mut statuses) = (0, 0);
    for (requests, answer) in &heard {
        let checked = match answer {
            Ok(answer) if requests == &"restart\n" && !answer.starts_with("ok ") => {
                Err(format!("restart answered {answer:?}"))
            }
            Ok(answer) => documented(requests, answer),
            Err(e) => Err(format!("{requests:?}: {e}")),
        };
        match checked {
            Ok(()) if requests == &"restart\n" => restarts += 1,
            Ok(()) => statuses += 1,
            Err(e) => wrong.push(e),
        }
    }
    eprintln!(
        "{restarts} restarts and {statuses} status requests answered over {} restarts",
        server.log.count("started new process")
    );
    assert!(
        wrong.is_empty(),
        "{} of {} requests not answered as documented, e.g. {:?}",
        wrong.len(),
        heard.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(restarts, 150);
}

#[test]
fn status_lists_a_process_that_does_not_answer_marked() {
    let (_dir, ctl, server, _pidfile) = start("control-stopped", &[]);
    let address = server.address();
    let first = server.pid();
    let held = open_accepted(first, &address);
    let (second, _) = control_restart(&ctl);
    wait_until_draining(&server, first);
    wait_for(
        "the first process to be listed as retiring",
        DEADLINE,
        || {
            let status = control_status(&ctl);
            (roles(&status) == [(1, "retiring", "1"), (2, "serving", "0")]).then_some(())
        },
    );

    // Stopped, it cannot answer: it is listed from what is known of it, and marked. Clients
    // asking at once all hear so.
    uninterruptible_tests::send(first, SIGSTOP);
    wait_for("the first process to stop", DEADLINE, || {
        stopped(first).then_some(())
    });
    let asking: Vec<_> = (0..20)
        .map(|_| {
            let ctl = ctl.clone();
            std::thread::spawn(move || control_status(&ctl))
        })
        .collect();
    for status in asking.into_iter().map(|t| t.join().unwrap()) {
        let seen: Vec<_> = status
            .iter()
            .map(|p| {
                (
                    p.pid,
                    p.generation,
                    p.role.as_str(),
                    p.connections.as_str(),
                    p.answered,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (first, 1, "retiring", "?", false),
                (second, 2, "serving", "0", true)
            ]
        );
    }
    let marked = control(&ctl, "status\n");
    eprintln!("status with a stopped process:\n{marked}");

    // A third process gets the link to it with the sockets: it knows its pid, and lists it.
    let held_by_second = open_accepted(second, &address);
    let (third, _) = control_restart(&ctl);
    wait_until_draining(&server, second);
    let status = control(&ctl, "status\n");
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 4, "{status:?}");
    assert_eq!(
        lines[0],
        format!("pid={first} generation=? role=? connections=? age=? answered=no")
    );
    assert!(
        lines[1].starts_with(&format!(
            "pid={second} generation=2 role=retiring connections=1 "
        )),
        "{status:?}"
    );
    assert!(lines[2].starts_with(&format!("pid={third} generation=3 role=serving")));

    // Going on, it answers again, and leaves the list once it has drained.
    uninterruptible_tests::send(first, SIGCONT);
    wait_for("the first process to answer again", DEADLINE, || {
        let status = control(&ctl, "status\n");
        status
            .starts_with(&format!(
                "pid={first} generation=1 role=retiring connections=1 age="
            ))
            .then_some(())
    });
    assert_eq!(held.echo("on\n").unwrap(), "on\n");
    assert_eq!(held_by_second.echo("on\n").unwrap(), "on\n");
    wait_for(
        "the first two processes to leave the list",
        DEADLINE,
        || {
            let status = control_status(&ctl);
            (roles(&status) == [(3, "serving", "0")]).then_some(())
        },
    );
}

#[test]
fn clients_beyond_the_limit_hear_busy_and_the_service_keeps_working() {
    const LIMIT: usize = 64;
    let (_dir, ctl, server, _pidfile) = start("control-bounded", &[]);
    let address = server.address();
    let pid = server.pid();
    let before = uninterruptible_tests::fd_count(pid);
    // As many clients as are served at once, saying nothing.
    let held: Vec<UnixStream> = (0..LIMIT)
        .map(|_| UnixStream::connect(&ctl).unwrap())
        .collect();
    wait_for("the clients to be accepted", DEADLINE, || {
        (uninterruptible_tests::fd_count(pid) >= before + LIMIT).then_some(())
    });
    let busy = format!("error busy: {LIMIT} clients are connected, ask again\n");
    // One more is told so, and its connection ends cleanly (socat fails on a reset).
    assert_eq!(try_socat(&ctl, "restart\n").unwrap(), busy);

    // A flood: the process holds a bounded number of descriptors for them; the others wait in
    // the listen queue; the service port works throughout.
    let flood: Vec<UnixStream> = (0..150)
        .map(|_| UnixStream::connect(&ctl).unwrap())
        .collect();
    let bound = before + LIMIT + 16 + 4;
    for round in 0..20 {
        let open = uninterruptible_tests::fd_count(pid);
        assert!(
            open <= bound,
            "{open} descriptors open, at most {bound} expected"
        );
        assert_eq!(
            echo(&address, "still\n").unwrap(),
            "still\n",
            "round {round}"
        );
    }
    // Each hears `error busy`, or, served once a place came free (a silent client is closed at
    // the idle limit), nothing: never a reset.
    let mut refused = 0;
    for mut conn in flood {
        let answer = read_to_end_within(&mut conn, DEADLINE);
        assert!(answer == busy || answer.is_empty(), "{answer:?}");
        refused += usize::from(answer == busy);
    }
    assert!(refused > 0);
    drop(held);
    wait_for("the control socket to answer again", DEADLINE, || {
        try_control(&ctl, "status\n")
            .ok()
            .filter(|answer| documented("status\n", answer).is_ok() && answer != &busy)
    });
    eprintln!("of 150 clients beyond the limit, {refused} were told busy");
}

/// Whether every thread of `pid` is stopped: a stop signal takes effect on each thread when it
/// next runs, and until then a thread can still answer.
fn stopped(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.flatten().all(|thread| {
        std::fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    })
}
