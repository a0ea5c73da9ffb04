//! Registration, the client's side (DESIGN 3.6): make a key pair and a certificate
//! signing request, send them with the one-time code over TLS (the gateway is
//! authenticated by HNGard's CA; the client has no certificate yet), and receive the
//! certificate and the envelope master key.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use super::Credential;
use super::credential::pkcs8_pem;
use crate::envelope::MasterKey;
use crate::transport::{self, ConnectError, Frame, Refusal, read_frame, tls, write_frame};

/// Why registration failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegisterError {
    /// The CA file holds no usable certificate.
    Ca(String),
    /// The gateway could not be reached or its certificate is not HNGard's.
    Connect(ConnectError),
    /// HNGard refused: a wrong, used or expired code, too many attempts, a revoked facility.
    Refused(Refusal),
    /// The gateway answered something unexpected, or nothing in time.
    Protocol(String),
    /// The key pair or the signing request could not be made, or the certificate received
    /// does not fit the key.
    Key(String),
    /// The gateway's answer is not what HNGard issues, so it is not stored: a CA other
    /// than the one given, a certificate that is not from that CA, not for this facility
    /// or not for client authentication, or an envelope key that is all one byte.
    /// (A peer holding a stolen gateway key could send such an answer.)
    Untrusted(String),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ca(why) => write!(f, "the CA certificate: {why}"),
            Self::Connect(e) => write!(f, "{e}"),
            Self::Refused(r) => write!(f, "HNGard refused the registration: {r}"),
            Self::Protocol(why) => write!(f, "registration failed: {why}"),
            Self::Key(why) => write!(f, "key or certificate: {why}"),
            Self::Untrusted(why) => write!(
                f,
                "the gateway's answer was refused and nothing was stored: {why}"
            ),
        }
    }
}

impl std::error::Error for RegisterError {}

/// A new key pair and a certificate signing request for `facility`, DER. The key pair's
/// PKCS#8 copy is wiped when it is dropped (ring's own copy, inside it, is not).
fn key_and_csr(facility: &str) -> Result<(Zeroizing<rcgen::KeyPair>, Vec<u8>), RegisterError> {
    let key_pair =
        Zeroizing::new(rcgen::KeyPair::generate().map_err(|e| RegisterError::Key(e.to_string()))?);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, facility);
    let csr = params
        .serialize_request(&*key_pair)
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    Ok((key_pair, csr.der().to_vec()))
}

/// Renews the certificate of `current` — before it expires, without a registration
/// code — at the first of `gateways` that answers: makes a new key pair and a signing
/// request, sends it over a connection authenticated with the current certificate, and
/// returns the credential with the new certificate and key (the envelope key stays).
/// Write it where the old one was: running clients pick it up on their next connection.
pub async fn renew(
    current: &Credential,
    gateways: &[String],
    timeout: Duration,
) -> Result<Credential, RegisterError> {
    let parts = current
        .tls_parts()
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    let ca = parts.ca;
    let config = tls::client_config(&ca, Some((parts.chain, parts.key)))
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    let (key_pair, csr) = key_and_csr(&current.facility)?;
    let mut last = RegisterError::Protocol("no gateway is configured".into());
    for gateway in gateways {
        // One deadline for each gateway's connect, handshake and exchange together.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = match transport::connect(gateway, config.clone(), timeout).await {
            Ok(stream) => stream,
            Err(e) => {
                last = RegisterError::Connect(e);
                continue;
            }
        };
        let exchange = async {
            let read = |e: transport::FrameError| RegisterError::Protocol(e.to_string());
            match read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
                .await
                .map_err(read)?
            {
                Some(Frame::Accepted) => {}
                Some(Frame::Refused { reason, .. }) => return Err(RegisterError::Refused(reason)),
                other => {
                    return Err(RegisterError::Protocol(format!(
                        "unexpected greeting {other:?}"
                    )));
                }
            }
            write_frame(&mut stream, &Frame::RenewRequest { csr: csr.clone() })
                .await
                .map_err(|e| RegisterError::Protocol(e.to_string()))?;
            read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
                .await
                .map_err(read)
        };
        let answer = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| RegisterError::Protocol("no answer from the gateway in time".into()))??;
        let certificate_pem = match answer {
            Some(Frame::RenewResponse { certificate_pem }) => certificate_pem,
            Some(Frame::Refused { reason, .. }) => return Err(RegisterError::Refused(reason)),
            other => {
                return Err(RegisterError::Protocol(format!(
                    "unexpected answer {other:?}"
                )));
            }
        };
        let renewed = Credential {
            facility: current.facility.clone(),
            key: current.key.clone(),
            certificate_pem,
            private_key_pem: pkcs8_pem(key_pair.serialized_der()),
            ca_pem: current.ca_pem.clone(),
        };
        issued_by(&renewed.certificate_pem, &ca, &current.facility)?;
        fits_key(&renewed)?;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        return Ok(renewed);
    }
    Err(last)
}

