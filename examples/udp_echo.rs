//! A UDP echo server: each datagram is answered with itself.
//!
//! ```sh
//! cargo run --example udp_echo
//! echo hi | socat -t 1 - UDP:127.0.0.1:6797    # prints "hi"
//! kill -USR1 <pid>   # restart: the new process reads the same socket; no datagram is lost
//! ```
//!
//! `ECHO_DELAY_MS=50` answers each datagram 50 ms late, to watch a retiring process finish the
//! replies it owes. `BIND=unixgram:///tmp/echo.sock` serves a UNIX datagram socket instead (a
//! client must bind a path of its own to be answered:
//! `socat - UNIX-SENDTO:/tmp/echo.sock,bind=/tmp/client.sock`);
//! `BIND=udp://127.0.0.1:6797,tcp://127.0.0.1:6797` is refused: this server has no handler of
//! connections (see `uninterruptible::Server::datagrams` to serve both).

use std::sync::LazyLock;
use std::time::Duration;

/// `ECHO_DELAY_MS`, read once.
static DELAY: LazyLock<Duration> = LazyLock::new(|| {
    let ms = std::env::var("ECHO_DELAY_MS").map_or(0, |ms| {
        ms.parse().unwrap_or_else(|_| {
            eprintln!("udp_echo: ECHO_DELAY_MS={ms:?} is not a whole number of milliseconds");
            std::process::exit(2)
        })
    });
    Duration::from_millis(ms)
});

#[uninterruptible::server(bind = "udp://127.0.0.1:6797")]
async fn echo(datagram: uninterruptible::Datagram) -> std::io::Result<()> {
    if !DELAY.is_zero() {
        tokio::time::sleep(*DELAY).await;
    }
    datagram.reply(datagram.data()).await
}
