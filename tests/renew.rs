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

/// Waits (at most 5 s) until the journal holds `n` rows of live connections closed because
/// their credential was superseded.
fn superseded_rows(system: &System, n: usize) {
    let gard = Gard::open(&system.gard_dir()).unwrap();
    let started = std::time::Instant::now();
    loop {
        let rows = gard
            .audit(&AuditFilter {
                kind: Some(AuditKind::Security),
                ..AuditFilter::default()
            })
            .unwrap();
        let found = rows
            .iter()
            .filter(|r| r.code == "superseded" && r.facility == FACILITY)
            .count();
        if found >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{found} of {n} live connections closed after 5 s: {rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn registering_again_closes_the_live_connections_of_the_old_credential() {
    let system = System::start("reregister");
    let old = Client::open_file(&system.client_config()).unwrap();
    assert_eq!(
        get(&old.send_receive(&echo(), None).unwrap().bytes, "MSA-1"),
        "AA"
    );
    // The facility registers again (a new key pair, a new envelope key), into another
    // file: the running client keeps only the old credential.
    let gard = Gard::open(&system.gard_dir()).unwrap();
    let code = gard.new_code(FACILITY, Duration::from_secs(600)).unwrap();
    let credential = system
        .runtime
        .block_on(hnapi::client::register(
            &system.addr(),
            FACILITY,
            &code,
            &gard.ca_pem().unwrap(),
            Duration::from_secs(10),
        ))
        .unwrap();
    std::fs::copy(system.credential(), system.dir.join("old-credential.toml")).unwrap();
    credential.write(&system.credential()).unwrap();
    let old_config = system.dir.join("old-client.toml");
    std::fs::write(
        &old_config,
        std::fs::read_to_string(system.client_config())
            .unwrap()
            .replace("credential.toml", "old-credential.toml"),
    )
    .unwrap();
    // The running client's live connection, made with the old credential, is closed
    // within 5 s. It keeps the envelope key it read (a new key needs a restart, and
    // says so in its log), so it is refused from then on, as the old file is.
    superseded_rows(&system, 1);
    let answer = old.send_receive(&echo(), None).unwrap();
    assert_eq!(answer.network_error, Some(NetworkCode::Txfr029E));
    let stale = Client::open_file(&old_config).unwrap();
    let answer = stale.send_receive(&echo(), None).unwrap();
    assert_eq!(answer.network_error, Some(NetworkCode::Txfr029E));
    // Restarted, it uses the new credential.
    let restarted = Client::open_file(&system.client_config()).unwrap();
    let answer = restarted.send_receive(&echo(), None).unwrap().bytes;
    assert_eq!(
        get(&answer, "MSA-1"),
        "AA",
        "{}",
        String::from_utf8_lossy(&answer)
    );
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

    // The running client's connection holds the old certificate: the gateway closes it
    // within seconds (journaled), and on its next one the client uses the new file.
    superseded_rows(&system, 1);
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

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// `hnsecure client renew --config CONFIG` under a shell's `umask`.
#[cfg(unix)]
fn renew_with_umask(umask: &str, config: &std::path::Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask {umask} && exec \"$0\" client renew --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_hnsecure"))
        .arg(config)
        .output()
        .unwrap()
}

#[cfg(unix)]
#[test]
fn renewal_refuses_a_folder_others_can_write_and_writes_mode_0600_under_any_umask() {
    let system = System::start("renew-modes");
    let config = system.client_config();
    let credential = system.credential();
    let before = std::fs::read(&credential).unwrap();

    // A folder other users can write: refused before anything is renewed.
    set_mode(&system.dir, 0o777);
    let out = renew_with_umask("022", &config);
    set_mode(&system.dir, 0o700);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} is a folder other users can write to (mode 777)",
            system.dir.display()
        )),
        "{err}"
    );
    assert!(!err.contains("rewritten"), "{err}");
    assert_eq!(
        std::fs::read(&credential).unwrap(),
        before,
        "nothing changed"
    );

    // A credential other users can read is refused as well, unless client.toml allows it.
    set_mode(&credential, 0o644);
    let out = renew_with_umask("022", &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} is readable by other users (mode 644)",
            credential.display()
        )),
        "{err}"
    );
    let allowing = system.dir.join("allowing.toml");
    std::fs::write(
        &allowing,
        std::fs::read_to_string(&config).unwrap() + "credential_readable_by_others = true\n",
    )
    .unwrap();

    // Renewed under umask 000 (the new file would be 0666 if made the ordinary way) and
    // under umask 277 (0400, unwritable): the credential is 0600 either way, and says so.
    let mut seen = vec![before];
    for (umask, config) in [("000", &allowing), ("277", &config)] {
        let out = renew_with_umask(umask, config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "umask {umask}: {err}");
        assert!(err.contains("rewritten (mode 0600)"), "{err}");
        assert_eq!(mode_of(&credential), 0o600, "umask {umask}");
        let now = std::fs::read(&credential).unwrap();
        assert!(!seen.contains(&now), "umask {umask}: a new certificate");
        seen.push(now);
        Credential::read(&credential).unwrap();
    }
    // No temporary file is left in the folder.
    let left: Vec<_> = std::fs::read_dir(&system.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
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
