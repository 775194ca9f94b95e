//! The echo handler under Cloudflare's ecdysis, the closest Rust peer, for the benchmarks:
//! `HUP` upgrades (a new process inherits the socket; the old one drains), `PID_FILE` is written
//! when a process is ready. Listens on 127.0.0.1:$PORT.

use ecdysis::tokio_ecdysis::{SignalKind, StopOnShutdown, TokioEcdysisBuilder};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_stream::StreamExt;

async fn echo(stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut builder = TokioEcdysisBuilder::new(SignalKind::hangup())?;
    builder.stop_on_signal(SignalKind::terminate())?;
    if let Ok(pidfile) = std::env::var("PID_FILE") {
        builder.set_pid_file(pidfile);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The same socket options as tokio's TcpListener::bind: SO_REUSEADDR and a backlog of 1024.
    let mut connections = builder.build_listen_tcp(StopOnShutdown::Yes, addr, |socket, addr| {
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    })?;
    // One clone per open connection, to wait for them after an upgrade or stop.
    let open = std::sync::Arc::new(());
    let server = {
        let open = std::sync::Arc::clone(&open);
        tokio::spawn(async move {
            while let Some(Ok(stream)) = connections.next().await {
                let guard = std::sync::Arc::clone(&open);
                tokio::spawn(async move {
                    let _ = echo(stream).await;
                    drop(guard);
                });
            }
        })
    };
    let (_ecdysis, exit) = builder.ready()?;
    println!(
        "listening on tcp://{addr} (ecdysis, pid {})",
        std::process::id()
    );
    let _ = exit.await;
    server.await?;
    while std::sync::Arc::strong_count(&open) > 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}
