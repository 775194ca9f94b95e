//! systemd notifications (`NOTIFY_SOCKET`), recorded by a real datagram socket that learns each
//! sender's pid from the kernel (`SO_PASSCRED`), as systemd does.

use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, setsockopt, sockopt};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uninterruptible_tests::{
    DEADLINE, SIGTERM, SIGUSR1, TempDir, alive, poll, read_pidfile, send, start_with_pidfile,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");

/// Every datagram received, with the pid of the process that sent it.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(u32, String)>>>);

impl Recorder {
    fn listen(path: &Path) -> Recorder {
        let socket = UnixDatagram::bind(path).unwrap();
        setsockopt(&socket, sockopt::PassCred, &true).unwrap();
        let recorder = Recorder::default();
        let messages = Arc::clone(&recorder.0);
        std::thread::spawn(move || {
            loop {
                let mut buf = [0u8; 4096];
                let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let Ok(msg) = recvmsg::<UnixAddr>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::empty(),
                ) else {
                    return;
                };
                let pid = msg
                    .cmsgs()
                    .unwrap()
                    .find_map(|c| match c {
                        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid() as u32),
                        _ => None,
                    })
                    .unwrap_or(0);
                let bytes = msg.bytes;
                let text = String::from_utf8_lossy(&buf[..bytes]).into_owned();
                messages.lock().unwrap().push((pid, text));
            }
        });
        recorder
    }

    fn all(&self) -> Vec<(u32, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits for a datagram containing `needle` and returns it with its sender.
    fn wait_for(&self, needle: &str) -> (u32, String) {
        poll(
            || format!("a notification with {needle:?}; got {:?}", self.all()),
            DEADLINE,
            Duration::from_millis(5),
            || self.all().into_iter().find(|(_, m)| m.contains(needle)),
        )
    }

    fn count(&self, needle: &str) -> usize {
        self.all()
            .iter()
            .filter(|(_, m)| m.contains(needle))
            .count()
    }
}

fn start(
    dir: &TempDir,
    socket: &str,
    env: &[(&str, &str)],
) -> (uninterruptible_tests::Server, PathBuf) {
    let mut all = vec![("NOTIFY_SOCKET", socket)];
    all.extend_from_slice(env);
    start_with_pidfile(ECHO, dir, "tcp://127.0.0.1:0", &all)
}

#[test]
fn start_restart_and_stop_are_announced_by_the_main_process() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let recorder = Recorder::listen(&path);
    let (server, pidfile) = start(&dir, path.to_str().unwrap(), &[]);
    let first = server.pid();

    let (from, ready) = recorder.wait_for("READY=1");
    assert_eq!(from, first);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on tcp://127.0.0.1:"),
        "{ready:?}"
    );

    send(first, SIGUSR1);
    let second = poll(
        || "a new pid".into(),
        DEADLINE,
        Duration::from_millis(5),
        || read_pidfile(&pidfile).filter(|&p| p != first),
    );
    let (from, reloading) = recorder.wait_for("RELOADING=1");
    assert_eq!(from, first, "the old (main) process says it is reloading");
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines[0], "RELOADING=1");
    assert!(
        lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let (from, handed) = recorder.wait_for("MAINPID=");
    assert_eq!(from, first, "the old process names the new main pid");
    assert!(
        handed.starts_with(&format!(
            "MAINPID={second}\nREADY=1\nSTATUS=new process {second} is serving"
        )),
        "{handed:?}"
    );
    // The new process never says READY=1 itself, and the retiring one never says STOPPING=1.
    poll(
        || "the old process to exit".into(),
        DEADLINE,
        Duration::from_millis(5),
        || (!alive(first)).then_some(()),
    );
    assert!(
        recorder.all().iter().all(|(pid, _)| *pid == first),
        "{:?}",
        recorder.all()
    );

    println!("pids: first {first}, second {second}");
    for (pid, message) in recorder.all() {
        println!("from {pid}: {}", message.replace('\n', " | "));
    }
    send(second, SIGTERM);
    let (from, stopping) = recorder.wait_for("STOPPING=1");
    assert_eq!(from, second);
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=stopping"),
        "{stopping:?}"
    );
    assert_eq!(recorder.count("STOPPING=1"), 1);
    assert_eq!(recorder.count("READY=1"), 2, "{:?}", recorder.all());
}

