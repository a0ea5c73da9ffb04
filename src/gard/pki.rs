//! The directory's certificates: its CA, the gateway's TLS certificate and the facilities'
//! client certificates, made with rcgen and read with x509-parser.

use std::net::IpAddr;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
};
use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::GardError;

/// The CA's validity.
const CA_YEARS: i64 = 10;
/// The validity of the gateway's and the facilities' certificates.
const LEAF_YEARS: i64 = 2;
/// Certificates start this long before they are made, for clocks a little behind.
const BACKDATE_SECONDS: i64 = 5 * 60;

/// A key pair and its certificate, both PEM.
pub(crate) struct Made {
    /// The private key, PKCS#8 PEM.
    pub key_pem: zeroize::Zeroizing<String>,
    /// The certificate, PEM.
    pub cert_pem: String,
}

/// A client certificate just signed.
pub(crate) struct Issued {
    /// The certificate, PEM.
    pub pem: String,
    /// Its serial, upper-case hex.
    pub serial: String,
    /// When it expires.
    pub not_after: Timestamp,
}

/// Why a client certificate was not issued.
pub(crate) enum IssueError {
    /// The request is unreadable, wrongly signed, or its key type is not accepted.
    BadCsr,
    /// The CA files or the signing failed.
    Gard(GardError),
}

impl From<GardError> for IssueError {
    fn from(e: GardError) -> Self {
        Self::Gard(e)
    }
}

/// The facility id and serial of a client certificate.
pub(crate) struct Identity {
    pub facility: String,
    pub serial: String,
}

fn years_after(at: Timestamp, years: i64) -> Result<Timestamp, GardError> {
    at.to_zoned_datetime(TimeZone::UTC)
        .checked_add(years.years())
        .map(|z| z.timestamp())
        .map_err(|_| GardError::Certificate(rcgen::Error::Time))
}

/// Sets the validity of `params` from a little before `now` to `years` after it.
fn set_validity(
    params: &mut CertificateParams,
    now: Timestamp,
    years: i64,
) -> Result<Timestamp, GardError> {
    let not_after = years_after(now, years)?;
    // rcgen takes the `time` crate's type, which x509-parser makes for us: no extra
    // dependency for two conversions.
    let time = |seconds: i64| {
        ASN1Time::from_timestamp(seconds)
            .map(|t| t.to_datetime())
            .map_err(|_| GardError::Certificate(rcgen::Error::Time))
    };
    params.not_before = time(now.as_second() - BACKDATE_SECONDS)?;
    params.not_after = time(not_after.as_second())?;
    Ok(not_after)
}

/// A random positive serial of 126 bits (RFC 5280 wants at least 64 bits of entropy).
fn random_serial() -> Result<SerialNumber, GardError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    // Top bit clear: positive, so DER adds no leading zero; next bit set: always 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "HNSecure");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A new CA: ECDSA P-256, 10 years, path length 0 (it signs only end certificates).
pub(crate) fn make_ca(now: Timestamp) -> Result<(Made, CertificateParams, KeyPair), GardError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("HNSecure HNGard CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, now, CA_YEARS)?;
    let cert = params.self_signed(&key)?;
    let made = Made {
        key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
        cert_pem: cert.pem(),
    };
    Ok((made, params, key))
}

/// Checks that `name` can go into the gateway certificate as a DNS name or IP address.
pub(crate) fn check_subject_alt_name(name: &str) -> Result<(), GardError> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name_ok = name.len() <= 253
        && match name.strip_prefix("*.") {
            Some(rest) => rest.split('.').all(label_ok),
            None => name.split('.').all(label_ok),
        };
    if name_ok {
        Ok(())
    } else {
        Err(GardError::InvalidSubjectAltName(name.to_owned()))
    }
}

/// The gateway's TLS server certificate, signed by the CA: 2 years, EKU serverAuth.
pub(crate) fn make_gate(
    issuer: &Issuer<'_, &KeyPair>,
    subject_alt_names: &[String],
    now: Timestamp,
) -> Result<Made, GardError> {
    for name in subject_alt_names {
        check_subject_alt_name(name)?;
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for name in subject_alt_names {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.clone());
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)
        .map_err(|_| GardError::InvalidSubjectAltName(subject_alt_names.join(",")))?;
    params.distinguished_name = name("HNSecure gateway");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, now, LEAF_YEARS)?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Made {
        key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
        cert_pem: cert.pem(),
    })
}

/// The public key of a certificate signing request, with the rcgen algorithm whose
/// SubjectPublicKeyInfo encoding matches it.
struct RequestKey {
    bits: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for RequestKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// The rcgen algorithm for an accepted key type: ECDSA P-256 or P-384, Ed25519, or RSA
/// of 2048 to 8192 bits (what rustls with ring verifies in a TLS handshake).
fn accepted_key(spki: &SubjectPublicKeyInfo<'_>) -> Option<&'static SignatureAlgorithm> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        if curve == OID_EC_P256 {
            Some(&rcgen::PKCS_ECDSA_P256_SHA256)
        } else if curve == OID_NIST_EC_P384 {
            Some(&rcgen::PKCS_ECDSA_P384_SHA384)
        } else {
            None
        }
    } else if *algorithm == OID_SIG_ED25519 {
        (spki.subject_public_key.data.len() == 32).then_some(&rcgen::PKCS_ED25519)
    } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return None;
        };
        let modulus = rsa.modulus;
        let start = modulus.iter().position(|&b| b != 0)?;
        let bits = (modulus.len() - start - 1) * 8 + (8 - modulus[start].leading_zeros() as usize);
        (2048..=8192)
            .contains(&bits)
            .then_some(&rcgen::PKCS_RSA_SHA256)
    } else {
        None
    }
}

