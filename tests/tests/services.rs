//! HTTP and gRPC services served by the library (the `http` feature), with real clients: curl
//! over TLS (h2 chosen by ALPN, and HTTP/1.1), h2load (h2 and HTTP/1.1) and a tonic client across
//! 100 back-to-back restarts, and clients that never finish a request against a retiring
//! process.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uninterruptible_tests::certs::Ca;
use uninterruptible_tests::http::h2load_counts;
use uninterruptible_tests::load::{restart_loop, while_running};
use uninterruptible_tests::{
    Address, DEADLINE, SIGUSR1, Server, TempDir, alive, log_seconds, open_accepted, read_pidfile,
    send, start_with_pidfile, wait_for,
};

const HTTP: &str = env!("CARGO_BIN_EXE_http");
const AXUM: &str = env!("CARGO_BIN_EXE_axum");
const GRPC: &str = env!("CARGO_BIN_EXE_grpc");

/// The client side of `examples/proto/echo.proto`, as tonic generates it.
mod proto {
    #![allow(unreachable_pub, missing_debug_implementations)]
    include!("../../examples/proto/echo.rs");
}

fn tcp(server: &Server) -> SocketAddr {
    match server.address() {
        Address::Tcp(addr) => addr,
        Address::Unix(_) => unreachable!(),
    }
}

/// `curl -sS <args> <url>`, its output and `%{http_version}` after a space.
fn curl(args: &[&str], url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-w", " %{http_version}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (Debian package curl) is installed by .ci/run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn over_tls_curl_gets_h2_by_alpn_and_http1_when_it_asks() {
    let dir = TempDir::new("services-tls");
    let ca = Ca::new("services test CA");
    let pair = ca.issue(dir.path(), "server", &["localhost"]);
    let ca_file = ca.write(&dir.join("ca.pem"));
    let server = Server::start(
        HTTP,
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("TLS_CERTIFICATE", pair.certificate.to_str().unwrap()),
            ("TLS_KEY", pair.key.to_str().unwrap()),
        ],
    );
    let port = tcp(&server).port();
    let url = format!("https://localhost:{port}/");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let trust = ["--cacert", ca_file.to_str().unwrap(), "--resolve", &resolve];
    let pid = server.pid();
    let h2 = curl(&[&trust[..], &["--http2"]].concat(), &url);
    assert_eq!(h2, format!("hello from {pid}\n 2"));
    let h1 = curl(&[&trust[..], &["--http1.1"]].concat(), &url);
    assert_eq!(h1, format!("hello from {pid}\n 1.1"));
    // The body streams back over h2 as well.
    let echo = curl(
        &[&trust[..], &["--http2", "--data-binary", "over tls"]].concat(),
        &format!("https://localhost:{port}/echo"),
    );
    assert_eq!(echo, "over tls 2");
}

/// One h2load run and what it printed; a run that does not end within a minute fails the test.
fn h2load(args: &[&str], url: &str) -> String {
    let child = Command::new("h2load")
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("h2load (Debian package nghttp2-client) is installed by .ci/run");
    let pid = child.id();
    let (sender, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match outcome.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => String::from_utf8_lossy(&out.unwrap().stdout).into_owned(),
        Err(_) => {
            send(pid, uninterruptible_tests::SIGKILL);
            panic!("h2load {args:?} did not end within 60 s");
        }
    }
}

