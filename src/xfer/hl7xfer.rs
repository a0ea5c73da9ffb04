//! HL7Xfer: the socket protocol of HNClient 4.1.d, both ends, without I/O (DESIGN 3.3).
//!
//! One transaction per TCP connection. The **listener** (an HNCLIENT, here the
//! `hnsecure client` daemon) speaks first; the **originator** (the application, or
//! HNAPI in legacy mode) answers the challenge, names its station, sends one message
//! and reads one response; then the listener closes.
//!
//! # Bytes on the wire, and the seed of each block
//!
//! `k` is the connection's seed. Every block marked "scrambled" is scrambled on its own:
//! it starts again from its seed (see [`scramble`](super::scramble)).
//!
//! | step | from | bytes | length | scrambled with |
//! |---|---|---|---|---|
//! | 1 | listener | `HS0000000008` | 12 | not scrambled |
//! | 1 | listener | challenge `c`, 8 random bytes | 8 | not scrambled |
//! | 2 | originator | `HS0000000008` | 12 | not scrambled |
//! | 2 | originator | echo `e = scramble(c, 0)` | 8 | seed 0 |
//! | — | both | `k = e[7]`, the last byte of the echo (= `c[0] ^ … ^ c[7]`) | | |
//! | 3 | originator | `SI0000000032` | 12 | `k` |
//! | 3 | originator | station id: `A`, host name (16, space-padded), IP address (15, space-padded) | 32 | `k` |
//! | 4 | originator | `DT` and the message length in 10 decimal digits | 12 | `k` |
//! | 4 | originator | the HL7 message | that length | `k` |
//! | 5 | listener | `DT` and the response length in 10 decimal digits | 12 | `k` |
//! | 5 | listener | the response | that length | `k` |
//!
//! Worked example: challenge `01 02 03 04 05 06 07 08`, station `h` / `1.2.3.4`,
//! message `MSH|`, response `OK` (all values hexadecimal).
//!
//! ```text
//! echo, seed 0:    01^00=01 02^01=03 03^03=00 04^00=04 05^04=01 06^01=07 07^07=00 08^00=08
//!                  → 01 03 00 04 01 07 00 08                         k = e[7] = 08
//! SI header, k:    'S' 53^08=5B  'I' 49^5B=12  '0' 30^12=22  '0' 30^22=12 …  '3' 33^12=21  '2' 32^21=13
//!                  → 5B 12 22 12 22 12 22 12 22 12 21 13
//! station id, k:   'A' 41^08=49 (again from k, not from the 13 before it)  'h' 68^49=21 …
//! DT header, k:    "DT0000000004" → 4C 18 28 18 28 18 28 18 28 18 28 1C
//! message, k:      "MSH|"         → 45 16 5E 22   ('M' 4D^08=45 'S' 53^45=16 'H' 48^16=5E '|' 7C^5E=22)
//! response header: "DT0000000002" → 4C 18 28 18 28 18 28 18 28 18 28 1A
//! response, k:     "OK"           → 47 0C         ('O' 4F^08=47 'K' 4B^47=0C)
//! ```
//!
//! ```
//! use hnapi::xfer::hl7xfer::{Listener, Originator, StationId, greeting};
//!
//! // 1. The listener greets.
//! let challenge = [1, 2, 3, 4, 5, 6, 7, 8];
//! let listener = Listener::new(challenge, 1024);
//! let hello = greeting(&challenge);
//!
//! // 2–4. The originator answers with its whole request.
//! let mut request = Vec::new();
//! let originator = Originator::new(StationId::new("h", "1.2.3.4"), 1024)
//!     .feed(&hello, b"MSH|", &mut request)?;
//! assert_eq!(&request[..12], b"HS0000000008");
//! assert_eq!(request[12..20], [0x01, 0x03, 0x00, 0x04, 0x01, 0x07, 0x00, 0x08]);
//! assert_eq!(
//!     request[20..32],
//!     [0x5B, 0x12, 0x22, 0x12, 0x22, 0x12, 0x22, 0x12, 0x22, 0x12, 0x21, 0x13]
//! );
//! assert_eq!(request[32..34], [0x49, 0x21]);
//! assert_eq!(
//!     request[64..76],
//!     [0x4C, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x1C]
//! );
//! assert_eq!(request[76..], [0x45, 0x16, 0x5E, 0x22]);
//!
//! // The listener takes it (in whatever pieces it arrives) …
//! let Listener::Received(received) = listener.feed(&request).map_err(|r| r.error)? else {
//!     panic!("the request was incomplete");
//! };
//! assert_eq!(received.message(), b"MSH|");
//! assert_eq!(received.station(), &StationId::new("h", "1.2.3.4"));
//!
//! // 5. … and answers.
//! let (_message, _station, responder) = received.into_parts();
//! let mut response = Vec::new();
//! responder.respond(b"OK", &mut response)?;
//! assert_eq!(
//!     response,
//!     [0x4C, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x1A, 0x47, 0x0C]
//! );
//! let originator = originator.feed(&response, b"MSH|", &mut request)?;
//! assert_eq!(originator.response(), Some(&b"OK"[..]));
//! # Ok::<(), hnapi::xfer::hl7xfer::Hl7XferError>(())
//! ```
//!
//! # Where the table comes from
//!
//! DESIGN 3.3 gives the steps; the seeds follow from it and agree with the public code
//! that talks to HNClient 4.1.d: the Ministry's `HL7XferMessageSender` (Java, in
//! bcgov/moh-hnclient-v2's ReadyAPI plug-in, written for HNClient 4.1.d) scrambles the echo with seed 0, takes the last
//! scrambled echo byte as the seed, then scrambles the SI header, the station id, the DT
//! header and the message each from that seed, and unscrambles the response's DT header
//! and body the same way; the HealthGateway `SocketHNClientDelegate` (C#) does the
//! same. Both lay the station id out as `A`, 16 bytes of host name and 15 of IP address.
//! The HNClient V2 listener (Java) unscrambles the SI header and station id as one
//! 44-byte block; it only logs them, and that reading differs from the originators' only
//! in the station id's first byte. For that reason, and because the station id is
//! informational, [`StationId::parse`] does not check the `A`.
//!
//! # The two ends
//!
//! Each step is a type, consumed by `read` and returning the next ([`Step`]); input may
//! arrive in any pieces, one byte at a time included.
//!
//! - Listener: [`ExpectEcho`] → [`ExpectStationId`] → [`ExpectLength`] →
//!   [`ExpectMessage`] → [`Received`], which yields the message and a [`Responder`].
//!   [`Listener`] drives them over whatever bytes arrive.
//! - Originator: [`ExpectGreeting`] → [`Greeted`] (writes the request) →
//!   [`ExpectResponseLength`] → [`ExpectResponse`] → [`Responded`]. [`Originator`]
//!   drives them.
//!
//! A listener answers every failure with an AR ACK from `HNCLIENT` ([`listener_ack`]),
//! framed as a response ([`Rejected::answer`]), then closes. Errors carry positions and
//! kinds, never message bytes.

use std::fmt;

use super::scramble::{Unscrambler, scramble, unscramble};
use crate::hl7::{NetworkCode, NetworkComponent, network_ack};

/// The port existing tools expect an HNCLIENT to listen on (HNClient V2 uses 5555).
pub const DEFAULT_PORT: u16 = 19430;
/// The largest message (and response) accepted unless configured otherwise: 8 MiB, the
/// secure transport's default frame limit.
pub const DEFAULT_MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// The largest length 10 decimal digits can announce.
pub const MAX_LENGTH: u64 = 9_999_999_999;
/// The handshake segment header, sent by both ends, never scrambled.
pub const HS_HEADER: [u8; HEADER_LEN] = *b"HS0000000008";
/// The station id segment header, before scrambling.
pub const SI_HEADER: [u8; HEADER_LEN] = *b"SI0000000032";
/// Every segment header: two letters and ten decimal digits.
pub const HEADER_LEN: usize = 12;
/// The challenge: 8 random bytes.
pub const CHALLENGE_LEN: usize = 8;
/// The station id block.
pub const STATION_ID_LEN: usize = 32;
/// The seed the echo of the challenge is scrambled with.
pub const HANDSHAKE_SEED: u8 = 0;
/// The listener's greeting: [`HS_HEADER`] and the challenge.
pub const GREETING_LEN: usize = HEADER_LEN + CHALLENGE_LEN;

