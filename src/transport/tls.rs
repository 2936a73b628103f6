//! TLS for the daemon's MCP listener (`--tls-cert`, `--tls-key`): rustls
//! with the ring provider, TLS 1.2 and 1.3 only. rustls implements no
//! CBC, RC4, 3DES or static-RSA suites at all, so its defaults are the
//! modern set the security guide asks for: ECDHE with AES-GCM or
//! ChaCha20-Poly1305.
//!
//! The certificate and key are read at start and again on SIGHUP. A reload
//! replaces the configuration used for *new* handshakes only: connections
//! already open, and the SSE streams on them, keep the session keys they
//! negotiated. A reload that fails (a half-written file, a key that does
//! not match) keeps the old certificate and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The listener's certificate, swappable while it serves.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Read the certificate chain and key; an error names the file, not
    /// its content.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(config),
        })
    }

    /// An acceptor for the next handshake, with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("tls lock").clone())
    }

    /// Read the files again; on success new handshakes use them.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().expect("tls lock") = config;
        Ok(())
    }

    /// Reload on every SIGHUP until `stop`.
    pub fn reload_on_sighup(self: Arc<Self>, stop: CancellationToken) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    got = hup.recv() => if got.is_none() { break },
                }
                match self.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded (SIGHUP)")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; the previous certificate stays")
                    }
                }
            }
        });
        Ok(())
    }
}

/// ring, not aws-lc-rs: no C toolchain beyond `cc` to build it. rustls
/// 0.23.48 deprecates ring's provider because it lacks the post-quantum
/// hybrid key exchange (X25519MLKEM768); see docs/decisions.md.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {}: no PEM certificate in it",
            cert.display()
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("TLS certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
