//! The echo server on a UNIX socket.
//!
//! ```sh
//! cargo run --example unix_echo
//! echo hi | nc -U /tmp/uninterruptible-echo.sock
//! ```

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[uninterruptible::server(bind = "unix:///tmp/uninterruptible-echo.sock")]
async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}
