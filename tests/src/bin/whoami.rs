//! Tells each client what the server knows of it: its address, the listener it came in on,
//! whether the connection is TLS, and the size of each certificate it presented. A handler
//! returning `()`.

use tokio::io::AsyncWriteExt;

#[uninterruptible::server(bind = "tcp://127.0.0.1:0")]
async fn whoami(mut stream: uninterruptible::Stream) {
    let certificates: Vec<String> = stream
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.len().to_string())
        .collect();
    let local = stream
        .local_addr()
        .map_or_else(|e| format!("({e})"), |a| a.to_string());
    let reply = format!(
        "peer {} local {local} tls {} certificates [{}]\n",
        stream.peer_addr(),
        stream.is_tls(),
        certificates.join(",")
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}
