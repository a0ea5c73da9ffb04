//! The gateway's side of the audit journal.
//!
//! One writer thread stores the records in HNGard's directory with group commit: it
//! takes every record ready at that moment, writes them in one database transaction (one
//! fsync at most), and then tells each waiting sender. Senders wait for their batch, not
//! for each other: while one batch commits, the next gathers.
//!
//! With `audit = "required"` (the default) a transaction's answer leaves only once its
//! row is committed ([`AuditWriter::commit`]). When a commit fails (disk full, database
//! locked or gone), the journal is marked unavailable: requests are answered AR
//! `HNPS013E` without being passed on ([`AuditWriter::available`]) and the writer tries
//! again every [`RETRY`], with a row that records the outage as its probe; the first
//! commit that succeeds makes the journal available again, by itself.
//!
//! With `audit = "best-effort"`, records are handed over and never waited for: when the
//! database falls [`QUEUE`] records behind or fails, records are dropped and counted
//! (and the log says so) rather than slowing the traffic.
//!
//! Security events of connections not yet authenticated (certificates refused,
//! registration attempts) are never waited for in either mode, so that a flood of them
//! cannot slow the gateway: [`AuditWriter::record`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::oneshot;

use super::config::AuditMode;
use crate::gard::{AuditRecord, Gard};

/// Records waiting for the writer, at most.
pub const QUEUE: usize = 10_000;
/// Records written in one database transaction, at most.
const BATCH: usize = 1_000;
/// How often an unavailable journal is tried again.
pub const RETRY: Duration = Duration::from_millis(500);
/// Records handed over without waiting that are kept, while the journal is unavailable,
/// to be written when it is back.
const KEEP_WHILE_DOWN: usize = 10_000;

/// Why a record was not committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// The commit failed (its error), or the queue was full.
    Failed(String),
    /// No answer from the writer within the time allowed.
    TimedOut,
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(why) => write!(f, "the audit journal could not be written: {why}"),
            Self::TimedOut => write!(f, "the audit journal did not commit in time"),
        }
    }
}

type Reply = oneshot::Sender<Result<(), String>>;

enum Msg {
    Records(Vec<AuditRecord>, Option<Reply>),
    Flush(mpsc::Sender<()>),
}

/// What the writer thread and the gateway share.
#[derive(Default)]
struct Shared {
    /// False from a failed commit until the next one succeeds.
    unavailable: AtomicBool,
    /// Records dropped: the queue was full, or (best effort, or not waited for) the
    /// store failed.
    dropped: AtomicU64,
    /// Requests answered `HNPS013E` since the journal became unavailable.
    refused: AtomicU64,
    /// Since when, and why, the journal is unavailable.
    outage: Mutex<Option<(Timestamp, String)>>,
}

/// Hands audit records to the writer thread.
pub struct AuditWriter {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    mode: AuditMode,
    /// For the commits made on the caller's thread (see [`AuditWriter::commit`]).
    gard: Arc<Gard>,
}

