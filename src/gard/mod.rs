//! HNGard, the directory (DESIGN 3.6; Volume 5, 2.4.10): it registers HNSecure users —
//! facilities, the health partners' systems, named by a facility id such as `BC00000098` —
//! and validates them on every connection.
//!
//! # The directory
//!
//! [`Gard::init`] makes a directory `DIR` (mode 0700) holding:
//!
//! | file | what | mode |
//! |---|---|---|
//! | `gard.db` | the SQLite database: facilities, registration codes, envelope keys, the generation counter, the audit journal and the duplicate window | 0600 |
//! | `ca.pem`, `ca.key` | the directory's CA: ECDSA P-256, 10 years, signs only end certificates | 0644, 0600 |
//! | `gate.pem`, `gate.key` | the gateway's TLS server certificate, signed by the CA: 2 years, EKU serverAuth, names `localhost`, `127.0.0.1`, `::1` and [`InitOptions::subject_alt_names`] | 0644, 0600 |
//! | `storage.key` | 32 random bytes that seal the envelope keys in `gard.db` | 0600 |
//!
//! Every private file is created with its mode from the start, never changed after
//! writing; [`Gard::open`] refuses a private file other users can read.
//!
//! The gateway and the administration command `hnsecure gard` use one directory from two
//! processes at once: the database is in WAL mode, each connection waits up to 5 seconds
//! for the other's lock, and every change increases a generation counter
//! ([`Gard::generation`]) that the gateway can poll to notice revocations.
//!
//! # Registration
//!
//! 1. An operator records a facility ([`Gard::add_facility`], `hnsecure gard add`): it is
//!    *pending*, and gets a one-time registration code such as `K7QM-3XPD-9RTW-HC2N`
//!    (80 random bits), shown once and stored only as a SHA-256 hash, with an expiry.
//!    A facility has at most one code: [`Gard::new_code`] replaces it.
//! 2. The facility's client makes a key pair and sends a certificate signing request with
//!    the code; the gateway calls [`Gard::register`]. Failed attempts are limited (5 per 15
//!    minutes lock an address; 5 per 15 minutes for a facility slow its attempts down),
//!    in the store, so that every gateway sharing the directory sees them; an unknown
//!    facility, a wrong code and a used code get the same answer.
//! 3. HNGard signs a client certificate (subject CN = the facility id, a random serial,
//!    2 years, EKU clientAuth), makes a new envelope master key with the next key id, marks
//!    the code used and the facility *active*, all in one transaction. The client gets the
//!    certificate, the CA certificate and the key, once.
//! 4. On every TLS connection the gateway calls [`Gard::authenticate`] with the client's
//!    certificate: it must be the facility's current one, the facility not revoked and the
//!    certificate not expired; the answer carries the facility's envelope key.
//!
//! A server-role facility serves only the receiving-application names (MSH-5) the
//! directory records for it ([`Facility::serves`], [`Peer::serves`]), given at
//! [`Gard::add_facility_serving`] and replaced with [`Gard::set_serves`].
//!
//! Registering again with a new code rotates both: a new certificate (the old one is no
//! longer accepted) and a new envelope key with the next key id. [`Gard::revoke`] is final.
//!
//! # The audit journal and the duplicate window
//!
//! The gateway records every transaction and security event in the directory's audit
//! journal ([`Gard::record_audit`], read with [`Gard::audit`] and `hnsecure gard audit`)
//! and checks Volume 5's duplicates (2.4.8) against it ([`Gard::check_duplicate`]), so
//! gateways sharing one directory share one journal and one window. Neither moves the
//! generation counter. A record never holds a message body.
//!
//! # What is stored how
//!
//! - Registration codes: SHA-256 over a domain label, the facility id and the normalised
//!   code; never the code.
//! - Envelope master keys: ChaCha20-Poly1305 under `storage.key` with a random nonce per
//!   key, the facility id and key id as associated data; never in plain text. Old keys stay,
//!   sealed, after a rotation.
//! - Certificates: only their serial and expiry; the certificate itself goes to the client.
//!
//! # Where the records are
//!
//! The storage sits behind the [`Store`] trait: [`SqliteStore`] (`gard.db`, the default)
//! or [`PostgresStore`], chosen by the directory's optional `gard.toml`
//! ([`StoreConfig`]). With PostgreSQL, `DIR` keeps only the key files and `gard.toml`;
//! several gateways share one directory by each holding a copy of those files, all
//! naming the same database. [`Gard::open`] reads `gard.toml`, so the gateway and every
//! `hnsecure gard` command use the configured store.
#![forbid(unsafe_code)]

