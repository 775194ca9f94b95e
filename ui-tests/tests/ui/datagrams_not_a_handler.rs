fn answer(_: u32) {}

#[uninterruptible::server(bind = "tcp://127.0.0.1:0,udp://127.0.0.1:0", datagrams = "answer")]
async fn echo(_stream: uninterruptible::Stream) -> std::io::Result<()> {
    Ok(())
}
