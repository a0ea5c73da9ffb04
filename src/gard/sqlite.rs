//! The embedded directory: one SQLite file in WAL mode, so that the gateway and
//! `hnsecure gard` can use it at the same time from two processes.
//!
//! Each connection waits up to 5 seconds for a lock held by the other process. Every
//! change runs in a `BEGIN IMMEDIATE` transaction (it takes the write lock first, so two
//! writers never deadlock on an upgrade). The schema is versioned with
//! `PRAGMA user_version`; each migration runs in one transaction together with the
//! version bump, so a directory is never left half migrated. Times are stored as Unix
//! seconds (UTC).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::types::{Type, Value};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params, params_from_iter,
};

use super::audit::{
    AuditFilter, AuditRecord, DuplicateKey, clean, from_micros, to_db_u64, to_micros,
};
use super::store::{
    CodeRecord, Completion, Credential, RegistrationState, SealedKey, Store, StoreError,
    split_serves,
};
use super::{Facility, Role, Status};

/// How long a connection waits for the other process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the journal's connection waits for a lock another connection holds.
const JOURNAL_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The schema, one migration per version: `MIGRATIONS[n]` takes `user_version` n to n + 1.
const MIGRATIONS: &[&str] = &[
    // 1: facilities, their one registration code, their envelope keys, the generation.
    "CREATE TABLE facilities (
         id             TEXT PRIMARY KEY,
         name           TEXT NOT NULL,
         role           TEXT NOT NULL CHECK (role IN ('client', 'server')),
         status         TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
         created_at     INTEGER NOT NULL,
         registered_at  INTEGER,
         revoked_at     INTEGER,
         cert_serial    TEXT,
         cert_not_after INTEGER,
         key_id         INTEGER
     ) STRICT;
     CREATE TABLE registration_codes (
         facility   TEXT PRIMARY KEY REFERENCES facilities (id),
         code_hash  BLOB NOT NULL CHECK (length(code_hash) = 32),
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         used_at    INTEGER,
         used_from  TEXT
     ) STRICT;
     CREATE TABLE envelope_keys (
         facility   TEXT NOT NULL REFERENCES facilities (id),
         key_id     INTEGER NOT NULL,
         nonce      BLOB NOT NULL CHECK (length(nonce) = 12),
         sealed     BLOB NOT NULL,
         created_at INTEGER NOT NULL,
         PRIMARY KEY (facility, key_id)
     ) STRICT;
     CREATE TABLE generation (
         only  INTEGER PRIMARY KEY CHECK (only = 1),
         value INTEGER NOT NULL
     ) STRICT;
     INSERT INTO generation (only, value) VALUES (1, 0);",
    // 2: the audit journal and the duplicate window; times in microseconds (UTC).
    "CREATE TABLE audit (
         id                  INTEGER PRIMARY KEY,
         at                  INTEGER NOT NULL,
         kind                TEXT NOT NULL CHECK (kind IN ('transaction', 'security')),
         facility            TEXT NOT NULL,
         peer                TEXT NOT NULL,
         sending_application TEXT NOT NULL,
         control_id          TEXT NOT NULL,
         message_type        TEXT NOT NULL,
         route               TEXT NOT NULL,
         destination         TEXT NOT NULL,
         outcome             TEXT NOT NULL,
         code                TEXT NOT NULL,
         latency_ms          INTEGER NOT NULL CHECK (latency_ms >= 0),
         request_bytes       INTEGER NOT NULL CHECK (request_bytes >= 0),
         answer_bytes        INTEGER NOT NULL CHECK (answer_bytes >= 0),
         detail              TEXT NOT NULL
     ) STRICT;
     CREATE INDEX audit_at ON audit (at);
     CREATE TABLE duplicates (
         facility    TEXT NOT NULL,
         application TEXT NOT NULL,
         control_id  TEXT NOT NULL,
         seen_at     INTEGER NOT NULL,
         PRIMARY KEY (facility, application, control_id)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX duplicates_seen_at ON duplicates (seen_at);",
    // 3: the receiving-application names each server facility may serve, and the failed
    // registration attempts (times in microseconds, UTC) that every process counts.
    "CREATE TABLE facility_serves (
         facility TEXT NOT NULL REFERENCES facilities (id),
         name     TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
         PRIMARY KEY (facility, name)
     ) STRICT, WITHOUT ROWID;
     CREATE TABLE registration_failures (
         key TEXT NOT NULL,
         at  INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX registration_failures_key ON registration_failures (key, at);
     CREATE INDEX registration_failures_at ON registration_failures (at);",
];

