//! Containers for real: the supervisor as PID 1 of a new PID namespace (`unshare --pid --fork
//! --mount-proc`, as a container runtime starts it), and as the child of `tini` as PID 1. Needs
//! root for the namespace; skipped with the reason otherwise.

use std::path::Path;
use std::time::{Duration, Instant};
use uninterruptible_tests::load::{Options, with_load};
use uninterruptible_tests::{
    DEADLINE, SIGKILL, SIGTERM, SIGUSR1, Server, TempDir, alive, children, echo, open_accepted,
    read_pidfile, send, wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

fn can_unshare() -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: a new PID namespace needs root");
        return false;
    }
    true
}

/// A container: `unshare` starts `init` (and its arguments) as PID 1 of a new PID namespace.
struct Container {
    server: Server,
    /// The host pid of the supervisor.
    supervisor: u32,
}

impl Container {
    fn start(init: &[&str], dir: &TempDir, env: &[(&str, &str)]) -> Container {
        let mut args = vec!["--pid", "--fork", "--mount-proc"];
        args.extend_from_slice(init);
        let pidfile = dir.join("server.pid");
        let mut all = vec![
            ("SUPERVISE", "true"),
            ("BIND", "tcp://127.0.0.1:0"),
            ("PID_FILE", pidfile.to_str().unwrap()),
        ];
        all.extend_from_slice(env);
        let server = Server::start_with("unshare", &args, None, &all);
        server.log.wait_for("(generation 1) is ready");
        let pid1 = only_child(server.pid());
        let supervisor = if init.len() == 1 {
            pid1
        } else {
            only_child(pid1)
        };
        Container { server, supervisor }
    }

    /// The host pid of the serving process of `generation`, from the supervisor's log.
    fn serving(&self, generation: u64) -> u32 {
        let line = self
            .server
            .log
            .wait_for(&format!("(generation {generation}) is ready"));
        let after = line.split("serving process ").nth(1).unwrap();
        let inner: u32 = after.split_whitespace().next().unwrap().parse().unwrap();
        // The log names namespace pids; find the host pid among the supervisor's children.
        wait_for("the serving process among the children", DEADLINE, || {
            children(self.supervisor)
                .into_iter()
                .map(|(pid, _)| pid)
                .find(|&pid| namespace_pid(pid) == Some(inner))
        })
    }
}

/// The one child of `pid`, once there is exactly one.
fn only_child(pid: u32) -> u32 {
    wait_for(
        &format!("the child of {pid}"),
        DEADLINE,
        || match children(pid).as_slice() {
            [(child, _)] => Some(*child),
            _ => None,
        },
    )
}

/// The pid of a process inside its own namespace (the last `NSpid` field).
fn namespace_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Every process under `root`, with its state.
fn descendants(root: u32) -> Vec<(u32, char)> {
    let mut all = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for (child, state) in children(pid) {
            all.push((child, state));
            queue.push(child);
        }
    }
    all
}

/// Waits until no process in the container is a zombie and only `expected` are left under the
/// supervisor.
fn wait_for_no_zombie(container: &Container, expected: usize) {
    wait_for(
        &format!("no zombie and {expected} processes under the supervisor"),
        DEADLINE,
        || {
            let all = descendants(container.supervisor);
            (all.iter().all(|(_, state)| *state != 'Z') && all.len() == expected).then_some(())
        },
    );
}

fn storm(init: &[&str]) {
    let dir = TempDir::new("container-storm");
    // Each serving process leaves an orphan behind, for PID 1 (or the subreaper) to reap.
    let command = format!("/bin/sh -c '(sleep 0.2 &); exec {ECHO}'");
    let container = Container::start(init, &dir, &[("START_COMMAND", &command)]);
    let pidfile = dir.join("server.pid");
    let in_namespace = read_pidfile(&pidfile).unwrap();
    assert_eq!(in_namespace, namespace_pid(container.supervisor).unwrap());
    if init.len() == 1 {
        assert_eq!(in_namespace, 1, "the supervisor is PID 1");
    }
    let address = container.server.address();
    let started = Instant::now();
    let ((), stats) = with_load(Options::plain(&address, 16, Duration::ZERO), || {
        for generation in 2..=201 {
            send(container.supervisor, SIGUSR1);
            container.serving(generation);
        }
    });
    let took = started.elapsed();
    assert_eq!(stats.failed(), 0, "{stats}");
    assert!(stats.ok > 200, "{stats}");
    assert_eq!(read_pidfile(&pidfile), Some(in_namespace));
    assert!(alive(container.supervisor));
    // Once the last orphans' sleeps end: the last serving process alone, no zombie.
    wait_for_no_zombie(&container, 1);
    assert_eq!(
        descendants(container.supervisor)[0].0,
        container.serving(201)
    );
    eprintln!(
        "{}: 200 restarts in {:.1} s under 16 clients: {stats}",
        init.join(" "),
        took.as_secs_f64()
    );
}

