//! The two kinds of answer hnsecure writes itself (Volume 5, 2.4.11, 2.5.1, 2.5.2, 2.6).
//!
//! - An **application ACK** answers for a receiving application (the simulator, or an
//!   application that wants a ready-made ACK): MSA-1 `AA`/`AE`/`AR`, MSA-3 the first
//!   code and text, one ERR per error.
//! - A **network ACK** answers when the network failed: always `AR`, MSH-3 the component
//!   that saw the failure (`HNAPI`, `HNCLIENT`, `HNGATE`), MSH + MSA only.

use std::fmt;
use std::str::FromStr;

use super::builder::{Leaf, MessageBuilder, SegmentBuilder};
use super::codes::NetworkCode;
use super::delimiters::Delimiters;
use super::message::Message;
use super::path::Path;
use super::time::new_control_id;

/// MSA-1, the acknowledgment code (Volume 5, 2.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// `AA`: processed without application errors.
    Accept,
    /// `AE`: processed with application errors.
    Error,
    /// `AR`: rejected for a system-level reason.
    Reject,
}

impl AckCode {
    /// `"AA"`, `"AE"` or `"AR"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "AA",
            Self::Error => "AE",
            Self::Reject => "AR",
        }
    }
}

impl FromStr for AckCode {
    type Err = AckError;

    fn from_str(s: &str) -> Result<Self, AckError> {
        match s {
            "AA" => Ok(Self::Accept),
            "AE" => Ok(Self::Error),
            "AR" => Ok(Self::Reject),
            _ => Err(AckError::BadAckCode),
        }
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The severity letter that ends an application code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeSeverity {
    /// `E`
    Error,
    /// `W`
    Warning,
    /// `I`: information or confirmation (e.g. `HJMB001I`).
    Information,
}

/// Why an application ACK could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckError {
    /// MSA-1 must be AA, AE or AR.
    BadAckCode,
    /// An error code must be 7 upper-case letters or digits followed by E, W or I.
    BadErrorCode,
    /// An error text may hold at most 72 characters.
    TextTooLong,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadAckCode => "the acknowledgment code must be AA, AE or AR",
            Self::BadErrorCode => {
                "an error code is 7 upper-case letters or digits followed by E, W or I, e.g. HNHR517E"
            }
            Self::TextTooLong => "an error text may hold at most 72 characters",
        })
    }
}

impl std::error::Error for AckError {}

/// One application error, warning or confirmation: an 8-character code and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppError {
    code: String,
    text: String,
}

impl AppError {
    /// Checks the code (7 upper-case letters or digits, then E, W or I) and the text
    /// (at most 72 characters).
    pub fn new(code: &str, text: &str) -> Result<Self, AckError> {
        let b = code.as_bytes();
        let well_formed = b.len() == 8
            && b[..7]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && matches!(b[7], b'E' | b'W' | b'I');
        if !well_formed {
            return Err(AckError::BadErrorCode);
        }
        if text.chars().count() > 72 {
            return Err(AckError::TextTooLong);
        }
        Ok(Self {
            code: code.to_owned(),
            text: text.to_owned(),
        })
    }

    /// The 8-character code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The severity the code's last letter gives.
    pub fn severity(&self) -> CodeSeverity {
        match self.code.as_bytes()[7] {
            b'E' => CodeSeverity::Error,
            b'W' => CodeSeverity::Warning,
            _ => CodeSeverity::Information,
        }
    }
}

/// A field of the request's MSH as written, ready to copy into the answer.
fn copied(request: &Message<'_>, into: &MessageBuilder, field: u32) -> Leaf {
    let raw = request
        .segment(b"MSH", 1)
        .map_or(&[][..], |msh| msh.field(field));
    into.raw_leaf(request.delimiters(), raw)
}

