//! The floor for the benchmarks: the echo handler, byte for byte, in a hand-written tokio server
//! with no restarts, no signals and no configuration. Listens on 127.0.0.1:$PORT (0 by default).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

async fn echo(stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!(
        "listening on tcp://{} (plain tokio)",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(echo(stream));
    }
}
