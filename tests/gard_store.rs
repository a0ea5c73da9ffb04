//! The store behaviours of `common_store` on the SQLite store, and what the audit
//! journal and duplicate window look like through [`Gard`] on SQLite directories.

mod common_store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hnapi::gard::{
    AuditFilter, AuditKind, AuditRecord, DuplicateKey, Gard, InitOptions, SqliteStore, Store,
};
use jiff::{SignedDuration, Timestamp};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "hnsecure-gard-store-{name}-{}-{:016x}",
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

fn sqlite(name: &str) -> (TempDir, SqliteStore) {
    let tmp = TempDir::new(name);
    let store = SqliteStore::create(&tmp.0.join("gard.db")).unwrap();
    (tmp, store)
}

#[test]
fn sqlite_store_keeps_the_directory() {
    let (_tmp, store) = sqlite("directory");
    common_store::directory(&store);
}

#[test]
fn sqlite_store_keeps_what_servers_serve() {
    let (_tmp, store) = sqlite("serves");
    common_store::serves(&store);
}

#[test]
fn sqlite_store_counts_failed_registrations() {
    let (_tmp, store) = sqlite("failures");
    common_store::failures(&store);
}

#[test]
fn sqlite_store_renews_certificates() {
    let (_tmp, store) = sqlite("renewal");
    common_store::renewal(&store);
}

#[test]
fn sqlite_store_keeps_the_audit_journal() {
    let (_tmp, store) = sqlite("audit");
    common_store::audit(&store);
}

#[test]
fn sqlite_store_keeps_the_duplicate_window() {
    let (_tmp, store) = sqlite("duplicates");
    common_store::duplicates(&store);
}

#[test]
fn sqlite_stores_on_one_file_never_both_find_a_key_new() {
    let (tmp, a) = sqlite("race");
    let b = SqliteStore::open(&tmp.0.join("gard.db")).unwrap();
    common_store::duplicate_race(Arc::new(a), Arc::new(b));
}

#[test]
fn sqlite_journal_survives_reopening() {
    let (tmp, store) = sqlite("reopen");
    let record = common_store::record(1_800_000_000, "BC1", "AA", "C1");
    store.append_audit(std::slice::from_ref(&record)).unwrap();
    drop(store);
    let store = SqliteStore::open(&tmp.0.join("gard.db")).unwrap();
    assert_eq!(store.audit(&AuditFilter::default()).unwrap(), [record]);
}

fn gard(tmp: &TempDir) -> Gard {
    Gard::init(&tmp.0.join("gard"), &InitOptions::default()).unwrap()
}

fn key(control_id: &str) -> DuplicateKey {
    DuplicateKey {
        control_id: control_id.to_owned(),
        facility: "BC00000098".to_owned(),
        application: "LABAPP".to_owned(),
    }
}

#[test]
fn gard_duplicates_within_the_window_are_reported_once_recorded() {
    let tmp = TempDir::new("gard-dup");
    let gard = gard(&tmp);
    let window = Duration::from_secs(600);
    assert!(!gard.check_duplicate(&key("C1"), window).unwrap());
    assert!(gard.check_duplicate(&key("C1"), window).unwrap());
    assert!(!gard.check_duplicate(&key("C2"), window).unwrap());
    // With a window that has already passed, the same key is new again.
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !gard
            .check_duplicate(&key("C1"), Duration::from_millis(10))
            .unwrap()
    );
    assert!(gard.check_duplicate(&key("C1"), window).unwrap());
    // A window too long to represent holds everything ever recorded.
    assert!(gard.check_duplicate(&key("C2"), Duration::MAX).unwrap());

    // Pruning with a window forgets what is older than it, and nothing else.
    assert_eq!(gard.prune_duplicates(window).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(20));
    assert!(!gard.check_duplicate(&key("C3"), window).unwrap());
    assert_eq!(
        gard.prune_duplicates(Duration::from_millis(10)).unwrap(),
        2,
        "C1 and C2, not the fresh C3"
    );
    assert!(!gard.check_duplicate(&key("C1"), window).unwrap());
    assert!(gard.check_duplicate(&key("C3"), window).unwrap());
}

