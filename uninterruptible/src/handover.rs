//! Application state one serving process hands to the next at a restart, as shellflip passes
//! its `restart` data: a cache, warm data, known peers. A snapshot: the old process serves on
//! after `save` while the new one starts, so what must never go back (a counter, a sequence
//! number) belongs in a shared store. The old process's `save` makes it
//! when the new process asks (after the sockets, before the new process's `init`), it goes over
//! the private handoff connection (never a file), and the new process's `init` receives it.

use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The most bytes of state a process hands over (16 MiB): more is not sent, and the new
/// process starts without it (the old process's log says so).
pub const MAX_HANDOVER_BYTES: usize = 16 << 20;

/// State handed from one serving process to the next: bytes in a format of the program's own,
/// and that format's version.
///
/// `save` (the attribute's `save = "..."`, or [`Server::run_with_handover`]) makes it in the old
/// process from what its `init` built; the new process's `init` receives it as
/// `Option<Handover>`: `None` at a first start, after a restart from a process that handed
/// nothing (an older version of the program, a `save` past [`MAX_HANDOVER_BYTES`]), or under
/// systemd or Server::Starter, which start processes afresh.
///
/// **Versioning.** Give each format a number, and change it whenever the bytes change meaning.
/// A new version of the program that reads an older format converts it; one that cannot read
/// the format it is given says so and starts empty, rather than guessing:
///
/// ```
/// use uninterruptible::Handover;
///
/// const FORMAT: u32 = 2;
///
/// fn restore(previous: Option<Handover>) -> u64 {
///     match previous {
///         None => 0,
///         Some(h) if h.version() == FORMAT && h.bytes().len() == 8 => {
///             u64::from_be_bytes(h.bytes().try_into().unwrap())
///         }
///         Some(h) => {
///             eprintln!("cannot read handed-over state of format {}: starting empty", h.version());
///             0
///         }
///     }
/// }
///
/// assert_eq!(restore(Some(Handover::new(FORMAT, 42u64.to_be_bytes().to_vec()))), 42);
/// assert_eq!(restore(Some(Handover::new(1, b"old format".to_vec()))), 0);
/// ```
///
/// [`Server::run_with_handover`]: crate::Server::run_with_handover
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    version: u32,
    bytes: Vec<u8>,
}

impl Handover {
    /// State of format `version`.
    pub fn new(version: u32, bytes: Vec<u8>) -> Handover {
        Handover { version, bytes }
    }

    /// The format's version, as `save` gave it.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The bytes, as `save` gave them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// As sent: the version (4 bytes, big-endian), then the bytes.
    fn encode(&self) -> Vec<u8> {
        let mut encoded = Vec::with_capacity(4 + self.bytes.len());
        encoded.extend_from_slice(&self.version.to_be_bytes());
        encoded.extend_from_slice(&self.bytes);
        encoded
    }

    fn decode(encoded: &[u8]) -> Option<Handover> {
        let (version, bytes) = encoded.split_first_chunk::<4>()?;
        Some(Handover::new(u32::from_be_bytes(*version), bytes.to_vec()))
    }
}

type Save = Box<dyn Fn() -> Option<Handover> + Send + Sync>;

/// One process's part in handing state over: what it received, and how it saves its own.
pub(crate) struct Carry {
    received: Mutex<Option<Handover>>,
    save: OnceLock<Save>,
}

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Carry")
    }
}

impl Carry {
    pub(crate) fn new() -> Arc<Carry> {
        Arc::new(Carry {
            received: Mutex::new(None),
            save: OnceLock::new(),
        })
    }

    /// The old process's state as it came on the handoff connection.
    pub(crate) fn receive(&self, encoded: &[u8]) {
        match Handover::decode(encoded) {
            Some(handover) => {
                tracing::info!(
                    "received {} bytes of state (format {}) from the old process",
                    handover.bytes.len(),
                    handover.version
                );
                *self.received.lock().unwrap_or_else(|e| e.into_inner()) = Some(handover);
            }
            None => tracing::warn!(
                "the old process handed over {} bytes of state, too few to read: starting without it",
                encoded.len()
            ),
        }
    }

    /// What the old process handed over, for `init`, once.
    pub(crate) fn take_received(&self) -> Option<Handover> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Once `init` has built `state`: how to save it. Holds it weakly, so that it is still
    /// dropped once the last connection ends.
    pub(crate) fn saves<S: Send + Sync + 'static>(
        &self,
        state: &Arc<S>,
        save: impl Fn(&S) -> Handover + Send + Sync + 'static,
    ) {
        let state: Weak<S> = Arc::downgrade(state);
        let _ = self
            .save
            .set(Box::new(move || state.upgrade().map(|state| save(&state))));
    }

    /// This process's state for the new one, as sent; nothing when there is none to save, it
    /// is past [`MAX_HANDOVER_BYTES`], or `save` panicked (the restart goes on without it).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let Some(save) = self.save.get() else {
            return Vec::new();
        };
        let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(save));
        let handover = match saved {
            Ok(Some(handover)) => handover,
            Ok(None) => return Vec::new(),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic without a message");
                tracing::error!("save panicked ({why}): the new process starts without the state");
                return Vec::new();
            }
        };
        if handover.bytes.len() > MAX_HANDOVER_BYTES {
            tracing::error!(
                "save made {} bytes of state, more than {MAX_HANDOVER_BYTES} (MAX_HANDOVER_BYTES): not handed over, the new process starts without it",
                handover.bytes.len()
            );
            return Vec::new();
        }
        handover.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_saved_in_one_process_is_received_in_the_next_and_taken_once() {
        let old = Carry::new();
        assert_eq!(old.encode(), Vec::<u8>::new(), "nothing saved yet");
        let state = Arc::new(41u64);
        old.saves(&state, |n| Handover::new(3, (n + 1).to_be_bytes().to_vec()));
        let sent = old.encode();

        let new = Carry::new();
        new.receive(&sent);
        let received = new.take_received().unwrap();
        assert_eq!(
            (received.version(), received.bytes()),
            (3, &42u64.to_be_bytes()[..])
        );
        assert_eq!(new.take_received(), None);

        // The saver does not keep the state alive.
        drop(state);
        assert_eq!(old.encode(), Vec::<u8>::new());

        // Too short to hold a version: nothing received.
        new.receive(b"ab");
        assert_eq!(new.take_received(), None);
    }

    #[test]
    fn a_save_that_panics_hands_nothing_over() {
        let carry = Carry::new();
        let state = Arc::new(());
        carry.saves(&state, |()| panic!("cannot serialise"));
        assert!(carry.encode().is_empty());
    }

    #[test]
    fn state_past_the_bound_is_not_handed_over() {
        let carry = Carry::new();
        let state = Arc::new(());
        carry.saves(&state, |()| {
            Handover::new(1, vec![0; MAX_HANDOVER_BYTES + 1])
        });
        assert!(carry.encode().is_empty());
    }
}
