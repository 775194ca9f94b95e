//! The benchmark harness: the echo example against a plain tokio server with the same handler and
//! against Cloudflare's ecdysis, in one process tree on one machine, the systems alternating in
//! rounds. Prints Markdown tables of medians with min and max (BENCHMARKS.md holds a run).
//!
//! ```sh
//! cargo run --release --example bench                # about 4 minutes
//! cargo run --release --example bench -- --build     # also the clean-build cost, 4 more
//! cargo run --example bench -- --smoke               # a few seconds, small counts (CI)
//! cargo run --release --example bench -- --only steady,storm   # some sections only
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uninterruptible_tests::certs::{Ca, Client};
use uninterruptible_tests::load::{self, Options, Target};
use uninterruptible_tests::udp;
use uninterruptible_tests::{
    Address, DEADLINE, SIGHUP, SIGUSR1, Server, Signal, TempDir, fd_count, free_port, read_pidfile,
    wait_for,
};

struct Settings {
    /// Which sections to run: steady, storm, memory, scale, handoff, tls, state, http (all when
    /// empty).
    only: Vec<String>,
    rounds: usize,
    /// Concurrent clients of the steady and storm runs.
    clients: Vec<usize>,
    /// Restarts of the handoff section, idle and under load.
    handoffs: usize,
    /// Rounds of the storm runs (each is long).
    storm_rounds: usize,
    seconds: f64,
    storm_seconds: f64,
    idle: usize,
    build: bool,
}

fn settings() -> Settings {
    let mut args = std::env::args().skip(1);
    let (mut smoke, mut build, mut only) = (false, false, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--build" => build = true,
            "--only" => {
                only = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            unknown => {
                eprintln!(
                    "bench: unknown argument {unknown}; expected --smoke, --build, --only steady,storm,memory,scale,handoff,tls,resume,state,http,udp"
                );
                std::process::exit(2);
            }
        }
    }
    if smoke {
        Settings {
            only,
            rounds: 1,
            clients: vec![8],
            handoffs: 5,
            storm_rounds: 1,
            seconds: 0.5,
            storm_seconds: 1.0,
            idle: 300,
            build,
        }
    } else {
        Settings {
            only,
            rounds: 5,
            clients: vec![8, 64, 256, 1024],
            handoffs: 100,
            storm_rounds: 3,
            seconds: 3.0,
            storm_seconds: 5.0,
            idle: 10_000,
            build,
        }
    }
}

impl Settings {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum System {
    Uninterruptible,
    PlainTokio,
    Ecdysis,
    /// The plain tokio server with its accept loop in `#[tokio::main]`'s task: an extra row.
    PlainTokioMain,
    /// `examples/stateful.rs`: the echo with state built by `init`, an `Arc` per connection.
    Stateful,
    /// `examples/axum.rs`: an axum router served by the library.
    Axum,
    /// `examples/plain_axum.rs`: the same router served by `axum::serve`.
    AxumServe,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Uninterruptible => "uninterruptible (echo example)",
            System::PlainTokio => "plain tokio",
            System::Ecdysis => "ecdysis",
            System::PlainTokioMain => "plain tokio, accept loop in the main task (extra)",
            System::Stateful => "uninterruptible with init state (stateful example)",
            System::Axum => "uninterruptible (axum example)",
            System::AxumServe => "axum::serve (plain_axum)",
        }
    }
}

/// The example binaries, next to this one.
struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

/// A started server and how to restart it.
struct Running {
    server: Server,
    addr: SocketAddr,
    pidfile: PathBuf,
    restart: Signal,
    _dir: TempDir,
}

fn start(binaries: &Binaries, system: System, tls: Option<(&Path, &Path)>) -> Running {
    let dir = TempDir::new("bench");
    let pidfile = dir.join("server.pid");
    let pid_env = pidfile.to_str().unwrap().to_owned();
    let port = free_port().to_string();
    let mut env: Vec<(&str, &str)> = vec![("PID_FILE", &pid_env)];
    let (binary, restart) = match (system, tls.is_some()) {
        (System::Uninterruptible, _) => {
            env.push(("BIND", "tcp://127.0.0.1:0"));
            ("echo", SIGUSR1)
        }
        (System::PlainTokio, false) => ("plain_echo", SIGHUP),
        (System::PlainTokioMain, _) => {
            env.push(("ACCEPT_IN_MAIN", "1"));
            ("plain_echo", SIGHUP)
        }
        (System::PlainTokio, true) => ("plain_tls_echo", SIGHUP),
        (System::Ecdysis, _) => {
            env.push(("PORT", &port));
            ("ecdysis_echo", SIGHUP)
        }
        (System::Stateful, _) => {
            env.push(("BIND", "tcp://127.0.0.1:0"));
            ("stateful", SIGUSR1)
        }
        (System::Axum, _) => {
            env.push(("BIND", "tcp://127.0.0.1:0"));
            ("axum", SIGUSR1)
        }
        (System::AxumServe, _) => ("plain_axum", SIGHUP),
    };
    let key;
    let certificate;
    if let Some((k, c)) = tls {
        key = k.to_string_lossy().into_owned();
        certificate = c.to_string_lossy().into_owned();
        env.push(("TLS_KEY", &key));
        env.push(("TLS_CERTIFICATE", &certificate));
    }
    // In a session of its own, as a service runs: see `Server::start_in_session`.
    let server = Server::start_in_session(&binaries.path(binary), &env);
    let Address::Tcp(addr) = server.address() else {
        unreachable!("tcp")
    };
    if matches!(
        system,
        System::Uninterruptible | System::Ecdysis | System::Stateful | System::Axum
    ) {
        wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    }
    Running {
        server,
        addr,
        pidfile,
        restart,
        _dir: dir,
    }
}

