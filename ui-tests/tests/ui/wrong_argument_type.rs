#[uninterruptible::server(bind = "tcp://127.0.0.1:6789")]
async fn echo(_stream: std::net::TcpStream) -> std::io::Result<()> {
    Ok(())
}
