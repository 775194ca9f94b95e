//! The gem README's "Concurrency" example, a fixed pool of workers: the handler takes the whole
//! listener (`Incoming`) and runs connections itself. Four workers each take connections from
//! the same `Incoming` and serve the line echo of `examples/echo.rs`, one at a time. When the
//! process stops accepting, `accept` returns `None` once every accepted connection is handed
//! out; the workers finish, the handler returns, and the process retires.
//!
//! ```sh
//! cargo run --example pool
//! echo hi | socat - TCP:127.0.0.1:6794
//! ```

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WORKERS: usize = 4;

#[uninterruptible::server(bind = "tcp://127.0.0.1:6794")]
async fn pool(incoming: uninterruptible::Incoming) {
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let incoming = incoming.clone();
            tokio::spawn(async move {
                while let Some(stream) = incoming.accept().await {
                    if let Err(e) = echo(stream).await {
                        eprintln!("a connection failed: {e}");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}
