#[uninterruptible::server(bind = "tcp://0.0.0.0:6789", tls_version = "TLSv1_1")]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
