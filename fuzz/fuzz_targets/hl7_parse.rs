//! Any bytes through the HL7 parser, the checks, the writer and the ACK builder; the
//! invariants are in `fuzz/invariants/hl7.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants/hl7.rs"]
mod invariants;

fuzz_target!(|input: &[u8]| invariants::hl7_parse(input));
