#[uninterruptible::server(bind = "tcp://0.0.0.0:6789", ready_timeout = 0, max_connections = 0)]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
