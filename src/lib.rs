//! hnsecure's library, `libhnapi`: the HL7 v2 core and, in later layers, the secure
//! client and gateway that carry healthnetBC messages between health partners and the
//! BC Ministry of Health.
//!
//! The layers, lowest first (a lower layer never imports a higher one):
//!
//! - [`hl7`] — the HL7 v2 message model: a zero-copy parser, paths, escapes, an owned
//!   writer, the ACK builders of Volume 5 and the HealthnetBC checks. No I/O.
//! - [`envelope`] — the per-transaction 3DES envelope and its keys. No I/O.
//! - [`transport`] — TLS 1.3 with mutual authentication, and the frames it carries.
//! - [`gard`] — HNGard, the directory: facilities, registration, certificates,
//!   revocation, storage.
//! - [`client`] — the client core: seal, send, receive, open; failover between gateways.
//! - [`gate`] — the gateway: authenticate, check, route, answer.
//! - [`config`] — reading TOML configuration with errors that name the key.
//! - [`sandbox`] — the whole system on loopback, for testing against the simulator.
//! - [`ffi`] — the C ABI of `libhnapi` (`include/hnapi.h`): thin over `client`.
//! - [`xfer`] — the legacy HL7Xfer protocol (HNClient's socket) and MLLP framing. No I/O.
//!
//! [`gard`], [`gate`] and [`sandbox`] are built with the `server` feature (on by default):
//! the library a vendor links is built without it and holds the rest.
// `unsafe` lives in `ffi` and nowhere else: every other module also forbids it itself.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod envelope;
#[allow(unsafe_code)]
pub mod ffi;
#[cfg(feature = "server")]
pub mod gard;
#[cfg(feature = "server")]
pub mod gate;
pub mod hl7;
#[cfg(test)]
mod kat;
#[cfg(feature = "server")]
pub mod sandbox;
pub mod transport;
pub mod xfer;

/// In a build with the `test-panic` feature (tests only, never shipped), panics when the
/// environment variable `HNAPI_TEST_PANIC` names `point`: an exported C function (see
/// `ffi::boundary`) or `transaction` (every transaction of a client, whether the
/// caller's thread or a task of the library runs it). The C tests use it to
/// show what a host sees when the library panics.
#[cfg(feature = "test-panic")]
pub(crate) fn test_panic(point: &str) {
    if std::env::var_os("HNAPI_TEST_PANIC").is_some_and(|p| p == point) {
        panic!("forced by HNAPI_TEST_PANIC");
    }
}

#[cfg(not(feature = "test-panic"))]
#[inline(always)]
pub(crate) fn test_panic(_point: &str) {}

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