mod audit;
mod code;
mod config;
mod error;
mod files;
mod limit;
mod pki;
mod postgres;
mod seal;
mod sqlite;
mod store;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rcgen::Issuer;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

pub use audit::{AuditFilter, AuditKind, AuditRecord, DuplicateKey};
pub use config::{CONFIG_FILE, PASSWORD_ENV, StoreConfig};
pub use error::{AuthError, GardError, RegisterError};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use store::{
    CodeRecord, Completion, Credential, RegistrationState, SealedKey, Store, StoreError,
};

use crate::envelope::MasterKey;

/// The files of a directory, each with what it holds, in the order `init` makes them.
pub const DIRECTORY_FILES: [(&str, &str); 6] = [
    (files::CA_KEY, "the CA's private key"),
    (
        files::CA_CERT,
        "the CA certificate, for facilities' clients",
    ),
    (files::GATE_KEY, "the gateway's private key"),
    (files::GATE_CERT, "the gateway's TLS certificate"),
    (
        files::STORAGE_KEY,
        "the key that seals envelope keys in gard.db",
    ),
    (files::DB, "the directory database"),
];

/// What a facility may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends requests (a health partner's application).
    Client,
    /// May also serve requests: a receiving application connected to the gateway.
    Server,
}

/// Where a facility stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Recorded, not registered yet.
    Pending,
    /// Registered: it has a certificate and an envelope key.
    Active,
    /// Revoked, for good.
    Revoked,
}

/// A word that names no [`Role`], [`Status`] or [`AuditKind`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    kind: &'static str,
    found: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not {}", self.found, self.kind)
    }
}

impl std::error::Error for UnknownName {}

impl Role {
    /// `client` or `server`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownName;

    /// `client` or `server`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Self::Client),
            "server" => Ok(Self::Server),
            _ => Err(UnknownName {
                kind: "a facility role (client or server)",
                found: s.to_owned(),
            }),
        }
    }
}

impl Status {
    /// `pending`, `active` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownName;

    /// `pending`, `active` or `revoked`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "revoked" => Ok(Self::Revoked),
            _ => Err(UnknownName {
                kind: "a facility status (pending, active or revoked)",
                found: s.to_owned(),
            }),
        }
    }
}

/// A facility as the directory knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facility {
    /// The facility id, e.g. `BC00000098`: what MSH-4 of its messages must carry.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Where it stands.
    pub status: Status,
    /// When it was recorded.
    pub created_at: Timestamp,
    /// When it last registered.
    pub registered_at: Option<Timestamp>,
    /// The serial of its current certificate, upper-case hex.
    pub cert_serial: Option<String>,
    /// When its current certificate expires.
    pub cert_not_after: Option<Timestamp>,
    /// The id of its current envelope key (1 at the first registration, then 2, …).
    pub key_id: Option<u32>,
    /// The receiving-application names (MSH-5 values such as `HNAPI-DEMO`) this facility
    /// may serve, ordered and without repeats ([`check_application_name`]); always empty
    /// for a [`Role::Client`] facility. Set with [`Gard::add_facility_serving`] and
    /// [`Gard::set_serves`].
    pub serves: Vec<String>,
}

/// Options of [`Gard::init`].
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// DNS names and IP addresses of the gateway, besides `localhost`, `127.0.0.1` and `::1`,
    /// for its TLS certificate.
    pub subject_alt_names: Vec<String>,
}

/// What a successful registration hands to the client, once.
#[derive(Debug)]
pub struct Registration {
    /// The facility's new client certificate, PEM.
    pub certificate_pem: String,
    /// The directory's CA certificate, PEM: the root the client trusts for the gateway.
    pub ca_pem: String,
    /// The facility's new envelope master key.
    pub key: MasterKey,
}

/// A renewed certificate ([`Gard::renew`]).
#[derive(Debug)]
pub struct Renewal {
    /// The facility's new client certificate, PEM.
    pub certificate_pem: String,
    /// When it expires.
    pub not_after: Timestamp,
}

/// Who a TLS client certificate belongs to, with the envelope key to use for it.
#[derive(Debug)]
pub struct Peer {
    /// The facility id.
    pub facility: String,
    /// Its role.
    pub role: Role,
    /// The receiving-application names (MSH-5) HNGard records for it, ordered: the only
    /// names a [`Role::Server`] facility may serve. Empty for a client.
    pub serves: Vec<String>,
    /// Its current envelope master key.
    pub key: MasterKey,
}

