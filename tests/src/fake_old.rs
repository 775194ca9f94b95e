//! The old process's side of a handoff, played by a test: it hands a listening socket to a real
//! new process and then says exactly what the test wants, which a real old process would only
//! say in a race (`abort` after `ready`), or never does at all (leave its handoff directory).

use crate::TempDir;
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first bytes of the message that carries the socket (the protocol's, in `handoff.rs`).
const HELLO: &[u8] = b"uninterruptible handoff 1\n";

/// A handoff directory and socket, as an old process makes them.
#[derive(Debug)]
pub struct FakeOld {
    dir: PathBuf,
    socket: PathBuf,
    listener: UnixListener,
}

impl FakeOld {
    /// A handoff socket in a private directory under `tmp`.
    pub fn new(tmp: &TempDir) -> FakeOld {
        let dir = tmp.join("uninterruptible-test-handoff");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let socket = dir.join("handoff.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        FakeOld {
            dir,
            socket,
            listener,
        }
    }

    /// The value of `FILE_DESCRIPTOR_SERVER_PATH` for the new process.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Accepts the new process and sends it `listening`.
    pub fn hand_over(&self, listening: &impl AsRawFd) -> Handoff {
        let (conn, _) = self.listener.accept().unwrap();
        conn.set_read_timeout(Some(crate::DEADLINE)).unwrap();
        let fds = [listening.as_raw_fd()];
        let sent = sendmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &[IoSlice::new(HELLO)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .unwrap();
        assert_eq!(sent, HELLO.len());
        Handoff {
            reader: BufReader::new(conn.try_clone().unwrap()),
            conn,
        }
    }
}

/// The connection to the new process.
#[derive(Debug)]
pub struct Handoff {
    conn: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Handoff {
    /// The next line from the new process (with its `\n`), waiting up to the test deadline.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    pub fn send(&mut self, line: &str) {
        self.conn.write_all(line.as_bytes()).unwrap();
    }

    /// Shortens the wait of [`Handoff::read_line`].
    pub fn set_timeout(&self, limit: Duration) {
        self.conn.set_read_timeout(Some(limit)).unwrap();
    }
}
