//! The TLS floor for the benchmarks: the echo handler in a hand-written tokio-rustls server with
//! the same crypto provider (ring). Listens on 127.0.0.1:$PORT with $TLS_KEY and $TLS_CERTIFICATE.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

async fn echo(stream: impl AsyncRead + AsyncWrite) -> std::io::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    writer.write_all(line.as_bytes()).await?;
    writer.shutdown().await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let chain = CertificateDer::pem_file_iter(std::env::var("TLS_CERTIFICATE")?)?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(std::env::var("TLS_KEY")?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!(
        "listening on tcp://{} (plain tokio-rustls)",
        listener.local_addr()?
    );
    // The accept loop on a worker task of its own, as a well-made tokio server runs it.
    tokio::spawn(accept(listener, acceptor)).await??;
    Ok(())
}

async fn accept(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                let _ = echo(tls).await;
            }
        });
    }
}
