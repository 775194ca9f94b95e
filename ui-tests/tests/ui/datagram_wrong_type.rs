struct Datagram;

#[uninterruptible::server(bind = "udp://127.0.0.1:0")]
async fn echo(datagram: Datagram) -> std::io::Result<()> {
    let _ = datagram;
    Ok(())
}