/// The listener's first bytes: `HS0000000008` and the challenge, not scrambled.
pub fn greeting(challenge: &[u8; CHALLENGE_LEN]) -> [u8; GREETING_LEN] {
    let mut out = [0; GREETING_LEN];
    out[..HEADER_LEN].copy_from_slice(&HS_HEADER);
    out[HEADER_LEN..].copy_from_slice(challenge);
    out
}

/// Where in the exchange a stream was when it failed or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Step 1 or 2: the greeting (originator) or its echo (listener).
    Handshake,
    /// Step 3: the SI header and the station id.
    StationId,
    /// Step 4 or 5: the DT header with the length.
    Length,
    /// Step 4 or 5: the message or the response.
    Message,
    /// The exchange is complete; nothing more may come.
    Done,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Handshake => "the handshake",
            Self::StationId => "the station id",
            Self::Length => "the DT header",
            Self::Message => "the message",
            Self::Done => "the end of the exchange",
        })
    }
}

/// Why an HL7Xfer exchange failed. Positions count from 0 within the block named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hl7XferError {
    /// The HS segment header was not `HS0000000008`: first wrong byte at `at`.
    WrongHsHeader {
        /// The first byte of the header that is wrong.
        at: usize,
    },
    /// The originator's echo, unscrambled, is not the challenge: first wrong byte at `at`.
    WrongEcho {
        /// The first byte of the 8 that is wrong.
        at: usize,
    },
    /// The SI segment header, unscrambled, was not `SI0000000032`.
    WrongSiHeader {
        /// The first byte of the header that is wrong.
        at: usize,
    },
    /// The DT segment header, unscrambled, did not start with `DT`.
    WrongDtHeader {
        /// 0 or 1.
        at: usize,
    },
    /// A byte of the DT header's 10-digit length was not a decimal digit.
    BadLengthDigit {
        /// The byte's position in the header, 2 to 11.
        at: usize,
    },
    /// The announced length is above the maximum in force.
    TooLarge {
        /// The length announced.
        length: u64,
        /// The maximum in force.
        max: usize,
    },
    /// Bytes came after the exchange was complete.
    TrailingBytes {
        /// How many arrived in the piece that held them.
        count: usize,
    },
    /// The stream ended before the exchange was complete.
    Ended {
        /// The step that was incomplete.
        stage: Stage,
        /// Bytes of that step's blocks received.
        received: usize,
    },
    /// The peer stopped sending before the exchange was complete (the caller's timeout).
    Stalled {
        /// The step that was incomplete.
        stage: Stage,
        /// Bytes of that step's blocks received.
        received: usize,
    },
    /// A message or response to send is longer than 10 decimal digits can announce.
    MessageTooLong {
        /// Its length.
        length: usize,
    },
}

impl fmt::Display for Hl7XferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongHsHeader { at } => {
                write!(f, "the HS segment header is wrong at byte {at}")
            }
            Self::WrongEcho { at } => {
                write!(
                    f,
                    "the answer to the handshake challenge is wrong at byte {at}"
                )
            }
            Self::WrongSiHeader { at } => {
                write!(f, "the SI segment header is wrong at byte {at}")
            }
            Self::WrongDtHeader { at } => {
                write!(f, "the DT segment header is wrong at byte {at}")
            }
            Self::BadLengthDigit { at } => {
                write!(f, "the DT length has a byte that is not a digit at {at}")
            }
            Self::TooLarge { length, max } => write!(
                f,
                "a message of {length} bytes was announced (the maximum is {max})"
            ),
            Self::TrailingBytes { count } => {
                write!(f, "{count} bytes came after the end of the exchange")
            }
            Self::Ended { stage, received } => write!(
                f,
                "the connection ended during {stage} ({received} bytes of it received)"
            ),
            Self::Stalled { stage, received } => write!(
                f,
                "the peer stopped sending during {stage} ({received} bytes of it received)"
            ),
            Self::MessageTooLong { length } => write!(
                f,
                "a message of {length} bytes is too long for HL7Xfer's 10-digit length"
            ),
        }
    }
}

impl std::error::Error for Hl7XferError {}

impl Hl7XferError {
    /// The code a listener (HNCLIENT) answers this failure with:
    ///
    /// | error | code |
    /// |---|---|
    /// | `WrongHsHeader`, `WrongEcho` | `XFER001E` handshake failed |
    /// | `WrongSiHeader`, `WrongDtHeader`, `BadLengthDigit`, `TrailingBytes` | `XFER002E` protocol error |
    /// | `TooLarge`, `MessageTooLong` | `XFER003E` message too large |
    /// | `Ended`, `Stalled` | `TXFR039E` no or partial exchange |
    ///
    /// An originator that fails (HNAPI in legacy mode) answers `RECV022E` instead.
    pub fn network_code(&self) -> NetworkCode {
        match self {
            Self::WrongHsHeader { .. } | Self::WrongEcho { .. } => NetworkCode::Xfer001E,
            Self::WrongSiHeader { .. }
            | Self::WrongDtHeader { .. }
            | Self::BadLengthDigit { .. }
            | Self::TrailingBytes { .. } => NetworkCode::Xfer002E,
            Self::TooLarge { .. } | Self::MessageTooLong { .. } => NetworkCode::Xfer003E,
            Self::Ended { .. } | Self::Stalled { .. } => NetworkCode::Txfr039E,
        }
    }
}

/// The AR ACK that answers a listener's `error` (DESIGN 3.3): from `HNCLIENT` with
/// network facility id `facility`, the code of [`Hl7XferError::network_code`], MSH-7
/// `timestamp` (pass [`now_pacific`](crate::hl7::now_pacific)). No request could be
/// read, so none is copied from: MSH-5, MSH-6 and MSH-10 are blank.
///
/// [`Rejected::answer`] frames it as a response for the originator.
pub fn listener_ack(error: &Hl7XferError, facility: &str, timestamp: &str) -> Vec<u8> {
    let detail = match error {
        Hl7XferError::TooLarge { length, max } => Some(format!("{length} > {max} bytes")),
        Hl7XferError::MessageTooLong { length } => Some(format!("{length} bytes")),
        _ => None,
    };
    network_ack(
        None,
        NetworkComponent::Hnclient,
        facility,
        error.network_code(),
        detail.as_deref(),
        timestamp,
    )
}

/// The workstation an originator names in step 3.
///
/// On the wire: `A`, the host name in 16 bytes and the IP address in 15, space-padded
/// (longer values are cut).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StationId {
    /// The originator's host name, without padding.
    pub host: String,
    /// The originator's IP address as text, without padding.
    pub ip: String,
}

impl StationId {
    /// Bytes of the block for the host name.
    pub const HOST_LEN: usize = 16;
    /// Bytes of the block for the IP address.
    pub const IP_LEN: usize = 15;

    /// A station id.
    pub fn new(host: impl Into<String>, ip: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            ip: ip.into(),
        }
    }

    /// Reads an (unscrambled) station id block. The first byte, `A` from every known
    /// originator, is not checked; bytes that are not UTF-8 become U+FFFD; spaces,
    /// NULs and other ASCII white space around each value are removed.
    pub fn parse(block: &[u8; STATION_ID_LEN]) -> Self {
        let text = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace())
                .to_owned()
        };
        let host_end = 1 + Self::HOST_LEN;
        Self {
            host: text(&block[1..host_end]),
            ip: text(&block[host_end..]),
        }
    }

    /// The (unscrambled) block for this station id.
    pub fn encode(&self) -> [u8; STATION_ID_LEN] {
        let mut block = [b' '; STATION_ID_LEN];
        block[0] = b'A';
        let host = &self.host.as_bytes()[..self.host.len().min(Self::HOST_LEN)];
        block[1..1 + host.len()].copy_from_slice(host);
        let at = 1 + Self::HOST_LEN;
        let ip = &self.ip.as_bytes()[..self.ip.len().min(Self::IP_LEN)];
        block[at..at + ip.len()].copy_from_slice(ip);
        block
    }
}

