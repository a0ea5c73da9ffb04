//! Admission: what the gateway lets through to a receiving system, decided in one place.
//!
//! [`admit`] takes the facility the sender authenticated as (its certificate) and the
//! request as the envelope opened it, and gives either the canonical bytes to forward and
//! the route they take, or the refusal to answer with. Whatever the gateway forwards is
//! exactly the bytes admission checked: a receiving system, whatever HL7 parser it uses,
//! reads from them the one message and the one sender the gateway read.
//!
//! The checks, in order (the README and SECURITY.md show this list):
//!
//! 1. **Bytes** — no control character but CR, LF and TAB: no byte below 0x20 otherwise
//!    (MLLP's 0x0B and 0x1C among them), no DEL (0x7F), no C1 control (U+0080 to U+009F,
//!    and the line and paragraph separators U+2028 and U+2029, in a UTF-8 message; the
//!    bytes 0x80 to 0x9F in one that is not UTF-8, which a Latin-1 reader takes for C1
//!    controls). `HNPS010E`.
//! 2. **An MSH** — something is there (`VLDT004E`), it starts with MSH (`VLDT007E`), and
//!    MSH declares delimiters (`HNPS002E`).
//! 3. **Standard delimiters** — MSH-1 is `|` and MSH-2 is `^~\&`, the values healthnetBC
//!    uses (Volume 5, 2.3.1 and 2.4.2). `HNPS011E`.
//! 4. **One message** — every segment id is three capitals or digits, exactly one is MSH
//!    (the first), and none is BHS, BTS, FHS or FTS. `HNPS012E`.
//! 5. **Required fields** — MSH-9 and MSH-10 are present. `HNPS002E`.
//! 6. **The sender** — the raw MSH-4 field equals the certificate's facility id exactly:
//!    no components, repetitions, subcomponents or escapes. `VLDT008E`.
//! 7. **The receiver** — MSH-6 is present. `VLDT009E`.
//! 8. **A route** — a route matches MSH-5 (and MSH-6, MSH-9 where it says). `HNPS005E`.
//! 9. **Not reserved** — MSH-9 is not ZFG, ZFP or ZPN (2.4.9). `HNPS006E`.
//!
//! Then the gateway's network side checks duplicates where the route asks (2.4.8,
//! `HNPS009E`), which needs the directory.
//!
//! The canonical bytes are the segments as written, each ended by one CR: LF and CRLF
//! become CR, empty lines and leading white space are dropped. A request that already is
//! canonical is forwarded as it came, without a copy.

use std::borrow::Cow;

use super::config::{GateConfig, Route};
use crate::hl7::{self, Message, NetworkCode, ParseError, Path};

/// A request admission let through.
#[derive(Debug)]
pub struct Admitted<'a> {
    /// The bytes to forward: the request in canonical form.
    pub bytes: Cow<'a, [u8]>,
    /// The route that matched.
    pub route: Route,
}

/// Why admission refused a request: the code the gateway's AR carries, with a detail
/// for its text, and the audit code of a security event when the refusal is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The network code of the AR.
    pub code: NetworkCode,
    /// What follows the code's text in MSA-3, when anything does.
    pub detail: Option<String>,
    /// The journal's security code (`smuggling`, `msh4-mismatch`, …) when the refusal
    /// is a security event; `None` for an ordinary mistake.
    pub security: Option<&'static str>,
    /// What the security event's journal row says, without message text.
    pub why: String,
}

impl Refused {
    fn new(code: NetworkCode, why: impl Into<String>) -> Self {
        Self {
            code,
            detail: None,
            security: None,
            why: why.into(),
        }
    }

