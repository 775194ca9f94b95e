//! A server whose program owns its `main`: it parses its own flags, does async start-up work on
//! its own runtime before serving, and restarts itself from code with a [`Handle`].
//!
//! ```sh
//! cargo run --example own_main -- --port 7001 --greeting-file /etc/motd
//! echo hi | nc 127.0.0.1 7001          # the greeting file's first line, then "hi"
//! echo restart | nc 127.0.0.1 7001     # "ok <pid> <generation>": restarted from code
//! ```
//!
//! Flags win over the environment (`--port` over `BIND` and `PORT`); what they leave unset
//! stays the operator's to set, as with the attribute. A line `restart` asks the server to
//! restart itself and answers the outcome the control socket would (with `SUPERVISE=true`, a
//! serving process is restarted by its supervisor: it answers `failed the supervisor restarts
//! this process`); `stop` drains it as `TERM` does (supervised, the whole service). (An admin command on the service port is for a demonstration on loopback only.)

use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uninterruptible::{BindAddress, Config, Defaults, Handle, Server, Stream};

/// What the command line says.
#[derive(Debug, Default)]
struct Args {
    port: Option<u16>,
    greeting_file: Option<String>,
}

const USAGE: &str = "usage: own_main [--port PORT] [--greeting-file PATH]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value; {USAGE}"));
        match arg.as_str() {
            "--port" => {
                let port = value("--port")?;
                parsed.port = Some(port.parse().map_err(|_| {
                    format!("--port={port:?} is invalid: expected a port number from 0 to 65535")
                })?);
            }
            "--greeting-file" => parsed.greeting_file = Some(value("--greeting-file")?),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(parsed)
}

/// What every connection shares, built once per process before it serves: a stand-in for a
/// database pool or a cache.
struct State {
    greeting: String,
    handle: Handle,
}

/// Async start-up work: read the greeting (the first line of a file, if one is given; none
/// makes the server a plain line echo).
async fn load_greeting(path: Option<&str>) -> std::io::Result<String> {
    let Some(path) = path.map(str::to_owned) else {
        return Ok(String::new());
    };
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await??;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

async fn serve(state: Arc<State>, stream: Stream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    let reply = match line.trim_end() {
        // The outcome, as the control socket gives it.
        "restart" => format!("{}\n", state.handle.restart().await),
        "stop" => {
            state.handle.stop();
            "stopping\n".to_owned()
        }
        _ if state.greeting.is_empty() => line,
        _ => format!("{}\n{line}", state.greeting),
    };
    writer.write_all(reply.as_bytes()).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Config::builder(Defaults::new().bind("tcp://127.0.0.1:6790"));
    if let Some(port) = args.port {
        builder = builder.bind([BindAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        }]);
    }
    let config = match builder.build() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(e.exit_status());
        }
    };
    let greeting = match load_greeting(args.greeting_file.as_deref()).await {
        Ok(greeting) => greeting,
        Err(e) => {
            eprintln!(
                "cannot read the greeting file {}: {e}",
                args.greeting_file.unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
    };
    let server = Server::new(config);
    let state = Arc::new(State {
        greeting,
        handle: server.handle(),
    });
    server
        .serve(move |stream| serve(Arc::clone(&state), stream))
        .await
}
