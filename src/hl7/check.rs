//! HealthnetBC checks of a message (Volume 5, sections 2.2 to 2.4).
//!
//! Each finding names a path, a severity and a kind, never the data it found: a
//! finding may be logged or shown to an operator without disclosing PHI.

use std::fmt;

use super::message::{Message, Segment, Value, nth_part};
use super::path::Path;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Discouraged by Volume 5; receivers accept it.
    Warning,
    /// Not a valid healthnetBC message.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FindingKind {
    /// A required MSH field is not present.
    RequiredFieldMissing {
        /// The field's name, e.g. "message control id".
        name: &'static str,
    },
    /// A required MSH field is `""` (present but null).
    RequiredFieldNull {
        /// The field's name.
        name: &'static str,
    },
    /// A PHN (assigning authority BC, type PH) is not 10 digits.
    PhnNotTenDigits,
    /// A PHN does not start with 9.
    PhnNotStartingWithNine,
    /// A PHN's check digit does not match its mod-11 check.
    PhnCheckDigit,
    /// Lower-case letters outside NTE (Volume 5, 2.4.4).
    LowerCase,
    /// Encoding characters as data in MSH, MSA or ZHD (Volume 5, 2.4.2).
    EncodingCharacterInHeader,
    /// A message type reserved by HealthnetBC (Volume 5, 2.4.9).
    ReservedMessageType {
        /// ZFG, ZFP or ZPN.
        reserved: [u8; 3],
    },
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RequiredFieldMissing { name } => write!(f, "{name} is required"),
            Self::RequiredFieldNull { name } => write!(f, "{name} is required and may not be \"\""),
            Self::PhnNotTenDigits => f.write_str("a PHN must be 10 digits"),
            Self::PhnNotStartingWithNine => f.write_str("a PHN must start with 9"),
            Self::PhnCheckDigit => f.write_str("the PHN check digit does not match (mod 11)"),
            Self::LowerCase => {
                f.write_str("lower-case data outside NTE; healthnetBC data is upper case (2.4.4)")
            }
            Self::EncodingCharacterInHeader => {
                f.write_str("encoding characters in MSH, MSA or ZHD data are discouraged (2.4.2)")
            }
            Self::ReservedMessageType { reserved } => write!(
                f,
                "message type {} is reserved by HealthnetBC and not supported (2.4.9)",
                String::from_utf8_lossy(reserved)
            ),
        }
    }
}

/// One thing [`check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Where: a field, or a field's repetition.
    pub path: Path,
    /// What.
    pub kind: FindingKind,
}

impl fmt::Display for Finding {
    /// `error PID-2: a PHN must start with 9`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.path, self.kind)
    }
}

/// The MSH fields every healthnetBC message must fill, with their names.
const REQUIRED_MSH: [(u32, &str); 9] = [
    (3, "sending application"),
    (4, "sending facility"),
    (5, "receiving application"),
    (6, "receiving facility"),
    (7, "date/time of message"),
    (9, "message type"),
    (10, "message control id"),
    (11, "processing id"),
    (12, "version id"),
];

/// Message types HealthnetBC reserved and never implemented (Volume 5, 2.4.9).
pub const RESERVED_MESSAGE_TYPES: [&[u8; 3]; 3] = [b"ZFG", b"ZFP", b"ZPN"];

/// Checks `msg` against the healthnetBC rules hnsecure knows; the findings come in
/// message order, MSH first.
pub fn check(msg: &Message<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (n, name) in REQUIRED_MSH {
        let kind = match msg.msh(n) {
            Value::NotPresent => FindingKind::RequiredFieldMissing { name },
            Value::Null => FindingKind::RequiredFieldNull { name },
            Value::Data(_) => continue,
        };
        findings.push(Finding {
            severity: Severity::Error,
            path: Path::new(*b"MSH", n),
            kind,
        });
    }
    if let Some(reserved) = reserved_message_type(msg) {
        findings.push(Finding {
            severity: Severity::Error,
            path: Path::new(*b"MSH", 9),
            kind: FindingKind::ReservedMessageType { reserved },
        });
    }

    let mut seen: Vec<([u8; 3], u32)> = Vec::new();
    for segment in msg.segments() {
        let Ok(id) = <[u8; 3]>::try_from(segment.id()) else {
            continue; // not a segment anyone can address; ignored (2.3.3)
        };
        if !id.iter().all(u8::is_ascii_alphanumeric) {
            continue;
        }
        let occurrence = match seen.iter_mut().find(|(s, _)| *s == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((id, 1));
                1
            }
        };
        check_segment(
            msg,
            &segment,
            Path::new(id, 1).with_occurrence(occurrence),
            &mut findings,
        );
    }
    findings
}

/// The reserved type MSH-9 uses as its message type or its trigger/extension, if any.
pub fn reserved_message_type(msg: &Message<'_>) -> Option<[u8; 3]> {
    [1, 2].into_iter().find_map(|c| {
        let value = msg.value(&Path::new(*b"MSH", 9).with_component(c));
        let data = value.data()?;
        RESERVED_MESSAGE_TYPES
            .iter()
            .find(|r| data == &r[..])
            .map(|r| **r)
    })
}