/// What a state made of the bytes it was given.
#[derive(Debug)]
pub enum Step<S, N> {
    /// The state took every byte and needs more.
    More(S),
    /// The state is complete: the input was advanced past the bytes it took, and what
    /// remains belongs to the next state, `N`.
    Next(N),
}

/// A fixed-size block filled from pieces of input.
#[derive(Clone, Copy)]
struct Fill<const N: usize> {
    buf: [u8; N],
    got: usize,
}

impl<const N: usize> Fill<N> {
    const fn new() -> Self {
        Self {
            buf: [0; N],
            got: 0,
        }
    }

    /// Takes what the block still lacks from the front of `input`; returns where the
    /// new bytes start.
    fn take(&mut self, input: &mut &[u8]) -> usize {
        let start = self.got;
        let n = (N - start).min(input.len());
        let (piece, rest) = input.split_at(n);
        self.buf[start..start + n].copy_from_slice(piece);
        self.got += n;
        *input = rest;
        start
    }

    fn is_full(&self) -> bool {
        self.got == N
    }
}

/// The position of the first byte where `got` differs from the start of `want`.
fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(a, b)| a != b)
}

/// A DT header (scrambled with the connection's seed), unscrambled and checked as it
/// arrives, so that garbage is refused at its first byte.
#[derive(Clone, Copy)]
struct LengthHeader {
    fill: Fill<HEADER_LEN>,
    unscrambler: Unscrambler,
    max: usize,
}

impl LengthHeader {
    fn new(seed: u8, max: usize) -> Self {
        Self {
            fill: Fill::new(),
            unscrambler: Unscrambler::new(seed),
            max,
        }
    }

    /// `Some(length)` once the header is complete and good.
    fn take(&mut self, input: &mut &[u8]) -> Result<Option<usize>, Hl7XferError> {
        let start = self.fill.take(input);
        let got = self.fill.got;
        self.unscrambler.apply(&mut self.fill.buf[start..got]);
        for (at, &b) in self.fill.buf[..got].iter().enumerate().skip(start) {
            if at < 2 {
                if b != b"DT"[at] {
                    return Err(Hl7XferError::WrongDtHeader { at });
                }
            } else if !b.is_ascii_digit() {
                return Err(Hl7XferError::BadLengthDigit { at });
            }
        }
        if !self.fill.is_full() {
            return Ok(None);
        }
        let length = self.fill.buf[2..]
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if length > self.max as u64 {
            return Err(Hl7XferError::TooLarge {
                length,
                max: self.max,
            });
        }
        // At most `max`, a usize.
        Ok(Some(length as usize))
    }
}

/// What the first piece of a body may reserve before more of it has arrived.
const FIRST_RESERVE: usize = 64 * 1024;

/// A message or response body, unscrambled in place as it arrives (one copy: from the
/// input into the body).
struct Body {
    data: Vec<u8>,
    length: usize,
    unscrambler: Unscrambler,
}

impl Body {
    fn new(length: usize, seed: u8) -> Self {
        Self {
            data: Vec::with_capacity(length.min(FIRST_RESERVE)),
            length,
            unscrambler: Unscrambler::new(seed),
        }
    }

    /// Takes what the body still lacks from the front of `input`; true when complete.
    fn take(&mut self, input: &mut &[u8]) -> bool {
        let n = (self.length - self.data.len()).min(input.len());
        let (piece, rest) = input.split_at(n);
        let need = self.data.len() + n;
        if need > self.data.capacity() {
            // Double, as a Vec does, but never past the announced length: memory follows
            // what has arrived, so an announced length alone holds little.
            let target = need.max(self.data.capacity() * 2).min(self.length);
            self.data.reserve_exact(target - self.data.len());
        }
        let start = self.data.len();
        self.data.extend_from_slice(piece);
        self.unscrambler.apply(&mut self.data[start..]);
        *input = rest;
        self.data.len() == self.length
    }
}

/// Appends a DT header for `body` and `body`, each scrambled on its own with `seed`.
fn write_data(body: &[u8], seed: u8, out: &mut Vec<u8>) -> Result<(), Hl7XferError> {
    if body.len() as u64 > MAX_LENGTH {
        return Err(Hl7XferError::MessageTooLong { length: body.len() });
    }
    write_checked_data(body, seed, out);
    Ok(())
}

/// The plain DT header for `length` (at most [`MAX_LENGTH`]).
fn dt_header(length: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..2].copy_from_slice(b"DT");
    let mut n = length;
    for digit in header[2..].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    header
}

/// [`write_data`] for a body known to be at most [`MAX_LENGTH`] bytes.
fn write_checked_data(body: &[u8], seed: u8, out: &mut Vec<u8>) {
    let mut header = dt_header(body.len() as u64);
    scramble(&mut header, seed);
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(&header);
    let start = out.len();
    out.extend_from_slice(body);
    scramble(&mut out[start..], seed);
}

// ---------------------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------------------

/// Listener, step 2: the greeting is sent; expecting `HS0000000008` and the echo.
pub struct ExpectEcho {
    challenge: [u8; CHALLENGE_LEN],
    max_message: usize,
    fill: Fill<GREETING_LEN>,
}

impl ExpectEcho {
    /// A listener that challenges with `challenge` (8 bytes from a CSPRNG) and accepts
    /// messages of at most `max_message` bytes. Send [`ExpectEcho::greeting`] first.
    pub fn new(challenge: [u8; CHALLENGE_LEN], max_message: usize) -> Self {
        Self {
            challenge,
            max_message,
            fill: Fill::new(),
        }
    }

    /// The bytes to send: `HS0000000008` and the challenge.
    pub fn greeting(&self) -> [u8; GREETING_LEN] {
        greeting(&self.challenge)
    }

    /// Bytes of this step received.
    pub fn received(&self) -> usize {
        self.fill.got
    }

    /// What answers a failure at this step: with the seed a correct originator holds,
    /// the XOR of the challenge's bytes (the last byte of its echo).
    pub fn responder(&self) -> Responder {
        Responder {
            seed: self.challenge.iter().fold(HANDSHAKE_SEED, |k, b| k ^ b),
        }
    }

    /// Takes the originator's bytes. The header is checked byte by byte as it comes;
    /// the echo when all 8 bytes are in.
    pub fn read(mut self, input: &mut &[u8]) -> Result<Step<Self, ExpectStationId>, Hl7XferError> {
        self.fill.take(input);
        let got = self.fill.got.min(HEADER_LEN);
        if let Some(at) = first_difference(&self.fill.buf[..got], &HS_HEADER) {
            return Err(Hl7XferError::WrongHsHeader { at });
        }
        if !self.fill.is_full() {
            return Ok(Step::More(self));
        }
        let mut echo = [0u8; CHALLENGE_LEN];
        echo.copy_from_slice(&self.fill.buf[HEADER_LEN..]);
        let seed = echo[CHALLENGE_LEN - 1];
        unscramble(&mut echo, HANDSHAKE_SEED);
        if let Some(at) = first_difference(&echo, &self.challenge) {
            return Err(Hl7XferError::WrongEcho { at });
        }
        Ok(Step::Next(ExpectStationId {
            seed,
            max_message: self.max_message,
            header: Fill::new(),
            header_unscrambler: Unscrambler::new(seed),
            block: Fill::new(),
        }))
    }
}

impl fmt::Debug for ExpectEcho {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectEcho")
            .field("received", &self.fill.got)
            .finish_non_exhaustive()
    }
}

/// Listener, step 3: expecting `SI0000000032` and the 32-byte station id.
pub struct ExpectStationId {
    seed: u8,
    max_message: usize,
    header: Fill<HEADER_LEN>,
    header_unscrambler: Unscrambler,
    block: Fill<STATION_ID_LEN>,
}