impl AuditWriter {
    /// Starts the writer thread for `gard`.
    pub fn start(gard: Arc<Gard>, mode: AuditMode) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        let writers = gard.clone();
        std::thread::Builder::new()
            .name("hnsecure-audit".into())
            .spawn(move || write_loop(&writers, &rx, &writer, mode))?;
        Ok(Self {
            tx,
            shared,
            mode,
            gard,
        })
    }

    /// False while the journal cannot be written and answers wait for it (`required`):
    /// a request is then answered `HNPS013E` and not passed on. Always true with
    /// `best-effort`.
    pub fn available(&self) -> bool {
        self.mode == AuditMode::BestEffort || !self.shared.unavailable.load(Ordering::Acquire)
    }

    /// Counts a request answered `HNPS013E` because the journal was unavailable; the
    /// count goes into the row that records the outage.
    pub fn refused_while_unavailable(&self) {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A reader of (available, records dropped), for the metrics.
    pub fn gauge(&self) -> impl Fn() -> (bool, u64) + Send + Sync + 'static {
        let shared = self.shared.clone();
        let best_effort = self.mode == AuditMode::BestEffort;
        move || {
            (
                best_effort || !shared.unavailable.load(Ordering::Acquire),
                shared.dropped.load(Ordering::Relaxed),
            )
        }
    }

    /// Queues `record` and does not wait for it; never blocks. When the queue is full
    /// the record is dropped, counted and logged.
    pub fn record(&self, record: AuditRecord) {
        self.hand_over(vec![record], None);
    }

    /// A security event not waited for: `code` names it (`certificate-refused`,
    /// `msh4-mismatch`, `bad-envelope`, `bad-frame`, `replay`, `revoked`, `expired`,
    /// `registration-refused`, `registration-limited`, `not-authenticated`), `detail`
    /// says it for people.
    pub fn security(&self, facility: &str, peer: &str, code: &str, detail: String) {
        self.record(AuditRecord::security(
            facility, peer, "refused", code, detail,
        ));
    }

    /// Commits `records` (one transaction's rows) and waits, at most `wait`, until they
    /// are: with `required`, the caller releases its answer only on `Ok`. With
    /// `best-effort` the records are handed over and `Ok` comes at once.
    pub async fn commit(
        &self,
        records: Vec<AuditRecord>,
        wait: Duration,
    ) -> Result<(), JournalError> {
        if self.mode == AuditMode::BestEffort {
            self.hand_over(records, None);
            return Ok(());
        }
        // When nothing else is being journaled and the store can take the rows at once
        // (SQLite, `audit_sync = "normal"`, its journal connection free and the database
        // not locked), they are committed here: a few tens of microseconds of the
        // caller's thread instead of two thread hand-overs (to the writer and back),
        // which cost a transaction alone on the gateway more than that. Otherwise — or
        // while the journal is down, whose recovery is the writer's — the writer commits
        // them with whatever else is ready (group commit).
        if !self.shared.unavailable.load(Ordering::Acquire)
            && self.gard.try_record_audit_now(&records)
        {
            return Ok(());
        }
        let (reply, committed) = oneshot::channel();
        if !self.hand_over(records, Some(reply)) {
            return Err(JournalError::Failed(
                "the journal is behind: its queue is full".into(),
            ));
        }
        match tokio::time::timeout(wait, committed).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(JournalError::Failed(why)),
            Ok(Err(_)) => Err(JournalError::Failed("the writer has stopped".into())),
            Err(_) => Err(JournalError::TimedOut),
        }
    }

    /// Puts records on the queue; false (and counted as dropped) when it is full.
    fn hand_over(&self, records: Vec<AuditRecord>, reply: Option<Reply>) -> bool {
        let n = records.len() as u64;
        match self.tx.try_send(Msg::Records(records, reply)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let total = self.shared.dropped.fetch_add(n, Ordering::Relaxed) + n;
                if (total - n).checked_ilog2() != total.checked_ilog2() {
                    log::error!(
                        "audit: the directory database is behind; {total} record(s) not journaled"
                    );
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                log::error!("audit: the writer has stopped; a record was not journaled");
                false
            }
        }
    }

    /// Waits (up to `wait`) until everything queued so far is written or has failed.
    pub fn flush(&self, wait: Duration) -> bool {
        let (done, finished) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        finished.recv_timeout(wait).is_ok()
    }
}

/// One batch: the records, and who waits for which of them.
#[derive(Default)]
struct Batch {
    records: Vec<AuditRecord>,
    /// Records not waited for, by their position in `records`.
    unwaited: Vec<std::ops::Range<usize>>,
    replies: Vec<Reply>,
    flushes: Vec<mpsc::Sender<()>>,
}

impl Batch {
    fn add(&mut self, msg: Msg) {
        match msg {
            Msg::Records(records, reply) => {
                let start = self.records.len();
                self.records.extend(records);
                match reply {
                    Some(reply) => self.replies.push(reply),
                    None => self.unwaited.push(start..self.records.len()),
                }
            }
            Msg::Flush(done) => self.flushes.push(done),
        }
    }
}

