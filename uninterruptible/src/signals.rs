//! The signals a server acts on: `TERM`, `INT`, `USR1` and `HUP`.
//!
//! From the first line of [`run`](crate::run) they are blocked in the calling thread, and so in
//! every thread it starts afterwards (the runtime's), and read from a `signalfd`:
//! - the kernel hands them over in order, and two that are pending at once lowest number first,
//!   so `kill -USR1 $P; kill -TERM $P` is always a restart and then a stop;
//! - one that arrives while the process is starting waits to be read, where its default action
//!   would have ended the process.
//!
//! Threads that existed before (a runtime the program built first, a logging or metrics thread)
//! do not block them, and the kernel delivers a signal to any thread that does not. So a handler
//! is installed as well: in such a thread it blocks the signals from then on and puts the signal
//! back in the process's queue, for the `signalfd`. No thread layout lets a restart signal end
//! the process. (Two signals sent within microseconds of each other, while such threads still
//! take them, may then be read in either order.)
//!
//! Each signal comes with its sender's pid (`si_pid`), so a serving process can tell the stop
//! its supervisor forwards from the same stop sent to the whole process group.
//!
//! A process inherits the signal mask of the thread that starts it (the standard library's
//! `Command` passes it on), and `exec` resets caught signals to their default. So the processes
//! this library starts (a restart's new copy, a supervisor's serving process) are started by
//! [`unblocked`], and begin with these signals unblocked, as the first copy did. A process a
//! handler starts from a runtime thread begins with them blocked: clear its mask before `exec`
//! (`CommandExt::pre_exec` with `pthread_sigmask`) if it must stop on `TERM`.
//!
//! A signal sent to one thread (`tgkill`, `pthread_kill`, `raise`) that blocks them stays with
//! that thread, where the `signalfd` cannot read it: send signals to the process (`kill`).

use crate::error::Error;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;
use tokio::io::unix::AsyncFd;

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `TERM` or `INT`: stop accepting and drain; a second one exits at once.
    Stop(&'static str),
    /// `USR1` or `HUP`: hot restart.
    Restart(&'static str),
}

/// A signal received, and who sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) request: Request,
    /// The sender's pid (`si_pid`); 0 for the kernel, or a sender outside our pid namespace.
    pub(crate) sender: u32,
}

const SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGHUP,
];

fn set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in SIGNALS {
        set.add(signal);
    }
    set
}

/// Catches a signal in a thread that does not block the signals (one started before [`block`]):
/// blocks them in that thread from now on, and puts the signal back in the process's queue with
/// its sender, where the `signalfd` reads it. A signal is never lost nor acted on here.
extern "C" fn on_signal(
    signo: nix::libc::c_int,
    info: *mut nix::libc::siginfo_t,
    context: *mut std::ffi::c_void,
) {
    use nix::libc;
    // SAFETY: only async-signal-safe work: sigaddset on the context the kernel passed to this
    // SA_SIGINFO handler (it restores the thread's mask from it on return), getpid and a raw
    // system call; errno is saved and restored.
    unsafe {
        let errno = *libc::__errno_location();
        if let Some(context) = context.cast::<libc::ucontext_t>().as_mut() {
            for signal in SIGNALS {
                libc::sigaddset(&mut context.uc_sigmask, signal as libc::c_int);
            }
        }
        if let Some(info) = info.as_ref() {
            // Sent again as `sigqueue(3)` sends (SI_QUEUE): the kernel lets a process queue to
            // itself so, keeping the original sender's pid and uid, which sit where they did.
            let mut again = *info;
            again.si_code = libc::SI_QUEUE;
            libc::syscall(
                libc::SYS_rt_sigqueueinfo,
                libc::getpid(),
                signo,
                &again as *const libc::siginfo_t,
            );
        }
        *libc::__errno_location() = errno;
    }
}

/// Blocks the signals in the calling thread, and so in every thread it starts afterwards (the
/// runtime's), and installs the handler that blocks them in threads started earlier: from now
/// on they wait to be read, and none ends the process.
pub(crate) fn block() -> Result<(), Error> {
    let fail = |e: nix::Error| Error::io("cannot set up signal handling")(e.into());
    set().thread_block().map_err(fail)?;
    let action = SigAction::new(
        SigHandler::SigAction(on_signal),
        // Each of them blocked while the handler runs, so one thread handles one at a time;
        // SA_RESTART, so a foreign thread's blocking call is not interrupted.
        SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        set(),
    );
    for signal in SIGNALS {
        // SAFETY: the handler only does async-signal-safe work (see `on_signal`).
        unsafe { sigaction(signal, &action) }.map_err(fail)?;
    }
    Ok(())
}

/// Runs `spawn` with the signals unblocked in the calling thread, so that the process it starts
/// begins with them unblocked. One that arrives meanwhile is caught by the handler, which puts
/// it back in the process's queue: none is lost.
pub(crate) fn unblocked<T>(spawn: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{SigmaskHow, pthread_sigmask};
    let mut before = SigSet::empty();
    let changed = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set()), Some(&mut before));
    let spawned = spawn();
    if changed.is_ok() {
        // Cannot fail with a valid `how` and set.
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
    }
    spawned
}

