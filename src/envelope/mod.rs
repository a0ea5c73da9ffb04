//! The per-transaction envelope (DESIGN 3.5; Volume 5, 2.4.10: "each transaction is
//! encrypted using a unique triple DES key").
//!
//! Every facility shares a 256-bit master key with HNGard, made at registration and
//! identified by a key id. Each request and each response is sealed under keys derived
//! from it and a fresh random nonce. No I/O happens here.
//!
//! # Wire format (version 1)
//!
//! All integers are big-endian (hosts include AIX and Windows).
//!
//! | size | field |
//! |---|---|
//! | 1 | version = 1 |
//! | 1 | direction: 1 request, 2 response |
//! | 1 | facility id length `n`, 1..=32 |
//! | `n` | facility id: printable ASCII (space to `~`) |
//! | 4 | key id (u32) |
//! | 8 | timestamp: milliseconds since the Unix epoch when sealed (u64) |
//! | 16 | nonce: fresh random bytes from the operating system |
//! | 16 | reply_to: in a response, the nonce of the request it answers; in a request, zero |
//! | 4 | ciphertext length `c` (u32): a non-zero multiple of 8 |
//! | `c` | ciphertext: TDES-EDE3-CBC with PKCS#7 padding |
//! | 32 | tag: HMAC-SHA256 over every byte before it (encrypt-then-MAC) |
//!
//! Nothing follows the tag. An envelope is therefore `83 + n + c` bytes long, and `c` is
//! the plaintext length rounded up to the next multiple of 8 (a whole block of padding
//! when the plaintext is already a multiple of 8, so an empty plaintext has `c = 8`).
//!
//! # Keys
//!
//! For every envelope, HKDF-SHA256 with salt = the nonce, input key material = the
//! 32-byte master key, and info = `b"hnsecure envelope v1"` followed by the direction
//! byte yields 64 bytes: bytes `0..24` are the 3DES key (EDE3, three independent
//! DES keys, parity bits ignored), `24..32` the CBC IV, and `32..64` the HMAC-SHA256 key.
//! The derived bytes and the cipher and MAC states are wiped after use.
//!
//! # Opening
//!
//! [`open`] checks the structure, refuses a key id other than its key's
//! ([`EnvelopeError::KeyMismatch`]) and a direction other than the expected one
//! ([`EnvelopeError::WrongDirection`]), then verifies the tag in constant time before
//! any decryption ([`EnvelopeError::BadMac`]); only an envelope with a good tag is
//! decrypted, and a padding error after a good tag is [`EnvelopeError::BadPadding`].
//! The receiver also passes the header through a [`ReplayGuard`], which refuses a
//! nonce seen before and a timestamp outside its window.
//!
//! [`read_header`] reads the clear header without any cryptography, so that a gateway
//! can find the facility's key before opening.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

mod replay;
mod seal;

pub use replay::ReplayGuard;
pub use seal::{open, read_header, seal};

/// A facility's 256-bit envelope master key and its key id. Zeroed when dropped; its
/// `Debug` form never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    id: u32,
    bytes: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    /// The key `bytes` with the id `id`.
    pub fn new(id: u32, bytes: [u8; 32]) -> Self {
        Self {
            id,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A new random key from the operating system's generator.
    pub fn generate(id: u32) -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())?;
        Ok(Self { id, bytes })
    }

    /// The key id, named in every envelope sealed with this key.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key itself.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("bytes", &"MASKED")
            .finish()
    }
}

/// The length of a nonce, in bytes.
pub const NONCE_LEN: usize = 16;

/// A nonce: 16 random bytes, fresh for every envelope.
pub type Nonce = [u8; NONCE_LEN];

/// The longest facility id an envelope can name, in bytes.
pub const MAX_FACILITY_LEN: usize = 32;

/// The envelope format version this module writes and reads.
pub const VERSION: u8 = 1;

/// The length of the HMAC-SHA256 tag that ends every envelope, in bytes.
pub const TAG_LEN: usize = 32;

/// Which way an envelope travels. Its byte on the wire is the discriminant, and it is
/// bound into the key derivation, so a request can never be replayed as a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    /// From a facility to the gateway (and on to a receiving application).
    Request = 1,
    /// The answer to a request, back to the facility.
    Response = 2,
}

impl Direction {
    /// The direction's byte on the wire.
    pub fn as_byte(self) -> u8 {
        self as u8
    }

    /// The direction written as `byte` on the wire, if it is one.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Request),
            2 => Some(Self::Response),
            _ => None,
        }
    }
}

/// The clear part of an envelope: everything before the ciphertext length. It is not
/// secret, but every byte of it is covered by the tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version, [`VERSION`].
    pub version: u8,
    /// Which way the envelope travels.
    pub direction: Direction,
    /// The facility id: printable ASCII, 1 to [`MAX_FACILITY_LEN`] bytes.
    pub facility: String,
    /// The id of the master key the envelope was sealed with.
    pub key_id: u32,
    /// Milliseconds since the Unix epoch, when sealed.
    pub timestamp_ms: u64,
    /// The envelope's fresh random nonce.
    pub nonce: Nonce,
    /// In a response, the nonce of the request it answers; in a request, all zero.
    pub reply_to: Nonce,
}

