//! The README stays true: its code table is the library's, and its `hnsecure hl7`
//! examples print what it says they print.

use std::process::Command;

use hnapi::hl7::NetworkCode;

const README: &str = include_str!("../README.md");
const CARGO_TOML: &str = include_str!("../Cargo.toml");

#[test]
fn readme_names_the_rust_version_cargo_toml_requires() {
    let version = CARGO_TOML
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml has a rust-version");
    let wanted = format!("Rust {version} or later");
    assert!(
        README.contains(&wanted),
        "README.md does not say {wanted:?}"
    );
    for line in README.lines() {
        if let Some((_, rest)) = line.split_once("Rust 1.")
            && rest.contains("or later")
        {
            assert!(
                line.contains(&wanted),
                "README.md names another Rust version: {line}"
            );
        }
    }
}

#[test]
fn readme_lists_every_network_code() {
    let missing: Vec<String> = NetworkCode::ALL
        .iter()
        .map(|c| format!("| {} | {} | {} |", c.code(), c.text(), c.meaning()))
        .filter(|row| !README.contains(row.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md lacks these rows of the network code table:\n{}",
        missing.join("\n")
    );
}

#[test]
fn readme_lists_no_code_the_library_lacks() {
    for line in README.lines() {
        let Some(rest) = line.strip_prefix("| ") else {
            continue;
        };
        let code = rest.split(' ').next().unwrap_or_default();
        let looks_like_code = code.len() == 8
            && code[..4].bytes().all(|b| b.is_ascii_uppercase())
            && code[4..7].bytes().all(|b| b.is_ascii_digit());
        if looks_like_code {
            assert!(
                NetworkCode::from_code(code).is_some(),
                "README lists {code}, which the library does not have"
            );
        }
    }
}

/// Splits a command line the way a POSIX shell would for these examples: words, and
/// single-quoted strings.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

#[test]
fn readme_examples_print_what_it_shows() {
    let mut ran = 0;
    let mut lines = README.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("$ hnsecure ") else {
            continue;
        };
        let mut command = command.to_owned();
        while command.ends_with('\\') {
            command.pop();
            command.push_str(lines.next().unwrap().trim_start());
        }
        let mut shown = String::new();
        while let Some(next) = lines.peek() {
            if next.starts_with("$ ") || next.starts_with("```") || next.is_empty() {
                break;
            }
            shown.push_str(lines.next().unwrap());
            shown.push('\n');
        }
        // `ack` prints the time; a pipe needs a shell. The rest is exact.
        let (command, keep) = match command.split_once(" | head -") {
            Some((c, n)) => (c.to_owned(), n.parse::<usize>().ok()),
            None => (command, None),
        };
        let args = words(&command);
        // Only `hnsecure hl7` prints the same thing every time, and `ack` prints the time.
        if args.first().is_none_or(|a| a != "hl7") || args.get(1).is_some_and(|a| a == "ack") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_hnsecure"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let mut printed =
            String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
        if let Some(n) = keep {
            printed = printed.lines().take(n).map(|l| format!("{l}\n")).collect();
        }
        assert_eq!(printed, shown, "README example `hnsecure {command}`");
        ran += 1;
    }
    assert!(ran >= 3, "the README's examples were found ({ran})");
}

/// SECURITY.md names the tests that show each promise: they must exist.
#[test]
fn security_md_names_tests_that_exist() {
    let security = include_str!("../SECURITY.md");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    // Every Rust file under these folders, subfolders included.
    let mut folders: Vec<_> = ["tests", "src"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut named = 0;
    for piece in security.split('`').skip(1).step_by(2) {
        let looks_like_test = piece.matches('_').count() >= 4
            && piece
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if looks_like_test {
            named += 1;
            assert!(
                sources.contains(&format!("fn {piece}(")),
                "SECURITY.md names the test {piece}, which does not exist"
            );
        }
    }
    assert!(named >= 15, "only {named} tests named");
}