/// An application ACK for `request` (Volume 5, 2.4.11).
///
/// MSH-3/4 and MSH-5/6 are the request's swapped, MSH-7 is `timestamp`, MSH-8 (security)
/// and MSH-11/12 are copied, MSH-9 is `ACK` with the request's trigger event when it has
/// one (`R75^Z62` is answered `ACK^Z62`, as in 2.5.6), MSH-10 is `control_id`.
/// MSA-2 is the request's MSH-10; MSA-3 is the first error's code immediately followed
/// by its text; each error becomes an ERR with ERR-1.4.1 the code and ERR-1.4.2 the text.
///
/// The result is a builder, so a receiving application can append its own segments.
pub fn application_ack(
    request: &Message<'_>,
    code: AckCode,
    errors: &[AppError],
    control_id: &str,
    timestamp: &str,
) -> MessageBuilder {
    let mut ack = MessageBuilder::new(*request.delimiters());
    let msh = [
        (3, copied(request, &ack, 5)),
        (4, copied(request, &ack, 6)),
        (5, copied(request, &ack, 3)),
        (6, copied(request, &ack, 4)),
        (7, Leaf::from(timestamp)),
        (8, copied(request, &ack, 8)),
        (10, Leaf::from(control_id)),
        (11, copied(request, &ack, 11)),
        (12, copied(request, &ack, 12)),
    ];
    for (n, value) in msh {
        ack.msh().set(n, value);
    }
    ack.msh().set_at(9, 1, 1, 1, "ACK");
    if let Some(trigger) = request
        .value(&Path::new(*b"MSH", 9).with_component(2))
        .data()
    {
        ack.msh().set_at(9, 1, 2, 1, trigger);
    }

    let mut msa = SegmentBuilder::new("MSA");
    msa.set(1, code.as_str()).set(2, copied(request, &ack, 10));
    if let Some(first) = errors.first() {
        msa.set(3, format!("{}{}", first.code, first.text));
    }
    ack.push(msa);
    for e in errors {
        let mut err = SegmentBuilder::new("ERR");
        err.set_at(1, 1, 4, 1, e.code.as_str())
            .set_at(1, 1, 4, 2, e.text.as_str());
        ack.push(err);
    }
    ack
}

/// The component of hnsecure that detected a network failure (MSH-3 of a network ACK).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkComponent {
    /// The library linked into the sending application.
    Hnapi,
    /// The client daemon, or the client core acting for it.
    Hnclient,
    /// The gateway.
    Hngate,
}

impl NetworkComponent {
    /// `"HNAPI"`, `"HNCLIENT"` or `"HNGATE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hnapi => "HNAPI",
            Self::Hnclient => "HNCLIENT",
            Self::Hngate => "HNGATE",
        }
    }
}

/// A network ACK (Volume 5, 2.5.1, 2.5.2 and 2.6; DESIGN 3.1).
///
/// MSH-3 is `component`; MSH-4 its network facility id (`facility`; blank for HNAPI);
/// MSH-5/6 the request's MSH-3/4; MSH-7 `timestamp`; MSH-8 copied; MSH-9 `ACK`; MSH-10
/// the request's MSH-10; MSH-11/12 copied, and MSH-18 (character set) when the request
/// has one. Then `MSA|AR|<request MSH-10>|<code text>`.
/// `detail` completes texts that name something (the application of `HNPS005E`).
///
/// The answer is always a whole HL7 message, whatever the request lacked: without a
/// request MSH-10 (no message, no MSH, an MSH cut short, or an empty MSH-10) MSH-10 is a
/// fresh control id ([`new_control_id`]: the time and a
/// sequence number, as the simulator makes its own), and an absent or empty MSH-11 or MSH-12 is
/// [`DEFAULT_PROCESSING_ID`] or [`DEFAULT_VERSION`]. MSA-2 stays the request's MSH-10,
/// empty when it had none: it names the request answered, and there was none to name.
/// Without a readable request (no message, no MSH, unusable delimiters) the other copied
/// fields are blank and the delimiters are `|^~\&`.
pub fn network_ack(
    request: Option<&Message<'_>>,
    component: NetworkComponent,
    facility: &str,
    code: NetworkCode,
    detail: Option<&str>,
    timestamp: &str,
) -> Vec<u8> {
    network_ack_as(
        request,
        component,
        facility,
        AckCode::Reject,
        code,
        detail,
        timestamp,
    )
}

