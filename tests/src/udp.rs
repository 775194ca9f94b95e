//! UDP request/reply load: clients that send one datagram at a time and check each reply, and
//! a client that sends bursts; every datagram not answered within [`REPLY_WAIT`] is counted
//! lost. On loopback the kernel drops nothing but what overflows a receive queue, which
//! [`kernel_drops`] counts apart.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;

/// The first UDP address a server's log says it listens on (`listening on udp://a:p ...`),
/// once it does.
pub fn listening_on(server: &crate::Server) -> SocketAddr {
    let line = server.log.wait_for("listening on udp://");
    line.split("listening on udp://")
        .nth(1)
        .and_then(|rest| rest.split([' ', ',']).next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// How long a client waits for a reply before it counts the datagram lost: far beyond any
/// switch, so that only a datagram nobody answered is counted.
pub const REPLY_WAIT: Duration = Duration::from_secs(10);

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Counts {
    pub answered: u64,
    pub lost: Vec<String>,
    pub wrong: Vec<String>,
    pub bursts: u64,
}

impl Counts {
    pub fn merge(&mut self, other: Counts) {
        self.answered += other.answered;
        self.lost.extend(other.lost);
        self.wrong.extend(other.wrong);
        self.bursts += other.bursts;
    }
}

/// Sends `client-n seq`, one at a time, and checks each reply, until told to stop.
pub async fn client(n: usize, server: SocketAddr, stop: Arc<AtomicBool>) -> Counts {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    let mut counts = Counts::default();
    let mut buf = [0; 128];
    for seq in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sent = format!("client-{n} {seq}");
        socket.send(sent.as_bytes()).await.unwrap();
        match tokio::time::timeout(REPLY_WAIT, socket.recv(&mut buf)).await {
            Ok(Ok(len)) if &buf[..len] == sent.as_bytes() => counts.answered += 1,
            Ok(Ok(len)) => counts.wrong.push(format!(
                "{sent:?} got {:?}",
                String::from_utf8_lossy(&buf[..len])
            )),
            Ok(Err(e)) => counts.lost.push(format!("{sent:?}: {e}")),
            Err(_) => counts.lost.push(format!("{sent:?}: no reply")),
        }
    }
    counts
}

/// Sends `burst` datagrams at once, then waits for every reply, until told to stop.
pub async fn burster(server: SocketAddr, burst: usize, stop: Arc<AtomicBool>) -> Counts {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    let mut counts = Counts::default();
    let mut buf = [0; 128];
    for round in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut owed: HashSet<String> = (0..burst).map(|i| format!("burst {round} {i}")).collect();
        for sent in &owed {
            socket.send(sent.as_bytes()).await.unwrap();
        }
        while !owed.is_empty() {
            match tokio::time::timeout(REPLY_WAIT, socket.recv(&mut buf)).await {
                Ok(Ok(len)) => {
                    let reply = String::from_utf8_lossy(&buf[..len]).into_owned();
                    if owed.remove(&reply) {
                        counts.answered += 1;
                    } else {
                        counts.wrong.push(format!("unexpected {reply:?}"));
                    }
                }
                _ => {
                    counts
                        .lost
                        .extend(owed.drain().map(|sent| format!("{sent:?}: no reply")));
                }
            }
        }
        counts.bursts += 1;
    }
    counts
}

/// Datagrams the kernel dropped for a full receive queue, machine-wide (`RcvbufErrors` of
/// `/proc/net/snmp`): told apart from any we lost.
pub fn kernel_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// `clients` one-at-a-time clients and, with `burst` > 0, a burst client, against `server`
/// until `stop` is set.
pub async fn run(
    server: SocketAddr,
    clients: usize,
    burst: usize,
    stop: Arc<AtomicBool>,
) -> Counts {
    let mut tasks: Vec<_> = (0..clients)
        .map(|n| tokio::spawn(client(n, server, Arc::clone(&stop))))
        .collect();
    if burst > 0 {
        tasks.push(tokio::spawn(burster(server, burst, stop)));
    }
    let mut counts = Counts::default();
    for task in tasks {
        counts.merge(task.await.expect("a UDP client panicked"));
    }
    counts
}