#[test]
fn a_failed_restart_is_ready_again_with_the_reason() {
    let dir = TempDir::new("notify-fail");
    let path = dir.join("notify.sock");
    let recorder = Recorder::listen(&path);
    let (server, _) = start(
        &dir,
        path.to_str().unwrap(),
        &[("START_COMMAND", "/bin/false")],
    );
    recorder.wait_for("READY=1");
    send(server.pid(), SIGUSR1);
    let (from, failed) = recorder.wait_for("restart failed");
    assert_eq!(from, server.pid());
    assert!(
        failed.starts_with("READY=1\nSTATUS=restart failed: new process"),
        "{failed:?}"
    );
    assert!(failed.contains("start command: /bin/false"), "{failed:?}");
    assert_eq!(recorder.count("MAINPID="), 0);
}

#[test]
fn a_first_start_whose_init_fails_on_several_lines_says_why_on_one_line() {
    let dir = TempDir::new("notify-init");
    let path = dir.join("notify.sock");
    let recorder = Recorder::listen(&path);
    // What the initialiser says, line breaks and all: read as a notification, its second line
    // would tell systemd the service is ready.
    let down = dir.join("db-down");
    std::fs::write(&down, "no route to host\nREADY=1\nMAINPID=1").unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stateful"))
        .env("BIND", "tcp://127.0.0.1:0")
        .env("POOL_FAIL_FILE", &down)
        .env("NOTIFY_SOCKET", &path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let why =
        "the initialiser failed: cannot connect to memory://: no route to host READY=1 MAINPID=1";
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("uninterruptible: {why}\n")
    );
    let (from, status) = recorder.wait_for("the initialiser failed");
    assert_eq!(from, pid);
    assert_eq!(status, format!("STATUS={why}"));
    assert_eq!(recorder.all().len(), 1, "{:?}", recorder.all());
}

#[test]
fn an_abstract_notify_socket_and_a_burst_of_usr1() {
    let dir = TempDir::new("notify-abstract");
    let name = format!("uninterruptible-test-{}", std::process::id());
    let socket = {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&address).unwrap()
    };
    setsockopt(&socket, sockopt::PassCred, &true).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let (server, pidfile) = start(&dir, &format!("@{name}"), &[]);
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("READY=1"));

    let old = server.pid();
    for _ in 0..10 {
        send(old, SIGUSR1);
    }
    poll(
        || "a new pid".into(),
        DEADLINE,
        Duration::from_millis(5),
        || read_pidfile(&pidfile).filter(|&p| p != old),
    );
    let mut reloads = 0;
    loop {
        let n = socket.recv(&mut buf).unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        reloads += usize::from(message.starts_with("RELOADING=1"));
        if message.starts_with("MAINPID=") {
            break;
        }
    }
    assert_eq!(reloads, 1, "a burst of USR1 is one restart");
}

#[test]
fn supervised_the_supervisor_speaks_for_the_service_and_its_pid_never_changes() {
    let dir = TempDir::new("notify-supervised");
    let path = dir.join("notify.sock");
    let recorder = Recorder::listen(&path);
    let (mut server, pidfile) = start(&dir, path.to_str().unwrap(), &[("SUPERVISE", "true")]);
    let supervisor = server.pid();
    let (from, ready) = recorder.wait_for("READY=1");
    assert_eq!(from, supervisor);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on tcp://127.0.0.1:"),
        "{ready:?}"
    );

    send(supervisor, SIGUSR1);
    server.log.wait_for("(generation 2) is ready");
    poll(
        || format!("a second READY=1; got {:?}", recorder.all()),
        DEADLINE,
        Duration::from_millis(5),
        || (recorder.count("READY=1") == 2).then_some(()),
    );
    let (from, _) = recorder.wait_for("RELOADING=1\nMONOTONIC_USEC=");
    assert_eq!(from, supervisor);
    assert_eq!(read_pidfile(&pidfile), Some(supervisor));

    send(supervisor, SIGTERM);
    let (from, stopping) = recorder.wait_for("STOPPING=1");
    assert_eq!(from, supervisor);
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=stopping"),
        "{stopping:?}"
    );
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
    // Only the supervisor spoke (a serving process has no NOTIFY_SOCKET), and never MAINPID=.
    let all = recorder.all();
    assert!(all.iter().all(|(pid, _)| *pid == supervisor), "{all:?}");
    assert_eq!(recorder.count("MAINPID="), 0, "{all:?}");
    for (pid, message) in all {
        println!("from {pid}: {}", message.replace('\n', " | "));
    }
}
