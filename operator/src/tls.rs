//! TLS clients of the operator's own connections: `amqps://` to the broker
//! and `https://` to its management API. Both use rustls with the ring
//! provider (as kube does), built here once so they verify the same way:
//!
//! - with a CA (PEM, from the Secret `spec.broker.tls.caSecret` names), that
//!   CA is the *only* trust anchor: a certificate signed by anything else —
//!   a public CA included — is refused;
//! - without one, the system trust store (rustls-native-certs).
//!
//! There is no switch that turns verification off.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the CA is not valid PEM: {0}")]
    InvalidPem(String),
    #[error("the CA holds no certificate (expected a PEM block \"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate,
    #[error("the CA certificate cannot be used as a trust anchor: {0}")]
    UnusableCertificate(String),
    #[error("no CA is configured and the system trust store has no certificates ({0})")]
    NoSystemRoots(String),
    #[error("cannot build the TLS client: {0}")]
    Config(String),
}

/// A verifying TLS client configuration and a fingerprint of its trust
/// anchors (connections and HTTP clients are cached per fingerprint, so a
/// resource with another CA never reuses a connection verified with this one).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    fingerprint: String,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts exactly the certificates of `pem` (one or more CA certificates).
    pub fn from_ca_pem(pem: &str) -> Result<TlsClient, TlsError> {
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsError::InvalidPem(error.to_string()))?;
        if certificates.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let mut roots = RootCertStore::empty();
        let mut hasher = Sha256::new();
        for certificate in certificates {
            hasher.update(certificate.as_ref());
            roots.add(certificate).map_err(|error| TlsError::UnusableCertificate(error.to_string()))?;
        }
        let fingerprint = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(TlsClient { config: Arc::new(config(roots)?), fingerprint })
    }

    /// Trusts the system's certificate store.
    pub fn system() -> Result<TlsClient, TlsError> {
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            let detail = if errors.is_empty() { "none found".to_owned() } else { errors.join("; ") };
            return Err(TlsError::NoSystemRoots(detail));
        }
        Ok(TlsClient { config: Arc::new(config(roots)?), fingerprint: "system".into() })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// For AMQP over TLS (no ALPN).
    pub fn amqp_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// For HTTPS (ALPN `http/1.1`: the HTTP client speaks HTTP/1 only).
    pub fn http_config(&self) -> ClientConfig {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

fn config(roots: RootCertStore) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The TLS failure somewhere in `error`'s chain (a refused certificate, a
/// failed handshake), as rustls describes it; `None` when the error is not a
/// TLS one. Looks inside `io::Error`s, whose `source()` skips the wrapped error.
pub fn tls_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(found) = tls_failure(inner)
        {
            return Some(found);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../tests/fixtures/tls/ca.pem");
    const OTHER_CA: &str = include_str!("../tests/fixtures/tls/other-ca.pem");
    const KEY: &str = include_str!("../tests/fixtures/tls/server-key.pem");

    #[test]
    fn a_ca_is_the_only_trust_anchor() {
        let client = TlsClient::from_ca_pem(CA).unwrap();
        let other = TlsClient::from_ca_pem(OTHER_CA).unwrap();
        assert_ne!(client.fingerprint(), other.fingerprint(), "another CA, another cache key");
        assert_eq!(client.fingerprint(), TlsClient::from_ca_pem(CA).unwrap().fingerprint());
        assert_eq!(client.http_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(client.amqp_config().alpn_protocols.is_empty());
    }

    #[test]
    fn a_bad_ca_is_named_not_ignored() {
        assert_eq!(TlsClient::from_ca_pem("").unwrap_err(), TlsError::NoCertificate);
        assert_eq!(TlsClient::from_ca_pem("not a certificate").unwrap_err(), TlsError::NoCertificate);
        // A private key is not a CA.
        assert_eq!(TlsClient::from_ca_pem(KEY).unwrap_err(), TlsError::NoCertificate);
        let truncated = CA.replace("-----END CERTIFICATE-----", "");
        assert!(matches!(TlsClient::from_ca_pem(&truncated), Err(TlsError::InvalidPem(_))));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(TlsClient::from_ca_pem(garbage), Err(TlsError::UnusableCertificate(_))));
    }

    #[test]
    fn tls_failures_are_found_inside_io_errors() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let lapin = lapin::Error::from(io);
        assert_eq!(tls_failure(&lapin).as_deref(), Some("invalid peer certificate: UnknownIssuer"));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_failure(&plain), None);
    }
}