/// The gateway's TLS identity and the root its clients' certificates must chain to.
pub struct ServerMaterial {
    /// The gateway's certificate, then the CA certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The gateway's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// The CA certificate: the only root for client certificates.
    pub ca: CertificateDer<'static>,
}

impl fmt::Debug for ServerMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerMaterial")
            .field("chain", &self.chain.len())
            .field("key", &"MASKED")
            .finish_non_exhaustive()
    }
}

/// The state of a facility's registration code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// When it was used, if it was.
    pub used_at: Option<Timestamp>,
}

/// Checks a facility id: 1 to 32 characters `A-Z`, `0-9` and `-`.
pub fn check_facility_id(id: &str) -> Result<(), GardError> {
    let ok = (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(GardError::InvalidFacilityId(id.to_owned()))
    }
}

/// Checks a facility name: 1 to 100 printable characters, not only spaces.
pub fn check_facility_name(name: &str) -> Result<(), GardError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 100
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(GardError::InvalidName)
    }
}

/// The most receiving-application names one facility may serve.
pub const MAX_SERVES: usize = 64;

/// Checks a receiving-application name (an MSH-5 value a server facility may serve):
/// 1 to 64 printable ASCII characters (space to `~`), neither starting nor ending with a
/// space, and none of HL7's delimiters `|`, `^`, `~`, `\` and `&`.
pub fn check_application_name(name: &str) -> Result<(), GardError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !b"|^~\\&".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(GardError::InvalidApplicationName(name.to_owned()))
    }
}

/// Checks the names and returns them ordered, without repeats.
fn checked_serves(serves: &[String]) -> Result<Vec<String>, GardError> {
    for name in serves {
        check_application_name(name)?;
    }
    let mut names = serves.to_vec();
    names.sort();
    names.dedup();
    if names.len() > MAX_SERVES {
        return Err(GardError::TooManyApplications(names.len()));
    }
    Ok(names)
}

/// The directory: facilities, their registration and their validation. `Send + Sync`;
/// the gateway shares one through an `Arc`, and `hnsecure gard` opens the same directory
/// from another process at the same time.
pub struct Gard {
    dir: PathBuf,
    store: Box<dyn Store>,
    storage_key: Zeroizing<[u8; 32]>,
    waiting: Mutex<limit::Waiting>,
}

impl fmt::Debug for Gard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gard")
            .field("dir", &self.dir)
            .field("storage_key", &"MASKED")
            .finish_non_exhaustive()
    }
}

fn later(now: Timestamp, by: Duration) -> Result<Timestamp, GardError> {
    SignedDuration::try_from(by)
        .ok()
        .and_then(|by| now.checked_add(by).ok())
        .ok_or(GardError::InvalidValidity)
}

fn new_code_record(id: &str, valid_for: Duration) -> Result<(String, CodeRecord), GardError> {
    let now = Timestamp::now();
    let expires_at = later(now, valid_for)?;
    let (code, symbols) = code::generate()?;
    let record = CodeRecord {
        hash: code::hash(id, &symbols),
        created_at: now,
        expires_at,
        used_at: None,
    };
    Ok((code, record))
}

impl Gard {
    /// Makes a new directory in `dir` (created, or an existing directory without any of
    /// the directory's files): its CA, the gateway's certificate, the storage key and the
    /// database. Refuses a directory already initialised; removes what it made when it
    /// fails half way.
    pub fn init(dir: &Path, options: &InitOptions) -> Result<Gard, GardError> {
        Self::init_with_store(dir, options, &StoreConfig::Sqlite)
    }

    /// [`Gard::init`] with the records kept where `store` says: for
    /// [`StoreConfig::Postgres`] the key files go into `dir` with a `gard.toml` naming the
    /// database (and no `gard.db`), and the directory's tables are made in the database,
    /// which must not hold a directory yet. A password file it names must already be in
    /// place (relative paths are taken from `dir`).
    pub fn init_with_store(
        dir: &Path,
        options: &InitOptions,
        store: &StoreConfig,
    ) -> Result<Gard, GardError> {
        for name in &options.subject_alt_names {
            pki::check_subject_alt_name(name)?;
        }
        let dir_made = files::prepare_dir(dir)?;
        let mut made = Vec::new();
        let result = Self::init_files(dir, options, store, &mut made);
        if result.is_err() {
            files::remove_all(&made, dir_made.then_some(dir));
        }
        result
    }

