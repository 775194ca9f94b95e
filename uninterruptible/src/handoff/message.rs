//! The handoff message: one `SCM_RIGHTS` message carrying the listening sockets, the control
//! socket and the status links, with the protocol's first line; packed by the old process,
//! unpacked and sorted by the new one.

use super::*;
use crate::control::ControlSocket;
use crate::error::Error;
use crate::link::Lines;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, getsockopt, recvmsg, sendmsg, sockopt,
};
use std::io::IoSliceMut;
use std::io::{self, IoSlice};
use std::os::fd::FromRawFd;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

/// The most descriptors a handoff carries (listeners, the control socket and status links):
/// the kernel's limit for one message (`SCM_MAX_FD`). The configuration keeps the listeners and
/// the control socket within it.
pub(crate) const MAX_FDS: usize = uninterruptible_grammar::MAX_HANDOFF_FDS;

pub(super) async fn send_sockets(conn: &UnixStream, listeners: &[OwnedFd]) -> io::Result<()> {
    let fds: Vec<_> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = conn
        .async_io(Interest::WRITABLE, || {
            sendmsg::<UnixAddr>(
                conn.as_raw_fd(),
                &[IoSlice::new(HELLO)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    if sent != HELLO.len() {
        return Err(io::Error::other("short write on the handoff socket"));
    }
    Ok(())
}

/// Receives the message [`send_sockets`] sent, blocking up to the socket's read timeout: the
/// descriptors it carried (close-on-exec), or why it is not a handoff.
pub(super) fn receive_sockets(conn: &StdUnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut hello = [0u8; HELLO.len()];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut hello)];
    let msg = recvmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel installed these descriptors in this process for this
            // message; nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other(format!(
            "more than {MAX_FDS} descriptors were sent on the handoff socket"
        )));
    }
    let bytes = msg.bytes;
    if &hello[..bytes] != HELLO {
        return Err(io::Error::other("unexpected message on the handoff socket"));
    }
    if fds.is_empty() {
        return Err(io::Error::other("no socket received on the handoff socket"));
    }
    Ok(fds)
}

/// What a handoff carried, told apart by the sockets themselves.
pub(crate) struct Received {
    pub(crate) listeners: Vec<OwnedFd>,
    pub(crate) control: Option<ControlSocket>,
    pub(crate) links: Vec<Lines>,
}

/// Sorts the sockets received from the old process: connected stream sockets are status links
/// to older processes, the listening UNIX socket at `control_path` is the control socket, and
/// the rest (listening stream sockets, datagram sockets) are listeners. A control socket this process does not serve is closed.
pub(crate) fn sort_received(
    fds: Vec<OwnedFd>,
    control_path: Option<&Path>,
) -> Result<Received, Error> {
    let mut received = Received {
        listeners: Vec::new(),
        control: None,
        links: Vec::new(),
    };
    for fd in fds {
        // Datagram sockets never listen: they are listeners of their own kind.
        let datagram = getsockopt(&fd, sockopt::SockType)
            .is_ok_and(|kind| kind == nix::sys::socket::SockType::Datagram);
        if !datagram && !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(true) {
            let link = std::os::unix::net::UnixStream::from(fd);
            match link
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(link))
            {
                Ok(link) => received.links.push(Lines::new(link)),
                Err(e) => tracing::debug!("cannot use a received status link: {e}"),
            }
            continue;
        }
        let path = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
        )
        .ok()
        .and_then(|a| a.path().map(Path::to_path_buf));
        if path.is_some() && path.as_deref() == control_path {
            let listener = std::os::unix::net::UnixListener::from(fd);
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(listener))
                .map_err(Error::io("cannot use the control socket received"))?;
            received.control = Some(ControlSocket {
                listener,
                path: path.unwrap_or_default(),
                bound: false,
            });
        } else {
            received.listeners.push(fd);
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listeners, the control socket and a status link, sent in one message and told apart by
    /// the sockets themselves on the other side.
    #[tokio::test]
    async fn a_message_carries_listeners_the_control_socket_and_links_told_apart() {
        let dir =
            std::env::temp_dir().join(format!("uninterruptible-message-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let control_path = dir.join("app.ctl");
        let _ = std::fs::remove_file(&control_path);
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let control = std::os::unix::net::UnixListener::bind(&control_path).unwrap();
        let (link, _other_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let fds: Vec<OwnedFd> = vec![tcp.into(), control.into(), link.into()];

        let (old, new) = UnixStream::pair().unwrap();
        send_sockets(&old, &fds).await.unwrap();
        let new = new.into_std().unwrap();
        new.set_nonblocking(false).unwrap();
        let received = receive_sockets(&new).unwrap();
        assert_eq!(received.len(), 3);

        let sorted = sort_received(received, Some(&control_path)).unwrap();
        assert_eq!(sorted.listeners.len(), 1);
        assert_eq!(sorted.links.len(), 1);
        assert_eq!(sorted.control.map(|c| c.path), Some(control_path.clone()));

        // Unwanted, the control socket is one more listener to match against the configuration.
        let (old, new) = UnixStream::pair().unwrap();
        send_sockets(&old, &fds).await.unwrap();
        let new = new.into_std().unwrap();
        new.set_nonblocking(false).unwrap();
        let sorted = sort_received(receive_sockets(&new).unwrap(), None).unwrap();
        assert_eq!((sorted.listeners.len(), sorted.links.len()), (2, 1));
        assert!(sorted.control.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_message_that_is_not_a_handoff_is_refused() {
        let (mut old, new) = std::os::unix::net::UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut old, b"hello, new process\n").unwrap();
        let e = receive_sockets(&new).unwrap_err();
        assert_eq!(e.to_string(), "unexpected message on the handoff socket");
    }
}
