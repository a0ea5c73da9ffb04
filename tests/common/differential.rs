//! A differential receiving system for tests: `tests/python/differential.py`, an MLLP
//! server that reads every frame with python-hl7, hl7apy and a naive split, logs what
//! each saw (one JSON line a frame, written before the frame is answered) and answers
//! `MSA|AA|<MSH-10>`. Started with [`Differential::start`], killed when dropped.
//!
//! ```ignore
//! let receiver = Differential::start();
//! // ... send frames to receiver.addr() and read their answers ...
//! let records = receiver.wait_for(2, Duration::from_secs(5));
//! assert_eq!(records[0].agreed().unwrap().msh4.as_deref(), Some("BC00000098"));
//! ```
//!
//! The Python is the virtual environment `target/python-hl7` that `test.sh` makes; when
//! it is missing (or lacks a package), it is made here the same way.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The python-hl7 version, as `test.sh` installs it.
pub const HL7_VERSION: &str = "0.4.5";
/// The hl7apy version, as `test.sh` installs it.
pub const HL7APY_VERSION: &str = "1.3.5";

/// What one parser read from one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// MSH segments seen.
    pub msh_count: Option<u64>,
    /// MSH-4, whole and raw.
    pub msh4: Option<String>,
    /// MSH-4's first component.
    pub msh4_1: Option<String>,
    /// MSH-10.
    pub msh10: Option<String>,
    /// Why the parser failed, if it did.
    pub error: Option<String>,
}

/// One frame the receiver got, as each parser read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Frames before it, over all connections.
    pub index: u64,
    /// Its connection, counted from 0 in the order they were accepted.
    pub connection: u64,
    /// Bytes of the frame's data.
    pub length: u64,
    /// Bytes outside frames skipped on its connection before it.
    pub skipped: u64,
    /// python-hl7's reading.
    pub hl7: Reading,
    /// hl7apy's reading.
    pub hl7apy: Reading,
    /// The naive split's reading.
    pub naive: Reading,
    /// The whole line, parsed.
    pub json: Json,
}

impl Record {
    /// The three readings, named.
    pub fn readings(&self) -> [(&'static str, &Reading); 3] {
        [
            ("hl7", &self.hl7),
            ("hl7apy", &self.hl7apy),
            ("naive", &self.naive),
        ]
    }

    /// The reading all three parsers share, when they agree and none failed.
    pub fn agreed(&self) -> Option<&Reading> {
        let agree = self.hl7 == self.hl7apy && self.hl7 == self.naive && self.hl7.error.is_none();
        agree.then_some(&self.hl7)
    }
}

/// A running `differential.py`, killed when dropped.
pub struct Differential {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

impl Differential {
    /// Starts the receiver on 127.0.0.1 (an ephemeral port) and waits until it listens.
    pub fn start() -> Self {
        let python = python();
        let dir = super::temp_dir("differential");
        let log = dir.join("records.jsonl");
        let stderr = dir.join("stderr.txt");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/differential.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        let mut ready = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready);
        let port = ready.trim().strip_prefix("ready ").map(str::parse::<u16>);
        let Some(Ok(port)) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "differential.py did not start ({ready:?}): {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            log,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every record logged so far, in order (a frame's record is written before its
    /// answer, so every answered frame has one).
    pub fn records(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // A line without its newline is still being written.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                Record::from_json(parse_json(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                    .unwrap_or_else(|e| panic!("{e}: {line}"))
            })
            .collect()
    }

