//! TLS on the TCP port: the certificate (generated once into the state directory, or the
//! operator's PEM files, reloaded when they change), its SHA-256 fingerprint, the acceptor
//! (`serve.rs` runs the accept loop), and the `Strict-Transport-Security` header.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use celistra_proto::TlsHealth;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::home::{Home, read_private, write_atomic_private};

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// A self-signed certificate the daemon makes on first start and keeps in its state directory.
    Generate,
    /// The operator's PEM files (`--tls-cert`, `--tls-key`), picked up again when they change.
    Files { cert: PathBuf, key: PathBuf },
}

/// How often the operator's files are compared with what is served.
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// One year: browsers then never fall back to plain HTTP for this host name.
const HSTS: &str = "max-age=31536000";

/// The certificate being served, swapped in place when the operator's files change.
#[derive(Debug)]
pub(crate) struct Certificates {
    mode: TlsMode,
    provider: Arc<CryptoProvider>,
    served: RwLock<Served>,
}

#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    fingerprint: String,
    reload_error: Option<String>,
    /// The files' contents last looked at (loaded or refused), so each change is tried once.
    seen: (Vec<u8>, Vec<u8>),
}

impl Certificates {
    /// Loads the certificate to serve: the operator's files (which must be good at start), or the
    /// generated one, made on first start with the names clients may use for this machine.
    pub(crate) fn load(
        home: &Home,
        mode: &TlsMode,
        hostname: &str,
        listen: IpAddr,
    ) -> Result<Arc<Certificates>, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert_path, key_path) = match mode {
            TlsMode::Generate => {
                let paths = (home.dir.join("tls-cert.pem"), home.dir.join("tls-key.pem"));
                if !(paths.0.exists() && paths.1.exists()) {
                    generate(&paths.0, &paths.1, hostname, listen)?;
                }
                paths
            }
            TlsMode::Files { cert, key } => (cert.clone(), key.clone()),
        };
        let cert_pem = std::fs::read(&cert_path)
            .map_err(|e| Error::io(format!("cannot read {}", cert_path.display()), e))?;
        let key_pem = match mode {
            // The generated key is ours to keep private: refuse it if others can read it.
            TlsMode::Generate => read_private(&key_path, "the TLS private key", None)?.into_bytes(),
            TlsMode::Files { .. } => std::fs::read(&key_path)
                .map_err(|e| Error::io(format!("cannot read {}", key_path.display()), e))?,
        };
        let (key, fingerprint) = certified_key(&cert_pem, &key_pem, &provider).map_err(|e| {
            Error::Invalid(format!(
                "TLS certificate {} with key {}: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
        Ok(Arc::new(Certificates {
            mode: mode.clone(),
            provider,
            served: RwLock::new(Served {
                key,
                fingerprint,
                reload_error: None,
                seen: (cert_pem, key_pem),
            }),
        }))
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.served.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn fingerprint(&self) -> String {
        self.served().fingerprint.clone()
    }

    pub(crate) fn health(&self) -> TlsHealth {
        let served = self.served();
        TlsHealth {
            fingerprint_sha256: served.fingerprint.clone(),
            source: match self.mode {
                TlsMode::Generate => "generated",
                TlsMode::Files { .. } => "files",
            }
            .into(),
            reload_error: served.reload_error.clone(),
        }
    }

    /// The acceptor for the TCP port: HTTP/1.1 only (the terminal's WebSocket is an HTTP/1.1
    /// upgrade), with the certificate looked up per handshake so a reload takes effect at once.
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Invalid(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Until `stopping`, compares the operator's files with what is served every second and loads
    /// a changed pair; a pair that does not load is logged and reported in `/v1/health`, and the
    /// previous one stays in service.
    pub(crate) async fn reload_on_change(self: Arc<Self>, stopping: CancellationToken) {
        let TlsMode::Files { cert, key } = &self.mode else {
            return;
        };
        let mut ticks = tokio::time::interval(RELOAD_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stopping.cancelled() => return,
            }
            // A file missing for a moment (an ACME client renaming) reads as empty: tried, refused,
            // and tried again once it is back.
            let contents = (
                tokio::fs::read(cert).await.unwrap_or_default(),
                tokio::fs::read(key).await.unwrap_or_default(),
            );
            if contents == self.served().seen {
                continue;
            }
            let loaded = certified_key(&contents.0, &contents.1, &self.provider);
            let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
            match loaded {
                Ok((key_pair, fingerprint)) => {
                    tracing::info!(
                        fingerprint_sha256 = %fingerprint,
                        "TLS certificate reloaded from {}",
                        cert.display()
                    );
                    served.key = key_pair;
                    served.fingerprint = fingerprint;
                    served.reload_error = None;
                }
                Err(e) => {
                    let message = format!(
                        "{} with {}: {e}; still serving the certificate {}",
                        cert.display(),
                        key.display(),
                        served.fingerprint
                    );
                    tracing::error!("TLS certificate not reloaded: {message}");
                    served.reload_error = Some(message);
                }
            }
            served.seen = contents;
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.served().key))
    }
}

/// SHA-256 of a DER certificate as lowercase hex: the form `/v1/health` shows and clients pin.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    celistra_audit::to_hex(&Sha256::digest(der))
}

/// A certificate chain (end-entity first) and its private key from PEM, checked to belong
/// together, with the end-entity certificate's fingerprint.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, String), String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    let Some(end_entity) = chain.first() else {
        return Err("no certificate in the certificate file".into());
    };
    let fingerprint = fingerprint(end_entity);
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("bad key PEM: {e}"))?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("unusable key or certificate: {e}"))?;
    Ok((Arc::new(certified), fingerprint))
}

/// Makes a self-signed certificate for this machine's names (0600, like every file in the state
/// directory that clients must not be able to swap).
fn generate(cert: &Path, key: &Path, hostname: &str, listen: IpAddr) -> Result<(), Error> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if !hostname.is_empty() {
        names.push(hostname.to_owned());
    }
    if !listen.is_unspecified() && !listen.is_loopback() {
        names.push(listen.to_string());
    }
    let invalid = |e: rcgen::Error| Error::Invalid(format!("cannot make a TLS certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(names).map_err(invalid)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("celistrad {hostname}"));
    let key_pair = rcgen::KeyPair::generate().map_err(invalid)?;
    let certificate = params.self_signed(&key_pair).map_err(invalid)?;
    write_atomic_private(key, key_pair.serialize_pem().as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", key.display()), e))?;
    write_atomic_private(cert, certificate.pem().as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", cert.display()), e))?;
    Ok(())
}

/// Adds `Strict-Transport-Security` to a response of the TLS port.
pub(crate) async fn strict_transport_security(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    response
}