fn options(addr: SocketAddr, clients: usize, tls: Option<&Client>) -> Options {
    Options {
        target: Target::Tcp(addr),
        clients,
        hold: Duration::ZERO,
        timeout: Duration::from_secs(10),
        tls: tls.map(|client| {
            // Every request a full handshake: no session resumption.
            let mut config = (*client.config()).clone();
            config.resumption = rustls::client::Resumption::disabled();
            (
                tokio_rustls::TlsConnector::from(Arc::new(config)),
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            )
        }),
    }
}

/// Requests per second over `seconds` of load, and the failures.
fn throughput(addr: SocketAddr, clients: usize, seconds: f64, tls: Option<&Client>) -> (f64, u64) {
    let started = Instant::now();
    let ((), stats) = load::with_load(options(addr, clients, tls), || {
        std::thread::sleep(Duration::from_secs_f64(seconds))
    });
    (
        stats.ok as f64 / started.elapsed().as_secs_f64(),
        stats.failed(),
    )
}

/// Median, min and max.
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}

fn cell(values: &[f64], unit: &str) -> String {
    let (median, min, max) = summary(values);
    format!("{median:.0}{unit} ({min:.0}–{max:.0})")
}

/// Median (min–max), two decimals: CPU per request in µs.
fn cell2(values: &[f64]) -> String {
    let (median, min, max) = summary(values);
    format!("{median:.2} ({min:.2}–{max:.2})")
}

/// Runs `measure` for each system in turn, `rounds` times, the order rotating every round.
fn rounds<T>(
    settings: &Settings,
    systems: &[System],
    mut measure: impl FnMut(System) -> T,
) -> BTreeMap<System, Vec<T>> {
    let mut results: BTreeMap<System, Vec<T>> = BTreeMap::new();
    for round in 0..settings.rounds {
        for i in 0..systems.len() {
            let system = systems[(i + round) % systems.len()];
            results.entry(system).or_default().push(measure(system));
        }
    }
    results
}

fn resident_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024.0
}

fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() {
    let settings = settings();
    raise_open_file_limit();
    let binaries = build_examples();
    print_machine(&settings);

    let all = [
        System::Uninterruptible,
        System::PlainTokio,
        System::Ecdysis,
        System::PlainTokioMain,
    ];
    let mut targets = Targets::default();
    if settings.runs("steady") || settings.runs("storm") {
        steady_and_storm(&settings, &binaries, &all, &mut targets);
    }
    if settings.runs("memory") {
        memory(&settings, &binaries, &mut targets);
    }
    if settings.runs("scale") {
        scale(&settings, &binaries, &mut targets);
    }
    if settings.runs("handoff") {
        handoff(&settings, &binaries, &mut targets);
    }
    if settings.runs("tls") {
        tls(&settings, &binaries);
    }
    if settings.runs("resume") {
        resume(&settings, &binaries);
    }
    if settings.runs("state") {
        state(&settings, &binaries);
    }
    if settings.runs("http") {
        http(&settings, &binaries);
    }
    if settings.runs("udp") {
        udp(&settings, &binaries);
    }
    if settings.build {
        build_cost(&mut targets);
    }
    targets.print();
}

/// The project's targets, each checked against what this run measured.
#[derive(Default)]
struct Targets(Vec<(String, String, bool)>);

impl Targets {
    fn check(&mut self, target: &str, measured: String, met: bool) {
        self.0.push((target.to_owned(), measured, met));
    }

    fn print(&self) {
        println!("\n### Targets\n");
        println!("| target | this run | met |");
        println!("|---|---|---|");
        for (target, measured, met) in &self.0 {
            println!(
                "| {target} | {measured} | {} |",
                if *met { "yes" } else { "**no**" }
            );
        }
    }
}

/// Clock ticks of CPU (user and system) the process `pid` has used, all threads.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second of `/proc/<pid>/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// One steady run: requests per second, server CPU per request (µs), and the load's counts.
struct SteadyRun {
    rate: f64,
    cpu_us: f64,
    stats: load::Stats,
}

