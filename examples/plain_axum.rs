//! The floor for the HTTP benchmark rows: the router of `examples/axum.rs`, the same routes and
//! state, served by `axum::serve` on a plain tokio listener, with no restarts and no drain.
//!
//! ```sh
//! cargo run --release --example plain_axum -- 127.0.0.1:6893
//! ```

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The router's state, as in `examples/axum.rs`.
struct AppState {
    visits: AtomicU64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6893".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on tcp://{}", listener.local_addr()?);
    let state = Arc::new(AppState {
        visits: AtomicU64::new(0),
    });
    let app = Router::new()
        .route(
            "/",
            get(|| async { format!("hello from {}\n", std::process::id()) }),
        )
        .route("/echo", post(|body: String| async move { body }))
        .route("/visits", get(visits))
        .with_state(state);
    axum::serve(listener, app).await
}

async fn visits(State(state): State<Arc<AppState>>) -> String {
    let n = state.visits.fetch_add(1, Ordering::Relaxed) + 1;
    format!("{n} visits to process {}\n", std::process::id())
}
