//! Long-lived connections across restarts: handlers that listen to `draining()` finish their
//! exchange and close, so no client sees a reset or an unfinished reply, and no generation
//! outlives its last connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use uninterruptible_tests::load::{restart_loop, while_running};
use uninterruptible_tests::{
    Address, SIGUSR1, TempDir, start_with_pidfile, wait_for_retired_generations,
};

const SESSION: &str = env!("CARGO_BIN_EXE_session");

#[derive(Debug, Default)]
struct Tally {
    answered: u64,
    byes: u64,
    failures: Vec<String>,
}

/// A client that keeps one session open, sending a line and reading its echo, until `stop`. On
/// `bye` it reconnects and sends the unanswered line again.
async fn client(addr: std::net::SocketAddr, id: usize, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0u64;
    'session: while !stop.load(Ordering::Relaxed) {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(e) => {
                tally.failures.push(format!("connect: {e}"));
                continue;
            }
        };
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        while !stop.load(Ordering::Relaxed) {
            let line = format!("client {id} line {n}");
            if let Err(e) = writer.write_all(format!("{line}\n").as_bytes()).await {
                tally.failures.push(format!("write: {e}"));
                continue 'session;
            }
            match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
                Ok(Ok(Some(reply))) if reply == line => {
                    tally.answered += 1;
                    n += 1;
                }
                Ok(Ok(Some(reply))) if reply == "bye" => {
                    tally.byes += 1;
                    continue 'session;
                }
                Ok(Ok(Some(reply))) => tally.failures.push(format!("wrong reply {reply:?}")),
                Ok(Ok(None)) => tally.failures.push("closed without bye".into()),
                Ok(Err(e)) => tally.failures.push(format!("read: {e}")),
                Err(_) => tally.failures.push("no reply within 10 s".into()),
            }
            if !tally.failures.is_empty() {
                continue 'session;
            }
        }
    }
    tally
}

#[test]
fn line_sessions_say_goodbye_across_restarts_and_no_generation_lingers() {
    let dir = TempDir::new("sessions");
    let (server, pidfile) = start_with_pidfile(SESSION, &dir, "tcp://127.0.0.1:0", &[]);
    let Address::Tcp(addr) = server.address() else {
        unreachable!()
    };
    let (restarts, tallies) = while_running(
        |stop| async move {
            let clients: Vec<_> = (0..16)
                .map(|id| tokio::spawn(client(addr, id, Arc::clone(&stop))))
                .collect();
            let mut tallies = Vec::new();
            for client in clients {
                tallies.push(client.await.unwrap());
            }
            tallies
        },
        || {
            restart_loop(
                &pidfile,
                SIGUSR1,
                Duration::from_millis(100),
                Some(20),
                None,
            )
        },
    );
    let mut total = Tally::default();
    for tally in tallies {
        total.answered += tally.answered;
        total.byes += tally.byes;
        total.failures.extend(tally.failures);
    }
    println!(
        "16 sessions, {} restarts: {} lines answered, {} byes, {} failures",
        restarts.handoffs.len(),
        total.answered,
        total.byes,
        total.failures.len()
    );
    assert!(
        total.failures.is_empty(),
        "{:?}",
        &total.failures[..total.failures.len().min(5)]
    );
    assert!(total.answered > 0);
    assert!(
        total.byes >= 16,
        "the sessions were told to leave: {}",
        total.byes
    );

    // Every generation but the last exits, once its sessions have said goodbye.
    assert_eq!(wait_for_retired_generations(&server, &pidfile), 21);
}
