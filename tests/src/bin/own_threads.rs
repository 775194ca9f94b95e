//! A program that owns its `main`: it builds a tokio runtime of its own first (its threads exist
//! before the server starts, as any async start-up makes them), then serves a line echo with
//! `uninterruptible::run`. With `IN_RUNTIME=1` it calls `run` from inside that runtime, as a
//! `#[tokio::main]` program would.

use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}

fn serve() -> ExitCode {
    let defaults = uninterruptible::Defaults::new().bind("tcp://127.0.0.1:0");
    match uninterruptible::Config::from_env(defaults) {
        Ok(config) => uninterruptible::run(config, echo),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_status())
        }
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("own-worker")
        .enable_all()
        .build()
        .expect("a runtime");
    // Work on the program's own threads, which keep running beside the server.
    runtime.spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    if std::env::var_os("IN_RUNTIME").is_some() {
        runtime.block_on(async { serve() })
    } else {
        serve()
    }
}
