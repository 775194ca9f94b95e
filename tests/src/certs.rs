//! Certificates made at test time with rcgen, written as PEM files, and rustls clients that
//! trust them.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority that can sign server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

/// PEM files of one certificate: its chain and its key.
#[derive(Clone, Debug)]
pub struct Pair {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes this CA's certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).unwrap();
        path.to_owned()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA, written to
    /// `dir/<stem>.pem` (the certificate followed by the CA's: a chain) and `dir/<stem>.key`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> Pair {
        self.issue_for(KeyPair::generate().unwrap(), dir, stem, names)
    }

    /// [`Ca::issue`] for a key made elsewhere (a PKCS#8 PEM key, e.g. RSA from openssl).
    pub fn issue_for_pem(&self, key_pem: &str, dir: &Path, stem: &str, names: &[&str]) -> Pair {
        self.issue_for(KeyPair::from_pem(key_pem).unwrap(), dir, stem, names)
    }

    /// [`Ca::issue`], valid only from `from` until `until` (year, month, day).
    pub fn issue_valid(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        from: (i32, u8, u8),
        until: (i32, u8, u8),
    ) -> Pair {
        self.issue_with(KeyPair::generate().unwrap(), dir, stem, names, |params| {
            params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
            params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        })
    }

    fn issue_for(&self, key: KeyPair, dir: &Path, stem: &str, names: &[&str]) -> Pair {
        self.issue_with(key, dir, stem, names, |_| {})
    }

    fn issue_with(
        &self,
        key: KeyPair,
        dir: &Path,
        stem: &str,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Pair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        adjust(&mut params);
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            certificate: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&pair.certificate, certificate.pem() + &self.issuer.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

/// A rustls client configuration.
#[derive(Debug, Default, Clone)]
pub struct Client {
    pub roots: Vec<CertificateDer<'static>>,
    /// Offer only TLS 1.2 (else 1.2 and 1.3).
    pub tls12_only: bool,
    /// Present this certificate.
    pub identity: Option<Pair>,
}

impl Client {
    pub fn trusting(ca: &Ca) -> Client {
        Client {
            roots: vec![ca.der()],
            ..Client::default()
        }
    }

    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut roots = rustls::RootCertStore::empty();
        for root in &self.roots {
            roots.add(root.clone()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let chain = CertificateDer::pem_file_iter(&pair.certificate)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        Arc::new(config)
    }

    /// The load client's TLS settings for a server named `name`.
    pub fn connector(&self, name: &str) -> (tokio_rustls::TlsConnector, ServerName<'static>) {
        (
            tokio_rustls::TlsConnector::from(self.config()),
            ServerName::try_from(name.to_owned()).unwrap(),
        )
    }

    /// Connects to `addr` as `name`, sends `line`, reads the reply to the end. Returns the reply,
    /// the negotiated version and the server's certificate.
    pub fn echo(
        &self,
        addr: std::net::SocketAddr,
        name: &str,
        line: &str,
    ) -> Result<Reply, String> {
        let tcp =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let connection = rustls::ClientConnection::new(self.config(), server_name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        tls.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        Ok(Reply {
            text: reply,
            version: tls.conn.protocol_version(),
            server_certificate: tls
                .conn
                .peer_certificates()
                .and_then(|c| c.first().cloned()),
        })
    }
}

/// What a TLS echo returned.
#[derive(Debug)]
pub struct Reply {
    pub text: String,
    pub version: Option<rustls::ProtocolVersion>,
    pub server_certificate: Option<CertificateDer<'static>>,
}
