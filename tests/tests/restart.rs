//! Hot restart under continuous load, with real processes and signals: every failed request is
//! counted and the count must be 0. Also the failure paths: a new copy that crashes or hangs, a
//! burst of signals, descriptor hygiene, and a handoff peer of another uid.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uninterruptible_tests::load::{self, Options};
use uninterruptible_tests::{
    DEADLINE, SIGHUP, SIGTERM, SIGUSR1, Server, TempDir, alive, children, copy_executable, echo,
    environ, fd_count, read_pidfile, send, start_with_pidfile, started_pid, wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const PROBE: &str = env!("CARGO_BIN_EXE_handoff_probe");
const CHILD_ENV: &str = env!("CARGO_BIN_EXE_child_env");

/// A server with a pidfile in `dir`, plus `env`.
fn start(dir: &TempDir, bind: &str, env: &[(&str, &str)]) -> (Server, PathBuf) {
    start_with_pidfile(ECHO, dir, bind, env)
}

fn storm(bind: &str) -> (Server, TempDir) {
    let dir = TempDir::new("storm");
    let (server, pidfile) = start(&dir, bind, &[]);
    let address = server.address();
    let (restarts, stats) = load::with_load(Options::plain(&address, 16, Duration::ZERO), || {
        load::restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(200), None)
    });
    println!(
        "{bind}: 200 restarts, {stats}; handoff p50 {:?}, max {:?}",
        restarts.quantile(0.5),
        restarts.quantile(1.0)
    );
    assert_eq!(restarts.handoffs.len(), 200);
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 200, "{stats}");
    assert_eq!(
        echo(&address, "after the storm\n").unwrap(),
        "after the storm\n"
    );
    (server, dir)
}

#[test]
fn two_hundred_restarts_under_load_over_tcp_fail_no_request() {
    let (server, _dir) = storm("tcp://127.0.0.1:0");
    server.log.wait_for("generation 201");
}

#[test]
fn two_hundred_restarts_under_load_over_unix_fail_no_request() {
    let dir = TempDir::new("storm-unix");
    let path = dir.join("echo.sock");
    let (server, _piddir) = storm(&format!("unix://{}", path.display()));
    assert!(
        path.exists(),
        "the socket file is never unlinked in a handoff"
    );
    server.log.wait_for("generation 201");
}

#[test]
fn connections_held_open_across_restarts_complete() {
    let dir = TempDir::new("held");
    let (server, pidfile) = start(&dir, "tcp://127.0.0.1:0", &[]);
    let address = server.address();
    let (restarts, stats) = load::with_load(
        Options::plain(&address, 16, Duration::from_millis(300)),
        || {
            load::restart_loop(
                &pidfile,
                SIGUSR1,
                Duration::from_millis(150),
                Some(20),
                None,
            )
        },
    );
    println!("held 300 ms, {} restarts: {stats}", restarts.handoffs.len());
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 0);
}

#[test]
fn hup_restarts_too() {
    let dir = TempDir::new("hup");
    let (server, pidfile) = start(&dir, "tcp://127.0.0.1:0", &[]);
    let old = server.pid();
    send(old, SIGHUP);
    let new = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != old)
    });
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(old)).then_some(())
    });
    assert!(alive(new));
    assert_eq!(echo(&server.address(), "hup\n").unwrap(), "hup\n");
}

#[test]
fn a_new_copy_that_exits_leaves_the_old_one_serving() {
    let dir = TempDir::new("false");
    let (server, pidfile) = start(
        &dir,
        "tcp://127.0.0.1:0",
        &[("START_COMMAND", "/bin/false")],
    );
    let address = server.address();
    let pid = server.pid();
    let ((), stats) = load::with_load(Options::plain(&address, 8, Duration::ZERO), || {
        for attempt in 1..=3 {
            send(pid, SIGUSR1);
            server.log.wait_for_count("restart failed", attempt);
        }
    });
    assert_eq!(stats.failed(), 0, "{stats}");
    let failure = server.log.wait_for("restart failed");
    assert!(
        failure.contains(
            "exited before ready (exit status: 1); start command: /bin/false; still serving"
        ),
        "the failure names the command: {failure}"
    );
    assert_eq!(
        read_pidfile(&pidfile),
        Some(pid),
        "the pidfile still names the old process"
    );
    assert!(
        children(pid).is_empty(),
        "no child left, zombie or not: {:?}",
        children(pid)
    );
    assert_eq!(
        echo(&address, "still serving\n").unwrap(),
        "still serving\n"
    );
}

