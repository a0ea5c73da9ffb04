//! Test-only: reading the known-answer files under `tests/data/kat/` (and
//! `tests/data/envelope/kat.txt`). A file is blocks of `name = value` lines separated by
//! blank lines; `#` starts a comment line. The values are hex unless a test says otherwise.
//! The vectors are written by `tests/data/kat/kat.py` from the documented byte layouts, and
//! the unit tests that read them run natively (little-endian) and under qemu-ppc64
//! (big-endian, `tools/cross.sh`).

use std::collections::HashMap;

/// One map of `name = value` per block of lines.
pub(crate) fn blocks(text: &str) -> Vec<HashMap<String, String>> {
    let mut vectors = vec![];
    let mut current = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !current.is_empty() {
                vectors.push(std::mem::take(&mut current));
            }
            continue;
        }
        let (name, value) = line.split_once(" = ").expect("name = value");
        let old = current.insert(name.to_owned(), value.to_owned());
        assert!(old.is_none(), "{name} given twice");
    }
    if !current.is_empty() {
        vectors.push(current);
    }
    vectors
}

/// Every `name = value` of the file, as one map (the names are unique across blocks).
pub(crate) fn all(text: &str) -> HashMap<String, String> {
    let mut all = HashMap::new();
    for block in blocks(text) {
        for (name, value) in block {
            let old = all.insert(name, value);
            assert!(old.is_none(), "a name given twice");
        }
    }
    all
}

/// The bytes of a hex string.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Lower-case hex, for comparisons that print readably.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
