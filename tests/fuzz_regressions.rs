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
