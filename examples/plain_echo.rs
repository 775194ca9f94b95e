//! The floor for the benchmarks: the echo handler, byte for byte, in a hand-written tokio server
//! with no restarts, no signals and no configuration, written as a well-made tokio server is: the
//! accept loop runs on a worker task of its own, as each connection does. Listens on
//! 127.0.0.1:$PORT (0 by default). With `ACCEPT_IN_MAIN=1` the accept loop runs in
//! `#[tokio::main]`'s own task instead (the block_on thread), a common and slower way, kept as an
//! extra row of the benchmarks.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

async fn echo(stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}

async fn accept(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(echo(stream));
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!(
        "listening on tcp://{} (plain tokio)",
        listener.local_addr()?
    );
    if std::env::var_os("ACCEPT_IN_MAIN").is_some() {
        return accept(listener).await;
    }
    tokio::spawn(accept(listener)).await?
}
