//! The two legacy ways applications reach an HNCLIENT, as codecs without I/O (DESIGN 3.3).
//!
//! Sockets, timeouts and random challenges live with the caller (the `hnsecure client`
//! daemon, HNAPI's legacy mode); here bytes go in and bytes or the next state come out.
//!
//! # HL7Xfer ([`hl7xfer`])
//!
//! HNClient 4.1.d's protocol: one transaction per TCP connection, the listener (the
//! HNCLIENT) speaks first, every block after the handshake is scrambled ([`scramble`]).
//!
//! | step | from | bytes | scrambled with |
//! |---|---|---|---|
//! | 1 | listener | `HS0000000008`, then 8 random bytes `c` | not scrambled |
//! | 2 | originator | `HS0000000008`, then `e = scramble(c, 0)` | header not; `e` seed 0 |
//! | | | the connection's seed `k = e[7]` | |
//! | 3 | originator | `SI0000000032`, then `A` + host (16) + IP (15) | each block on its own, `k` |
//! | 4 | originator | `DT` + 10-digit length, then the message | each block on its own, `k` |
//! | 5 | listener | `DT` + 10-digit length, then the response; close | each block on its own, `k` |
//!
//! See [`hl7xfer`] for the byte-level table, a worked example and where it comes from.
//!
//! # MLLP ([`mllp`])
//!
//! The HL7 standard's framing: many messages per connection, each
//!
//! | bytes | meaning |
//! |---|---|
//! | `0x0B` | start of a frame |
//! | the message | any bytes but `0x1C` |
//! | `0x1C 0x0D` | end of the frame |
//!
//! with CR, LF, space or tab tolerated between frames.

pub mod hl7xfer;
pub mod mllp;
pub mod scramble;
