//! systemd's notification protocol (`sd_notify`), when `NOTIFY_SOCKET` is set: the service
//! manager learns when the service is ready, which process is the service after a restart, and
//! when it stops. Works with `Type=notify` and `Type=notify-reload` and `NotifyAccess=main`: the
//! messages about a restart come from the process that is the main one when they are sent.
//!
//! | when | datagram |
//! |---|---|
//! | the first process serves | `READY=1`, `STATUS=` |
//! | a restart starts (old process) | `RELOADING=1`, `MONOTONIC_USEC=`, `STATUS=` |
//! | the new process is ready (old process, after the pidfile names it) | `MAINPID=<new>`, `READY=1`, `STATUS=` |
//! | the restart failed (old process) | `READY=1`, `STATUS=restart failed: ...` |
//! | a real stop (not a retiring process) | `STOPPING=1`, `STATUS=` |
//!
//! A process started by a restart never says `READY=1` itself: the old one does it for it, with
//! its pid.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for `Type=notify` services.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go; sends nothing when the service manager did not ask for them.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<(SocketAddr, String)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
    pub(crate) fn from_env() -> Notifier {
        let Some(value) = std::env::var_os(NOTIFY_SOCKET) else {
            return Notifier { target: None };
        };
        let shown = value.to_string_lossy().into_owned();
        let address = match shown.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(&value),
        };
        match address {
            Ok(address) => Notifier {
                target: Some((address, shown)),
            },
            Err(e) => {
                tracing::warn!(
                    "{NOTIFY_SOCKET}={shown:?} is not a socket address ({e}): systemd will not be notified"
                );
                Notifier { target: None }
            }
        }
    }

    /// The first process is serving.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", field(status)));
    }

    /// A restart starts: a new process is being started.
    pub(crate) fn reloading(&self, status: &str) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={}",
            monotonic_usec(),
            field(status)
        ));
    }

    /// The new process `pid` is the service now.
    pub(crate) fn handed_over(&self, pid: u32, status: &str) {
        self.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS={}", field(status)));
    }

    /// The restart failed: this process is still the service.
    pub(crate) fn restart_failed(&self, reason: &str) {
        self.send(&format!(
            "READY=1\nSTATUS=restart failed: {}",
            field(reason)
        ));
    }

    /// What the service is doing, with no change of state.
    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", field(status)));
    }

    /// The service is stopping.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", field(status)));
    }

    fn send(&self, message: &str) {
        let Some((address, shown)) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound()
            .and_then(|socket| socket.send_to_addr(message.as_bytes(), address));
        if let Err(e) = sent {
            tracing::warn!("cannot notify the service manager at {NOTIFY_SOCKET}={shown:?}: {e}");
        }
    }
}

/// `value` as the value of one field: each field is a line of the datagram, so a line break in
/// it would end the field, and the next line would be read as a field of its own (`READY=1`).
fn field(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(char::is_control) {
        value.replace(char::is_control, " ").into()
    } else {
        value.into()
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` wants it beside.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_on_several_lines_is_sent_as_one_field() {
        let dir = std::env::temp_dir().join(format!("ui-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some((SocketAddr::from_pathname(&path).unwrap(), String::new())),
        };
        notifier.status("the initialiser failed: down\nREADY=1\r\nMAINPID=1");
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "STATUS=the initialiser failed: down READY=1  MAINPID=1"
        );
    }
}
