//! The shared directory: the same records as [`SqliteStore`](super::SqliteStore) in a
//! PostgreSQL database, so that several gateways (and their operators' `hnsecure gard`)
//! use one set of facilities, one audit journal and one duplicate window.
//!
//! # Connections
//!
//! A few worker threads ([`CONNECTIONS`]) each own one connection, made when the worker
//! first gets work and made again when the server closed it. A store call hands its work
//! to a free worker and waits for the answer, so the store can be called from any thread,
//! including from inside an async runtime (the `postgres` client would panic there).
//! A call that finds its connection closed before anything was committed (a server
//! restart closes idle connections) is tried once more on a new connection; a failure
//! while committing is reported, never retried, since the commit may have happened.
//! Each connection gives up on a statement after 30 seconds and on a lock after 10. The
//! The audit journal and the duplicate window commit without waiting for the disk
//! (`synchronous_commit = off`), as SQLite's journal connection does. The
//! connection is not encrypted (`NoTls`): use a database on the gateway's host or on a
//! network you trust, or a TLS tunnel.
//!
//! # Schema
//!
//! Versioned in the table `schema_version`; the migrations run in one transaction under
//! an advisory lock, so gateways starting together migrate once. Times are Unix seconds
//! (directory) or microseconds (journal, duplicates), as in SQLite. Every change to the
//! directory runs in one transaction and bumps the generation counter; the registration's
//! compare-and-set and revocation lock the facility's row; the duplicate check is one
//! `INSERT … ON CONFLICT … DO UPDATE … WHERE` (race-free across processes).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, NoTls, Row, Statement};

use super::audit::{
    AuditFilter, AuditKind, AuditRecord, DuplicateKey, clean, from_micros, to_db_u64, to_micros,
};
use super::store::{
    CodeRecord, Completion, Credential, RegistrationState, SealedKey, Store, StoreError,
    split_serves,
};
use super::{Facility, Role, Status};

/// How many connections (and worker threads) a store uses at most.
pub const CONNECTIONS: usize = 4;

/// How long making a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A number for `pg_advisory_xact_lock` that serialises migrations ("HNGARD" in ASCII).
const MIGRATION_LOCK: i64 = 0x484E_4741_5244;

/// The schema, one migration per version: `MIGRATIONS[n]` takes version n to n + 1.
const MIGRATIONS: &[&str] = &[
    // 1: the directory, the audit journal and the duplicate window (SQLite's 1 and 2).
    "CREATE TABLE facilities (
         id             TEXT PRIMARY KEY,
         name           TEXT NOT NULL,
         role           TEXT NOT NULL CHECK (role IN ('client', 'server')),
         status         TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
         created_at     BIGINT NOT NULL,
         registered_at  BIGINT,
         revoked_at     BIGINT,
         cert_serial    TEXT,
         cert_not_after BIGINT,
         key_id         BIGINT CHECK (key_id BETWEEN 1 AND 4294967295)
     );
     CREATE TABLE registration_codes (
         facility   TEXT PRIMARY KEY REFERENCES facilities (id),
         code_hash  BYTEA NOT NULL CHECK (length(code_hash) = 32),
         created_at BIGINT NOT NULL,
         expires_at BIGINT NOT NULL,
         used_at    BIGINT,
         used_from  TEXT
     );
     CREATE TABLE envelope_keys (
         facility   TEXT NOT NULL REFERENCES facilities (id),
         key_id     BIGINT NOT NULL,
         nonce      BYTEA NOT NULL CHECK (length(nonce) = 12),
         sealed     BYTEA NOT NULL,
         created_at BIGINT NOT NULL,
         PRIMARY KEY (facility, key_id)
     );
     CREATE TABLE generation (
         id    INTEGER PRIMARY KEY CHECK (id = 1),
         value BIGINT NOT NULL
     );
     INSERT INTO generation (id, value) VALUES (1, 0);
     CREATE TABLE audit (
         id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         at                  BIGINT NOT NULL,
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
         latency_ms          BIGINT NOT NULL CHECK (latency_ms >= 0),
         request_bytes       BIGINT NOT NULL CHECK (request_bytes >= 0),
         answer_bytes        BIGINT NOT NULL CHECK (answer_bytes >= 0),
         detail              TEXT NOT NULL
     );
     CREATE INDEX audit_at ON audit (at);
     CREATE TABLE duplicates (
         facility    TEXT NOT NULL,
         application TEXT NOT NULL,
         control_id  TEXT NOT NULL,
         seen_at     BIGINT NOT NULL,
         PRIMARY KEY (facility, application, control_id)
     );
     CREATE INDEX duplicates_seen_at ON duplicates (seen_at);",
    // 2: the names each server facility may serve and the failed registration attempts
    // (SQLite's 3; times in microseconds).
    "CREATE TABLE facility_serves (
         facility TEXT NOT NULL REFERENCES facilities (id),
         name     TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
         PRIMARY KEY (facility, name)
     );
     CREATE TABLE registration_failures (
         key TEXT NOT NULL,
         at  BIGINT NOT NULL
     );
     CREATE INDEX registration_failures_key ON registration_failures (key, at);
     CREATE INDEX registration_failures_at ON registration_failures (at);",
];

