//! A stand-in for a new process, speaking the handoff protocol by hand so the restart tests can
//! make it misbehave in exact ways.
//!
//! - `handoff_probe PATH`: connects to a handoff socket as whoever runs it and prints what it got:
//!   `fd` when a descriptor arrived, `closed` when the server hung up without one, `error: ...`
//!   otherwise. Run as another user to check that the handoff is refused.
//! - `handoff_probe --ready-and-exit`: as a `START_COMMAND`: takes the socket, writes its pid to
//!   `PID_FILE`, says `ready`, and exits at once.
//! - `handoff_probe --hang-up-and-exit CODE`: as a `START_COMMAND`: connects, waits until the
//!   socket has been sent, hangs up without reading it (as a new process that fails at start-up
//!   after connecting does), then exits with `CODE` a moment later.
//! - `handoff_probe --serve-without-ready`: as a `START_COMMAND`: takes the socket and serves
//!   the line echo on it, but never says `ready`; on `abort` it answers `aborting`, stops
//!   accepting, finishes the connections it accepted, and exits 0.

use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
use std::io::{BufRead, BufReader, IoSliceMut, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

fn main() {
    let arg = std::env::args()
        .nth(1)
        .expect("usage: handoff_probe PATH | --MODE");
    let handoff = || std::env::var("FILE_DESCRIPTOR_SERVER_PATH").expect("started by a restart");
    match arg.as_str() {
        "--ready-and-exit" => {
            let (mut conn, _listener) = take(&handoff()).expect("take the socket");
            // As a server does: the pidfile names this process before it says ready.
            if let Some(pidfile) = std::env::var_os("PID_FILE") {
                std::fs::write(pidfile, format!("{}\n", std::process::id())).unwrap();
            }
            conn.write_all(b"ready\n").unwrap();
        }
        "--serve-without-ready" => serve_without_ready(&handoff()),
        "--hang-up-and-exit" => {
            let code = std::env::args()
                .nth(2)
                .and_then(|c| c.parse().ok())
                .expect("usage: handoff_probe --hang-up-and-exit CODE");
            let conn = UnixStream::connect(handoff()).expect("connect");
            // Peeked at, not read: the message with the socket stays in the queue.
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            nix::sys::socket::recv(conn.as_raw_fd(), &mut [0u8; 1], MsgFlags::MSG_PEEK)
                .expect("the socket sent");
            drop(conn);
            // The time a failing server takes to report why.
            std::thread::sleep(Duration::from_millis(200));
            std::process::exit(code);
        }
        path => println!("{}", probe(path).unwrap_or_else(|e| format!("error: {e}"))),
    }
}

fn probe(path: &str) -> std::io::Result<String> {
    let conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (bytes, fd) = receive(&conn)?;
    Ok(if fd.is_some() {
        "fd".into()
    } else if bytes == 0 {
        "closed".into()
    } else {
        "data without a descriptor".into()
    })
}

/// Connects and receives the listening socket.
fn take(path: &str) -> std::io::Result<(UnixStream, OwnedFd)> {
    let conn = UnixStream::connect(path)?;
    let (_, fd) = receive(&conn)?;
    let fd = fd.ok_or_else(|| std::io::Error::other("no descriptor"))?;
    Ok((conn, fd))
}

fn receive(conn: &UnixStream) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel installed these descriptors in this process for this message.
            fd = fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Ok((msg.bytes, fd))
}

fn serve_without_ready(path: &str) {
    let (conn, fd) = take(path).expect("take the socket");
    let listener = TcpListener::from(fd);
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let acceptor = {
        let (stop, open) = (Arc::clone(&stop), Arc::clone(&open));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        open.fetch_add(1, Ordering::SeqCst);
                        let open = Arc::clone(&open);
                        std::thread::spawn(move || {
                            stream.set_nonblocking(false).unwrap();
                            let mut line = String::new();
                            let mut reader = BufReader::new(&stream);
                            if reader.read_line(&mut line).is_ok() {
                                let _ = (&stream).write_all(line.as_bytes());
                            }
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            // The listener is closed here, so the old process alone accepts from now on.
        })
    };
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    assert_eq!(line, "abort\n", "the old process abandons the restart");
    stop.store(true, Ordering::SeqCst);
    acceptor.join().unwrap();
    (&conn).write_all(b"aborting\n").unwrap();
    while open.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
}
