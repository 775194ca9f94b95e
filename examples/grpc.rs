//! A gRPC service with tonic, restarting without a failed call: a unary method and a
//! server-streaming one, served by the library like any HTTP service (tonic's `Routes` is a tower
//! service), with h2's `GOAWAY` on each connection when the process retires.
//!
//! ```sh
//! cargo run --example grpc
//! grpcurl -plaintext -import-path examples/proto -proto echo.proto \
//!     -d '{"message": "hi"}' 127.0.0.1:6796 echo.Echo/Say
//! ```
//!
//! `examples/proto/echo.rs` is what `tonic-prost-build` generates from `examples/proto/echo.proto`
//! (kept in the repository, so that building the examples needs no `protoc`). Regenerate it with
//! `tonic_prost_build::configure().build_transport(false).out_dir("examples/proto")` over the
//! file descriptors of `echo.proto`.

use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The generated messages, client and server.
pub mod proto {
    include!("proto/echo.rs");
}

use proto::echo_server::{Echo, EchoServer};
use proto::{EchoReply, EchoRequest, RepeatRequest};

/// The most replies one `Repeat` call streams.
const MAX_REPEAT: u32 = 10_000;

#[derive(Debug, Default)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(reply(request.into_inner().message)))
    }

    type RepeatStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

    async fn repeat(
        &self,
        request: Request<RepeatRequest>,
    ) -> Result<Response<Self::RepeatStream>, Status> {
        let RepeatRequest { message, count } = request.into_inner();
        if count > MAX_REPEAT {
            return Err(Status::invalid_argument(format!(
                "count is {count}; at most {MAX_REPEAT}"
            )));
        }
        let replies = (0..count).map(move |_| Ok(reply(message.clone())));
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
}

fn reply(message: String) -> EchoReply {
    EchoReply {
        message,
        pid: std::process::id(),
    }
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:6796")]
async fn app() -> Result<tonic::service::Routes, std::convert::Infallible> {
    Ok(tonic::service::Routes::new(EchoServer::new(EchoService)))
}
