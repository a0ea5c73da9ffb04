//! `hnsecure gard …` run as an operator runs it: the real binary on a real directory,
//! next to a library handle on the same directory (as a running gateway would hold).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use hnapi::gard::{AuditFilter, AuditKind, AuditRecord, AuthError, Gard, Status};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "hnsecure-gard-cli-{name}-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(random)
        ));
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hnsecure(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(args)
        .env_remove("HNSECURE_GARD_DIR")
        .output()
        .expect("the hnsecure binary runs")
}

fn gard(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["gard", "--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    hnsecure(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    stdout(o)
}

fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

/// `XXXX-XXXX-XXXX-XXXX` and a newline, nothing else.
fn assert_only_a_code(out: &str) -> String {
    let code = out.strip_suffix('\n').expect("one line");
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 4, "{out:?}");
    assert!(
        groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())),
        "{out:?}"
    );
    code.to_owned()
}

#[test]
fn init_makes_the_directory_and_refuses_to_make_it_twice() {
    let tmp = TempDir::new("init");
    let dir = tmp.0.join("gard");
    let out = ok(&gard(
        &dir,
        &["init", "--san", "gate.example", "--san", "192.0.2.1"],
    ));
    for name in [
        "gard.db",
        "ca.pem",
        "ca.key",
        "gate.pem",
        "gate.key",
        "storage.key",
    ] {
        let path = dir.join(name);
        assert!(path.is_file(), "{name}");
        assert!(out.contains(&path.display().to_string()), "{out}");
    }
    assert!(out.contains("gate.example, 192.0.2.1"), "{out}");
    let gard_handle = Gard::open(&dir).unwrap();
    let fingerprint = gard_handle.ca_fingerprint().unwrap();
    assert!(out.contains("fingerprint (SHA-256)"), "{out}");
    assert!(out.contains(&fingerprint), "{out}");

    let again = gard(&dir, &["init"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already initialised"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        Gard::open(&dir).unwrap().ca_fingerprint().unwrap(),
        fingerprint
    );
}

#[test]
fn add_list_show_code_and_revoke_work_on_a_directory_a_gateway_uses() {
    let tmp = TempDir::new("cycle");
    let dir = tmp.0.join("gard");
    ok(&gard(&dir, &["init"]));
    let gateway = Gard::open(&dir).unwrap();

    // add: the code alone on stdout, the explanation on stderr.
    let added = gard(&dir, &["add", "BC00000098", "--name", "Royal Jubilee Lab"]);
    let code = assert_only_a_code(&ok(&added));
    let told = stderr(&added);
    assert!(
        told.contains("BC00000098") && told.contains("works once, until"),
        "{told}"
    );
    assert!(!told.contains(&code), "{told}");
    // The suggested registration keeps the code off the command line.
    assert!(told.contains("--code-file code.txt"), "{told}");
    assert!(!told.contains("--code CODE"), "{told}");
    ok(&gard(
        &dir,
        &[
            "add",
            "BC00000001",
            "--name",
            "PharmaNet",
            "--role",
            "server",
            "--code-days",
            "2",
        ],
    ));

    let existing = gard(&dir, &["add", "BC00000098", "--name", "Again"]);
    assert_eq!(existing.status.code(), Some(1));
    assert!(
        stderr(&existing).contains("code BC00000098 > code.txt"),
        "{}",
        stderr(&existing)
    );

    // The printed code is the real one: the gateway registers the facility with it.
    let first = gateway
        .register("BC00000098", &code, &csr(), "10.0.0.1".parse().unwrap())
        .unwrap();

    let list = ok(&gard(&dir, &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "ROLE",
            "STATUS",
            "NAME",
            "REGISTERED",
            "CERT",
            "EXPIRES",
            "KEY",
            "SERVES"
        ]
    );
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&cells[..3], ["BC00000001", "server", "pending"], "{list}");
    assert_eq!(&cells[3..], ["PharmaNet", "-", "-", "-", "-"], "{list}");
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["BC00000098", "client", "active", "Royal", "Jubilee", "Lab"]
    );
    assert_eq!(cells[8], "1", "{list}");
    // Columns line up: every row starts its NAME where the header does.
    let name_at = lines[0].find("NAME").unwrap();
    assert_eq!(lines[1].find("PharmaNet"), Some(name_at));
    assert_eq!(lines[2].find("Royal"), Some(name_at));

    let shown = ok(&gard(&dir, &["show", "BC00000098"]));
    let serial = gateway
        .facility("BC00000098")
        .unwrap()
        .unwrap()
        .cert_serial
        .unwrap();
    for expected in [
        "Facility:          BC00000098",
        "Name:              Royal Jubilee Lab",
        "Role:              client",
        "Serves:            none (a client)",
        "Status:            active",
        "Envelope key id:   1",
        "Registration code: used ",
    ] {
        assert!(shown.contains(expected), "{expected} in\n{shown}");
    }
    assert!(
        shown.contains(&format!("Certificate:       serial {serial}, expires ")),
        "{shown}"
    );

    // code: a new code rotates the certificate and the key.
    let new_code = assert_only_a_code(&ok(&gard(
        &dir,
        &["code", "BC00000098", "--code-days", "1"],
    )));
    assert_ne!(new_code, code);
    let second = gateway
        .register("BC00000098", &new_code, &csr(), "10.0.0.1".parse().unwrap())
        .unwrap();
    assert_eq!(second.key.id(), 2);
    assert!(ok(&gard(&dir, &["show", "BC00000098"])).contains("Envelope key id:   2"));
    let old = CertificateDer::from_pem_slice(first.certificate_pem.as_bytes()).unwrap();
    assert!(matches!(
        gateway.authenticate(&old),
        Err(AuthError::UnknownCertificate)
    ));
    let cert = CertificateDer::from_pem_slice(second.certificate_pem.as_bytes()).unwrap();
    assert_eq!(gateway.authenticate(&cert).unwrap().key.id(), 2);

    // revoke: the gateway's handle refuses the certificate at once.
    let generation = gateway.generation().unwrap();
    let revoked = ok(&gard(&dir, &["revoke", "BC00000098"]));
    assert!(
        revoked.starts_with("Revoked facility BC00000098 (Royal Jubilee Lab)."),
        "{revoked}"
    );
    assert!(gateway.generation().unwrap() > generation);
    assert!(matches!(
        gateway.authenticate(&cert),
        Err(AuthError::Revoked)
    ));
    assert_eq!(gateway.revoked().unwrap(), ["BC00000098"]);
    assert_eq!(
        gateway.facility("BC00000098").unwrap().unwrap().status,
        Status::Revoked
    );
    let again = ok(&gard(&dir, &["revoke", "BC00000098"]));
    assert!(again.contains("already revoked"), "{again}");
    let refused = gard(&dir, &["code", "BC00000098"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("revoked"), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty());
}