const AUDIT_COLUMNS: &str = "at, kind, facility, peer, sending_application, control_id, \
                             message_type, route, destination, outcome, code, latency_ms, \
                             request_bytes, answer_bytes, detail";

const FACILITY_COLUMNS: &str = "id, name, role, status, created_at, registered_at, \
                                cert_serial, cert_not_after, key_id, \
                                (SELECT group_concat(s.name, char(10)) FROM facility_serves s \
                                 WHERE s.facility = facilities.id)";

/// The directory in one SQLite file.
///
/// Two connections: one for the directory (facilities, codes, keys), whose commits are
/// flushed to disk before they return (`synchronous = FULL`), and one for the audit
/// journal and the duplicate window, which the gateway writes on every transaction, with
/// `synchronous = NORMAL`: WAL mode keeps the file consistent either way, and a power
/// cut may lose the journal's last commits but never corrupts it. The directory's next
/// commit flushes them too. Two connections also let a gateway's journal writes and its
/// certificate checks proceed side by side.
pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    journal: Mutex<Connection>,
    /// `audit_sync = "full"` is in force on the journal's connection.
    journal_full: std::sync::atomic::AtomicBool,
}

impl SqliteStore {
    /// Makes the database at `path` (an empty or missing file), in WAL mode, with the
    /// current schema.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Self::connect(path, flags)?;
        {
            // WAL is a property of the file: set once here, it holds for every later
            // connection of every process.
            let mode: String = connection
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
                .map_err(|e| StoreError::new(path.display().to_string(), e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::new(
                    path.display().to_string(),
                    format!("the file system does not allow WAL mode (journal mode {mode})"),
                ));
            }
        }
        Self::finish_open(path, connection)
    }

    /// Opens the existing database at `path`, bringing its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Self::connect(path, flags)?;
        Self::finish_open(path, connection)
    }

    /// Migrates through `connection`, then opens the journal's connection.
    fn finish_open(path: &Path, connection: Connection) -> Result<Self, StoreError> {
        let journal = Self::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The gateway waits for the journal's commits (`audit = "required"`): a locked
        // database should be noticed within a couple of seconds, not five.
        journal
            .pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| journal.busy_timeout(JOURNAL_BUSY_TIMEOUT))
            .map_err(|e| StoreError::new(path.display().to_string(), e))?;
        let store = Self {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            journal: Mutex::new(journal),
            journal_full: std::sync::atomic::AtomicBool::new(false),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version this code writes.
    pub fn schema_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
        let location = path.display().to_string();
        let connection = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::new(location.clone(), e))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .and_then(|()| connection.pragma_update(None, "foreign_keys", true))
            .map_err(|e| StoreError::new(location, e))?;
        Ok(connection)
    }

    /// Applies the missing migrations, each in its own transaction.
    fn migrate(&self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as u32;
        let mut connection = self.lock();
        let version = user_version(&connection).map_err(|e| self.error(e))?;
        if version == known {
            return Ok(());
        }
        loop {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.error(e))?;
            // Read again under the write lock: the other process may have migrated.
            let version = user_version(&tx).map_err(|e| self.error(e))?;
            if version > known {
                return Err(StoreError::new(
                    self.location(),
                    format!(
                        "its schema version {version} is newer than this hnsecure knows ({known}); \
                         use a newer hnsecure"
                    ),
                ));
            }
            let Some(migration) = MIGRATIONS.get(version as usize) else {
                return Ok(());
            };
            tx.execute_batch(migration)
                .and_then(|()| tx.pragma_update(None, "user_version", version + 1))
                .and_then(|()| tx.commit())
                .map_err(|e| self.error(e))?;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held rolled back any open transaction when the
        // transaction was dropped; the connection itself is still sound.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_journal(&self) -> MutexGuard<'_, Connection> {
        // As for `lock`.
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        StoreError::new(self.location(), e)
    }

    /// Runs `f` in one write transaction, committed when `f` returns `Ok((value, true))`.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<(T, bool)>,
    ) -> Result<T, StoreError> {
        Self::write_on(&mut self.lock(), f).map_err(|e| self.error(e))
    }

    /// [`SqliteStore::write`] on the journal's connection.
    fn write_journal<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<(T, bool)>,
    ) -> Result<T, StoreError> {
        Self::write_on(&mut self.lock_journal(), f).map_err(|e| self.error(e))
    }

    fn write_on<T>(
        connection: &mut Connection,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<(T, bool)>,
    ) -> rusqlite::Result<T> {
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (value, commit) = f(&tx)?;
        if commit {
            tx.commit()?;
        }
        Ok(value)
    }
}