#[derive(Debug)]
pub(crate) struct Signals {
    fd: AsyncFd<SignalFd>,
}

impl Signals {
    /// Opens the `signalfd`. Needs the runtime; [`block`] must have run first.
    pub(crate) fn register() -> Result<Signals, Error> {
        let fail = Error::io("cannot read signals");
        let fd = SignalFd::with_flags(&set(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| fail(e.into()))?;
        // SAFETY: the `SignalFd` owns its descriptor, which stays open and the same until the
        // `AsyncFd` (its only owner) is dropped.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| Error::io("cannot read signals")(e.into()))?;
        Ok(Signals { fd })
    }

    /// The next signal received, and its sender. Cancel-safe: a signal is taken off the queue
    /// only when it is returned.
    pub(crate) async fn recv(&mut self) -> Received {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                // Only when the runtime is shutting down.
                return std::future::pending().await;
            };
            let read = guard.try_io(|fd| match fd.get_ref().read_signal() {
                Ok(Some(info)) => Ok((info.ssi_signo, info.ssi_pid)),
                Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(e.into()),
            });
            match read {
                Ok(Ok((number, sender))) => {
                    if let Some(request) = Request::of(number) {
                        return Received { request, sender };
                    }
                }
                Ok(Err(e)) => tracing::error!("cannot read a signal: {e}"),
                Err(_would_block) => {}
            }
        }
    }
}

/// The stops (`TERM`, `INT`) a process has received, by where they came from.
///
/// A supervisor forwards the stop it receives to its serving processes. When a stop is sent to
/// every process of the service (`kill -TERM -- -PGID`, Ctrl-C in a terminal, systemd's default
/// `KillMode=control-group`), a serving process gets it twice, from the sender and from its
/// supervisor: that is one stop, not a second one that cuts its connections. A second stop from
/// the same side is the operator's "exit now".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stops {
    /// The supervisor's pid, for a supervised serving process.
    supervisor: Option<u32>,
    from_supervisor: bool,
    from_elsewhere: bool,
}

impl Stops {
    pub(crate) fn new(supervisor: Option<u32>) -> Stops {
        Stops {
            supervisor,
            ..Stops::default()
        }
    }

    /// Records a stop from `sender`; `true` when that side had already asked for one, so the
    /// process exits at once.
    pub(crate) fn record(&mut self, sender: u32) -> bool {
        let side = if self.supervisor == Some(sender) {
            &mut self.from_supervisor
        } else {
            &mut self.from_elsewhere
        };
        std::mem::replace(side, true)
    }

    /// A stop has been received.
    pub(crate) fn received(&self) -> bool {
        self.from_supervisor || self.from_elsewhere
    }
}

impl Request {
    fn of(number: u32) -> Option<Request> {
        let signal = Signal::try_from(i32::try_from(number).ok()?).ok()?;
        Some(match signal {
            Signal::SIGTERM => Request::Stop("TERM"),
            Signal::SIGINT => Request::Stop("INT"),
            Signal::SIGUSR1 => Request::Restart("USR1"),
            Signal::SIGHUP => Request::Restart("HUP"),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_from_the_supervisor_and_one_from_elsewhere_are_one_stop() {
        let mut stops = Stops::new(Some(40));
        assert!(!stops.received());
        assert!(!stops.record(7), "the group's TERM is the first stop");
        assert!(stops.received());
        assert!(
            !stops.record(40),
            "the supervisor's forwarded TERM is the same stop"
        );
        assert!(stops.record(7), "a second TERM to the group exits now");
        let mut stops = Stops::new(Some(40));
        assert!(!stops.record(40));
        assert!(!stops.record(1));
        assert!(stops.record(40), "the supervisor's second TERM exits now");
        let mut alone = Stops::new(None);
        assert!(!alone.record(40));
        assert!(alone.record(41), "unsupervised, any second stop exits now");
    }

    /// The test harness's threads were started before `block`, as a program's own runtime
    /// would be: a signal the kernel gives one of them is read, with its sender, instead of
    /// ending the process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signal_caught_in_a_thread_started_earlier_is_read_with_its_sender() {
        let earlier =
            std::thread::spawn(|| std::thread::park_timeout(std::time::Duration::from_secs(5)));
        block().unwrap();
        let mut signals = Signals::register().unwrap();
        let pid = nix::unistd::getpid();
        nix::sys::signal::kill(pid, Signal::SIGUSR1).unwrap();
        let first = signals.recv().await;
        nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
        let second = signals.recv().await;
        let own = std::process::id();
        assert_eq!(
            first,
            Received {
                request: Request::Restart("USR1"),
                sender: own
            }
        );
        assert_eq!(
            second,
            Received {
                request: Request::Stop("TERM"),
                sender: own
            }
        );
        earlier.thread().unpark();
        earlier.join().unwrap();
    }
}
