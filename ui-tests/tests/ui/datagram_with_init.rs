async fn setup() -> Result<u32, String> {
    Ok(1)
}

#[uninterruptible::server(bind = "udp://127.0.0.1:0", init = "setup")]
async fn echo(datagram: uninterruptible::Datagram, _state: std::sync::Arc<u32>) -> std::io::Result<()> {
    datagram.reply(datagram.data()).await
}
