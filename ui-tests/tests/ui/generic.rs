#[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
async fn echo<S: Send>(_stream: S) -> std::io::Result<()> {
    Ok(())
}