/// Signs a client certificate for `facility` over the key of `csr_der`: subject
/// CN = facility id, a random serial, 2 years, EKU clientAuth only.
///
/// Of the request only its key is used (after checking its signature): names,
/// extensions and other wishes in it are ignored.
pub(crate) fn issue_client(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    facility: &str,
    csr_der: &[u8],
    now: Timestamp,
) -> Result<Issued, IssueError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|_| IssueError::BadCsr)?;
    if !rest.is_empty() {
        return Err(IssueError::BadCsr);
    }
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = accepted_key(spki).ok_or(IssueError::BadCsr)?;
    csr.verify_signature().map_err(|_| IssueError::BadCsr)?;
    let request_key = RequestKey {
        bits: spki.subject_public_key.data.to_vec(),
        algorithm,
    };

    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(GardError::from)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, &ca_key).map_err(GardError::from)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, facility);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let not_after = set_validity(&mut params, now, LEAF_YEARS)?;
    let cert = params
        .signed_by(&request_key, &issuer)
        .map_err(GardError::from)?;

    // What was signed must carry exactly the requested key, byte for byte.
    let (_, parsed) = X509Certificate::from_der(cert.der())
        .map_err(|_| GardError::Certificate(rcgen::Error::CouldNotParseCertificate))?;
    if parsed.public_key().raw != spki.raw {
        return Err(IssueError::BadCsr);
    }
    Ok(Issued {
        pem: cert.pem(),
        serial: hex(parsed.raw_serial(), ""),
        not_after,
    })
}

/// The facility id (the one subject CN) and serial of a certificate; `None` when it
/// cannot be read or has no single CN.
pub(crate) fn identity(cert_der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let mut names = cert.subject().iter_common_name();
    let facility = names.next()?.as_str().ok()?.to_owned();
    if names.next().is_some() {
        return None;
    }
    Some(Identity {
        facility,
        serial: hex(cert.raw_serial(), ""),
    })
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…`.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der), ":")
}

fn hex(bytes: &[u8], separator: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (Made, KeyPair) {
        let (made, _, key) = make_ca(Timestamp::now()).unwrap();
        (made, key)
    }

    fn csr(alg: &'static SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn gard_client_certificates_take_only_the_key_from_the_request() {
        let (ca, ca_key) = ca();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let issued = issue_client(
                &ca.cert_pem,
                &ca_key.serialize_pem(),
                "BC00000098",
                &csr(alg),
                Timestamp::now(),
            )
            .ok()
            .unwrap();
            let der = pem_der(&issued.pem);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert_eq!(cert.subject().to_string(), "CN=BC00000098");
            assert!(!cert.is_ca());
            let usage = cert.key_usage().unwrap().unwrap().value;
            assert!(usage.digital_signature() && !usage.key_cert_sign());
            assert!(cert.subject_alternative_name().unwrap().is_none());
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth && !eku.any);
            assert_eq!(cert.raw_serial().len(), 16);
            assert_eq!(issued.serial.len(), 32);
            let id = identity(&der).unwrap();
            assert_eq!(
                (id.facility.as_str(), id.serial),
                ("BC00000098", issued.serial)
            );
            let years = cert.validity().not_after.timestamp() - Timestamp::now().as_second();
            assert!((729 * 86400..=732 * 86400).contains(&years), "{years}");
        }
    }

    #[test]
    fn gard_bad_requests_are_refused() {
        let (ca, ca_key) = ca();
        let issue = |der: &[u8]| {
            issue_client(
                &ca.cert_pem,
                &ca_key.serialize_pem(),
                "BC1",
                der,
                Timestamp::now(),
            )
        };
        assert!(matches!(issue(b"not a csr"), Err(IssueError::BadCsr)));
        let mut good = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(issue(&good).is_ok());
        // A flipped bit in the signature.
        let last = good.len() - 1;
        good[last] ^= 1;
        assert!(matches!(issue(&good), Err(IssueError::BadCsr)));
        // Trailing bytes.
        let mut trailing = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
        trailing.push(0);
        assert!(matches!(issue(&trailing), Err(IssueError::BadCsr)));
    }

    #[test]
    fn gard_rsa_of_2048_bits_is_accepted_but_not_smaller_keys_or_p521() {
        let (ca, ca_key) = ca();
        let request = |name: &str| {
            let path = format!(
                "{}/tests/data/gard/{name}.csr.der",
                env!("CARGO_MANIFEST_DIR")
            );
            let der = std::fs::read(path).unwrap();
            issue_client(
                &ca.cert_pem,
                &ca_key.serialize_pem(),
                "BC1",
                &der,
                Timestamp::now(),
            )
        };
        for good in ["rsa2048", "rsa2048-ca-request"] {
            let issued = request(good).ok().unwrap();
            let der = pem_der(&issued.pem);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert!(!cert.is_ca(), "{good}");
            assert!(matches!(cert.public_key().parsed(), Ok(PublicKey::RSA(_))));
        }
        for bad in ["rsa1024", "p521"] {
            assert!(matches!(request(bad), Err(IssueError::BadCsr)), "{bad}");
        }
    }

    #[test]
    fn gard_subject_alt_names_are_dns_names_or_addresses() {
        for ok in [
            "gate.example.ca",
            "10.1.2.3",
            "fe80::1",
            "*.hlth.gov.bc.ca",
            "gate_1",
        ] {
            check_subject_alt_name(ok).unwrap();
        }
        for bad in ["", "a b", "gate..example", "-gate", "gate/1", "a.*.b"] {
            assert!(check_subject_alt_name(bad).is_err(), "{bad}");
        }
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
