//! Support for the integration tests: start an example server as a real process, read its log,
//! talk to it, signal it, and wait for things by polling with a deadline. Also the load client
//! ([`load`]) that the restart tests and the `load` binary use.

pub mod certs;
pub mod fake_old;
pub mod http;
pub mod load;
pub mod udp;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
pub use nix::sys::signal::Signal::{SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGSTOP, SIGTERM, SIGUSR1};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 5 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(|| what.to_owned(), limit, Duration::from_millis(5), check)
}

/// [`wait_for`], polling every `every` (fine-grained where the wait itself is measured), with
/// `what` described only if the wait fails.
pub fn poll<T>(
    what: impl Fn() -> String,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {}",
            what()
        );
        std::thread::sleep(every);
    }
}

/// A directory of the test's own, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ui-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines a process (and every process it starts) wrote to stdout and stderr.
#[derive(Clone, Debug, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn collect(&self, stream: impl Read + Send + 'static) {
        let lines = Arc::clone(&self.0);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_until(&format!("a log line with {needle:?}"), || {
            self.lines().into_iter().find(|l| l.contains(needle))
        })
    }

    /// Waits until at least `n` lines contain `needle`.
    pub fn wait_for_count(&self, needle: &str, n: usize) {
        self.wait_until(&format!("{n} log lines with {needle:?}"), || {
            (self.count(needle) >= n).then_some(())
        })
    }

    /// [`wait_for`] that shows the log as it is when the wait fails.
    pub fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        let describe = || format!("{what}; the log:\n{}", self.text());
        poll(describe, DEADLINE, Duration::from_millis(5), check)
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// One server process started by a test. Killed (with its whole process group) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub log: Log,
    status: Option<ExitStatus>,
}