/// A `START_COMMAND` running `script` (with the echo server's path as `$ECHO`) from `dir`.
fn start_script(dir: &TempDir, script: &str) -> String {
    let path = dir.join("start.sh");
    std::fs::write(&path, format!("ECHO='{ECHO}'\n{script}\n")).unwrap();
    format!("sh '{}'", path.display())
}

/// A start command that hangs while `flag` exists and runs the echo server otherwise.
fn switchable_start_command(dir: &TempDir, flag: &Path) -> String {
    let flag = flag.display();
    start_script(
        dir,
        &format!("if [ -e '{flag}' ]; then exec sleep 1000; else exec \"$ECHO\"; fi"),
    )
}

#[test]
fn a_new_copy_that_hangs_is_killed_after_ready_timeout_and_a_later_restart_works() {
    let dir = TempDir::new("hang");
    let tmp = TempDir::new("hang-tmp");
    let flag = dir.join("hang");
    std::fs::write(&flag, "").unwrap();
    let command = switchable_start_command(&dir, &flag);
    let (server, pidfile) = start(
        &dir,
        "tcp://127.0.0.1:0",
        &[
            ("START_COMMAND", &command),
            ("READY_TIMEOUT", "1"),
            ("TMPDIR", tmp.path().to_str().unwrap()),
        ],
    );
    let address = server.address();
    let old = server.pid();

    let ((), stats) = load::with_load(Options::plain(&address, 8, Duration::ZERO), || {
        send(old, SIGUSR1);
        let child = started_pid(&server.log.wait_for("started new process"));
        // While the attempt is in flight the handoff directory is private to our uid.
        let socket = wait_for("the child's handoff path", DEADLINE, || {
            environ(child).get("FILE_DESCRIPTOR_SERVER_PATH").cloned()
        });
        let handoff_dir = Path::new(&socket).parent().unwrap().to_owned();
        assert!(
            handoff_dir.starts_with(tmp.path()),
            "under TMPDIR: {}",
            handoff_dir.display()
        );
        let mode = std::fs::metadata(&handoff_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "handoff directory mode");

        server.log.wait_for("was not ready within 1s");
        wait_for("the hanging child to be reaped", DEADLINE, || {
            (!alive(child) && children(old).is_empty()).then_some(())
        });
        assert!(
            !handoff_dir.exists(),
            "the handoff directory is removed after a failed attempt"
        );
        assert_eq!(read_pidfile(&pidfile), Some(old));

        // Fixed: the next USR1 succeeds.
        std::fs::remove_file(&flag).unwrap();
        send(old, SIGUSR1);
        wait_for("a new pid", DEADLINE, || {
            read_pidfile(&pidfile).filter(|&p| p != old)
        });
        wait_for("the old process to exit", DEADLINE, || {
            (!alive(old)).then_some(())
        });
    });
    assert_eq!(stats.failed(), 0, "{stats}");
    // Polled: the new process checks, as it starts serving, that it can make a handoff
    // directory for its own restarts (and removes it at once).
    wait_for("no handoff directory left", DEADLINE, || {
        (std::fs::read_dir(tmp.path()).unwrap().count() == 0).then_some(())
    });
    assert_eq!(echo(&address, "after\n").unwrap(), "after\n");
}

#[test]
fn term_during_a_restart_that_fails_stops_once_it_has_failed() {
    let dir = TempDir::new("term-restart");
    let flag = dir.join("hang");
    std::fs::write(&flag, "").unwrap();
    let command = switchable_start_command(&dir, &flag);
    let (mut server, pidfile) = start(
        &dir,
        "tcp://127.0.0.1:0",
        &[("START_COMMAND", &command), ("READY_TIMEOUT", "1")],
    );
    let address = server.address();
    send(server.pid(), SIGUSR1);
    let child = started_pid(&server.log.wait_for("started new process"));
    server.signal(SIGTERM);
    server
        .log
        .wait_for("TERM received: this process stops once the restart in progress ends");
    // Still serving while the restart is undecided.
    assert_eq!(
        echo(
            &address,
            "meanwhile
"
        )
        .unwrap(),
        "meanwhile
"
    );
    assert!(
        server.wait_exit(DEADLINE).success(),
        "{}",
        server.log.text()
    );
    server.log.wait_for("was not ready within 1s");
    server
        .log
        .wait_for("stopping, as asked while the restart was in progress");
    assert!(!alive(child), "the hanging new copy is killed");
    assert!(!pidfile.exists(), "the last process removes the pidfile");
}

