//! Every input the fuzzer once failed on (`tests/data/fuzz/`), replayed through the same
//! invariants as the fuzz target, so a regression fails `cargo test` on stable Rust.

#[path = "../fuzz/invariants/hl7.rs"]
mod invariants;

#[test]
fn fuzz_findings_stay_fixed() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz");
    let mut inputs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{dir} holds the fuzzer's findings");
    for path in inputs {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        let outcome = std::panic::catch_unwind(|| invariants::hl7_parse(&bytes));
        assert!(outcome.is_ok(), "{name} fails the invariants again");
    }
}

#[test]
fn the_volume5_examples_hold_the_invariants() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hl7") {
            invariants::hl7_parse(&std::fs::read(&path).unwrap());
        }
    }
}

#[path = "../fuzz/invariants/wire.rs"]
mod wire;

/// The inputs kept from the wire targets' corpora (`tests/data/fuzz-wire/<target>/`):
/// findings and the inputs that reached the most code.
#[test]
fn wire_corpora_hold_the_invariants() {
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 5] = [
        ("frame_decode", wire::frame_decode),
        ("envelope_open", wire::envelope_open),
        ("hl7xfer", wire::hl7xfer),
        ("mllp_decode", wire::mllp_decode),
        ("config_load", wire::config_load),
    ];
    for (target, check) in targets {
        let dir = format!(
            "{}/tests/data/fuzz-wire/{target}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{dir} is empty");
        for path in inputs {
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{} fails its invariants", path.display());
        }
    }
}

#[path = "../fuzz/invariants/admission.rs"]
mod admission;

/// The admission target's kept inputs (`tests/data/fuzz-admission/`), and the hostile
/// requests of the adversarial review, hold its invariant: forwarded means one message
/// whose sender every parser reads as the certificate's facility.
#[test]
fn admission_inputs_hold_the_invariant() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz-admission");
    let mut inputs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{dir} holds inputs");
    for path in inputs {
        let bytes = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| admission::admission(&bytes));
        assert!(outcome.is_ok(), "{} fails the invariant", path.display());
    }
}
