//! TLS session-ticket keys that outlive a process: a restart hands them to the new process over
//! the private handoff connection, so a client that resumed before the restart resumes after it
//! (RFC 8446 section 4.6.1 for TLS 1.3, RFC 5077 for TLS 1.2) instead of paying a full handshake.
//! nginx and HAProxy share ticket keys between reloads for the same reason, from a file; these
//! are never written anywhere.
//!
//! A ticket is `key name (16 bytes) || nonce (12) || ChaCha20-Poly1305(session state)`. The
//! current key encrypts; it is replaced every [`LIFETIME`], on its own schedule whatever the
//! restarts (a key's age travels with it), and the one before it still decrypts, so a ticket
//! stays usable for at least one lifetime.
//!
//! A resumed session skips client authentication (rustls checks only the cipher suite, the
//! extended master secret and the server name). So the keys are bound to the client-certificate
//! rules they were made under (the [`Context`]): a new process that requires other client
//! certificates, or none where the old one required some, does not take them, and every
//! session from before the restart does a full handshake under the new rules.

use ring::aead::{CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a key encrypts new tickets, and how long a client is told it may keep one.
pub(crate) const LIFETIME: Duration = Duration::from_secs(6 * 3600);
const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// One key as handed over: name, key, creation time (seconds since the epoch, big-endian).
const ENCODED_LEN: usize = NAME_LEN + KEY_LEN + 8;

/// The client-certificate rules the keys' sessions were authenticated under: SHA-256 of the
/// client CA certificates (DER), or of nothing when no client certificate is asked for.
pub(crate) type Context = [u8; 32];

/// The [`Context`] of a process that verifies clients against the CA certificates `ca`, or asks
/// for no client certificate (`None`).
pub(crate) fn context(ca: Option<&[CertificateDer<'_>]>) -> Context {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    match ca {
        None => digest.update(b"no client certificates"),
        Some(ca) => {
            digest.update(b"client certificates signed by:");
            for certificate in ca {
                digest.update(&(certificate.len() as u64).to_be_bytes());
                digest.update(certificate);
            }
        }
    }
    digest
        .finish()
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest is 32 bytes")
}

/// One ticket key.
struct Key {
    name: [u8; NAME_LEN],
    secret: [u8; KEY_LEN],
    /// Seconds since the epoch.
    created: u64,
    aead: LessSafeKey,
}

impl Key {
    fn new(name: [u8; NAME_LEN], secret: [u8; KEY_LEN], created: u64) -> Key {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &secret).expect("a 32-byte key");
        Key {
            name,
            secret,
            created,
            aead: LessSafeKey::new(unbound),
        }
    }

    fn generate(rng: &SystemRandom, now: u64) -> Option<Key> {
        let mut name = [0; NAME_LEN];
        let mut secret = [0; KEY_LEN];
        rng.fill(&mut name).ok()?;
        rng.fill(&mut secret).ok()?;
        Some(Key::new(name, secret, now))
    }
}

/// The keys: the current one, and the one it replaced.
struct Keys {
    current: Key,
    previous: Option<Key>,
}