/// Runs h2load against `binary` again and again while 100 restarts happen back to back, and
/// asserts that every request it made succeeded.
fn h2load_across_100_restarts(binary: &str, h1: bool) {
    let dir = TempDir::new("services-h2load");
    let (server, pidfile) = start_with_pidfile(binary, &dir, "tcp://127.0.0.1:0", &[]);
    let url = format!("http://{}/", tcp(&server));
    let done = Arc::new(AtomicBool::new(false));
    let load = std::thread::spawn({
        let done = Arc::clone(&done);
        move || {
            let mut runs = Vec::new();
            while !done.load(Ordering::Relaxed) || runs.is_empty() {
                // h2: timed runs, in which h2load opens a new connection after a GOAWAY (with
                // `-n` it gives up on the requests left to that client). HTTP/1.1: counted runs,
                // as a timed one can outlive its duration when a restart closes connections
                // while its clients start.
                let mut args = vec!["-c", "16"];
                args.extend(if h1 { ["-n", "3000"] } else { ["-D", "2"] });
                // h2: one stream at a time per connection (`-m 1`). With more, h2load queues
                // requests in nghttp2 ahead of sending them, and those still queued when a
                // GOAWAY arrives fail in the client without reaching the server; RFC 9113
                // section 8.7 lets a client retry them, and h2load does not (the tonic test
                // below shows the retry). Measured beside a CPU hog: `-m 4` counted 1 to 9 such
                // requests per 2 s run, `-m 1` none in 300 restarts.
                args.push(if h1 { "--h1" } else { "-m1" });
                runs.push(h2load(&args, &url));
            }
            runs
        }
    });
    let restarts = std::panic::catch_unwind(|| {
        restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(100), None)
    })
    .unwrap_or_else(|_| panic!("the log:\n{}", server.log.text()));
    done.store(true, Ordering::Relaxed);
    let runs = load.join().unwrap();
    let (mut total, mut succeeded) = (0, 0);
    for run in &runs {
        let counts = h2load_counts(run);
        let (t, ok) = (counts.total, counts.succeeded);
        let (failed, errored, timeout) = (counts.failed, counts.errored, counts.timeout);
        assert_eq!((failed, errored, timeout), (0, 0, 0), "{run}");
        assert_eq!(ok, t, "{run}");
        total += t;
        succeeded += ok;
    }
    println!(
        "h2load{} across {} restarts: {succeeded} of {total} requests succeeded in {} runs",
        if h1 { " --h1" } else { "" },
        restarts.handoffs.len(),
        runs.len()
    );
    assert_eq!(restarts.handoffs.len(), 100);
    assert!(total > 0, "h2load made no request");
}

#[test]
fn h2load_h2_across_100_restarts_fails_no_request() {
    h2load_across_100_restarts(HTTP, false);
}

#[test]
fn h2load_http1_across_100_restarts_fails_no_request() {
    h2load_across_100_restarts(AXUM, true);
}

/// Whether a call failed only because its connection was going away before the call was sent
/// (a GOAWAY with NO_ERROR refused it): RFC 9113, section 8.7, says such a request was not
/// processed and may be retried. tonic leaves that retry to its user, as hyper-util does.
fn refused_by_goaway(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(error) = source {
        if let Some(e) = error.downcast_ref::<h2::Error>() {
            return e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR);
        }
        if let Some(e) = error.downcast_ref::<hyper::Error>()
            && (e.is_canceled() || e.is_closed())
        {
            return true;
        }
        source = error.source();
    }
    false
}

#[derive(Debug, Default)]
struct Calls {
    ok: u64,
    retried: u64,
    failed: Vec<String>,
    pids: std::collections::BTreeSet<u32>,
}