fn steady_run(running: &Running, clients: usize, seconds: f64) -> SteadyRun {
    let pid = running.server.pid();
    let before = cpu_ticks(pid);
    let started = Instant::now();
    let ((), stats) = load::with_load(options(running.addr, clients, None), || {
        std::thread::sleep(Duration::from_secs_f64(seconds))
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - before) as f64 / ticks_per_second();
    SteadyRun {
        rate: stats.ok as f64 / elapsed,
        cpu_us: cpu * 1e6 / stats.ok.max(1) as f64,
        stats,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Steady throughput, server CPU per request and latency; then the restart storm at the same
/// client counts (compared with the steady figures).
fn steady_and_storm(
    settings: &Settings,
    binaries: &Binaries,
    all: &[System],
    targets: &mut Targets,
) {
    let mut steady: BTreeMap<(usize, System), Vec<SteadyRun>> = BTreeMap::new();
    for &clients in &settings.clients {
        let results = rounds(settings, all, |system| {
            let running = start(binaries, system, None);
            let run = steady_run(&running, clients, settings.seconds);
            assert_eq!(
                run.stats.failed(),
                0,
                "{} failed requests without restarts: {}",
                system.name(),
                run.stats
            );
            run
        });
        for (system, runs) in results {
            steady.insert((clients, system), runs);
        }
    }
    let merged = |runs: &[SteadyRun]| {
        let mut stats = load::Stats::default();
        for run in runs {
            stats.merge(run.stats.clone());
        }
        stats
    };
    println!("### Steady: a new connection per request\n");
    println!(
        "| clients | system | requests/s, median (min–max) | server CPU per request, µs | CPU vs. floor | latency p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &clients in &settings.clients {
        let cpu = |system: System| -> Vec<f64> {
            steady[&(clients, system)]
                .iter()
                .map(|r| r.cpu_us)
                .collect()
        };
        let floor = summary(&cpu(System::PlainTokio)).0;
        for &system in all {
            let runs = &steady[&(clients, system)];
            let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
            let (median, min, max) = summary(&cpu(system));
            let stats = merged(runs);
            println!(
                "| {clients} | {} | {} | {median:.2} ({min:.2}–{max:.2}) | {:.3} | {} | {} | {} |",
                system.name(),
                cell(&rates, ""),
                median / floor,
                ms(stats.latency(0.5)),
                ms(stats.latency(0.99)),
                ms(stats.latency(1.0)),
            );
        }
        let ratio = summary(&cpu(System::Uninterruptible)).0 / floor;
        if clients <= 256 {
            targets.check(
                &format!("steady, {clients} clients: server CPU per request ≤ 1.02× the floor"),
                format!("{ratio:.3}×"),
                ratio <= 1.02,
            );
        }
        let max = merged(&steady[&(clients, System::Uninterruptible)]).latency(1.0);
        targets.check(
            &format!("steady, {clients} clients: no SYN retransmit wait (max < 200 ms)"),
            ms(max),
            max < Duration::from_millis(200),
        );
    }

    if !settings.runs("storm") {
        return;
    }
    let restartable = [System::Uninterruptible, System::Ecdysis];
    let storm_settings = Settings {
        only: Vec::new(),
        rounds: settings.storm_rounds,
        clients: Vec::new(),
        handoffs: 0,
        storm_rounds: 0,
        seconds: 0.0,
        storm_seconds: 0.0,
        idle: 0,
        build: false,
    };
    println!(
        "\n### Restart storm: a restart every 50 ms for {} s\n",
        settings.storm_seconds
    );
    println!(
        "| clients | system | restarts | failed | requests/s | latency p50 | p99 | max | p99 vs. steady p99 | handoff p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &clients in &settings.clients {
        let storm = rounds(&storm_settings, &restartable, |system| {
            let running = start(binaries, system, None);
            let until = Instant::now() + Duration::from_secs_f64(settings.storm_seconds);
            let started = Instant::now();
            let (restarts, stats) = load::with_load(options(running.addr, clients, None), || {
                load::restart_loop(
                    &running.pidfile,
                    running.restart,
                    Duration::from_millis(50),
                    None,
                    Some(until),
                )
            });
            let rate = stats.ok as f64 / started.elapsed().as_secs_f64();
            (rate, stats, restarts.handoffs)
        });
        for system in restartable {
            let runs = &storm[&system];
            let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let mut stats = load::Stats::default();
            for run in runs {
                stats.merge(run.1.clone());
            }
            let handoffs = load::Restarts {
                handoffs: runs.iter().flat_map(|r| r.2.clone()).collect(),
            };
            let steady_p99 = merged(&steady[&(clients, system)]).latency(0.99);
            let p99_ratio = stats.latency(0.99).as_secs_f64() / steady_p99.as_secs_f64();
            println!(
                "| {clients} | {} | {} | {} | {} | {} | {} | {} | {p99_ratio:.2} | {} | {} | {} |",
                system.name(),
                handoffs.handoffs.len(),
                stats.failed(),
                cell(&rates, ""),
                ms(stats.latency(0.5)),
                ms(stats.latency(0.99)),
                ms(stats.latency(1.0)),
                ms(handoffs.quantile(0.5)),
                ms(handoffs.quantile(0.99)),
                ms(handoffs.quantile(1.0)),
            );
            if system != System::Uninterruptible {
                continue;
            }
            targets.check(
                &format!("storm, {clients} clients: 0 failed requests"),
                stats.failed().to_string(),
                stats.failed() == 0,
            );
            targets.check(
                &format!("storm, {clients} clients: no SYN retransmit wait (max < 200 ms)"),
                ms(stats.latency(1.0)),
                stats.latency(1.0) < Duration::from_millis(200),
            );
            targets.check(
                &format!("storm, {clients} clients: p99 ≤ 1.5× steady p99"),
                format!("{p99_ratio:.2}×"),
                p99_ratio <= 1.5,
            );
            if clients == 8 {
                targets.check(
                    "storm, 8 clients: handoff p50 ≤ 5 ms",
                    ms(handoffs.quantile(0.5)),
                    handoffs.quantile(0.5) <= Duration::from_millis(5),
                );
            }
        }
    }
}

/// Resident memory growth per idle connection.
fn memory(settings: &Settings, binaries: &Binaries, targets: &mut Targets) {
    let compared = [System::Uninterruptible, System::PlainTokio];
    let memory = rounds(settings, &compared, |system| {
        let running = start(binaries, system, None);
        let pid = running.server.pid();
        // One request first, so lazily allocated state exists before the baseline.
        let _ = throughput(running.addr, 1, 0.1, None);
        let base_fds = fd_count(pid);
        let before = resident_bytes(pid);
        let idle: Vec<TcpStream> = (0..settings.idle)
            .map(|_| TcpStream::connect(running.addr).unwrap())
            .collect();
        wait_for("every idle client to be accepted", DEADLINE, || {
            (fd_count(pid) >= base_fds + settings.idle).then_some(())
        });
        let after = resident_bytes(pid);
        drop(idle);
        (after - before) / settings.idle as f64
    });
    println!(
        "\n### Idle memory: resident growth per connection, {} idle clients\n",
        settings.idle
    );
    println!("| system | bytes per connection, median (min–max) |");
    println!("|---|---|");
    for system in compared {
        println!("| {} | {} |", system.name(), cell(&memory[&system], " B"));
    }
    let extra =
        summary(&memory[&System::Uninterruptible]).0 - summary(&memory[&System::PlainTokio]).0;
    println!("\nuninterruptible minus plain tokio: {extra:.0} B per connection.");
    targets.check(
        "idle memory ≤ plain tokio + 512 B per connection",
        format!("{extra:+.0} B"),
        extra <= 512.0,
    );
}

/// The steps of a restart, as the new process logs them: "ready X ms after the restart started:
/// step a ms, step b ms, ...".
fn restart_steps(line: &str) -> Option<(f64, Vec<(String, f64)>)> {
    let rest = line.split("ready ").nth(1)?;
    let (total, steps) = rest.split_once(" ms after the restart started: ")?;
    let steps = steps
        .split(", ")
        .filter_map(|step| {
            let (name, value) = step.trim().rsplit_once(' ')?.0.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    Some((total.parse().ok()?, steps))
}

/// Restarts one at a time, idle and under 8 clients: the time from the signal to the pidfile
/// naming the new process, and the new process's own account of its start, step by step.
fn handoff(settings: &Settings, binaries: &Binaries, targets: &mut Targets) {
    println!(
        "\n### Handoff: {} restarts, 50 ms apart\n",
        settings.handoffs
    );
    println!(
        "| load | signal to pidfile p50 | p99 | max | spawn to ready p50 | exec and load (with config) | runtime | TLS | handoff | pidfile and accept |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for clients in [0, 8] {
        let running = start(binaries, System::Uninterruptible, None);
        let restarts = || {
            load::restart_loop(
                &running.pidfile,
                SIGUSR1,
                Duration::from_millis(50),
                Some(settings.handoffs),
                None,
            )
        };
        let restarts = if clients == 0 {
            restarts()
        } else {
            load::with_load(options(running.addr, clients, None), restarts).0
        };
        // The last new process logs its steps just after it writes the pidfile.
        running
            .server
            .log
            .wait_for_count("after the restart started", settings.handoffs);
        let accounts: Vec<(f64, Vec<(String, f64)>)> = running
            .server
            .log
            .lines()
            .iter()
            .filter_map(|line| restart_steps(line))
            .collect();
        let median = |values: Vec<f64>| summary(&values).0;
        let step = |name: &str| {
            median(
                accounts
                    .iter()
                    .filter_map(|(_, steps)| steps.iter().find(|(n, _)| n == name).map(|s| s.1))
                    .collect(),
            )
        };
        let total = median(accounts.iter().map(|(total, _)| *total).collect());
        let p50 = restarts.quantile(0.5);
        println!(
            "| {} | {} | {} | {} | {total:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            if clients == 0 {
                "idle".to_owned()
            } else {
                format!("{clients} clients")
            },
            ms(p50),
            ms(restarts.quantile(0.99)),
            ms(restarts.quantile(1.0)),
            step("exec and load"),
            step("runtime"),
            step("TLS"),
            step("handoff"),
            step("pidfile and accept"),
        );
        let (limit, label) = if clients == 0 {
            (2.5, "idle")
        } else {
            (5.0, "8 clients")
        };
        targets.check(
            &format!("handoff p50 ≤ {limit} ms, {label}"),
            ms(p50),
            p50.as_secs_f64() * 1e3 <= limit,
        );
    }
}

/// Idle connections held across a restart: every one answered by the retiring process, which
/// exits once they are closed, while the new process serves.
fn scale(settings: &Settings, binaries: &Binaries, targets: &mut Targets) {
    let n = settings.idle;
    let running = start(binaries, System::Uninterruptible, None);
    let old = running.server.pid();
    let base_fds = fd_count(old);
    let mut idle: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(running.addr).unwrap())
        .collect();
    wait_for("every idle client to be accepted", DEADLINE, || {
        (fd_count(old) >= base_fds + n).then_some(())
    });
    let restart = load::restart_loop(&running.pidfile, SIGUSR1, Duration::ZERO, Some(1), None);
    let new = read_pidfile(&running.pidfile).unwrap();
    // New clients are the new process's; the idle ones are still the old one's.
    let fresh = echo_once(running.addr, "new\n");
    let answered_at = Instant::now();
    let mut answered = 0;
    for (i, conn) in idle.iter_mut().enumerate() {
        use std::io::{Read, Write};
        let line = format!("idle {i}\n");
        let mut reply = String::new();
        let ok = conn.write_all(line.as_bytes()).is_ok()
            && conn.read_to_string(&mut reply).is_ok()
            && reply == line;
        answered += usize::from(ok);
    }
    let answering = answered_at.elapsed();
    drop(idle);
    let exited = wait_for("the retiring process to exit", DEADLINE, || {
        (!uninterruptible_tests::alive(old)).then(Instant::now)
    });
    let retired_after = exited.duration_since(answered_at);
    println!("\n### Scale: {n} idle connections held across a restart\n");
    println!("| what | measured |");
    println!("|---|---|");
    println!(
        "| handoff with {n} connections open (signal to pidfile) | {} |",
        ms(restart.quantile(1.0))
    );
    println!("| new client after the restart answered (by process {new}) | {fresh} |");
    println!(
        "| idle connections answered by the retiring process | {answered} of {n}, in {} |",
        ms(answering)
    );
    println!(
        "| retiring process exited, after its first idle client was answered | {} |",
        ms(retired_after)
    );
    targets.check(
        &format!("{n} idle connections across a restart: all answered, the old process exits"),
        format!(
            "{answered} of {n} answered; exited after {}",
            ms(retired_after)
        ),
        answered == n && fresh,
    );
}

fn echo_once(addr: SocketAddr, line: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = TcpStream::connect(addr) else {
        return false;
    };
    let mut reply = String::new();
    conn.write_all(line.as_bytes()).is_ok()
        && conn.read_to_string(&mut reply).is_ok()
        && reply == line
}

/// Full TLS handshakes per second.
fn tls(settings: &Settings, binaries: &Binaries) {
    let compared = [System::Uninterruptible, System::PlainTokio];
    let certs = TempDir::new("bench-certs");
    let ca = Ca::new("bench CA");
    let pair = ca.issue(certs.path(), "server", &["localhost"]);
    let client = Client::trusting(&ca);
    let handshakes = rounds(settings, &compared, |system| {
        let running = start(binaries, system, Some((&pair.key, &pair.certificate)));
        let (rate, failed) = throughput(running.addr, 8, settings.seconds, Some(&client));
        assert_eq!(failed, 0, "{} failed TLS requests", system.name());
        rate
    });
    println!("\n### TLS: full handshakes per second (TLS 1.3, no resumption, 8 clients, ring)\n");
    println!("| system | handshakes/s, median (min–max) | ratio to plain tokio-rustls |");
    println!("|---|---|---|");
    let floor = summary(&handshakes[&System::PlainTokio]).0;
    for system in compared {
        let name = if system == System::PlainTokio {
            "plain tokio-rustls"
        } else {
            system.name()
        };
        let rates = &handshakes[&system];
        println!(
            "| {name} | {} | {:.3} |",
            cell(rates, ""),
            summary(rates).0 / floor
        );
    }
}

/// Nanoseconds of CPU the process `pid` has used, all threads (`/proc/<pid>/task/*/schedstat`):
/// finer than clock ticks, for short bursts of work.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Connects each of `clients` (a rustls configuration each, with its own session cache) to
/// `addr` at once, echoes a line, and counts the handshakes that resumed a session.
fn reconnect_all(clients: &[Arc<rustls::ClientConfig>], addr: SocketAddr) -> usize {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = clients
            .iter()
            .map(|config| {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    let mut tls = connector.connect(name, tcp).await.unwrap();
                    tls.write_all(b"hello\n").await.unwrap();
                    let mut reply = Vec::new();
                    tls.read_to_end(&mut reply).await.unwrap();
                    assert_eq!(reply, b"hello\n");
                    tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
                })
            })
            .collect();
        let mut resumed = 0;
        for task in tasks {
            resumed += usize::from(task.await.unwrap());
        }
        resumed
    })
}

