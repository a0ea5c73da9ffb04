//! Every network condition code hnsecure answers with, in one table.
//!
//! A network ACK (Volume 5, 2.5.1, 2.5.2 and 2.6) carries one of these in MSA-3 as the
//! 8-character code (7 characters and the severity letter), a space and the text.
//! HNSecure's own codes are reused where partner software already knows them; codes
//! hnsecure adds keep the same form. The README lists this table; a test keeps the two
//! the same.

/// A network condition answered with an AR ACK by the component that detected it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetworkCode {
    /// HNAPI could not reach, or got no full answer from, the HNCLIENT it relays through.
    Recv022E,
    /// The gateway or the receiving system did not answer in time, or the connection
    /// to it was lost.
    Txfr024E,
    /// The secure connection or the envelope was refused: TLS, certificate or MAC failure.
    Txfr029E,
    /// The HL7Xfer server (an HNCLIENT) could not be contacted.
    Txfr036E,
    /// The HL7Xfer server (an HNCLIENT) timed out with no or a partial answer.
    Txfr039E,
    /// HL7Xfer: the originator's HS segment or its answer to the challenge was wrong.
    Xfer001E,
    /// HL7Xfer: a segment header or length was malformed, or bytes followed the message.
    Xfer002E,
    /// HL7Xfer or MLLP: the message is larger than the listener's maximum.
    Xfer003E,
    /// MLLP: bytes outside a frame, or a frame not ended by `0x1C 0x0D`.
    Xfer004E,
    /// The request held no HL7 message at all.
    Vldt004E,
    /// The request does not start with an MSH segment.
    Vldt007E,
    /// MSH-4 (sending facility) is not the facility of the sender's certificate.
    Vldt008E,
    /// MSH-6 (receiving facility) is empty.
    Vldt009E,
    /// The message is not well-formed HL7 beyond its MSH.
    Vldt014E,
    /// The MSH segment is malformed: unusable delimiters or missing required fields.
    Hnps002E,
    /// No route exists for MSH-5 (receiving application).
    Hnps005E,
    /// MSH-9 uses a message type reserved by HealthnetBC (ZFG, ZFP, ZPN; Volume 5, 2.4.9).
    Hnps006E,
    /// The route's receiving application (an HNAPI server application) is not connected.
    Hnps007E,
    /// The sending facility is over its request rate at the gateway.
    Hnps008E,
    /// The request repeats a control id, sending facility and application seen within
    /// the route's duplicate window (Volume 5, 2.4.8); answered AE.
    Hnps009E,
    /// The request holds a byte the gateway does not forward: a control character other
    /// than CR, LF and TAB (MLLP's 0x0B and 0x1C among them), DEL, or a C1 control.
    Hnps010E,
    /// MSH-1 and MSH-2 are not the standard delimiters `|^~\&` that healthnetBC uses.
    Hnps011E,
    /// The request is not exactly one message: a second MSH, a batch or file segment
    /// (BHS, BTS, FHS, FTS), or a segment whose id is not three capitals or digits.
    Hnps012E,
    /// The gateway's audit journal cannot be written (`audit = "required"`): the request
    /// was not passed on, or its answer was withheld because its row could not be kept.
    Hnps013E,
}

/// The condition code that starts an MSA-3 (`TXFR024E…`, `HNHR517E…`): four capitals,
/// three digits and a severity letter. `None` when MSA-3 does not start with one.
pub fn condition_code(msa3: &[u8]) -> Option<&[u8]> {
    msa3.get(..8).filter(|c| {
        c[..4].iter().all(u8::is_ascii_uppercase)
            && c[4..7].iter().all(u8::is_ascii_digit)
            && c[7].is_ascii_uppercase()
    })
}

