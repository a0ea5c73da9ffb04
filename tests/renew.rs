//! Certificate renewal without a new registration: online (`hnsecure client renew`, over
//! the facility's authenticated connection) and by the operator (`hnsecure gard renew`
//! with a CSR the facility sent another way).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{FACILITY, System, get, request};
use hnapi::client::{Client, Credential};
use hnapi::gard::{AuditFilter, AuditKind, Gard};
use hnapi::hl7::NetworkCode;

fn hnsecure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hnsecure"))
}

fn echo() -> Vec<u8> {
    request("HNSIM-ECHO", "R03", "")
}

#[test]
fn a_facility_renews_online_and_running_clients_pick_it_up() {
    let system = System::start("renew");
    let config = system.client_config();
    let before = Credential::read(&system.credential()).unwrap();
    std::fs::copy(system.credential(), system.dir.join("old-credential.toml")).unwrap();
    let running = Client::open_file(&config).unwrap();
    assert_eq!(
        get(&running.send_receive(&echo(), None).unwrap().bytes, "MSA-1"),
        "AA"
    );

    let out = hnsecure()
        .args(["client", "renew", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = Credential::read(&system.credential()).unwrap();
    assert_ne!(after.certificate_pem, before.certificate_pem);
    assert_ne!(
        *after.private_key_pem, *before.private_key_pem,
        "a new key pair"
    );
    assert_eq!(after.key.id(), before.key.id(), "the envelope key stays");
    assert_eq!(after.key.as_bytes(), before.key.as_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(system.credential())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The running client keeps its connection, and on its next one uses the new file.
    assert_eq!(
        get(&running.send_receive(&echo(), None).unwrap().bytes, "MSA-1"),
        "AA"
    );
    system.runtime.block_on(running.core().close());
    let answer = running.send_receive(&echo(), None).unwrap();
    assert_eq!(
        answer.network_error,
        None,
        "{:?}",
        String::from_utf8_lossy(&answer.bytes)
    );
    assert_eq!(get(&answer.bytes, "MSA-1"), "AA");

    // The old certificate is refused for new connections.
    let old_config = system.dir.join("old-client.toml");
    std::fs::write(
        &old_config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("credential.toml", "old-credential.toml"),
    )
    .unwrap();
    let old = Client::open_file(&old_config).unwrap();
    let answer = old.send_receive(&echo(), None).unwrap();
    assert_eq!(answer.network_error, Some(NetworkCode::Txfr029E));

    // Journaled as a security event.
    let gard = Gard::open(&system.gard_dir()).unwrap();
    let started = std::time::Instant::now();
    while !gard
        .audit(&AuditFilter {
            kind: Some(AuditKind::Security),
            ..AuditFilter::default()
        })
        .unwrap()
        .iter()
        .any(|r| r.code == "renewed" && r.facility == FACILITY)
    {
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
    }

    // A revoked facility cannot renew.
    gard.revoke(FACILITY).unwrap();
    let out = hnsecure()
        .args(["client", "renew", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("renewal failed"), "{err}");
}

#[test]
fn the_operator_renews_from_a_csr() {
    let system = System::start("renew-offline");
    let current = Credential::read(&system.credential()).unwrap();
    // The facility makes a key pair and a CSR, and sends the CSR (PEM) to the operator.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, FACILITY);
    let csr = params.serialize_request(&key).unwrap();
    let csr_path = system.dir.join("request.csr");
    std::fs::write(&csr_path, csr.pem().unwrap()).unwrap();
    let cert_path = system.dir.join("renewed.pem");
    let out = hnsecure()
        .args(["gard", "--dir"])
        .arg(system.gard_dir())
        .args(["renew", FACILITY, "--csr"])
        .arg(&csr_path)
        .arg("--out")
        .arg(&cert_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid until"), "{stdout}");
    // The facility puts it in its credential: it works, with the same envelope key.
    let renewed = Credential {
        certificate_pem: std::fs::read_to_string(&cert_path).unwrap(),
        private_key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
        ..current
    };
    renewed.write(&system.credential()).unwrap();
    let client = Client::open_file(&system.client_config()).unwrap();
    let answer = client.send_receive(&echo(), None).unwrap();
    assert_eq!(answer.network_error, None);
    assert_eq!(get(&answer.bytes, "MSA-1"), "AA");

    let journal = Gard::open(&system.gard_dir())
        .unwrap()
        .audit(&AuditFilter::default())
        .unwrap();
    assert!(
        journal
            .iter()
            .any(|r| r.code == "renewed" && r.detail.contains("by the operator")),
        "{journal:?}"
    );

    // A CSR that is not one, and an unknown facility, are refused clearly.
    std::fs::write(
        &csr_path,
        "-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    let out = hnsecure()
        .args(["gard", "--dir"])
        .arg(system.gard_dir())
        .args(["renew", FACILITY, "--csr"])
        .arg(&csr_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = hnsecure()
        .args(["gard", "--dir"])
        .arg(system.gard_dir())
        .args(["renew", "BC12345678", "--csr"])
        .arg(&csr_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BC12345678"));
}