fn killed_and_started_again(init: &[&str]) {
    let dir = TempDir::new("container-kill");
    let container = Container::start(init, &dir, &[]);
    let address = container.server.address();
    let (took, stats) = with_load(Options::plain(&address, 8, Duration::ZERO), || {
        let mut took = Vec::new();
        for generation in 1..=3 {
            let pid = container.serving(generation);
            std::thread::sleep(Duration::from_millis(300));
            let killed = Instant::now();
            send(pid, SIGKILL);
            assert_eq!(echo(&address, "back\n").unwrap(), "back\n");
            took.push(killed.elapsed());
            container.serving(generation + 1);
        }
        took
    });
    assert_eq!(stats.refused, 0, "{stats}");
    assert_eq!(
        stats.timeout + stats.wrong_reply + stats.other,
        0,
        "{stats}"
    );
    assert!(
        stats.failed() <= 3 * 8,
        "only the requests in flight: {stats}"
    );
    wait_for_no_zombie(&container, 1);
    eprintln!(
        "{}: serving process killed 3 times under 8 clients: answered again after {took:?}; {stats}",
        init.join(" ")
    );
}

fn term_drains_and_exits_0(init: &[&str]) {
    let dir = TempDir::new("container-term");
    let mut container = Container::start(init, &dir, &[]);
    let address = container.server.address();
    let serving = container.serving(1);
    let held = open_accepted(serving, &address);
    // `docker stop` signals PID 1 only.
    let pid1 = only_child(container.server.pid());
    send(pid1, SIGTERM);
    container
        .server
        .log
        .wait_for("stopping the serving processes");
    assert_eq!(held.echo("last\n").unwrap(), "last\n");
    assert_eq!(container.server.wait_exit(DEADLINE).code(), Some(0));
    assert!(!Path::new(&dir.join("server.pid")).exists());
}

#[test]
fn as_pid_1_two_hundred_restarts_under_load_fail_no_request_and_leave_no_zombie() {
    if can_unshare() {
        storm(&[ECHO]);
    }
}

#[test]
fn as_pid_1_a_killed_serving_process_is_started_again_and_no_client_is_refused() {
    if can_unshare() {
        killed_and_started_again(&[ECHO]);
    }
}

#[test]
fn as_pid_1_term_drains_and_exits_0() {
    if can_unshare() {
        term_drains_and_exits_0(&[ECHO]);
    }
}

#[test]
fn under_tini_two_hundred_restarts_under_load_fail_no_request_and_leave_no_zombie() {
    if can_unshare() {
        storm(&["tini", "--", ECHO]);
    }
}

#[test]
fn under_tini_a_killed_serving_process_is_started_again_and_no_client_is_refused() {
    if can_unshare() {
        killed_and_started_again(&["tini", "--", ECHO]);
    }
}

#[test]
fn under_tini_term_drains_and_exits_0() {
    if can_unshare() {
        term_drains_and_exits_0(&["tini", "--", ECHO]);
    }
}

#[test]
fn as_pid_1_without_supervise_a_warning_at_start_points_to_supervise() {
    if !can_unshare() {
        return;
    }
    let server = Server::start_with(
        "unshare",
        &["--pid", "--fork", "--mount-proc", ECHO],
        None,
        &[("BIND", "tcp://127.0.0.1:0")],
    );
    let listening = server.log.wait_for("listening on ");
    assert!(listening.contains("(pid 1, generation 1)"), "{listening}");
    let line = server
        .log
        .wait_for("this process is PID 1 and not supervised");
    assert!(
        line.ends_with("a restart (USR1) ends it once the new process serves, and with it the container and every process in it; set SUPERVISE=true, so that PID 1 stays as a supervisor and restarts replace only the serving process"),
        "{line}"
    );
    // Supervised, PID 1 is the supervisor, and the serving process is not PID 1: no warning.
    let dir = TempDir::new("container-supervised");
    let container = Container::start(&[ECHO], &dir, &[]);
    container.server.address();
    assert_eq!(
        container.server.log.count("not supervised"),
        0,
        "{}",
        container.server.log.text()
    );
}
