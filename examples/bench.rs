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
use uninterruptible_tests::{
    Address, DEADLINE, SIGHUP, SIGUSR1, Server, Signal, TempDir, fd_count, free_port, read_pidfile,
    wait_for,
};

struct Settings {
    /// Which sections to run: steady, storm, memory, tls (all when empty).
    only: Vec<String>,
    rounds: usize,
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
                    "bench: unknown argument {unknown}; expected --smoke, --build, --only steady,storm,memory,tls"
                );
                std::process::exit(2);
            }
        }
    }
    if smoke {
        Settings {
            only,
            rounds: 1,
            seconds: 0.5,
            storm_seconds: 1.0,
            idle: 200,
            build,
        }
    } else {
        Settings {
            only,
            rounds: 5,
            seconds: 3.0,
            storm_seconds: 10.0,
            idle: 4000,
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
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Uninterruptible => "uninterruptible (echo example)",
            System::PlainTokio => "plain tokio",
            System::Ecdysis => "ecdysis",
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
        (System::PlainTokio, true) => ("plain_tls_echo", SIGHUP),
        (System::Ecdysis, _) => {
            env.push(("PORT", &port));
            ("ecdysis_echo", SIGHUP)
        }
    };
    let key;
    let certificate;
    if let Some((k, c)) = tls {
        key = k.to_string_lossy().into_owned();
        certificate = c.to_string_lossy().into_owned();
        env.push(("TLS_KEY", &key));
        env.push(("TLS_CERTIFICATE", &certificate));
    }
    let server = Server::start(&binaries.path(binary), &env);
    let Address::Tcp(addr) = server.address() else {
        unreachable!("tcp")
    };
    if system != System::PlainTokio {
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

    let all = [System::Uninterruptible, System::PlainTokio, System::Ecdysis];
    let mut targets = Targets::default();
    if settings.runs("steady") || settings.runs("storm") {
        steady_and_storm(&settings, &binaries, &all, &mut targets);
    }
    if settings.runs("memory") {
        memory(&settings, &binaries, &mut targets);
    }
    if settings.runs("tls") {
        tls(&settings, &binaries);
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

/// Steady throughput, and the restart storm (compared with the steady figures).
fn steady_and_storm(
    settings: &Settings,
    binaries: &Binaries,
    all: &[System],
    targets: &mut Targets,
) {
    let mut steady: BTreeMap<(usize, System), Vec<f64>> = BTreeMap::new();
    for clients in [8, 64] {
        let results = rounds(settings, all, |system| {
            let running = start(binaries, system, None);
            let (rate, failed) = throughput(running.addr, clients, settings.seconds, None);
            assert_eq!(
                failed,
                0,
                "{} failed requests without restarts",
                system.name()
            );
            rate
        });
        for (system, rates) in results {
            steady.insert((clients, system), rates);
        }
    }
    println!("### Steady throughput (new connection per request)\n");
    println!("| clients | system | requests/s, median (min–max) | ratio to plain tokio |");
    println!("|---|---|---|---|");
    for clients in [8, 64] {
        let floor = summary(&steady[&(clients, System::PlainTokio)]).0;
        for &system in all {
            let rates = &steady[&(clients, system)];
            println!(
                "| {clients} | {} | {} | {:.3} |",
                system.name(),
                cell(rates, ""),
                summary(rates).0 / floor
            );
        }
        let ratio = summary(&steady[&(clients, System::Uninterruptible)]).0 / floor;
        targets.check(
            &format!("steady, {clients} clients: ≥ 0.97× plain tokio"),
            format!("{ratio:.3}×"),
            ratio >= 0.97,
        );
    }

    if !settings.runs("storm") {
        return;
    }
    let restartable = [System::Uninterruptible, System::Ecdysis];
    let storm = rounds(settings, &restartable, |system| {
        let running = start(binaries, system, None);
        let until = Instant::now() + Duration::from_secs_f64(settings.storm_seconds);
        let started = Instant::now();
        let (restarts, stats) = load::with_load(options(running.addr, 8, None), || {
            load::restart_loop(
                &running.pidfile,
                running.restart,
                Duration::from_millis(50),
                None,
                Some(until),
            )
        });
        let rate = stats.ok as f64 / started.elapsed().as_secs_f64();
        (rate, stats.failed(), restarts.handoffs)
    });
    println!(
        "\n### Restart storm: a restart every 50 ms for {} s, 8 clients\n",
        settings.storm_seconds
    );
    println!(
        "| system | restarts | failed requests | requests/s during the storm | vs. steady (8 clients) | handoff p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let p50 = |system: System| {
        let handoffs = storm[&system].iter().flat_map(|r| r.2.clone()).collect();
        load::Restarts { handoffs }.quantile(0.5)
    };
    for system in restartable {
        let runs = &storm[&system];
        let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let failed: u64 = runs.iter().map(|r| r.1).sum();
        let handoffs = load::Restarts {
            handoffs: runs.iter().flat_map(|r| r.2.clone()).collect(),
        };
        let ms = |q: f64| handoffs.quantile(q).as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {failed} | {} | {:.2} | {:.1} ms | {:.1} ms | {:.1} ms |",
            system.name(),
            handoffs.handoffs.len(),
            cell(&rates, ""),
            summary(&rates).0 / summary(&steady[&(8, system)]).0,
            ms(0.5),
            ms(0.99),
            ms(1.0),
        );
        if system == System::Uninterruptible {
            let ratio = summary(&rates).0 / summary(&steady[&(8, system)]).0;
            targets.check("storm: 0 failed requests", failed.to_string(), failed == 0);
            targets.check(
                "storm: handoff p50 ≤ 5 ms and no worse than ecdysis",
                format!(
                    "{:.1} ms (ecdysis {:.1} ms)",
                    ms(0.5),
                    p50(System::Ecdysis).as_secs_f64() * 1e3
                ),
                ms(0.5) <= 5.0 && handoffs.quantile(0.5) <= p50(System::Ecdysis),
            );
            targets.check(
                "storm: handoff max ≤ 25 ms",
                format!("{:.1} ms", ms(1.0)),
                ms(1.0) <= 25.0,
            );
            targets.check(
                "storm: throughput ≥ 0.8× steady",
                format!("{ratio:.2}×"),
                ratio >= 0.8,
            );
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
