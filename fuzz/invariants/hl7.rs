//! What must hold for any bytes given to the HL7 core. Shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/hl7_parse.rs`) and the regression test (`tests/fuzz_regressions.rs`),
//! which replays every input the fuzzer ever failed on.
//!
//! Beyond "never panics": writing an accepted message and parsing the result gives a
//! canonical form that is its own fixed point, escaping round-trips, and a network ACK
//! for it parses and acknowledges its control id.

use hnapi::hl7::{self, Message, MessageBuilder, NetworkCode, NetworkComponent, Path};

const PATHS: [Path; 5] = [
    Path::new(*b"MSH", 9).with_component(2),
    Path::new(*b"MSH", 10),
    Path::new(*b"PID", 2)
        .with_repetition(2)
        .with_component(4)
        .with_subcomponent(1),
    Path::new(*b"ERR", 1)
        .with_occurrence(2)
        .with_component(4)
        .with_subcomponent(2),
    Path::new(*b"ZIA", 6).with_component(21),
];

/// Runs `input` through the parser, the checks, the writer and the ACK builder,
/// panicking when an invariant does not hold.
pub fn hl7_parse(input: &[u8]) {
    for part in hl7::split_messages(input) {
        let _ = Message::parse(part);
    }
    let Ok(msg) = Message::parse(input) else {
        return;
    };
    for path in &PATHS {
        let _ = msg.value(path);
    }
    for segment in msg.segments() {
        for (_, raw) in segment.fields() {
            let _ = hl7::escape::decode(raw, msg.delimiters());
        }
    }
    let _ = hl7::check(&msg);

    let written = MessageBuilder::from_message(&msg).to_bytes();
    let again = Message::parse(&written).expect("what the writer wrote parses");
    let lines = written.iter().filter(|&&b| b == b'\r').count();
    assert_eq!(
        again.segment_count(),
        lines,
        "every line written reads back as a segment"
    );
    assert!(again.segment_count() <= msg.segment_count());
    assert_eq!(
        MessageBuilder::from_message(&again).to_bytes(),
        written,
        "canonical form is a fixed point"
    );

    let d = msg.delimiters().complete();
    for segment in msg.segments() {
        let data = segment.as_bytes();
        assert_eq!(
            &*hl7::escape::decode(&hl7::escape::encode(data, &d), &d),
            data
        );
    }

    let ack = hl7::network_ack(
        Some(&msg),
        NetworkComponent::Hngate,
        "BC01000018",
        NetworkCode::Txfr024E,
        None,
        "T",
    );
    let ack = Message::parse(&ack).expect("a network ACK parses");
    assert_eq!(ack.value(&Path::new(*b"MSA", 1)).text(), "AR");
    // MSA-2 names the request: its MSH-10, which the ACK's MSH-10 copies; a request
    // without one gets an empty MSA-2 and a fresh MSH-10 (an ACK is always whole).
    assert!(ack.msh(10).is_present(), "an ACK always has a control id");
    if msg.msh(10).is_present() {
        assert_eq!(ack.value(&Path::new(*b"MSA", 2)), ack.msh(10));
    } else {
        assert!(!ack.value(&Path::new(*b"MSA", 2)).is_present());
    }
}
