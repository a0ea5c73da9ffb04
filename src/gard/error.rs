//! The errors of the directory: one enum for administration and storage, one for a
//! registration attempt and one for the check of a TLS client certificate.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

use super::store::StoreError;

/// Why a directory operation failed. Each message is one sentence naming the file or the
/// facility concerned; none carries a key, a code or other secret.
#[non_exhaustive]
#[derive(Debug)]
pub enum GardError {
    /// The directory holds no HNGard directory (no `gard.db` and no `gard.toml`).
    NotInitialised {
        /// The directory.
        dir: PathBuf,
    },
    /// `init` found an HNGard file already there.
    AlreadyInitialised {
        /// The file found.
        path: PathBuf,
    },
    /// Reading, writing or creating a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "create" or "read".
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// A key or certificate file does not hold what it should.
    BadFile {
        /// The file.
        path: PathBuf,
        /// What it should hold, e.g. "a PEM certificate".
        expected: &'static str,
    },
    /// A key file may be read or written by other users.
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// On Windows: a key file's access control list lets another account read or change
    /// it.
    InsecureAccess {
        /// The file.
        path: PathBuf,
        /// The account (its SID) and what it may do, e.g. "S-1-1-0 may read it".
        who: String,
    },
    /// `gard.toml` is not valid.
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, in one sentence that never quotes a password.
        reason: String,
    },
    /// The directory database failed.
    Store(StoreError),
    /// The text is not a facility id: 1 to 32 characters `A-Z`, `0-9` and `-`.
    InvalidFacilityId(String),
    /// A facility name must be 1 to 100 printable characters.
    InvalidName,
    /// The text is not a receiving-application name
    /// ([`check_application_name`](super::check_application_name)).
    InvalidApplicationName(String),
    /// More receiving-application names than [`MAX_SERVES`](super::MAX_SERVES) (the count given).
    TooManyApplications(usize),
    /// Served names were given for a client-role facility, which serves none.
    ServesForClient(String),
    /// The facility is a client, not a server: it serves no names.
    NotAServer(String),
    /// The text is neither a DNS name nor an IP address.
    InvalidSubjectAltName(String),
    /// A registration code validity too long to represent.
    InvalidValidity,
    /// `add` of a facility id already in the directory.
    FacilityExists(String),
    /// No facility with this id.
    UnknownFacility(String),
    /// The facility is revoked; revocation is final.
    FacilityRevoked(String),
    /// The facility has used up its key ids (2³² − 1 registrations).
    KeyIdsExhausted(String),
    /// Making a key or certificate failed.
    Certificate(rcgen::Error),
    /// The operating system's random generator failed.
    Random(getrandom::Error),
    /// A stored envelope key does not decrypt under `storage.key`: the database or the
    /// key file was changed or swapped.
    SealedKey {
        /// The facility.
        facility: String,
        /// The key id.
        key_id: u32,
    },
}

impl fmt::Display for GardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInitialised { dir } => write!(
                f,
                "{} is not an HNGard directory (it has no gard.db or gard.toml); create one with `hnsecure gard init`",
                dir.display()
            ),
            Self::AlreadyInitialised { path } => write!(
                f,
                "{} already exists: the directory is already initialised, and init never overwrites it",
                path.display()
            ),
            Self::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            Self::BadFile { path, expected } => {
                write!(f, "{} does not hold {expected}", path.display())
            }
            Self::InsecurePermissions { path, mode } => write!(
                f,
                "{} is accessible to other users (mode {:04o}); make it private with `chmod 600`",
                path.display(),
                mode & 0o7777
            ),
            Self::InsecureAccess { path, who } => write!(
                f,
                "{} is accessible to other users ({who}); remove their access (Properties, Security) so only its owner has any",
                path.display()
            ),
            Self::Config { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::Store(e) => e.fmt(f),
            Self::InvalidFacilityId(id) => write!(
                f,
                "{id:?} is not a facility id: use 1 to 32 characters A-Z, 0-9 and - (upper case)"
            ),
            Self::InvalidName => {
                f.write_str("a facility name must be 1 to 100 printable characters")
            }
            Self::InvalidApplicationName(name) => write!(
                f,
                "{name:?} is not a receiving-application name: use 1 to 64 printable ASCII \
                 characters, no leading or trailing space, and none of the HL7 delimiters | ^ ~ \\ &"
            ),
            Self::TooManyApplications(n) => write!(
                f,
                "{n} receiving-application names given; a facility serves at most {}",
                super::MAX_SERVES
            ),
            Self::ServesForClient(id) => write!(
                f,
                "facility {id} has the role client, which serves no receiving applications; \
                 give --role server"
            ),
            Self::NotAServer(id) => write!(
                f,
                "facility {id} has the role client: only a server facility serves receiving applications"
            ),
            Self::InvalidSubjectAltName(name) => write!(
                f,
                "{name:?} is neither a DNS name nor an IP address for the gateway certificate"
            ),
            Self::InvalidValidity => f.write_str("the registration code validity is too long"),
            Self::FacilityExists(id) => write!(f, "facility {id} already exists"),
            Self::UnknownFacility(id) => write!(f, "there is no facility {id} in the directory"),
            Self::FacilityRevoked(id) => {
                write!(f, "facility {id} is revoked, and revocation is final")
            }
            Self::KeyIdsExhausted(id) => {
                write!(f, "facility {id} has used every envelope key id")
            }
            Self::Certificate(e) => write!(f, "cannot make a key or certificate: {e}"),
            Self::Random(e) => write!(f, "the operating system's random generator failed: {e}"),
            Self::SealedKey { facility, key_id } => write!(
                f,
                "envelope key {key_id} of facility {facility} does not decrypt with storage.key: \
                 the database or the key file was changed"
            ),
        }
    }
}

