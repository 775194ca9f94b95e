#[uninterruptible::server(bind = "tcp://127.0.0.1:6789", drain_timeout = "30", verify_client_tls_certificate = "yes")]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
