//! TLS configuration of hnsecure's ports: TLS 1.3 only, rustls with the *ring* provider,
//! HNGard's CA as the only root, mutual authentication.
//!
//! *ring* is the provider because it builds with a C compiler alone (no cmake, no
//! assembler toolchain), which matters on the AIX- and Windows-class hosts vendors
//! build for, and its TLS 1.3 suites are all hnsecure offers.
//!
//! The gateway asks every client for a certificate but lets a client without one finish
//! the handshake: such a connection may only register (the one frame a facility sends
//! before it has a certificate); any transaction on it is refused.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The ALPN protocol name of hnsecure's transport.
pub const ALPN: &[u8] = b"hnsecure/1";

/// Why a TLS configuration could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM text held no usable certificate or key.
    Pem(&'static str),
    /// rustls refused the material.
    Rustls(rustls::Error),
    /// The client certificate verifier could not be built.
    Verifier(String),
    /// A gateway address has no usable host name.
    ServerName(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem(what) => write!(f, "no usable {what} in the PEM text"),
            Self::Rustls(e) => write!(f, "TLS: {e}"),
            Self::Verifier(e) => write!(f, "TLS client verifier: {e}"),
            Self::ServerName(host) => write!(f, "{host:?} is not a usable host name or address"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        Self::Rustls(e)
    }
}

/// The one crypto provider, *ring*, made once.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Every certificate in a PEM text.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem("certificate"))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("certificate"));
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::Pem("private key"))
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone())?;
    }
    Ok(Arc::new(roots))
}

/// The gateway's configuration: its certificate chain and key, client certificates
/// verified against `client_ca`, TLS 1.3 only.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No session tickets: every connection authenticates in full.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client daemon's MLLP listener (not hnsecure's transport): TLS 1.2 or 1.3, as
/// integration engines speak (TLS 1.3 only when `tls13_only`), no ALPN. With
/// `client_ca`, engines' certificates are verified against it, and required when
/// `require_client_cert`.
///
/// A client that sends no certificate where one is required gets the alert
/// `certificate_required` (116) from rustls on TLS 1.2 as on 1.3, although RFC 8446
/// defined it for 1.3 (TLS 1.2 stacks expect `handshake_failure`, 40): `tls13_only`
/// is for partners whose TLS 1.2 stack does not know it.
pub fn mllp_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<&[CertificateDer<'static>]>,
    require_client_cert: bool,
    tls13_only: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider());
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(chain, key)?))
}

/// The gateway's configuration towards an `mllps://` receiving system: `ca` as the only
/// root, TLS 1.3 or 1.2, no ALPN, and a client certificate when the receiver asks.
pub fn mllp_client_config(
    ca: &[CertificateDer<'static>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots(ca)?);
    Ok(Arc::new(match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    }))
}

/// A client's configuration: `ca` as the only root, TLS 1.3 only, and the facility's
/// certificate and key when it has them (registration connects without).
pub fn client_config(
    ca: &[CertificateDer<'static>],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The name to verify the gateway's certificate against: the host part of `addr`
/// (`HOST:PORT`, `[V6]:PORT`), an IP address or a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(server_name("127.0.0.1:7443").unwrap().to_str(), "127.0.0.1");
        assert_eq!(server_name("[::1]:7443").unwrap().to_str(), "::1");
        assert_eq!(
            server_name("gate.example.bc.ca:7443").unwrap().to_str(),
            "gate.example.bc.ca"
        );
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn pem_errors_are_clear() {
        assert!(matches!(
            certificates_from_pem(b"nothing"),
            Err(TlsError::Pem("certificate"))
        ));
        assert!(matches!(
            private_key_from_pem(b"nothing"),
            Err(TlsError::Pem("private key"))
        ));
    }
}