    fn init_files(
        dir: &Path,
        options: &InitOptions,
        store: &StoreConfig,
        made: &mut Vec<PathBuf>,
    ) -> Result<Gard, GardError> {
        // Read first: a missing or unsafe password file stops init before it makes anything.
        let password = store.password(dir)?;
        let now = Timestamp::now();
        let (ca, ca_params, ca_key) = pki::make_ca(now)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let gate = pki::make_gate(&issuer, &options.subject_alt_names, now)?;
        let mut storage_key = Zeroizing::new([0u8; 32]);
        getrandom::fill(storage_key.as_mut())?;

        let mut write = |name: &str, bytes: &[u8], mode: u32| {
            let path = dir.join(name);
            files::write_new(&path, bytes, mode)?;
            made.push(path);
            Ok::<_, GardError>(())
        };
        write(files::CA_KEY, ca.key_pem.as_bytes(), files::PRIVATE)?;
        write(files::CA_CERT, ca.cert_pem.as_bytes(), files::PUBLIC)?;
        write(files::GATE_KEY, gate.key_pem.as_bytes(), files::PRIVATE)?;
        write(files::GATE_CERT, gate.cert_pem.as_bytes(), files::PUBLIC)?;
        write(files::STORAGE_KEY, storage_key.as_ref(), files::PRIVATE)?;
        let store: Box<dyn Store> = match store {
            StoreConfig::Sqlite => {
                // An empty file is an empty SQLite database: made first so that it, and
                // the WAL files SQLite derives from it, have mode 0600 from the start.
                write(files::DB, b"", files::PRIVATE)?;
                Box::new(SqliteStore::create(&dir.join(files::DB))?)
            }
            StoreConfig::Postgres { url, .. } => {
                write(CONFIG_FILE, store.to_toml().as_bytes(), files::PUBLIC)?;
                Box::new(PostgresStore::create(
                    url,
                    password.as_ref().map(|p| p.as_str()),
                )?)
            }
        };
        files::sync_dir(dir)?;
        Ok(Gard {
            dir: dir.to_owned(),
            store,
            storage_key,
            waiting: Mutex::default(),
        })
    }

    /// Opens the directory in `dir`, made by [`Gard::init`] or [`Gard::init_with_store`],
    /// with the store its `gard.toml` names (`gard.db` without one).
    pub fn open(dir: &Path) -> Result<Gard, GardError> {
        let config = StoreConfig::read(dir)?;
        let store: Box<dyn Store> = match &config {
            StoreConfig::Sqlite => {
                let db = dir.join(files::DB);
                if !db.is_file() {
                    return Err(GardError::NotInitialised {
                        dir: dir.to_owned(),
                    });
                }
                read_storage_key(dir)?;
                Box::new(SqliteStore::open(&db)?)
            }
            StoreConfig::Postgres { url, .. } => {
                read_storage_key(dir)?;
                let password = config.password(dir)?;
                Box::new(PostgresStore::open(
                    url,
                    password.as_ref().map(|p| p.as_str()),
                )?)
            }
        };
        Ok(Gard {
            dir: dir.to_owned(),
            store,
            storage_key: read_storage_key(dir)?,
            waiting: Mutex::default(),
        })
    }

    /// Where this directory keeps its records (its `gard.toml`).
    pub fn store_config(&self) -> Result<StoreConfig, GardError> {
        StoreConfig::read(&self.dir)
    }

