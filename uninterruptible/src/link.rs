//! A line-framed UNIX socket between two processes of the service (the handoff connection, which
//! lives on as a status link), and the peer-credential check every such socket and the control
//! socket make.

use nix::sys::socket::{MsgFlags, getsockopt, recv, sockopt};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// Whether the process at the other end of `conn` runs as our uid (or as root, with
/// `root_too`); a refusal is logged, naming `what` was refused.
pub(crate) fn peer_is_ours(conn: &UnixStream, what: &str, root_too: bool) -> bool {
    match check_peer(conn, root_too) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("refused {what}: {why}");
            false
        }
    }
}

/// Whether the process at the other end of `conn` runs as our uid (or as root, with
/// `root_too`); if not, why.
pub(crate) fn check_peer(conn: &impl AsFd, root_too: bool) -> Result<(), String> {
    let own_uid = nix::unistd::geteuid().as_raw();
    match getsockopt(conn, sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == own_uid || (root_too && cred.uid() == 0) => Ok(()),
        Ok(cred) => Err(format!(
            "it is pid {} with uid {} (ours is {own_uid})",
            cred.pid(),
            cred.uid()
        )),
        Err(e) => Err(format!("cannot read its credentials: {e}")),
    }
}

/// The longest line a link carries: its lines are short (`ready`, a process's status, why a new
/// process cannot start); a longer one is refused rather than buffered without end.
const MAX_LINE: usize = 64 * 1024;

/// A handoff connection read line by line.
#[derive(Debug)]
pub(crate) struct Lines {
    stream: UnixStream,
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no `\n`: each byte is looked at once.
    scanned: usize,
}

impl Lines {
    pub(crate) fn new(stream: UnixStream) -> Lines {
        Lines {
            stream,
            buffer: Vec::new(),
            scanned: 0,
        }
    }

    /// The next line, with its `\n`; `None` at the end of the connection; an error for a line
    /// longer than [`MAX_LINE`]. Cancel-safe: what was read stays in the buffer.
    pub(crate) async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
            }
            if self.buffer.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line longer than {MAX_LINE} bytes"),
                ));
            }
            self.stream.readable().await?;
            let mut chunk = [0u8; 64];
            match self
                .stream
                .try_io(Interest::READABLE, || recv_now(&self.stream, &mut chunk))
            {
                Ok(0) => return Ok(None),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A whole line already received by the kernel, without waiting. Read from the socket
    /// directly: tokio's record of readiness may not have caught up with it yet.
    pub(crate) fn buffered_line(&mut self) -> Option<String> {
        let mut chunk = [0u8; 64];
        while self.buffer.len() <= MAX_LINE {
            let Ok(n @ 1..) = recv_now(&self.stream, &mut chunk) else {
                break;
            };
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        self.take_line()
    }

    /// Drops whatever was received and not asked for; true when the other end has closed.
    /// Read through tokio, so that its record of readiness is cleared.
    pub(crate) fn discard_unasked(&mut self) -> bool {
        self.buffer.clear();
        self.scanned = 0;
        let mut chunk = [0u8; 64];
        loop {
            match self
                .stream
                .try_io(Interest::READABLE, || recv_now(&self.stream, &mut chunk))
            {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    fn take_line(&mut self) -> Option<String> {
        let Some(at) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') else {
            self.scanned = self.buffer.len();
            return None;
        };
        let end = self.scanned + at + 1;
        self.scanned = 0;
        let line: Vec<u8> = self.buffer.drain(..end).collect();
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub(crate) async fn send(&mut self, line: &str) -> io::Result<()> {
        self.send_bytes(line.as_bytes()).await
    }

    /// Lines and the bytes of sections they announce.
    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }
}

pub(crate) fn recv_now(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    recv(stream.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn lines_come_one_at_a_time_and_a_megabyte_without_an_end_is_refused_at_once() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut lines = Lines::new(a);
        b.write_all(b"ready\nfailed the database").await.unwrap();
        assert_eq!(lines.read_line().await.unwrap().as_deref(), Some("ready\n"));
        b.write_all(b" is down\nok\n").await.unwrap();
        let line = lines.read_line().await.unwrap();
        assert_eq!(line.as_deref(), Some("failed the database is down\n"));
        assert_eq!(lines.buffered_line().as_deref(), Some("ok\n"));

        // A line without end, written as fast as it is read: refused past the limit, in much
        // less time than a process waits for a `ready`.
        let writer = tokio::spawn(async move {
            let megabyte = vec![b'x'; 1 << 20];
            let _ = b.write_all(&megabyte).await;
            b
        });
        let read = tokio::time::timeout(Duration::from_secs(5), lines.read_line()).await;
        let error = read.expect("still reading").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error.to_string().contains("longer than 65536 bytes"),
            "{error}"
        );
        drop(lines);
        drop(writer.await.unwrap());
    }
}