const FACILITY_COLUMNS: &str = "id, name, role, status, created_at, registered_at, \
                                cert_serial, cert_not_after, key_id, \
                                (SELECT string_agg(s.name, chr(10) ORDER BY s.name) \
                                 FROM facility_serves s WHERE s.facility = facilities.id)";

const AUDIT_COLUMNS: &str = "at, kind, facility, peer, sending_application, control_id, \
                             message_type, route, destination, outcome, code, latency_ms, \
                             request_bytes, answer_bytes, detail";

/// Why one attempt at an operation failed.
enum Failure {
    /// Before anything was committed: safe to try again on a new connection.
    Before(postgres::Error),
    /// While committing: the commit may have happened.
    Commit(postgres::Error),
    /// No connection could be made.
    Connect(postgres::Error),
    /// The database holds something this code cannot read, or refuses to work with.
    Data(String),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Self::Before(e)
    }
}

type Attempt<T> = Result<T, Failure>;

/// One attempt at a job on a connection; the flag says whether it is the last.
type RunJob = Box<dyn FnMut(&mut Conn, bool) -> bool + Send>;

/// Work for a connection's worker.
struct Job {
    /// Runs the operation; `true` when its answer was delivered, `false` when the
    /// connection turned out closed and the operation should be tried on a new one.
    /// The flag says whether this is the last attempt.
    run: RunJob,
    /// Delivers a failure to connect.
    fail: Box<dyn FnOnce(postgres::Error) + Send>,
}

/// A worker's connection, with the statements it has prepared: each distinct SQL text is
/// parsed and planned once per connection, then only bound and executed.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A transaction on a [`Conn`].
struct Tx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
}

type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// The prepared statement for `sql` with the types of `params`, from the cache.
fn statement<C: GenericClient>(
    client: &mut C,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Statement, postgres::Error> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
    let statement = client.prepare_typed(sql, &types)?;
    statements.insert(sql.to_owned(), statement.clone());
    Ok(statement)
}

fn values<'a>(params: &'a Params<'a>) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(v, _)| *v).collect()
}

// `query`, `query_opt`, `query_one` and `execute` go through the statement cache, with
// the parameters' types given as for `query_typed`.

impl Conn {
    fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        Ok(Tx {
            tx: self.client.transaction()?,
            statements: &mut self.statements,
        })
    }

    /// A transaction for the audit journal and the duplicate window, written on every
    /// message: its commit returns before the server flushes it to disk
    /// (`synchronous_commit = off`, as SQLite's `synchronous = NORMAL` for the same
    /// tables). A server crash may lose the last fraction of a second of them; the
    /// database stays consistent, and directory changes are flushed as always.
    fn journal_transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        let mut tx = self.transaction()?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")?;
        Ok(tx)
    }

    fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let statement = statement(&mut self.client, &mut self.statements, sql, params)?;
        self.client.query(&statement, &values(params))
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = statement(&mut self.client, &mut self.statements, sql, params)?;
        self.client.query_opt(&statement, &values(params))
    }

    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, postgres::Error> {
        let statement = statement(&mut self.client, &mut self.statements, sql, params)?;
        self.client.query_one(&statement, &values(params))
    }
}

impl Tx<'_> {
    fn query_opt(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = statement(&mut self.tx, self.statements, sql, params)?;
        self.tx.query_opt(&statement, &values(params))
    }

    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, postgres::Error> {
        let statement = statement(&mut self.tx, self.statements, sql, params)?;
        self.tx.query_one(&statement, &values(params))
    }

    fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64, postgres::Error> {
        let statement = statement(&mut self.tx, self.statements, sql, params)?;
        self.tx.execute(&statement, &values(params))
    }

    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.tx.batch_execute(sql)
    }

    fn commit(self) -> Result<(), postgres::Error> {
        self.tx.commit()
    }
}

