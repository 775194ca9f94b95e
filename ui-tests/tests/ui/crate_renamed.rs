// With `crate = "renamed"` the generated code reaches the runtime as `::renamed` (here renamed
// with `extern crate`, as a renamed dependency in Cargo.toml would be); the only error is the
// user's real one.
extern crate uninterruptible as renamed;

#[renamed::server(crate = "renamed", bind = "tcp://127.0.0.1:6789")]
async fn echo(_stream: renamed::Stream) -> u32 {
    0
}