#[test]
fn unknown_facilities_and_missing_directories_exit_1() {
    let tmp = TempDir::new("unknown");
    let dir = tmp.0.join("gard");
    let missing = gard(&dir, &["list"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("is not an HNGard directory"),
        "{}",
        stderr(&missing)
    );

    ok(&gard(&dir, &["init"]));
    let empty = gard(&dir, &["list"]);
    assert_eq!(ok(&empty), "");
    assert!(stderr(&empty).contains("No facilities yet"));
    for command in ["show", "revoke", "code"] {
        let o = gard(&dir, &[command, "BC7"]);
        assert_eq!(o.status.code(), Some(1), "{command}");
        assert!(
            stderr(&o).contains("there is no facility BC7"),
            "{command}: {}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty(), "{command}");
    }
}

#[test]
fn the_directory_can_come_from_the_environment() {
    let tmp = TempDir::new("env");
    let dir = tmp.0.join("gard");
    ok(&gard(&dir, &["init"]));
    let o = Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(["gard", "add", "BC1", "--name", "Clinic"])
        .env("HNSECURE_GARD_DIR", &dir)
        .output()
        .unwrap();
    assert_only_a_code(&ok(&o));
    assert!(Gard::open(&dir).unwrap().facility("BC1").unwrap().is_some());
}

#[test]
fn usage_errors_exit_2() {
    let tmp = TempDir::new("usage");
    let dir = tmp.0.join("gard");
    ok(&gard(&dir, &["init"]));
    let d = dir.to_str().unwrap();
    for args in [
        vec!["gard", "list"],
        vec!["gard", "--dir", d],
        vec!["gard", "--dir", d, "frobnicate"],
        vec!["gard", "--dir", d, "add", "BC1"],
        vec!["gard", "--dir", d, "add", "bc1", "--name", "Clinic"],
        vec!["gard", "--dir", d, "add", "BC1", "--name", ""],
        vec![
            "gard", "--dir", d, "add", "BC1", "--name", "Clinic", "--role", "boss",
        ],
        vec![
            "gard",
            "--dir",
            d,
            "add",
            "BC1",
            "--name",
            "Clinic",
            "--code-days",
            "0",
        ],
        vec!["gard", "--dir", d, "show"],
        vec!["gard", "--dir", d, "revoke", "BC 1"],
        vec![
            "gard",
            "--dir",
            &format!("{d}-other"),
            "init",
            "--san",
            "not a name",
        ],
    ] {
        let o = hnsecure(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}");
        assert!(!stderr(&o).is_empty(), "{args:?}");
    }
    // Nothing was added by the refused commands.
    assert!(Gard::open(&dir).unwrap().facilities().unwrap().is_empty());
    assert!(!Path::new(&format!("{d}-other")).exists());
}

fn audit_record(
    at: jiff::Timestamp,
    kind: AuditKind,
    facility: &str,
    outcome: &str,
    code: &str,
) -> AuditRecord {
    AuditRecord {
        at,
        kind,
        facility: facility.to_owned(),
        peer: "192.0.2.7:50123".to_owned(),
        sending_application: "LABAPP".to_owned(),
        control_id: format!("CTL{}", at.as_second()),
        message_type: "R46^Z26".to_owned(),
        route: "*".to_owned(),
        destination: "sim".to_owned(),
        outcome: outcome.to_owned(),
        code: code.to_owned(),
        latency_ms: 42,
        request_bytes: 1024,
        answer_bytes: 2048,
        detail: "a note\twith a tab".to_owned(),
    }
}

#[test]
fn audit_prints_the_journal_for_people_and_for_scripts() {
    let tmp = TempDir::new("audit");
    let dir = tmp.0.join("gard");
    ok(&gard(&dir, &["init"]));
    let gateway = Gard::open(&dir).unwrap();
    let empty = gard(&dir, &["audit"]);
    assert_eq!(ok(&empty), "");
    assert!(stderr(&empty).contains("No audit records match"));

    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    let hours_ago = |h: i64| now - jiff::SignedDuration::from_hours(h);
    let records = [
        audit_record(
            hours_ago(30),
            AuditKind::Transaction,
            "BC00000098",
            "AA",
            "",
        ),
        audit_record(
            hours_ago(3),
            AuditKind::Security,
            "",
            "refused",
            "certificate-refused",
        ),
        audit_record(
            hours_ago(1),
            AuditKind::Transaction,
            "BC00000098",
            "AR",
            "TXFR024E",
        ),
    ];
    gateway.record_audit(&records).unwrap();

    // For people: aligned columns, Pacific times with their offset, `-` for nothing.
    let table = ok(&gard(&dir, &["audit"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TIME",
            "KIND",
            "FACILITY",
            "PEER",
            "APPLICATION",
            "CONTROL-ID",
            "TYPE",
            "ROUTE",
            "DESTINATION",
            "OUTCOME",
            "CODE",
            "MS",
            "REQUEST",
            "ANSWER",
            "DETAIL"
        ]
    );
    let pacific = |t: jiff::Timestamp| {
        t.to_zoned_datetime(hnapi::hl7::pacific().clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    };
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            pacific(hours_ago(30)).as_str(),
            "transaction",
            "BC00000098",
            "192.0.2.7:50123",
            "LABAPP",
            &format!("CTL{}", hours_ago(30).as_second()),
            "R46^Z26",
            "*",
            "sim",
            "AA",
            "-",
            "42",
            "1024",
            "2048",
            "a",
            "note",
            "with",
            "a",
            "tab"
        ]
    );
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&cells[1..3], ["security", "-"], "{table}");
    assert_eq!(&cells[9..11], ["refused", "certificate-refused"], "{table}");
    for column in ["KIND", "OUTCOME", "DETAIL"] {
        let at = lines[0].find(column).unwrap();
        for line in &lines[1..] {
            assert_eq!(line.as_bytes()[at - 1], b' ', "{column} in {line}");
            assert_ne!(line.as_bytes()[at], b' ', "{column} in {line}");
        }
    }

    // Filters.
    let count = |args: &[&str]| {
        let mut all = vec!["audit", "--tsv"];
        all.extend_from_slice(args);
        ok(&gard(&dir, &all)).lines().count() - 1
    };
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&["--since", "2h"]), 1);
    assert_eq!(count(&["--since", "4h"]), 2);
    assert_eq!(count(&["--since", "2d"]), 3);
    let since = pacific(hours_ago(3));
    assert_eq!(count(&["--since", &since]), 2);
    assert_eq!(count(&["--facility", "BC00000098"]), 2);
    assert_eq!(count(&["--outcome", "AR"]), 1);
    assert_eq!(count(&["--outcome", "refused"]), 1);
    assert_eq!(count(&["--kind", "security"]), 1);
    assert_eq!(count(&["--kind", "transaction", "--outcome", "AA"]), 1);
    assert_eq!(count(&["--facility", "BC1"]), 0);

    // For scripts: a header, then one line per record, tabs only between cells.
    let tsv = ok(&gard(&dir, &["audit", "--tsv", "--limit", "2"]));
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(
        lines[0],
        "at\tkind\tfacility\tpeer\tsending_application\tcontrol_id\tmessage_type\troute\t\
         destination\toutcome\tcode\tlatency_ms\trequest_bytes\tanswer_bytes\tdetail"
    );
    assert_eq!(lines.len(), 3, "the newest two: {tsv}");
    let cells: Vec<&str> = lines[2].split('\t').collect();
    assert_eq!(cells.len(), 15, "{tsv}");
    assert_eq!(cells[0], pacific(hours_ago(1)));
    assert_eq!(
        cells[1..],
        [
            "transaction",
            "BC00000098",
            "192.0.2.7:50123",
            "LABAPP",
            &format!("CTL{}", hours_ago(1).as_second()),
            "R46^Z26",
            "*",
            "sim",
            "AR",
            "TXFR024E",
            "42",
            "1024",
            "2048",
            "a note\\twith a tab"
        ]
    );
    let cells: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!((cells[1], cells[2]), ("security", ""));

    // Bad arguments are usage errors and print nothing on standard output.
    for args in [
        &["audit", "--since", "yesterday"][..],
        &["audit", "--since", "-2h"],
        &["audit", "--outcome", "XX"],
        &["audit", "--kind", "other"],
        &["audit", "--limit", "0"],
        &["audit", "--facility", "bc1"],
    ] {
        let o = gard(&dir, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    let o = gard(&dir, &["audit", "--since", "yesterday"]);
    assert!(
        stderr(&o).contains("nor a span such as 30m, 2h or 7d"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn server_facilities_get_their_served_names_from_add_and_serves() {
    let tmp = TempDir::new("serves");
    let dir = tmp.0.join("gard");
    ok(&gard(&dir, &["init"]));
    let handle = Gard::open(&dir).unwrap();

    // --serves: space separated, repeated, or both.
    let added = gard(
        &dir,
        &[
            "add",
            "BC00000099",
            "--name",
            "Lab service",
            "--role",
            "server",
            "--serves",
            "HNAPI-LAB",
            "HNAPI-DEMO",
            "--serves",
            "TWO WORDS",
            "--code-days",
            "2",
        ],
    );
    assert_only_a_code(&ok(&added));
    assert!(
        stderr(&added).contains("It may serve HNAPI-DEMO, HNAPI-LAB, \"TWO WORDS\"."),
        "{}",
        stderr(&added)
    );
    assert_eq!(
        handle.facility("BC00000099").unwrap().unwrap().serves,
        ["HNAPI-DEMO", "HNAPI-LAB", "TWO WORDS"]
    );
    // A server without names is told how to give it some.
    let bare = gard(
        &dir,
        &["add", "BC00000002", "--name", "Bare", "--role", "server"],
    );
    ok(&bare);
    assert!(
        stderr(&bare).contains(&format!(
            "hnsecure gard --dir {} serves BC00000002 NAME",
            dir.display()
        )),
        "{}",
        stderr(&bare)
    );

    let list = ok(&gard(&dir, &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].ends_with("KEY  SERVES"), "{list}");
    assert!(lines[1].ends_with(" -"), "{list}");
    assert!(
        lines[2].ends_with(" HNAPI-DEMO,HNAPI-LAB,TWO WORDS"),
        "{list}"
    );
    let shown = ok(&gard(&dir, &["show", "BC00000099"]));
    assert!(
        shown.contains("Serves:            HNAPI-DEMO, HNAPI-LAB, \"TWO WORDS\"\n"),
        "{shown}"
    );
    assert!(ok(&gard(&dir, &["show", "BC00000002"])).contains("Serves:            none yet"),);

    // serves: replaces the list, moves the generation, is journaled.
    let generation = handle.generation().unwrap();
    let changed = ok(&gard(&dir, &["serves", "BC00000099", "HNAPI-DEMO"]));
    assert_eq!(
        changed,
        "Facility BC00000099 (Lab service) now serves HNAPI-DEMO.\n"
    );
    assert!(handle.generation().unwrap() > generation);
    assert_eq!(
        handle.facility("BC00000099").unwrap().unwrap().serves,
        ["HNAPI-DEMO"]
    );
    let journal = handle.audit(&AuditFilter::default()).unwrap();
    let last = journal.last().unwrap();
    assert_eq!(
        (last.kind, last.facility.as_str(), last.code.as_str()),
        (AuditKind::Security, "BC00000099", "serves-changed")
    );
    assert!(
        last.detail
            .contains("HNAPI-DEMO (before: HNAPI-DEMO, HNAPI-LAB"),
        "{}",
        last.detail
    );
    // Another facility serving the same name is pointed out.
    let shared = gard(&dir, &["serves", "BC00000002", "HNAPI-DEMO", "OTHER"]);
    ok(&shared);
    assert!(
        stderr(&shared).contains("facility BC00000099 also serves HNAPI-DEMO"),
        "{}",
        stderr(&shared)
    );
    let none = ok(&gard(&dir, &["serves", "BC00000002", "--none"]));
    assert!(none.ends_with("now serves nothing.\n"), "{none}");
    assert!(
        handle
            .facility("BC00000002")
            .unwrap()
            .unwrap()
            .serves
            .is_empty()
    );

    // Refusals: usage errors exit 2, what the directory refuses exits 1; nothing changes.
    for (args, code, says) in [
        (
            &["add", "BC3", "--name", "C", "--serves", "X"][..],
            2,
            "only for a server facility",
        ),
        (
            &[
                "add", "BC3", "--name", "C", "--role", "client", "--serves", "X",
            ],
            2,
            "only for a server facility",
        ),
        (
            &[
                "add", "BC3", "--name", "C", "--role", "server", "--serves", "A|B",
            ],
            2,
            "not a receiving-application name",
        ),
        (&["serves", "BC00000099", "A^B"], 2, "HL7 delimiters"),
        (
            &["serves", "BC00000099", ""],
            2,
            "not a receiving-application name",
        ),
        (&["serves", "BC00000099"], 2, "NAME"),
        (
            &["serves", "BC00000099", "X", "--none"],
            2,
            "cannot be used with",
        ),
        (&["serves", "BC00000098", "X"], 1, "no facility BC00000098"),
    ] {
        let o = gard(&dir, args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    assert!(handle.facility("BC3").unwrap().is_none());
    ok(&gard(&dir, &["add", "BC00000098", "--name", "Clinic"]));
    let o = gard(&dir, &["serves", "BC00000098", "X"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("role client"), "{}", stderr(&o));
    ok(&gard(&dir, &["revoke", "BC00000002"]));
    let o = gard(&dir, &["serves", "BC00000002", "X"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("revoked"), "{}", stderr(&o));
}

#[test]
fn audit_tsv_escapes_every_control_character() {
    let tmp = TempDir::new("tsv");
    let dir = tmp.0.join("gard");
    ok(&gard(&dir, &["init"]));
    let mut record = audit_record(
        jiff::Timestamp::now(),
        AuditKind::Security,
        "BC1",
        "refused",
        "x",
    );
    record.detail = "forged\nrow\there\r\u{1b}[31m\u{7f}\\end".to_owned();
    record.sending_application = "A\tB".to_owned();
    record.control_id = "\u{1}".to_owned();
    Gard::open(&dir).unwrap().record_audit(&[record]).unwrap();
    let tsv = ok(&gard(&dir, &["audit", "--tsv"]));
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.len(), 2, "one header, one row: {tsv:?}");
    let cells: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(cells.len(), 15, "{tsv:?}");
    assert_eq!(cells[4], "A\\tB");
    assert_eq!(cells[5], "\\x01");
    assert_eq!(cells[14], "forged\\nrow\\there\\r\\x1B[31m\\x7F\\\\end");
    assert!(
        !tsv.bytes()
            .any(|b| (b < 0x20 && b != b'\t' && b != b'\n') || b == 0x7f)
    );
}

/// A `hnsecure` daemon, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn register(addr: &str, dir: &Path, facility: &str, code_args: &[&str], stdin: &str) -> Output {
    let ca = dir.join("gard/ca.pem");
    let out = dir.join(format!("{facility}.toml"));
    let mut args = vec![
        "client",
        "register",
        "--gate",
        addr,
        "--facility",
        facility,
        "--ca",
        ca.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(code_args);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn client_register_reads_the_code_from_a_file_or_standard_input() {
    let tmp = TempDir::new("code-file");
    let dir = &tmp.0;
    ok(&gard(&dir.join("gard"), &["init"]));
    let mut codes = Vec::new();
    for id in ["BC1", "BC2", "BC3", "BC4"] {
        codes.push(assert_only_a_code(&ok(&gard(
            &dir.join("gard"),
            &["add", id, "--name", "Clinic"],
        ))));
    }
    std::fs::write(
        dir.join("gate.toml"),
        "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n\
         [[route]]\napplication = \"*\"\ndestination = \"sim\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(["gate", "--config", dir.join("gate.toml").to_str().unwrap()])
        .args(["--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _gate = Daemon(child);
    let addr = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("gate="))
        .unwrap_or_else(|| panic!("no gate= in {line:?}"))
        .to_owned();

    // From a file (a trailing newline and spaces are ignored).
    let file = dir.join("code.txt");
    std::fs::write(&file, format!("  {}\n", codes[0])).unwrap();
    let o = register(
        &addr,
        dir,
        "BC1",
        &["--code-file", file.to_str().unwrap()],
        "",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("facility = \"BC1\""), "{}", stdout(&o));
    // From standard input, either way; --code CODE still works.
    for (id, args, stdin) in [
        ("BC2", vec!["--code-file", "-"], format!("{}\n", codes[1])),
        ("BC3", vec!["--code", "-"], format!("{}\n", codes[2])),
        ("BC4", vec!["--code", codes[3].as_str()], String::new()),
    ] {
        let o = register(&addr, dir, id, &args, &stdin);
        assert_eq!(o.status.code(), Some(0), "{id}: {}", stderr(&o));
        assert!(dir.join(format!("{id}.toml")).is_file(), "{id}");
    }

    // Usage errors: no code, both ways at once, a missing file, an empty code.
    std::fs::write(dir.join("empty.txt"), "\n").unwrap();
    let empty = dir.join("empty.txt");
    for (args, says) in [
        (vec![], "--code"),
        (
            vec!["--code", "X", "--code-file", "code.txt"],
            "cannot be used with",
        ),
        (
            vec!["--code-file", "/nonexistent/code.txt"],
            "cannot read the code from /nonexistent/code.txt",
        ),
        (
            vec!["--code-file", empty.to_str().unwrap()],
            "the registration code is empty",
        ),
    ] {
        let o = register(&addr, dir, "BC9", &args, "");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}
