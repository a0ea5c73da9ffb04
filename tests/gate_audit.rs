//! The gateway's duplicate window (Volume 5, 2.4.8) and audit journal, end to end over
//! TLS: what a run leaves in the journal, that it never holds a message body, and that
//! retention is enforced.

mod common;

use std::time::{Duration, Instant};

use common::{FACILITY, System, get};
use hnapi::client::Client;
use hnapi::gard::{AuditFilter, AuditKind, AuditRecord, Gard};

const GATE_TOML: &str = "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n\
    audit_retention_days = 1\n\
    [[route]]\napplication = \"HNSIM-ECHO\"\ndestination = \"sim\"\nduplicate_window_secs = 60\n\
    [[route]]\napplication = \"RAIEND-PYR-RL\"\ndestination = \"sim\"\n";

const PHN: &str = "9029274643";

fn request(application: &str, sender: &str, control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|{sender}|{FACILITY}|{application}|BC0003000|20261123120000|TRAIN96|R03|{control}|D|2.3\r\
         PID||{PHN}^^^BC^PH||SMITH^JOHN\r"
    )
    .into_bytes()
}

/// The journal rows the filter selects, once at least `n` are there (within 5 s).
fn rows(gard: &Gard, filter: &AuditFilter, n: usize) -> Vec<AuditRecord> {
    let started = Instant::now();
    loop {
        let rows = gard.audit(filter).unwrap();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} of {n} rows: {rows:?}",
            rows.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn duplicates_are_answered_ae_and_everything_is_journaled_without_phi() {
    let system = System::start_with("gate-audit", Some(GATE_TOML));
    let client = Client::open_file(&system.client_config()).unwrap();
    let send = |m: &[u8]| client.send_receive(m, None).unwrap().bytes;

    let control = format!("DUP{}", hnapi::hl7::new_control_id());
    let first = send(&request("HNSIM-ECHO", "LAB", &control));
    assert_eq!(get(&first, "MSA-1"), "AA");
    // The same MSH-10, MSH-4 and MSH-3 again: AE from HNGATE, not passed on.
    let again = send(&request("HNSIM-ECHO", "LAB", &control));
    assert_eq!(get(&again, "MSH-3"), "HNGATE");
    assert_eq!(get(&again, "MSA-1"), "AE");
    assert_eq!(get(&again, "MSA-2"), control);
    assert!(
        get(&again, "MSA-3").starts_with("HNPS009E "),
        "{}",
        get(&again, "MSA-3")
    );
    // Another sending application with the same control id is another transaction.
    assert_eq!(
        get(&send(&request("HNSIM-ECHO", "PHARM", &control)), "MSA-1"),
        "AA"
    );
    // A route without the check passes repeats on.
    let plain = format!("P{}", hnapi::hl7::new_control_id());
    for _ in 0..2 {
        let answer = send(&request("RAIEND-PYR-RL", "LAB", &plain));
        assert_ne!(get(&answer, "MSH-3"), "HNGATE");
    }
    // No route; and MSH-4 spoofed.
    let lost = format!("L{}", hnapi::hl7::new_control_id());
    assert!(get(&send(&request("NO-SUCH-APP", "LAB", &lost)), "MSA-3").starts_with("HNPS005E"));
    let spoofed = String::from_utf8(request("HNSIM-ECHO", "LAB", "SPOOF1"))
        .unwrap()
        .replacen(FACILITY, "BC99999999", 1);
    assert!(get(&send(spoofed.as_bytes()), "MSA-3").starts_with("VLDT008E"));

    let gard = Gard::open(&system.gard_dir()).unwrap();
    let all = rows(
        &gard,
        &AuditFilter {
            kind: Some(AuditKind::Transaction),
            ..AuditFilter::default()
        },
        7,
    );
    let by_control =
        |c: &str| -> Vec<&AuditRecord> { all.iter().filter(|r| r.control_id == c).collect() };
    let dup = by_control(&control);
    assert_eq!(dup.len(), 3, "{dup:?}");
    assert_eq!(dup[0].outcome, "AA");
    assert_eq!(dup[0].route, "HNSIM-ECHO");
    assert_eq!(dup[0].destination, "sim");
    assert_eq!(dup[0].facility, FACILITY);
    assert_eq!(dup[0].sending_application, "LAB");
    assert_eq!(dup[0].message_type, "R03");
    assert!(dup[0].request_bytes > 50 && dup[0].answer_bytes > 50);
    assert!(dup[0].peer.starts_with("127.0.0.1:"));
    assert_eq!(
        (dup[1].outcome.as_str(), dup[1].code.as_str()),
        ("AE", "HNPS009E")
    );
    assert_eq!(dup[2].sending_application, "PHARM");
    let lost_rows = by_control(&lost);
    assert_eq!(lost_rows[0].outcome, "AR");
    assert_eq!(lost_rows[0].code, "HNPS005E");
    assert_eq!(lost_rows[0].route, "", "no route matched");

    // The security event of the spoofed MSH-4.
    let security = rows(
        &gard,
        &AuditFilter {
            kind: Some(AuditKind::Security),
            ..AuditFilter::default()
        },
        1,
    );
    assert!(
        security
            .iter()
            .any(|r| r.code == "msh4-mismatch" && r.facility == FACILITY && r.outcome == "refused"),
        "{security:?}"
    );
    // Filters: by outcome.
    let ar = gard
        .audit(&AuditFilter {
            outcome: Some("AR".into()),
            ..AuditFilter::default()
        })
        .unwrap();
    assert!(
        ar.iter().all(|r| r.outcome == "AR") && ar.len() >= 2,
        "{ar:?}"
    );

    // Never a message body, a name or a PHN.
    for r in gard.audit(&AuditFilter::default()).unwrap() {
        let text = format!("{r:?}");
        assert!(!text.contains(PHN) && !text.contains("SMITH"), "{text}");
    }

    // The CLI shows the same journal.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hnsecure"))
        .args(["gard", "--dir"])
        .arg(system.gard_dir())
        .args(["audit", "--outcome", "AE", "--tsv"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&control) && text.contains("HNPS009E"),
        "{text}"
    );
}

#[test]
fn audit_retention_is_enforced_at_start() {
    let system = System::start_with("gate-audit-retention", Some(GATE_TOML));
    let gard = Gard::open(&system.gard_dir()).unwrap();
    let old = AuditRecord {
        at: jiff::Timestamp::now() - jiff::SignedDuration::from_hours(50),
        kind: AuditKind::Transaction,
        facility: FACILITY.into(),
        peer: String::new(),
        sending_application: "OLD".into(),
        control_id: "OLD1".into(),
        message_type: "R03".into(),
        route: String::new(),
        destination: String::new(),
        outcome: "AA".into(),
        code: String::new(),
        latency_ms: 1,
        request_bytes: 1,
        answer_bytes: 1,
        detail: String::new(),
    };
    gard.record_audit(&[old]).unwrap();
    let recent = AuditRecord {
        at: jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2),
        control_id: "RECENT1".into(),
        ..gard.audit(&AuditFilter::default()).unwrap()[0].clone()
    };
    gard.record_audit(&[recent]).unwrap();
    // The sandbox's registrations are journaled too (security rows, recent): only the
    // transactions are counted here.
    let transactions = AuditFilter {
        kind: Some(AuditKind::Transaction),
        ..AuditFilter::default()
    };
    assert_eq!(gard.audit(&transactions).unwrap().len(), 2);
    // Another gateway on the directory, with audit_retention_days = 1, deletes what is
    // older at its start.
    let config_path = system.dir.join("gate-b.toml");
    std::fs::write(&config_path, GATE_TOML).unwrap();
    let config = hnapi::gate::GateConfig::from_file(&config_path).unwrap();
    let gate = system
        .runtime
        .block_on(hnapi::gate::Gate::bind(config))
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = system.runtime.spawn(gate.run(async {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    loop {
        let ids: Vec<String> = gard
            .audit(&transactions)
            .unwrap()
            .into_iter()
            .map(|r| r.control_id)
            .collect();
        if ids == ["RECENT1"] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{ids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = stop.send(());
    system.runtime.block_on(running).unwrap().unwrap();
}
