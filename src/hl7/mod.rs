//! The HL7 v2 core: parse, address, decode, build and check healthnetBC messages.
//!
//! Nothing here does I/O. The rules are those of the BC Ministry of Health's
//! "Volume 5 – Network Transmission and Responses" (sections 2.2 to 2.6):
//!
//! - [`Message`] parses bytes in place (zero-copy); delimiters come from each message's
//!   MSH-1 and MSH-2; segments may end with CR, LF or CRLF.
//! - [`Path`] addresses values the way HL7 people write them: `MSH-10`, `ERR[3]-1.4.1`,
//!   `PID-5[2].1`.
//! - [`Value`] tells "not present" (`||`) from "present but null" (`|""|`) from data,
//!   with escape sequences decoded ([`escape`]).
//! - [`MessageBuilder`] writes canonical ER7.
//! - [`application_ack`] and [`network_ack`] write the answers of 2.4.11 and 2.5.1/2.5.2,
//!   with the codes of [`NetworkCode`].
//! - [`check`] reports what a message breaks of the healthnetBC rules.
//!
//! ```
//! use hnapi::hl7::{Message, Path, Value};
//!
//! let msg = Message::parse(b"MSH|^~\\&|HR|BC00000098|RAIEND-PYR-RL|BC0003000|20010719125635|PM33283|R35|20010915000017|D|2.3\rPID||9029274643^^^BC^PH\r")?;
//! assert_eq!(msg.msh(10).text(), "20010915000017");
//! let phn: Path = "PID-2.1".parse()?;
//! assert_eq!(msg.value(&phn).text(), "9029274643");
//! assert_eq!(msg.value(&"PID-3".parse()?), Value::NotPresent);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod ack;
mod builder;
mod check;
mod codes;
mod delimiters;
pub mod escape;
mod message;
mod path;
mod time;

pub use ack::{
    AckCode, AckError, AppError, CodeSeverity, DEFAULT_PROCESSING_ID, DEFAULT_VERSION,
    NetworkComponent, application_ack, network_ack, network_ack_as, network_ack_noted,
};
pub use builder::{Leaf, MessageBuilder, SegmentBuilder};
pub use check::{
    Finding, FindingKind, RESERVED_MESSAGE_TYPES, Severity, check, phn_check_digit, phn_error,
    reserved_message_type,
};
pub use codes::{NetworkCode, condition_code};
pub use delimiters::{DelimiterError, Delimiters};
pub use message::{Message, ParseError, Segment, Value, split_messages};
pub use path::{MAX_INDEX, Path, PathError};
pub use time::{new_control_id, now_pacific, pacific, pacific_timestamp};

/// `bytes` as text safe for one log line or one journal field: at most `max` bytes of
/// it, invalid UTF-8 replaced, and every control character written as `\xHH` (a
/// backslash as `\\`), so that nothing from the network can start a line or a column.
pub fn printable(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut out = String::with_capacity(cut.len());
    for c in String::from_utf8_lossy(cut).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let n = u32::from(c);
                if n <= 0xFF {
                    out.push_str(&format!("\\x{n:02X}"));
                } else {
                    out.push_str(&format!("\\u{{{n:04X}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}