#[test]
fn a_second_term_during_a_restart_exits_at_once() {
    let dir = TempDir::new("term-term");
    let flag = dir.join("hang");
    std::fs::write(&flag, "").unwrap();
    let command = switchable_start_command(&dir, &flag);
    let (mut server, _pidfile) = start(&dir, "tcp://127.0.0.1:0", &[("START_COMMAND", &command)]);
    send(server.pid(), SIGUSR1);
    server.log.wait_for("started new process");
    server.signal(SIGTERM);
    server
        .log
        .wait_for("stops once the restart in progress ends");
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(1));
    server.log.wait_for("second TERM received: exiting now");
}

#[test]
fn a_burst_of_usr1_makes_exactly_one_new_process() {
    let dir = TempDir::new("burst");
    let (server, pidfile) = start(&dir, "tcp://127.0.0.1:0", &[]);
    let old = server.pid();
    for _ in 0..10 {
        send(old, SIGUSR1);
    }
    let new = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != old)
    });
    // Once the old process is gone it cannot start another; the count is final.
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(old)).then_some(())
    });
    assert_eq!(
        server.log.count("started new process"),
        1,
        "{}",
        server.log.text()
    );
    // The new process logs that it listens after it has said ready, so it may come later.
    server.log.wait_for_count("listening on", 2);
    assert_eq!(server.log.count("listening on"), 2, "{}", server.log.text());
    assert!(
        children(new).is_empty(),
        "the new process started nothing: {:?}",
        children(new)
    );
    assert_eq!(echo(&server.address(), "one\n").unwrap(), "one\n");
}

#[test]
fn descriptors_do_not_grow_across_generations() {
    let dir = TempDir::new("fds");
    let tmp = TempDir::new("fds-tmp");
    let (server, pidfile) = start(
        &dir,
        "tcp://127.0.0.1:0",
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    let first = fd_count(server.pid());
    let address = server.address();
    load::restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(20), None);
    let last = read_pidfile(&pidfile).unwrap();
    assert_eq!(echo(&address, "x\n").unwrap(), "x\n");
    wait_for(
        &format!("generation 21 to have as many descriptors as generation 1 ({first})"),
        DEADLINE,
        || (fd_count(last) == first).then_some(()),
    );
    wait_for("every handoff directory to be removed", DEADLINE, || {
        (std::fs::read_dir(tmp.path()).unwrap().count() == 0).then_some(())
    });
}

/// A restart whose new process waits, before it connects, until `flag` is removed.
struct Held {
    server: Server,
    pidfile: PathBuf,
    flag: PathBuf,
    child: u32,
    /// The handoff socket the new process will connect to.
    socket: String,
}

fn held_restart(dir: &TempDir) -> Held {
    let flag = dir.join("wait");
    std::fs::write(&flag, "").unwrap();
    let command = start_script(
        dir,
        &format!(
            "while [ -e '{}' ]; do sleep 0.02; done; exec \"$ECHO\"",
            flag.display()
        ),
    );
    let (server, pidfile) = start(dir, "tcp://127.0.0.1:0", &[("START_COMMAND", &command)]);
    send(server.pid(), SIGUSR1);
    let child = started_pid(&server.log.wait_for("started new process"));
    let socket = wait_for("the child's handoff path", DEADLINE, || {
        environ(child).get("FILE_DESCRIPTOR_SERVER_PATH").cloned()
    });
    Held {
        server,
        pidfile,
        flag,
        child,
        socket,
    }
}

#[test]
fn a_handoff_peer_of_another_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: running the peer as another user needs root");
        return;
    }
    let dir = TempDir::new("uid");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The probe runs as nobody, which may not reach the build directory: copy it out.
    let probe = dir.join("handoff_probe");
    copy_executable(Path::new(PROBE), &probe);
    let Held {
        server,
        pidfile,
        flag,
        child,
        socket,
    } = held_restart(&dir);
    let as_nobody = || {
        let out = std::process::Command::new(&probe)
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    use std::os::unix::process::CommandExt;

    // The private directory keeps other users away from the socket altogether.
    let got = as_nobody();
    assert!(got.contains("Permission denied"), "{got}");

    // Opened up by hand, the socket still refuses them: SO_PEERCRED names another uid.
    let handoff_dir = Path::new(&socket).parent().unwrap();
    std::fs::set_permissions(handoff_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(as_nobody(), "closed");
    server.log.wait_for("refused a handoff connection");

    // The real new process still takes over.
    std::fs::remove_file(&flag).unwrap();
    wait_for("the new process in the pidfile", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p == child)
    });
    assert_eq!(echo(&server.address(), "ours\n").unwrap(), "ours\n");
}