fn check_segment(
    msg: &Message<'_>,
    segment: &Segment<'_, '_>,
    at: Path,
    findings: &mut Vec<Finding>,
) {
    let d = msg.delimiters();
    let id = at.segment();
    let lower_case_allowed = id == b"NTE";
    let header_like = matches!(id, b"MSH" | b"MSA" | b"ZHD");
    for (n, raw) in segment.fields() {
        if raw.is_empty() || (segment.is_header() && n <= 2) {
            continue;
        }
        let field_path = Path::new(*id, n).with_occurrence(at.occurrence());
        for (r, repetition) in (1..).zip(raw.split(|&b| b == d.repetition)) {
            if let Some(kind) = phn_finding(repetition, msg) {
                let path = if r == 1 {
                    field_path
                } else {
                    field_path.with_repetition(r)
                };
                findings.push(Finding {
                    severity: Severity::Error,
                    path,
                    kind,
                });
            }
        }
        if !lower_case_allowed && has_lower_case(raw, d.escape) {
            findings.push(Finding {
                severity: Severity::Warning,
                path: field_path,
                kind: FindingKind::LowerCase,
            });
        }
        if header_like && has_encoding_character(raw, msg) {
            findings.push(Finding {
                severity: Severity::Warning,
                path: field_path,
                kind: FindingKind::EncodingCharacterInHeader,
            });
        }
    }
}

/// For a CX repetition whose assigning authority (CX-4) is `BC` and whose identifier
/// type (CX-5) is `PH`, what is wrong with the PHN in CX-1, if anything.
fn phn_finding(repetition: &[u8], msg: &Message<'_>) -> Option<FindingKind> {
    let d = msg.delimiters();
    let authority = nth_part(repetition, d.component, 4)?;
    let authority = match d.subcomponent {
        Some(s) => nth_part(authority, s, 1)?,
        None => authority,
    };
    if authority != b"BC" || nth_part(repetition, d.component, 5)? != b"PH" {
        return None;
    }
    let id = nth_part(repetition, d.component, 1)?;
    phn_error(id)
}

/// What is wrong with `phn` as a BC Personal Health Number, or `None` when it is valid:
/// 10 digits, the first 9, the last the mod-11 check digit of digits 2 to 9.
pub fn phn_error(phn: &[u8]) -> Option<FindingKind> {
    if phn.len() != 10 || !phn.iter().all(u8::is_ascii_digit) {
        return Some(FindingKind::PhnNotTenDigits);
    }
    if phn[0] != b'9' {
        return Some(FindingKind::PhnNotStartingWithNine);
    }
    match phn_check_digit(&phn[1..9]) {
        Some(check) if check == phn[9] - b'0' => None,
        _ => Some(FindingKind::PhnCheckDigit),
    }
}

/// The check digit for PHN digits 2 to 9 (`digits`, 8 ASCII digits): the sum of each
/// digit times its weight (2, 4, 8, 5, 10, 9, 7, 3), then 11 minus that sum mod 11.
/// `None` when that gives 10 or 11: no PHN has these eight digits.
pub fn phn_check_digit(digits: &[u8]) -> Option<u8> {
    const WEIGHTS: [u32; 8] = [2, 4, 8, 5, 10, 9, 7, 3];
    if digits.len() != 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = digits
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = 11 - sum % 11;
    (check < 10).then_some(check as u8)
}

/// Lower-case ASCII letters in `raw`, not counting the insides of escape sequences
/// (`\Xff\` is hexadecimal, not text).
fn has_lower_case(raw: &[u8], escape: Option<u8>) -> bool {
    let mut in_escape = false;
    raw.iter().any(|&b| {
        if Some(b) == escape {
            in_escape = !in_escape;
            return false;
        }
        !in_escape && b.is_ascii_lowercase()
    })
}

