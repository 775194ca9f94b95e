//! The echo server over TLS. Make a key and a self-signed certificate first:
//!
//! ```sh
//! openssl req -newkey rsa:2048 -nodes -x509 -days 365 -subj /CN=localhost \
//!     -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout tls_key.pem -out tls_cert.pem
//! cargo run --example tls_echo
//! echo hi | openssl s_client -connect 127.0.0.1:6790 -CAfile tls_cert.pem -quiet
//! ```
//!
//! `TLS_KEY` and `TLS_CERTIFICATE` name other files; `kill -USR1` reads them afresh, so a restart
//! rotates the certificate.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[uninterruptible::server(
    bind = "tcp://127.0.0.1:6790",
    tls_key = "tls_key.pem",
    tls_certificate = "tls_cert.pem"
)]
async fn echo(stream: uninterruptible::Stream) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await
}