/// Registers `facility` with the one-time `code` at the gateway `gate` (`HOST:PORT`),
/// trusting only the CA in `ca_pem`, within `timeout`.
pub async fn register(
    gate: &str,
    facility: &str,
    code: &str,
    ca_pem: &str,
    timeout: Duration,
) -> Result<Credential, RegisterError> {
    let ca = tls::certificates_from_pem(ca_pem.as_bytes())
        .map_err(|e| RegisterError::Ca(e.to_string()))?;
    let (key_pair, csr) = key_and_csr(facility)?;

    let config = tls::client_config(&ca, None).map_err(|e| RegisterError::Ca(e.to_string()))?;
    // One deadline for the connect, the handshake and the exchange together.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = transport::connect(gate, config, timeout)
        .await
        .map_err(RegisterError::Connect)?;
    let request = Frame::RegisterRequest {
        facility: facility.to_owned(),
        code: Zeroizing::new(code.to_owned()),
        csr,
    };
    let exchange = async {
        write_frame(&mut stream, &request)
            .await
            .map_err(|e| RegisterError::Protocol(e.to_string()))?;
        read_frame(&mut stream, transport::DEFAULT_MAX_FRAME)
            .await
            .map_err(|e| RegisterError::Protocol(e.to_string()))
    };
    let answer = tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| RegisterError::Protocol("no answer from the gateway in time".into()))??;
    let (certificate_pem, returned_ca_pem, key_id, key) = match answer {
        Some(Frame::RegisterResponse {
            certificate_pem,
            ca_pem,
            key_id,
            key,
        }) => (certificate_pem, ca_pem, key_id, key),
        Some(Frame::Refused { reason, .. }) => return Err(RegisterError::Refused(reason)),
        Some(other) => {
            return Err(RegisterError::Protocol(format!(
                "unexpected answer {other:?}"
            )));
        }
        None => {
            return Err(RegisterError::Protocol(
                "the gateway closed the connection".into(),
            ));
        }
    };
    // `--ca` authenticated the connection only; what came through it is checked against
    // it before anything is kept: the same CA, a certificate from it for this facility and
    // for client authentication, and a key that is not all one byte.
    let returned_ca = tls::certificates_from_pem(returned_ca_pem.as_bytes()).map_err(|_| {
        RegisterError::Untrusted("the CA certificate it returned cannot be read".into())
    })?;
    if returned_ca != ca {
        return Err(RegisterError::Untrusted(
            "the CA certificate it returned is not the one given (--ca)".into(),
        ));
    }
    issued_by(&certificate_pem, &ca, facility)?;
    if key.iter().all(|&b| b == key[0]) {
        return Err(RegisterError::Untrusted(
            "the envelope key it returned is one byte repeated, not a random key".into(),
        ));
    }
    let credential = Credential {
        facility: facility.to_owned(),
        key: MasterKey::new(key_id, *key),
        certificate_pem,
        private_key_pem: pkcs8_pem(key_pair.serialized_der()),
        ca_pem: ca_pem.to_owned(),
    };
    fits_key(&credential)?;
    Ok(credential)
}

/// The certificate must be usable with our key: rustls checks they match.
fn fits_key(credential: &Credential) -> Result<(), RegisterError> {
    let parts = credential
        .tls_parts()
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    tls::client_config(&parts.ca, Some((parts.chain, parts.key)))
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    Ok(())
}

/// Checks that `certificate_pem` is what HNGard issues to `facility`: a chain to `ca`,
/// valid now, for client authentication (webpki's check, as the gateway makes it), with
/// the one subject CN `facility` and an extended key usage naming clientAuth (webpki
/// accepts a certificate without one; HNGard always writes it).
fn issued_by(
    certificate_pem: &str,
    ca: &[CertificateDer<'static>],
    facility: &str,
) -> Result<(), RegisterError> {
    let untrusted = |why: String| RegisterError::Untrusted(why);
    let chain = tls::certificates_from_pem(certificate_pem.as_bytes())
        .map_err(|_| untrusted("the certificate it returned cannot be read".into()))?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(untrusted("it returned no certificate".into()));
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(|e| RegisterError::Ca(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tls::provider(),
    )
    .build()
    .map_err(|e| RegisterError::Ca(e.to_string()))?;
    verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map_err(|e| {
            untrusted(format!(
                "the certificate it returned is not a client certificate from the CA given: {e}"
            ))
        })?;
    let (_, cert) = X509Certificate::from_der(end_entity)
        .map_err(|_| untrusted("the certificate it returned cannot be read".into()))?;
    let names: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap_or(""))
        .collect();
    if names != [facility] {
        return Err(untrusted(format!(
            "the certificate it returned names {names:?}, not facility {facility:?}"
        )));
    }
    let client_auth = matches!(
        cert.extended_key_usage(),
        Ok(Some(eku)) if eku.value.client_auth
    );
    if !client_auth {
        return Err(untrusted(
            "the certificate it returned is not marked for client authentication (extended key usage clientAuth)"
                .into(),
        ));
    }
    Ok(())
}
