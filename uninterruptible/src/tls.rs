//! TLS: the certificate, key and client CA read from PEM files at startup (and so afresh by every
//! new process: a restart rotates certificates), with rustls and its *ring* provider.

use crate::config::{CLIENT_TLS_CERTIFICATE_CA, TLS_CERTIFICATE, TLS_KEY, TlsFiles, TlsVersion};
use crate::error::{Error, Source};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// What the accept path needs to run a handshake.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

fn bad(variable: &'static str, path: &Path, reason: impl Into<String>) -> Error {
    Error::BadFile {
        name: Source::Env(variable),
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| bad(variable, path, format!("cannot read it: {e}")))
}

fn certificates(
    variable: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(variable, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(variable, path, format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(bad(
            variable,
            path,
            "no certificate in it (expected PEM blocks of BEGIN CERTIFICATE)",
        ));
    }
    Ok(certificates)
}

/// Reads and checks every TLS file, and builds the acceptor.
pub(crate) fn load(files: &TlsFiles) -> Result<Tls, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(TLS_CERTIFICATE, &files.certificate)?;
    let key_pem = read(TLS_KEY, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        bad(
            TLS_KEY,
            &files.key,
            format!("no private key in it (expected a PKCS#8, PKCS#1 or SEC1 PEM key): {e}"),
        )
    })?;

    let versions: &[&rustls::SupportedProtocolVersion] = match files.version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| Error::InvalidConfig(format!("TLS setup failed: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, &provider)?),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let reason = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "this key does not belong to the certificate in {TLS_CERTIFICATE}={:?} ({e})",
                files.certificate
            ),
            e => format!("unusable key: {e}"),
        };
        bad(TLS_KEY, &files.key, reason)
    })?;
    // Handlers get a plain byte stream; no ALPN is negotiated.
    config.alpn_protocols.clear();
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        handshake_timeout: files.handshake_timeout,
    })
}

fn client_verifier(
    ca: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Error> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(CLIENT_TLS_CERTIFICATE_CA, ca)? {
        roots.add(certificate).map_err(|e| {
            bad(
                CLIENT_TLS_CERTIFICATE_CA,
                ca,
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| {
            bad(
                CLIENT_TLS_CERTIFICATE_CA,
                ca,
                format!("cannot verify clients with it: {e}"),
            )
        })
}
