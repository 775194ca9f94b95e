//! One server for both kinds of listener, as a DNS server answers over UDP and TCP on one port:
//! a line echo for connections, and a datagram echo named by `datagrams` beside it. Each answer
//! says which way it came (`tcp: `, `udp: `).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn answer(datagram: uninterruptible::Datagram) -> std::io::Result<()> {
    let mut reply = b"udp: ".to_vec();
    reply.extend_from_slice(datagram.data());
    datagram.reply(&reply).await
}

#[uninterruptible::server(bind = "tcp://127.0.0.1:0,udp://127.0.0.1:0", datagrams = "answer")]
async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(format!("tcp: {line}").as_bytes()).await
}