/// The directory in a PostgreSQL database.
pub struct PostgresStore {
    location: String,
    /// `audit_sync = "full"`: journal commits wait for the server's disk.
    journal_full: std::sync::atomic::AtomicBool,
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl PostgresStore {
    /// Makes the directory's tables in the database at `url` (`postgres://USER@HOST:PORT/DB`),
    /// which must not hold an HNGard directory yet.
    pub fn create(url: &str, password: Option<&str>) -> Result<Self, StoreError> {
        let store = Self::connect(url, password)?;
        store.migrate(true)?;
        Ok(store)
    }

    /// Opens the directory in the database at `url`, bringing its schema up to date.
    pub fn open(url: &str, password: Option<&str>) -> Result<Self, StoreError> {
        let store = Self::connect(url, password)?;
        store.migrate(false)?;
        Ok(store)
    }

    /// The schema version this code writes.
    pub fn schema_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    fn connect(url: &str, password: Option<&str>) -> Result<Self, StoreError> {
        let location = url.to_owned();
        let mut config: Config = url
            .parse()
            .map_err(|_| StoreError::new(location.clone(), "not a valid PostgreSQL URL"))?;
        if config.get_password().is_some() {
            return Err(StoreError::new(
                location,
                "the URL holds a password; give it apart",
            ));
        }
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("hnsecure-gard");
        }
        config.connect_timeout(CONNECT_TIMEOUT);

        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::with_capacity(CONNECTIONS);
        for n in 0..CONNECTIONS {
            let receiver = receiver.clone();
            let config = config.clone();
            let worker = std::thread::Builder::new()
                .name(format!("hngard-pg-{n}"))
                .spawn(move || work(&config, &receiver))
                .map_err(|e| StoreError::new(location.clone(), e))?;
            workers.push(worker);
        }
        Ok(Self {
            location,
            journal_full: std::sync::atomic::AtomicBool::new(false),
            jobs: Some(jobs),
            workers,
        })
    }