/// A sealed envelope, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The whole envelope, as laid out in the [module documentation](self).
    pub bytes: Vec<u8>,
    /// The nonce it was sealed with: a response to it names this nonce as `reply_to`.
    pub nonce: Nonce,
}

/// An envelope whose tag was verified, decrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its header.
    pub header: Header,
    /// The bytes that were sealed.
    pub plaintext: Vec<u8>,
}

/// Shows the header and the plaintext's length only: the plaintext is an HL7 message
/// and may hold personal health information.
impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("header", &self.header)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

/// Why an envelope could not be sealed, opened or accepted. Carries no data from the
/// envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes end before the envelope does.
    Truncated,
    /// The lengths do not add up: a ciphertext length that is zero or not a multiple of
    /// 8, or bytes after the tag.
    Malformed,
    /// The version byte is not one this module reads.
    UnsupportedVersion,
    /// The direction byte is neither request (1) nor response (2).
    BadDirection,
    /// The envelope travels the other way from the one expected.
    WrongDirection,
    /// The facility id is empty, longer than [`MAX_FACILITY_LEN`] bytes, or not
    /// printable ASCII.
    BadFacility,
    /// The envelope names a key id other than the key it is opened with.
    KeyMismatch,
    /// The tag does not match: the envelope was altered or sealed with another key.
    BadMac,
    /// The tag matched but the decrypted padding is invalid.
    BadPadding,
    /// The timestamp is outside the accepted window around now.
    OutsideWindow,
    /// The nonce was seen before: the envelope is a replay.
    Replayed,
    /// The replay guard is full of unexpired nonces and refuses more.
    ReplayCacheFull,
    /// The plaintext is too large for one envelope.
    TooLarge,
    /// The operating system's random generator failed.
    Random,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "the envelope is truncated",
            Self::Malformed => "the envelope's lengths are inconsistent",
            Self::UnsupportedVersion => "the envelope's format version is not supported",
            Self::BadDirection => "the envelope's direction is neither request nor response",
            Self::WrongDirection => "the envelope travels in the wrong direction",
            Self::BadFacility => "the facility id is not 1 to 32 bytes of printable ASCII",
            Self::KeyMismatch => "the envelope was sealed under a different key id",
            Self::BadMac => {
                "the envelope failed authentication: it was altered or sealed with another key"
            }
            Self::BadPadding => "the envelope's decrypted padding is invalid",
            Self::OutsideWindow => "the envelope's timestamp is outside the accepted window",
            Self::Replayed => "the envelope was already received once: replay refused",
            Self::ReplayCacheFull => "the replay guard is full, so the envelope was refused",
            Self::TooLarge => "the message is too large for one envelope",
            Self::Random => "the operating system's random number generator failed",
        })
    }
}

impl std::error::Error for EnvelopeError {}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_never_printed() {
        let a = MasterKey::generate(1).unwrap();
        let b = MasterKey::generate(1).unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let shown = format!("{a:?}");
        assert!(
            shown.contains("MASKED") && shown.contains("id: 1"),
            "{shown}"
        );
        assert!(!shown.contains(&format!("{:?}", a.as_bytes())), "{shown}");
    }

    #[test]
    fn directions_have_fixed_bytes() {
        assert_eq!(Direction::Request.as_byte(), 1);
        assert_eq!(Direction::Response.as_byte(), 2);
        for byte in 0..=255u8 {
            match Direction::from_byte(byte) {
                Some(d) => assert_eq!(d.as_byte(), byte),
                None => assert!(byte != 1 && byte != 2),
            }
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn opened_debug_hides_the_plaintext() {
        let opened = Opened {
            header: Header {
                version: 1,
                direction: Direction::Request,
                facility: "BC01000030".into(),
                key_id: 7,
                timestamp_ms: 0,
                nonce: [0; NONCE_LEN],
                reply_to: [0; NONCE_LEN],
            },
            plaintext: b"PID||9865821574".to_vec(),
        };
        let shown = format!("{opened:?}");
        assert!(shown.contains("plaintext_len: 15"), "{shown}");
        assert!(
            !shown.contains("9865821574") && !shown.contains("57, 56"),
            "{shown}"
        );
    }

    #[test]
    fn every_error_has_its_own_sentence() {
        use EnvelopeError::*;
        let all = [
            Truncated,
            Malformed,
            UnsupportedVersion,
            BadDirection,
            WrongDirection,
            BadFacility,
            KeyMismatch,
            BadMac,
            BadPadding,
            OutsideWindow,
            Replayed,
            ReplayCacheFull,
            TooLarge,
            Random,
        ];
        let texts: std::collections::HashSet<String> = all.iter().map(|e| e.to_string()).collect();
        assert_eq!(texts.len(), all.len());
        assert!(texts.iter().all(|t| !t.is_empty() && !t.ends_with('.')));
    }
}
