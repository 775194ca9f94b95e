const BIND: &str = "tcp://127.0.0.1:6789";

#[uninterruptible::server(bind = BIND)]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