impl ExpectStationId {
    /// The connection's seed, `k`.
    pub fn seed(&self) -> u8 {
        self.seed
    }

    /// Bytes of this step received.
    pub fn received(&self) -> usize {
        self.header.got + self.block.got
    }

    /// What answers a failure at this step.
    pub fn responder(&self) -> Responder {
        Responder { seed: self.seed }
    }

    /// Takes the originator's bytes. The header is checked byte by byte as it comes.
    pub fn read(mut self, input: &mut &[u8]) -> Result<Step<Self, ExpectLength>, Hl7XferError> {
        if !self.header.is_full() {
            let start = self.header.take(input);
            let got = self.header.got;
            self.header_unscrambler
                .apply(&mut self.header.buf[start..got]);
            if let Some(at) = first_difference(&self.header.buf[..got], &SI_HEADER) {
                return Err(Hl7XferError::WrongSiHeader { at });
            }
            if !self.header.is_full() {
                return Ok(Step::More(self));
            }
        }
        self.block.take(input);
        if !self.block.is_full() {
            return Ok(Step::More(self));
        }
        let mut block = self.block.buf;
        unscramble(&mut block, self.seed);
        Ok(Step::Next(ExpectLength {
            station: StationId::parse(&block),
            seed: self.seed,
            header: LengthHeader::new(self.seed, self.max_message),
        }))
    }
}

impl fmt::Debug for ExpectStationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectStationId")
            .field("received", &self.received())
            .finish_non_exhaustive()
    }
}

/// Listener, step 4: expecting `DT` and the message's length in 10 decimal digits.
pub struct ExpectLength {
    station: StationId,
    seed: u8,
    header: LengthHeader,
}

impl ExpectLength {
    /// The station the originator named.
    pub fn station(&self) -> &StationId {
        &self.station
    }

    /// Bytes of this step received.
    pub fn received(&self) -> usize {
        self.header.fill.got
    }

    /// What answers a failure at this step.
    pub fn responder(&self) -> Responder {
        Responder { seed: self.seed }
    }

    /// Takes the originator's bytes; refuses a header that is not `DT` and 10 digits at
    /// its first wrong byte, and a length above the maximum.
    pub fn read(mut self, input: &mut &[u8]) -> Result<Step<Self, ExpectMessage>, Hl7XferError> {
        match self.header.take(input)? {
            None => Ok(Step::More(self)),
            Some(length) => Ok(Step::Next(ExpectMessage {
                station: self.station,
                seed: self.seed,
                body: Body::new(length, self.seed),
            })),
        }
    }
}

impl fmt::Debug for ExpectLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectLength")
            .field("received", &self.received())
            .finish_non_exhaustive()
    }
}

/// Listener, step 4: expecting the message's bytes.
pub struct ExpectMessage {
    station: StationId,
    seed: u8,
    body: Body,
}

impl ExpectMessage {
    /// The length announced.
    pub fn length(&self) -> usize {
        self.body.length
    }

    /// Bytes of the message received.
    pub fn received(&self) -> usize {
        self.body.data.len()
    }

    /// What answers a failure at this step.
    pub fn responder(&self) -> Responder {
        Responder { seed: self.seed }
    }

    /// Takes the originator's bytes (a message of length 0 is complete at once, even
    /// with no input).
    pub fn read(mut self, input: &mut &[u8]) -> Result<Step<Self, Received>, Hl7XferError> {
        if !self.body.take(input) {
            return Ok(Step::More(self));
        }
        Ok(Step::Next(Received {
            station: self.station,
            message: self.body.data,
            responder: Responder { seed: self.seed },
        }))
    }
}

impl fmt::Debug for ExpectMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectMessage")
            .field("length", &self.body.length)
            .field("received", &self.received())
            .finish_non_exhaustive()
    }
}

/// Listener, after step 4: the message is in; the originator must now send nothing.
pub struct Received {
    station: StationId,
    message: Vec<u8>,
    responder: Responder,
}

impl Received {
    /// The message, unscrambled, exactly as the originator sent it.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The station the originator named.
    pub fn station(&self) -> &StationId {
        &self.station
    }

    /// Checks bytes that arrived after the message: any byte at all is an error.
    pub fn read(&self, input: &[u8]) -> Result<(), Hl7XferError> {
        match input.len() {
            0 => Ok(()),
            count => Err(Hl7XferError::TrailingBytes { count }),
        }
    }

    /// What answers a failure at this step (bytes after the message).
    pub fn responder(&self) -> Responder {
        Responder {
            seed: self.responder.seed,
        }
    }

    /// The message, the station, and what writes the response (step 5).
    pub fn into_parts(self) -> (Vec<u8>, StationId, Responder) {
        (self.message, self.station, self.responder)
    }
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("station", &self.station)
            .field("message", &format_args!("{} bytes", self.message.len()))
            .finish_non_exhaustive()
    }
}

/// Listener, step 5: writes the one response of the connection, or the ACK that
/// answers a failure.
#[derive(Debug, PartialEq, Eq)]
pub struct Responder {
    seed: u8,
}

impl Responder {
    /// The connection's seed, `k`.
    pub fn seed(&self) -> u8 {
        self.seed
    }

    /// Appends `DT`, the response's length in 10 digits, and the response, each
    /// scrambled on its own with the connection's seed. Send them, then close.
    pub fn respond(self, response: &[u8], out: &mut Vec<u8>) -> Result<(), Hl7XferError> {
        write_data(response, self.seed, out)
    }
}

/// A listener's failure and what answers it: the connection is over once the answer
/// is sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    /// What went wrong.
    pub error: Hl7XferError,
    /// Writes the answer with the seed the originator decodes with.
    pub responder: Responder,
}

impl Rejected {
    /// Appends the answer to send before closing: [`listener_ack`] for the error,
    /// framed and scrambled as a response (step 5).
    pub fn answer(self, facility: &str, timestamp: &str, out: &mut Vec<u8>) {
        let ack = listener_ack(&self.error, facility, timestamp);
        // An ACK is a few hundred bytes: far below what 10 digits announce.
        write_checked_data(&ack, self.responder.seed, out);
    }
}

/// A listener at any step: feeds it whatever bytes arrive.
#[derive(Debug)]
pub enum Listener {
    /// Step 2.
    Echo(ExpectEcho),
    /// Step 3.
    StationId(ExpectStationId),
    /// Step 4, the header.
    Length(ExpectLength),
    /// Step 4, the message.
    Message(ExpectMessage),
    /// The message is in: take it with [`Received::into_parts`] and respond.
    Received(Received),
}

impl Listener {
    /// A listener that challenges with `challenge` (8 bytes from a CSPRNG) and accepts
    /// messages of at most `max_message` bytes. Send [`greeting`]`(&challenge)` first.
    pub fn new(challenge: [u8; CHALLENGE_LEN], max_message: usize) -> Self {
        Self::Echo(ExpectEcho::new(challenge, max_message))
    }

    /// Takes every byte of `input`, moving through as many steps as it completes.
    /// Bytes after the message are an error. A failure comes with what answers it.
    pub fn feed(self, mut input: &[u8]) -> Result<Self, Rejected> {
        let mut state = self;
        loop {
            let responder = state.responder();
            let reject = |error| Rejected { error, responder };
            state = match state {
                Self::Echo(s) => match s.read(&mut input).map_err(reject)? {
                    Step::More(s) => return Ok(Self::Echo(s)),
                    Step::Next(n) => Self::StationId(n),
                },
                Self::StationId(s) => match s.read(&mut input).map_err(reject)? {
                    Step::More(s) => return Ok(Self::StationId(s)),
                    Step::Next(n) => Self::Length(n),
                },
                Self::Length(s) => match s.read(&mut input).map_err(reject)? {
                    Step::More(s) => return Ok(Self::Length(s)),
                    Step::Next(n) => Self::Message(n),
                },
                Self::Message(s) => match s.read(&mut input).map_err(reject)? {
                    Step::More(s) => return Ok(Self::Message(s)),
                    Step::Next(n) => Self::Received(n),
                },
                Self::Received(r) => {
                    r.read(input).map_err(reject)?;
                    return Ok(Self::Received(r));
                }
            };
        }
    }