    fn security(mut self, event: &'static str) -> Self {
        self.security = Some(event);
        self
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// The request `request` from the facility `facility`, admitted with its canonical bytes
/// and route, or refused (see the module's list of checks, in their order).
pub fn admit<'a>(
    facility: &str,
    config: &GateConfig,
    request: &'a [u8],
) -> Result<Admitted<'a>, Refused> {
    // 1. Bytes.
    if let Some((at, what)) = forbidden_byte(request) {
        return Err(Refused::new(
            NetworkCode::Hnps010E,
            format!("the request holds {what} at byte {at}"),
        )
        .security("control-bytes"));
    }
    // 2. An MSH.
    let parsed = match Message::parse(request) {
        Ok(m) => m,
        Err(ParseError::Empty) => return Err(Refused::new(NetworkCode::Vldt004E, "empty")),
        Err(e) => return Err(Refused::new(e.network_code(), e.to_string())),
    };
    // 3. Standard delimiters.
    let msh = parsed
        .segments()
        .next()
        .filter(|s| s.is_header())
        .ok_or_else(|| Refused::new(NetworkCode::Vldt007E, "no MSH"))?;
    if msh.field(1) != b"|" || msh.field(2) != b"^~\\&" {
        return Err(Refused::new(
            NetworkCode::Hnps011E,
            "MSH-1 and MSH-2 are not the standard delimiters",
        )
        .security("delimiters"));
    }
    // 4. One message.
    for (n, segment) in parsed.segments().enumerate() {
        let id = segment.id();
        let well_formed = id.len() == 3
            && id[0].is_ascii_uppercase()
            && id[1..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let why = if !well_formed {
            Some(format!("segment {} has no three-character id", n + 1))
        } else if n > 0 && id == b"MSH" {
            Some(format!("segment {} is a second MSH", n + 1))
        } else if matches!(id, b"BHS" | b"BTS" | b"FHS" | b"FTS") {
            Some(format!(
                "segment {} is a batch or file segment ({})",
                n + 1,
                String::from_utf8_lossy(id)
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Refused::new(NetworkCode::Hnps012E, why).security("smuggling"));
        }
    }
    // 5. Required fields.
    if !parsed.msh(9).is_present() || !parsed.msh(10).is_present() {
        return Err(Refused::new(
            NetworkCode::Hnps002E,
            "MSH-9 or MSH-10 is missing",
        ));
    }
    // 6. The sender: the whole field as written, nothing decoded.
    if msh.field(4) != facility.as_bytes() {
        return Err(Refused::new(
            NetworkCode::Vldt008E,
            "MSH-4 is not exactly the certificate's facility",
        )
        .security("msh4-mismatch"));
    }
    // 7. The receiver.
    if !parsed.msh(6).is_present() {
        return Err(Refused::new(NetworkCode::Vldt009E, "MSH-6 is missing"));
    }
    // 8. A route.
    let Some(route) = config.route(&parsed) else {
        return Err(Refused::new(NetworkCode::Hnps005E, "no route").detail(parsed.msh(5).text()));
    };
    // 9. Not reserved.
    if let Some(reserved) = hl7::reserved_message_type(&parsed) {
        return Err(Refused::new(NetworkCode::Hnps006E, "reserved message type")
            .detail(String::from_utf8_lossy(&reserved)));
    }
    Ok(Admitted {
        bytes: canonical(&parsed),
        route: route.clone(),
    })
}

/// The request's segments, each ended by one CR; borrowed when the request is already so.
fn canonical<'a>(msg: &Message<'a>) -> Cow<'a, [u8]> {
    let input = msg.as_bytes();
    let mut expected = 0;
    let mut already = true;
    for segment in msg.segments() {
        let bytes = segment.as_bytes();
        let start = bytes.as_ptr() as usize - input.as_ptr() as usize;
        let end = start + bytes.len();
        if start != expected || input.get(end) != Some(&b'\r') {
            already = false;
            break;
        }
        expected = end + 1;
    }
    if already && expected == input.len() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + 1);
    for segment in msg.segments() {
        out.extend_from_slice(segment.as_bytes());
        out.push(b'\r');
    }
    Cow::Owned(out)
}

/// The first byte admission does not forward, with its offset and a name for it.
pub fn forbidden_byte(bytes: &[u8]) -> Option<(usize, String)> {
    if let Some(at) = bytes
        .iter()
        .position(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7F)
    {
        return Some((at, format!("the control byte 0x{:02X}", bytes[at])));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => text.char_indices().find_map(|(at, c)| {
            (('\u{80}'..='\u{9F}').contains(&c) || c == '\u{2028}' || c == '\u{2029}')
                .then(|| (at, format!("the control character U+{:04X}", u32::from(c))))
        }),
        Err(_) => bytes
            .iter()
            .position(|b| (0x80..=0x9F).contains(b))
            .map(|at| {
                (
                    at,
                    format!("the byte 0x{:02X} (a C1 control in Latin-1)", bytes[at]),
                )
            }),
    }
}

/// The request parsed for building the gateway's AR to it, when its MSH is safe to copy
/// into an answer (no forbidden byte in the MSH segment); `None` otherwise, and the AR
/// then carries no copied fields.
pub fn for_answer(request: &[u8]) -> Option<Message<'_>> {
    let msg = Message::parse(request).ok()?;
    let msh = msg.segments().next()?;
    if forbidden_byte(msh.as_bytes()).is_some() {
        return None;
    }
    Some(msg)
}

/// MSH-10 of a request, for a log line or the journal: at most 64 bytes, with control
/// characters escaped.
pub fn control_id(msg: &Message<'_>) -> String {
    printable(msg.raw(&Path::new(*b"MSH", 10)).unwrap_or_default(), 64)
}

