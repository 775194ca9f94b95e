#[uninterruptible::server(bind = "tcp://0.0.0.0:6789", allowed_networks = ["10.0.0.0/8", "10.0.0.0/33"])]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
