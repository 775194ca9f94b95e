//! An axum `Router` with its state, restarting without a failed request: the handler builds the
//! router once per process and the library serves it, as `axum::serve` would, with the drain
//! built in (no drain code here).
//!
//! ```sh
//! cargo run --example axum
//! curl http://127.0.0.1:6793/ ; curl -d hi http://127.0.0.1:6793/echo
//! curl http://127.0.0.1:6793/visits
//! ```
//!
//! What the router needs at start (a pool, a cache) is built in `app`, before the process is
//! ready: a restart waits for it, and one whose `app` fails leaves the old process serving.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The router's state: built once per process, shared by every connection.
struct AppState {
    visits: AtomicU64,
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6793")]
async fn app() -> Result<Router, Infallible> {
    let state = Arc::new(AppState {
        visits: AtomicU64::new(0),
    });
    Ok(Router::new()
        .route(
            "/",
            get(|| async { format!("hello from {}\n", std::process::id()) }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .route("/visits", get(visits))
        .with_state(state))
}

async fn visits(State(state): State<Arc<AppState>>) -> String {
    let n = state.visits.fetch_add(1, Ordering::Relaxed) + 1;
    format!("{n} visits to process {}\n", std::process::id())
}
