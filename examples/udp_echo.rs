//! A UDP echo server: each datagram is answered with itself.
//!
//! ```sh
//! cargo run --example udp_echo
//! echo hi | socat -t 1 - UDP:127.0.0.1:6797    # prints "hi"
//! kill -USR1 <pid>   # restart: the new process reads the same socket; no datagram is lost
//! ```
//!
//! `BIND=unixgram:///tmp/echo.sock` serves a UNIX datagram socket instead (a client must bind a
//! path of its own to be answered: `socat - UNIX-SENDTO:/tmp/echo.sock,bind=/tmp/client.sock`);
//! `BIND=udp://127.0.0.1:6797,tcp://127.0.0.1:6797` is refused: this server has no handler of
//! connections (see `uninterruptible::Server::datagrams` to serve both).

#[uninterruptible::server(bind = "udp://127.0.0.1:6797")]
async fn echo(datagram: uninterruptible::Datagram) -> std::io::Result<()> {
    datagram.reply(datagram.data()).await
}