/// True when `raw` carries an encoding character as data: an escape sequence for a
/// delimiter (`\F\ \S\ \T\ \R\ \E\`), or a subcomponent or repetition separator, which
/// no field of MSH, MSA or ZHD uses (so `SMITH & WESSON` is one).
fn has_encoding_character(raw: &[u8], msg: &Message<'_>) -> bool {
    let d = msg.delimiters();
    if raw
        .iter()
        .any(|&b| b == d.repetition || Some(b) == d.subcomponent)
    {
        return true;
    }
    let Some(esc) = d.escape else {
        return false;
    };
    raw.windows(3)
        .any(|w| w[0] == esc && w[2] == esc && matches!(w[1], b'F' | b'S' | b'T' | b'R' | b'E'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(input: &[u8]) -> Vec<String> {
        check(&Message::parse(input).unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const MSH: &str = "MSH|^~\\&|ADT1|NF20|RAIRCRD-NW-PRSN|BC0003000|19990531144853|TRAIN96|R02|19980915000020|D|2.3\r";

    #[test]
    fn phn_check_digits_from_volume5() {
        for phn in ["9865821574", "9029274643", "9076873472", "9013069354"] {
            assert_eq!(phn_error(phn.as_bytes()), None, "{phn}");
        }
        assert_eq!(phn_error(b"9865821575"), Some(FindingKind::PhnCheckDigit));
        assert_eq!(
            phn_error(b"8865821574"),
            Some(FindingKind::PhnNotStartingWithNine)
        );
        assert_eq!(phn_error(b"986582157"), Some(FindingKind::PhnNotTenDigits));
        assert_eq!(phn_error(b"98658215A4"), Some(FindingKind::PhnNotTenDigits));
        assert_eq!(phn_check_digit(b"86582157"), Some(4));
    }

    #[test]
    fn digits_whose_check_would_be_ten_or_eleven_are_never_valid() {
        // Sum 0 mod 11 gives 11; find such digits and a sum giving 10.
        assert_eq!(phn_check_digit(b"00000000"), None);
        let ten = (0..100_000_000u32)
            .map(|n| format!("{n:08}"))
            .find(|s| {
                let sum: u32 = s
                    .bytes()
                    .zip([2, 4, 8, 5, 10, 9, 7, 3])
                    .map(|(d, w)| u32::from(d - b'0') * w)
                    .sum();
                sum % 11 == 1
            })
            .unwrap();
        assert_eq!(phn_check_digit(ten.as_bytes()), None);
        for last in b'0'..=b'9' {
            let phn = [b"9", ten.as_bytes(), &[last]].concat();
            assert_eq!(phn_error(&phn), Some(FindingKind::PhnCheckDigit));
        }
    }

    #[test]
    fn a_clean_message_has_no_findings() {
        assert_eq!(
            findings(
                format!("{MSH}PID||9865821574^^^BC^PH^MOH\rNTE|||Mixed case is fine here\r")
                    .as_bytes()
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn required_msh_fields() {
        let f = findings(b"MSH|^~\\&|A||B|\"\"|T|||1|P\r");
        assert_eq!(
            f,
            [
                "error MSH-4: sending facility is required",
                "error MSH-6: receiving facility is required and may not be \"\"",
                "error MSH-9: message type is required",
                "error MSH-12: version id is required",
            ]
        );
    }

    #[test]
    fn phns_in_any_cx_field_and_repetition() {
        let msg = format!(
            "{MSH}PID||9865821575^^^BC^PH|123^^^BC^MR~8865821574^^^BC&X&Y^PH\rZPY||ORG|^10879^^^BC^XX^MOH\rPID||986582157^^^BC^PH\r"
        );
        assert_eq!(
            findings(msg.as_bytes()),
            [
                "error PID-2: the PHN check digit does not match (mod 11)",
                "error PID-3[2]: a PHN must start with 9",
                "error PID[2]-2: a PHN must be 10 digits",
            ]
        );
    }

    #[test]
    fn findings_never_contain_the_data() {
        let msg =
            format!("{MSH}PID||9865821575^^^BC^PH\rZHD|SMITH & WESSON\rZIA|||||donoghue^james\r");
        for f in findings(msg.as_bytes()) {
            assert!(
                !f.contains("9865821575") && !f.contains("SMITH") && !f.contains("donoghue"),
                "{f}"
            );
        }
    }

    #[test]
    fn lower_case_outside_nte() {
        let msg = format!("{MSH}ZHD|1|^1|TRAININGAdmin\rNTE|||Comments\rZIA|||||A\\Xff\\B\r");
        assert_eq!(
            findings(msg.as_bytes()),
            ["warning ZHD-3: lower-case data outside NTE; healthnetBC data is upper case (2.4.4)"]
        );
    }

    #[test]
    fn encoding_characters_in_msh_msa_zhd() {
        let msg = "MSH|^~\\&|A|B|C|D|1|SMITH & WESSON|R02|1|P|2.3\rMSA|AE|1|X\\F\\Y\rZHD|1|^00000010\rPID|||A&B\r";
        assert_eq!(
            findings(msg.as_bytes()),
            [
                "warning MSH-8: encoding characters in MSH, MSA or ZHD data are discouraged (2.4.2)",
                "warning MSA-3: encoding characters in MSH, MSA or ZHD data are discouraged (2.4.2)",
            ]
        );
    }

    #[test]
    fn reserved_message_types() {
        for t in ["ZFG", "ZFP^A01", "ZPN", "R02^ZPN"] {
            let msg = format!("MSH|^~\\&|A|B|C|D|1||{t}|1|P|2.3\r");
            let f = findings(msg.as_bytes());
            assert_eq!(f.len(), 1, "{t}: {f:?}");
            assert!(f[0].starts_with("error MSH-9: message type Z"), "{f:?}");
        }
        assert!(findings(b"MSH|^~\\&|A|B|C|D|1||ZFX|1|P|2.3\r").is_empty());
    }
}
