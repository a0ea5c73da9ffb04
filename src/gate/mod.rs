//! The gateway, HNGate (DESIGN 3.6, 3.7): it terminates the secure transport,
//! authenticates every connection with HNGard, opens each envelope, checks the message,
//! routes it by MSH-5 (and optionally MSH-6 and MSH-9) to a receiving system, and seals
//! the answer back. When anything fails, the sender gets an AR ACK from `HNGATE`:
//!
//! Admission ([`admit::admit`]) decides, in one ordered list of checks, what is forwarded: the
//! canonical bytes of exactly one message whose raw MSH-4 is the certificate's facility.
//! Its refusals, then the network's, in this order:
//!
//! | in this order                              | the answer                  |
//! |--------------------------------------------|-----------------------------|
//! | a control byte but CR, LF, TAB; DEL; a C1 control | `HNPS010E` (journaled) |
//! | no message                                 | `VLDT004E`                  |
//! | no MSH                                     | `VLDT007E`                  |
//! | MSH unreadable                             | `HNPS002E`                  |
//! | delimiters other than the standard ones    | `HNPS011E` (journaled)      |
//! | a second MSH, a batch segment, a bad segment id | `HNPS012E` (journaled) |
//! | no MSH-9 or MSH-10                         | `HNPS002E`                  |
//! | raw MSH-4 is not the certificate's facility | `VLDT008E` (journaled)     |
//! | no MSH-6                                   | `VLDT009E`                  |
//! | no route for MSH-5                         | `HNPS005E` with the name    |
//! | a reserved type (ZFG, ZFP, ZPN)            | `HNPS006E` with the type    |
//! | a duplicate within the route's window      | `HNPS009E` (an AE)          |
//! | the destination does not answer in time, is unreachable, closes mid-answer, or answers another request | `TXFR024E` (2.5.2) |
//! | the destination's answer is not HL7        | `VLDT014E`                  |
#![forbid(unsafe_code)]

pub mod admit;
mod audit;
mod config;
pub mod metrics;
mod mllp;
mod server;
pub mod sim;

pub use config::{
    AuditMode, AuditSync, DEFAULT_BLOCKING_THREADS, DEFAULT_POOL_SIZE, Destination, GateConfig,
    Limits, MAX_BLOCKING_THREADS, MllpTarget, MllpTlsFiles, Route,
};
pub use server::{Gate, Reloader};

/// Why the gateway could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum GateError {
    /// The configuration is unusable.
    Config(crate::config::ConfigError),
    /// HNGard's directory could not be opened.
    Gard(crate::gard::GardError),
    /// The TLS configuration could not be made.
    Tls(crate::transport::tls::TlsError),
    /// The listening socket could not be bound.
    Bind(std::net::SocketAddr, std::io::Error),
    /// A destination cannot be prepared (its TLS files).
    Destination(String),
}

impl std::fmt::Display for GateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Gard(e) => write!(f, "HNGard: {e}"),
            Self::Tls(e) => write!(f, "{e}"),
            Self::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Self::Destination(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GateError {}