/// Inserts `records` into the journal, in `tx`; committed by the caller.
fn insert_audit(
    tx: &rusqlite::Transaction<'_>,
    records: &[AuditRecord],
) -> rusqlite::Result<((), bool)> {
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO audit ({AUDIT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))?;
    for r in records {
        insert.execute(params![
            to_micros(r.at),
            r.kind.as_str(),
            clean(&r.facility),
            clean(&r.peer),
            clean(&r.sending_application),
            clean(&r.control_id),
            clean(&r.message_type),
            clean(&r.route),
            clean(&r.destination),
            clean(&r.outcome),
            clean(&r.code),
            to_db_u64(r.latency_ms),
            to_db_u64(r.request_bytes),
            to_db_u64(r.answer_bytes),
            clean(&r.detail),
        ])?;
    }
    Ok(((), true))
}

fn user_version(connection: &Connection) -> rusqlite::Result<u32> {
    connection.query_row("PRAGMA user_version", [], |row| row.get(0))
}

fn bump_generation(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute("UPDATE generation SET value = value + 1 WHERE only = 1", [])
        .map(drop)
}

fn conversion_error(
    index: usize,
    ty: Type,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, ty, e.into())
}

fn timestamp(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    let seconds: i64 = row.get(index)?;
    Timestamp::from_second(seconds).map_err(|e| conversion_error(index, Type::Integer, e))
}

fn optional_timestamp(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(seconds) => Timestamp::from_second(seconds)
            .map(Some)
            .map_err(|e| conversion_error(index, Type::Integer, e)),
    }
}

fn role(row: &Row<'_>, index: usize) -> rusqlite::Result<Role> {
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|e| conversion_error(index, Type::Text, e))
}

fn status(row: &Row<'_>, index: usize) -> rusqlite::Result<Status> {
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|e| conversion_error(index, Type::Text, e))
}

fn hash(row: &Row<'_>, index: usize) -> rusqlite::Result<[u8; 32]> {
    let bytes: Vec<u8> = row.get(index)?;
    bytes
        .try_into()
        .map_err(|_| conversion_error(index, Type::Blob, "a code hash is not 32 bytes"))
}

fn facility_row(row: &Row<'_>) -> rusqlite::Result<Facility> {
    Ok(Facility {
        id: row.get(0)?,
        name: row.get(1)?,
        role: role(row, 2)?,
        status: status(row, 3)?,
        created_at: timestamp(row, 4)?,
        registered_at: optional_timestamp(row, 5)?,
        cert_serial: row.get(6)?,
        cert_not_after: optional_timestamp(row, 7)?,
        key_id: row.get(8)?,
        serves: split_serves(row.get(9)?),
    })
}

fn write_serves(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    names: &[String],
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM facility_serves WHERE facility = ?1", [id])?;
    let mut insert =
        tx.prepare_cached("INSERT INTO facility_serves (facility, name) VALUES (?1, ?2)")?;
    for name in names {
        insert.execute(params![id, name])?;
    }
    Ok(())
}

fn write_code(tx: &rusqlite::Transaction<'_>, id: &str, code: &CodeRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO registration_codes
             (facility, code_hash, created_at, expires_at, used_at, used_from)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
        params![
            id,
            &code.hash[..],
            code.created_at.as_second(),
            code.expires_at.as_second(),
            code.used_at.map(Timestamp::as_second),
        ],
    )
    .map(drop)
}

