//! TLS: the certificate, key and client CA read from PEM files at startup (and so afresh by every
//! new process: a restart rotates certificates), with rustls and its *ring* provider; and the
//! budget of unfinished handshakes.

use crate::config::{TlsFiles, TlsVersion};
use crate::error::{Error, Source};
use crate::stream::PeerAddr;
use crate::tickets::{self, TicketKeys};
use nix::sys::resource::{Resource, getrlimit};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

/// What the accept path needs to run a handshake.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) handshake_timeout: Duration,
    /// The unfinished handshakes, shared by every listener of the process.
    pub(crate) handshakes: Arc<Handshakes>,
    /// The session-ticket keys, handed to the next process at a restart.
    pub(crate) tickets: Arc<TicketKeys>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("handshakes", &self.handshakes.budget)
            .finish_non_exhaustive()
    }
}

/// The TLS connections of a process that hold a descriptor but no `MAX_CONNECTIONS` permit yet:
/// handshakes, bounded in time by `TLS_HANDSHAKE_TIMEOUT`, and connections whose handshake is done
/// waiting for a permit. Their number is bounded by a budget of their own.
///
/// A connection takes no `MAX_CONNECTIONS` permit until its handshake is done, so clients that
/// stall in theirs (silent, or trickling their hello) keep no one out. A connection accepted into
/// a full budget drops an unfinished handshake to make room (the oldest of the peer network with
/// the most: see [`victim`]), and the accept loop accepts again only once that connection's
/// descriptor is closed: a real client's handshake takes a round trip or two, so it
/// finishes long before a flood of new connections could make it the oldest, while a stalled one
/// only grows older. A connection waiting for its permit is never dropped; while the budget holds
/// nothing else, the accept loop waits, as it does at `MAX_CONNECTIONS`.
#[derive(Debug)]
pub(crate) struct Handshakes {
    budget: usize,
    in_flight: Mutex<InFlight>,
    /// Told each time a connection leaves the budget (its descriptor closed or served).
    left: Notify,
}

#[derive(Debug, Default)]
struct InFlight {
    /// Ids are given in order, so the first entry is the oldest.
    next: u64,
    tasks: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    task: AbortHandle,
    peer: PeerAddr,
    phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshaking,
    /// The handshake is done; the connection waits for a `MAX_CONNECTIONS` permit.
    Waiting,
    /// Dropped to make room: its task is aborted, and its descriptor closes with the task.
    Dropping,
}

/// A connection's place in the budget, held by its task until it takes its permit or ends.
#[derive(Debug)]
pub(crate) struct HandshakeSlot {
    handshakes: Arc<Handshakes>,
    id: Option<u64>,
}

impl Handshakes {
    pub(crate) fn new(budget: usize) -> Handshakes {
        Handshakes {
            budget: budget.max(1),
            in_flight: Mutex::default(),
            left: Notify::new(),
        }
    }

    /// Returns once the connections in the budget are within it: while there are more (the one
    /// just accepted made them so), drops the oldest unfinished handshake, and waits until a
    /// connection has left (a dropped one's task has ended, so its descriptor is closed).
    /// Cancel-safe, and holds no connection: the accept loop calls it after spawning one.
    pub(crate) async fn settle(&self) {
        // Within the budget, as it nearly always is, nothing waits.
        while !self.make_room() {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            // Checked again once listening, so that a connection leaving in between is heard.
            if self.make_room() {
                return;
            }
            left.await;
        }
    }

    /// Whether the budget holds no more than it may; if it holds more, drops the oldest
    /// unfinished handshake unless one is being dropped already.
    fn make_room(&self) -> bool {
        let mut in_flight = self.lock();
        if in_flight.tasks.len() <= self.budget {
            return true;
        }
        if in_flight.tasks.values().any(|e| e.phase == Phase::Dropping) {
            return false;
        }
        let victim = victim(&in_flight.tasks);
        if let Some(entry) = victim.and_then(|id| in_flight.tasks.get_mut(&id)) {
            entry.phase = Phase::Dropping;
            entry.task.abort();
            tracing::debug!(
                peer = %entry.peer,
                "TLS handshake dropped unfinished: {} connections were in their handshake or waiting for a permit, the most this process holds at once; the oldest handshake of the peer network with the most made room for a new connection",
                self.budget
            );
        }
        false
    }

