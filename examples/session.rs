//! A long-lived line protocol: each line is echoed back, for as long as the client likes. When
//! the process retires (after a restart, or on `TERM`), the server says `bye` between two
//! exchanges and closes, so a retiring generation does not wait for `DRAIN_TIMEOUT`. A client
//! that gets `bye` in answer to a line reconnects and sends it again: the new process serves it.
//!
//! ```sh
//! cargo run --example session
//! socat - TCP:127.0.0.1:6791      # type lines; kill -USR1 <pid> and see `bye`
//! ```

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[uninterruptible::server(bind = "tcp://127.0.0.1:6791")]
async fn session(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let draining = stream.draining();
    let (reader, mut writer) = tokio::io::split(stream);
    let mut lines = BufReader::new(reader).lines();
    loop {
        tokio::select! {
            // `next_line` is cancel-safe: a line half read stays for the next call.
            line = lines.next_line() => match line? {
                Some(line) => writer.write_all(format!("{line}\n").as_bytes()).await?,
                None => return Ok(()),
            },
            () = draining.clone() => break,
        }
    }
    writer.write_all(b"bye\n").await?;
    writer.shutdown().await?;
    // A line the client sent meanwhile is read and dropped (it will send it again): closing
    // with unread data would reset the connection before the client reads `bye`.
    let mut reader = lines.into_inner();
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while reader.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
    Ok(())
}