/// One unary call and one streaming call of 5 replies, each retried once if a GOAWAY refused it.
async fn call_both(
    client: &mut proto::echo_client::EchoClient<tonic::transport::Channel>,
    n: u64,
    calls: &mut Calls,
) {
    for attempt in 0..2 {
        let message = format!("call {n}");
        let unary = client
            .say(proto::EchoRequest {
                message: message.clone(),
            })
            .await;
        let outcome = match unary {
            Ok(reply) if reply.get_ref().message == message => {
                calls.pids.insert(reply.get_ref().pid);
                Ok(())
            }
            Ok(reply) => Err(format!("wrong reply {:?}", reply.get_ref())),
            Err(status) if attempt == 0 && refused_by_goaway(&status) => {
                calls.retried += 1;
                continue;
            }
            Err(status) => Err(format!("{status:?}")),
        };
        match outcome {
            Ok(()) => calls.ok += 1,
            Err(e) => calls.failed.push(e),
        }
        break;
    }
    for attempt in 0..2 {
        let request = proto::RepeatRequest {
            message: format!("stream {n}"),
            count: 5,
        };
        let replies = match client.repeat(request).await {
            Ok(stream) => {
                use tokio_stream::StreamExt;
                stream.into_inner().collect::<Result<Vec<_>, _>>().await
            }
            Err(status) => Err(status),
        };
        match replies {
            Ok(replies) if replies.len() == 5 => calls.ok += 1,
            Ok(replies) => calls.failed.push(format!("{} replies", replies.len())),
            Err(status) if attempt == 0 && refused_by_goaway(&status) => {
                calls.retried += 1;
                continue;
            }
            Err(status) => calls.failed.push(format!("{status:?}")),
        }
        break;
    }
}

#[test]
fn a_tonic_client_across_100_restarts_fails_no_call() {
    let dir = TempDir::new("services-grpc");
    let (server, pidfile) = start_with_pidfile(GRPC, &dir, "tcp://127.0.0.1:0", &[]);
    let url = format!("http://{}", tcp(&server));
    let (restarts, calls) = while_running(
        move |stop| async move {
            // Eight clients, each on a channel of its own (one h2 connection, reconnected after
            // each GOAWAY).
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (url, stop) = (url.clone(), Arc::clone(&stop));
                    tokio::spawn(async move {
                        let channel = tonic::transport::Channel::from_shared(url)
                            .unwrap()
                            .connect_lazy();
                        let mut client = proto::echo_client::EchoClient::new(channel);
                        let mut calls = Calls::default();
                        let mut n = 0;
                        while !stop.load(Ordering::Relaxed) {
                            call_both(&mut client, n, &mut calls).await;
                            n += 1;
                        }
                        calls
                    })
                })
                .collect();
            let mut all = Calls::default();
            for task in tasks {
                let calls = task.await.unwrap();
                all.ok += calls.ok;
                all.retried += calls.retried;
                all.failed.extend(calls.failed);
                all.pids.extend(calls.pids);
            }
            all
        },
        || {
            let restarts = std::panic::catch_unwind(|| {
                restart_loop(&pidfile, SIGUSR1, Duration::ZERO, Some(100), None)
            })
            .unwrap_or_else(|_| panic!("the log:\n{}", server.log.text()));
            std::thread::sleep(Duration::from_millis(300));
            restarts
        },
    );
    println!(
        "tonic, 8 clients, {} restarts: {} calls ok, {} retried after a GOAWAY refused them, {} failed, answered by {} processes",
        restarts.handoffs.len(),
        calls.ok,
        calls.retried,
        calls.failed.len(),
        calls.pids.len()
    );
    assert!(
        calls.failed.is_empty(),
        "{:?}",
        &calls.failed[..calls.failed.len().min(5)]
    );
    assert!(calls.ok > 200, "{calls:?}");
    let current = read_pidfile(&pidfile).unwrap();
    assert!(calls.pids.contains(&current), "the last generation answers");
}

/// Seconds from the old process's "stops accepting" to its "exiting" line, in its own log.
fn retirement(server: &Server, pid: u32) -> f64 {
    let tag = format!("pid={pid} ");
    let stop = server
        .log
        .wait_for(&format!("{tag}generation=1: new process"));
    let exit = server.log.wait_until("the old process's exit line", || {
        server
            .log
            .lines()
            .into_iter()
            .find(|l| l.contains(&tag) && l.contains("exiting with"))
    });
    (log_seconds(&exit) - log_seconds(&stop)).rem_euclid(86_400.0)
}

