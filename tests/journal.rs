//! The journal loses nothing (issue 20): with `audit = "required"` a transaction's answer
//! leaves the gateway only once its row is committed, so a gateway killed mid-run leaves
//! a row for every request that got a receiver's answer, and none twice; a store that
//! fails mid-run makes the gateway answer every request, `HNPS013E` while the store is
//! down, and journal again by itself once it is back. On SQLite and on PostgreSQL (a
//! private server started by the test), against the real `hnsecure gate` process.

mod common;
mod common_pg;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FACILITY, Process, System, get};
use common_pg::Postgres;
use hnapi::client::Client;
use hnapi::gard::{AuditFilter, AuditKind, AuditRecord, Gard, InitOptions, Role, StoreConfig};

/// Senders, each with one request in flight.
const SENDERS: usize = 6;

/// A directory with a registered facility, and a gateway process on it.
struct Rig {
    dir: PathBuf,
    gard: PathBuf,
    gate: Option<Process>,
    addr: String,
    _system: Option<System>,
    pg: Option<Postgres>,
}

impl Rig {
    /// SQLite: the sandbox's directory and facility, and a gateway process of its own.
    fn sqlite(name: &str) -> Self {
        let system = System::start(name);
        let mut rig = Self {
            dir: system.dir.clone(),
            gard: system.gard_dir(),
            gate: None,
            addr: String::new(),
            _system: Some(system),
            pg: None,
        };
        rig.start_gate();
        rig
    }

    /// PostgreSQL: a directory in a private server; the facility registers through the
    /// gateway process.
    fn postgres(name: &str) -> Option<Self> {
        let pg = Postgres::start(name)?;
        let dir = common::temp_dir(name);
        let gard_dir = dir.join("gard");
        let store = StoreConfig::Postgres {
            url: pg.database("hngard_journal"),
            password_file: None,
        };
        let gard = Gard::init_with_store(&gard_dir, &InitOptions::default(), &store).unwrap();
        let code = gard
            .add_facility(
                FACILITY,
                "Victoria Clinic",
                Role::Client,
                Duration::from_secs(3600),
            )
            .unwrap();
        let mut rig = Self {
            dir,
            gard: gard_dir,
            gate: None,
            addr: String::new(),
            _system: None,
            pg: Some(pg),
        };
        rig.start_gate();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let credential = runtime
            .block_on(hnapi::client::register(
                &rig.addr,
                FACILITY,
                &code,
                &gard.ca_pem().unwrap(),
                Duration::from_secs(10),
            ))
            .unwrap();
        credential.write(&rig.dir.join("credential.toml")).unwrap();
        Some(rig)
    }

