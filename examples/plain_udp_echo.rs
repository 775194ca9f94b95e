//! The floor for the UDP benchmark: the UDP echo, in a hand-written tokio server with no
//! restarts, no signals and no configuration, written as a well-made tokio UDP server is: one
//! task reads the socket and answers each datagram itself, with no task per datagram. With
//! `TASK_PER_DATAGRAM=1` each datagram is answered on a task of its own instead (as the library
//! does, so that a slow answer holds up no other), a second floor. Listens on 127.0.0.1:$PORT
//! (0 by default).

use std::sync::Arc;
use tokio::net::UdpSocket;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let socket = Arc::new(UdpSocket::bind(format!("127.0.0.1:{port}")).await?);
    println!("listening on udp://{} (plain tokio)", socket.local_addr()?);
    let per_task = std::env::var_os("TASK_PER_DATAGRAM").is_some();
    let mut buf = vec![0; 65536];
    tokio::spawn(async move {
        loop {
            let (n, peer) = socket.recv_from(&mut buf).await?;
            if per_task {
                let (socket, data) = (Arc::clone(&socket), buf[..n].to_vec());
                tokio::spawn(async move { socket.send_to(&data, peer).await });
            } else {
                socket.send_to(&buf[..n], peer).await?;
            }
        }
    })
    .await?
}