/// A client that sends `partial` and then nothing holds a retiring process no longer than the
/// header-read time (2 s here) plus 1 s, without `DRAIN_TIMEOUT`.
fn a_stalled_client_holds_a_retiring_process_no_longer_than_the_header_read_time(partial: &str) {
    a_stalled_client_holds_a_retiring_process_for_at_most_3_s(partial, |stalled| {
        stalled.write_all(partial.as_bytes()).unwrap();
        // The request is under way in the old process.
        std::thread::sleep(Duration::from_millis(100));
    });
}

/// A client that `stall`s holds a retiring process no longer than the header-read time (2 s
/// here) plus 1 s, without `DRAIN_TIMEOUT`.
fn a_stalled_client_holds_a_retiring_process_for_at_most_3_s(
    name: &str,
    stall: impl FnOnce(&mut TcpStream),
) {
    let dir = TempDir::new("services-stalled");
    let (server, pidfile) = start_with_pidfile(
        HTTP,
        &dir,
        "tcp://127.0.0.1:0",
        &[("HEADER_READ_TIMEOUT", "2")],
    );
    let addr = tcp(&server);
    let old = server.pid();
    let mut stalled = TcpStream::connect(addr).unwrap();
    stall(&mut stalled);
    let asked = Instant::now();
    send(old, SIGUSR1);
    wait_for("the new process", DEADLINE, || {
        read_pidfile(&pidfile).filter(|&pid| pid != old)
    });
    wait_for("the old process to exit", DEADLINE, || {
        (!alive(old)).then_some(())
    });
    let held = retirement(&server, old);
    println!(
        "{name:?}: the retiring process exited {held:.3} s after it stopped accepting ({:.3} s after USR1)",
        asked.elapsed().as_secs_f64()
    );
    assert!(held <= 3.0, "held {held:.3} s: {}", server.log.text());
    drop(stalled);
}

#[test]
fn a_client_sending_its_headers_slowly_holds_a_retiring_process_no_longer_than_the_header_read_time()
 {
    a_stalled_client_holds_a_retiring_process_no_longer_than_the_header_read_time(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ",
    );
}

#[test]
fn a_client_sending_half_a_body_holds_a_retiring_process_no_longer_than_the_header_read_time() {
    a_stalled_client_holds_a_retiring_process_no_longer_than_the_header_read_time(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    );
}

#[test]
fn a_client_sending_half_a_streamed_body_and_not_reading_holds_a_retiring_process_no_longer_than_the_header_read_time()
 {
    let name = "half a body to the streaming POST /echo, its answer never read";
    a_stalled_client_holds_a_retiring_process_for_at_most_3_s(name, |stalled| {
        let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n";
        stalled.write_all(head.as_bytes()).unwrap();
        stalled.set_nonblocking(true).unwrap();
        // Sends until the server stops reading: its answer, the body echoed, fills the buffers
        // of a client that reads nothing, so the body stops being read (and polled) too.
        let chunk = vec![b'x'; 64 << 10];
        let mut blocked_since: Option<Instant> = None;
        wait_for("the server to stop reading the body", DEADLINE, || {
            match stalled.write(&chunk) {
                Ok(_) => blocked_since = None,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(500) {
                        return Some(());
                    }
                }
                Err(e) => panic!("{e}"),
            }
            None
        });
    });
}

#[test]
fn clients_that_send_nothing_hold_max_connections_no_longer_than_the_header_read_time() {
    let server = Server::start(
        HTTP,
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("MAX_CONNECTIONS", "2"),
            ("HEADER_READ_TIMEOUT", "1"),
        ],
    );
    // Both places taken by clients that connect and say nothing, not even which protocol.
    let silent: Vec<_> = (0..2)
        .map(|_| open_accepted(server.pid(), &server.address()))
        .collect();
    let asked = Instant::now();
    let answer = curl(&["-m", "10"], &format!("http://{}/", tcp(&server)));
    let waited = asked.elapsed();
    assert!(answer.starts_with("hello from "), "{answer}");
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    drop(silent);
}