/// Where a server listens, read from its `listening on` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Server {
    /// Starts `binary` with `env` added to a clean copy of this environment, in its own process
    /// group (so a test can clean up every generation at once).
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Server {
        Server::start_in(binary, None, env)
    }

    /// [`Server::start`] in the working directory `dir`.
    pub fn start_in(binary: &str, dir: Option<&Path>, env: &[(&str, &str)]) -> Server {
        Server::start_with(binary, &[], dir, env)
    }

    /// [`Server::start`] with arguments: `program` may be a wrapper that runs the server
    /// (`systemd-socket-activate`, `start_server`).
    pub fn start_with(
        program: &str,
        args: &[&str],
        dir: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Server {
        Server::spawn(Command::new(program), args, dir, env, false)
    }

    /// [`Server::start`] in a session of its own, as a service manager starts a service: with
    /// the kernel's automatic scheduling groups (`sched_autogroup`), its processes then share the
    /// CPU with the rest of the machine as a group, not as extra threads of the caller's session.
    /// The benchmarks start servers this way.
    pub fn start_in_session(binary: &str, env: &[(&str, &str)]) -> Server {
        Server::spawn(Command::new(binary), &[], None, env, true)
    }

    fn spawn(
        mut command: Command,
        args: &[&str],
        dir: Option<&Path>,
        env: &[(&str, &str)],
        session: bool,
    ) -> Server {
        command.args(args);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        // Every variable of the key table, and the restart protocol's own.
        let variables = uninterruptible::KEYS
            .iter()
            .flat_map(|key| std::iter::once(key.env).chain(key.also.iter().copied()))
            .chain([
                "FILE_DESCRIPTOR_SERVER_PATH",
                "UNINTERRUPTIBLE_GENERATION",
                "UNINTERRUPTIBLE_SUPERVISOR",
                "UNINTERRUPTIBLE_KEEP_SOCKET_FILES",
                "NOTIFY_SOCKET",
                "LISTEN_FDS",
                "LISTEN_PID",
                "LISTEN_FDNAMES",
                "SERVER_STARTER_PORT",
            ]);
        for var in variables {
            command.env_remove(var);
        }
        command
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if session {
            // SAFETY: setsid is async-signal-safe and touches nothing of the parent's.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    nix::unistd::setsid()
                        .map(drop)
                        .map_err(std::io::Error::from)
                });
            }
        } else {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let mut child = command.spawn().expect("start the server binary");
        let log = Log::default();
        log.collect(child.stdout.take().unwrap());
        log.collect(child.stderr.take().unwrap());
        Server {
            child,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first `listening on` line and returns the address in it.
    pub fn address(&self) -> Address {
        let line = self.log.wait_for("listening on ");
        parse_address(&line)
    }

    /// Waits for the process (the first generation) to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let child = &mut self.child;
        let status = wait_for("the server to exit", limit, || child.try_wait().unwrap());
        self.status = Some(status);
        status
    }

    pub fn signal(&self, signal: Signal) {
        send(self.pid(), signal);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = Pid::from_raw(-(self.child.id() as i32));
        let _ = kill(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Starts `binary` bound to `bind` with a pidfile in `dir`, plus `env`, and waits until it serves
/// and has written the pidfile.
pub fn start_with_pidfile(
    binary: &str,
    dir: &TempDir,
    bind: &str,
    env: &[(&str, &str)],
) -> (Server, PathBuf) {
    let pidfile = dir.join("server.pid");
    let mut all = vec![("BIND", bind), ("PID_FILE", pidfile.to_str().unwrap())];
    all.extend_from_slice(env);
    let server = Server::start(binary, &all);
    server.address();
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    (server, pidfile)
}

/// Waits until every generation the server's log names, except the one the pidfile names now,
/// has exited; returns how many generations there were.
pub fn wait_for_retired_generations(server: &Server, pidfile: &Path) -> usize {
    let current = read_pidfile(pidfile).expect("the pidfile names the server");
    let pids: Vec<u32> = server
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("listening on "))
        .filter_map(|l| l.split("(pid ").nth(1)?.split(',').next()?.parse().ok())
        .collect();
    for &pid in pids.iter().filter(|&&p| p != current) {
        server
            .log
            .wait_until(&format!("generation with pid {pid} to exit"), || {
                (!alive(pid)).then_some(())
            });
    }
    pids.len()
}

/// Copies an executable to `to`, mode 0755. The copy is made by `cp`, in a process of its own:
/// written from this multi-threaded test process, the file could be held open for writing by a
/// child another test forks meanwhile, and executing it would then fail with ETXTBSY.
pub fn copy_executable(from: &Path, to: &Path) {
    let status = Command::new("cp").arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp {} {}", from.display(), to.display());
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(to, mode).unwrap();
}

/// A TCP port on 127.0.0.1 that nobody listens on now, for tools that take a fixed port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The pid in a log line `started new process N ...`.
pub fn started_pid(line: &str) -> u32 {
    line.split("started new process ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// The address in a `listening on tcp://...` or `listening on unix://...` line.
pub fn parse_address(line: &str) -> Address {
    let rest = line
        .split("listening on ")
        .nth(1)
        .expect("a listening line");
    // The first of the addresses, `listening on tcp://a, unix:///b (pid ...)`.
    let url = rest
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(',');
    if let Some(tcp) = url.strip_prefix("tcp://") {
        Address::Tcp(tcp.parse().unwrap())
    } else {
        Address::Unix(PathBuf::from(url.strip_prefix("unix://").unwrap()))
    }
}

/// Sends `signal` to `pid`.
pub fn send(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("send a signal");
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => state(&stat) != Some('Z'),
        Err(_) => false,
    }
}

fn state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Children of `pid`, with their state letter (`Z` for a zombie).
pub fn children(pid: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push((child, fields[0].chars().next().unwrap_or('?')));
        }
    }
    found
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The environment of `pid`.
pub fn environ(pid: u32) -> HashMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The pid a pidfile names, if it exists and is whole.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A blocking connection to a server, TCP or UNIX.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub fn open(address: &Address) -> std::io::Result<Conn> {
        let conn = match address {
            Address::Tcp(addr) => {
                Conn::Tcp(TcpStream::connect_timeout(addr, Duration::from_secs(5))?)
            }
            Address::Unix(path) => Conn::Unix(UnixStream::connect(path)?),
        };
        let timeout = Some(Duration::from_secs(10));
        match &conn {
            Conn::Tcp(s) => s.set_read_timeout(timeout)?,
            Conn::Unix(s) => s.set_read_timeout(timeout)?,
        }
        Ok(conn)
    }

    /// Sends `line`, closes the sending side, and reads the reply to the end.
    pub fn echo(mut self, line: &str) -> std::io::Result<String> {
        let mut reply = String::new();
        match &mut self {
            Conn::Tcp(s) => {
                s.write_all(line.as_bytes())?;
                s.shutdown(std::net::Shutdown::Write)?;
                s.read_to_string(&mut reply)?;
            }
            Conn::Unix(s) => {
                s.write_all(line.as_bytes())?;
                s.shutdown(std::net::Shutdown::Write)?;
                s.read_to_string(&mut reply)?;
            }
        }
        Ok(reply)
    }
}

/// Opens a connection and waits until the process `pid` has accepted it: a socket it did not
/// have appears among its descriptors (a count would miss one opened as another closes).
pub fn open_accepted(pid: u32, address: &Address) -> Conn {
    let before = sockets(pid);
    let conn = Conn::open(address).unwrap();
    wait_for(
        &format!("process {pid} to accept the connection"),
        DEADLINE,
        || sockets(pid).difference(&before).next().map(|_| ()),
    );
    conn
}

/// The sockets a process has open, as `/proc` names them (`socket:[inode]`).
fn sockets(pid: u32) -> std::collections::HashSet<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}

