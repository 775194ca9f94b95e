//! A line protocol whose handler needs state built at start: `init` builds it once per process,
//! before the process accepts or tells anyone it is ready, and each connection gets it.
//!
//! The state is a stand-in for a database pool, "connected" to `DATABASE_URL`. The restart waits
//! for it: a new process that cannot connect fails the restart, with the reason, and the old
//! process serves on.
//!
//! ```sh
//! DATABASE_URL=postgres://db/app CONTROL_SOCKET=/tmp/stateful.ctl cargo run --example stateful
//! echo pool | socat - TCP:127.0.0.1:6795        # pool of 4 connections to postgres://db/app
//! echo hi | socat - TCP:127.0.0.1:6795          # hi
//! # With POOL_FAIL_FILE=/tmp/db-down set at start: while that file exists, a new process cannot
//! # connect, so a restart fails with its reason and this process serves on.
//! echo "connection refused" > /tmp/db-down
//! echo restart | socat -t 70 - UNIX-CONNECT:/tmp/stateful.ctl
//! # failed new process 4242 failed to start: cannot connect to postgres://db/app: connection refused; ...
//! ```
//!
//! Variables read by `setup` (the program's own, not the library's):
//! - `DATABASE_URL`: where the pool connects (default `memory://`);
//! - `POOL_SIZE`: connections in the pool (default 4);
//! - `POOL_CONNECT_MS`: how long connecting takes, to show a slow start-up (default 0);
//! - `POOL_FAIL_FILE`: while this file exists, connecting fails with what it says (a database
//!   that is down, for a process started by a restart).

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A database pool, as far as this example needs one.
struct Pool {
    url: String,
    size: usize,
}

/// Connects the pool. An error ends the new process before it is ready: the restart fails with
/// this message, and the old process serves on.
async fn setup() -> Result<Pool, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let url = var("DATABASE_URL").unwrap_or_else(|| "memory://".to_owned());
    let size = match var("POOL_SIZE") {
        None => 4,
        Some(size) => size
            .parse()
            .map_err(|_| format!("POOL_SIZE={size:?} is not a whole number"))?,
    };
    if let Some(ms) = var("POOL_CONNECT_MS") {
        let ms: u64 = ms
            .parse()
            .map_err(|_| format!("POOL_CONNECT_MS={ms:?} is not a whole number"))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(why) = var("POOL_FAIL_FILE").and_then(|path| std::fs::read_to_string(path).ok()) {
        return Err(format!("cannot connect to {url}: {}", why.trim()));
    }
    Ok(Pool { url, size })
}

/// The gem's echo (one line back, then close), but `pool`, which describes the pool.
#[uninterruptible::server(bind = "tcp://127.0.0.1:6795", init = "setup")]
async fn serve(stream: uninterruptible::Stream, pool: Arc<Pool>) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    if line.trim_end() == "pool" {
        line = format!("pool of {} connections to {}\n", pool.size, pool.url);
    }
    writer.write_all(line.as_bytes()).await
}