/// This process's ticket keys, as rustls's ticketer.
pub(crate) struct TicketKeys {
    keys: Mutex<Keys>,
    rng: SystemRandom,
    context: Context,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKeys")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TicketKeys {
    /// A fresh key for sessions under `context`; `None` when the system has no randomness.
    pub(crate) fn generate(context: Context) -> Option<TicketKeys> {
        let rng = SystemRandom::new();
        let current = Key::generate(&rng, now())?;
        Some(TicketKeys {
            keys: Mutex::new(Keys {
                current,
                previous: None,
            }),
            rng,
            context,
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys, to hand to a new process: their context, then the current key first.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let keys = self.keys();
        let mut out = Vec::with_capacity(self.context.len() + 2 * ENCODED_LEN);
        out.extend_from_slice(&self.context);
        for key in std::iter::once(&keys.current).chain(&keys.previous) {
            out.extend_from_slice(&key.name);
            out.extend_from_slice(&key.secret);
            out.extend_from_slice(&key.created.to_be_bytes());
        }
        out
    }

    /// Takes the keys an old process handed over in place of this process's own; `Err` (and
    /// nothing changed) when they are not keys of this format, or were made under other
    /// client-certificate rules.
    pub(crate) fn adopt(&self, encoded: &[u8]) -> Result<(), String> {
        let Some((context, encoded)) = encoded.split_first_chunk::<32>() else {
            return Err(format!("{} bytes of ticket keys: too few", encoded.len()));
        };
        if *context != self.context {
            return Err(
                "the old process asked for other client certificates, so its sessions must not skip this one's".into(),
            );
        }
        if encoded.is_empty() || encoded.len() % ENCODED_LEN != 0 || encoded.len() > 2 * ENCODED_LEN
        {
            return Err(format!(
                "{} bytes of ticket keys: expected one or two keys of {ENCODED_LEN} bytes",
                encoded.len()
            ));
        }
        let mut decoded = encoded.chunks_exact(ENCODED_LEN).map(|chunk| {
            let (name, rest) = chunk.split_at(NAME_LEN);
            let (secret, created) = rest.split_at(KEY_LEN);
            Key::new(
                name.try_into().expect("16 bytes"),
                secret.try_into().expect("32 bytes"),
                u64::from_be_bytes(created.try_into().expect("8 bytes")),
            )
        });
        let current = decoded.next().expect("one key at least");
        *self.keys() = Keys {
            current,
            previous: decoded.next(),
        };
        Ok(())
    }

    /// Replaces the current key once it has encrypted for a [`LIFETIME`].
    fn rotate(&self, keys: &mut Keys) {
        let now = now();
        if now.saturating_sub(keys.current.created) < LIFETIME.as_secs() {
            return;
        }
        if let Some(fresh) = Key::generate(&self.rng, now) {
            let old = std::mem::replace(&mut keys.current, fresh);
            keys.previous = Some(old);
        }
    }
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut keys = self.keys();
        self.rotate(&mut keys);
        let mut nonce = [0; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&keys.current.name);
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        keys.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&keys.current.name),
                &mut sealed,
            )
            .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys();
        let key = std::iter::once(&keys.current)
            .chain(&keys.previous)
            .find(|key| key.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut opened = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, ring::aead::Aad::from(&key.name), &mut opened)
            .ok()?;
        let len = plain.len();
        opened.truncate(len);
        Some(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    const NONE: fn() -> Context = || context(None);

    #[test]
    fn keys_made_under_other_client_certificate_rules_are_not_taken() {
        let open = TicketKeys::generate(context(None)).unwrap();
        let ticket = open.encrypt(b"no client certificate").unwrap();
        let strict =
            TicketKeys::generate(context(Some(&[CertificateDer::from(b"CA 1".to_vec())]))).unwrap();
        let refused = strict.adopt(&open.encode()).unwrap_err();
        assert!(refused.contains("other client certificates"), "{refused}");
        assert_eq!(strict.decrypt(&ticket), None);
        let other_ca =
            TicketKeys::generate(context(Some(&[CertificateDer::from(b"CA 2".to_vec())]))).unwrap();
        assert!(other_ca.adopt(&strict.encode()).is_err());
        let same_ca =
            TicketKeys::generate(context(Some(&[CertificateDer::from(b"CA 1".to_vec())]))).unwrap();
        same_ca.adopt(&strict.encode()).unwrap();
    }

    #[test]
    fn a_ticket_opens_with_the_keys_handed_over_and_with_no_others() {
        let old = TicketKeys::generate(NONE()).unwrap();
        let ticket = old.encrypt(b"session state").unwrap();
        assert_eq!(old.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));

        let new = TicketKeys::generate(NONE()).unwrap();
        assert_eq!(new.decrypt(&ticket), None, "another process's keys");
        new.adopt(&old.encode()).unwrap();
        assert_eq!(new.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));

        // Tampered with: refused.
        let mut bad = ticket.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(new.decrypt(&bad), None);
        assert_eq!(new.decrypt(&ticket[..20]), None);

        // Garbage handed over changes nothing.
        assert!(new.adopt(b"not keys").is_err());
        assert!(new.decrypt(&ticket).is_some());
    }

    #[test]
    fn a_key_is_replaced_after_its_lifetime_and_still_opens_its_tickets() {
        let keys = TicketKeys::generate(NONE()).unwrap();
        let ticket = keys.encrypt(b"before").unwrap();
        // The key was made a lifetime ago (as a key handed over with its age would be).
        let mut encoded = keys.encode();
        let long_ago = now() - LIFETIME.as_secs();
        let created = 32 + NAME_LEN + KEY_LEN;
        encoded[created..created + 8].copy_from_slice(&long_ago.to_be_bytes());
        keys.adopt(&encoded).unwrap();
        let after = keys.encrypt(b"after").unwrap();
        assert_ne!(after[..NAME_LEN], ticket[..NAME_LEN], "a new key");
        assert_eq!(keys.decrypt(&ticket).as_deref(), Some(&b"before"[..]));
        assert_eq!(keys.decrypt(&after).as_deref(), Some(&b"after"[..]));
        assert_eq!(keys.encode().len(), 32 + 2 * ENCODED_LEN);
    }
}