impl NetworkCode {
    /// Every code, in the order of the README table.
    pub const ALL: &'static [NetworkCode] = &[
        Self::Recv022E,
        Self::Txfr024E,
        Self::Txfr029E,
        Self::Txfr036E,
        Self::Txfr039E,
        Self::Xfer001E,
        Self::Xfer002E,
        Self::Xfer003E,
        Self::Xfer004E,
        Self::Vldt004E,
        Self::Vldt007E,
        Self::Vldt008E,
        Self::Vldt009E,
        Self::Vldt014E,
        Self::Hnps002E,
        Self::Hnps005E,
        Self::Hnps006E,
        Self::Hnps007E,
        Self::Hnps008E,
        Self::Hnps009E,
        Self::Hnps010E,
        Self::Hnps011E,
        Self::Hnps012E,
        Self::Hnps013E,
    ];

    /// The 8-character code, e.g. `"TXFR024E"`.
    pub fn code(self) -> &'static str {
        self.entry().0
    }

    /// The text that follows the code in MSA-3.
    pub fn text(self) -> &'static str {
        self.entry().1
    }

    /// When the code is given, for operators (the README's third column).
    pub fn meaning(self) -> &'static str {
        self.entry().2
    }

    /// The code with this 8-character name.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// MSA-3: the code, a space and the text, then `: detail` when given; the text part
    /// is cut to the 72 characters Volume 5 allows (2.4.11).
    pub fn message(self, detail: Option<&str>) -> String {
        let mut text = self.text().to_owned();
        if let Some(detail) = detail.filter(|d| !d.is_empty()) {
            text.push_str(": ");
            text.push_str(detail);
        }
        let text: String = text.chars().take(72).collect();
        format!("{} {}", self.code(), text)
    }

    fn entry(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Recv022E => (
                "RECV022E",
                "Connection to HNCLIENT timed out with no or partial response.",
                "HNAPI in legacy mode: the HNCLIENT it relays through is unreachable or did not answer in time (2.5.1).",
            ),
            Self::Txfr024E => (
                "TXFR024E",
                "Connection with remote facility timed out.",
                "The gateway or receiving system did not answer within the timeout, or the connection was lost (2.5.2).",
            ),
            Self::Txfr029E => (
                "TXFR029E",
                "Encryption protocols failed with remote facility.",
                "TLS, certificate or envelope failure between client and gateway.",
            ),
            Self::Txfr036E => (
                "TXFR036E",
                "Server could not be contacted. HL7Xfer Server running?",
                "The HL7Xfer server (an HNCLIENT) refused or did not accept the connection.",
            ),
            Self::Txfr039E => (
                "TXFR039E",
                "Connection to HL7Xfer Server timed out with no or partial response.",
                "hnsecure client: an HL7Xfer exchange, or an MLLP message, stalled past listen.read_timeout_secs or ended early.",
            ),
            Self::Xfer001E => (
                "XFER001E",
                "HL7Xfer handshake failed.",
                "hnsecure client: the application's HS segment, or its answer to the challenge, was wrong.",
            ),
            Self::Xfer002E => (
                "XFER002E",
                "HL7Xfer protocol error: unexpected or malformed segment.",
                "hnsecure client: a wrong SI or DT header, a length that is not 10 digits, or bytes after the message.",
            ),
            Self::Xfer003E => (
                "XFER003E",
                "HL7 message too large for HNCLIENT",
                "hnsecure client: the DT length, or an MLLP frame, is above listen.max_message_bytes; HL7Xfer gives the length and maximum after the text.",
            ),
            Self::Xfer004E => (
                "XFER004E",
                "MLLP framing error: message not framed by 0x0B and 0x1C 0x0D.",
                "hnsecure client: an MLLP engine sent bytes outside a frame, or ended a frame without 0x1C 0x0D; the connection is closed.",
            ),
            Self::Vldt004E => (
                "VLDT004E",
                "No HL7 Message was supplied as input",
                "The request was empty.",
            ),
            Self::Vldt007E => (
                "VLDT007E",
                "The MSH Segment from the HL7 Message is missing.",
                "The request does not start with MSH.",
            ),
            Self::Vldt008E => (
                "VLDT008E",
                "The Client Facility and HL7 Sending Facility IDs do not match",
                "MSH-4 is not the facility named in the sender's certificate.",
            ),
            Self::Vldt009E => (
                "VLDT009E",
                "The Receiving Facility ID was not specified in the HL7 Message.",
                "MSH-6 is empty.",
            ),
            Self::Vldt014E => (
                "VLDT014E",
                "The Supplied HL7 Message was improperly formatted",
                "The message could not be read as HL7 beyond its MSH.",
            ),
            Self::Hnps002E => (
                "HNPS002E",
                "Invalid MSH segment format",
                "MSH declares unusable delimiters or lacks a required field.",
            ),
            Self::Hnps005E => (
                "HNPS005E",
                "Unknown receiving application",
                "No route matches MSH-5; the application name follows the text.",
            ),
            Self::Hnps006E => (
                "HNPS006E",
                "Reserved message type is not supported",
                "MSH-9 is ZFG, ZFP or ZPN, reserved by HealthnetBC (2.4.9); the type follows the text.",
            ),
            Self::Hnps007E => (
                "HNPS007E",
                "Receiving application is not connected",
                "The route leads to an HNAPI server application that is not connected to the gateway; its name follows the text, and an ERR carries the route's not_connected_hint when it has one.",
            ),
            Self::Hnps008E => (
                "HNPS008E",
                "Too many requests from this facility; try again later",
                "The facility sent more than the gateway's rate_limit_per_sec (after rate_limit_burst); the request was not passed on.",
            ),
            Self::Hnps009E => (
                "HNPS009E",
                "Duplicate transaction: control id already received",
                "An AE, not an AR: the route checks duplicates and this MSH-10, MSH-4 and MSH-3 came within duplicate_window_secs (2.4.8); not passed on again.",
            ),
            Self::Hnps010E => (
                "HNPS010E",
                "Control characters are not allowed in the HL7 Message",
                "The request holds a byte below 0x20 other than CR, LF and TAB (MLLP's 0x0B and 0x1C among them), DEL (0x7F), or a C1 control (U+0080 to U+009F, U+2028, U+2029; bytes 0x80 to 0x9F when the message is not UTF-8); not passed on, journaled as a security event.",
            ),
            Self::Hnps011E => (
                "HNPS011E",
                "Only the standard HL7 delimiters are accepted",
                "MSH-1 and MSH-2 are not the standard delimiters, the suggested values of Volume 5 2.3.1 that healthnetBC uses (field, component, repetition, escape, subcomponent); not passed on, journaled as a security event.",
            ),
            Self::Hnps012E => (
                "HNPS012E",
                "Exactly one MSH segment and no batch segments are accepted",
                "The request holds a second MSH, a BHS, BTS, FHS or FTS segment, or a segment id that is not three capitals or digits; not passed on, journaled as a security event.",
            ),
            Self::Hnps013E => (
                "HNPS013E",
                "The gateway cannot journal the transaction; try again later",
                "The gateway's audit journal cannot be written (disk full, database locked or down): the request was not passed on, or, when the journal failed as it recorded the answer, the answer was withheld (the receiver may have processed the request). The gateway resumes by itself when the journal is back.",
            ),
        }
    }
}

impl std::fmt::Display for NetworkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_characters_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in NetworkCode::ALL {
            let code = c.code();
            assert_eq!(code.len(), 8, "{code}");
            assert!(
                code[..7]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
                "{code}"
            );
            assert!(code.ends_with(['E', 'W', 'I']), "{code}");
            assert!(c.text().chars().count() <= 72, "{code}");
            assert!(seen.insert(code), "{code} twice");
            assert_eq!(NetworkCode::from_code(code), Some(*c));
        }
    }

    #[test]
    fn message_is_code_space_text() {
        assert_eq!(
            NetworkCode::Recv022E.message(None),
            "RECV022E Connection to HNCLIENT timed out with no or partial response."
        );
        assert_eq!(
            NetworkCode::Hnps005E.message(Some("RAIXXX")),
            "HNPS005E Unknown receiving application: RAIXXX"
        );
        let long = "X".repeat(200);
        let m = NetworkCode::Hnps005E.message(Some(&long));
        assert_eq!(m.chars().count(), 9 + 72);
    }
}
