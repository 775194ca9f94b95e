//! The load client: `N` concurrent clients echoing lines at a server, optionally while it is
//! restarted at a cadence; prints requests, failures by kind, and handoff times.
//!
//! ```sh
//! cargo run --release -p uninterruptible-tests --bin load -- \
//!     --tcp 127.0.0.1:6789 --clients 16 --seconds 60 --pidfile /tmp/echo.pid --restart-every-ms 100
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};
use uninterruptible_tests::load::{self, Options, Target};

const USAGE: &str = "usage: load (--tcp HOST:PORT | --unix PATH) [--clients N] [--seconds S] \
[--hold-ms MS] [--timeout-ms MS] [--pidfile PATH --restart-every-ms MS [--signal USR1|HUP]]";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(args) => run(args),
        Err(message) => {
            eprintln!("load: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

struct Args {
    options: Options,
    seconds: f64,
    pidfile: Option<std::path::PathBuf>,
    restart_every: Option<Duration>,
    signal: uninterruptible_tests::Signal,
}

fn parse(argv: Vec<String>) -> Result<Args, String> {
    let mut target = None;
    let mut clients = 16;
    let mut seconds = 10.0;
    let mut hold = Duration::ZERO;
    let mut timeout = Duration::from_secs(10);
    let mut pidfile = None;
    let mut restart_every = None;
    let mut signal = uninterruptible_tests::SIGUSR1;
    let mut argv = argv.into_iter();
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        let ms = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag}: not a number of milliseconds: {v}"))
        };
        match flag.as_str() {
            "--tcp" => {
                target = Some(Target::Tcp(
                    value()?.parse().map_err(|e| format!("--tcp: {e}"))?,
                ))
            }
            "--unix" => target = Some(Target::Unix(value()?.into())),
            "--clients" => clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--hold-ms" => hold = ms(value()?)?,
            "--timeout-ms" => timeout = ms(value()?)?,
            "--pidfile" => pidfile = Some(value()?.into()),
            "--restart-every-ms" => restart_every = Some(ms(value()?)?),
            "--signal" => {
                signal = match value()?.as_str() {
                    "USR1" => uninterruptible_tests::SIGUSR1,
                    "HUP" => uninterruptible_tests::SIGHUP,
                    other => return Err(format!("--signal: USR1 or HUP, not {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let target = target.ok_or("give --tcp or --unix")?;
    if restart_every.is_some() && pidfile.is_none() {
        return Err("--restart-every-ms needs --pidfile".into());
    }
    Ok(Args {
        options: Options {
            target,
            clients,
            hold,
            timeout,
            tls: None,
        },
        seconds,
        pidfile,
        restart_every,
        signal,
    })
}

fn run(args: Args) -> ExitCode {
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let (restarts, stats) =
        load::with_load(args.options, || match (&args.pidfile, args.restart_every) {
            (Some(pidfile), Some(every)) => {
                load::restart_loop(pidfile, args.signal, every, None, Some(until))
            }
            _ => {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                load::Restarts::default()
            }
        });
    let elapsed = started.elapsed().as_secs_f64();
    println!("requests: {stats}");
    println!(
        "throughput: {:.0} requests/s over {elapsed:.1} s",
        stats.ok as f64 / elapsed
    );
    if !restarts.handoffs.is_empty() {
        println!(
            "restarts: {}, handoff (USR1 to new pid in pidfile) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            restarts.handoffs.len(),
            restarts.quantile(0.5).as_secs_f64() * 1e3,
            restarts.quantile(0.99).as_secs_f64() * 1e3,
            restarts.quantile(1.0).as_secs_f64() * 1e3,
        );
    }
    if stats.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
