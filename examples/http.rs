//! A plain tower service, served by the library: HTTP/1.1 (keep-alive) and h2 on one port,
//! restarting without a failed request, with no connection or drain code of its own.
//!
//! `GET /` answers `hello from <pid>`; `POST /echo` streams the request's body back as it
//! arrives, so a body of any size costs a few frames of memory, never the whole body.
//!
//! ```sh
//! cargo run --example http
//! curl http://127.0.0.1:6792/ http://127.0.0.1:6792/          # HTTP/1.1, one connection
//! curl --http2-prior-knowledge http://127.0.0.1:6792/          # h2
//! curl -T big.iso http://127.0.0.1:6792/echo > copy.iso        # streamed both ways
//! kill -USR1 <pid>
//! ```
//!
//! The handler takes no connection: it builds the service once per process (it is the
//! initialiser), and the library serves it on every connection and drains it when the process
//! retires: requests in flight finish, HTTP/1.1 responses carry `Connection: close`, h2 gets
//! `GOAWAY`, and a request still arriving has `HEADER_READ_TIMEOUT`.

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use uninterruptible::RequestBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

#[uninterruptible::server(bind = "tcp://127.0.0.1:6792")]
async fn app() -> Result<impl uninterruptible::HttpService, Infallible> {
    Ok(tower::service_fn(respond))
}

async fn respond(request: Request<RequestBody>) -> Result<Response<Body>, Infallible> {
    Ok(match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => Response::new(full(format!("hello from {}\n", std::process::id()))),
        // The body goes back frame by frame, as it arrives.
        (&Method::POST, "/echo") => Response::new(request.into_body().boxed()),
        _ => {
            let mut response = Response::new(full(String::new()));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    })
}

fn full(text: String) -> Body {
    Full::from(text).map_err(|never| match never {}).boxed()
}