#[test]
fn a_handoff_peer_the_new_process_did_not_start_is_refused() {
    let dir = TempDir::new("peer-pid");
    let Held {
        server,
        pidfile,
        flag,
        child,
        socket,
    } = held_restart(&dir);
    // A process of the same user, not started by the new one, reaches the socket first.
    let out = std::process::Command::new(PROBE)
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed");
    server
        .log
        .wait_for(&format!("which new process {child} did not start"));
    // The real new process still takes over.
    std::fs::remove_file(&flag).unwrap();
    wait_for("the new process in the pidfile", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p == child)
    });
    assert_eq!(echo(&server.address(), "ours\n").unwrap(), "ours\n");
}

#[test]
fn a_new_process_refuses_a_handoff_socket_of_another_uid() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: running the new process as another user needs root");
        return;
    }
    // A handoff socket served by root, which another user's process could have planted in a
    // shared TMPDIR; the new process runs as nobody and must not take sockets from it.
    let tmp = TempDir::new("new-side-uid");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = uninterruptible_tests::fake_old::FakeOld::new(&tmp);
    std::fs::set_permissions(old.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(old.socket(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let echo_copy = tmp.join("echo");
    copy_executable(Path::new(ECHO), &echo_copy);
    let server = Server::start_with(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            echo_copy.to_str().unwrap(),
        ],
        None,
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            (
                "FILE_DESCRIPTOR_SERVER_PATH",
                old.socket().to_str().unwrap(),
            ),
        ],
    );
    let refused = server.log.wait_for("refused the handoff socket");
    assert!(refused.contains("with uid 0 (ours is 65534)"), "{refused}");
    // It serves a socket it bound itself.
    assert_eq!(echo(&server.address(), "own\n").unwrap(), "own\n");
}

#[test]
fn what_a_handler_starts_inherits_no_restart_variable() {
    let leaked = |server: &Server| -> Vec<String> {
        let env = echo(&server.address(), "").unwrap();
        env.lines()
            .filter(|l| {
                l.starts_with("FILE_DESCRIPTOR_SERVER_PATH=") || l.starts_with("UNINTERRUPTIBLE_")
            })
            .map(str::to_owned)
            .collect()
    };
    // Started by a restart.
    let dir = TempDir::new("child-env");
    let (server, pidfile) = start_with_pidfile(CHILD_ENV, &dir, "tcp://127.0.0.1:0", &[]);
    send(server.pid(), SIGUSR1);
    wait_for("the new process in the pidfile", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != server.pid())
    });
    server.log.wait_for("exiting with 0");
    assert_eq!(leaked(&server), Vec::<String>::new());
    // Started by a supervisor.
    let dir = TempDir::new("child-env-supervised");
    let (server, _) = start_with_pidfile(
        CHILD_ENV,
        &dir,
        "tcp://127.0.0.1:0",
        &[("SUPERVISE", "true")],
    );
    server.log.wait_for("(generation 1) is ready");
    assert_eq!(leaked(&server), Vec::<String>::new());
}

#[test]
fn a_restart_that_cannot_create_its_handoff_directory_names_it() {
    let dir = TempDir::new("no-tmp");
    let (server, pidfile) = start(&dir, "tcp://127.0.0.1:0", &[("TMPDIR", "/nonexistent/tmp")]);
    send(server.pid(), SIGUSR1);
    let failure = server.log.wait_for("restart failed");
    assert!(
        failure.contains(
            "cannot create the handoff directory in /nonexistent/tmp: No such file or directory"
        ),
        "{failure}"
    );
    assert!(
        failure.contains(&format!("start command: {ECHO}")),
        "{failure}"
    );
    assert_eq!(read_pidfile(&pidfile), Some(server.pid()));
    assert_eq!(echo(&server.address(), "on\n").unwrap(), "on\n");
}