    /// Opens the directory files in `dir` with another [`Store`] for the records (a
    /// shared database, or a test double).
    pub fn with_store(dir: &Path, store: Box<dyn Store>) -> Result<Gard, GardError> {
        Ok(Gard {
            dir: dir.to_owned(),
            store,
            storage_key: read_storage_key(dir)?,
            waiting: Mutex::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records a new, pending facility and returns its one-time registration code,
    /// valid for `code_valid_for`. An existing id is refused
    /// ([`GardError::FacilityExists`]; see [`Gard::new_code`]). A server facility added
    /// this way serves no name until [`Gard::set_serves`] gives it some; see
    /// [`Gard::add_facility_serving`].
    pub fn add_facility(
        &self,
        id: &str,
        name: &str,
        role: Role,
        code_valid_for: Duration,
    ) -> Result<String, GardError> {
        self.add_facility_serving(id, name, role, &[], code_valid_for)
    }

    /// [`Gard::add_facility`] with the receiving-application names (MSH-5) the facility
    /// may serve, in the same transaction. Names are checked with
    /// [`check_application_name`] (at most [`MAX_SERVES`]), kept ordered and without
    /// repeats; a [`Role::Client`] facility serves none
    /// ([`GardError::ServesForClient`] when `serves` is not empty).
    pub fn add_facility_serving(
        &self,
        id: &str,
        name: &str,
        role: Role,
        serves: &[String],
        code_valid_for: Duration,
    ) -> Result<String, GardError> {
        check_facility_id(id)?;
        check_facility_name(name)?;
        let serves = checked_serves(serves)?;
        if role == Role::Client && !serves.is_empty() {
            return Err(GardError::ServesForClient(id.to_owned()));
        }
        let (code, record) = new_code_record(id, code_valid_for)?;
        let facility = Facility {
            id: id.to_owned(),
            name: name.to_owned(),
            role,
            status: Status::Pending,
            created_at: record.created_at,
            registered_at: None,
            cert_serial: None,
            cert_not_after: None,
            key_id: None,
            serves,
        };
        if self.store.add_facility(&facility, &record)? {
            Ok(code)
        } else {
            Err(GardError::FacilityExists(id.to_owned()))
        }
    }

    /// A new one-time registration code for an existing facility, replacing any code it
    /// had. Registering with it rotates the facility's certificate and envelope key; until
    /// then the current ones keep working. Refused for a revoked facility.
    pub fn new_code(&self, id: &str, code_valid_for: Duration) -> Result<String, GardError> {
        check_facility_id(id)?;
        let (code, record) = new_code_record(id, code_valid_for)?;
        match self.store.set_code(id, &record)? {
            None => Err(GardError::UnknownFacility(id.to_owned())),
            Some(Status::Revoked) => Err(GardError::FacilityRevoked(id.to_owned())),
            Some(Status::Pending | Status::Active) => Ok(code),
        }
    }

    /// Replaces the receiving-application names the server facility `id` may serve
    /// (checked as for [`Gard::add_facility_serving`]; an empty list serves nothing) and
    /// moves the generation counter, so that a gateway notices. Refused for an unknown
    /// facility, a client facility ([`GardError::NotAServer`]) and a revoked one. A
    /// gateway checks the list when an application asks to serve; one already serving a
    /// name taken from it is closed when the gateway sees the change (its part).
    pub fn set_serves(&self, id: &str, serves: &[String]) -> Result<(), GardError> {
        check_facility_id(id)?;
        let serves = checked_serves(serves)?;
        match self.store.set_serves(id, &serves)? {
            None => Err(GardError::UnknownFacility(id.to_owned())),
            Some((Role::Client, _)) => Err(GardError::NotAServer(id.to_owned())),
            Some((Role::Server, Status::Revoked)) => Err(GardError::FacilityRevoked(id.to_owned())),
            Some((Role::Server, Status::Pending | Status::Active)) => Ok(()),
        }
    }

    /// Every facility, ordered by id.
    pub fn facilities(&self) -> Result<Vec<Facility>, GardError> {
        Ok(self.store.facilities()?)
    }

    /// One facility, or `None` when there is none with this id.
    pub fn facility(&self, id: &str) -> Result<Option<Facility>, GardError> {
        if check_facility_id(id).is_err() {
            return Ok(None);
        }
        Ok(self.store.facility(id)?)
    }

    /// The state of the facility's registration code, or `None` when it has none (or
    /// there is no such facility).
    pub fn code_info(&self, id: &str) -> Result<Option<CodeInfo>, GardError> {
        if check_facility_id(id).is_err() {
            return Ok(None);
        }
        Ok(self
            .store
            .registration_state(id)?
            .and_then(|state| state.code)
            .map(|code| CodeInfo {
                created_at: code.created_at,
                expires_at: code.expires_at,
                used_at: code.used_at,
            }))
    }

    /// Revokes a facility, for good: from now on [`Gard::authenticate`] refuses its
    /// certificate and [`Gard::register`] its codes. Revoking a revoked facility does
    /// nothing. Closing live connections is the gateway's part (see [`Gard::generation`]).
    pub fn revoke(&self, id: &str) -> Result<(), GardError> {
        check_facility_id(id)?;
        match self.store.revoke(id, Timestamp::now())? {
            None => Err(GardError::UnknownFacility(id.to_owned())),
            Some(_) => Ok(()),
        }
    }

    /// Registers `facility` with its one-time `code` and the DER certificate signing
    /// request `csr_der`, from the address `peer`.
    ///
    /// The order of the checks: the limits on failed attempts, then the code (an unknown
    /// facility, a wrong code and a used code are all [`RegisterError::Refused`]; a right
    /// code is then refused as [`RegisterError::Revoked`] or [`RegisterError::Expired`]),
    /// then the request.
    ///
    /// The limits (kept in the store, so every gateway sharing the directory, and a
    /// restarted one, sees the same failures): an address (IPv6 per /64) with 5 failures
    /// in the last 15 minutes is refused ([`RegisterError::RateLimited`]) until they age
    /// out. A facility id with 5 or more failures in the last 15 minutes, from anywhere,
    /// is slowed down, not locked: each attempt for it first waits 250 ms, doubling with
    /// each further failure up to 4 seconds, so a guesser gains nothing while the
    /// facility itself, from a clean address, still registers. While slowed down, one
    /// address has at most one attempt waiting per gateway (and a gateway at most 64);
    /// more are refused as [`RegisterError::RateLimited`].
    ///
    /// The wait blocks the calling thread: call this from a thread that may block (the
    /// gateway uses `spawn_blocking`).
    pub fn register(
        &self,
        facility: &str,
        code: &str,
        csr_der: &[u8],
        peer: IpAddr,
    ) -> Result<Registration, RegisterError> {
        let now = Timestamp::now();
        let since = ago(now, limit::WINDOW);
        let address = limit::address_key(peer);
        if self.store.failures(&address, since)? >= limit::MAX_FAILURES {
            return Err(RegisterError::RateLimited);
        }
        let facility_key = limit::facility_key(facility);
        let _turn = match &facility_key {
            Some(key) => {
                let delay = limit::delay(self.store.failures(key, since)?);
                if delay.is_zero() {
                    None
                } else {
                    let turn =
                        limit::Turn::take(&self.waiting, peer).ok_or(RegisterError::RateLimited)?;
                    std::thread::sleep(delay);
                    Some(turn)
                }
            }
            None => None,
        };
        let result = self.register_checked(facility, code, csr_der, peer);
        if let Err(
            RegisterError::Refused
            | RegisterError::Expired
            | RegisterError::Revoked
            | RegisterError::BadCsr,
        ) = &result
        {
            let mut keys = vec![address];
            keys.extend(facility_key);
            let now = Timestamp::now();
            // The attempt failed whatever happens here; a store that cannot record the
            // failure cannot answer the next attempt's check either.
            let _ = self
                .store
                .record_failures(&keys, now, ago(now, limit::WINDOW));
        }
        result
    }

    /// A client certificate for `facility` from its signing request, signed by the CA.
    fn issue_client(
        &self,
        ca_pem: &str,
        facility: &str,
        csr_der: &[u8],
        now: Timestamp,
    ) -> Result<pki::Issued, RegisterError> {
        let ca_key = files::read_private(&self.dir.join(files::CA_KEY))?;
        let ca_key = std::str::from_utf8(&ca_key).map_err(|_| GardError::BadFile {
            path: self.dir.join(files::CA_KEY),
            expected: "a PEM private key",
        })?;
        match pki::issue_client(ca_pem, ca_key, facility, csr_der, now) {
            Ok(issued) => Ok(issued),
            Err(pki::IssueError::BadCsr) => Err(RegisterError::BadCsr),
            Err(pki::IssueError::Gard(e)) => Err(e.into()),
        }
    }

    fn register_checked(
        &self,
        facility: &str,
        code: &str,
        csr_der: &[u8],
        peer: IpAddr,
    ) -> Result<Registration, RegisterError> {
        check_facility_id(facility).map_err(|_| RegisterError::Refused)?;
        let symbols = code::normalise(code).ok_or(RegisterError::Refused)?;
        let hash = code::hash(facility, &symbols);
        let state = self
            .store
            .registration_state(facility)?
            .ok_or(RegisterError::Refused)?;
        let stored = state.code.as_ref().ok_or(RegisterError::Refused)?;
        if !code::same_hash(&hash, &stored.hash) || stored.used_at.is_some() {
            return Err(RegisterError::Refused);
        }
        if state.status == Status::Revoked {
            return Err(RegisterError::Revoked);
        }
        let now = Timestamp::now();
        if now >= stored.expires_at {
            return Err(RegisterError::Expired);
        }

        let ca_pem = self.ca_pem()?;
        let issued = self.issue_client(&ca_pem, facility, csr_der, now)?;

        let key_id = match state.key_id {
            None => 1,
            Some(id) => id
                .checked_add(1)
                .ok_or_else(|| GardError::KeyIdsExhausted(facility.to_owned()))?,
        };
        let key = MasterKey::generate(key_id).map_err(GardError::from)?;
        let completion = Completion {
            facility: facility.to_owned(),
            code_hash: hash,
            previous_key_id: state.key_id,
            key_id,
            sealed_key: seal::seal(&self.storage_key, facility, &key)?,
            cert_serial: issued.serial,
            cert_not_after: issued.not_after,
            at: now,
            peer,
        };
        // Between the read above and here, another process may have replaced the code,
        // revoked the facility or registered it: the store then changes nothing.
        if !self.store.complete_registration(&completion)? {
            return Err(RegisterError::Refused);
        }
        Ok(Registration {
            certificate_pem: issued.pem,
            ca_pem,
            key,
        })
    }

    /// Issues a new certificate for the registered, active facility `facility` from its
    /// certificate signing request (a new key pair), before the current one expires and
    /// without a new registration: the envelope key stays; the old certificate stops
    /// being accepted for new connections. The gateway calls this for a facility that
    /// asks over its authenticated connection (`hnsecure client renew`); an operator can
    /// call it for a CSR the facility sent another way (`hnsecure gard renew`).
    ///
    /// [`RegisterError::Refused`] when the facility is unknown, not registered, or was
    /// renewed or re-registered at the same moment; [`RegisterError::Revoked`];
    /// [`RegisterError::BadCsr`].
    pub fn renew(&self, facility: &str, csr_der: &[u8]) -> Result<Renewal, RegisterError> {
        check_facility_id(facility).map_err(|_| RegisterError::Refused)?;
        let credential = self
            .store
            .credential(facility)?
            .ok_or(RegisterError::Refused)?;
        match credential.status {
            Status::Revoked => return Err(RegisterError::Revoked),
            Status::Pending => return Err(RegisterError::Refused),
            Status::Active => {}
        }
        let previous = credential.cert_serial.ok_or(RegisterError::Refused)?;
        let now = Timestamp::now();
        let issued = self.issue_client(&self.ca_pem()?, facility, csr_der, now)?;
        if !self
            .store
            .renew_certificate(facility, &previous, &issued.serial, issued.not_after)?
        {
            return Err(RegisterError::Refused);
        }
        Ok(Renewal {
            certificate_pem: issued.pem,
            not_after: issued.not_after,
        })
    }

    /// Who the TLS client certificate `cert_der` belongs to, and the envelope key to use
    /// for it. The TLS layer has already checked that it chains to the directory's CA;
    /// this checks that it is the facility's current certificate, that the facility is
    /// not revoked and that the certificate has not expired. One query and one decryption.
    pub fn authenticate(&self, cert_der: &[u8]) -> Result<Peer, AuthError> {
        let identity = pki::identity(cert_der).ok_or(AuthError::UnknownCertificate)?;
        check_facility_id(&identity.facility).map_err(|_| AuthError::UnknownCertificate)?;
        let credential = self
            .store
            .credential(&identity.facility)?
            .ok_or(AuthError::UnknownCertificate)?;
        if credential.status == Status::Revoked {
            return Err(AuthError::Revoked);
        }
        let (Some(serial), Some(not_after), Some(key_id), Some(sealed)) = (
            credential.cert_serial,
            credential.cert_not_after,
            credential.key_id,
            credential.sealed_key,
        ) else {
            return Err(AuthError::NotRegistered);
        };
        if serial != identity.serial {
            return Err(AuthError::UnknownCertificate);
        }
        if Timestamp::now() >= not_after {
            return Err(AuthError::Expired);
        }
        let key = seal::unseal(&self.storage_key, &identity.facility, key_id, &sealed)?;
        Ok(Peer {
            facility: identity.facility,
            role: credential.role,
            serves: credential.serves,
            key,
        })
    }

    /// The generation counter: it increases with every change to the directory (a new
    /// facility, a new code, a registration, a revocation, a new list of served names),
    /// whichever process made it.
    pub fn generation(&self) -> Result<u64, GardError> {
        Ok(self.store.generation()?)
    }

    /// The ids of the revoked facilities, ordered.
    pub fn revoked(&self) -> Result<Vec<String>, GardError> {
        Ok(self.store.revoked()?)
    }

    /// With `full`, journal commits wait for the disk (`audit_sync = "full"`); see
    /// [`Store::set_journal_sync`].
    pub fn set_journal_sync(&self, full: bool) -> Result<(), GardError> {
        Ok(self.store.set_journal_sync(full)?)
    }

    /// Appends records to the audit journal, all in one transaction. A gateway batches
    /// them: one call per batch costs about what one record costs.
    pub fn record_audit(&self, records: &[AuditRecord]) -> Result<(), GardError> {
        Ok(self.store.append_audit(records)?)
    }

    /// Appends records now, on this thread, when that costs no wait (see
    /// [`Store::try_append_audit_now`]); false when they were not written.
    pub fn try_record_audit_now(&self, records: &[AuditRecord]) -> bool {
        matches!(self.store.try_append_audit_now(records), Ok(true))
    }

    /// The audit records the filter selects, oldest first.
    pub fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, GardError> {
        Ok(self.store.audit(filter)?)
    }

    /// Deletes audit rows older than `retention` before now; returns how many.
    pub fn prune_audit(&self, retention: Duration) -> Result<u64, GardError> {
        Ok(self.store.prune_audit(ago(Timestamp::now(), retention))?)
    }

    /// True when `key` was seen within `window` before now (a duplicate, 2.4.8); otherwise
    /// records it now and returns false. Atomic across processes: when two gateways
    /// sharing a directory check the same key at once, one of them gets `true`.
    pub fn check_duplicate(&self, key: &DuplicateKey, window: Duration) -> Result<bool, GardError> {
        let now = Timestamp::now();
        Ok(self.store.check_duplicate(key, now, ago(now, window))?)
    }

    /// Forgets duplicate keys older than `window`; returns how many.
    pub fn prune_duplicates(&self, window: Duration) -> Result<u64, GardError> {
        Ok(self.store.prune_duplicates(ago(Timestamp::now(), window))?)
    }

    /// The gateway's certificate chain and key, and the CA for client certificates.
    pub fn server_material(&self) -> Result<ServerMaterial, GardError> {
        let gate_path = self.dir.join(files::GATE_CERT);
        let gate =
            CertificateDer::from_pem_slice(&files::read_public(&gate_path)?).map_err(|_| {
                GardError::BadFile {
                    path: gate_path,
                    expected: "a PEM certificate",
                }
            })?;
        let ca = self.ca_der()?;
        let key_path = self.dir.join(files::GATE_KEY);
        let key =
            PrivateKeyDer::from_pem_slice(&files::read_private(&key_path)?).map_err(|_| {
                GardError::BadFile {
                    path: key_path,
                    expected: "a PEM private key",
                }
            })?;
        Ok(ServerMaterial {
            chain: vec![gate, ca.clone()],
            key,
            ca,
        })
    }

    /// The CA certificate, PEM: what a facility's client trusts for the gateway.
    pub fn ca_pem(&self) -> Result<String, GardError> {
        let path = self.dir.join(files::CA_CERT);
        String::from_utf8(files::read_public(&path)?).map_err(|_| GardError::BadFile {
            path,
            expected: "a PEM certificate",
        })
    }

    /// The SHA-256 fingerprint of the CA certificate, `AB:CD:…`, for people to compare.
    pub fn ca_fingerprint(&self) -> Result<String, GardError> {
        Ok(pki::fingerprint(&self.ca_der()?))
    }

    fn ca_der(&self) -> Result<CertificateDer<'static>, GardError> {
        let path = self.dir.join(files::CA_CERT);
        CertificateDer::from_pem_slice(&files::read_public(&path)?).map_err(|_| {
            GardError::BadFile {
                path,
                expected: "a PEM certificate",
            }
        })
    }
}

/// The instant `span` before `now`, or the earliest instant there is when `span` reaches
/// past it.
fn ago(now: Timestamp, span: Duration) -> Timestamp {
    SignedDuration::try_from(span)
        .ok()
        .and_then(|span| now.checked_sub(span).ok())
        .unwrap_or(Timestamp::MIN)
}

fn read_storage_key(dir: &Path) -> Result<Zeroizing<[u8; 32]>, GardError> {
    let path = dir.join(files::STORAGE_KEY);
    let bytes = files::read_private(&path)?;
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(GardError::BadFile {
            path,
            expected: "32 bytes",
        });
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

#[cfg(test)]
mod tests;
