//! A daemon's link identity: an Ed25519 key and a self-signed certificate made once and kept in the
//! state directory (`fleet-key.pem`, `fleet-cert.pem`, 0600), named by the SHA-256 of the
//! certificate; and the hub's TLS 1.3 server configuration, which requires a client certificate
//! and leaves deciding who it belongs to to the registry.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::Error;
use crate::home::{Home, read_private, write_atomic_private};

/// This daemon's link certificate and key.
#[derive(Debug)]
pub(crate) struct Identity {
    pub certificate: CertificateDer<'static>,
    key_pem: String,
    /// SHA-256 of the certificate, lowercase hex.
    pub fingerprint: String,
}

impl Identity {
    /// Loads the identity, making one on first use.
    pub(crate) fn load_or_create(home: &Home, machine_name: &str) -> Result<Identity, Error> {
        let key_path = home.dir.join("fleet-key.pem");
        let cert_path = home.dir.join("fleet-cert.pem");
        if !key_path.exists() || !cert_path.exists() {
            let invalid = |e: rcgen::Error| Error::Invalid(format!("cannot make a link key: {e}"));
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(invalid)?;
            let mut params =
                rcgen::CertificateParams::new(vec![format!("{machine_name}.celistra")])
                    .map_err(invalid)?;
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("celistrad {machine_name}"),
            );
            let certificate = params.self_signed(&key).map_err(invalid)?;
            write_atomic_private(&key_path, key.serialize_pem().as_bytes())
                .map_err(|e| Error::io(format!("cannot write {}", key_path.display()), e))?;
            write_atomic_private(&cert_path, certificate.pem().as_bytes())
                .map_err(|e| Error::io(format!("cannot write {}", cert_path.display()), e))?;
        }
        let key_pem = read_private(&key_path, "the link key", None)?;
        let cert_pem = read_private(&cert_path, "the link certificate", None)?;
        let certificate = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            Error::Invalid(format!("{}: bad certificate: {e}", cert_path.display()))
        })?;
        // Refuse a key that does not load here rather than on the first link.
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Invalid(format!("{}: bad key: {e}", key_path.display())))?;
        Ok(Identity {
            fingerprint: crate::tls::fingerprint(&certificate),
            certificate,
            key_pem,
        })
    }

    /// Forgets the identity (`ctl leave`), so joining again makes a new key.
    pub(crate) fn forget(home: &Home) {
        for file in ["fleet-key.pem", "fleet-cert.pem"] {
            let _ = std::fs::remove_file(home.dir.join(file));
        }
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("checked at load")
    }

    /// The hub's configuration for its link port: TLS 1.3 only, a client certificate required,
    /// the link and the enrolment protocols offered.
    pub(crate) fn hub_server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = |e: rustls::Error| Error::Invalid(format!("link TLS: {e}"));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(Arc::new(AnyClientCertificate { provider }))
            .with_single_cert(vec![self.certificate.clone()], self.key())
            .map_err(tls)?;
        config.alpn_protocols = vec![
            celistra_proto::FLEET_ALPN.to_vec(),
            celistra_proto::ENROLL_ALPN.to_vec(),
        ];
        Ok(Arc::new(config))
    }
}

/// Requires a client certificate and checks that the client holds its key (the handshake
/// signature), but trusts no issuer: the registry decides whose certificate it is, by its
/// fingerprint, once the handshake is done.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