/// Restarts `running` with `USR1` and waits until the old process has exited; the new pid.
fn restart_and_wait(running: &Running) -> u32 {
    let old = read_pidfile(&running.pidfile).unwrap();
    uninterruptible_tests::send(old, SIGUSR1);
    let new = wait_for("a new pid", DEADLINE, || {
        read_pidfile(&running.pidfile).filter(|&pid| pid != old)
    });
    wait_for("the old process to exit", DEADLINE, || {
        (!uninterruptible_tests::alive(old)).then_some(())
    });
    new
}

/// TLS clients reconnecting right after a restart: 256 clients, each with a session from
/// before it, reconnect at once to the new process. With the ticket keys handed over, their
/// sessions resume; "without" gives them sessions from another process (keys this one never
/// had), which is what every restart did before the keys were handed over: full handshakes.
fn resume(settings: &Settings, binaries: &Binaries) {
    let clients = if settings.rounds == 1 { 16 } else { 256 };
    let certs = TempDir::new("bench-resume-certs");
    let ca = Ca::new("bench CA");
    let client = Client::trusting(&ca);
    println!(
        "\n### TLS reconnect after a restart: {clients} clients with a session each reconnect at once (TLS 1.3, ring)\n"
    );
    println!(
        "| server key | ticket keys | resumed handshakes, per round | new process CPU per handshake, µs, median (min–max) |"
    );
    println!("|---|---|---|---|");
    let ecdsa = ca.issue(certs.path(), "ecdsa", &["localhost"]);
    resume_with(settings, binaries, &client, clients, "ECDSA P-256", &ecdsa);
    // RSA, the most common server key, whose signature a resumed handshake saves.
    let rsa_key = certs.join("rsa.key");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa_key)
        .output();
    match made {
        Ok(out) if out.status.success() => {
            let pem = std::fs::read_to_string(&rsa_key).unwrap();
            let rsa = ca.issue_for_pem(&pem, certs.path(), "rsa", &["localhost"]);
            resume_with(settings, binaries, &client, clients, "RSA 2048", &rsa);
        }
        _ => println!("| RSA 2048 | (openssl cannot make an RSA key here) | | |"),
    }
}