    fn start_gate(&mut self) {
        let config = self.dir.join("journal-gate.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ngard = \"{}\"\nfacility = \"HNGATE-J\"\n\
                 metrics = \"127.0.0.1:0\"\n\n\
                 [[route]]\napplication = \"HNSIM-ECHO\"\ndestination = \"sim\"\n",
                self.gard.display()
            ),
        )
        .unwrap();
        let gate = Process::gate(&config, &self.dir.join("journal-gate.log"));
        self.addr = gate.value("gate");
        self.gate = Some(gate);
    }

    fn client(&self) -> Client {
        let path = self
            .dir
            .join(format!("client-{}.toml", hnapi::hl7::new_control_id()));
        std::fs::write(
            &path,
            format!(
                "facility = \"{FACILITY}\"\ncredential = \"credential.toml\"\ngateways = [\"{}\"]\n\
                 timeout_secs = 10\nconnect_timeout_secs = 2\n",
                self.addr
            ),
        )
        .unwrap();
        Client::open_file(&path).unwrap()
    }

    fn metrics(&self) -> String {
        let addr = self.gate.as_ref().unwrap().metrics();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    /// The transaction rows of the journal, by control id.
    fn rows(&self) -> HashMap<String, Vec<AuditRecord>> {
        let gard = Gard::open(&self.gard).unwrap();
        let filter = AuditFilter {
            kind: Some(AuditKind::Transaction),
            facility: Some(FACILITY.to_owned()),
            ..AuditFilter::default()
        };
        let mut by_control: HashMap<String, Vec<AuditRecord>> = HashMap::new();
        for row in gard.audit(&filter).unwrap() {
            by_control
                .entry(row.control_id.clone())
                .or_default()
                .push(row);
        }
        by_control
    }

    fn security_rows(&self, code: &str) -> Vec<AuditRecord> {
        let gard = Gard::open(&self.gard).unwrap();
        let filter = AuditFilter {
            kind: Some(AuditKind::Security),
            ..AuditFilter::default()
        };
        gard.audit(&filter)
            .unwrap()
            .into_iter()
            .filter(|r| r.code == code)
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.gate.take());
        if self._system.is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What one request got.
#[derive(Clone, Debug)]
struct Sent {
    control: String,
    /// When it was sent, from the run's start.
    at: Duration,
    /// `AA` from the receiver (the simulator), or the answering component and the code.
    answer: Answer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Receiver,
    Ack { from: String, code: String },
}

fn echo(control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|{FACILITY}|HNSIM-ECHO|BC0003000|20261123120000||R03|{control}|D|2.3\rNTE|||journal\r"
    )
    .into_bytes()
}

/// Runs [`SENDERS`] senders for `run`, calling `meanwhile` with the run's start while
/// they send; returns every request and what it got.
fn under_load(rig: &Rig, run: Duration, meanwhile: impl FnOnce(Instant)) -> Vec<Sent> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| {
            let client = rig.client();
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let control = format!("J{n}X{i}X{}", hnapi::hl7::new_control_id());
                    let at = start.elapsed();
                    let answer = client.send_receive(&echo(&control), None).unwrap().bytes;
                    assert_eq!(
                        get(&answer, "MSA-2"),
                        control,
                        "the answer names its request"
                    );
                    let answer = if get(&answer, "MSA-1") == "AA" {
                        assert_eq!(get(&answer, "MSH-3"), "HNSIM-ECHO");
                        Answer::Receiver
                    } else {
                        Answer::Ack {
                            from: get(&answer, "MSH-3"),
                            code: get(&answer, "MSA-3").chars().take(8).collect(),
                        }
                    };
                    sent.lock().unwrap().push(Sent {
                        control,
                        at,
                        answer,
                    });
                }
            })
        })
        .collect();
    meanwhile(start);
    let left = run.saturating_sub(start.elapsed());
    std::thread::sleep(left);
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    Arc::try_unwrap(sent).unwrap().into_inner().unwrap()
}

/// Every request the receiver answered has exactly one row, with its facility and
/// outcome; no control id has two.
fn every_answered_request_has_one_row(rig: &Rig, sent: &[Sent]) -> usize {
    let rows = rig.rows();
    let mut answered = 0;
    for s in sent {
        let found = rows.get(&s.control).map_or(&[][..], Vec::as_slice);
        if s.answer == Answer::Receiver {
            answered += 1;
            assert_eq!(
                found.len(),
                1,
                "request {} was answered by the receiver: one row, not {found:?}",
                s.control
            );
            assert_eq!(found[0].facility, FACILITY);
            assert_eq!(found[0].outcome, "AA");
        } else {
            assert!(found.len() <= 1, "request {} has rows {found:?}", s.control);
        }
    }
    for (control, found) in &rows {
        assert!(found.len() == 1, "{control} journaled twice: {found:?}");
    }
    answered
}

