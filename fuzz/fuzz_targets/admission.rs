//! Any bytes through `invariants::admission` (see `fuzz/invariants/admission.rs`):
//! forwarded implies one message whose sender every parser reads as the certificate's.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants/admission.rs"]
mod invariants;

fuzz_target!(|input: &[u8]| invariants::admission(input));