/// [`resume`] with one server key.
fn resume_with(
    settings: &Settings,
    binaries: &Binaries,
    client: &Client,
    clients: usize,
    key: &str,
    pair: &uninterruptible_tests::certs::Pair,
) {
    let files = Some((pair.key.as_path(), pair.certificate.as_path()));
    let running = start(binaries, System::Uninterruptible, files);
    let other = start(binaries, System::Uninterruptible, files);
    let mut rows: BTreeMap<bool, (Vec<usize>, Vec<f64>)> = BTreeMap::new();
    for round in 0..settings.rounds {
        for handed in [round % 2 == 0, round % 2 != 0] {
            let configs: Vec<_> = (0..clients).map(|_| client.config()).collect();
            // Each client gets a session: from this server, or from the other one.
            let issuer = if handed { running.addr } else { other.addr };
            reconnect_all(&configs, issuer);
            let pid = restart_and_wait(&running);
            let before = cpu_ns(pid);
            let resumed = reconnect_all(&configs, running.addr);
            let cpu = (cpu_ns(pid) - before) as f64 / 1e3 / clients as f64;
            let row = rows.entry(handed).or_default();
            row.0.push(resumed);
            row.1.push(cpu);
        }
    }
    for handed in [false, true] {
        let (resumed, cpu) = &rows[&handed];
        let name = if handed {
            "handed over (this change)"
        } else {
            "not handed over (before it)"
        };
        let resumed: Vec<String> = resumed.iter().map(|r| format!("{r}/{clients}")).collect();
        println!(
            "| {key} | {name} | {} | {} |",
            resumed.join(", "),
            cell2(cpu)
        );
    }
}

