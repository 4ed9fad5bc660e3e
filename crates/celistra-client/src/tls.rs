//! TLS to a remote daemon: certificate fingerprints (parse, show), the verifier that pins one
//! self-signed certificate by its SHA-256, and the rustls configuration (pinned, or the platform's
//! roots when nothing is pinned).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::ClientError;

/// The SHA-256 of a certificate's DER bytes. Shown as 64 lowercase hex digits (the form
/// `/v1/health` uses); read from that form or from colon-separated pairs (`AB:CD:…`, as
/// `openssl x509 -fingerprint -sha256` prints), in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

/// A string that is not a SHA-256 fingerprint.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a SHA-256 fingerprint: expected 64 hex digits, optionally as colon-separated pairs"
)]
pub struct BadFingerprint(String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(text: &str) -> Result<Fingerprint, BadFingerprint> {
        let bad = || BadFingerprint(text.to_owned());
        let trimmed = text.trim();
        let hex: String = if trimmed.contains(':') {
            // Colons only between pairs: `ab:cd:…`.
            let pairs: Vec<&str> = trimmed.split(':').collect();
            if pairs.len() != 32 || pairs.iter().any(|pair| pair.len() != 2) {
                return Err(bad());
            }
            pairs.concat()
        } else {
            trimmed.to_owned()
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The pinned certificate was not the one presented.
#[derive(Debug, thiserror::Error)]
#[error("certificate fingerprint {presented} is not the pinned {expected}")]
pub(crate) struct Mismatch {
    pub(crate) expected: Fingerprint,
    pub(crate) presented: Fingerprint,
}

/// Accepts exactly the certificate with the pinned fingerprint, whatever its names, issuer or
/// dates: like an SSH host key, the pin is the identity, so a bare IP or a tunnel works. The
/// handshake's signature is still checked against that certificate's key, which proves the
/// server holds the private key.
#[derive(Debug)]
struct Pinned {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        if presented == self.expected {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(Mismatch {
                expected: self.expected,
                presented,
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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

/// The client configuration: the pinned certificate only, or else the platform's trusted roots.
pub(crate) fn client_config(pin: Option<Fingerprint>) -> Result<Arc<ClientConfig>, ClientError> {
    // ring, not aws-lc: aws-lc seeds its generator from CPU jitter on first use, about 30 ms of
    // CPU that every short-lived `ctl` paid (BENCHMARKS.md, "`ctl ls` before and after").
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| ClientError::Transport(format!("TLS setup: {e}"));
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = match pin {
        Some(expected) => Arc::new(Pinned {
            expected,
            provider: Arc::clone(&provider),
        }),
        None => Arc::new(rustls_platform_verifier::Verifier::new(provider).map_err(tls_error)?),
    };
    let mut config = builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration of a fleet node's link to its hub: the hub's certificate pinned, the node's
/// own certificate presented (its identity), one ALPN protocol offered.
pub fn link_client_config(
    pin: Fingerprint,
    certificate: CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            expected: pin,
            provider,
        }))
        .with_client_auth_cert(vec![certificate], key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The pinned and the presented fingerprints, when a handshake failed because they differ.
pub fn pin_mismatch(error: &std::io::Error) -> Option<(Fingerprint, Fingerprint)> {
    mismatch_in(error).map(|m| (m.expected, m.presented))
}

/// The pin mismatch inside a failed handshake's error, if that is why it failed.
pub(crate) fn mismatch_in(error: &std::io::Error) -> Option<&Mismatch> {
    let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) =
        error.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    other.downcast_ref::<Mismatch>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_reads_as_plain_or_colon_hex_in_either_case_and_shows_as_plain_lowercase() {
        let plain = "f3728a471d707efa149b80a5ee22805b674a059d3969e09c809aaea6057dc857";
        let colons = "F3:72:8A:47:1D:70:7E:FA:14:9B:80:A5:EE:22:80:5B:67:4A:05:9D:39:69:E0:9C:80:9A:AE:A6:05:7D:C8:57";
        let a: Fingerprint = plain.parse().expect("plain");
        let b: Fingerprint = colons.parse().expect("colons");
        assert_eq!(a, b);
        assert_eq!(b.to_string(), plain);
        for bad in [
            "",
            "f3728a",
            &plain[1..],
            &format!("{plain}00"),
            "f3:728a471d707efa149b80a5ee22805b674a059d3969e09c809aaea6057dc857",
            &plain.replace('f', "g"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} accepted");
        }
    }
}
