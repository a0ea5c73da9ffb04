//! The gateway's side of the audit journal: transactions and security events are
//! handed to a writer thread that stores them in HNGard's directory in batches, so a
//! transaction never waits for the database. If the database falls behind by more than
//! [`QUEUE`] records, further records are dropped and counted (and the log says so)
//! rather than slowing the traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use crate::gard::{AuditRecord, Gard};

/// Records waiting for the writer, at most.
pub const QUEUE: usize = 10_000;
/// Records written in one database transaction, at most.
const BATCH: usize = 1_000;

enum Msg {
    Record(Box<AuditRecord>),
    Flush(mpsc::Sender<()>),
}

/// Hands audit records to the writer thread.
pub struct AuditWriter {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl AuditWriter {
    /// Starts the writer thread for `gard`.
    pub fn start(gard: Arc<Gard>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        std::thread::Builder::new()
            .name("hnsecure-audit".into())
            .spawn(move || write_loop(&gard, &rx))?;
        Ok(Self { tx, dropped })
    }

    /// Queues `record`; never blocks.
    pub fn record(&self, record: AuditRecord) {
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_power_of_two() {
                    log::error!(
                        "audit: the directory database is behind; {n} record(s) not journaled"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                log::error!("audit: the writer has stopped; a record was not journaled");
            }
        }
    }

    /// A security event: `code` names it (`certificate-refused`, `msh4-mismatch`,
    /// `bad-envelope`, `bad-frame`, `replay`, `revoked`, `expired`,
    /// `registration-refused`, `registration-limited`, `not-authenticated`), `detail`
    /// says it for people.
    pub fn security(&self, facility: &str, peer: &str, code: &str, detail: String) {
        self.record(AuditRecord::security(
            facility, peer, "refused", code, detail,
        ));
    }

    /// Waits (up to `wait`) until everything queued so far is written.
    pub fn flush(&self, wait: Duration) -> bool {
        let (done, finished) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        finished.recv_timeout(wait).is_ok()
    }
}

fn write_loop(gard: &Gard, rx: &Receiver<Msg>) {
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    // Ends when every sender is gone.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => batch.push(*r),
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = gard.record_audit(&batch) {
                log::error!("audit: {} record(s) could not be written: {e}", batch.len());
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
