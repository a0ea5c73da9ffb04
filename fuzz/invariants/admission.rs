//! The invariant of admission, for the fuzz target `admission` and for
//! `tests/fuzz_regressions.rs`: a request the gateway forwards is one message, and every
//! parser a receiving system might use reads from it the certificate's facility as the
//! sender. Panics when that fails; never for any other reason.
#![allow(dead_code)]

use hnapi::gate::GateConfig;
use hnapi::gate::admit::{admit, forbidden_byte};
use hnapi::hl7::{Message, Path};
use hnapi::xfer::mllp::{self, Decoder};

/// The certificate's facility in every case.
pub const FACILITY: &str = "BC00000098";

fn config() -> GateConfig {
    GateConfig::from_toml(
        "listen = \"127.0.0.1:0\"\ngard = \"g\"\nfacility = \"BC01000018\"\n\
         [[route]]\napplication = \"*\"\ndestination = \"sim\"\n",
        std::path::Path::new("/nonexistent/hnsecure-fuzz"),
    )
    .expect("the fuzz configuration")
}

/// Any bytes, three ways: as the whole request; after a well-formed MSH; and as MSH-4
/// of a well-formed MSH.
pub fn admission(input: &[u8]) {
    let config = config();
    let msh = format!("MSH|^~\\&|HNWEB|{FACILITY}|RAIGT|BC00001013|20260101||R03|C1|D|2.4\r");
    let mut after = msh.clone().into_bytes();
    after.extend_from_slice(input);
    let mut inside = b"MSH|^~\\&|HNWEB|".to_vec();
    inside.extend_from_slice(input);
    inside.extend_from_slice(b"|RAIGT|BC00001013|20260101||R03|C1|D|2.4\rPID|1\r");
    for request in [input, &after[..], &inside[..]] {
        if let Ok(admitted) = admit(FACILITY, &config, request) {
            forwarded(&config, &admitted.bytes);
        }
    }
}

/// What must hold of bytes admission lets through.
pub fn forwarded(config: &GateConfig, bytes: &[u8]) {
    // No byte any parser could take for framing or a line end but CR.
    assert!(
        forbidden_byte(bytes).is_none(),
        "a forbidden byte forwarded"
    );
    assert!(!bytes.contains(&b'\n'), "LF forwarded");
    assert!(
        bytes.ends_with(b"\r"),
        "the last segment is not ended by CR"
    );
    assert!(!bytes.windows(2).any(|w| w == b"\r\r"), "an empty segment");

    // MLLP frames it as one message, which an MLLP receiver reads back whole.
    let mut wire = Vec::new();
    mllp::encode(bytes, &mut wire).expect("admitted bytes can be framed");
    let mut decoder = Decoder::new(usize::MAX / 2);
    let mut rest = &wire[..];
    let mut frames = Vec::new();
    while let Ok(Some(m)) = decoder.decode(&mut rest) {
        frames.push(m.into_owned());
    }
    assert_eq!(
        frames,
        vec![bytes.to_vec()],
        "one MLLP frame, the same bytes"
    );

    // The project's own parser.
    let msg = Message::parse(bytes).expect("admitted bytes parse");
    let headers = msg.segments().filter(|s| s.id() == b"MSH").count();
    assert_eq!(headers, 1, "one MSH");
    assert_eq!(msg.raw(&Path::new(*b"MSH", 4)), Some(FACILITY.as_bytes()));
    assert_eq!(
        msg.value(&Path::new(*b"MSH", 4).with_component(1)).data(),
        Some(FACILITY.as_bytes())
    );
    assert!(
        msg.segments()
            .all(|s| !matches!(s.id(), b"BHS" | b"BTS" | b"FHS" | b"FTS")),
        "a batch segment"
    );

    // A naive receiver: segments on CR, fields on '|', components on '^', whatever
    // MSH-1 and MSH-2 say.
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\r')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), msg.segment_count(), "the same segments");
    let naive_headers: Vec<&&[u8]> = lines.iter().filter(|l| l.starts_with(b"MSH")).collect();
    assert_eq!(naive_headers.len(), 1, "the naive reader sees one MSH");
    let fields: Vec<&[u8]> = naive_headers[0].split(|&b| b == b'|').collect();
    assert_eq!(
        fields.get(3).copied(),
        Some(FACILITY.as_bytes()),
        "naive MSH-4"
    );
    let first = fields[3].split(|&b| b == b'^').next();
    assert_eq!(first, Some(FACILITY.as_bytes()), "naive MSH-4.1");

    // A reader of lines as Python's str.splitlines() sees the same lines, whether it
    // decodes the message as UTF-8 (when it is) or as Latin-1 (when it is not).
    let text: String = match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    let python_lines = text
        .split([
            '\r', '\n', '\x0b', '\x0c', '\x1c', '\x1d', '\x1e', '\u{85}', '\u{2028}', '\u{2029}',
        ])
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(python_lines, lines.len(), "splitlines sees other segments");

    // Admission is idempotent: the canonical bytes are admitted as they are.
    let again = admit(FACILITY, config, bytes).expect("canonical bytes are admitted again");
    assert_eq!(&*again.bytes, bytes, "canonical bytes are a fixed point");
}
