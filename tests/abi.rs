//! The C ABI's contract in files: the committed header is the one cbindgen makes (the
//! test command regenerates it; here its code table), and the code tables of the
//! header, the Rust enum, and the C# and Java bindings are the same.

use std::collections::BTreeMap;
use std::path::Path;

use hnapi::ffi::codes::HnetRtrn;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `HNET_RTRN_NAME <sep> VALUE` in `text`, where `sep` is `=` or `(`.
fn codes(text: &str) -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("HNET_RTRN_") else {
            continue;
        };
        let name_len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_len);
        let after = after.trim_start();
        let Some(value) = after.strip_prefix('=').or_else(|| after.strip_prefix('(')) else {
            continue;
        };
        let digits: String = value
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        if let Ok(v) = digits.parse() {
            assert!(
                out.insert(format!("HNET_RTRN_{name}"), v).is_none(),
                "HNET_RTRN_{name} twice"
            );
        }
    }
    out
}

fn rust_codes() -> BTreeMap<String, i32> {
    HnetRtrn::ALL
        .iter()
        .map(|c| (format!("{c:?}"), *c as i32))
        .collect()
}

#[test]
fn the_header_defines_every_code_under_its_name() {
    let header = codes(&read("include/hnapi.h"));
    assert_eq!(header, rust_codes());
    assert_eq!(header["HNET_RTRN_SUCCESS"], 0);
}

#[test]
fn the_bindings_carry_the_same_code_table() {
    let expected = rust_codes();
    for path in [
        "bindings/dotnet/Hnapi.cs",
        "bindings/java/src/ca/bc/hnsecure/hnapi/HnetRtrn.java",
    ] {
        assert_eq!(codes(&read(path)), expected, "{path}");
    }
}

#[test]
fn the_readme_lists_every_code() {
    let readme = read("README.md");
    for code in HnetRtrn::ALL {
        let row = format!("| `{code:?}` | {} |", code as i32);
        assert!(
            readme.contains(&row),
            "README.md lacks the row starting {row}"
        );
    }
}
