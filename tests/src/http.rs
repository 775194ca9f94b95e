//! An HTTP keep-alive load: clients on connections of their own (HTTP/1.1 or h2), sending
//! `GET /` again and again through hyper-util's pooled client, counting every outcome.
//!
//! A request the server cannot have processed is retried once, as HTTP clients do: on HTTP/1.1,
//! one whose connection closed before any response arrived (RFC 9112, section 9.3.1); on HTTP/2,
//! one refused because the connection had received `GOAWAY` before it was sent (RFC 9113,
//! section 6.8; hyper-util's client leaves that retry to its user). Any other error is a failure.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Counts of requests by outcome.
#[derive(Clone, Debug, Default)]
pub struct HttpStats {
    pub ok: u64,
    /// Requests sent again after their connection closed before any response.
    pub retried: u64,
    pub failed: u64,
    /// Answers by server pid.
    pub pids: std::collections::BTreeSet<u32>,
    /// The first few failures, described.
    pub examples: Vec<String>,
}

impl std::fmt::Display for HttpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} retried, {} failed, answered by {} processes",
            self.ok,
            self.retried,
            self.failed,
            self.pids.len()
        )?;
        if !self.examples.is_empty() {
            write!(f, "; first failures: {}", self.examples.join("; "))?;
        }
        Ok(())
    }
}

/// Whether the server cannot have processed the request: its HTTP/1.1 connection closed before
/// any response, or its HTTP/2 connection was going away before it was sent.
fn unanswered(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(e) = cause.downcast_ref::<h2::Error>() {
            return e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR);
        }
        if let Some(e) = cause.downcast_ref::<hyper::Error>()
            && (e.is_incomplete_message() || e.is_canceled() || e.is_closed())
        {
            return true;
        }
        source = cause.source();
    }
    false
}

async fn get(client: &Client<HttpConnector, Empty<Bytes>>, url: &str) -> Result<u32, String> {
    let uri: hyper::Uri = url.parse().unwrap();
    let response = client.get(uri).await.map_err(|e| {
        if unanswered(&e) {
            "unanswered".to_owned()
        } else {
            format!("{e:?}")
        }
    })?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    text.strip_prefix("hello from ")
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| format!("wrong reply {text:?}"))
}

/// Runs `clients` clients, each on its own connection, until `stop`.
pub async fn keep_alive_load(
    addr: SocketAddr,
    clients: usize,
    h2: bool,
    stop: Arc<AtomicBool>,
) -> HttpStats {
    let url = format!("http://{addr}/");
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, stop) = (url.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new())
                    .http2_only(h2)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build_http::<Empty<Bytes>>();
                let mut stats = HttpStats::default();
                while !stop.load(Ordering::Relaxed) {
                    let mut outcome = get(&client, &url).await;
                    if outcome.as_ref().err().is_some_and(|e| e == "unanswered") {
                        stats.retried += 1;
                        outcome = get(&client, &url).await;
                    }
                    match outcome {
                        Ok(pid) => {
                            stats.ok += 1;
                            stats.pids.insert(pid);
                        }
                        Err(e) => {
                            stats.failed += 1;
                            if stats.examples.len() < 5 {
                                stats.examples.push(e);
                            }
                        }
                    }
                }
                stats
            })
        })
        .collect();
    let mut total = HttpStats::default();
    for task in tasks {
        let stats = task.await.expect("an HTTP client panicked");
        total.ok += stats.ok;
        total.retried += stats.retried;
        total.failed += stats.failed;
        total.pids.extend(stats.pids);
        for example in stats.examples {
            if total.examples.len() < 5 {
                total.examples.push(example);
            }
        }
    }
    total
}

/// Counts from h2load's `requests:` line, as it prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2loadCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
}

/// The counts of h2load's `requests:` line in `output`; panics when there is none.
pub fn h2load_counts(output: &str) -> H2loadCounts {
    let line = output
        .lines()
        .find(|l| l.starts_with("requests: "))
        .unwrap_or_else(|| panic!("h2load printed no requests line: {output}"));
    let number = |word: &str| -> u64 {
        let before = line.split(&format!(" {word}")).next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    H2loadCounts {
        total: number("total"),
        succeeded: number("succeeded"),
        failed: number("failed"),
        errored: number("errored"),
        timeout: number("timeout"),
    }
}