fn write_loop(gard: &Gard, rx: &Receiver<Msg>, shared: &Shared, mode: AuditMode) {
    // Rows not waited for that failed, kept for when the journal is back.
    let mut kept: Vec<AuditRecord> = Vec::new();
    loop {
        let down = shared.unavailable.load(Ordering::Acquire);
        // Ends when every sender is gone; while the journal is down, wakes up to try
        // again even when nothing comes.
        let first = if down {
            match rx.recv_timeout(RETRY) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => return,
            }
        };
        let mut batch = Batch::default();
        if down {
            // The outage's row goes first: it is the probe, and what the journal keeps
            // of the requests refused meanwhile.
            batch.records.push(outage_record(shared));
            batch.unwaited.push(0..1);
            let start = batch.records.len();
            batch.records.append(&mut kept);
            batch.unwaited.push(start..batch.records.len());
        }
        // Everything ready now, up to a batch.
        let mut next = first;
        while let Some(msg) = next.take() {
            batch.add(msg);
            if batch.records.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let started = Instant::now();
        let written = if batch.records.is_empty() {
            Ok(())
        } else {
            gard.record_audit(&batch.records).map_err(|e| e.to_string())
        };
        match written {
            Ok(()) => {
                if down {
                    recovered(shared);
                }
                for reply in batch.replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(why) => {
                let required = mode == AuditMode::Required;
                let first_failure = required && !shared.unavailable.swap(true, Ordering::AcqRel);
                if first_failure {
                    *shared.outage.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((Timestamp::now(), why.clone()));
                    log::error!(
                        "audit: the journal cannot be written ({why}, after {} ms): requests are \
                         answered AR HNPS013E, not passed on, until it can; trying again every {} ms",
                        started.elapsed().as_millis(),
                        RETRY.as_millis()
                    );
                } else if mode == AuditMode::BestEffort {
                    log::error!(
                        "audit: {} record(s) could not be written: {why}",
                        batch.records.len()
                    );
                }
                for reply in batch.replies {
                    let _ = reply.send(Err(why.clone()));
                }
                let mut lost = 0u64;
                if mode == AuditMode::Required {
                    // Keep what nobody waited for, but the outage row: it is made anew.
                    let mut taken = std::mem::take(&mut batch.records);
                    for range in batch.unwaited.iter().rev() {
                        let rows: Vec<AuditRecord> = taken.drain(range.clone()).collect();
                        kept.splice(0..0, rows);
                    }
                    if down && !kept.is_empty() {
                        kept.remove(0);
                    }
                    if kept.len() > KEEP_WHILE_DOWN {
                        lost = (kept.len() - KEEP_WHILE_DOWN) as u64;
                        kept.truncate(KEEP_WHILE_DOWN);
                    }
                } else {
                    lost = batch.unwaited.iter().map(|r| r.len() as u64).sum();
                }
                shared.dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
        for done in batch.flushes {
            let _ = done.send(());
        }
    }
}

/// The row that records an outage, as it stands now.
fn outage_record(shared: &Shared) -> AuditRecord {
    let (since, why) = shared
        .outage
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| (Timestamp::now(), String::new()));
    let refused = shared.refused.load(Ordering::Relaxed);
    AuditRecord::security(
        "",
        "",
        "recovered",
        "journal-unavailable",
        format!(
            "the audit journal could not be written from {since} until {}: {why}; \
             {refused} request(s) answered HNPS013E meanwhile",
            Timestamp::now()
        ),
    )
}

/// The journal is written again: say so, and start counting afresh.
fn recovered(shared: &Shared) {
    let outage = shared
        .outage
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let refused = shared.refused.swap(0, Ordering::Relaxed);
    let since = outage.map_or_else(String::new, |(t, _)| t.to_string());
    log::warn!(
        "audit: the journal is written again (unavailable since {since}; {refused} request(s) \
         answered HNPS013E meanwhile)"
    );
    shared.unavailable.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gard::{AuditFilter, AuditKind, InitOptions};

    fn gard(name: &str) -> (std::path::PathBuf, Arc<Gard>) {
        let dir =
            std::env::temp_dir().join(format!("hnsecure-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let gard = Gard::init(&dir.join("gard"), &InitOptions::default()).unwrap();
        (dir, Arc::new(gard))
    }

    fn row(control: &str) -> AuditRecord {
        let mut r = AuditRecord::security("BC00000098", "127.0.0.1:1", "AA", "test", String::new());
        r.kind = AuditKind::Transaction;
        r.control_id = control.to_owned();
        r
    }

    fn rows(gard: &Gard, kind: AuditKind) -> Vec<AuditRecord> {
        gard.audit(&AuditFilter {
            kind: Some(kind),
            ..AuditFilter::default()
        })
        .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_commit_returns_once_its_rows_are_in_the_store() {
        let (dir, gard) = gard("commit");
        let writer = AuditWriter::start(gard.clone(), AuditMode::Required).unwrap();
        let rt = runtime();
        for i in 0..20 {
            let control = format!("C{i}");
            rt.block_on(writer.commit(vec![row(&control)], Duration::from_secs(5)))
                .unwrap();
            // Committed means readable, at once, from another connection.
            let found = rows(
                &Gard::open(&dir.join("gard")).unwrap(),
                AuditKind::Transaction,
            );
            assert_eq!(found.len(), i + 1);
            assert_eq!(found[i].control_id, control);
        }
        assert!(writer.available());
        assert_eq!(writer.gauge()(), (true, 0));
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_store_refuses_then_recovers_by_itself_with_an_outage_row() {
        let (dir, gard) = gard("outage");
        let writer = AuditWriter::start(gard.clone(), AuditMode::Required).unwrap();
        let rt = runtime();
        let lock = rusqlite::Connection::open(dir.join("gard").join("gard.db")).unwrap();
        lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let failed = rt.block_on(writer.commit(vec![row("LOST")], Duration::from_secs(10)));
        assert!(
            matches!(&failed, Err(JournalError::Failed(why)) if why.contains("locked")),
            "{failed:?}"
        );
        assert!(!writer.available());
        assert!(!writer.gauge()().0);
        for _ in 0..3 {
            writer.refused_while_unavailable();
        }
        // Rows nobody waits for are kept for when the store is back.
        writer.security("BC00000098", "127.0.0.1:2", "replay", "kept".into());
        lock.execute_batch("ROLLBACK").unwrap();
        let started = Instant::now();
        while !writer.available() {
            assert!(started.elapsed() < Duration::from_secs(10), "not recovered");
            std::thread::sleep(Duration::from_millis(50));
        }
        rt.block_on(writer.commit(vec![row("AFTER")], Duration::from_secs(5)))
            .unwrap();
        let security = rows(&gard, AuditKind::Security);
        let outage: Vec<_> = security
            .iter()
            .filter(|r| r.code == "journal-unavailable")
            .collect();
        assert_eq!(outage.len(), 1, "{security:?}");
        assert!(
            outage[0].detail.contains("3 request(s) answered HNPS013E"),
            "{}",
            outage[0].detail
        );
        assert!(outage[0].detail.contains("locked"), "{}", outage[0].detail);
        assert!(
            security
                .iter()
                .any(|r| r.code == "replay" && r.detail == "kept")
        );
        let transactions: Vec<String> = rows(&gard, AuditKind::Transaction)
            .into_iter()
            .map(|r| r.control_id)
            .collect();
        assert_eq!(
            transactions,
            ["AFTER"],
            "the failed row was not written later"
        );
        // A second outage counts afresh.
        assert_eq!(writer.shared.refused.load(Ordering::Relaxed), 0);
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn best_effort_never_waits_and_counts_what_it_drops() {
        let (dir, gard) = gard("best-effort");
        let writer = AuditWriter::start(gard.clone(), AuditMode::BestEffort).unwrap();
        let rt = runtime();
        let lock = rusqlite::Connection::open(dir.join("gard").join("gard.db")).unwrap();
        lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let started = Instant::now();
        rt.block_on(writer.commit(vec![row("BE")], Duration::from_secs(10)))
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "it did not wait"
        );
        assert!(writer.available(), "best effort is never unavailable");
        assert!(writer.flush(Duration::from_secs(10)));
        assert_eq!(
            writer.gauge()(),
            (true, 1),
            "the row the store refused is counted"
        );
        lock.execute_batch("ROLLBACK").unwrap();
        writer.record(row("BE2"));
        assert!(writer.flush(Duration::from_secs(10)));
        let found: Vec<String> = rows(&gard, AuditKind::Transaction)
            .into_iter()
            .map(|r| r.control_id)
            .collect();
        assert_eq!(found, ["BE2"]);
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_errors_say_what_happened() {
        assert_eq!(
            JournalError::Failed("disk full".into()).to_string(),
            "the audit journal could not be written: disk full"
        );
        assert_eq!(
            JournalError::TimedOut.to_string(),
            "the audit journal did not commit in time"
        );
    }
}