/// Kills the gateway mid-run, while `busy` (a store slowed down for a moment, as a
/// slow disk or a long transaction elsewhere makes it) holds its journal's commits back.
fn killed_mid_run(rig: &mut Rig, busy: impl FnOnce() -> Box<dyn FnOnce()>) {
    let killed_at = Arc::new(Mutex::new(Duration::ZERO));
    let at = killed_at.clone();
    let mut gate = rig.gate.take().unwrap();
    let sent = under_load(rig, Duration::from_secs(3), |start| {
        std::thread::sleep(Duration::from_millis(1500));
        let done = busy();
        std::thread::sleep(Duration::from_millis(300));
        // SIGKILL: no flush, no goodbye.
        gate.child.kill().unwrap();
        *at.lock().unwrap() = start.elapsed();
        gate.child.wait().unwrap();
        done();
    });
    let killed = *killed_at.lock().unwrap();
    let before = sent.iter().filter(|s| s.answer == Answer::Receiver).count();
    assert!(before > 50, "traffic before the kill: {before}");
    assert!(
        sent.iter().any(|s| s.at > killed
            && matches!(&s.answer, Answer::Ack { from, code } if from == "HNAPI" && code == "TXFR024E")),
        "requests after the kill found no gateway"
    );
    let answered = every_answered_request_has_one_row(rig, &sent);
    eprintln!(
        "killed at {killed:?}: {answered} requests answered by the receiver, each with its row"
    );
}

#[test]
fn sqlite_a_gateway_killed_mid_run_leaves_a_row_for_every_answered_request() {
    let mut rig = Rig::sqlite("journal-kill");
    let db = rig.gard.join("gard.db");
    killed_mid_run(&mut rig, move || {
        // Another connection's write transaction holds the journal's commits back.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        Box::new(move || c.execute_batch("ROLLBACK").unwrap())
    });
}

#[test]
fn postgres_a_gateway_killed_mid_run_leaves_a_row_for_every_answered_request() {
    let Some(mut rig) = Rig::postgres("journal-kill-pg") else {
        return;
    };
    let pg = rig.pg.as_ref().unwrap();
    let mut client = pg.client("hngard_journal");
    killed_mid_run(&mut rig, move || {
        // A transaction elsewhere locks the journal's table for a moment.
        client
            .batch_execute("BEGIN; LOCK TABLE audit IN EXCLUSIVE MODE")
            .unwrap();
        Box::new(move || client.batch_execute("ROLLBACK").unwrap())
    });
}

/// Fails the store from `down` to `up` after the start, through `fail` and `mend`.
fn store_fails_mid_run(rig: &Rig, fail: impl FnOnce(), mend: impl FnOnce()) {
    // The store is down for 5.5 s: a SQLite commit waits up to 2 s for the lock before it
    // fails (JOURNAL_BUSY_TIMEOUT), and a loaded CI machine needs seconds more to show it.
    let (down, up) = (Duration::from_millis(1500), Duration::from_millis(7000));
    let mut gauge_down = String::new();
    let sent = under_load(rig, Duration::from_secs(10), |start| {
        std::thread::sleep(down.saturating_sub(start.elapsed()));
        fail();
        // The metrics say so while it is down.
        let seen = Instant::now();
        while !gauge_down.contains("hnsecure_gate_journal_available 0") {
            assert!(seen.elapsed() < Duration::from_secs(5), "{gauge_down}");
            std::thread::sleep(Duration::from_millis(100));
            gauge_down = rig.metrics();
        }
        std::thread::sleep(up.saturating_sub(start.elapsed()));
        mend();
    });
    let refused: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(&s.answer, Answer::Ack { from, code } if from == "HNGATE" && code == "HNPS013E"))
        .collect();
    let others: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.answer != Answer::Receiver && !refused.iter().any(|r| r.control == s.control))
        .collect();
    assert!(
        others.is_empty(),
        "every request is answered by the receiver or HNPS013E: {others:?}"
    );
    assert!(
        refused.len() > 10,
        "requests while the store was down: {}",
        refused.len()
    );
    assert!(
        refused
            .iter()
            .all(|s| s.at > down - Duration::from_millis(100)),
        "refused only once the store failed"
    );
    let after = sent
        .iter()
        .filter(|s| s.at > up + Duration::from_secs(1) && s.answer == Answer::Receiver)
        .count();
    assert!(after > 20, "served and journaled again after: {after}");
    let answered = every_answered_request_has_one_row(rig, &sent);
    // The outage has its row, written when the store came back.
    let outage = rig.security_rows("journal-unavailable");
    assert_eq!(outage.len(), 1, "{outage:?}");
    assert!(
        outage[0].detail.contains("HNPS013E"),
        "{}",
        outage[0].detail
    );
    assert!(
        rig.metrics().contains("hnsecure_gate_journal_available 1"),
        "available again"
    );
    assert!(
        rig.metrics()
            .contains("hnsecure_gate_refusals_total{reason=\"journal\"}"),
        "counted"
    );
    eprintln!(
        "{answered} answered by the receiver and journaled, {} answered HNPS013E while the store was down",
        refused.len()
    );
}

