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

/// A handoff connection read line by line.
#[derive(Debug)]
pub(crate) struct Lines {
    stream: UnixStream,
    buffer: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(stream: UnixStream) -> Lines {
        Lines {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The next line, with its `\n`; `None` at the end of the connection. Cancel-safe: what was
    /// read stays in the buffer.
    pub(crate) async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
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
        while let Ok(n @ 1..) = recv_now(&self.stream, &mut chunk) {
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        self.take_line()
    }

    /// Drops whatever was received and not asked for; true when the other end has closed.
    /// Read through tokio, so that its record of readiness is cleared.
    pub(crate) fn discard_unasked(&mut self) -> bool {
        self.buffer.clear();
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
        let end = self.buffer.iter().position(|&b| b == b'\n')? + 1;
        let line: Vec<u8> = self.buffer.drain(..end).collect();
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub(crate) async fn send(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(line.as_bytes()).await
    }
}

pub(crate) fn recv_now(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    recv(stream.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}
