//! HTTP/1.1 (keep-alive) and HTTP/2 on one port, with hyper, restarting without a failed request.
//!
//! `GET /` answers `hello from <pid>`; `POST /echo` answers with the request's body.
//!
//! ```sh
//! cargo run --example http
//! curl http://127.0.0.1:6792/ http://127.0.0.1:6792/          # HTTP/1.1, one connection
//! curl --http2-prior-knowledge http://127.0.0.1:6792/          # h2
//! kill -USR1 <pid>
//! ```
//!
//! When the process starts draining (a new process took over, or `TERM`):
//! - requests in flight finish;
//! - an HTTP/1.1 response gets `Connection: close`, so a busy keep-alive connection ends cleanly
//!   after its current exchange and the client's next request opens a connection to the new
//!   process;
//! - an HTTP/2 connection gets `GOAWAY` at once (hyper's graceful shutdown): it tells the client
//!   which requests were taken, so nothing races, and the client opens a new connection;
//! - an HTTP/1.1 connection with nothing in flight gets a short grace ([`IDLE_GRACE`]) for a
//!   request the client may already be sending, then is closed. A request that crosses that close
//!   unanswered was never read; HTTP clients retry it (RFC 9112, section 9.3.1). hyper offers no
//!   way to close an idle HTTP/1.1 connection that cannot race the client; the grace makes the
//!   race rare.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use uninterruptible::Draining;

/// How long a connection with nothing in flight may still bring a request once draining starts.
const IDLE_GRACE: Duration = Duration::from_millis(250);

#[uninterruptible::server(bind = "tcp://127.0.0.1:6792")]
async fn http(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let draining = stream.draining();
    // Whether this connection speaks HTTP/2, as its requests tell.
    let h2 = Arc::new(AtomicBool::new(false));
    let service = {
        let (draining, h2) = (draining.clone(), Arc::clone(&h2));
        service_fn(move |request: Request<Incoming>| {
            if request.version() == Version::HTTP_2 {
                h2.store(true, Ordering::Relaxed);
            }
            respond(request, draining.clone())
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(std::io::Error::other),
        () = draining => {}
    }
    // HTTP/2: GOAWAY at once; it tells the client which requests were taken, so nothing races.
    // Draining: let the connection end by itself for a moment (a busy HTTP/1.1 connection does,
    // with `Connection: close`), then shut it down gracefully.
    if h2.load(Ordering::Relaxed) {
        connection.as_mut().graceful_shutdown();
        return connection.await.map_err(std::io::Error::other);
    }
    if tokio::time::timeout(IDLE_GRACE, connection.as_mut())
        .await
        .is_err()
    {
        connection.as_mut().graceful_shutdown();
        connection.await.map_err(std::io::Error::other)?;
    }
    Ok(())
}

async fn respond(
    request: Request<Incoming>,
    draining: Draining,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let version = request.version();
    let mut response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => {
            Response::new(Full::from(format!("hello from {}\n", std::process::id())))
        }
        (&Method::POST, "/echo") => match request.into_body().collect().await {
            Ok(body) => Response::new(Full::new(body.to_bytes())),
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        _ => status(StatusCode::NOT_FOUND),
    };
    // HTTP/2 has no `Connection` header: its connection gets GOAWAY instead.
    if draining.is_draining() && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = code;
    response
}
