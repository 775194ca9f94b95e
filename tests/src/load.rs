//! The load client: concurrent clients that connect, send a line, check the echo and close, in a
//! loop, counting every failure by kind; and a driver that restarts the server at a cadence.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// Where the clients connect.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl From<&crate::Address> for Target {
    fn from(address: &crate::Address) -> Target {
        match address {
            crate::Address::Tcp(addr) => Target::Tcp(*addr),
            crate::Address::Unix(path) => Target::Unix(path.clone()),
        }
    }
}

/// How the clients behave.
#[derive(Clone)]
#[allow(missing_debug_implementations, reason = "TlsConnector is not Debug")]
pub struct Options {
    pub target: Target,
    /// Concurrent clients.
    pub clients: usize,
    /// How long each client holds its connection open before sending.
    pub hold: Duration,
    /// How long one request may take before it counts as a timeout.
    pub timeout: Duration,
    /// TLS: the client configuration and the name to verify. Plain when `None`.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Options {
    /// Plain (no TLS) clients of `address`, each holding its connection `hold` before sending,
    /// with 10 s for a request.
    pub fn plain(address: &crate::Address, clients: usize, hold: Duration) -> Options {
        Options {
            target: Target::from(address),
            clients,
            hold,
            timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Counts of requests by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ok: u64,
    pub refused: u64,
    pub reset: u64,
    pub eof: u64,
    pub timeout: u64,
    pub wrong_reply: u64,
    pub other: u64,
    /// The first few failures, described, to show in a test's message.
    pub examples: Vec<String>,
    /// How long each request that succeeded took, from connect to the end of the reply, in
    /// microseconds.
    pub latencies: Vec<u32>,
}

impl Stats {
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.eof + self.timeout + self.wrong_reply + self.other
    }

    /// The `q` quantile (0.0 to 1.0) of the latencies of the requests that succeeded.
    pub fn latency(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(sorted[index].into())
    }

    pub fn merge(&mut self, other: Stats) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.refused += other.refused;
        self.reset += other.reset;
        self.eof += other.eof;
        self.timeout += other.timeout;
        self.wrong_reply += other.wrong_reply;
        self.other += other.other;
        for example in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(example);
            }
        }
    }

    fn record(&mut self, outcome: Result<(), Failure>) {
        let failure = match outcome {
            Ok(()) => {
                self.ok += 1;
                return;
            }
            Err(failure) => failure,
        };
        match &failure {
            Failure::Refused => self.refused += 1,
            Failure::Reset => self.reset += 1,
            Failure::Eof => self.eof += 1,
            Failure::Timeout => self.timeout += 1,
            Failure::WrongReply(_) => self.wrong_reply += 1,
            Failure::Other(_) => self.other += 1,
        }
        if self.examples.len() < 5 {
            self.examples.push(failure.to_string());
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok, {} failed (refused {}, reset {}, eof {}, timeout {}, wrong reply {}, other {})",
            self.ok,
            self.failed(),
            self.refused,
            self.reset,
            self.eof,
            self.timeout,
            self.wrong_reply,
            self.other
        )?;
        if !self.examples.is_empty() {
            write!(f, "; first failures: {}", self.examples.join("; "))?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Failure {
    Refused,
    Reset,
    Eof,
    Timeout,
    WrongReply(String),
    Other(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("refused"),
            Failure::Reset => f.write_str("reset"),
            Failure::Eof => f.write_str("closed without a reply"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::WrongReply(reply) => write!(f, "wrong reply {reply:?}"),
            Failure::Other(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Failure::Reset,
            io::ErrorKind::UnexpectedEof => Failure::Eof,
            _ => Failure::Other(e),
        }
    }
}

/// Runs the clients until `stop` is set; returns their counts.
pub async fn run(options: Options, stop: Arc<AtomicBool>) -> Stats {
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let options = options.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let line = format!("client {client} request {n}\n");
                let started = Instant::now();
                let outcome = tokio::time::timeout(options.timeout, request(&options, &line))
                    .await
                    .unwrap_or(Err(Failure::Timeout));
                if outcome.is_ok() {
                    let micros = started.elapsed().as_micros();
                    stats
                        .latencies
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
                stats.record(outcome);
                n += 1;
            }
            stats
        }));
    }
    let mut total = Stats::default();
    for task in tasks {
        total.merge(task.await.expect("a load client panicked"));
    }
    total
}