/// MSH-11 of a network ACK whose request gives none: `P` (production).
pub const DEFAULT_PROCESSING_ID: &str = "P";
/// MSH-12 of a network ACK whose request gives none: `2.3`, the version of Volume 5's
/// messages.
pub const DEFAULT_VERSION: &str = "2.3";

/// A network ACK as [`network_ack`] builds it, with MSA-1 `ack` instead of `AR`: the
/// gateway answers a duplicate (2.4.8) with `AE`, since the request was well-formed and
/// the sender must not simply send it again.
pub fn network_ack_as(
    request: Option<&Message<'_>>,
    component: NetworkComponent,
    facility: &str,
    ack_code: AckCode,
    code: NetworkCode,
    detail: Option<&str>,
    timestamp: &str,
) -> Vec<u8> {
    network_ack_builder(
        request, component, facility, ack_code, code, detail, timestamp,
    )
    .to_bytes()
}

/// A network ACK (AR) as [`network_ack`] builds it, followed by one ERR segment that
/// carries `note` (ERR-1.4.1 its code, ERR-1.4.2 its text, as 2.4.11's ERRs do): what the
/// 72 characters of MSA-3 have no room for, such as how to start a missing receiver.
pub fn network_ack_noted(
    request: Option<&Message<'_>>,
    component: NetworkComponent,
    facility: &str,
    code: NetworkCode,
    detail: Option<&str>,
    note: &AppError,
    timestamp: &str,
) -> Vec<u8> {
    let mut ack = network_ack_builder(
        request,
        component,
        facility,
        AckCode::Reject,
        code,
        detail,
        timestamp,
    );
    let mut err = SegmentBuilder::new("ERR");
    err.set_at(1, 1, 4, 1, note.code.as_str())
        .set_at(1, 1, 4, 2, note.text.as_str());
    ack.push(err);
    ack.to_bytes()
}