impl Error for GardError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Store(e) => Some(e),
            Self::Certificate(e) => Some(e),
            Self::Random(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for GardError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<rcgen::Error> for GardError {
    fn from(e: rcgen::Error) -> Self {
        Self::Certificate(e)
    }
}

impl From<getrandom::Error> for GardError {
    fn from(e: getrandom::Error) -> Self {
        Self::Random(e)
    }
}

/// Why a registration was refused. The answer to the registering client should say no
/// more than the variant: [`RegisterError::Refused`] deliberately does not tell an unknown
/// facility from a wrong or used code.
#[non_exhaustive]
#[derive(Debug)]
pub enum RegisterError {
    /// Unknown facility, wrong code or a code already used.
    Refused,
    /// The code was right but has expired; the operator can issue a new one.
    Expired,
    /// Too many failed attempts for this facility or from this address lately.
    RateLimited,
    /// The facility is revoked.
    Revoked,
    /// The certificate signing request is unreadable, its signature is wrong, or its key is
    /// not ECDSA P-256/P-384, Ed25519 or RSA of 2048 to 8192 bits.
    BadCsr,
    /// The directory could not complete the registration (database, files, randomness).
    Store(GardError),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str(
                "registration refused: unknown facility, or a wrong or already used code",
            ),
            Self::Expired => f.write_str("the registration code has expired"),
            Self::RateLimited => {
                f.write_str("too many failed registration attempts; try again later")
            }
            Self::Revoked => f.write_str("the facility is revoked"),
            Self::BadCsr => f.write_str(
                "the certificate signing request is unreadable or its key type is not accepted",
            ),
            Self::Store(e) => write!(f, "the registration could not be completed: {e}"),
        }
    }
}

impl Error for RegisterError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<GardError> for RegisterError {
    fn from(e: GardError) -> Self {
        Self::Store(e)
    }
}

impl From<StoreError> for RegisterError {
    fn from(e: StoreError) -> Self {
        Self::Store(GardError::Store(e))
    }
}

/// Why a TLS client certificate does not admit its holder.
#[non_exhaustive]
#[derive(Debug)]
pub enum AuthError {
    /// No such facility, no readable facility id in the certificate, or not the
    /// facility's current certificate (e.g. one replaced by a re-registration).
    UnknownCertificate,
    /// The facility exists but has never registered.
    NotRegistered,
    /// The facility is revoked.
    Revoked,
    /// The facility's certificate has expired; it must register again.
    Expired,
    /// The directory could not be read, or the envelope key not decrypted.
    Store(GardError),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCertificate => {
                f.write_str("the certificate is not the current one of any facility")
            }
            Self::NotRegistered => f.write_str("the facility has not registered"),
            Self::Revoked => f.write_str("the facility is revoked"),
            Self::Expired => f.write_str("the facility's certificate has expired"),
            Self::Store(e) => write!(f, "the directory cannot check the certificate: {e}"),
        }
    }
}

impl Error for AuthError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<GardError> for AuthError {
    fn from(e: GardError) -> Self {
        Self::Store(e)
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        Self::Store(GardError::Store(e))
    }
}