#[test]
fn sqlite_a_locked_store_is_answered_hnps013e_and_the_journal_resumes_by_itself() {
    let rig = Rig::sqlite("journal-locked");
    let db = rig.gard.join("gard.db");
    let holder: Arc<Mutex<Option<rusqlite::Connection>>> = Arc::new(Mutex::new(None));
    let (lock, unlock) = (holder.clone(), holder);
    store_fails_mid_run(
        &rig,
        move || {
            // Another process holding the database's write lock, as a stuck backup or
            // a long transaction would.
            let c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            c.execute_batch("BEGIN EXCLUSIVE").unwrap();
            *lock.lock().unwrap() = Some(c);
        },
        move || {
            let c = unlock.lock().unwrap().take().unwrap();
            c.execute_batch("ROLLBACK").unwrap();
        },
    );
}

#[test]
fn postgres_a_stopped_server_is_answered_hnps013e_and_the_journal_resumes_by_itself() {
    let Some(rig) = Rig::postgres("journal-pg-down") else {
        return;
    };
    let pg = rig.pg.as_ref().unwrap();
    store_fails_mid_run(&rig, || pg.stop(), || pg.restart());
}

/// `audit = "best-effort"` keeps today's behaviour: nothing waits for the journal, and a
/// locked store does not stop the traffic.
#[test]
fn best_effort_keeps_serving_while_the_store_is_locked() {
    let system = System::start("journal-best-effort");
    let config = system.dir.join("be-gate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ngard = \"{}\"\nfacility = \"HNGATE-J\"\naudit = \"best-effort\"\n\n\
             [[route]]\napplication = \"HNSIM-ECHO\"\ndestination = \"sim\"\n",
            system.gard_dir().display()
        ),
    )
    .unwrap();
    let gate = Process::gate(&config, &system.dir.join("be-gate.log"));
    let client = Client::open_file(&system.client_config_with(&[gate.value("gate")])).unwrap();
    let db = system.gard_dir().join("gard.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for i in 0..20 {
        let answer = client
            .send_receive(&echo(&format!("BE{i}")), None)
            .unwrap()
            .bytes;
        assert_eq!(get(&answer, "MSA-1"), "AA");
    }
    c.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn the_journal_settings_are_read_and_named_in_errors() {
    let dir = common::temp_dir("journal-config");
    let base = "listen = \"127.0.0.1:0\"\ngard = \"gard\"\nfacility = \"HNGATE01\"\n";
    let parse = |extra: &str| hnapi::gate::GateConfig::from_toml(&format!("{base}{extra}"), &dir);
    use hnapi::gate::{AuditMode, AuditSync};
    let default = parse("").unwrap();
    assert_eq!(default.audit, AuditMode::Required);
    assert_eq!(default.audit_sync, AuditSync::Normal);
    let chosen = parse("audit = \"best-effort\"\naudit_sync = \"full\"\n").unwrap();
    assert_eq!(chosen.audit, AuditMode::BestEffort);
    assert_eq!(chosen.audit_sync, AuditSync::Full);
    let e = parse("audit = \"sometimes\"\n").unwrap_err().to_string();
    assert!(e.contains("audit") && e.contains("best-effort"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