pub use crate::hl7::printable;

#[cfg(test)]
mod tests {
    use super::*;

    const FACILITY: &str = "BC00000098";

    fn config() -> GateConfig {
        GateConfig::from_toml(
            r#"
listen = "127.0.0.1:0"
gard = "gard"
facility = "BC01000018"
[[route]]
application = "*"
destination = "sim"
"#,
            std::path::Path::new("."),
        )
        .unwrap()
    }

    fn request(msh4: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|HNWEB|{msh4}|RAIGT-PRSN-DMGR|BC00001013|20260101120000|TRAIN|R03|CTRL1|D|2.4\r\
             PID||9012372173^^^BC^PH\r"
        )
        .into_bytes()
    }

    fn code(bytes: &[u8]) -> Result<(), NetworkCode> {
        admit(FACILITY, &config(), bytes)
            .map(|_| ())
            .map_err(|r| r.code)
    }

    #[test]
    fn a_canonical_request_is_forwarded_as_it_came() {
        let r = request(FACILITY);
        let admitted = admit(FACILITY, &config(), &r).unwrap();
        assert!(matches!(admitted.bytes, Cow::Borrowed(_)));
        assert_eq!(&*admitted.bytes, &r[..]);
    }

    #[test]
    fn segment_ends_become_cr() {
        let r = request(FACILITY);
        let canonical = r.clone();
        for (from, to) in [("\r", "\n"), ("\r", "\r\n"), ("\rPID", "\r\r\n\nPID")] {
            let text = String::from_utf8(r.clone()).unwrap().replace(from, to);
            let admitted = admit(FACILITY, &config(), text.as_bytes()).unwrap();
            assert_eq!(&*admitted.bytes, &canonical[..], "{text:?}");
        }
        // No terminator at the end, leading white space.
        let mut bare = b"\r\n  ".to_vec();
        bare.extend_from_slice(&r[..r.len() - 1]);
        assert_eq!(
            &*admit(FACILITY, &config(), &bare).unwrap().bytes,
            &canonical[..]
        );
    }

    #[test]
    fn framing_and_control_bytes_are_refused() {
        let r = request(FACILITY);
        for bad in [0x00u8, 0x0B, 0x1C, 0x1D, 0x1E, 0x0C, 0x1B, 0x7F, 0x08] {
            let mut m = r.clone();
            m.insert(20, bad);
            assert_eq!(code(&m), Err(NetworkCode::Hnps010E), "0x{bad:02X}");
        }
        // The smuggling of the review: a frame end and a second message.
        let mut smuggled = r.clone();
        smuggled.extend_from_slice(b"\x1c\r\x0b");
        smuggled.extend_from_slice(&request("BC00000099"));
        assert_eq!(code(&smuggled), Err(NetworkCode::Hnps010E));
        let refused = admit(FACILITY, &config(), &smuggled).unwrap_err();
        assert_eq!(refused.security, Some("control-bytes"));
        // TAB is data.
        let mut tab = r.clone();
        tab.insert(r.len() - 2, b'\t');
        assert_eq!(code(&tab), Ok(()));
    }

    #[test]
    fn c1_controls_and_unicode_separators_are_refused() {
        let r = String::from_utf8(request(FACILITY)).unwrap();
        for c in ['\u{85}', '\u{80}', '\u{9F}', '\u{2028}', '\u{2029}'] {
            let m = r.replace("9012372173", &format!("90123{c}72173"));
            assert_eq!(code(m.as_bytes()), Err(NetworkCode::Hnps010E), "{c:?}");
        }
        // Letters outside ASCII are data, in UTF-8 and in Latin-1.
        assert_eq!(code(r.replace("PID||", "PID|é|").as_bytes()), Ok(()));
        let mut latin1 = request(FACILITY);
        latin1.insert(latin1.len() - 3, 0xE9);
        assert_eq!(code(&latin1), Ok(()));
        let mut nel = request(FACILITY);
        nel.insert(nel.len() - 3, 0x85);
        assert_eq!(code(&nel), Err(NetworkCode::Hnps010E), "NEL in Latin-1");
    }

    #[test]
    fn the_sender_must_be_the_whole_msh4_field() {
        assert_eq!(code(&request(FACILITY)), Ok(()));
        for msh4 in [
            "BC00000098^BC00000099^L",
            "BC00000098^",
            "BC00000098~BC00000099",
            "BC00000098&X",
            "BC0000009\\X38\\",
            "BC00000099",
            "bc00000098",
            " BC00000098",
            "",
        ] {
            let refused = admit(FACILITY, &config(), &request(msh4)).unwrap_err();
            assert_eq!(refused.code, NetworkCode::Vldt008E, "{msh4}");
            assert_eq!(refused.security, Some("msh4-mismatch"));
        }
    }

    #[test]
    fn only_the_standard_delimiters_are_accepted() {
        let swapped = b"MSH^|~\\&^HNWEB^BC00000098|X|BC00000099^RAIGT^BC00001013^^^R03^C1^D^2.4\r";
        assert_eq!(code(swapped), Err(NetworkCode::Hnps011E));
        for msh in ["MSH|^~\\|", "MSH|^~\\&#|", "MSH|~^\\&|", "MSH#^~\\&#"] {
            let r = String::from_utf8(request(FACILITY))
                .unwrap()
                .replacen("MSH|^~\\&|", msh, 1);
            assert_eq!(code(r.as_bytes()), Err(NetworkCode::Hnps011E), "{msh}");
        }
    }

    #[test]
    fn exactly_one_message_is_accepted() {
        let one = String::from_utf8(request(FACILITY)).unwrap();
        let two = format!("{one}{}", String::from_utf8(request("BC00000099")).unwrap());
        assert_eq!(code(two.as_bytes()), Err(NetworkCode::Hnps012E));
        let same = format!("{one}{one}");
        assert_eq!(code(same.as_bytes()), Err(NetworkCode::Hnps012E));
        for extra in ["BHS|^~\\&\r", "BTS|1\r", "FHS|^~\\&\r", "FTS|1\r"] {
            assert_eq!(
                code(format!("{one}{extra}").as_bytes()),
                Err(NetworkCode::Hnps012E),
                "{extra}"
            );
        }
        for odd in [" MSH|^~\\&|X\r", "msh|x\r", "PI|x\r", "PIDX|x\r", "1AB|x\r"] {
            assert_eq!(
                code(format!("{one}{odd}").as_bytes()),
                Err(NetworkCode::Hnps012E),
                "{odd:?}"
            );
        }
        assert_eq!(code(format!("{one}ZZ1|x\rNTE\r").as_bytes()), Ok(()));
    }

    #[test]
    fn the_other_checks_keep_their_codes() {
        assert_eq!(code(b""), Err(NetworkCode::Vldt004E));
        assert_eq!(code(b" \r\n"), Err(NetworkCode::Vldt004E));
        assert_eq!(code(b"PID|1\r"), Err(NetworkCode::Vldt007E));
        assert_eq!(code(b"MSH"), Err(NetworkCode::Hnps002E));
        assert_eq!(
            code(b"MSH|^~\\&|A|BC00000098|B|C|1||||2.4\r"),
            Err(NetworkCode::Hnps002E),
            "no MSH-9 or MSH-10"
        );
        assert_eq!(
            code(b"MSH|^~\\&|A|BC00000098|B||1||R03|C1|D|2.4\r"),
            Err(NetworkCode::Vldt009E)
        );
        assert_eq!(
            code(b"MSH|^~\\&|A|BC00000098|B|C|1||ZPN|C1|D|2.4\r"),
            Err(NetworkCode::Hnps006E)
        );
        let no_route = GateConfig::from_toml(
            "listen = \"127.0.0.1:0\"\ngard = \"g\"\nfacility = \"BC01000018\"\n\
             [[route]]\napplication = \"ONLY\"\ndestination = \"sim\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let refused = admit(FACILITY, &no_route, &request(FACILITY)).unwrap_err();
        assert_eq!(refused.code, NetworkCode::Hnps005E);
        assert_eq!(refused.detail.as_deref(), Some("RAIGT-PRSN-DMGR"));
        assert_eq!(refused.security, None);
    }

    #[test]
    fn printable_escapes_what_could_forge_a_line() {
        assert_eq!(printable(b"CTRL1", 64), "CTRL1");
        assert_eq!(printable(b"a\nb\tc\\d\x1c", 64), "a\\x0Ab\\x09c\\\\d\\x1C");
        assert_eq!(printable("x\u{2028}".as_bytes(), 64), "x\\u{2028}");
        assert_eq!(printable(b"abcdef", 3), "abc");
    }

    #[test]
    fn an_answer_copies_only_a_clean_msh() {
        assert!(for_answer(&request(FACILITY)).is_some());
        let mut dirty = request(FACILITY);
        dirty.insert(10, 0x1C);
        assert!(for_answer(&dirty).is_none());
        let mut body = request(FACILITY);
        body.insert(body.len() - 3, 0x0B);
        assert!(for_answer(&body).is_some(), "the MSH itself is clean");
    }
}
