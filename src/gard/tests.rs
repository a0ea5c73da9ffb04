//! The directory's behaviour through its API, on real SQLite files in temporary
//! directories.

use std::fs;
use std::net::IpAddr;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// A directory removed when dropped.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> Self {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "hnsecure-gard-{name}-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(random)
        ));
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    /// A path inside, not yet made.
    fn sub(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn new_gard(name: &str) -> (TempDir, Gard) {
    let tmp = TempDir::new(name);
    let gard = Gard::init(&tmp.sub("gard"), &InitOptions::default()).unwrap();
    (tmp, gard)
}

fn csr() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn gard_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Gard>();
    shared::<Arc<Gard>>();
}

#[test]
fn gard_init_makes_every_file_with_private_modes() {
    let tmp = TempDir::new("init");
    let dir = tmp.sub("gard");
    let gard = Gard::init(&dir, &InitOptions::default()).unwrap();
    assert_eq!(gard.dir(), dir);
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        for (name, _) in DIRECTORY_FILES {
            let expected = if name.ends_with(".pem") { 0o644 } else { 0o600 };
            assert_eq!(mode(&dir.join(name)), expected, "{name}");
        }
        // SQLite derives the mode of its WAL files from the database.
        for side in ["gard.db-wal", "gard.db-shm"] {
            if dir.join(side).exists() {
                assert_eq!(mode(&dir.join(side)), 0o600, "{side}");
            }
        }
    }
    // Windows: every private file is owned by the current user, with a protected access
    // control list holding that user alone.
    #[cfg(windows)]
    for (name, _) in DIRECTORY_FILES.iter().filter(|(n, _)| !n.ends_with(".pem")) {
        let file = fs::File::open(dir.join(name)).unwrap();
        crate::ffi::windows_acl::check_owner_only(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(fs::read(dir.join("storage.key")).unwrap().len(), 32);
    assert!(
        gard.ca_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let fingerprint = gard.ca_fingerprint().unwrap();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");

    // The CA is a CA with ten years; its key is ECDSA P-256.
    let ca = der(&gard.ca_pem().unwrap());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
    assert!(ca.is_ca());
    let years = ca.validity().not_after.timestamp() - Timestamp::now().as_second();
    assert!((3650 * 86400..=3654 * 86400).contains(&years), "{years}");
    assert_eq!(
        ca.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
}

#[test]
fn gard_init_refuses_an_initialised_directory() {
    let (tmp, _gard) = new_gard("reinit");
    let e = Gard::init(&tmp.sub("gard"), &InitOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, GardError::AlreadyInitialised { .. }), "{e}");
    assert!(e.to_string().contains("already initialised"), "{e}");
    // Nothing was replaced: the directory still opens.
    Gard::open(&tmp.sub("gard")).unwrap();
}

#[cfg(unix)]
#[test]
fn gard_init_takes_an_existing_empty_directory() {
    let tmp = TempDir::new("existing");
    fs::set_permissions(&tmp.0, fs::Permissions::from_mode(0o755)).unwrap();
    Gard::init(&tmp.0, &InitOptions::default()).unwrap();
    assert_eq!(mode(&tmp.0), 0o700);
}

#[test]
fn gard_init_with_a_bad_name_makes_nothing() {
    let tmp = TempDir::new("badsan");
    let dir = tmp.sub("gard");
    let options = InitOptions {
        subject_alt_names: vec!["not a name".to_owned()],
    };
    let e = Gard::init(&dir, &options).err().unwrap();
    assert!(matches!(e, GardError::InvalidSubjectAltName(_)), "{e}");
    assert!(!dir.exists());
}

#[test]
fn gard_open_of_an_empty_directory_says_it_is_not_initialised() {
    let tmp = TempDir::new("empty");
    let e = Gard::open(&tmp.0).err().unwrap();
    assert!(matches!(e, GardError::NotInitialised { .. }));
    let text = e.to_string();
    assert!(text.contains("is not an HNGard directory"), "{text}");
    assert!(text.contains(&tmp.0.display().to_string()), "{text}");
    assert!(matches!(
        Gard::open(&tmp.sub("missing")),
        Err(GardError::NotInitialised { .. })
    ));
}

#[cfg(unix)]
#[test]
fn gard_open_refuses_a_storage_key_others_can_read() {
    let (tmp, _gard) = new_gard("perm");
    let key = tmp.sub("gard").join("storage.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Gard::open(&tmp.sub("gard")).err().unwrap();
    assert!(matches!(e, GardError::InsecurePermissions { .. }), "{e}");
}

/// Windows: a storage key whose access control list lets Everyone (S-1-1-0) read it, or
/// change it, is refused, and the message names the account.
#[cfg(windows)]
#[test]
fn gard_open_refuses_a_storage_key_everyone_can_read_or_change() {
    use crate::ffi::windows_acl::{READ, WRITE, grant};
    let (tmp, _gard) = new_gard("acl");
    let key = tmp.sub("gard").join("storage.key");
    Gard::open(&tmp.sub("gard")).unwrap();
    for (mask, says) in [
        (READ, "S-1-1-0 may read it"),
        (WRITE, "S-1-1-0 may change it"),
    ] {
        grant(&key, "S-1-1-0", mask).unwrap();
        let e = Gard::open(&tmp.sub("gard")).err().unwrap();
        assert!(matches!(e, GardError::InsecureAccess { .. }), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn gard_facilities_are_added_listed_shown_and_revoked() {
    let (_tmp, gard) = new_gard("facilities");
    let code = gard
        .add_facility("BC00000098", "Royal Jubilee Lab", Role::Client, WEEK)
        .unwrap();
    gard.add_facility("BC00000001", "PharmaNet", Role::Server, WEEK)
        .unwrap();
    assert_eq!(code.len(), 19);

    let all = gard.facilities().unwrap();
    let ids: Vec<&str> = all.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["BC00000001", "BC00000098"]);
    let f = gard.facility("BC00000098").unwrap().unwrap();
    assert_eq!(f.name, "Royal Jubilee Lab");
    assert_eq!((f.role, f.status), (Role::Client, Status::Pending));
    assert!(f.registered_at.is_none() && f.cert_serial.is_none() && f.key_id.is_none());
    assert!((Timestamp::now().as_second() - f.created_at.as_second()).abs() < 60);
    let info = gard.code_info("BC00000098").unwrap().unwrap();
    assert!(info.used_at.is_none());
    let days = (info.expires_at.as_second() - info.created_at.as_second()) / 86400;
    assert_eq!(days, 7);
    assert_eq!(gard.facility("BC99999999").unwrap(), None);
    assert_eq!(gard.facility("lower").unwrap(), None);

    let e = gard
        .add_facility("BC00000098", "Again", Role::Client, WEEK)
        .err()
        .unwrap();
    assert!(matches!(e, GardError::FacilityExists(ref id) if id == "BC00000098"));
    assert!(matches!(
        gard.add_facility("bc1", "x", Role::Client, WEEK),
        Err(GardError::InvalidFacilityId(_))
    ));
    assert!(matches!(
        gard.add_facility(&"A".repeat(33), "x", Role::Client, WEEK),
        Err(GardError::InvalidFacilityId(_))
    ));
    for name in ["", "  ", "tab\there", &"n".repeat(101)] {
        assert!(matches!(
            gard.add_facility("BC2", name, Role::Client, WEEK),
            Err(GardError::InvalidName)
        ));
    }
    gard.add_facility("BC-2", &"é".repeat(100), Role::Client, WEEK)
        .unwrap();

    gard.revoke("BC00000098").unwrap();
    gard.revoke("BC00000098").unwrap();
    assert_eq!(
        gard.facility("BC00000098").unwrap().unwrap().status,
        Status::Revoked
    );
    assert_eq!(gard.revoked().unwrap(), ["BC00000098"]);
    assert!(matches!(
        gard.revoke("BC99999999"),
        Err(GardError::UnknownFacility(_))
    ));
    assert!(matches!(
        gard.new_code("BC99999999", WEEK),
        Err(GardError::UnknownFacility(_))
    ));
    assert!(matches!(
        gard.new_code("BC00000098", WEEK),
        Err(GardError::FacilityRevoked(_))
    ));
}

#[test]
fn gard_a_code_works_once() {
    let (_tmp, gard) = new_gard("once");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    // Any case, with or without dashes.
    let typed = code.replace('-', "").to_lowercase();
    let registration = gard
        .register("BC1", &typed, &csr(), ip("10.0.0.1"))
        .unwrap();
    assert_eq!(registration.key.id(), 1);
    assert!(gard.code_info("BC1").unwrap().unwrap().used_at.is_some());
    let f = gard.facility("BC1").unwrap().unwrap();
    assert_eq!((f.status, f.key_id), (Status::Active, Some(1)));
    assert!(f.registered_at.is_some() && f.cert_serial.is_some());

    assert!(matches!(
        gard.register("BC1", &code, &csr(), ip("10.0.0.2")),
        Err(RegisterError::Refused)
    ));
}

#[test]
fn gard_wrong_codes_and_unknown_facilities_are_refused_alike() {
    let (_tmp, gard) = new_gard("wrong");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    let other = gard
        .add_facility("BC2", "Other", Role::Client, WEEK)
        .unwrap();
    for (facility, code) in [
        ("BC1", "K7QM-3XPD-9RTW-HC2N"),
        ("BC1", other.as_str()),
        ("BC1", "not a code"),
        ("BC3", code.as_str()),
        ("bad id", code.as_str()),
    ] {
        assert!(
            matches!(
                gard.register(facility, code, &csr(), ip("10.0.0.1")),
                Err(RegisterError::Refused)
            ),
            "{facility} {code}"
        );
    }
    assert_eq!(
        gard.facility("BC1").unwrap().unwrap().status,
        Status::Pending
    );
}

#[test]
fn gard_an_expired_code_is_refused_as_expired() {
    let (_tmp, gard) = new_gard("expired");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, Duration::ZERO)
        .unwrap();
    assert!(matches!(
        gard.register("BC1", &code, &csr(), ip("10.0.0.1")),
        Err(RegisterError::Expired)
    ));
    // A new code replaces it and works.
    let code = gard.new_code("BC1", WEEK).unwrap();
    gard.register("BC1", &code, &csr(), ip("10.0.0.1")).unwrap();
}

#[test]
fn gard_five_failures_limit_even_the_right_code() {
    // From one address: the address is locked, even for the right code, which stays unused.
    let (_tmp, gard) = new_gard("limit-address");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    for _ in 0..5 {
        assert!(matches!(
            gard.register("BC1", "AAAA-AAAA-AAAA-AAAA", &csr(), ip("10.0.0.1")),
            Err(RegisterError::Refused)
        ));
    }
    assert!(matches!(
        gard.register("BC1", &code, &csr(), ip("10.0.0.1")),
        Err(RegisterError::RateLimited)
    ));
    assert!(gard.code_info("BC1").unwrap().unwrap().used_at.is_none());
}

#[test]
fn gard_failures_slow_a_facility_down_but_it_still_registers_from_a_clean_address() {
    let (_tmp, gard) = new_gard("limit");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    // An attacker guesses from one address until that address is locked ...
    for _ in 0..5 {
        assert!(matches!(
            gard.register("BC1", "AAAA-AAAA-AAAA-AAAA", &csr(), ip("10.0.0.1")),
            Err(RegisterError::Refused)
        ));
    }
    assert!(matches!(
        gard.register("BC1", &code, &csr(), ip("10.0.0.1")),
        Err(RegisterError::RateLimited)
    ));
    // ... and from others, each slowed down now.
    let started = std::time::Instant::now();
    assert!(matches!(
        gard.register("BC1", "AAAA-AAAA-AAAA-AAAA", &csr(), ip("10.0.0.2")),
        Err(RegisterError::Refused)
    ));
    assert!(started.elapsed() >= limit::FIRST_DELAY);
    // The code was not consumed by the refusals, and the facility itself registers from
    // a clean address (after a wait).
    assert!(gard.code_info("BC1").unwrap().unwrap().used_at.is_none());
    let started = std::time::Instant::now();
    gard.register("BC1", &code, &csr(), ip("192.0.2.9"))
        .unwrap();
    assert!(started.elapsed() >= limit::FIRST_DELAY * 2);

    // From one address, failures for many facilities lock the address.
    let code2 = gard
        .add_facility("BC2", "Other", Role::Client, WEEK)
        .unwrap();
    for i in 0..5 {
        let _ = gard.register(&format!("BC9{i}"), "x", &csr(), ip("192.0.2.1"));
    }
    assert!(matches!(
        gard.register("BC2", &code2, &csr(), ip("192.0.2.1")),
        Err(RegisterError::RateLimited)
    ));
    gard.register("BC2", &code2, &csr(), ip("192.0.2.2"))
        .unwrap();
}

#[test]
fn gard_an_address_lock_outlives_a_restart_and_is_shared_by_handles() {
    let (tmp, gard) = new_gard("limit-restart");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    for _ in 0..5 {
        let _ = gard.register("BC9", "AAAA-AAAA-AAAA-AAAA", &csr(), ip("2001:db8:5::1"));
    }
    let other = Gard::open(&tmp.sub("gard")).unwrap();
    drop(gard);
    // A restarted gateway (a new handle on the directory) still refuses the address,
    // its whole /64.
    let restarted = Gard::open(&tmp.sub("gard")).unwrap();
    for gard in [&restarted, &other] {
        assert!(matches!(
            gard.register("BC1", &code, &csr(), ip("2001:db8:5::77")),
            Err(RegisterError::RateLimited)
        ));
    }
    restarted
        .register("BC1", &code, &csr(), ip("2001:db8:6::1"))
        .unwrap();
}

#[test]
fn gard_a_revoked_facility_cannot_register() {
    let (_tmp, gard) = new_gard("revoked-register");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    gard.revoke("BC1").unwrap();
    assert!(matches!(
        gard.register("BC1", &code, &csr(), ip("10.0.0.1")),
        Err(RegisterError::Revoked)
    ));
    // A wrong code tells nothing about the facility.
    assert!(matches!(
        gard.register("BC1", "AAAA-AAAA-AAAA-AAAA", &csr(), ip("10.0.0.2")),
        Err(RegisterError::Refused)
    ));
}

#[test]
fn gard_a_bad_request_keeps_the_code() {
    let (_tmp, gard) = new_gard("badcsr");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    assert!(matches!(
        gard.register("BC1", &code, b"garbage", ip("10.0.0.1")),
        Err(RegisterError::BadCsr)
    ));
    gard.register("BC1", &code, &csr(), ip("10.0.0.1")).unwrap();
}

#[test]
fn gard_certificates_pass_rustls_and_authenticate_the_facility() {
    let (_tmp, gard) = new_gard("tls");
    let code = gard
        .add_facility("BC00000098", "Clinic", Role::Server, WEEK)
        .unwrap();
    let registration = gard
        .register("BC00000098", &code, &csr(), ip("::1"))
        .unwrap();
    assert_eq!(registration.ca_pem, gard.ca_pem().unwrap());

    let material = gard.server_material().unwrap();
    assert_eq!(material.chain.len(), 2);
    assert_eq!(material.chain[1], material.ca);
    assert_eq!(material.ca, der(&registration.ca_pem));

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(material.ca.clone()).unwrap();
    let roots = Arc::new(roots);

    // The client certificate, as the gateway's TLS layer checks it.
    let client_cert = der(&registration.certificate_pem);
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap()
        .verify_client_cert(&client_cert, &[], UnixTime::now())
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&client_cert).unwrap();
    let cn = parsed.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "BC00000098");

    // The gateway's certificate, as a client checks it.
    let server = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        server
            .verify_server_cert(
                &material.chain[0],
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap();
    }
    assert!(
        server
            .verify_server_cert(
                &material.chain[0],
                &[],
                &ServerName::try_from("gate.example").unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_err()
    );
    // The key is PKCS#8 and usable by rustls.
    rustls::crypto::ring::sign::any_supported_type(&material.key).unwrap();

    let peer = gard.authenticate(&client_cert).unwrap();
    assert_eq!(peer.facility, "BC00000098");
    assert_eq!(peer.role, Role::Server);
    assert_eq!(peer.key.id(), 1);
    assert_eq!(peer.key.as_bytes(), registration.key.as_bytes());
}

#[test]
fn gard_gateway_names_come_from_the_options() {
    let tmp = TempDir::new("sans");
    let options = InitOptions {
        subject_alt_names: vec!["gate.hlth.example".to_owned(), "192.0.2.10".to_owned()],
    };
    let gard = Gard::init(&tmp.sub("gard"), &options).unwrap();
    let material = gard.server_material().unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(material.ca.clone()).unwrap();
    let server = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    for name in ["gate.hlth.example", "192.0.2.10", "localhost"] {
        server
            .verify_server_cert(
                &material.chain[0],
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap();
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(&material.chain[0]).unwrap();
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
}

#[test]
fn gard_revocation_and_rotation_change_what_authenticates() {
    let (_tmp, gard) = new_gard("rotate");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    let first = gard.register("BC1", &code, &csr(), ip("10.0.0.1")).unwrap();
    let first_cert = der(&first.certificate_pem);
    assert_eq!(gard.authenticate(&first_cert).unwrap().key.id(), 1);

    // A new code alone changes nothing for the current certificate.
    let code = gard.new_code("BC1", WEEK).unwrap();
    assert_eq!(gard.authenticate(&first_cert).unwrap().key.id(), 1);
    assert_eq!(
        gard.facility("BC1").unwrap().unwrap().status,
        Status::Active
    );

    let second = gard.register("BC1", &code, &csr(), ip("10.0.0.1")).unwrap();
    assert_eq!(second.key.id(), 2);
    assert_ne!(second.key.as_bytes(), first.key.as_bytes());
    assert!(matches!(
        gard.authenticate(&first_cert),
        Err(AuthError::UnknownCertificate)
    ));
    let second_cert = der(&second.certificate_pem);
    let peer = gard.authenticate(&second_cert).unwrap();
    assert_eq!(
        (peer.key.id(), peer.key.as_bytes()),
        (2, second.key.as_bytes())
    );
    assert_eq!(gard.facility("BC1").unwrap().unwrap().key_id, Some(2));

    gard.revoke("BC1").unwrap();
    assert!(matches!(
        gard.authenticate(&second_cert),
        Err(AuthError::Revoked)
    ));
}

#[test]
fn gard_authenticate_refuses_strangers_pending_and_expired_facilities() {
    let (tmp, gard) = new_gard("auth");
    // A certificate of another CA, and bytes that are no certificate.
    let stranger = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
    assert!(matches!(
        gard.authenticate(stranger.cert.der()),
        Err(AuthError::UnknownCertificate)
    ));
    assert!(matches!(
        gard.authenticate(b"junk"),
        Err(AuthError::UnknownCertificate)
    ));

    // A certificate of this CA for a facility that never registered.
    gard.add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    let dir = tmp.sub("gard");
    let ca_key = fs::read_to_string(dir.join("ca.key")).unwrap();
    let issued = pki::issue_client(
        &gard.ca_pem().unwrap(),
        &ca_key,
        "BC1",
        &csr(),
        Timestamp::now(),
    )
    .ok()
    .unwrap();
    assert!(matches!(
        gard.authenticate(&der(&issued.pem)),
        Err(AuthError::NotRegistered)
    ));

    // A registered facility whose certificate has expired.
    let code = gard.new_code("BC1", WEEK).unwrap();
    let registration = gard.register("BC1", &code, &csr(), ip("10.0.0.1")).unwrap();
    let connection = rusqlite::Connection::open(dir.join("gard.db")).unwrap();
    connection
        .execute(
            "UPDATE facilities SET cert_not_after = ?1 WHERE id = 'BC1'",
            [Timestamp::now().as_second() - 1],
        )
        .unwrap();
    assert!(matches!(
        gard.authenticate(&der(&registration.certificate_pem)),
        Err(AuthError::Expired)
    ));
}

#[test]
fn gard_the_database_never_holds_an_envelope_key() {
    let (tmp, gard) = new_gard("plain");
    let mut keys = Vec::new();
    for id in ["BC1", "BC2"] {
        let code = gard
            .add_facility(id, "Searchable Clinic Name", Role::Client, WEEK)
            .unwrap();
        keys.push(
            gard.register(id, &code, &csr(), ip("10.0.0.1"))
                .unwrap()
                .key,
        );
        let code = gard.new_code(id, WEEK).unwrap();
        keys.push(
            gard.register(id, &code, &csr(), ip("10.0.0.1"))
                .unwrap()
                .key,
        );
    }
    let dir = tmp.sub("gard");
    let mut stored = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("gard.db")
        {
            stored.extend(fs::read(&path).unwrap());
        }
    }
    // The search does see what is stored in plain text ...
    assert!(stored.windows(22).any(|w| w == b"Searchable Clinic Name"));
    // ... and no key, nor its first half.
    for key in &keys {
        assert!(!stored.windows(32).any(|w| w == key.as_bytes()));
        assert!(!stored.windows(16).any(|w| w == &key.as_bytes()[..16]));
    }
}

#[test]
fn gard_generation_counts_every_change() {
    let (_tmp, gard) = new_gard("generation");
    let g0 = gard.generation().unwrap();
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    let g1 = gard.generation().unwrap();
    assert!(g1 > g0);
    gard.register("BC1", &code, &csr(), ip("10.0.0.1")).unwrap();
    let g2 = gard.generation().unwrap();
    assert!(g2 > g1);
    gard.new_code("BC1", WEEK).unwrap();
    let g3 = gard.generation().unwrap();
    assert!(g3 > g2);
    // A failed registration changes nothing.
    let _ = gard.register("BC1", "AAAA-AAAA-AAAA-AAAA", &csr(), ip("10.0.0.1"));
    assert_eq!(gard.generation().unwrap(), g3);
    assert!(gard.revoked().unwrap().is_empty());
    gard.revoke("BC1").unwrap();
    let g4 = gard.generation().unwrap();
    assert!(g4 > g3);
    assert_eq!(gard.revoked().unwrap(), ["BC1"]);
}

#[test]
fn gard_two_handles_see_each_others_changes() {
    let (tmp, gateway) = new_gard("two");
    let admin = Gard::open(&tmp.sub("gard")).unwrap();

    let code = admin
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    assert_eq!(gateway.generation().unwrap(), admin.generation().unwrap());
    let registration = gateway
        .register("BC1", &code, &csr(), ip("10.0.0.1"))
        .unwrap();
    assert_eq!(
        admin.facility("BC1").unwrap().unwrap().status,
        Status::Active
    );
    let cert = der(&registration.certificate_pem);
    let before = gateway.generation().unwrap();
    gateway.authenticate(&cert).unwrap();

    admin.revoke("BC1").unwrap();
    assert!(gateway.generation().unwrap() > before);
    assert_eq!(gateway.revoked().unwrap(), ["BC1"]);
    assert!(matches!(
        gateway.authenticate(&cert),
        Err(AuthError::Revoked)
    ));

    // Both at once, from two threads, against the one file.
    let gateway = Arc::new(gateway);
    let admin = Arc::new(admin);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let gard = if t == 0 {
                gateway.clone()
            } else {
                admin.clone()
            };
            std::thread::spawn(move || {
                for i in 0..10 {
                    gard.add_facility(&format!("T{t}-{i}"), "Busy", Role::Client, WEEK)
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(gateway.facilities().unwrap().len(), 21);
}

#[test]
fn gard_errors_name_the_file_or_facility_without_secrets() {
    let (tmp, gard) = new_gard("messages");
    let code = gard
        .add_facility("BC1", "Clinic", Role::Client, WEEK)
        .unwrap();
    let messages = [
        gard.add_facility("BC1", "x", Role::Client, WEEK)
            .err()
            .unwrap()
            .to_string(),
        gard.revoke("BC7").err().unwrap().to_string(),
        Gard::open(&tmp.0).err().unwrap().to_string(),
    ];
    assert_eq!(messages[0], "facility BC1 already exists");
    assert_eq!(messages[1], "there is no facility BC7 in the directory");
    for m in &messages {
        assert!(!m.contains(&code), "{m}");
    }
    fs::write(tmp.sub("gard").join("storage.key"), b"short").unwrap();
    let e = Gard::open(&tmp.sub("gard")).err().unwrap().to_string();
    assert!(e.ends_with("storage.key does not hold 32 bytes"), "{e}");
}

#[test]
fn gard_server_facilities_serve_the_names_recorded_for_them() {
    let (_tmp, gard) = new_gard("serves");
    let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let code = gard
        .add_facility_serving(
            "BC1",
            "Lab service",
            Role::Server,
            &names(&["HNAPI-LAB", "A LAB", "HNAPI-LAB"]),
            WEEK,
        )
        .unwrap();
    let f = gard.facility("BC1").unwrap().unwrap();
    assert_eq!(f.serves, ["A LAB", "HNAPI-LAB"], "ordered, without repeats");
    let registration = gard.register("BC1", &code, &csr(), ip("10.0.0.1")).unwrap();
    let cert = der(&registration.certificate_pem);
    assert_eq!(
        gard.authenticate(&cert).unwrap().serves,
        ["A LAB", "HNAPI-LAB"]
    );

    let before = gard.generation().unwrap();
    gard.set_serves("BC1", &names(&["HNAPI-DEMO"])).unwrap();
    assert!(gard.generation().unwrap() > before);
    assert_eq!(gard.authenticate(&cert).unwrap().serves, ["HNAPI-DEMO"]);
    gard.set_serves("BC1", &[]).unwrap();
    assert!(gard.authenticate(&cert).unwrap().serves.is_empty());
    assert!(gard.facilities().unwrap()[0].serves.is_empty());

    // A server added without names serves none; a client never serves.
    gard.add_facility("BC2", "Server", Role::Server, WEEK)
        .unwrap();
    assert!(gard.facility("BC2").unwrap().unwrap().serves.is_empty());
    gard.add_facility("BC3", "Client", Role::Client, WEEK)
        .unwrap();
    assert!(matches!(
        gard.add_facility_serving("BC4", "Client", Role::Client, &names(&["X"]), WEEK),
        Err(GardError::ServesForClient(id)) if id == "BC4"
    ));
    assert!(gard.facility("BC4").unwrap().is_none());
    let generation = gard.generation().unwrap();
    assert!(matches!(
        gard.set_serves("BC3", &names(&["X"])),
        Err(GardError::NotAServer(_))
    ));
    assert!(matches!(
        gard.set_serves("BC9", &names(&["X"])),
        Err(GardError::UnknownFacility(_))
    ));
    gard.revoke("BC2").unwrap();
    let generation_revoked = gard.generation().unwrap();
    assert!(generation_revoked > generation);
    assert!(matches!(
        gard.set_serves("BC2", &names(&["X"])),
        Err(GardError::FacilityRevoked(_))
    ));
    assert_eq!(gard.generation().unwrap(), generation_revoked);

    // Names: 1 to 64 printable ASCII, no HL7 delimiters, no control bytes.
    for bad in [
        "",
        " LEAD",
        "TRAIL ",
        "A|B",
        "A^B",
        "A~B",
        "A\\B",
        "A&B",
        "A\rB",
        "A\nB",
        "A\tB",
        "A\u{7f}",
        "É",
        &"A".repeat(65),
    ] {
        let e = gard.set_serves("BC1", &names(&[bad])).unwrap_err();
        assert!(matches!(e, GardError::InvalidApplicationName(_)), "{bad:?}");
        assert!(e.to_string().contains("receiving-application name"), "{e}");
        assert!(check_application_name(bad).is_err(), "{bad:?}");
    }
    for good in ["HNAPI-DEMO", "A", "TWO WORDS", "x.y_z#1", &"Z".repeat(64)] {
        check_application_name(good).unwrap();
    }
    let many: Vec<String> = (0..=MAX_SERVES).map(|i| format!("APP{i}")).collect();
    assert!(matches!(
        gard.set_serves("BC1", &many),
        Err(GardError::TooManyApplications(n)) if n == MAX_SERVES + 1
    ));
}