/// What `init`'s state costs per connection: the echo, and the same echo whose handler gets an
/// `Arc` of state built by `init` with each connection, alternating, a new connection per request.
fn state(settings: &Settings, binaries: &Binaries) {
    let compared = [System::Uninterruptible, System::Stateful];
    println!("\n### State from `init`: server CPU per request, a new connection per request\n");
    println!(
        "| clients | system | requests/s, median (min–max) | server CPU per request, µs | CPU vs. echo |"
    );
    println!("|---|---|---|---|---|");
    for &clients in settings.clients.iter().take(2) {
        let runs = rounds(settings, &compared, |system| {
            let running = start(binaries, system, None);
            let run = steady_run(&running, clients, settings.seconds);
            assert_eq!(run.stats.failed(), 0, "{}: {}", system.name(), run.stats);
            run
        });
        let cpu = |system| runs[&system].iter().map(|r| r.cpu_us).collect::<Vec<_>>();
        let floor = summary(&cpu(System::Uninterruptible)).0;
        for system in compared {
            let rates: Vec<f64> = runs[&system].iter().map(|r| r.rate).collect();
            println!(
                "| {clients} | {} | {} | {} | {:.3} |",
                system.name(),
                cell(&rates, ""),
                cell2(&cpu(system)),
                summary(&cpu(system)).0 / floor
            );
        }
    }
}

/// One h2load run against `addr`: requests per second and server CPU per request (µs).
fn h2load_run(running: &Running, h2: bool, clients: usize, seconds: f64) -> (f64, f64) {
    let pid = running.server.pid();
    let before = cpu_ticks(pid);
    let url = format!("http://{}/", running.addr);
    let clients = clients.to_string();
    let duration = format!("{}", seconds.ceil() as u64);
    let mut args = vec!["-c", clients.as_str(), "-D", duration.as_str()];
    if !h2 {
        args.push("--h1");
    }
    let out = Command::new("h2load")
        .args(&args)
        .arg(&url)
        .output()
        .expect("h2load (Debian package nghttp2-client)");
    let cpu = (cpu_ticks(pid) - before) as f64 / ticks_per_second();
    let counts = uninterruptible_tests::http::h2load_counts(&String::from_utf8_lossy(&out.stdout));
    let succeeded = counts.succeeded;
    assert_eq!(counts.total, succeeded, "failed HTTP requests: {counts:?}");
    (
        succeeded as f64 / seconds.ceil(),
        cpu * 1e6 / succeeded.max(1) as f64,
    )
}

