//! The audit journal and the duplicate window (DESIGN 3.7; Volume 5, 2.4.8): the records
//! the gateway hands to the directory's store, so that several gateways sharing one
//! PostgreSQL directory keep one journal and one duplicate window.
//!
//! An audit record names a transaction or a security event by its envelope — facility,
//! peer, MSH-3, MSH-9, MSH-10, route, outcome, code, sizes, latency — and never carries a
//! message body, a patient's name or a PHN.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

use super::UnknownName;

/// What an audit row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditKind {
    /// A message that reached routing and got an answer (AA, AE or AR).
    Transaction,
    /// A refused connection or message: a certificate refused, MSH-4 not the
    /// certificate's facility, a bad envelope, a replay, a revoked or expired facility.
    Security,
}

impl AuditKind {
    /// `transaction` or `security`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transaction => "transaction",
            Self::Security => "security",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = UnknownName;

    /// `transaction` or `security`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "transaction" => Ok(Self::Transaction),
            "security" => Ok(Self::Security),
            _ => Err(UnknownName {
                kind: "an audit kind (transaction or security)",
                found: s.to_owned(),
            }),
        }
    }
}

/// One row of the audit journal. Never a message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it happened. Stores keep it to the microsecond.
    pub at: Timestamp,
    /// A transaction or a security event.
    pub kind: AuditKind,
    /// The sender's facility (from its certificate), `""` when unknown.
    pub facility: String,
    /// `IP:PORT` of the connection, `""` when none.
    pub peer: String,
    /// MSH-3, the sending application.
    pub sending_application: String,
    /// MSH-10, the message control id.
    pub control_id: String,
    /// MSH-9 as written, e.g. `R03` or `R46^Z26`.
    pub message_type: String,
    /// The matching route's MSH-5 pattern (`*` for any), `""` when none.
    pub route: String,
    /// `sim`, `app:NAME`, `mllp://host:port`, `mllps://host:port`, `""` when none.
    pub destination: String,
    /// MSA-1 of the answer (`AA`, `AE`, `AR`), or `refused` for a security event.
    pub outcome: String,
    /// The answer's code, e.g. `TXFR024E`, `VLDT008E`, `HNHR517E`; for a security event
    /// its name: `certificate-refused`, `msh4-mismatch`, `bad-envelope`, `bad-frame`,
    /// `replay`, `revoked`, `expired`, `registration-refused`, `registration-limited`,
    /// `not-authenticated`, `registered`, `renewed`.
    pub code: String,
    /// Milliseconds from the request to the answer.
    pub latency_ms: u64,
    /// Size of the request, bytes.
    pub request_bytes: u64,
    /// Size of the answer, bytes.
    pub answer_bytes: u64,
    /// A short sentence for an operator; no PHI.
    pub detail: String,
}

impl AuditRecord {
    /// A security event of `facility` from `peer`, now: `outcome` is `refused` (or
    /// `renewed`), `code` names the event, `detail` says it for people.
    pub fn security(facility: &str, peer: &str, outcome: &str, code: &str, detail: String) -> Self {
        Self {
            at: Timestamp::now(),
            kind: AuditKind::Security,
            facility: facility.to_owned(),
            peer: peer.to_owned(),
            sending_application: String::new(),
            control_id: String::new(),
            message_type: String::new(),
            route: String::new(),
            destination: String::new(),
            outcome: outcome.to_owned(),
            code: code.to_owned(),
            latency_ms: 0,
            request_bytes: 0,
            answer_bytes: 0,
            detail,
        }
    }
}

/// Which audit rows to read ([`Gard::audit`](super::Gard::audit)). Every condition given
/// must hold; the default reads the whole journal.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only rows at or after this instant.
    pub since: Option<Timestamp>,
    /// Only rows of this facility.
    pub facility: Option<String>,
    /// Only rows whose `outcome` is exactly this (`AA`, `AE`, `AR`, `refused`).
    pub outcome: Option<String>,
    /// Only rows of this kind.
    pub kind: Option<AuditKind>,
    /// Only the newest N matching rows. Results are ordered oldest first either way.
    pub limit: Option<usize>,
}

/// The key of Volume 5's duplicate check (2.4.8): a transaction is identified by its
/// control id, sending facility and sending application.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DuplicateKey {
    /// MSH-10.
    pub control_id: String,
    /// MSH-4.
    pub facility: String,
    /// MSH-3.
    pub application: String,
}

/// `t` as whole microseconds since the Unix epoch: how stores keep audit and duplicate
/// times (the precision of PostgreSQL's timestamps, and exact in 64 bits for ±292,000 years).
pub(crate) fn to_micros(t: Timestamp) -> i64 {
    // Every jiff timestamp (years -9999 to 9999) is within ±3.2e17 µs.
    t.as_microsecond()
}

/// The timestamp of `micros` microseconds since the Unix epoch.
pub(crate) fn from_micros(micros: i64) -> Result<Timestamp, jiff::Error> {
    Timestamp::from_microsecond(micros)
}

/// Text as the stores keep it: a NUL character (which PostgreSQL text cannot hold, and
/// which no HL7 field should carry) becomes U+FFFD, in every store alike.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A count or size as a database integer (both databases have signed 64-bit integers);
/// saturates, which no real size reaches.
pub(crate) fn to_db_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gard_audit_kinds_read_back_their_names() {
        for kind in [AuditKind::Transaction, AuditKind::Security] {
            assert_eq!(kind.as_str().parse::<AuditKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        let e = "Security".parse::<AuditKind>().unwrap_err().to_string();
        assert_eq!(
            e,
            "\"Security\" is not an audit kind (transaction or security)"
        );
    }

    #[test]
    fn gard_audit_times_keep_microseconds() {
        let t: Timestamp = "2026-11-23T18:00:00.123456789Z".parse().unwrap();
        let micros = to_micros(t);
        assert_eq!(micros % 1_000_000, 123_456);
        assert_eq!(
            from_micros(micros).unwrap(),
            "2026-11-23T18:00:00.123456Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(to_db_u64(u64::MAX), i64::MAX);
        assert_eq!(to_db_u64(7), 7);
    }
}