impl Store for SqliteStore {
    fn add_facility(&self, facility: &Facility, code: &CodeRecord) -> Result<bool, StoreError> {
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO facilities
                     (id, name, role, status, created_at, registered_at, cert_serial,
                      cert_not_after, key_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO NOTHING",
                params![
                    facility.id,
                    facility.name,
                    facility.role.as_str(),
                    facility.status.as_str(),
                    facility.created_at.as_second(),
                    facility.registered_at.map(Timestamp::as_second),
                    facility.cert_serial,
                    facility.cert_not_after.map(Timestamp::as_second),
                    facility.key_id,
                ],
            )?;
            if inserted == 0 {
                return Ok((false, false));
            }
            write_code(tx, &facility.id, code)?;
            write_serves(tx, &facility.id, &facility.serves)?;
            bump_generation(tx)?;
            Ok((true, true))
        })
    }

    fn set_code(&self, id: &str, code: &CodeRecord) -> Result<Option<Status>, StoreError> {
        self.write(|tx| {
            let found = tx
                .query_row("SELECT status FROM facilities WHERE id = ?1", [id], |row| {
                    status(row, 0)
                })
                .optional()?;
            match found {
                Some(Status::Pending | Status::Active) => {
                    write_code(tx, id, code)?;
                    bump_generation(tx)?;
                    Ok((found, true))
                }
                Some(Status::Revoked) | None => Ok((found, false)),
            }
        })
    }

    fn set_serves(&self, id: &str, names: &[String]) -> Result<Option<(Role, Status)>, StoreError> {
        self.write(|tx| {
            let found = tx
                .query_row(
                    "SELECT role, status FROM facilities WHERE id = ?1",
                    [id],
                    |row| Ok((role(row, 0)?, status(row, 1)?)),
                )
                .optional()?;
            match found {
                Some((Role::Server, Status::Pending | Status::Active)) => {
                    write_serves(tx, id, names)?;
                    bump_generation(tx)?;
                    Ok((found, true))
                }
                _ => Ok((found, false)),
            }
        })
    }

    fn facilities(&self) -> Result<Vec<Facility>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {FACILITY_COLUMNS} FROM facilities ORDER BY id"
            ))
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], facility_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.error(e))
    }

    fn facility(&self, id: &str) -> Result<Option<Facility>, StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached(&format!(
                "SELECT {FACILITY_COLUMNS} FROM facilities WHERE id = ?1"
            ))
            .and_then(|mut statement| statement.query_row([id], facility_row).optional())
            .map_err(|e| self.error(e))
    }

    fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<Status>, StoreError> {
        self.write(|tx| {
            let found = tx
                .query_row("SELECT status FROM facilities WHERE id = ?1", [id], |row| {
                    status(row, 0)
                })
                .optional()?;
            match found {
                Some(Status::Pending | Status::Active) => {
                    tx.execute(
                        "UPDATE facilities SET status = 'revoked', revoked_at = ?2 WHERE id = ?1",
                        params![id, at.as_second()],
                    )?;
                    bump_generation(tx)?;
                    Ok((found, true))
                }
                Some(Status::Revoked) | None => Ok((found, false)),
            }
        })
    }

    fn renew_certificate(
        &self,
        id: &str,
        previous_serial: &str,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE facilities SET cert_serial = ?3, cert_not_after = ?4
                 WHERE id = ?1 AND status = 'active' AND cert_serial = ?2",
                params![id, previous_serial, serial, not_after.as_second()],
            )?;
            if changed == 1 {
                bump_generation(tx)?;
            }
            Ok((changed == 1, changed == 1))
        })
    }

    fn registration_state(&self, id: &str) -> Result<Option<RegistrationState>, StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached(
                "SELECT f.status, f.key_id, c.code_hash, c.created_at, c.expires_at, c.used_at
                 FROM facilities f LEFT JOIN registration_codes c ON c.facility = f.id
                 WHERE f.id = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([id], |row| {
                        let code = match row.get::<_, Option<Vec<u8>>>(2)? {
                            None => None,
                            Some(_) => Some(CodeRecord {
                                hash: hash(row, 2)?,
                                created_at: timestamp(row, 3)?,
                                expires_at: timestamp(row, 4)?,
                                used_at: optional_timestamp(row, 5)?,
                            }),
                        };
                        Ok(RegistrationState {
                            status: status(row, 0)?,
                            key_id: row.get(1)?,
                            code,
                        })
                    })
                    .optional()
            })
            .map_err(|e| self.error(e))
    }

    fn complete_registration(&self, c: &Completion) -> Result<bool, StoreError> {
        self.write(|tx| {
            let now = c.at.as_second();
            let consumed = tx.execute(
                "UPDATE registration_codes SET used_at = ?3, used_from = ?4
                 WHERE facility = ?1 AND code_hash = ?2 AND used_at IS NULL AND expires_at > ?3",
                params![c.facility, &c.code_hash[..], now, c.peer.to_string()],
            )?;
            if consumed != 1 {
                return Ok((false, false));
            }
            let (current_status, key_id) = tx.query_row(
                "SELECT status, key_id FROM facilities WHERE id = ?1",
                [&c.facility],
                |row| Ok((status(row, 0)?, row.get::<_, Option<u32>>(1)?)),
            )?;
            if current_status == Status::Revoked || key_id != c.previous_key_id {
                return Ok((false, false));
            }
            tx.execute(
                "INSERT INTO envelope_keys (facility, key_id, nonce, sealed, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    c.facility,
                    c.key_id,
                    &c.sealed_key.nonce[..],
                    c.sealed_key.ciphertext,
                    now
                ],
            )?;
            tx.execute(
                "UPDATE facilities SET status = 'active', registered_at = ?2, cert_serial = ?3,
                     cert_not_after = ?4, key_id = ?5
                 WHERE id = ?1",
                params![
                    c.facility,
                    now,
                    c.cert_serial,
                    c.cert_not_after.as_second(),
                    c.key_id
                ],
            )?;
            bump_generation(tx)?;
            Ok((true, true))
        })
    }

    fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached(
                "SELECT f.role, f.status, f.cert_serial, f.cert_not_after, f.key_id,
                        k.nonce, k.sealed,
                        (SELECT group_concat(s.name, char(10)) FROM facility_serves s
                         WHERE s.facility = f.id)
                 FROM facilities f
                 LEFT JOIN envelope_keys k ON k.facility = f.id AND k.key_id = f.key_id
                 WHERE f.id = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([id], |row| {
                        let nonce: Option<Vec<u8>> = row.get(5)?;
                        let sealed_key = match (nonce, row.get::<_, Option<Vec<u8>>>(6)?) {
                            (Some(nonce), Some(ciphertext)) => Some(SealedKey {
                                nonce: nonce.try_into().map_err(|_| {
                                    conversion_error(5, Type::Blob, "a nonce is not 12 bytes")
                                })?,
                                ciphertext,
                            }),
                            _ => None,
                        };
                        Ok(Credential {
                            role: role(row, 0)?,
                            status: status(row, 1)?,
                            cert_serial: row.get(2)?,
                            cert_not_after: optional_timestamp(row, 3)?,
                            key_id: row.get(4)?,
                            sealed_key,
                            serves: split_serves(row.get(7)?),
                        })
                    })
                    .optional()
            })
            .map_err(|e| self.error(e))
    }

    fn generation(&self) -> Result<u64, StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached("SELECT value FROM generation WHERE only = 1")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|e| self.error(e))
    }

    fn revoked(&self) -> Result<Vec<String>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached("SELECT id FROM facilities WHERE status = 'revoked' ORDER BY id")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.error(e))
    }

    fn set_journal_sync(&self, full: bool) -> Result<(), StoreError> {
        self.lock_journal()
            .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })
            .map_err(|e| self.error(e))?;
        self.journal_full
            .store(full, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn try_append_audit_now(&self, records: &[AuditRecord]) -> Result<bool, StoreError> {
        // With `audit_sync = "full"` a commit waits for the disk: never on the caller's
        // thread.
        if self.journal_full.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        // Another commit is running (the journal's writer with a batch): not now.
        let mut journal = match self.journal.try_lock() {
            Ok(journal) => journal,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        // Another process holds the database: not now, and without waiting for it.
        journal
            .busy_timeout(Duration::ZERO)
            .map_err(|e| self.error(e))?;
        let written = Self::write_on(&mut journal, |tx| insert_audit(tx, records));
        journal
            .busy_timeout(JOURNAL_BUSY_TIMEOUT)
            .map_err(|e| self.error(e))?;
        match written {
            Ok(()) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.write_journal(|tx| insert_audit(tx, records))
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(since) = filter.since {
            values.push(Value::Integer(to_micros(since)));
            conditions.push(format!("at >= ?{}", values.len()));
        }
        if let Some(facility) = &filter.facility {
            values.push(Value::Text(clean(facility).into_owned()));
            conditions.push(format!("facility = ?{}", values.len()));
        }
        if let Some(outcome) = &filter.outcome {
            values.push(Value::Text(clean(outcome).into_owned()));
            conditions.push(format!("outcome = ?{}", values.len()));
        }
        if let Some(kind) = filter.kind {
            values.push(Value::Text(kind.as_str().to_owned()));
            conditions.push(format!("kind = ?{}", values.len()));
        }
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        match filter.limit {
            Some(limit) => {
                values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
                sql.push_str(&format!(
                    " ORDER BY at DESC, id DESC LIMIT ?{}",
                    values.len()
                ));
            }
            None => sql.push_str(" ORDER BY at, id"),
        }
        let connection = self.lock_journal();
        let mut statement = connection.prepare(&sql).map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params_from_iter(values), audit_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        let mut rows = rows.map_err(|e| self.error(e))?;
        if filter.limit.is_some() {
            rows.reverse();
        }
        Ok(rows)
    }

    fn prune_audit(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.write_journal(|tx| {
            let deleted = tx.execute("DELETE FROM audit WHERE at < ?1", [to_micros(before)])?;
            Ok((deleted as u64, true))
        })
    }

    fn check_duplicate(
        &self,
        key: &DuplicateKey,
        at: Timestamp,
        since: Timestamp,
    ) -> Result<bool, StoreError> {
        // One statement under the write lock: it inserts the key, or replaces an entry
        // older than `since`, or changes nothing (a duplicate).
        self.write_journal(|tx| {
            let changed = tx
                .prepare_cached(
                    "INSERT INTO duplicates (facility, application, control_id, seen_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (facility, application, control_id)
                     DO UPDATE SET seen_at = excluded.seen_at WHERE seen_at < ?5",
                )?
                .execute(params![
                    clean(&key.facility),
                    clean(&key.application),
                    clean(&key.control_id),
                    to_micros(at),
                    to_micros(since),
                ])?;
            Ok((changed == 0, changed != 0))
        })
    }

    fn prune_duplicates(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.write_journal(|tx| {
            let deleted = tx.execute(
                "DELETE FROM duplicates WHERE seen_at < ?1",
                [to_micros(before)],
            )?;
            Ok((deleted as u64, true))
        })
    }

    fn record_failures(
        &self,
        keys: &[String],
        at: Timestamp,
        before: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM registration_failures WHERE at < ?1")?
                .execute([to_micros(before)])?;
            let mut insert =
                tx.prepare_cached("INSERT INTO registration_failures (key, at) VALUES (?1, ?2)")?;
            for key in keys {
                insert.execute(params![clean(key), to_micros(at)])?;
            }
            Ok(((), true))
        })
    }

    fn failures(&self, key: &str, since: Timestamp) -> Result<u64, StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached(
                "SELECT count(*) FROM registration_failures WHERE key = ?1 AND at >= ?2",
            )
            .and_then(|mut statement| {
                statement.query_row(params![clean(key), to_micros(since)], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.error(e))
    }
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let count = |index: usize| -> rusqlite::Result<u64> {
        let n: i64 = row.get(index)?;
        u64::try_from(n).map_err(|e| conversion_error(index, Type::Integer, e))
    };
    let micros: i64 = row.get(0)?;
    let kind: String = row.get(1)?;
    Ok(AuditRecord {
        at: from_micros(micros).map_err(|e| conversion_error(0, Type::Integer, e))?,
        kind: kind
            .parse()
            .map_err(|e| conversion_error(1, Type::Text, e))?,
        facility: row.get(2)?,
        peer: row.get(3)?,
        sending_application: row.get(4)?,
        control_id: row.get(5)?,
        message_type: row.get(6)?,
        route: row.get(7)?,
        destination: row.get(8)?,
        outcome: row.get(9)?,
        code: row.get(10)?,
        latency_ms: count(11)?,
        request_bytes: count(12)?,
        answer_bytes: count(13)?,
        detail: row.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gard::tests::TempDir;

    fn facility(id: &str) -> Facility {
        Facility {
            id: id.to_owned(),
            name: "A clinic".to_owned(),
            role: Role::Client,
            status: Status::Pending,
            created_at: Timestamp::from_second(1_700_000_000).unwrap(),
            registered_at: None,
            cert_serial: None,
            cert_not_after: None,
            key_id: None,
            serves: Vec::new(),
        }
    }

    fn code(hash: u8, expires: i64) -> CodeRecord {
        CodeRecord {
            hash: [hash; 32],
            created_at: Timestamp::from_second(1_700_000_000).unwrap(),
            expires_at: Timestamp::from_second(expires).unwrap(),
            used_at: None,
        }
    }

    #[test]
    fn gard_sqlite_journals_at_once_only_when_nothing_waits() {
        let dir = TempDir::new("journal-now");
        let path = dir.0.join("gard.db");
        drop(SqliteStore::create(&path).unwrap());
        let store = SqliteStore::open(&path).unwrap();
        let row = |code: &str| {
            crate::gard::AuditRecord::security(
                "BC00000098",
                "127.0.0.1:1",
                "refused",
                code,
                String::new(),
            )
        };
        let count = |store: &SqliteStore| -> i64 {
            store
                .lock()
                .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
                .unwrap()
        };
        assert!(
            store
                .try_append_audit_now(&[row("one"), row("two")])
                .unwrap()
        );
        assert_eq!(count(&store), 2);

        // Another process's write transaction: refused at once, not after the busy timeout.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        assert!(!store.try_append_audit_now(&[row("locked")]).unwrap());
        assert!(
            started.elapsed() < JOURNAL_BUSY_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        other.execute_batch("ROLLBACK").unwrap();
        // ... and the journal's own timeout is back for the writer's commits.
        let timeout: i64 = store
            .lock_journal()
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, JOURNAL_BUSY_TIMEOUT.as_millis() as i64);
        assert!(store.try_append_audit_now(&[row("free")]).unwrap());
        assert_eq!(count(&store), 3);

        // Its connection in use (the writer's batch): not now.
        {
            let _writer = store.lock_journal();
            assert!(!store.try_append_audit_now(&[row("busy")]).unwrap());
        }
        // audit_sync = "full" commits wait for the disk: never at once.
        store.set_journal_sync(true).unwrap();
        assert!(!store.try_append_audit_now(&[row("full")]).unwrap());
        store.set_journal_sync(false).unwrap();
        assert!(store.try_append_audit_now(&[row("normal")]).unwrap());
        assert_eq!(count(&store), 4);
    }

    #[test]
    fn gard_sqlite_schema_is_versioned_and_wal() {
        let dir = TempDir::new("schema");
        let path = dir.0.join("gard.db");
        drop(SqliteStore::create(&path).unwrap());
        let store = SqliteStore::open(&path).unwrap();
        let connection = store.lock();
        assert_eq!(
            user_version(&connection).unwrap(),
            SqliteStore::schema_version()
        );
        let mode: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn gard_sqlite_migrates_a_first_version_directory() {
        let dir = TempDir::new("migrate");
        let path = dir.0.join("gard.db");
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(MIGRATIONS[0]).unwrap();
            connection.pragma_update(None, "user_version", 1).unwrap();
            connection
                .execute(
                    "INSERT INTO facilities (id, name, role, status, created_at)
                     VALUES ('BC1', 'Clinic', 'client', 'pending', 1700000000)",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            user_version(&store.lock()).unwrap(),
            SqliteStore::schema_version()
        );
        assert_eq!(store.facilities().unwrap()[0].id, "BC1");
        assert!(store.facilities().unwrap()[0].serves.is_empty());
        let key = DuplicateKey {
            control_id: "C1".to_owned(),
            facility: "BC1".to_owned(),
            application: "APP".to_owned(),
        };
        let now = Timestamp::now();
        assert!(!store.check_duplicate(&key, now, now).unwrap());
        assert!(store.check_duplicate(&key, now, now).unwrap());
    }

    #[test]
    fn gard_sqlite_migrates_a_second_version_directory() {
        let dir = TempDir::new("migrate-2");
        let path = dir.0.join("gard.db");
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(MIGRATIONS[0]).unwrap();
            connection.execute_batch(MIGRATIONS[1]).unwrap();
            connection.pragma_update(None, "user_version", 2).unwrap();
            connection
                .execute(
                    "INSERT INTO facilities (id, name, role, status, created_at)
                     VALUES ('BC1', 'Server', 'server', 'pending', 1700000000)",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            user_version(&store.lock()).unwrap(),
            SqliteStore::schema_version()
        );
        // An existing server serves nothing until it is given names.
        let f = store.facility("BC1").unwrap().unwrap();
        assert_eq!((f.role, f.serves.len()), (Role::Server, 0));
        let names = vec!["HNAPI-DEMO".to_owned()];
        assert_eq!(
            store.set_serves("BC1", &names).unwrap(),
            Some((Role::Server, Status::Pending))
        );
        assert_eq!(store.facility("BC1").unwrap().unwrap().serves, names);
        assert_eq!(store.credential("BC1").unwrap().unwrap().serves, names);
        let now = Timestamp::now();
        store
            .record_failures(&["address:192.0.2.1".to_owned()], now, now)
            .unwrap();
        assert_eq!(store.failures("address:192.0.2.1", now).unwrap(), 1);
    }

    #[test]
    fn gard_sqlite_refuses_a_newer_schema() {
        let dir = TempDir::new("newer");
        let path = dir.0.join("gard.db");
        {
            let store = SqliteStore::create(&path).unwrap();
            store
                .lock()
                .pragma_update(None, "user_version", 99)
                .unwrap();
        }
        let e = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("schema version 99 is newer"), "{e}");
        assert!(e.contains("gard.db"), "{e}");
    }

    #[test]
    fn gard_sqlite_records_and_consumes_codes_atomically() {
        let dir = TempDir::new("codes");
        let store = SqliteStore::create(&dir.0.join("gard.db")).unwrap();
        assert_eq!(store.generation().unwrap(), 0);
        assert!(
            store
                .add_facility(&facility("BC1"), &code(1, 2_000_000_000))
                .unwrap()
        );
        assert!(
            !store
                .add_facility(&facility("BC1"), &code(2, 2_000_000_000))
                .unwrap()
        );
        assert_eq!(store.generation().unwrap(), 1);

        let completion = Completion {
            facility: "BC1".to_owned(),
            code_hash: [1; 32],
            previous_key_id: None,
            key_id: 1,
            sealed_key: SealedKey {
                nonce: [7; 12],
                ciphertext: vec![9; 48],
            },
            cert_serial: "0A".to_owned(),
            cert_not_after: Timestamp::from_second(1_800_000_000).unwrap(),
            at: Timestamp::from_second(1_700_000_100).unwrap(),
            peer: "127.0.0.1".parse().unwrap(),
        };
        // A wrong hash, or a stale key id, changes nothing.
        let wrong = Completion {
            code_hash: [2; 32],
            ..completion.clone()
        };
        assert!(!store.complete_registration(&wrong).unwrap());
        let stale = Completion {
            previous_key_id: Some(4),
            ..completion.clone()
        };
        assert!(!store.complete_registration(&stale).unwrap());
        assert_eq!(
            store.facility("BC1").unwrap().unwrap().status,
            Status::Pending
        );
        assert!(
            store
                .registration_state("BC1")
                .unwrap()
                .unwrap()
                .code
                .unwrap()
                .used_at
                .is_none()
        );

        assert!(store.complete_registration(&completion).unwrap());
        assert!(
            !store.complete_registration(&completion).unwrap(),
            "a code works once"
        );
        let f = store.facility("BC1").unwrap().unwrap();
        assert_eq!((f.status, f.key_id), (Status::Active, Some(1)));
        let credential = store.credential("BC1").unwrap().unwrap();
        assert_eq!(credential.sealed_key, Some(completion.sealed_key.clone()));
        assert_eq!(store.generation().unwrap(), 2);

        // An expired code is not consumed, even with the right hash.
        assert_eq!(
            store.set_code("BC1", &code(3, 1_700_000_100)).unwrap(),
            Some(Status::Active)
        );
        let late = Completion {
            code_hash: [3; 32],
            previous_key_id: Some(1),
            key_id: 2,
            ..completion
        };
        assert!(!store.complete_registration(&late).unwrap());
        assert_eq!(store.set_code("NOPE", &code(3, 0)).unwrap(), None);
    }
}
