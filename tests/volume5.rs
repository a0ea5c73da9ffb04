//! Every example message of Volume 5 (2.4.11, 2.5.1 to 2.5.6): each parses, round-trips
//! through the writer, and holds the values the document states. The ACK builders
//! reproduce the document's answers from its requests.

use std::collections::BTreeMap;

use hnapi::hl7::{
    self, AckCode, AppError, Message, MessageBuilder, NetworkCode, NetworkComponent, Path,
    Severity, Value,
};

const FIXTURES: &[&str] = &[
    "v5_2_4_11_ae_response",
    "v5_2_4_11_aa_response",
    "v5_2_4_11_multiple_confirmations",
    "v5_2_5_1_request",
    "v5_2_5_1_response",
    "v5_2_5_2_request",
    "v5_2_5_2_response",
    "v5_2_5_3_request",
    "v5_2_5_3_response",
    "v5_2_5_4_request",
    "v5_2_5_4_response",
    "v5_2_5_5_request",
    "v5_2_5_5_response",
    "v5_2_5_6_request",
    "v5_2_5_6_response",
];

fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.hl7", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(m: &Message<'_>, path: &str) -> String {
    m.value(&path.parse::<Path>().unwrap()).text().into_owned()
}

/// Every atomic value of a message by its full path (`SEG[n]-F[r].C.S`), decoded.
/// MSH-1 and MSH-2 are left out: they are the delimiters, not values.
fn leaves(m: &Message<'_>) -> BTreeMap<String, Vec<u8>> {
    let d = *m.delimiters();
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for segment in m.segments() {
        let occurrence = *seen
            .entry(segment.id().to_vec())
            .and_modify(|n| *n += 1)
            .or_insert(1);
        let id: [u8; 3] = segment.id().try_into().unwrap();
        for (n, raw) in segment.fields() {
            if segment.is_header() && n <= 2 {
                continue;
            }
            for (r, rep) in (1..).zip(raw.split(|&b| b == d.repetition)) {
                for (c, comp) in (1..).zip(rep.split(|&b| b == d.component)) {
                    for (s, _) in (1..).zip(comp.split(|&b| Some(b) == d.subcomponent)) {
                        let path = Path::new(id, n)
                            .with_occurrence(occurrence)
                            .with_repetition(r)
                            .with_component(c)
                            .with_subcomponent(s);
                        match m.value(&path) {
                            Value::NotPresent => {}
                            Value::Null => {
                                out.insert(path.to_string(), b"\"\"".to_vec());
                            }
                            Value::Data(v) => {
                                out.insert(path.to_string(), v.into_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_example_parses_and_round_trips() {
    for name in FIXTURES {
        let input = load(name);
        let m = Message::parse(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        let segments = input.iter().filter(|&&b| b == b'\r').count();
        assert_eq!(m.segment_count(), segments, "{name}");
        assert_eq!(
            m.as_bytes(),
            &input[..],
            "{name}: the message keeps its input"
        );

        let canonical = MessageBuilder::from_message(&m).to_bytes();
        let again = Message::parse(&canonical).unwrap();
        assert_eq!(
            leaves(&again),
            leaves(&m),
            "{name}: writing changed a value"
        );
        assert_eq!(
            MessageBuilder::from_message(&again).to_bytes(),
            canonical,
            "{name}: canonical form is stable"
        );
        if !input.windows(2).any(|w| w == b"|\r") {
            assert_eq!(
                canonical, input,
                "{name}: already canonical, so written back byte for byte"
            );
        }
    }
}

#[test]
fn examples_with_lf_or_crlf_read_the_same() {
    for name in FIXTURES {
        let input = load(name);
        let cr = Message::parse(&input).unwrap();
        for ending in [&b"\n"[..], b"\r\n"] {
            let other: Vec<u8> = input
                .split(|&b| b == b'\r')
                .filter(|s| !s.is_empty())
                .flat_map(|s| [s, ending].concat())
                .collect();
            assert_eq!(
                leaves(&Message::parse(&other).unwrap()),
                leaves(&cr),
                "{name}"
            );
        }
    }
}

#[test]
fn error_response_summary_2_4_11() {
    let ae = load("v5_2_4_11_ae_response");
    let m = Message::parse(&ae).unwrap();
    assert_eq!(text(&m, "MSA-1"), "AE");
    assert_eq!(text(&m, "MSA-2"), "19980915000020");
    let msa3 = text(&m, "MSA-3");
    assert_eq!(
        msa3,
        "HNHR517EDUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED"
    );
    // MSA-3: error code (7) + type (1) + text (72 at most).
    assert_eq!(&msa3[..7], "HNHR517");
    assert_eq!(&msa3[7..8], "E");
    assert!(msa3[8..].len() <= 72);
    // The first ERR repeats it: ERR-1.4.1 the code and type, ERR-1.4.2 the text.
    assert_eq!(text(&m, "ERR-1.4.1"), &msa3[..8]);
    assert_eq!(text(&m, "ERR-1.4.2"), &msa3[8..]);
    assert_eq!(m.segment(b"MSA", 2).map(|s| s.id()), None, "only one MSA");

    let aa = load("v5_2_4_11_aa_response");
    let m = Message::parse(&aa).unwrap();
    assert_eq!(text(&m, "MSA-1"), "AA");
    assert_eq!(text(&m, "MSA-3"), "HJMB001ISUCCESSFULLY COMPLETED");
    assert_eq!(text(&m, "ERR-1.4.1"), "HJMB001I", "type I: information");

    let multi = load("v5_2_4_11_multiple_confirmations");
    let m = Message::parse(&multi).unwrap();
    for n in 1..=3 {
        assert_eq!(text(&m, &format!("ERR[{n}]-1.4.1")), "HJMB001I");
        assert_eq!(
            text(&m, &format!("ERR[{n}]-1.4.2")),
            "SUCCESSFULLY COMPLETED"
        );
    }
    assert_eq!(text(&m, "ERR[4]-1"), "");
    assert_eq!(text(&m, "PID-2.1"), "9865821574");
    assert_eq!(text(&m, "PID-2.4"), "BC");
    assert_eq!(text(&m, "PID-2.5"), "PH");
    assert_eq!(text(&m, "ZIA-12.21"), "VICTORIA");
    assert!(hl7::check(&m).iter().all(|f| f.severity != Severity::Error));
}

/// The network ACK for `request` reproduces `expected` in every value but MSH-7 (the time
/// it was made), which the document's example shows with fractional seconds.
fn assert_network_ack(
    request: &str,
    expected: &str,
    component: NetworkComponent,
    facility: &str,
    code: NetworkCode,
) {
    let request = load(request);
    let expected = load(expected);
    let req = Message::parse(&request).unwrap();
    let exp = Message::parse(&expected).unwrap();
    let built = hl7::network_ack(
        Some(&req),
        component,
        facility,
        code,
        None,
        &text(&exp, "MSH-7"),
    );
    let ours = Message::parse(&built).unwrap();
    assert_eq!(leaves(&ours), leaves(&exp));
    assert_eq!(ours.segment_count(), 2, "a network ACK is MSH + MSA only");

    // And with a fresh time: MSH-7 is now, in Pacific time.
    let now = hl7::network_ack(
        Some(&req),
        component,
        facility,
        code,
        None,
        &hl7::now_pacific(),
    );
    let now = Message::parse(&now).unwrap();
    let msh7 = text(&now, "MSH-7");
    assert!(
        msh7.len() == 19 && (msh7.ends_with("-0800") || msh7.ends_with("-0700")),
        "{msh7}"
    );
}

#[test]
fn hnsecure_timeout_hnapi_2_5_1() {
    let response = load("v5_2_5_1_response");
    let m = Message::parse(&response).unwrap();
    let request = load("v5_2_5_1_request");
    let req = Message::parse(&request).unwrap();
    assert_eq!(text(&m, "MSH-3"), "HNAPI");
    assert_eq!(
        m.value(&"MSH-4".parse().unwrap()),
        Value::NotPresent,
        "blank: the transaction did not leave HNAPI"
    );
    assert_eq!(text(&m, "MSH-5"), text(&req, "MSH-3"));
    assert_eq!(text(&m, "MSH-6"), text(&req, "MSH-4"));
    assert_eq!(text(&m, "MSH-9"), "ACK");
    assert_eq!(text(&m, "MSH-10"), text(&req, "MSH-10"));
    assert_eq!(text(&m, "MSA-1"), "AR");
    assert_eq!(text(&m, "MSA-2"), "19980915000001");
    assert_eq!(
        text(&m, "MSA-3"),
        "RECV022E Connection to HNCLIENT timed out with no or partial response."
    );
    assert_eq!(text(&m, "MSA-3"), NetworkCode::Recv022E.message(None));
    assert_network_ack(
        "v5_2_5_1_request",
        "v5_2_5_1_response",
        NetworkComponent::Hnapi,
        "",
        NetworkCode::Recv022E,
    );
}

#[test]
fn hnsecure_timeout_hnclient_2_5_2() {
    let response = load("v5_2_5_2_response");
    let m = Message::parse(&response).unwrap();
    assert_eq!(text(&m, "MSH-3"), "HNCLIENT");
    assert_eq!(
        text(&m, "MSH-4"),
        "BC01000018",
        "the network facility id of HNCLIENT"
    );
    assert_eq!(text(&m, "MSH-8"), "JSMITH");
    assert_eq!(text(&m, "MSA-3"), NetworkCode::Txfr024E.message(None));
    assert_network_ack(
        "v5_2_5_2_request",
        "v5_2_5_2_response",
        NetworkComponent::Hnclient,
        "BC01000018",
        NetworkCode::Txfr024E,
    );
}

/// The request/response pairs of 2.5.3 to 2.5.6: the answer swaps MSH-3/4 and MSH-5/6
/// and acknowledges the request's control id in MSA-2.
#[test]
fn transaction_examples_answer_their_requests() {
    for (n, trigger) in [("3", "R02"), ("4", "R35"), ("5", "R46"), ("6", "R75")] {
        let request = load(&format!("v5_2_5_{n}_request"));
        let response = load(&format!("v5_2_5_{n}_response"));
        let req = Message::parse(&request).unwrap();
        let res = Message::parse(&response).unwrap();
        assert_eq!(text(&req, "MSH-9.1"), trigger);
        assert_eq!(text(&res, "MSH-3"), text(&req, "MSH-5"), "2.5.{n}");
        assert_eq!(text(&res, "MSH-4"), text(&req, "MSH-6"), "2.5.{n}");
        assert_eq!(text(&res, "MSH-5"), text(&req, "MSH-3"), "2.5.{n}");
        assert_eq!(text(&res, "MSH-6"), text(&req, "MSH-4"), "2.5.{n}");
        assert_eq!(text(&res, "MSH-8"), text(&req, "MSH-8"), "2.5.{n}");
        assert_eq!(text(&res, "MSA-1"), "AA", "2.5.{n}");
        assert_eq!(text(&res, "MSA-2"), text(&req, "MSH-10"), "2.5.{n}");
        let findings = hl7::check(&req);
        assert!(
            findings.iter().all(|f| f.severity == Severity::Warning),
            "2.5.{n}: {findings:?}"
        );
    }
}

#[test]
fn record_new_person_2_5_3() {
    let request = load("v5_2_5_3_request");
    let req = Message::parse(&request).unwrap();
    assert_eq!(text(&req, "ZIA-5.1"), "DONOGHUE");
    assert_eq!(text(&req, "ZIA-5.2"), "JAMES");
    assert_eq!(text(&req, "ZIA-6.21"), "VICTORIA");
    assert_eq!(text(&req, "ZIA-6.23"), "V8V1S9");
    assert_eq!(text(&req, "ZIA-7.6"), "9526579");
    assert_eq!(text(&req, "ZHD-2.2"), "00000010");

    let response = load("v5_2_5_3_response");
    let res = Message::parse(&response).unwrap();
    // Notice the repetition of ERR: three back-end applications each report success.
    for n in 1..=3 {
        assert_eq!(text(&res, &format!("ERR[{n}]-1.2.1")), "HJMB001I");
        assert_eq!(
            text(&res, &format!("ERR[{n}]-1.2.2")),
            "SUCCESSFULLY COMPLETED"
        );
    }
    assert_eq!(text(&res, "MSA-3"), "HJMB001");
    assert_eq!(text(&res, "MSA-4"), "SUCCESSFULLY COMPLETED");
    assert_eq!(text(&res, "PID-2.1"), "9865821574");
    assert_eq!(hl7::phn_error(b"9865821574"), None);
    assert_eq!(text(&res, "ZIA-5.30"), "20030717");
}

#[test]
fn phns_of_the_examples_are_valid() {
    for (name, phn) in [
        ("v5_2_5_4_request", "9029274643"),
        ("v5_2_5_5_request", "9076873472"),
        ("v5_2_5_6_request", "9013069354"),
    ] {
        let input = load(name);
        let m = Message::parse(&input).unwrap();
        assert_eq!(text(&m, "PID-2.1"), phn);
        assert_eq!(hl7::phn_error(phn.as_bytes()), None, "{phn}");
    }
}

#[test]
fn mixed_case_warnings_of_2_5_6_spare_nte() {
    let request = load("v5_2_5_6_request");
    let m = Message::parse(&request).unwrap();
    let findings: Vec<String> = hl7::check(&m)
        .iter()
        .map(|f| format!("{} {}", f.severity, f.path))
        .collect();
    assert_eq!(
        findings,
        ["warning MSH-3", "warning MSH-8", "warning ZHD-3"]
    );
    assert_eq!(text(&m, "NTE-3"), "Comments20030618 Gary");
    assert_eq!(
        text(&m, "ZPY-3.6"),
        "XX",
        "an identifier of type XX is no PHN"
    );
}

#[test]
fn application_ack_answers_like_the_examples() {
    // 2.5.6: R75^Z62 is answered with ACK^Z62.
    let request = load("v5_2_5_6_request");
    let expected = load("v5_2_5_6_response");
    let req = Message::parse(&request).unwrap();
    let exp = Message::parse(&expected).unwrap();
    let built =
        hl7::application_ack(&req, AckCode::Accept, &[], "1232638", "20030718135033").to_bytes();
    let ours = Message::parse(&built).unwrap();
    for field in 3..=12 {
        let p = format!("MSH-{field}");
        assert_eq!(text(&ours, &p), text(&exp, &p), "{p}");
    }
    assert_eq!(text(&ours, "MSA-2"), text(&exp, "MSA-2"));

    // 2.4.11: an AE with its error in MSA-3 and ERR-1.4.
    let request = load("v5_2_5_3_request");
    let expected = load("v5_2_4_11_ae_response");
    let req = Message::parse(&request).unwrap();
    let exp = Message::parse(&expected).unwrap();
    let error = AppError::new(
        "HNHR517E",
        "DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED",
    )
    .unwrap();
    let built = hl7::application_ack(&req, AckCode::Error, &[error], "1232418", "20030717140837")
        .to_bytes();
    let ours = Message::parse(&built).unwrap();
    // MSH-3 of this example misspells the application (RAIRCRD-NW-RSN); the AA example
    // of the same section spells it as the request does.
    let aa = load("v5_2_4_11_aa_response");
    assert_eq!(
        text(&ours, "MSH-3"),
        text(&Message::parse(&aa).unwrap(), "MSH-3")
    );
    for p in [
        "MSH-4",
        "MSH-5",
        "MSH-6",
        "MSH-7",
        "MSH-8",
        "MSH-10",
        "MSH-11",
        "MSH-12",
        "MSA-1",
        "MSA-2",
        "MSA-3",
        "ERR-1.4.1",
        "ERR-1.4.2",
    ] {
        assert_eq!(text(&ours, p), text(&exp, p), "{p}");
    }
    assert_eq!(
        text(&ours, "MSH-9"),
        "ACK",
        "2.4.11 shows the R02 response; a bare ACK says ACK"
    );
}
