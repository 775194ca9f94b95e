async fn answer(datagram: uninterruptible::Datagram) -> std::io::Result<()> {
    datagram.reply(b"x").await
}

#[uninterruptible::server(bind = "udp://127.0.0.1:0", datagrams = "answer")]
async fn echo(datagram: uninterruptible::Datagram) -> std::io::Result<()> {
    datagram.reply(datagram.data()).await
}