#[test]
fn gard_two_directories_handles_share_the_duplicate_window_under_a_race() {
    let tmp = TempDir::new("gard-race");
    let a = Arc::new(gard(&tmp));
    let b = Arc::new(Gard::open(&tmp.0.join("gard")).unwrap());
    let window = Duration::from_secs(600);
    assert!(!a.check_duplicate(&key("SEEN-BY-A"), window).unwrap());
    assert!(b.check_duplicate(&key("SEEN-BY-A"), window).unwrap());

    // Both handles, two threads each, the same 50 keys at once: each key is new once.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = [a.clone(), b.clone(), a, b]
        .into_iter()
        .map(|gard| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..50)
                    .filter(|i| {
                        !gard
                            .check_duplicate(&key(&format!("K{i}")), window)
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut new: Vec<i32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    new.sort_unstable();
    assert_eq!(new, (0..50).collect::<Vec<_>>());
}

fn transaction(at: Timestamp, facility: &str, outcome: &str) -> AuditRecord {
    AuditRecord {
        at,
        kind: AuditKind::Transaction,
        facility: facility.to_owned(),
        peer: "127.0.0.1:40000".to_owned(),
        sending_application: "LABAPP".to_owned(),
        control_id: format!("{facility}-{}", at.as_millisecond()),
        message_type: "R03".to_owned(),
        route: "*".to_owned(),
        destination: "sim".to_owned(),
        outcome: outcome.to_owned(),
        code: String::new(),
        latency_ms: 3,
        request_bytes: 700,
        answer_bytes: 900,
        detail: String::new(),
    }
}

#[test]
fn gard_audit_records_read_back_filtered_and_pruned_by_retention() {
    let tmp = TempDir::new("gard-audit");
    let gard = gard(&tmp);
    let admin = Gard::open(&tmp.0.join("gard")).unwrap();
    // Stores keep times to the microsecond.
    let now = Timestamp::now().round(jiff::Unit::Microsecond).unwrap();
    let hours_ago = |h: i64| now - SignedDuration::from_hours(h);
    let records = vec![
        transaction(hours_ago(50), "BC1", "AA"),
        transaction(hours_ago(30), "BC2", "AR"),
        transaction(hours_ago(2), "BC1", "AE"),
        transaction(hours_ago(1), "BC2", "AA"),
    ];
    let generation = gard.generation().unwrap();
    gard.record_audit(&records).unwrap();
    assert_eq!(gard.generation().unwrap(), generation);

    // Another handle on the directory (the CLI's) reads what the gateway wrote.
    let read = |filter: AuditFilter| admin.audit(&filter).unwrap();
    assert_eq!(read(AuditFilter::default()), records);
    assert_eq!(
        read(AuditFilter {
            since: Some(hours_ago(3)),
            ..AuditFilter::default()
        }),
        records[2..]
    );
    assert_eq!(
        read(AuditFilter {
            facility: Some("BC2".to_owned()),
            outcome: Some("AR".to_owned()),
            ..AuditFilter::default()
        }),
        records[1..2]
    );
    assert_eq!(
        read(AuditFilter {
            limit: Some(3),
            ..AuditFilter::default()
        }),
        records[1..]
    );
    assert!(
        read(AuditFilter {
            kind: Some(AuditKind::Security),
            ..AuditFilter::default()
        })
        .is_empty()
    );

    // Keep one day: the 50- and 30-hour-old rows go.
    assert_eq!(gard.prune_audit(Duration::from_secs(24 * 3600)).unwrap(), 2);
    assert_eq!(read(AuditFilter::default()), records[2..]);
    assert_eq!(gard.prune_audit(Duration::MAX).unwrap(), 0);
}
