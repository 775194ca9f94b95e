//! A counter that survives restarts: `incr` adds one and answers the count, `get` answers it.
//! At each restart the old process hands the count to the new one (`save`), over the private
//! handoff connection; the new process's `init` receives it.
//!
//! ```sh
//! cargo run --example counter
//! echo incr | nc 127.0.0.1 6798     # 1
//! kill -USR1 <pid>
//! echo get | nc 127.0.0.1 6798      # still 1
//! ```
//!
//! `HANDOVER_FORMAT=<n>` (default 1) is the format this process writes and reads: a process of
//! another format stands for a new version that cannot read the old format. It says so and
//! starts at 0. A request the old process serves after it saved (while the new one starts) is
//! not in what it handed over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uninterruptible::Handover;

struct Counter {
    count: AtomicU64,
    /// The format of the state this process reads and writes.
    format: u32,
}

async fn setup(previous: Option<Handover>) -> Result<Counter, String> {
    let format = match std::env::var("HANDOVER_FORMAT") {
        Err(_) => 1,
        Ok(n) => n
            .parse()
            .map_err(|_| format!("HANDOVER_FORMAT={n:?} is not a whole number"))?,
    };
    let count = match previous {
        None => 0,
        Some(state) if state.version() == format => {
            let bytes: [u8; 8] = state.bytes().try_into().map_err(|_| {
                format!(
                    "a count of {} bytes was handed over, not 8",
                    state.bytes().len()
                )
            })?;
            u64::from_be_bytes(bytes)
        }
        Some(state) => {
            eprintln!(
                "counter: cannot read handed-over state of format {} (this version reads format {format}): starting at 0",
                state.version()
            );
            0
        }
    };
    Ok(Counter {
        count: AtomicU64::new(count),
        format,
    })
}

fn save(counter: &Counter) -> Handover {
    let count = counter.count.load(Ordering::SeqCst);
    Handover::new(counter.format, count.to_be_bytes().to_vec())
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6798", init = "setup", save = "save")]
async fn serve(stream: uninterruptible::Stream, counter: Arc<Counter>) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    let answer = match line.trim() {
        "incr" => format!("{}\n", counter.count.fetch_add(1, Ordering::SeqCst) + 1),
        "get" => format!("{}\n", counter.count.load(Ordering::SeqCst)),
        other => format!("unknown command {other:?}: incr or get\n"),
    };
    writer.write_all(answer.as_bytes()).await
}