    /// Spawns the task of a new connection from `peer`, made by `task` from the [`HandshakeSlot`]
    /// it holds until it takes its permit; then call [`settle`](Self::settle).
    pub(crate) fn spawn<F>(self: &Arc<Self>, peer: PeerAddr, task: impl FnOnce(HandshakeSlot) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut in_flight = self.lock();
        let id = in_flight.next;
        in_flight.next += 1;
        let slot = HandshakeSlot {
            handshakes: Arc::clone(self),
            id: Some(id),
        };
        // Spawned under the lock, so the task cannot end, and leave, before it is entered.
        let handle = tokio::spawn(task(slot));
        let entry = Entry {
            task: handle.abort_handle(),
            peer,
            phase: Phase::Handshaking,
        };
        in_flight.tasks.insert(id, entry);
    }

    fn lock(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handshake to drop: the oldest unfinished one of the peer network with the most unfinished
/// handshakes, so that a flood from a few networks drops its own connections, not those of the
/// clients it outpaces. A network is an IPv4 /24 or an IPv6 /64, what one site or one host
/// usually holds (an IPv6 host is given a whole /64); UNIX peers count as one.
fn victim(tasks: &BTreeMap<u64, Entry>) -> Option<u64> {
    // Per peer network: its oldest unfinished handshake, and how many it has.
    let mut peers: HashMap<Option<IpAddr>, (u64, usize)> = HashMap::new();
    for (id, entry) in tasks.iter().filter(|(_, e)| e.phase == Phase::Handshaking) {
        let network = match &entry.peer {
            PeerAddr::Tcp(addr) | PeerAddr::Udp(addr) => Some(network(addr.ip())),
            PeerAddr::Unix(_) => None,
        };
        peers.entry(network).or_insert((*id, 0)).1 += 1;
    }
    // Among peers with as many, the one whose oldest handshake is oldest.
    peers
        .into_values()
        .max_by_key(|&(oldest, count)| (count, std::cmp::Reverse(oldest)))
        .map(|(oldest, _)| oldest)
}

/// The /24 of an IPv4 address (an IPv4-mapped one too), the /64 of an IPv6 one.
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

impl HandshakeSlot {
    /// The handshake is done: the connection stays in the budget, never to be dropped, until
    /// its slot is dropped (once it holds its permit). False when it was dropped to make room
    /// meanwhile: its task is being aborted and must not go on to serve the connection.
    pub(crate) fn finish(&self) -> bool {
        let Some(id) = self.id else { return false };
        let mut in_flight = self.handshakes.lock();
        match in_flight.tasks.get_mut(&id) {
            Some(entry) if entry.phase == Phase::Handshaking => {
                entry.phase = Phase::Waiting;
                true
            }
            _ => false,
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.handshakes.lock().tasks.remove(&id);
            self.handshakes.left.notify_waiters();
        }
    }
}

/// How many connections may be in their handshake or waiting for a permit at once: half the
/// descriptors the process may open (`RLIMIT_NOFILE`), because a descriptor is what each holds.
/// A flood of silent clients then never leaves the process without descriptors (every accept
/// would fail with `EMFILE`, shutting out every client), and the other half stays for the
/// connections being served and the process's own files. It does not depend on
/// `MAX_CONNECTIONS`: a budget as small as a small limit would drop real clients that merely
/// arrive together.
fn handshake_budget() -> usize {
    const USUAL_SOFT_LIMIT: u64 = 1024;
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(USUAL_SOFT_LIMIT, |(soft, _)| soft);
    usize::try_from(soft / 2).unwrap_or(usize::MAX)
}

fn bad(variable: Source, path: &Path, reason: impl Into<String>) -> Error {
    Error::BadFile {
        name: variable,
        path: path.to_owned(),
        reason: reason.into(),
        source: None,
    }
}

fn read(variable: Source, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::BadFile {
        name: variable,
        path: path.to_owned(),
        reason: "cannot read it".into(),
        source: Some(e),
    })
}

fn certificates(variable: Source, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(variable, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(variable, path, format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(bad(
            variable,
            path,
            "no certificate in it (expected PEM blocks of BEGIN CERTIFICATE)",
        ));
    }
    Ok(certificates)
}

/// Reads and checks every TLS file, and builds the acceptor. It offers `alpn`, the application
/// protocols of ALPN (RFC 7301), most preferred first: `h2` and `http/1.1` for an HTTP service,
/// none for a line protocol (handlers get a plain byte stream). A client that offers none of
/// them is refused in the handshake (rustls sends `no_application_protocol`); one that uses no
/// ALPN gets none.
pub(crate) fn load(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Tls, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let origins = files.origins;
    let chain = certificates(origins.certificate, &files.certificate)?;
    warn_if_out_of_date(&chain[0], origins.certificate, &files.certificate);
    let key_pem = read(origins.key, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        bad(
            origins.key,
            &files.key,
            format!("no private key in it (expected a PKCS#8, PKCS#1 or SEC1 PEM key): {e}"),
        )
    })?;

    let versions: &[&rustls::SupportedProtocolVersion] = match files.version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| Error::InvalidConfig(format!("TLS setup failed: {e}")))?;
    let (builder, clients) = match &files.client_ca {
        None => (builder.with_no_client_auth(), tickets::context(None)),
        Some(ca) => {
            let (verifier, clients) = client_verifier(ca, origins.client_ca, &provider)?;
            (builder.with_client_cert_verifier(verifier), clients)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let reason = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "this key does not belong to the certificate in {}={:?} ({e})",
                origins.certificate, files.certificate
            ),
            e => format!("unusable key: {e}"),
        };
        bad(origins.key, &files.key, reason)
    })?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    // Stateless tickets with keys of our own, for TLS 1.3 and 1.2 alike: a restart hands them
    // over, so sessions resume across it (rustls's default keeps sessions in this process only).
    let tickets = TicketKeys::generate(clients).map(Arc::new).ok_or_else(|| {
        Error::InvalidConfig("TLS setup failed: no randomness for session-ticket keys".into())
    })?;
    config.ticketer = Arc::clone(&tickets) as Arc<dyn rustls::server::ProducesTickets>;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        handshake_timeout: files.handshake_timeout,
        handshakes: Arc::new(Handshakes::new(handshake_budget())),
        tickets,
    })
}