/// The axum router served by the library against the same router under `axum::serve`,
/// alternating: keep-alive HTTP/1.1 and h2 (prior knowledge), 64 connections, `GET /`.
fn http(settings: &Settings, binaries: &Binaries) {
    let compared = [System::Axum, System::AxumServe];
    println!(
        "\n### HTTP: the axum example against `axum::serve` with the same router (h2load, 64 connections, keep-alive)\n"
    );
    println!(
        "| protocol | system | requests/s, median (min–max) | server CPU per request, µs | CPU vs. axum::serve |"
    );
    println!("|---|---|---|---|---|");
    for h2 in [false, true] {
        let runs = rounds(settings, &compared, |system| {
            let running = start(binaries, system, None);
            h2load_run(&running, h2, 64, settings.seconds)
        });
        let cpu = |system| runs[&system].iter().map(|r| r.1).collect::<Vec<_>>();
        let floor = summary(&cpu(System::AxumServe)).0;
        for system in compared {
            let rates: Vec<f64> = runs[&system].iter().map(|r| r.0).collect();
            println!(
                "| {} | {} | {} | {} | {:.3} |",
                if h2 { "h2" } else { "HTTP/1.1" },
                system.name(),
                cell(&rates, ""),
                cell2(&cpu(system)),
                summary(&cpu(system)).0 / floor
            );
        }
    }
}

/// A UDP echo server started for the UDP section: the library's example, or the plain floor.
struct UdpRunning {
    server: Server,
    addr: SocketAddr,
    pidfile: PathBuf,
    _dir: TempDir,
}

/// `system`: the library's example (`Uninterruptible`), the plain floor (`PlainTokio`), or the
/// plain floor with a task per datagram (`PlainTokioMain` stands for it here).
fn start_udp(binaries: &Binaries, system: System) -> UdpRunning {
    let dir = TempDir::new("bench-udp");
    let pidfile = dir.join("server.pid");
    let pid_env = pidfile.to_str().unwrap().to_owned();
    let mut env = vec![
        ("BIND", "udp://127.0.0.1:0"),
        ("PID_FILE", pid_env.as_str()),
    ];
    if system == System::PlainTokioMain {
        env.push(("TASK_PER_DATAGRAM", "1"));
    }
    let binary = if system == System::Uninterruptible {
        "udp_echo"
    } else {
        "plain_udp_echo"
    };
    let server = Server::start_in_session(&binaries.path(binary), &env);
    let addr = udp::listening_on(&server);
    UdpRunning {
        server,
        addr,
        pidfile,
        _dir: dir,
    }
}

/// UDP: server CPU per datagram of the UDP echo example against a plain tokio UDP echo (8
/// clients, one datagram in flight each, alternating); then the example under the same load
/// and a burst client, restarted back to back: datagrams answered and lost.
fn udp(settings: &Settings, binaries: &Binaries) {
    let compared = [
        System::Uninterruptible,
        System::PlainTokio,
        System::PlainTokioMain,
    ];
    let runs = rounds(settings, &compared, |system| {
        let running = start_udp(binaries, system);
        let pid = running.server.pid();
        let before = cpu_ticks(pid);
        let started = Instant::now();
        let addr = running.addr;
        let ((), counts) = load::while_running(
            move |stop| udp::run(addr, 8, 0, stop),
            || std::thread::sleep(Duration::from_secs_f64(settings.seconds)),
        );
        let cpu = (cpu_ticks(pid) - before) as f64 / ticks_per_second();
        assert!(
            counts.lost.is_empty(),
            "{}: lost {:?}",
            system.name(),
            counts.lost
        );
        let answered = counts.answered.max(1) as f64;
        (
            answered / started.elapsed().as_secs_f64(),
            cpu * 1e6 / answered,
        )
    });
    println!("\n### UDP: the UDP echo example against a plain tokio UDP echo (8 clients)\n");
    println!(
        "| system | datagrams/s, median (min–max) | server CPU per datagram, µs | CPU vs. plain tokio |"
    );
    println!("|---|---|---|---|");
    let cpu = |system| runs[&system].iter().map(|r| r.1).collect::<Vec<_>>();
    let floor = summary(&cpu(System::PlainTokio)).0;
    for system in compared {
        let rates: Vec<f64> = runs[&system].iter().map(|r| r.0).collect();
        let name = match system {
            System::PlainTokio => "plain tokio (one task, inline reply)",
            System::PlainTokioMain => "plain tokio, a task per datagram",
            _ => "uninterruptible (udp_echo example)",
        };
        println!(
            "| {name} | {} | {} | {:.3} |",
            cell(&rates, ""),
            cell2(&cpu(system)),
            summary(&cpu(system)).0 / floor
        );
    }

    println!(
        "\n### UDP storm: the UDP echo example restarted back to back under 8 clients and bursts of 64\n"
    );
    println!(
        "| round | restarts | datagrams answered | bursts | lost | kernel queue drops | handoff p50 | handoff max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in 1..=settings.storm_rounds {
        let running = start_udp(binaries, System::Uninterruptible);
        let addr = running.addr;
        let drops = udp::kernel_drops();
        let until = Instant::now() + Duration::from_secs_f64(settings.storm_seconds);
        let pidfile = running.pidfile.clone();
        let (restarts, counts) = load::while_running(
            move |stop| udp::run(addr, 8, 64, stop),
            || load::restart_loop(&pidfile, SIGUSR1, Duration::ZERO, None, Some(until)),
        );
        let drops = udp::kernel_drops() - drops;
        println!(
            "| {round} | {} | {} | {} | {} | {drops} | {} | {} |",
            restarts.handoffs.len(),
            counts.answered,
            counts.bursts,
            counts.lost.len(),
            ms(restarts.quantile(0.5)),
            ms(restarts.quantile(1.0)),
        );
        assert!(
            counts.lost.is_empty(),
            "lost {:?}",
            &counts.lost[..counts.lost.len().min(5)]
        );
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Builds the example servers with this binary's profile, and finds them next to it.
fn build_examples() -> Binaries {
    let mut command = Command::new(cargo());
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "uninterruptible-examples",
            "--examples",
        ])
        .current_dir(workspace_root());
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command.status().expect("run cargo");
    assert!(status.success(), "building the example servers failed");
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    Binaries { dir }
}