    /// Creates or migrates the schema, in one transaction under an advisory lock.
    /// `fresh`: refuse a database that already holds a directory.
    fn migrate(&self, fresh: bool) -> Result<(), StoreError> {
        self.run(move |conn| {
            let mut tx = conn.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[(&MIGRATION_LOCK, Type::INT8)],
            )?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (
                     id      INTEGER PRIMARY KEY CHECK (id = 1),
                     version INTEGER NOT NULL
                 )",
            )?;
            let version: i32 = tx
                .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])?
                .map(|row| row.try_get(0))
                .transpose()?
                .unwrap_or(0);
            let known = MIGRATIONS.len() as i32;
            if fresh && version > 0 {
                return Err(Failure::Data(
                    "the database already holds an HNGard directory; to share it, copy that \
                     directory's key files and gard.toml instead of running init"
                        .to_owned(),
                ));
            }
            if version > known {
                return Err(Failure::Data(format!(
                    "its schema version {version} is newer than this hnsecure knows ({known}); \
                     use a newer hnsecure"
                )));
            }
            if version == known {
                return Ok(());
            }
            for migration in &MIGRATIONS[version as usize..] {
                tx.batch_execute(migration)?;
            }
            tx.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                &[(&known, Type::INT4)],
            )?;
            tx.commit().map_err(Failure::Commit)
        })
    }

    /// Runs `op` on a worker's connection and waits for its answer.
    fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Conn) -> Attempt<T> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel::<Attempt<T>>(1);
        let connect_reply = reply.clone();
        let job = Job {
            run: Box::new(move |conn, last| match op(conn) {
                Err(Failure::Before(_)) if !last && conn.client.is_closed() => false,
                result => {
                    let _ = reply.send(result);
                    true
                }
            }),
            fail: Box::new(move |e| {
                let _ = connect_reply.send(Err(Failure::Connect(e)));
            }),
        };
        let stopped = || StoreError::new(self.location.clone(), "the connection workers stopped");
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        match answer.recv().map_err(|_| stopped())? {
            Ok(value) => Ok(value),
            Err(Failure::Before(e) | Failure::Connect(e)) => {
                Err(StoreError::new(self.location.clone(), describe(&e)))
            }
            Err(Failure::Commit(e)) => Err(StoreError::new(
                self.location.clone(),
                format!("the commit may or may not have happened: {}", describe(&e)),
            )),
            Err(Failure::Data(why)) => Err(StoreError::new(self.location.clone(), why)),
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current job; its connection closes.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A worker: takes jobs until the store is dropped, keeping one connection.
fn work(config: &Config, jobs: &Mutex<Receiver<Job>>) {
    let mut connection: Option<Conn> = None;
    loop {
        let job = {
            // A worker that panicked while holding the lock left the receiver sound.
            let receiver = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            receiver.recv()
        };
        let Ok(Job { mut run, fail }) = job else {
            return;
        };
        let mut fail = Some(fail);
        for last in [false, true] {
            let conn = match connection.take() {
                Some(conn) if !conn.client.is_closed() => conn,
                _ => match open_connection(config) {
                    Ok(client) => Conn {
                        client,
                        statements: HashMap::new(),
                    },
                    Err(e) => {
                        if let Some(fail) = fail.take() {
                            fail(e);
                        }
                        break;
                    }
                },
            };
            let conn = connection.insert(conn);
            if run(conn, last) {
                break;
            }
            connection = None;
        }
    }
}

/// The error and its causes in one line: the client's own text ("db error", "invalid
/// configuration") says little without them. No cause holds the password.
fn describe(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn open_connection(config: &Config) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute("SET statement_timeout = '30s'; SET lock_timeout = '10s'")?;
    Ok(client)
}

fn data(what: impl std::fmt::Display) -> Failure {
    Failure::Data(format!("the database holds {what}"))
}

fn timestamp(seconds: i64) -> Attempt<Timestamp> {
    Timestamp::from_second(seconds).map_err(|_| data("a time out of range"))
}

fn optional_timestamp(seconds: Option<i64>) -> Attempt<Option<Timestamp>> {
    seconds.map(timestamp).transpose()
}

fn key_id(value: Option<i64>) -> Attempt<Option<u32>> {
    value
        .map(|v| u32::try_from(v).map_err(|_| data("a key id out of range")))
        .transpose()
}

fn facility_row(row: &Row) -> Attempt<Facility> {
    let role: String = row.try_get(2)?;
    let status: String = row.try_get(3)?;
    Ok(Facility {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        role: role.parse().map_err(data)?,
        status: status.parse().map_err(data)?,
        created_at: timestamp(row.try_get(4)?)?,
        registered_at: optional_timestamp(row.try_get(5)?)?,
        cert_serial: row.try_get(6)?,
        cert_not_after: optional_timestamp(row.try_get(7)?)?,
        key_id: key_id(row.try_get(8)?)?,
        serves: split_serves(row.try_get(9)?),
    })
}

fn write_serves(tx: &mut Tx<'_>, id: &str, names: &[String]) -> Result<(), postgres::Error> {
    tx.execute(
        "DELETE FROM facility_serves WHERE facility = $1",
        &[(&id, Type::TEXT)],
    )?;
    let names = names.to_vec();
    tx.execute(
        "INSERT INTO facility_serves (facility, name) SELECT $1, n FROM unnest($2) AS x (n)",
        &[(&id, Type::TEXT), (&names, Type::TEXT_ARRAY)],
    )
    .map(drop)
}

fn audit_row(row: &Row) -> Attempt<AuditRecord> {
    let count = |index: usize| -> Attempt<u64> {
        let n: i64 = row.try_get(index)?;
        u64::try_from(n).map_err(|_| data("a negative size"))
    };
    let kind: String = row.try_get(1)?;
    Ok(AuditRecord {
        at: from_micros(row.try_get(0)?).map_err(|_| data("a time out of range"))?,
        kind: kind.parse::<AuditKind>().map_err(data)?,
        facility: row.try_get(2)?,
        peer: row.try_get(3)?,
        sending_application: row.try_get(4)?,
        control_id: row.try_get(5)?,
        message_type: row.try_get(6)?,
        route: row.try_get(7)?,
        destination: row.try_get(8)?,
        outcome: row.try_get(9)?,
        code: row.try_get(10)?,
        latency_ms: count(11)?,
        request_bytes: count(12)?,
        answer_bytes: count(13)?,
        detail: row.try_get(14)?,
    })
}

fn bump_generation(tx: &mut Tx<'_>) -> Result<(), postgres::Error> {
    tx.execute("UPDATE generation SET value = value + 1 WHERE id = 1", &[])
        .map(drop)
}

fn write_code(tx: &mut Tx<'_>, id: &str, code: &CodeRecord) -> Result<(), postgres::Error> {
    let hash = &code.hash[..];
    let created = code.created_at.as_second();
    let expires = code.expires_at.as_second();
    let used = code.used_at.map(Timestamp::as_second);
    tx.execute(
        "INSERT INTO registration_codes
             (facility, code_hash, created_at, expires_at, used_at, used_from)
         VALUES ($1, $2, $3, $4, $5, NULL)
         ON CONFLICT (facility) DO UPDATE SET code_hash = EXCLUDED.code_hash,
             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at,
             used_at = EXCLUDED.used_at, used_from = NULL",
        &[
            (&id, Type::TEXT),
            (&hash, Type::BYTEA),
            (&created, Type::INT8),
            (&expires, Type::INT8),
            (&used, Type::INT8),
        ],
    )
    .map(drop)
}

/// Locks the facility's row for the rest of the transaction; its status, if it exists.
fn lock_status(tx: &mut Tx<'_>, id: &str) -> Attempt<Option<Status>> {
    let row = tx.query_opt(
        "SELECT status FROM facilities WHERE id = $1 FOR UPDATE",
        &[(&id, Type::TEXT)],
    )?;
    match row {
        None => Ok(None),
        Some(row) => {
            let status: String = row.try_get(0)?;
            Ok(Some(status.parse().map_err(data)?))
        }
    }
}

impl Store for PostgresStore {
    fn add_facility(&self, facility: &Facility, code: &CodeRecord) -> Result<bool, StoreError> {
        let facility = facility.clone();
        let code = code.clone();
        self.run(move |conn| {
            let f = &facility;
            let role = f.role.as_str();
            let status = f.status.as_str();
            let created = f.created_at.as_second();
            let registered = f.registered_at.map(Timestamp::as_second);
            let not_after = f.cert_not_after.map(Timestamp::as_second);
            let key_id = f.key_id.map(i64::from);
            let mut tx = conn.transaction()?;
            let inserted = tx.execute(
                "INSERT INTO facilities
                     (id, name, role, status, created_at, registered_at, cert_serial,
                      cert_not_after, key_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    (&f.id, Type::TEXT),
                    (&f.name, Type::TEXT),
                    (&role, Type::TEXT),
                    (&status, Type::TEXT),
                    (&created, Type::INT8),
                    (&registered, Type::INT8),
                    (&f.cert_serial, Type::TEXT),
                    (&not_after, Type::INT8),
                    (&key_id, Type::INT8),
                ],
            )?;
            if inserted == 0 {
                return Ok(false);
            }
            write_code(&mut tx, &f.id, &code)?;
            write_serves(&mut tx, &f.id, &f.serves)?;
            bump_generation(&mut tx)?;
            tx.commit().map_err(Failure::Commit)?;
            Ok(true)
        })
    }

    fn set_code(&self, id: &str, code: &CodeRecord) -> Result<Option<Status>, StoreError> {
        let id = id.to_owned();
        let code = code.clone();
        self.run(move |conn| {
            let mut tx = conn.transaction()?;
            let found = lock_status(&mut tx, &id)?;
            if let Some(Status::Pending | Status::Active) = found {
                write_code(&mut tx, &id, &code)?;
                bump_generation(&mut tx)?;
                tx.commit().map_err(Failure::Commit)?;
            }
            Ok(found)
        })
    }

    fn set_serves(&self, id: &str, names: &[String]) -> Result<Option<(Role, Status)>, StoreError> {
        let id = id.to_owned();
        let names = names.to_vec();
        self.run(move |conn| {
            let mut tx = conn.transaction()?;
            let Some(row) = tx.query_opt(
                "SELECT role, status FROM facilities WHERE id = $1 FOR UPDATE",
                &[(&id, Type::TEXT)],
            )?
            else {
                return Ok(None);
            };
            let role: String = row.try_get(0)?;
            let status: String = row.try_get(1)?;
            let role: Role = role.parse().map_err(data)?;
            let status: Status = status.parse().map_err(data)?;
            if role == Role::Server && status != Status::Revoked {
                write_serves(&mut tx, &id, &names)?;
                bump_generation(&mut tx)?;
                tx.commit().map_err(Failure::Commit)?;
            }
            Ok(Some((role, status)))
        })
    }

    fn facilities(&self) -> Result<Vec<Facility>, StoreError> {
        self.run(|conn| {
            conn.query(
                &format!("SELECT {FACILITY_COLUMNS} FROM facilities ORDER BY id"),
                &[],
            )?
            .iter()
            .map(facility_row)
            .collect()
        })
    }

    fn facility(&self, id: &str) -> Result<Option<Facility>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            conn.query_opt(
                &format!("SELECT {FACILITY_COLUMNS} FROM facilities WHERE id = $1"),
                &[(&id, Type::TEXT)],
            )?
            .as_ref()
            .map(facility_row)
            .transpose()
        })
    }

    fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<Status>, StoreError> {
        let id = id.to_owned();
        let at = at.as_second();
        self.run(move |conn| {
            let mut tx = conn.transaction()?;
            let found = lock_status(&mut tx, &id)?;
            if let Some(Status::Pending | Status::Active) = found {
                tx.execute(
                    "UPDATE facilities SET status = 'revoked', revoked_at = $2 WHERE id = $1",
                    &[(&id, Type::TEXT), (&at, Type::INT8)],
                )?;
                bump_generation(&mut tx)?;
                tx.commit().map_err(Failure::Commit)?;
            }
            Ok(found)
        })
    }

    fn renew_certificate(
        &self,
        id: &str,
        previous_serial: &str,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<bool, StoreError> {
        let (id, previous, serial) = (id.to_owned(), previous_serial.to_owned(), serial.to_owned());
        let not_after = not_after.as_second();
        self.run(move |conn| {
            let mut tx = conn.transaction()?;
            let changed = tx.execute(
                "UPDATE facilities SET cert_serial = $3, cert_not_after = $4
                 WHERE id = $1 AND status = 'active' AND cert_serial = $2",
                &[
                    (&id, Type::TEXT),
                    (&previous, Type::TEXT),
                    (&serial, Type::TEXT),
                    (&not_after, Type::INT8),
                ],
            )?;
            if changed == 1 {
                bump_generation(&mut tx)?;
            }
            tx.commit().map_err(Failure::Commit)?;
            Ok(changed == 1)
        })
    }

    fn registration_state(&self, id: &str) -> Result<Option<RegistrationState>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            let Some(row) = conn.query_opt(
                "SELECT f.status, f.key_id, c.code_hash, c.created_at, c.expires_at, c.used_at
                 FROM facilities f LEFT JOIN registration_codes c ON c.facility = f.id
                 WHERE f.id = $1",
                &[(&id, Type::TEXT)],
            )?
            else {
                return Ok(None);
            };
            let status: String = row.try_get(0)?;
            let code = match row.try_get::<_, Option<Vec<u8>>>(2)? {
                None => None,
                Some(hash) => Some(CodeRecord {
                    hash: hash
                        .try_into()
                        .map_err(|_| data("a code hash not 32 bytes"))?,
                    created_at: timestamp(row.try_get(3)?)?,
                    expires_at: timestamp(row.try_get(4)?)?,
                    used_at: optional_timestamp(row.try_get(5)?)?,
                }),
            };
            Ok(Some(RegistrationState {
                status: status.parse().map_err(data)?,
                key_id: key_id(row.try_get(1)?)?,
                code,
            }))
        })
    }

    fn complete_registration(&self, c: &Completion) -> Result<bool, StoreError> {
        let c = c.clone();
        self.run(move |conn| {
            let now = c.at.as_second();
            let hash = &c.code_hash[..];
            let peer = c.peer.to_string();
            let mut tx = conn.transaction()?;
            // The code's row stays locked until the end: a concurrent `set_code` or a
            // second registration with the same code waits, then finds it changed.
            let consumed = tx.execute(
                "UPDATE registration_codes SET used_at = $3, used_from = $4
                 WHERE facility = $1 AND code_hash = $2 AND used_at IS NULL AND expires_at > $3",
                &[
                    (&c.facility, Type::TEXT),
                    (&hash, Type::BYTEA),
                    (&now, Type::INT8),
                    (&peer, Type::TEXT),
                ],
            )?;
            if consumed != 1 {
                return Ok(false);
            }
            let row = tx.query_one(
                "SELECT status, key_id FROM facilities WHERE id = $1 FOR UPDATE",
                &[(&c.facility, Type::TEXT)],
            )?;
            let status: String = row.try_get(0)?;
            let status: Status = status.parse().map_err(data)?;
            if status == Status::Revoked || key_id(row.try_get(1)?)? != c.previous_key_id {
                return Ok(false);
            }
            let new_key_id = i64::from(c.key_id);
            let nonce = &c.sealed_key.nonce[..];
            let sealed = &c.sealed_key.ciphertext[..];
            tx.execute(
                "INSERT INTO envelope_keys (facility, key_id, nonce, sealed, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    (&c.facility, Type::TEXT),
                    (&new_key_id, Type::INT8),
                    (&nonce, Type::BYTEA),
                    (&sealed, Type::BYTEA),
                    (&now, Type::INT8),
                ],
            )?;
            let not_after = c.cert_not_after.as_second();
            tx.execute(
                "UPDATE facilities SET status = 'active', registered_at = $2, cert_serial = $3,
                     cert_not_after = $4, key_id = $5
                 WHERE id = $1",
                &[
                    (&c.facility, Type::TEXT),
                    (&now, Type::INT8),
                    (&c.cert_serial, Type::TEXT),
                    (&not_after, Type::INT8),
                    (&new_key_id, Type::INT8),
                ],
            )?;
            bump_generation(&mut tx)?;
            tx.commit().map_err(Failure::Commit)?;
            Ok(true)
        })
    }

    fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            let Some(row) = conn.query_opt(
                "SELECT f.role, f.status, f.cert_serial, f.cert_not_after, f.key_id,
                        k.nonce, k.sealed,
                        (SELECT string_agg(s.name, chr(10) ORDER BY s.name)
                         FROM facility_serves s WHERE s.facility = f.id)
                 FROM facilities f
                 LEFT JOIN envelope_keys k ON k.facility = f.id AND k.key_id = f.key_id
                 WHERE f.id = $1",
                &[(&id, Type::TEXT)],
            )?
            else {
                return Ok(None);
            };
            let sealed_key = match (
                row.try_get::<_, Option<Vec<u8>>>(5)?,
                row.try_get::<_, Option<Vec<u8>>>(6)?,
            ) {
                (Some(nonce), Some(ciphertext)) => Some(SealedKey {
                    nonce: nonce.try_into().map_err(|_| data("a nonce not 12 bytes"))?,
                    ciphertext,
                }),
                _ => None,
            };
            let role: String = row.try_get(0)?;
            let status: String = row.try_get(1)?;
            Ok(Some(Credential {
                role: role.parse::<Role>().map_err(data)?,
                status: status.parse().map_err(data)?,
                cert_serial: row.try_get(2)?,
                cert_not_after: optional_timestamp(row.try_get(3)?)?,
                key_id: key_id(row.try_get(4)?)?,
                sealed_key,
                serves: split_serves(row.try_get(7)?),
            }))
        })
    }

    fn generation(&self) -> Result<u64, StoreError> {
        self.run(|conn| {
            let value: i64 = conn
                .query_one("SELECT value FROM generation WHERE id = 1", &[])?
                .try_get(0)?;
            u64::try_from(value).map_err(|_| data("a negative generation"))
        })
    }

    fn revoked(&self) -> Result<Vec<String>, StoreError> {
        self.run(|conn| {
            conn.query(
                "SELECT id FROM facilities WHERE status = 'revoked' ORDER BY id",
                &[],
            )?
            .iter()
            .map(|row| Ok(row.try_get::<_, String>(0)?))
            .collect::<Attempt<Vec<String>>>()
        })
    }

    fn set_journal_sync(&self, full: bool) -> Result<(), StoreError> {
        self.journal_full
            .store(full, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let full = self.journal_full.load(std::sync::atomic::Ordering::Relaxed);
        // One statement for the whole batch: each column goes as one array.
        // PostgreSQL text cannot hold NUL: such characters become U+FFFD (as in SQLite).
        let column = |f: fn(&AuditRecord) -> &str| -> Vec<String> {
            records.iter().map(|r| clean(f(r)).into_owned()).collect()
        };
        let at: Vec<i64> = records.iter().map(|r| to_micros(r.at)).collect();
        let kind = column(|r| r.kind.as_str());
        let texts = [
            column(|r| r.facility.as_str()),
            column(|r| r.peer.as_str()),
            column(|r| r.sending_application.as_str()),
            column(|r| r.control_id.as_str()),
            column(|r| r.message_type.as_str()),
            column(|r| r.route.as_str()),
            column(|r| r.destination.as_str()),
            column(|r| r.outcome.as_str()),
            column(|r| r.code.as_str()),
        ];
        let latency: Vec<i64> = records.iter().map(|r| to_db_u64(r.latency_ms)).collect();
        let request: Vec<i64> = records.iter().map(|r| to_db_u64(r.request_bytes)).collect();
        let answer: Vec<i64> = records.iter().map(|r| to_db_u64(r.answer_bytes)).collect();
        let detail = column(|r| r.detail.as_str());
        self.run(move |conn| {
            let mut params: Vec<(&(dyn ToSql + Sync), Type)> =
                vec![(&at, Type::INT8_ARRAY), (&kind, Type::TEXT_ARRAY)];
            params.extend(
                texts
                    .iter()
                    .map(|t| (t as &(dyn ToSql + Sync), Type::TEXT_ARRAY)),
            );
            params.extend([
                (&latency as &(dyn ToSql + Sync), Type::INT8_ARRAY),
                (&request, Type::INT8_ARRAY),
                (&answer, Type::INT8_ARRAY),
                (&detail, Type::TEXT_ARRAY),
            ]);
            // `WITH ORDINALITY`: rows get their ids in the order of the batch.
            let mut tx = if full {
                conn.transaction()?
            } else {
                conn.journal_transaction()?
            };
            tx.execute(
                &format!(
                    "INSERT INTO audit ({AUDIT_COLUMNS})
                     SELECT a, k, f, p, s, c, m, r, d, o, e, l, q, n, t
                     FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                          WITH ORDINALITY AS x (a, k, f, p, s, c, m, r, d, o, e, l, q, n, t, i)
                     ORDER BY i"
                ),
                &params,
            )?;
            tx.commit().map_err(Failure::Commit)
        })
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut filter = filter.clone();
        filter.facility = filter.facility.map(|f| clean(&f).into_owned());
        filter.outcome = filter.outcome.map(|o| clean(&o).into_owned());
        self.run(move |conn| {
            let since = filter.since.map(to_micros);
            let kind = filter.kind.map(AuditKind::as_str);
            let limit = filter.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            let mut conditions = Vec::new();
            let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::new();
            if let Some(since) = &since {
                params.push((since, Type::INT8));
                conditions.push(format!("at >= ${}", params.len()));
            }
            if let Some(facility) = &filter.facility {
                params.push((facility, Type::TEXT));
                conditions.push(format!("facility = ${}", params.len()));
            }
            if let Some(outcome) = &filter.outcome {
                params.push((outcome, Type::TEXT));
                conditions.push(format!("outcome = ${}", params.len()));
            }
            if let Some(kind) = &kind {
                params.push((kind, Type::TEXT));
                conditions.push(format!("kind = ${}", params.len()));
            }
            let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit");
            if !conditions.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conditions.join(" AND "));
            }
            match &limit {
                Some(limit) => {
                    params.push((limit, Type::INT8));
                    sql.push_str(&format!(
                        " ORDER BY at DESC, id DESC LIMIT ${}",
                        params.len()
                    ));
                }
                None => sql.push_str(" ORDER BY at, id"),
            }
            let mut rows = conn
                .query(&sql, &params)?
                .iter()
                .map(audit_row)
                .collect::<Attempt<Vec<_>>>()?;
            if limit.is_some() {
                rows.reverse();
            }
            Ok(rows)
        })
    }

    fn prune_audit(&self, before: Timestamp) -> Result<u64, StoreError> {
        let before = to_micros(before);
        self.run(move |conn| {
            let mut tx = conn.journal_transaction()?;
            let deleted =
                tx.execute("DELETE FROM audit WHERE at < $1", &[(&before, Type::INT8)])?;
            tx.commit().map_err(Failure::Commit)?;
            Ok(deleted)
        })
    }

    fn check_duplicate(
        &self,
        key: &DuplicateKey,
        at: Timestamp,
        since: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = DuplicateKey {
            control_id: clean(&key.control_id).into_owned(),
            facility: clean(&key.facility).into_owned(),
            application: clean(&key.application).into_owned(),
        };
        let (at, since) = (to_micros(at), to_micros(since));
        self.run(move |conn| {
            // Two racing inserts of a new key: one inserts, the other waits for it, then
            // finds the row recent and changes nothing.
            let mut tx = conn.journal_transaction()?;
            let changed = tx.execute(
                "INSERT INTO duplicates (facility, application, control_id, seen_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (facility, application, control_id)
                 DO UPDATE SET seen_at = EXCLUDED.seen_at WHERE duplicates.seen_at < $5",
                &[
                    (&key.facility, Type::TEXT),
                    (&key.application, Type::TEXT),
                    (&key.control_id, Type::TEXT),
                    (&at, Type::INT8),
                    (&since, Type::INT8),
                ],
            )?;
            tx.commit().map_err(Failure::Commit)?;
            Ok(changed == 0)
        })
    }

    fn prune_duplicates(&self, before: Timestamp) -> Result<u64, StoreError> {
        let before = to_micros(before);
        self.run(move |conn| {
            let mut tx = conn.journal_transaction()?;
            let deleted = tx.execute(
                "DELETE FROM duplicates WHERE seen_at < $1",
                &[(&before, Type::INT8)],
            )?;
            tx.commit().map_err(Failure::Commit)?;
            Ok(deleted)
        })
    }

    fn record_failures(
        &self,
        keys: &[String],
        at: Timestamp,
        before: Timestamp,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| clean(k).into_owned()).collect();
        let (at, before) = (to_micros(at), to_micros(before));
        self.run(move |conn| {
            let mut tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM registration_failures WHERE at < $1",
                &[(&before, Type::INT8)],
            )?;
            tx.execute(
                "INSERT INTO registration_failures (key, at) SELECT k, $2 FROM unnest($1) AS x (k)",
                &[(&keys, Type::TEXT_ARRAY), (&at, Type::INT8)],
            )?;
            tx.commit().map_err(Failure::Commit)
        })
    }

    fn failures(&self, key: &str, since: Timestamp) -> Result<u64, StoreError> {
        let key = clean(key).into_owned();
        let since = to_micros(since);
        self.run(move |conn| {
            let n: i64 = conn
                .query_one(
                    "SELECT count(*) FROM registration_failures WHERE key = $1 AND at >= $2",
                    &[(&key, Type::TEXT), (&since, Type::INT8)],
                )?
                .try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
