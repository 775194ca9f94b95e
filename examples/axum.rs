//! An axum `Router`, restarting without a failed request: the same service and drain pattern as
//! `examples/http.rs`, with axum's router in place of the hand-written one.
//!
//! ```sh
//! cargo run --example axum
//! curl http://127.0.0.1:6793/ ; curl -d hi http://127.0.0.1:6793/echo
//! ```
//!
//! Each connection is served by hyper with the router as its service (what `axum::serve` does
//! inside), so the handler can watch `draining()`: HTTP/1.1 responses get `Connection: close`
//! once the process retires; an HTTP/2 connection gets `GOAWAY` at once; an idle HTTP/1.1
//! connection is closed after a short grace.

use axum::Router;
use axum::extract::Request;
use axum::http::Version;
use axum::http::header::{CONNECTION, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use uninterruptible::Draining;

/// How long a connection with nothing in flight may still bring a request once draining starts.
const IDLE_GRACE: Duration = Duration::from_millis(250);

fn router(draining: Draining, h2: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { format!("hello from {}\n", std::process::id()) }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            if request.version() == Version::HTTP_2 {
                h2.store(true, Ordering::Relaxed);
            }
            let draining = draining.clone();
            async move { close_when_draining(request, next, draining).await }
        }))
}

/// Once the process retires, an HTTP/1.1 response ends its keep-alive connection.
async fn close_when_draining(request: Request, next: Next, draining: Draining) -> Response {
    let version = request.version();
    let mut response = next.run(request).await;
    if draining.is_draining() && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6793")]
async fn serve(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let draining = stream.draining();
    // Whether this connection speaks HTTP/2, as its requests tell.
    let h2 = Arc::new(AtomicBool::new(false));
    let service = TowerToHyperService::new(router(draining.clone(), Arc::clone(&h2)));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(std::io::Error::other),
        () = draining => {}
    }
    // HTTP/2: GOAWAY at once; it tells the client which requests were taken, so nothing races.
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
