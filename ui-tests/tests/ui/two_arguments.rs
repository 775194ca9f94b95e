#[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
async fn echo(_stream: uninterruptible::Stream, _extra: u32) -> std::io::Result<()> {
    Ok(())
}
