//! Where the directory keeps its records: the [`Store`] trait, so that a shared
//! PostgreSQL directory can serve several gateways later, and the records it exchanges.
//!
//! A store keeps rows and makes each operation atomic; the policy (what a valid code is,
//! which key id comes next, what is sealed how) stays in [`Gard`](super::Gard). Secrets
//! reach a store only as SHA-256 hashes (codes) or sealed (envelope keys).

use std::error::Error;
use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;

use super::audit::{AuditFilter, AuditRecord, DuplicateKey};
use super::{Facility, Role, Status};

/// A registration code as stored: the hash of the code, never the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRecord {
    /// SHA-256 of the facility id and the normalised code.
    pub hash: [u8; 32],
    /// When the code was made.
    pub created_at: Timestamp,
    /// From this instant on the code no longer works.
    pub expires_at: Timestamp,
    /// When the code was used, if it was.
    pub used_at: Option<Timestamp>,
}

/// An envelope master key encrypted with ChaCha20-Poly1305 under `storage.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedKey {
    /// The random nonce it was sealed with.
    pub nonce: [u8; 12],
    /// The encrypted key followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// What a registration attempt must know about a facility.
#[derive(Clone, Debug)]
pub struct RegistrationState {
    /// The facility's status.
    pub status: Status,
    /// Its current envelope key id; `None` before its first registration.
    pub key_id: Option<u32>,
    /// Its registration code, live or not; `None` when it never had one.
    pub code: Option<CodeRecord>,
}

/// A registration to record, all at once.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The facility.
    pub facility: String,
    /// The hash of the code presented; it must still be the facility's code, unused and
    /// not expired at [`Completion::at`].
    pub code_hash: [u8; 32],
    /// The key id the facility had when the attempt read it; the registration fails if
    /// it changed since.
    pub previous_key_id: Option<u32>,
    /// The new key id.
    pub key_id: u32,
    /// The new envelope key, sealed.
    pub sealed_key: SealedKey,
    /// The serial of the new certificate (upper-case hex).
    pub cert_serial: String,
    /// When the new certificate expires.
    pub cert_not_after: Timestamp,
    /// Now.
    pub at: Timestamp,
    /// The address the registration came from, kept with the used code.
    pub peer: IpAddr,
}

/// What the check of a TLS client certificate needs, read in one query.
#[derive(Clone, Debug)]
pub struct Credential {
    /// The facility's role.
    pub role: Role,
    /// Its status.
    pub status: Status,
    /// The serial of its current certificate.
    pub cert_serial: Option<String>,
    /// When that certificate expires.
    pub cert_not_after: Option<Timestamp>,
    /// The current envelope key id.
    pub key_id: Option<u32>,
    /// The current envelope key, sealed.
    pub sealed_key: Option<SealedKey>,
    /// The receiving-application names it may serve, ordered.
    pub serves: Vec<String>,
}

/// A failure of the storage itself (I/O, locking, a corrupt or newer database).
#[derive(Debug)]
pub struct StoreError {
    location: String,
    source: Box<dyn Error + Send + Sync>,
}

