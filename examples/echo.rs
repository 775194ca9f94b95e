//! The gem's echo server: read one line, write it back, close.
//!
//! ```sh
//! cargo run --example echo
//! echo hi | nc 127.0.0.1 6789
//! kill -USR1 <pid>   # restart without dropping a connection
//! ```

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}