fn print_machine(settings: &Settings) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("## Run\n");
    println!("- machine: {cpu}, {cores} cores, Linux {}", kernel.trim());
    println!(
        "- {} rounds, systems alternating; {} s per throughput run; {profile} build; load client and servers share the machine\n",
        settings.rounds, settings.seconds
    );
}

/// Clean release builds of the echo example and of the plain tokio echo with the same
/// dependencies (the runtime's own), alternating, each in a fresh target directory.
fn build_cost(targets: &mut Targets) {
    let root = workspace_root();
    let scratch = root.join("target").join("bench-build");
    let _ = std::fs::remove_dir_all(&scratch);
    let runtime_manifest =
        std::fs::read_to_string(root.join("uninterruptible/Cargo.toml")).unwrap();
    let workspace_manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    // The runtime's dependencies, resolved from the workspace table, minus its own macro crate.
    let deps: Vec<String> = runtime_manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("uninterruptible"))
        .map(|l| resolve_dependency(l, &workspace_manifest))
        .collect();
    let project = |name: &str, deps: &str, main: &str| {
        let dir = scratch.join(name);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n[dependencies]\n{deps}\n\n[workspace]\n"),
        )
        .unwrap();
        std::fs::write(dir.join("src/main.rs"), main).unwrap();
        std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        dir
    };
    let ours = project(
        "build_uninterruptible",
        &format!(
            "uninterruptible = {{ path = {:?} }}\ntokio = {{ version = \"1\", features = [\"io-util\"] }}",
            root.join("uninterruptible")
        ),
        &std::fs::read_to_string(root.join("examples/echo.rs")).unwrap(),
    );
    let plain = project(
        "build_plain",
        &deps.join("\n"),
        &std::fs::read_to_string(root.join("examples/plain_echo.rs")).unwrap(),
    );
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _round in 0..2 {
        for (name, dir) in [
            ("uninterruptible echo", &ours),
            ("plain tokio echo, same dependencies", &plain),
        ] {
            let target = dir.join("target");
            let _ = std::fs::remove_dir_all(&target);
            let started = Instant::now();
            let status = Command::new(cargo())
                .args(["build", "--release", "--quiet", "--offline"])
                .current_dir(dir)
                .status()
                .unwrap();
            assert!(status.success(), "building {name} failed");
            times
                .entry(name)
                .or_default()
                .push(started.elapsed().as_secs_f64());
        }
    }
    println!("\n### Build cost: clean release build, 2 rounds alternating\n");
    println!("| build | seconds, median (min–max) |");
    println!("|---|---|");
    for (name, secs) in &times {
        let (median, min, max) = summary(secs);
        println!("| {name} | {median:.1} ({min:.1}–{max:.1}) |");
    }
    let ratio = summary(&times["uninterruptible echo"]).0
        / summary(&times["plain tokio echo, same dependencies"]).0;
    println!("\nratio: {ratio:.2}");
    targets.check(
        "clean build ≤ 1.2× plain",
        format!("{ratio:.2}×"),
        ratio <= 1.2,
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `name.workspace = true` (or `name = { workspace = true, features = [...] }`) as the workspace
/// table has it, with any extra features.
fn resolve_dependency(line: &str, workspace_manifest: &str) -> String {
    let name = line.split(['.', ' ', '=']).next().unwrap().trim();
    let table = workspace_manifest
        .split("[workspace.dependencies]")
        .nth(1)
        .unwrap();
    let spec = table
        .lines()
        .find(|l| l.starts_with(&format!("{name} =")))
        .unwrap_or_else(|| panic!("{name} in [workspace.dependencies]"))
        .split_once('=')
        .unwrap()
        .1
        .trim()
        .to_owned();
    let extra: Option<String> = line
        .split("features = [")
        .nth(1)
        .map(|f| f.split(']').next().unwrap().to_owned());
    match (spec.starts_with('{'), extra) {
        (_, None) => format!("{name} = {spec}"),
        (true, Some(extra)) if spec.contains("features = [") => {
            format!(
                "{name} = {}",
                spec.replacen("features = [", &format!("features = [{extra}, "), 1)
            )
        }
        (true, Some(extra)) => format!(
            "{name} = {}, features = [{extra}] }}",
            spec.trim_end_matches('}').trim_end()
        ),
        (false, Some(extra)) => format!("{name} = {{ version = {spec}, features = [{extra}] }}"),
    }
}
