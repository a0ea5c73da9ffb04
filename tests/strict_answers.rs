//! Every kind of answer hnsecure writes itself, read by hl7apy in strict mode as the ACK
//! structure (`tests/python/strict_ack.py`), as a strict partner's parser reads it: each
//! network ACK code (with a whole request, with none, with an MSH cut short) and each
//! simulator answer. The differences left are named here and in the README: a network
//! ACK to a request without a control id has an empty MSA-2, which hl7apy requires; and
//! the simulator's R02 answer repeats ERR three times as Volume 5's 2.5.3 does, where
//! HL7 2.3's ACK allows one.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use hnapi::gate::sim::Simulator;
use hnapi::hl7::{
    AckCode, Message, NetworkCode, NetworkComponent, network_ack, network_ack_as, now_pacific,
};

/// What hl7apy says of an answer whose request had no MSH-10 to name in MSA-2.
const EMPTY_MSA2: &str = "Missing required child MSA.MSA_2";
/// What hl7apy says of an answer with more than one ERR (HL7 2.3's ACK has at most one).
const ERR_REPEATED: &str = "Cannot add <Segment ERR>: max limit (1) reached for <Message ACK>";

const WHOLE: &[u8] =
    b"MSH|^~\\&|LABAPP|BC00000098|LAB|LABFAC|20261123120000||ORU^R01|C42|P|2.3\rOBX|1|ST|X||1\r";
const WHOLE_24: &[u8] =
    b"MSH|^~\\&|LABAPP|BC00000098|LAB|LABFAC|20261123120000||ORU^R01|C43|P|2.4\r";
/// An MSH cut after MSH-9, as `HNPS002E` answers: no MSH-10, MSH-11 or MSH-12.
const SHORT: &[u8] = b"MSH|^~\\&|LABAPP|BC00000098|LAB|LABFAC|20261123120000||ORU^R01\r";

fn data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read(&path).unwrap();
    // The files have LF line ends; HL7 has CR.
    text.into_iter()
        .map(|b| if b == b'\n' { b'\r' } else { b })
        .collect()
}

/// The answers, by name, each with what hl7apy is expected to say (nothing, or a difference
/// named above).
fn answers() -> Vec<(String, Vec<u8>, Vec<&'static str>)> {
    let mut out = Vec::new();
    let components = [
        (NetworkComponent::Hnapi, ""),
        (NetworkComponent::Hnclient, "BC00000098"),
        (NetworkComponent::Hngate, "HNGATE01"),
    ];
    let whole = Message::parse(WHOLE).unwrap();
    let whole_24 = Message::parse(WHOLE_24).unwrap();
    let short = Message::parse(SHORT).unwrap();
    let now = now_pacific();
    for (i, code) in NetworkCode::ALL.iter().copied().enumerate() {
        let (component, facility) = components[i % components.len()];
        let detail = (code == NetworkCode::Hnps005E).then_some("LAB");
        for (variant, request, expected) in [
            ("whole", Some(&whole), vec![]),
            ("whole-2.4", Some(&whole_24), vec![]),
            ("none", None, vec![EMPTY_MSA2]),
            ("short", Some(&short), vec![EMPTY_MSA2]),
        ] {
            out.push((
                format!("network-{}-{variant}", code.code()),
                network_ack(request, component, facility, code, detail, &now),
                expected,
            ));
        }
    }
    out.push((
        "network-HNPS009E-AE".into(),
        network_ack_as(
            Some(&whole),
            NetworkComponent::Hngate,
            "HNGATE01",
            AckCode::Error,
            NetworkCode::Hnps009E,
            None,
            &now,
        ),
        vec![],
    ));

    // The simulator: every transaction it supports, the echo, one it does not, and its
    // application errors.
    let sim = Simulator::new();
    let mut requests: Vec<(String, Vec<u8>)> = ["3", "4", "5", "6"]
        .iter()
        .map(|n| {
            (
                format!("sim-2.5.{n}"),
                data(&format!("v5_2_5_{n}_request.hl7")),
            )
        })
        .collect();
    let r02 = data("v5_2_5_3_request.hl7");
    requests.push(("sim-2.5.3-duplicate".into(), r02.clone()));
    let r02_text = String::from_utf8(r02).unwrap();
    let without_name = r02_text.replace("DONOGHUE^JAMES^JOE^^^L", "");
    requests.push(("sim-R02-missing".into(), without_name.into_bytes()));
    let mut r03 = |name: &str, pid: &str| {
        requests.push((
            name.into(),
            format!(
                "MSH|^~\\&|ADT1|NF20|RAIGT-PRSN-DMGR|BC0003000|19990531144853||R03|S{name}|D|2.3\r{pid}"
            )
            .into_bytes(),
        ));
    };
    r03("sim-R03-bad-phn", "PID||9123456788^^^BC^PH\r");
    r03("sim-R03-no-phn", "PID\r");
    r03("sim-R03-not-found", "PID||9029274643^^^BC^PH\r");
    requests.push((
        "sim-echo".into(),
        b"MSH|^~\\&|A|BC00000098|HNSIM-ECHO|BC0003000|20261123120000||ZZZ^Z01|E1|P|2.3\rNTE|||hello\r"
            .to_vec(),
    ));
    requests.push((
        "sim-unsupported".into(),
        b"MSH|^~\\&|A|BC00000098|NOSUCHAPP|BC0003000|20261123120000||R99|U1|P|2.3\r".to_vec(),
    ));
    for (name, request) in requests {
        let parsed = Message::parse(&request).unwrap();
        let answer = sim.answer(&parsed).unwrap();
        // R02's success is three HJMB001I ERRs, as in Volume 5's 2.5.3.
        let expected = if name == "sim-2.5.3" {
            vec![ERR_REPEATED]
        } else {
            vec![]
        };
        out.push((name, answer, expected));
    }
    out
}

#[test]
fn every_answer_hnsecure_writes_reads_as_an_ack_in_hl7apy_strict_mode() {
    let dir = common::temp_dir("strict-answers");
    let answers = answers();
    for (name, bytes, _) in &answers {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/strict_ack.py");
    let output = Command::new(common::differential::python())
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut found = BTreeMap::new();
    for line in stdout.lines() {
        let json = common::differential::parse_json(line).unwrap();
        let name = json
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap()
            .to_owned();
        let errors: Vec<String> = match json.get("errors") {
            Some(common::differential::Json::Array(items)) => items
                .iter()
                .map(|e| e.as_str().unwrap().to_owned())
                .collect(),
            other => panic!("{line}: {other:?}"),
        };
        found.insert(name, errors);
    }
    assert_eq!(found.len(), answers.len(), "{stdout}");
    let mut wrong = Vec::new();
    for (name, bytes, expected) in &answers {
        let errors = &found[name];
        if errors != expected {
            wrong.push(format!(
                "{name}: hl7apy said {errors:?}, expected {expected:?}\n  {}",
                String::from_utf8_lossy(bytes).replace('\r', "\n  ")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let _ = std::fs::remove_dir_all(dir);
}
