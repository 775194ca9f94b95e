#[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
async fn main(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
