//! Any bytes through `invariants::hl7xfer` (see `fuzz/invariants/wire.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants/wire.rs"]
mod invariants;

fuzz_target!(|input: &[u8]| invariants::hl7xfer(input));