fn network_ack_builder(
    request: Option<&Message<'_>>,
    component: NetworkComponent,
    facility: &str,
    ack_code: AckCode,
    code: NetworkCode,
    detail: Option<&str>,
    timestamp: &str,
) -> MessageBuilder {
    let delimiters = request.map_or(Delimiters::STANDARD, |r| *r.delimiters());
    let mut ack = MessageBuilder::new(delimiters);
    let copy = |ack: &MessageBuilder, n: u32, default: &str| match request {
        Some(r) => copied(r, ack, n),
        None => Leaf::from(default),
    };
    // The request's field when it has one, else `default`.
    let copy_or = |ack: &MessageBuilder, n: u32, default: &dyn Fn() -> String| match request {
        Some(r) if r.msh(n).is_present() => copied(r, ack, n),
        _ => Leaf::from(default()),
    };
    let msh = [
        (3, Leaf::from(component.as_str())),
        (4, Leaf::from(facility)),
        (5, copy(&ack, 3, "")),
        (6, copy(&ack, 4, "")),
        (7, Leaf::from(timestamp)),
        (8, copy(&ack, 8, "")),
        (9, Leaf::from("ACK")),
        (10, copy_or(&ack, 10, &new_control_id)),
        (11, copy_or(&ack, 11, &|| DEFAULT_PROCESSING_ID.to_owned())),
        (12, copy_or(&ack, 12, &|| DEFAULT_VERSION.to_owned())),
    ];
    for (n, value) in msh {
        ack.msh().set(n, value);
    }
    // The request's character set (MSH-18) is the answer's too: the ACK's own text is
    // ASCII, and what it copies keeps the request's bytes.
    if let Some(r) = request.filter(|r| r.msh(18).is_present()) {
        let charset = copied(r, &ack, 18);
        ack.msh().set(18, charset);
    }
    let mut msa = SegmentBuilder::new("MSA");
    msa.set(1, ack_code.as_str())
        .set(2, copy(&ack, 10, ""))
        .set(3, code.message(detail));
    ack.push(msa);
    ack
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"MSH|^~\\&|HR|BC00000098|RAICOVPART-ENQ|BC0003000|19990719102151|PM33283|R46^Z26|19980915000020|D|2.3\r";

    #[test]
    fn a_noted_network_ack_adds_one_err() {
        let req = Message::parse(REQUEST).unwrap();
        let note = AppError::new("HNPS007E", "start one: a|b^c").unwrap();
        let ack = network_ack_noted(
            Some(&req),
            NetworkComponent::Hngate,
            "HNGATE-X",
            NetworkCode::Hnps007E,
            Some("HNAPI-DEMO"),
            &note,
            "T",
        );
        assert_eq!(
            String::from_utf8(ack).unwrap(),
            "MSH|^~\\&|HNGATE|HNGATE-X|HR|BC00000098|T|PM33283|ACK|19980915000020|D|2.3\r\
             MSA|AR|19980915000020|HNPS007E Receiving application is not connected: HNAPI-DEMO\r\
             ERR|^^^HNPS007E&start one: a\\F\\b\\S\\c\r"
        );
        let plain = network_ack(
            Some(&req),
            NetworkComponent::Hngate,
            "HNGATE-X",
            NetworkCode::Hnps007E,
            Some("HNAPI-DEMO"),
            "T",
        );
        assert!(!String::from_utf8(plain).unwrap().contains("ERR"));
    }

    #[test]
    fn network_ack_keeps_the_character_set() {
        let req = Message::parse(b"MSH|^~\\&|A|F|B|G|1||R03|42|P|2.3||||||8859/1\rNTE|||Caf\xe9\r")
            .unwrap();
        let ack = network_ack(
            Some(&req),
            NetworkComponent::Hnclient,
            "F9",
            NetworkCode::Txfr024E,
            None,
            "T",
        );
        assert_eq!(
            ack,
            b"MSH|^~\\&|HNCLIENT|F9|A|F|T||ACK|42|P|2.3||||||8859/1\rMSA|AR|42|TXFR024E Connection with remote facility timed out.\r"
        );
    }

    #[test]
    fn application_ack_swaps_and_copies() {
        let req = Message::parse(REQUEST).unwrap();
        let errors = [
            AppError::new(
                "HNHR517E",
                "DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED",
            )
            .unwrap(),
            AppError::new("HJMB001I", "SUCCESSFULLY COMPLETED").unwrap(),
        ];
        let ack = application_ack(
            &req,
            AckCode::Error,
            &errors,
            "1232628",
            "20030718131224-0700",
        )
        .to_bytes();
        assert_eq!(
            String::from_utf8(ack).unwrap(),
            "MSH|^~\\&|RAICOVPART-ENQ|BC0003000|HR|BC00000098|20030718131224-0700|PM33283|ACK^Z26|1232628|D|2.3\r\
             MSA|AE|19980915000020|HNHR517EDUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED\r\
             ERR|^^^HNHR517E&DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED\r\
             ERR|^^^HJMB001I&SUCCESSFULLY COMPLETED\r"
        );
    }

    #[test]
    fn application_ack_without_errors_or_trigger() {
        let req = Message::parse(b"MSH|^~\\&|A|F|B|G|1|S|R02|42|P|2.3").unwrap();
        let ack = application_ack(&req, AckCode::Accept, &[], "43", "T").to_bytes();
        assert_eq!(ack, b"MSH|^~\\&|B|G|A|F|T|S|ACK|43|P|2.3\rMSA|AA|42\r");
    }

    #[test]
    fn app_error_checks_code_and_text() {
        assert_eq!(AppError::new("HNHR517", "X"), Err(AckError::BadErrorCode));
        assert_eq!(AppError::new("hnhr517E", "X"), Err(AckError::BadErrorCode));
        assert_eq!(AppError::new("HNHR517X", "X"), Err(AckError::BadErrorCode));
        assert_eq!(
            AppError::new("HNHR517E", &"X".repeat(73)),
            Err(AckError::TextTooLong)
        );
        assert!(AppError::new("HNHR517E", &"É".repeat(72)).is_ok());
        assert_eq!(
            AppError::new("HJMB001I", "").unwrap().severity(),
            CodeSeverity::Information
        );
        assert_eq!(
            AppError::new("HJMB001W", "").unwrap().severity(),
            CodeSeverity::Warning
        );
        assert_eq!("AE".parse::<AckCode>(), Ok(AckCode::Error));
        assert_eq!("XX".parse::<AckCode>(), Err(AckError::BadAckCode));
    }

    #[test]
    fn network_ack_without_a_request() {
        let ack = network_ack(
            None,
            NetworkComponent::Hngate,
            "BC01000018",
            NetworkCode::Vldt004E,
            None,
            "T",
        );
        let text = String::from_utf8(ack).unwrap();
        let (head, tail) = text.split_at(32);
        assert_eq!(head, "MSH|^~\\&|HNGATE|BC01000018|||T||");
        // MSH-10 a fresh control id; MSA-2 empty: there was no request id to name.
        let id = &tail[4..24];
        assert!(
            tail.starts_with("ACK|") && id.bytes().all(|b| b.is_ascii_digit()),
            "{text}"
        );
        assert_eq!(
            &tail[24..],
            "|P|2.3\rMSA|AR||VLDT004E No HL7 Message was supplied as input\r"
        );
    }

    #[test]
    fn network_ack_fills_what_a_short_msh_lacks() {
        // An MSH cut after MSH-9 (HNPS002E): fresh MSH-10, default MSH-11/12.
        let req = Message::parse(b"MSH|^~\\&|A|F|B|G|1||R03").unwrap();
        let ack = network_ack(
            Some(&req),
            NetworkComponent::Hnclient,
            "F9",
            NetworkCode::Hnps002E,
            None,
            "T",
        );
        let parsed = Message::parse(&ack).unwrap();
        let field = |n| parsed.msh(n).data().unwrap_or_default().to_vec();
        assert_eq!(field(10).len(), 20);
        assert_eq!((field(11), field(12)), (b"P".to_vec(), b"2.3".to_vec()));
        assert!(ack.ends_with(b"\rMSA|AR||HNPS002E Invalid MSH segment format\r"));
        // What the request has is copied, as before.
        let req = Message::parse(b"MSH|^~\\&|A|F|B|G|1||R03|42|T|2.4").unwrap();
        let ack = network_ack(
            Some(&req),
            NetworkComponent::Hnclient,
            "F9",
            NetworkCode::Hnps002E,
            None,
            "T",
        );
        assert!(ack.starts_with(b"MSH|^~\\&|HNCLIENT|F9|A|F|T||ACK|42|T|2.4\r"));
    }

    #[test]
    fn network_ack_keeps_the_request_delimiters() {
        let req = Message::parse(b"MSH!@#$%!APP!FAC!RAPP!RFAC!1!!ZLI@L01!ID$F$7!P!2.3").unwrap();
        let ack = network_ack(
            Some(&req),
            NetworkComponent::Hnapi,
            "",
            NetworkCode::Hnps005E,
            Some("A!B"),
            "T",
        );
        assert_eq!(
            ack,
            b"MSH!@#$%!HNAPI!!APP!FAC!T!!ACK!ID$F$7!P!2.3\rMSA!AR!ID$F$7!HNPS005E Unknown receiving application: A$F$B\r"
        );
    }
}
