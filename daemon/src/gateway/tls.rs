//! HTTPS for the gateway (`--tls-cert FILE --tls-key FILE`): the rustls
//! (on `ring`) configuration; [`super::listen`] runs the handshakes, each
//! within [`HANDSHAKE_TIMEOUT`], at most [`MAX_HANDSHAKES`] at once.
//! HTTP/1.1 only, like the plain listener: the plugin's HTTP clients need
//! nothing more.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes at once.
pub const MAX_HANDSHAKES: usize = 256;

/// Why the TLS files are not usable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file has no usable PEM content.
    #[error("--{flag} {path}: {reason}")]
    File {
        /// `tls-cert` or `tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a server configuration.
    #[error("--tls-cert and --tls-key do not go together: {0}")]
    Config(String),
}

/// The acceptor for the certificate chain at `cert` and the key at `key`
/// (PEM files).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let file_err = |flag, path: &Path, reason: String| TlsError::File {
        flag,
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err("tls-cert", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err("tls-cert", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("tls-cert", cert, "holds no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_err("tls-key", key, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