    /// The step the listener is at.
    pub fn stage(&self) -> Stage {
        match self {
            Self::Echo(_) => Stage::Handshake,
            Self::StationId(_) => Stage::StationId,
            Self::Length(_) => Stage::Length,
            Self::Message(_) => Stage::Message,
            Self::Received(_) => Stage::Done,
        }
    }

    /// Bytes of the current step received.
    pub fn received(&self) -> usize {
        match self {
            Self::Echo(s) => s.received(),
            Self::StationId(s) => s.received(),
            Self::Length(s) => s.received(),
            Self::Message(s) => s.received(),
            Self::Received(_) => 0,
        }
    }

    /// What answers a failure at the current step.
    pub fn responder(&self) -> Responder {
        match self {
            Self::Echo(s) => s.responder(),
            Self::StationId(s) => s.responder(),
            Self::Length(s) => s.responder(),
            Self::Message(s) => s.responder(),
            Self::Received(r) => r.responder(),
        }
    }

    /// The failure of a stream that ended here; `None` once the message is in.
    pub fn ended(&self) -> Option<Rejected> {
        self.incomplete(|stage, received| Hl7XferError::Ended { stage, received })
    }

    /// The failure of an originator that stopped sending here (the caller's timeout);
    /// `None` once the message is in.
    pub fn stalled(&self) -> Option<Rejected> {
        self.incomplete(|stage, received| Hl7XferError::Stalled { stage, received })
    }

    fn incomplete(&self, error: fn(Stage, usize) -> Hl7XferError) -> Option<Rejected> {
        (!matches!(self, Self::Received(_))).then(|| Rejected {
            error: error(self.stage(), self.received()),
            responder: self.responder(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Originator
// ---------------------------------------------------------------------------------------

/// Originator, step 1: connected; expecting the listener's `HS0000000008` and challenge.
pub struct ExpectGreeting {
    station: StationId,
    max_response: usize,
    fill: Fill<GREETING_LEN>,
}

impl ExpectGreeting {
    /// An originator that names itself `station` and accepts responses of at most
    /// `max_response` bytes.
    pub fn new(station: StationId, max_response: usize) -> Self {
        Self {
            station,
            max_response,
            fill: Fill::new(),
        }
    }

    /// Bytes of this step received.
    pub fn received(&self) -> usize {
        self.fill.got
    }

    /// Takes the listener's bytes. The header is checked byte by byte as it comes.
    pub fn read(mut self, input: &mut &[u8]) -> Result<Step<Self, Greeted>, Hl7XferError> {
        self.fill.take(input);
        let got = self.fill.got.min(HEADER_LEN);
        if let Some(at) = first_difference(&self.fill.buf[..got], &HS_HEADER) {
            return Err(Hl7XferError::WrongHsHeader { at });
        }
        if !self.fill.is_full() {
            return Ok(Step::More(self));
        }
        let mut echo = [0u8; CHALLENGE_LEN];
        echo.copy_from_slice(&self.fill.buf[HEADER_LEN..]);
        scramble(&mut echo, HANDSHAKE_SEED);
        Ok(Step::Next(Greeted {
            seed: echo[CHALLENGE_LEN - 1],
            echo,
            station: self.station,
            max_response: self.max_response,
        }))
    }
}

impl fmt::Debug for ExpectGreeting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectGreeting")
            .field("received", &self.fill.got)
            .finish_non_exhaustive()
    }
}

/// Originator, steps 2 to 4: the challenge is in; write the request.
pub struct Greeted {
    echo: [u8; CHALLENGE_LEN],
    seed: u8,
    station: StationId,
    max_response: usize,
}

impl Greeted {
    /// The connection's seed, `k`.
    pub fn seed(&self) -> u8 {
        self.seed
    }

    /// Appends the whole request for `message`: `HS0000000008` and the echo, then the
    /// SI header, the station id, the DT header and the message, each scrambled on its
    /// own with the connection's seed. Send them, then read the response.
    pub fn request(
        self,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ExpectResponseLength, Hl7XferError> {
        if message.len() as u64 > MAX_LENGTH {
            return Err(Hl7XferError::MessageTooLong {
                length: message.len(),
            });
        }
        out.reserve(GREETING_LEN + HEADER_LEN + STATION_ID_LEN + HEADER_LEN + message.len());
        out.extend_from_slice(&HS_HEADER);
        out.extend_from_slice(&self.echo);
        let mut si = SI_HEADER;
        scramble(&mut si, self.seed);
        out.extend_from_slice(&si);
        let mut station = self.station.encode();
        scramble(&mut station, self.seed);
        out.extend_from_slice(&station);
        write_data(message, self.seed, out)?;
        Ok(ExpectResponseLength {
            header: LengthHeader::new(self.seed, self.max_response),
            seed: self.seed,
        })
    }
}

impl fmt::Debug for Greeted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Greeted").finish_non_exhaustive()
    }
}

/// Originator, step 5: expecting `DT` and the response's length in 10 decimal digits.
pub struct ExpectResponseLength {
    header: LengthHeader,
    seed: u8,
}

impl ExpectResponseLength {
    /// Bytes of this step received.
    pub fn received(&self) -> usize {
        self.header.fill.got
    }

    /// Takes the listener's bytes; refuses a header that is not `DT` and 10 digits at
    /// its first wrong byte, and a length above the maximum.
    pub fn read(mut self, input: &mut &[u8]) -> Result<Step<Self, ExpectResponse>, Hl7XferError> {
        match self.header.take(input)? {
            None => Ok(Step::More(self)),
            Some(length) => Ok(Step::Next(ExpectResponse {
                body: Body::new(length, self.seed),
            })),
        }
    }
}

impl fmt::Debug for ExpectResponseLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectResponseLength")
            .field("received", &self.received())
            .finish_non_exhaustive()
    }
}

/// Originator, step 5: expecting the response's bytes.
pub struct ExpectResponse {
    body: Body,
}

impl ExpectResponse {
    /// The length announced.
    pub fn length(&self) -> usize {
        self.body.length
    }

    /// Bytes of the response received.
    pub fn received(&self) -> usize {
        self.body.data.len()
    }

    /// Takes the listener's bytes (a response of length 0 is complete at once).
    pub fn read(mut self, input: &mut &[u8]) -> Result<Step<Self, Responded>, Hl7XferError> {
        if !self.body.take(input) {
            return Ok(Step::More(self));
        }
        Ok(Step::Next(Responded {
            response: self.body.data,
        }))
    }
}

impl fmt::Debug for ExpectResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectResponse")
            .field("length", &self.body.length)
            .field("received", &self.received())
            .finish_non_exhaustive()
    }
}

/// Originator, done: the response is in; the listener closes.
pub struct Responded {
    response: Vec<u8>,
}

impl Responded {
    /// The response, unscrambled, byte for byte as the listener sent it.
    pub fn response(&self) -> &[u8] {
        &self.response
    }

    /// Checks bytes that arrived after the response: any byte at all is an error.
    pub fn read(&self, input: &[u8]) -> Result<(), Hl7XferError> {
        match input.len() {
            0 => Ok(()),
            count => Err(Hl7XferError::TrailingBytes { count }),
        }
    }

    /// The response.
    pub fn into_response(self) -> Vec<u8> {
        self.response
    }
}

impl fmt::Debug for Responded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responded")
            .field("response", &format_args!("{} bytes", self.response.len()))
            .finish()
    }
}

/// An originator at any step: feeds it whatever bytes arrive from the listener.
#[derive(Debug)]
pub enum Originator {
    /// Step 1: waiting for the greeting.
    Greeting(ExpectGreeting),
    /// Step 5, the header: the request was written.
    Length(ExpectResponseLength),
    /// Step 5, the response.
    Response(ExpectResponse),
    /// The response is in.
    Responded(Responded),
}