    /// The records once there are at least `n`; panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Record> {
        let started = Instant::now();
        loop {
            let records = self.records();
            if records.len() >= n {
                return records;
            }
            assert!(
                started.elapsed() < timeout,
                "{} of {n} records after {timeout:?}; its errors: {}",
                records.len(),
                std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it wrote on standard error.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default()
    }
}

impl Drop for Differential {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The virtual environment's Python, with python-hl7 and hl7apy: `target/python-hl7`
/// as `test.sh` makes it, made or completed here when it is not ready.
pub fn python() -> PathBuf {
    static READY: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = ready.as_ref() {
        return python.clone();
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("python-hl7");
    let python = venv.join("bin/python");
    if !has_packages(&python) {
        if python.exists() {
            pip_install(&python);
        } else {
            // Made aside and moved into place, so a test binary running at the same time
            // never sees half a venv (a venv's python runs from where it is moved to).
            std::fs::create_dir_all(&target).unwrap();
            let aside = target.join(format!("python-hl7.tmp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&aside);
            run(Command::new("python3").args(["-m", "venv"]).arg(&aside));
            pip_install(&aside.join("bin/python"));
            if std::fs::rename(&aside, &venv).is_err() {
                // Another process got there first.
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        assert!(
            has_packages(&python),
            "{} cannot import hl7 and hl7apy",
            python.display()
        );
    }
    *ready = Some(python.clone());
    python
}

fn has_packages(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import hl7, hl7apy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn pip_install(python: &Path) {
    run(Command::new(python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("hl7=={HL7_VERSION}"),
        &format!("hl7apy=={HL7APY_VERSION}"),
    ]));
}

fn run(command: &mut Command) {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (python3 and python3-venv are needed)"));
    assert!(
        out.status.success(),
        "{shown}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Reading {
    fn from_json(json: &Json) -> Result<Self, String> {
        let text = |key: &str| match json.get(key) {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(Json::Null) | None => Ok(None),
            Some(other) => Err(format!("{key} is {other:?}")),
        };
        Ok(Self {
            msh_count: json.get("msh_count").and_then(Json::as_u64),
            msh4: text("msh4")?,
            msh4_1: text("msh4_1")?,
            msh10: text("msh10")?,
            error: text("error")?,
        })
    }
}

impl Record {
    fn from_json(json: Json) -> Result<Self, String> {
        let number = |key: &str| {
            json.get(key)
                .and_then(Json::as_u64)
                .ok_or_else(|| format!("no {key}"))
        };
        let reading = |key: &str| {
            json.get(key)
                .ok_or_else(|| format!("no {key}"))
                .and_then(Reading::from_json)
        };
        Ok(Self {
            index: number("index")?,
            connection: number("connection")?,
            length: number("length")?,
            skipped: number("skipped")?,
            hl7: reading("hl7")?,
            hl7apy: reading("hl7apy")?,
            naive: reading("naive")?,
            json: json.clone(),
        })
    }
}

/// A JSON value (serde_json is not a dependency: a minimal parser for the log's lines).
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.get(key),
            _ => None,
        }
    }

    /// A whole non-negative number.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
            _ => None,
        }
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Parses one JSON text.
pub fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = JsonParser {
        bytes: text.as_bytes(),
        at: 0,
    };
    let value = p.value()?;
    p.space();
    if p.at != p.bytes.len() {
        return Err(format!("trailing bytes at {}", p.at));
    }
    Ok(value)
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn space(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, what: &[u8]) -> Result<(), String> {
        if self.bytes[self.at..].starts_with(what) {
            self.at += what.len();
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at {}",
                String::from_utf8_lossy(what),
                self.at
            ))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.space();
        match self.bytes.get(self.at) {
            Some(b'n') => self.expect(b"null").map(|()| Json::Null),
            Some(b't') => self.expect(b"true").map(|()| Json::Bool(true)),
            Some(b'f') => self.expect(b"false").map(|()| Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(format!("expected , or ] at {}", self.at)),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut members = BTreeMap::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    self.space();
                    self.expect(b":")?;
                    let value = self.value()?;
                    members.insert(key, value);
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(format!("expected , or }} at {}", self.at)),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while matches!(
                    self.bytes.get(self.at),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at]).unwrap();
                text.parse()
                    .map(Json::Number)
                    .map_err(|_| format!("bad number at {start}"))
            }
            _ => Err(format!("expected a value at {}", self.at)),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at {}", self.at))?;
        self.at += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b"\"")?;
        let mut out = String::new();
        loop {
            let start = self.at;
            while !matches!(self.bytes.get(self.at), None | Some(b'"' | b'\\')) {
                self.at += 1;
            }
            out.push_str(
                std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?,
            );
            match self.bytes.get(self.at) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                _ => {}
            }
            self.at += 1;
            let escape = *self.bytes.get(self.at).ok_or("unterminated escape")?;
            self.at += 1;
            match escape {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let first = self.hex4()?;
                    let code = if (0xD800..0xDC00).contains(&first) {
                        self.expect(b"\\u")?;
                        let low = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&low) {
                            return Err(format!("bad surrogate pair at {}", self.at));
                        }
                        0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        first
                    };
                    out.push(char::from_u32(code).ok_or_else(|| format!("bad \\u{code:x}"))?);
                }
                other => return Err(format!("bad escape \\{}", other as char)),
            }
        }
    }
}
