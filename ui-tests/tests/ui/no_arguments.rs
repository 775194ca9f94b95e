#[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
async fn echo() -> std::io::Result<()> {
    Ok(())
}