#[test]
fn a_tmpdir_too_long_for_a_socket_address_is_said_at_start_and_restarts_still_work() {
    let dir = TempDir::new("long-tmp");
    // Longer than a handoff socket's path can be under it (a UNIX socket address holds 107).
    let tmp = dir.join(&"t".repeat(80));
    std::fs::create_dir(&tmp).unwrap();
    let (server, pidfile) = start(
        &dir,
        "tcp://127.0.0.1:0",
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    let line = server
        .log
        .wait_for("the handoff socket would not fit a UNIX socket address");
    assert!(
        line.contains(&format!(
            "(107 bytes) under {}: restarts make it under ",
            tmp.display()
        )) && line.ends_with("instead; set TMPDIR to a shorter directory"),
        "{line}"
    );
    let old = server.pid();
    send(old, SIGUSR1);
    let new = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != old)
    });
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(old)).then_some(())
    });
    assert!(alive(new));
    assert_eq!(
        server.log.count("restart failed"),
        0,
        "{}",
        server.log.text()
    );
    assert_eq!(echo(&server.address(), "short\n").unwrap(), "short\n");
}

/// The binary a process runs, as the kernel names it.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

fn copy_binary(to: &Path) {
    copy_executable(Path::new(ECHO), to);
}

#[test]
fn a_server_started_from_a_symlinked_release_restarts_into_the_release_the_link_names() {
    // /srv/app/current -> releases/1, started as `./server` from current; the deploy points
    // current at releases/2 and sends USR1.
    let dir = TempDir::new("releases");
    for release in ["1", "2"] {
        std::fs::create_dir_all(dir.join(&format!("releases/{release}"))).unwrap();
        copy_binary(&dir.join(&format!("releases/{release}/server")));
    }
    let current = dir.join("current");
    std::os::unix::fs::symlink("releases/1", &current).unwrap();
    let pidfile = dir.join("server.pid");
    let server = Server::start_in(
        "./server",
        Some(&current),
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("PID_FILE", pidfile.to_str().unwrap()),
            // As a shell sets it: the directory as the operator named it.
            ("PWD", current.to_str().unwrap()),
        ],
    );
    let address = server.address();
    let old = server.pid();
    assert_eq!(exe(old), dir.join("releases/1/server"));

    let next = dir.join("current.next");
    std::os::unix::fs::symlink("releases/2", &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    send(old, SIGUSR1);
    let new = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != old)
    });
    assert_eq!(exe(new), dir.join("releases/2/server"));
    let started = server.log.wait_for("started new process");
    assert!(
        started.ends_with(&format!("{}/./server", current.display())),
        "{started}"
    );
    assert_eq!(echo(&address, "release 2\n").unwrap(), "release 2\n");
}

#[test]
fn a_binary_moved_into_place_is_the_one_a_restart_runs() {
    let dir = TempDir::new("mv-deploy");
    let binary = dir.join("server");
    copy_binary(&binary);
    let (server, pidfile) =
        start_with_pidfile(binary.to_str().unwrap(), &dir, "tcp://127.0.0.1:0", &[]);
    let old = server.pid();
    // The deploy: write the new build beside it, then rename it over the old one.
    let staged = dir.join("server.new");
    copy_binary(&staged);
    std::fs::rename(&staged, &binary).unwrap();
    assert!(
        exe(old).to_string_lossy().ends_with("(deleted)"),
        "the old process runs the replaced file"
    );
    send(old, SIGUSR1);
    let new = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != old)
    });
    assert_eq!(
        exe(new),
        binary,
        "the new process runs the file now at the path"
    );
    assert_eq!(
        echo(&server.address(), "new build\n").unwrap(),
        "new build\n"
    );
}

/// The socket file's identity travels with the socket: a new process knows the file as the
/// process that bound it did, not as whatever is at the path when it starts.
#[test]
fn after_a_restart_a_stop_leaves_another_server_s_socket_file_alone() {
    let dir = TempDir::new("foreign-file");
    let path = dir.join("app.sock");
    let bind = format!("unix://{}", path.display());
    let (server, pidfile) = start(&dir, &bind, &[]);
    let first = read_pidfile(&pidfile).unwrap();
    // Someone removes the file, and another server binds the path.
    std::fs::remove_file(&path).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    send(first, SIGUSR1);
    let second = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&p| p != first)
    });
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(first)).then_some(())
    });
    send(second, SIGTERM);
    wait_for("the new process to exit", DEADLINE, || {
        (!alive(second)).then_some(())
    });
    assert!(
        path.exists(),
        "the other server's socket file is left alone"
    );
    drop((other, server));
}