/// The verifier of client certificates signed by the CA certificates in `ca`, and the
/// session-ticket context of those rules.
fn client_verifier(
    ca: &Path,
    origin: Source,
    provider: &Arc<CryptoProvider>,
) -> Result<
    (
        Arc<dyn rustls::server::danger::ClientCertVerifier>,
        tickets::Context,
    ),
    Error,
> {
    let certificates = certificates(origin, ca)?;
    let context = tickets::context(Some(&certificates));
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| bad(origin, ca, format!("not a usable CA certificate: {e}")))?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            .build()
            .map_err(|e| bad(origin, ca, format!("cannot verify clients with it: {e}")))?;
    Ok((verifier, context))
}

/// Serving a certificate that every verifying client refuses is allowed (a test setup may want
/// it), but it is the likely cause of failed handshakes, so say so with the dates.
fn warn_if_out_of_date(certificate: &CertificateDer<'_>, origin: Source, path: &Path) {
    let Some((not_before, not_after)) = validity(certificate) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let dates = format!("valid from {} until {}", not_before.1, not_after.1);
    if now > not_after.0 {
        tracing::warn!(
            "the certificate in {origin}={path:?} has expired ({dates}): clients that verify it will refuse to connect"
        );
    } else if now < not_before.0 {
        tracing::warn!(
            "the certificate in {origin}={path:?} is not valid yet ({dates}): clients that verify it will refuse to connect"
        );
    }
}

/// A time in a certificate: seconds since the epoch, and as written for a log.
type Time = (i64, String);