impl Originator {
    /// An originator that names itself `station` and accepts responses of at most
    /// `max_response` bytes.
    pub fn new(station: StationId, max_response: usize) -> Self {
        Self::Greeting(ExpectGreeting::new(station, max_response))
    }

    /// Takes every byte of `input`, moving through as many steps as it completes. When
    /// the greeting completes, the request for `message` is appended to `out`: send it.
    /// (`message` is used once; pass the same one to every call.) Bytes after the
    /// response are an error.
    pub fn feed(
        self,
        mut input: &[u8],
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Self, Hl7XferError> {
        let mut state = self;
        loop {
            state = match state {
                Self::Greeting(s) => match s.read(&mut input)? {
                    Step::More(s) => return Ok(Self::Greeting(s)),
                    Step::Next(greeted) => Self::Length(greeted.request(message, out)?),
                },
                Self::Length(s) => match s.read(&mut input)? {
                    Step::More(s) => return Ok(Self::Length(s)),
                    Step::Next(n) => Self::Response(n),
                },
                Self::Response(s) => match s.read(&mut input)? {
                    Step::More(s) => return Ok(Self::Response(s)),
                    Step::Next(n) => Self::Responded(n),
                },
                Self::Responded(r) => {
                    r.read(input)?;
                    return Ok(Self::Responded(r));
                }
            };
        }
    }

    /// The step the originator is at.
    pub fn stage(&self) -> Stage {
        match self {
            Self::Greeting(_) => Stage::Handshake,
            Self::Length(_) => Stage::Length,
            Self::Response(_) => Stage::Message,
            Self::Responded(_) => Stage::Done,
        }
    }

    /// Bytes of the current step received.
    pub fn received(&self) -> usize {
        match self {
            Self::Greeting(s) => s.received(),
            Self::Length(s) => s.received(),
            Self::Response(s) => s.received(),
            Self::Responded(_) => 0,
        }
    }

    /// The response, once it is in.
    pub fn response(&self) -> Option<&[u8]> {
        match self {
            Self::Responded(r) => Some(r.response()),
            _ => None,
        }
    }

    /// The error for a stream that ended here; `None` once the response is in.
    pub fn ended(&self) -> Option<Hl7XferError> {
        (!matches!(self, Self::Responded(_))).then(|| Hl7XferError::Ended {
            stage: self.stage(),
            received: self.received(),
        })
    }

    /// The error for a listener that stopped sending here (the caller's timeout);
    /// `None` once the response is in.
    pub fn stalled(&self) -> Option<Hl7XferError> {
        (!matches!(self, Self::Responded(_))).then(|| Hl7XferError::Stalled {
            stage: self.stage(),
            received: self.received(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::{Message, Path};
    use proptest::prelude::*;

    const CHALLENGE: [u8; 8] = [0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x23, 0x45, 0x67];
    const HL7: &[u8] = b"MSH|^~\\&|HR|BC00000098|RAIGT-PRSN-DMGR|BC0003000|20010719125635|PM33283|R03|20010915000017|D|2.3\rPID||9029274643^^^BC^PH\r";

    /// Feeds `bytes` to `feed` in pieces whose sizes cycle through `sizes`.
    fn in_pieces<S>(
        mut state: S,
        bytes: &[u8],
        sizes: &[usize],
        mut feed: impl FnMut(S, &[u8]) -> S,
    ) -> S {
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let size = sizes[i % sizes.len()].clamp(1, bytes.len() - at);
            let end = at + size;
            state = feed(state, &bytes[at..end]);
            at = end;
            i += 1;
        }
        state
    }

    /// One transaction between this module's two ends, every stream cut into pieces.
    fn exchange(
        challenge: [u8; 8],
        message: &[u8],
        response: &[u8],
        sizes: &[usize],
    ) -> (Vec<u8>, StationId, Vec<u8>) {
        let max = message.len().max(response.len());
        let station = StationId::new("WS-0042", "10.1.2.3");
        let listener = Listener::new(challenge, max);

        let mut request = Vec::new();
        let originator = in_pieces(
            Originator::new(station, max),
            &greeting(&challenge),
            sizes,
            |o, piece| o.feed(piece, message, &mut request).unwrap(),
        );
        assert_eq!(originator.stage(), Stage::Length);

        let listener = in_pieces(listener, &request, sizes, |l, piece| l.feed(piece).unwrap());
        let Listener::Received(received) = listener else {
            panic!("the listener did not complete: {listener:?}");
        };
        let (got, station, responder) = received.into_parts();
        assert_eq!(responder.seed(), challenge.iter().fold(0, |k, b| k ^ b));
        let mut answer = Vec::new();
        responder.respond(response, &mut answer).unwrap();

        let originator = in_pieces(originator, &answer, sizes, |o, piece| {
            o.feed(piece, message, &mut request).unwrap()
        });
        let Originator::Responded(done) = originator else {
            panic!("the originator did not complete: {originator:?}");
        };
        (got, station, done.into_response())
    }

    fn check_exchange(message: &[u8], response: &[u8], sizes: &[usize]) {
        let (got, station, answer) = exchange(CHALLENGE, message, response, sizes);
        assert!(got == message, "the message differs");
        assert!(answer == response, "the response differs");
        assert_eq!(station, StationId::new("WS-0042", "10.1.2.3"));
    }

    #[test]
    fn exchanges_messages_of_every_awkward_size() {
        check_exchange(b"", b"", &[1]);
        check_exchange(b"", HL7, &[3]);
        check_exchange(b"M", b"A", &[1]);
        check_exchange(HL7, HL7, &[1]);
        check_exchange(HL7, HL7, &[usize::MAX]);
        // Segments ended by CR only, and a response with trailing CRs kept byte for byte.
        check_exchange(
            b"MSH|^~\\&|A\rPID|1\rZZZ|\r",
            b"MSH|^~\\&|B\rMSA|AA|1\r\r\r",
            &[2, 5],
        );
    }

    #[test]
    fn exchanges_a_mebibyte() {
        let message: Vec<u8> = (0..1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let response: Vec<u8> = message.iter().rev().copied().collect();
        check_exchange(&message, &response, &[1, 7, 4096, 65_537, usize::MAX]);
    }

    proptest! {
        #[test]
        fn exchanges_in_any_pieces(
            challenge in any::<[u8; 8]>(),
            message in proptest::collection::vec(any::<u8>(), 0..600),
            response in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..40, 1..12),
        ) {
            let (got, _, answer) = exchange(challenge, &message, &response, &sizes);
            prop_assert_eq!(got, message);
            prop_assert_eq!(answer, response);
        }
    }

    /// An originator written from DESIGN 3.3 alone, sharing no code with this module.
    fn hand_written_request(challenge: [u8; 8], host: &str, ip: &str, message: &[u8]) -> Vec<u8> {
        fn scrambled(mut block: Vec<u8>, seed: u8) -> Vec<u8> {
            block[0] ^= seed;
            for i in 1..block.len() {
                block[i] ^= block[i - 1];
            }
            block
        }
        let echo = scrambled(challenge.to_vec(), 0);
        let k = echo[7];
        let mut station = format!("A{host:<16}{ip:<15}").into_bytes();
        station.resize(32, b' ');
        let mut out = b"HS0000000008".to_vec();
        out.extend(echo);
        out.extend(scrambled(b"SI0000000032".to_vec(), k));
        out.extend(scrambled(station, k));
        out.extend(scrambled(
            format!("DT{:010}", message.len()).into_bytes(),
            k,
        ));
        if !message.is_empty() {
            out.extend(scrambled(message.to_vec(), k));
        }
        out
    }

    #[test]
    fn the_listener_accepts_an_independent_originator() {
        let request = hand_written_request(CHALLENGE, "PHARMACY-7", "192.168.10.20", HL7);
        let listener = Listener::new(CHALLENGE, DEFAULT_MAX_MESSAGE)
            .feed(&request)
            .unwrap();
        let Listener::Received(received) = listener else {
            panic!("incomplete: {listener:?}");
        };
        assert_eq!(received.message(), HL7);
        assert_eq!(
            received.station(),
            &StationId::new("PHARMACY-7", "192.168.10.20")
        );

        // And this module's originator writes exactly those bytes.
        let mut ours = Vec::new();
        Originator::new(StationId::new("PHARMACY-7", "192.168.10.20"), 100)
            .feed(&greeting(&CHALLENGE), HL7, &mut ours)
            .unwrap();
        assert_eq!(ours, request);
    }

    #[test]
    fn the_listener_writes_known_bytes() {
        // Challenge 01..08: the echo with seed 0 is 01 03 00 04 01 07 00 08, so k = 08.
        let challenge = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            greeting(&challenge),
            *b"HS0000000008\x01\x02\x03\x04\x05\x06\x07\x08"
        );
        let request = hand_written_request(challenge, "h", "1.2.3.4", b"MSH|");
        let Listener::Received(received) = Listener::new(challenge, 100).feed(&request).unwrap()
        else {
            panic!("incomplete");
        };
        let (_, _, responder) = received.into_parts();
        assert_eq!(responder.seed(), 0x08);
        let mut out = Vec::new();
        responder.respond(b"OK", &mut out).unwrap();
        // "DT0000000002" with seed 08: 'D' 44^08=4C, 'T' 54^4C=18, '0' 30^18=28, '0' 30^28=18,
        // … alternating 28 18 up to byte 10 (28), '2' 32^28=1A.
        // "OK" on its own, again from 08: 'O' 4F^08=47, 'K' 4B^47=0C.
        assert_eq!(
            out,
            [
                0x4C, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x18, 0x28, 0x1A, 0x47, 0x0C
            ]
        );
    }

    #[test]
    fn known_answer_exchange() {
        // tests/data/kat/hl7xfer.txt, written by tests/data/kat/kat.py from the table in
        // the xfer module's documentation: both ends write exactly these bytes, on little-
        // and big-endian hosts alike (tools/cross.sh runs this under qemu-ppc64).
        let kat = crate::kat::all(include_str!("../../tests/data/kat/hl7xfer.txt"));
        let bytes = |name: &str| crate::kat::hex(&kat[name]);
        let challenge: [u8; CHALLENGE_LEN] = bytes("challenge").try_into().unwrap();
        let station = StationId::new(kat["host"].clone(), kat["ip"].clone());
        let (message, response) = (bytes("message"), bytes("response"));

        let listener = Listener::new(challenge, DEFAULT_MAX_MESSAGE);
        assert_eq!(crate::kat::to_hex(&greeting(&challenge)), kat["greeting"]);
        let mut written = Vec::new();
        let originator = Originator::new(station.clone(), DEFAULT_MAX_MESSAGE)
            .feed(&bytes("greeting"), &message, &mut written)
            .unwrap();
        assert_eq!(crate::kat::to_hex(&written), kat["originator_writes"]);

        let Listener::Received(received) = listener.feed(&written).unwrap() else {
            panic!("the listener did not take the whole request");
        };
        assert_eq!(received.message(), &message[..]);
        assert_eq!(received.station(), &station);
        let (_, _, responder) = received.into_parts();
        assert_eq!(crate::kat::to_hex(&[responder.seed()]), kat["seed"]);
        let mut answer = Vec::new();
        responder.respond(&response, &mut answer).unwrap();
        assert_eq!(crate::kat::to_hex(&answer), kat["listener_writes"]);

        let mut unused = Vec::new();
        let originator = originator.feed(&answer, &[], &mut unused).unwrap();
        assert!(unused.is_empty());
        assert_eq!(originator.response(), Some(&response[..]));
    }

    #[test]
    fn station_ids_are_read_and_written_in_the_legacy_layout() {
        // As the Java and C# originators lay it out: A, host in 16, IP in 15.
        let block: [u8; 32] = *b"AWORKSTATION-0001192.168.100.200";
        assert_eq!(
            StationId::parse(&block),
            StationId::new("WORKSTATION-0001", "192.168.100.200")
        );
        assert_eq!(StationId::parse(&block).encode(), block);
        let long = StationId::new("A-VERY-LONG-HOST-NAME", "1234:5678:9abc:def0::1");
        assert_eq!(&long.encode(), b"AA-VERY-LONG-HOST1234:5678:9abc:");
        assert_eq!(
            StationId::parse(b"Ahost\0\0          10.0.0.1\t      "),
            StationId::new("host", "10.0.0.1")
        );
        // The first byte is not checked.
        assert_eq!(StationId::parse(&[b' '; 32]), StationId::default());
    }

    /// The request of a correct originator, with `edit` applied to its plain blocks
    /// before they are scrambled: (HS header, echo, SI header, station, DT header, message).
    fn request_with(edit: impl FnOnce(&mut [Vec<u8>; 6])) -> Vec<u8> {
        let mut echo = CHALLENGE.to_vec();
        scramble(&mut echo, 0);
        let k = echo[7];
        let mut blocks = [
            HS_HEADER.to_vec(),
            CHALLENGE.to_vec(),
            SI_HEADER.to_vec(),
            StationId::new("h", "1.2.3.4").encode().to_vec(),
            format!("DT{:010}", HL7.len()).into_bytes(),
            HL7.to_vec(),
        ];
        edit(&mut blocks);
        let mut out = blocks[0].clone();
        for (i, block) in blocks.iter_mut().enumerate().skip(1) {
            scramble(block, if i == 1 { 0 } else { k });
            out.extend_from_slice(block);
        }
        out
    }

    /// Feeds `request` whole and one byte at a time; both must fail alike.
    fn rejection(request: &[u8], max: usize) -> Rejected {
        let whole = Listener::new(CHALLENGE, max).feed(request).unwrap_err();
        let mut listener = Listener::new(CHALLENGE, max);
        for b in request {
            listener = match listener.feed(std::slice::from_ref(b)) {
                Ok(l) => l,
                Err(bytewise) => {
                    assert_eq!(bytewise, whole);
                    return whole;
                }
            };
        }
        panic!("fed byte by byte, the request was accepted");
    }

    /// The seed for [`CHALLENGE`], the XOR of its bytes:
    /// DE^AD=73, 73^BE=CD, CD^EF=22, 22^01=23, 23^23=00, 00^45=45, 45^67=22.
    const K: u8 = 0x22;

    #[test]
    fn every_listener_failure_is_named() {
        let max = DEFAULT_MAX_MESSAGE;
        let cases: Vec<(Rejected, Hl7XferError, NetworkCode)> = vec![
            (
                rejection(&request_with(|b| b[0][1] = b'X'), max),
                Hl7XferError::WrongHsHeader { at: 1 },
                NetworkCode::Xfer001E,
            ),
            (
                // A garbled echo byte 3 (after scrambling: flip it in the plain challenge).
                rejection(&request_with(|b| b[1][3] ^= 0x40), max),
                Hl7XferError::WrongEcho { at: 3 },
                NetworkCode::Xfer001E,
            ),
            (
                rejection(&request_with(|b| b[2][11] = b'3'), max),
                Hl7XferError::WrongSiHeader { at: 11 },
                NetworkCode::Xfer002E,
            ),
            (
                rejection(&request_with(|b| b[4][1] = b'X'), max),
                Hl7XferError::WrongDtHeader { at: 1 },
                NetworkCode::Xfer002E,
            ),
            (
                rejection(&request_with(|b| b[4][10] = b'a'), max),
                Hl7XferError::BadLengthDigit { at: 10 },
                NetworkCode::Xfer002E,
            ),
            (
                // A short length: "DT" and 5 digits, then the message.
                rejection(
                    &request_with(|b| b[4] = format!("DT{}", HL7.len()).into_bytes()),
                    max,
                ),
                Hl7XferError::BadLengthDigit { at: 5 },
                NetworkCode::Xfer002E,
            ),
            (
                rejection(&request_with(|_| ()), HL7.len() - 1),
                Hl7XferError::TooLarge {
                    length: HL7.len() as u64,
                    max: HL7.len() - 1,
                },
                NetworkCode::Xfer003E,
            ),
            (
                rejection(&request_with(|b| b[5].push(b'\r')), max),
                Hl7XferError::TrailingBytes { count: 1 },
                NetworkCode::Xfer002E,
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (rejected, error, code) in cases {
            assert_eq!(rejected.error, error);
            assert!(seen.insert(error), "{error:?} twice");
            assert_eq!(rejected.responder.seed(), K, "{error:?}");
            check_ack(rejected, code);
        }
        // The largest length ten digits can say is refused before anything is allocated.
        let nines = rejection(&request_with(|b| b[4] = b"DT9999999999".to_vec()), max);
        assert_eq!(
            nines.error,
            Hl7XferError::TooLarge {
                length: MAX_LENGTH,
                max
            }
        );
    }

    #[test]
    fn a_scrambled_header_sent_plain_is_refused() {
        // An originator that forgets to scramble the SI header.
        let mut request = request_with(|_| ());
        request[20..32].copy_from_slice(&SI_HEADER);
        let rejected = rejection(&request, DEFAULT_MAX_MESSAGE);
        assert!(matches!(rejected.error, Hl7XferError::WrongSiHeader { .. }));
    }

    #[test]
    fn bytes_after_the_message_are_refused_in_a_later_piece_too() {
        let listener = Listener::new(CHALLENGE, 1000)
            .feed(&request_with(|_| ()))
            .unwrap();
        assert_eq!(listener.stage(), Stage::Done);
        assert!(listener.ended().is_none() && listener.stalled().is_none());
        let listener = listener.feed(&[]).unwrap();
        let rejected = listener.feed(b"more").unwrap_err();
        assert_eq!(rejected.error, Hl7XferError::TrailingBytes { count: 4 });
    }

    #[test]
    fn a_stream_that_stops_early_is_named_with_its_step() {
        let request = request_with(|_| ());
        let at = |n: usize| Listener::new(CHALLENGE, 1000).feed(&request[..n]).unwrap();
        let ended = |n: usize| at(n).ended().unwrap().error;
        assert_eq!(
            ended(0),
            Hl7XferError::Ended {
                stage: Stage::Handshake,
                received: 0
            }
        );
        assert_eq!(
            ended(25),
            Hl7XferError::Ended {
                stage: Stage::StationId,
                received: 5
            }
        );
        assert_eq!(
            ended(20 + 44 + 3),
            Hl7XferError::Ended {
                stage: Stage::Length,
                received: 3
            }
        );
        assert_eq!(
            at(20 + 44 + 12 + 9).stalled().unwrap().error,
            Hl7XferError::Stalled {
                stage: Stage::Message,
                received: 9
            }
        );
        let stalled = at(3).stalled().unwrap();
        assert_eq!(stalled.responder.seed(), K);
        check_ack(stalled, NetworkCode::Txfr039E);
        check_ack(at(30).ended().unwrap(), NetworkCode::Txfr039E);
    }

    /// The answer to `rejected`, read as the originator reads a response: an AR ACK from
    /// HNCLIENT with `code`.
    fn check_ack(rejected: Rejected, code: NetworkCode) {
        let seed = rejected.responder.seed();
        let mut out = Vec::new();
        rejected.answer("BC01000018", "20260101120000-0800", &mut out);
        let (header, body) = out.split_at_mut(HEADER_LEN);
        unscramble(header, seed);
        unscramble(body, seed);
        assert_eq!(header, format!("DT{:010}", body.len()).as_bytes());
        let ack = Message::parse(body).unwrap();
        let text = |p: &str| ack.value(&p.parse::<Path>().unwrap()).text().into_owned();
        assert_eq!(text("MSH-3"), "HNCLIENT");
        assert_eq!(text("MSH-4"), "BC01000018");
        assert_eq!(text("MSH-9"), "ACK");
        assert_eq!(text("MSA-1"), "AR");
        assert!(
            text("MSA-3").starts_with(&format!("{} {}", code.code(), code.text())),
            "{}",
            text("MSA-3")
        );
    }

    #[test]
    fn the_ack_for_a_message_too_large_says_how_large() {
        let ack = listener_ack(
            &Hl7XferError::TooLarge {
                length: 9_000_000,
                max: 8_388_608,
            },
            "",
            "T",
        );
        let ack = Message::parse(&ack).unwrap();
        assert_eq!(
            ack.value(&"MSA-3".parse().unwrap()).text(),
            "XFER003E HL7 message too large for HNCLIENT: 9000000 > 8388608 bytes"
        );
    }

    #[test]
    fn every_originator_failure_is_named() {
        let station = || StationId::new("h", "1.2.3.4");
        let mut out = Vec::new();
        let wrong = Originator::new(station(), 100)
            .feed(b"HS00000000X8", b"M", &mut out)
            .unwrap_err();
        assert_eq!(wrong, Hl7XferError::WrongHsHeader { at: 10 });
        assert!(out.is_empty(), "nothing is sent to a wrong greeting");

        let greeted = || {
            let mut out = Vec::new();
            let o = Originator::new(station(), 5)
                .feed(&greeting(&CHALLENGE), b"M", &mut out)
                .unwrap();
            (o, out)
        };
        let (o, request) = greeted();
        assert_eq!(
            request,
            hand_written_request(CHALLENGE, "h", "1.2.3.4", b"M")
        );
        assert_eq!(
            o.ended(),
            Some(Hl7XferError::Ended {
                stage: Stage::Length,
                received: 0
            })
        );
        let answer = |body: &[u8], header: &[u8]| {
            let mut h = header.to_vec();
            scramble(&mut h, K);
            let mut b = body.to_vec();
            scramble(&mut b, K);
            h.extend(b);
            h
        };
        let feed = |bytes: Vec<u8>| greeted().0.feed(&bytes, b"M", &mut Vec::new());
        assert_eq!(
            feed(answer(b"", b"XT0000000000")).unwrap_err(),
            Hl7XferError::WrongDtHeader { at: 0 }
        );
        assert_eq!(
            feed(answer(b"", b"DT000000000-")).unwrap_err(),
            Hl7XferError::BadLengthDigit { at: 11 }
        );
        assert_eq!(
            feed(answer(b"", b"DT0000000006")).unwrap_err(),
            Hl7XferError::TooLarge { length: 6, max: 5 }
        );
        assert_eq!(
            feed(answer(b"OKAY!?", b"DT0000000005")).unwrap_err(),
            Hl7XferError::TrailingBytes { count: 1 }
        );
        let o = feed(answer(b"OK", b"DT0000000005")).unwrap();
        assert_eq!(
            o.stalled(),
            Some(Hl7XferError::Stalled {
                stage: Stage::Message,
                received: 2
            })
        );
        let o = feed(answer(b"OKAY!", b"DT0000000005")).unwrap();
        assert_eq!(o.response(), Some(&b"OKAY!"[..]));
        assert_eq!(o.ended(), None);
    }

    #[test]
    fn lengths_are_ten_digits_up_to_the_largest() {
        assert_eq!(&dt_header(0), b"DT0000000000");
        assert_eq!(&dt_header(1234), b"DT0000001234");
        assert_eq!(&dt_header(MAX_LENGTH), b"DT9999999999");
        assert_eq!(
            Hl7XferError::MessageTooLong {
                length: 10_000_000_000
            }
            .network_code(),
            NetworkCode::Xfer003E
        );
    }

    #[test]
    fn debug_shows_no_message_bytes() {
        let request = request_with(|_| ());
        let partial = Listener::new(CHALLENGE, 1000)
            .feed(&request[..request.len() - 10])
            .unwrap();
        let whole = Listener::new(CHALLENGE, 1000).feed(&request).unwrap();
        let shown = format!("{partial:?} {whole:?}");
        assert!(
            !shown.contains("9029274643") && !shown.contains("MSH"),
            "{shown}"
        );
        assert!(!shown.contains("222"), "{shown}"); // the challenge's 0xDE
    }
}