async fn request(options: &Options, line: &str) -> Result<(), Failure> {
    match &options.target {
        Target::Tcp(addr) => over(TcpStream::connect(addr).await?, options, line).await,
        Target::Unix(path) => over(UnixStream::connect(path).await?, options, line).await,
    }
}

/// The exchange on a connected socket, through TLS when the options ask for it.
async fn over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    options: &Options,
    line: &str,
) -> Result<(), Failure> {
    match &options.tls {
        None => exchange(stream, options.hold, line).await,
        Some((connector, name)) => {
            let tls = connector.connect(name.clone(), stream).await?;
            exchange(tls, options.hold, line).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    hold: Duration,
    line: &str,
) -> Result<(), Failure> {
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    stream.write_all(line.as_bytes()).await?;
    let mut reply = Vec::with_capacity(line.len());
    stream.read_to_end(&mut reply).await?;
    if reply.is_empty() {
        return Err(Failure::Eof);
    }
    if reply != line.as_bytes() {
        return Err(Failure::WrongReply(
            String::from_utf8_lossy(&reply).into_owned(),
        ));
    }
    Ok(())
}

/// What the restart driver did.
#[derive(Clone, Debug, Default)]
pub struct Restarts {
    /// Time from each `USR1` to the pidfile naming the new process (which writes it just before
    /// it starts accepting).
    pub handoffs: Vec<Duration>,
}

impl Restarts {
    /// The `q` quantile (0.0 to 1.0) of the handoff times.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.handoffs.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index]
    }
}

/// Sends `signal` (`USR1` for uninterruptible) to the pid in `pidfile`, waits until the pidfile
/// names a new pid, and repeats every `every` (at once when zero), `count` times or until `until`.
pub fn restart_loop(
    pidfile: &Path,
    signal: crate::Signal,
    every: Duration,
    count: Option<usize>,
    until: Option<Instant>,
) -> Restarts {
    let mut restarts = Restarts::default();
    loop {
        if count.is_some_and(|c| restarts.handoffs.len() >= c)
            || until.is_some_and(|u| Instant::now() >= u)
        {
            return restarts;
        }
        let started = Instant::now();
        let old = crate::read_pidfile(pidfile).expect("the pidfile names the server");
        crate::send(old, signal);
        // Polled finely: this wait is the handoff time being measured.
        crate::poll(
            || "the pidfile to name the new process".into(),
            crate::DEADLINE,
            Duration::from_micros(200),
            || crate::read_pidfile(pidfile).filter(|&pid| pid != old),
        );
        let took = started.elapsed();
        restarts.handoffs.push(took);
        if let Some(rest) = every.checked_sub(took) {
            std::thread::sleep(rest);
        }
    }
}

/// Runs the echo clients on their own runtime while `during` runs on this thread, then stops them.
pub fn with_load<R>(options: Options, during: impl FnOnce() -> R) -> (R, Stats) {
    while_running(|stop| run(options, stop), during)
}

/// Runs `clients` (told to stop through the flag they are given) on a runtime of their own, with
/// two worker threads, while `during` runs on this thread; then stops them and returns both
/// outcomes.
pub fn while_running<C, T, R>(
    clients: impl FnOnce(Arc<AtomicBool>) -> C,
    during: impl FnOnce() -> R,
) -> (R, T)
where
    C: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = runtime.spawn(clients(Arc::clone(&stop)));
    let result = during();
    stop.store(true, Ordering::Relaxed);
    let outcome = runtime.block_on(clients).expect("the clients panicked");
    (result, outcome)
}