/// Seconds since midnight of a log line's timestamp (`2026-11-22T03:56:36.616704Z ...`).
pub fn log_seconds(line: &str) -> f64 {
    let time = line.split('T').nth(1).unwrap().split('Z').next().unwrap();
    let mut parts = time.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

/// One echo round trip on a new connection.
pub fn echo(address: &Address, line: &str) -> std::io::Result<String> {
    Conn::open(address)?.echo(line)
}

/// Sends one request to a control socket, closes the sending side, and returns the whole answer.
pub fn control(path: &Path, request: &str) -> String {
    try_control(path, request).unwrap_or_else(|e| {
        panic!(
            "ask {request:?} on the control socket {}: {e}",
            path.display()
        )
    })
}

/// [`control`], returning what went wrong (a refused connection, a reset) instead of panicking.
pub fn try_control(path: &Path, request: &str) -> std::io::Result<String> {
    let mut conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(Duration::from_secs(90)))?;
    conn.write_all(request.as_bytes())?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `restart` on a control socket: the new serving process's pid and generation, from
/// `ok <pid> <generation>`; panics with the answer otherwise.
pub fn control_restart(path: &Path) -> (u32, u64) {
    let answer = control(path, "restart\n");
    let fields: Vec<&str> = answer.split_whitespace().collect();
    match fields.as_slice() {
        ["ok", pid, generation] => (pid.parse().unwrap(), generation.parse().unwrap()),
        _ => panic!("restart on the control socket answered {answer:?}"),
    }
}

/// One line of a `status` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStatus {
    pub pid: u32,
    pub generation: u64,
    pub role: String,
    pub connections: String,
    pub age: u64,
    /// False for a process that did not answer in time (`answered=no`): listed from what is
    /// known of it.
    pub answered: bool,
}

/// `status` on a control socket, parsed; panics on a line that is not `key=value` fields, or
/// that lists a process whose generation is not known.
pub fn control_status(path: &Path) -> Vec<ProcessStatus> {
    let answer = control(path, "status\n");
    assert!(
        answer.ends_with("\n\n"),
        "status ends with an empty line: {answer:?}"
    );
    answer
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_else(|| panic!("no {name} in status line {line:?}"))
                    .to_owned()
            };
            let number = |name: &str| {
                field(name)
                    .parse()
                    .unwrap_or_else(|_| panic!("no number for {name} in status line {line:?}"))
            };
            ProcessStatus {
                pid: field("pid").parse().unwrap(),
                generation: number("generation"),
                role: field("role"),
                connections: field("connections"),
                age: number("age"),
                answered: !line.ends_with(" answered=no"),
            }
        })
        .collect()
}

/// Waits until process `pid` of `server` has stopped accepting (its log says it drains): from
/// then on, a new client reaches the process that replaced it.
pub fn wait_until_draining(server: &Server, pid: u32) {
    let tag = format!("pid={pid} ");
    server
        .log
        .wait_until(&format!("process {pid} to drain"), || {
            server
                .log
                .lines()
                .into_iter()
                .find(|line| line.contains(&tag) && line.contains(": draining"))
        });
}