impl StoreError {
    /// A failure of the store at `location` (a file name or a server address).
    pub fn new(
        location: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Self {
            location: location.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot use the directory database {}: {}",
            self.location, self.source
        )
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// The directory's storage. Every method is one atomic operation; every change to the
/// facilities and their codes also increases the generation counter, so that a gateway
/// polling [`Store::generation`] notices changes made by another process. The audit
/// journal, the duplicate window and the failed registration attempts are kept beside
/// them and do not move the counter.
pub trait Store: Send + Sync {
    /// Records a new facility with its first code and its [`Facility::serves`]; `false`
    /// (and no change) when the id is taken.
    fn add_facility(&self, facility: &Facility, code: &CodeRecord) -> Result<bool, StoreError>;

    /// Replaces the facility's code (at most one code per facility). Returns the
    /// facility's status, or `None` when there is no such facility; a revoked facility
    /// keeps its old code.
    fn set_code(&self, id: &str, code: &CodeRecord) -> Result<Option<Status>, StoreError>;

    /// Replaces the names a server facility serves with `names` (checked, ordered and
    /// without repeats by the caller). Returns the facility's role and status, or `None`
    /// when there is no such facility; a client or revoked facility is left unchanged.
    fn set_serves(&self, id: &str, names: &[String]) -> Result<Option<(Role, Status)>, StoreError>;

    /// Every facility, ordered by id.
    fn facilities(&self) -> Result<Vec<Facility>, StoreError>;

    /// One facility.
    fn facility(&self, id: &str) -> Result<Option<Facility>, StoreError>;

    /// Marks the facility revoked. Returns its status before, or `None` when there is no
    /// such facility.
    fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<Status>, StoreError>;

    /// The facility's status, key id and code, for a registration attempt.
    fn registration_state(&self, id: &str) -> Result<Option<RegistrationState>, StoreError>;

    /// Records a registration: marks the code used, stores the sealed key, makes the
    /// facility active with the new certificate and key id. Returns `false`, changing
    /// nothing, when the code is no longer the facility's live code, the facility was
    /// revoked or its key id changed since [`Store::registration_state`].
    fn complete_registration(&self, completion: &Completion) -> Result<bool, StoreError>;

    /// Records a renewed certificate: the facility's certificate becomes `serial`, valid
    /// until `not_after`, its envelope key unchanged. Returns `false`, changing nothing,
    /// unless the facility is active with `previous_serial` as its certificate (so two
    /// renewals racing cannot both win, and a revocation always does).
    fn renew_certificate(
        &self,
        id: &str,
        previous_serial: &str,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The facility's status, certificate and current sealed key, in one read.
    fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError>;

    /// The generation counter.
    fn generation(&self) -> Result<u64, StoreError>;

    /// The ids of the revoked facilities, ordered.
    fn revoked(&self) -> Result<Vec<String>, StoreError>;

    /// Appends audit records, all in one transaction.
    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;

    /// Appends audit records as [`Store::append_audit`] does, but only when that can be
    /// done at once on the caller's thread: `Ok(false)` (and nothing written) when another
    /// commit is running, the database is locked, or a commit would wait for a disk or a
    /// network. The gateway tries it first with one transaction's row, when nothing else
    /// is being journaled, and hands the row to its journal's writer otherwise. Stores
    /// that cannot (PostgreSQL: a network round trip) keep this default.
    fn try_append_audit_now(&self, records: &[AuditRecord]) -> Result<bool, StoreError> {
        let _ = records;
        Ok(false)
    }

    /// With `full`, every later journal commit waits until the disk has it (it survives a
    /// power cut); without, until the database has it (it survives the gateway's process
    /// being killed, and the database's own crash keeps it consistent).
    fn set_journal_sync(&self, full: bool) -> Result<(), StoreError>;

    /// The audit records the filter selects, oldest first (ties in the order appended);
    /// with [`AuditFilter::limit`], the newest that many of them.
    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Deletes the audit records from before `before`; returns how many.
    fn prune_audit(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Atomically: if `key` was recorded at or after `since`, returns `true` (a duplicate)
    /// and changes nothing; otherwise records it at `at` (replacing an older entry) and
    /// returns `false`. Safe when two processes race on the same key: exactly one of them
    /// gets `false`.
    fn check_duplicate(
        &self,
        key: &DuplicateKey,
        at: Timestamp,
        since: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Forgets the duplicate keys recorded before `before`; returns how many.
    fn prune_duplicates(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Records one failed registration attempt at `at` under each of `keys` (such as
    /// `address:192.0.2.7` and `facility:BC00000098`), and forgets every failure recorded
    /// before `before`, in one transaction.
    fn record_failures(
        &self,
        keys: &[String],
        at: Timestamp,
        before: Timestamp,
    ) -> Result<(), StoreError>;

    /// How many failed registration attempts were recorded under `key` at or after `since`.
    fn failures(&self, key: &str, since: Timestamp) -> Result<u64, StoreError>;
}

/// The names of [`Facility::serves`] from a database's list of them joined by line feeds
/// (which no name holds), ordered.
pub(crate) fn split_serves(joined: Option<String>) -> Vec<String> {
    let mut names: Vec<String> = joined
        .as_deref()
        .unwrap_or("")
        .split('\n')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}