/// The `notBefore` and `notAfter` of an X.509 certificate (RFC 5280, 4.1), read from its DER.
fn validity(der: &[u8]) -> Option<(Time, Time)> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let (SEQUENCE, certificate, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, mut fields, _) = tlv(certificate)? else {
        return None;
    };
    if fields.first() == Some(&VERSION) {
        fields = tlv(fields)?.2;
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        fields = tlv(fields)?.2;
    }
    let (SEQUENCE, validity, _) = tlv(fields)? else {
        return None;
    };
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Some((not_before, time(tag, not_after)?))
}

/// One DER tag-length-value: the tag, the value, and what follows.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes.iter().fold(0, |len, &b| len << 8 | usize::from(b))
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((tag, value, rest))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18).
fn time(tag: u8, value: &[u8]) -> Option<Time> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let shown = format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC");
    Some((seconds, shown))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::sync::oneshot;

    fn peer(port: u16) -> PeerAddr {
        PeerAddr::Tcp(([127, 0, 0, 1], port).into())
    }

    /// A connection whose handshake never ends; the receiver fails once its task is dropped.
    fn stalled(handshakes: &Arc<Handshakes>, port: u16) -> oneshot::Receiver<()> {
        let (alive, dropped) = oneshot::channel::<()>();
        handshakes.spawn(peer(port), move |slot| async move {
            let _held = (slot, alive);
            std::future::pending::<()>().await;
        });
        dropped
    }

    fn still_running(task: &mut oneshot::Receiver<()>) -> bool {
        task.try_recv() == Err(oneshot::error::TryRecvError::Empty)
    }

    #[tokio::test]
    async fn a_connection_past_the_budget_drops_the_oldest_unfinished_handshake() {
        let handshakes = Arc::new(Handshakes::new(2));
        let first = stalled(&handshakes, 1);
        let mut second = stalled(&handshakes, 2);
        handshakes.settle().await;
        let mut third = stalled(&handshakes, 3);
        // One too many: the oldest is dropped, and the accept loop goes on only once its task
        // has ended (its descriptor closed).
        handshakes.settle().await;
        assert!(first.await.is_err(), "the oldest was dropped");
        tokio::task::yield_now().await;
        assert!(still_running(&mut second) && still_running(&mut third));
        assert_eq!(handshakes.lock().tasks.len(), 2);
    }

    /// A connection whose handshake is done and which waits for its permit until `permit` is
    /// sent; `served` stays open while it runs.
    async fn waiting(
        handshakes: &Arc<Handshakes>,
        port: u16,
    ) -> (oneshot::Sender<()>, oneshot::Receiver<()>) {
        let (finished_tx, finished) = oneshot::channel();
        let (permit_tx, permit) = oneshot::channel::<()>();
        let (alive, served) = oneshot::channel::<()>();
        handshakes.spawn(peer(port), move |slot| async move {
            let _ = finished_tx.send(slot.finish());
            let _ = permit.await;
            drop(slot);
            let _serving = alive;
            std::future::pending::<()>().await;
        });
        assert!(finished.await.unwrap(), "it was still in the budget");
        (permit_tx, served)
    }

    #[tokio::test]
    async fn a_finished_handshake_waiting_for_its_permit_is_never_dropped() {
        let handshakes = Arc::new(Handshakes::new(1));
        let (permit, mut served) = waiting(&handshakes, 1).await;
        // A newer unfinished handshake is dropped rather than the finished one.
        let newer = stalled(&handshakes, 2);
        handshakes.settle().await;
        assert!(newer.await.is_err(), "the unfinished handshake was dropped");
        assert!(still_running(&mut served));
        // With nothing unfinished to drop, the accept loop waits for a permit to be taken.
        let (_second_permit, mut second) = waiting(&handshakes, 3).await;
        let settled = tokio::time::timeout(Duration::from_millis(50), handshakes.settle());
        assert!(settled.await.is_err(), "settled past the budget");
        permit.send(()).unwrap();
        handshakes.settle().await;
        tokio::task::yield_now().await;
        assert!(still_running(&mut served) && still_running(&mut second));
        assert_eq!(handshakes.lock().tasks.len(), 1);
    }

    #[tokio::test]
    async fn the_peer_network_with_the_most_unfinished_handshakes_loses_its_oldest() {
        let handshakes = Arc::new(Handshakes::new(3));
        let from = |ip: &str| PeerAddr::Tcp(SocketAddr::new(ip.parse().unwrap(), 1000));
        let stall = |peer: PeerAddr| {
            let (alive, dropped) = oneshot::channel::<()>();
            handshakes.spawn(peer, move |slot| async move {
                let _held = (slot, alive);
                std::future::pending::<()>().await;
            });
            dropped
        };
        // One connection from each of three addresses of one /24 is a flood of three.
        let mut real = stall(from("192.0.2.1"));
        let flood_first = stall(from("198.51.100.7"));
        let mut flood_second = stall(from("::ffff:198.51.100.8"));
        let mut flood_third = stall(from("198.51.100.9"));
        handshakes.settle().await;
        assert!(flood_first.await.is_err(), "the flood's oldest was dropped");
        tokio::task::yield_now().await;
        assert!(
            still_running(&mut real),
            "the older real client was dropped"
        );
        assert!(still_running(&mut flood_second) && still_running(&mut flood_third));
        // And IPv6 peers count per /64.
        assert_eq!(
            network("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn a_handshake_dropped_to_make_room_cannot_finish() {
        let handshakes = Arc::new(Handshakes::new(1));
        let (give, take) = std::sync::mpsc::channel();
        handshakes.spawn(peer(1), move |slot| {
            give.send(slot).unwrap();
            std::future::ready(())
        });
        let slot = take.recv().unwrap();
        let _newer = stalled(&handshakes, 2);
        assert!(!handshakes.make_room(), "one too many");
        assert!(!slot.finish());
        drop(slot);
        assert!(
            handshakes.make_room(),
            "its place was freed as its slot went"
        );
    }

    /// The application protocol a handshake with an acceptor offering `offered` settles on, for
    /// a client that offers `asked`.
    async fn negotiated(offered: &[&[u8]], asked: &[&[u8]]) -> Option<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!(
            "uninterruptible-alpn-{}-{}",
            std::process::id(),
            offered.len() * 10 + asked.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (key, certificate) = (dir.join("key.pem"), dir.join("cert.pem"));
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        std::fs::write(&certificate, made.cert.pem()).unwrap();
        let env = Source::Env("TLS_KEY");
        let files = TlsFiles {
            key,
            certificate,
            version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(10),
            client_ca: None,
            origins: crate::config::TlsOrigins {
                key: env,
                certificate: env,
                client_ca: env,
            },
        };
        let tls = load(&files, offered).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = asked.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (server_io, client_io) = tokio::io::duplex(64 << 10);
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            tls.acceptor.accept(server_io),
            connector.connect(name, client_io)
        );
        let (server, client) = (server.unwrap(), client.unwrap());
        let protocol = server.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(protocol.as_deref(), client.get_ref().1.alpn_protocol());
        protocol
    }

    #[tokio::test]
    async fn offers_the_application_protocols_it_is_given() {
        let http: &[&[u8]] = &[b"h2", b"http/1.1"];
        assert_eq!(negotiated(http, http).await.as_deref(), Some(&b"h2"[..]));
        assert_eq!(
            negotiated(http, &[b"http/1.1"]).await.as_deref(),
            Some(&b"http/1.1"[..])
        );
        // A client without ALPN gets none (HTTP/1.1, or h2 with prior knowledge).
        assert_eq!(negotiated(http, &[]).await, None);
        // A stream handler's acceptor negotiates nothing, whatever the client offers.
        assert_eq!(negotiated(&[], &[b"h2"]).await, None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
        assert_eq!(
            time(0x17, b"491231235959Z").unwrap().1,
            "2049-12-31 23:59:59 UTC"
        );
        assert_eq!(time(0x17, b"500101000000Z").unwrap().0, -631_152_000);
        assert_eq!(time(0x18, b"20261122000000Z").unwrap().0, 20_779 * 86_400);
        assert_eq!(time(0x18, b"2026112200000Z"), None);
        assert_eq!(time(0x17, b"26112200000aZ"), None);
    }
}
