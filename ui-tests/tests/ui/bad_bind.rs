#[uninterruptible::server(bind = "tcp://127.0.0.1")]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
