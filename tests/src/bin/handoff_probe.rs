//! Connects to a handoff socket as whoever runs it and reports what it got: `fd` when a
//! descriptor arrived, `closed` when the server hung up without one, `error: ...` otherwise.
//! The restart tests run it as another user to check that the handoff is refused.

use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() {
    let path = std::env::args().nth(1).expect("usage: handoff_probe PATH");
    println!("{}", probe(&path).unwrap_or_else(|e| format!("error: {e}")));
}

fn probe(path: &str) -> std::io::Result<String> {
    let conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let got_fd = msg
        .cmsgs()?
        .any(|c| matches!(c, ControlMessageOwned::ScmRights(_)));
    Ok(if got_fd {
        "fd".into()
    } else if msg.bytes == 0 {
        "closed".into()
    } else {
        "data without a descriptor".into()
    })
}
