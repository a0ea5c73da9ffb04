//! Registration, the client's side (DESIGN 3.6): make a key pair and a certificate
//! signing request, send them with the one-time code over TLS (the gateway is
//! authenticated by HNGard's CA; the client has no certificate yet), and receive the
//! certificate and the envelope master key.

use std::time::Duration;

use zeroize::Zeroizing;

use super::Credential;
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
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ca(why) => write!(f, "the CA certificate: {why}"),
            Self::Connect(e) => write!(f, "{e}"),
            Self::Refused(r) => write!(f, "HNGard refused the registration: {r}"),
            Self::Protocol(why) => write!(f, "registration failed: {why}"),
            Self::Key(why) => write!(f, "key or certificate: {why}"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// A new key pair and a certificate signing request for `facility`, DER.
fn key_and_csr(facility: &str) -> Result<(rcgen::KeyPair, Vec<u8>), RegisterError> {
    let key_pair = rcgen::KeyPair::generate().map_err(|e| RegisterError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, facility);
    let csr = params
        .serialize_request(&key_pair)
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
    let config = tls::client_config(&parts.ca, Some((parts.chain, parts.key)))
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    let (key_pair, csr) = key_and_csr(&current.facility)?;
    let mut last = RegisterError::Protocol("no gateway is configured".into());
    for gateway in gateways {
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
        let answer = tokio::time::timeout(timeout, exchange)
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
            private_key_pem: Zeroizing::new(key_pair.serialize_pem()),
            ca_pem: current.ca_pem.clone(),
        };
        let parts = renewed
            .tls_parts()
            .map_err(|e| RegisterError::Key(e.to_string()))?;
        tls::client_config(&parts.ca, Some((parts.chain, parts.key)))
            .map_err(|e| RegisterError::Key(e.to_string()))?;
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
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| RegisterError::Protocol("no answer from the gateway in time".into()))??;
    let (certificate_pem, ca_pem, key_id, key) = match answer {
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
    let credential = Credential {
        facility: facility.to_owned(),
        key: MasterKey::new(key_id, *key),
        certificate_pem,
        private_key_pem: Zeroizing::new(key_pair.serialize_pem()),
        ca_pem,
    };
    // The certificate must be usable with our key: rustls checks they match.
    let parts = credential
        .tls_parts()
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    tls::client_config(&parts.ca, Some((parts.chain, parts.key)))
        .map_err(|e| RegisterError::Key(e.to_string()))?;
    Ok(credential)
}
