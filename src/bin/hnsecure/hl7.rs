//! `hnsecure hl7 …`: read, check and answer message files, without any network.
//!
//! A FILE may hold several messages (each starting with MSH); every command then works
//! on each of them in turn. FILE `-` is standard input.

use std::io::{self, BufWriter, Write};

use clap::Subcommand;
use hnapi::hl7::{self, AckCode, AppError, Message, Path, Severity, Value};

use crate::output::{Failure, read_input, write_message};

#[derive(Subcommand)]
pub enum Hl7Command {
    /// Print the value at each PATH, one line per path (and per message).
    ///
    /// Escape sequences are decoded in atomic values; a value with components or
    /// repetitions inside is printed as written. A value sent as "" (present but null)
    /// prints `""`; a value not present prints an empty line.
    #[command(
        after_help = "Paths count from 1: MSH-10, MSA-3, ERR[3]-1.4.1 (third ERR), PID-5[2].1 (second repetition), PID-2.4.\n\nExample:\n  hnsecure hl7 get request.hl7 MSH-10 PID-2.1"
    )]
    Get {
        /// The message file, or - for standard input.
        file: String,
        /// Paths such as MSH-10, PID-2.1, ERR[2]-1.4.1.
        #[arg(required = true, value_parser = parse_path)]
        paths: Vec<Path>,
    },
    /// Check messages against the healthnetBC rules of Volume 5.
    ///
    /// Prints one line per finding (`error PID-2: …`, `warning MSH-8: …`) and a summary
    /// on standard error. Findings name places, never data. Exit 0 when there are no
    /// errors (warnings allowed), 1 when there is any.
    #[command(
        after_help = "Examples:\n  hnsecure hl7 check request.hl7\n  hnsecure hl7 check - < batch.hl7"
    )]
    Check {
        /// The message file, or - for standard input.
        file: String,
    },
    /// Print the application ACK for the request in FILE.
    ///
    /// MSH-3/4 and MSH-5/6 are swapped from the request, MSH-7 is now (Pacific time),
    /// MSH-10 new, MSA-2 the request's MSH-10. Each --error CODE --text TEXT pair adds an
    /// ERR segment; the first also fills MSA-3 with CODE immediately followed by TEXT.
    #[command(
        after_help = "Example:\n  hnsecure hl7 ack request.hl7 --code AE --error HNHR517E --text 'DUPLICATE CLIENT FOUND ON DATABASE - CLIENT NOT ADDED'"
    )]
    Ack {
        /// The request file, or - for standard input.
        file: String,
        /// MSA-1: AA (accept), AE (application error) or AR (reject).
        #[arg(long, value_parser = parse_ack_code)]
        code: AckCode,
        /// An 8-character code: 7 upper-case letters or digits, then E, W or I (e.g. HNHR517E).
        #[arg(long = "error", value_name = "CODE8", value_parser = parse_error_code)]
        errors: Vec<String>,
        /// The text of the --error before it, at most 72 characters.
        #[arg(long = "text", value_name = "TEXT")]
        texts: Vec<String>,
        /// MSH-10 of the ACK; a new 20-digit id when not given.
        #[arg(long)]
        control_id: Option<String>,
    },
    /// Print messages for people: one segment per line.
    #[command(
        after_help = "Examples:\n  hnsecure hl7 fmt answer.hl7\n  hnsecure hl7 fmt --fields request.hl7"
    )]
    Fmt {
        /// The message file, or - for standard input.
        file: String,
        /// Print each field that has a value on its own line, with its path.
        #[arg(long)]
        fields: bool,
    },
}

fn parse_path(s: &str) -> Result<Path, String> {
    s.parse::<Path>().map_err(|e| e.to_string())
}

fn parse_ack_code(s: &str) -> Result<AckCode, String> {
    s.parse::<AckCode>().map_err(|e| e.to_string())
}

fn parse_error_code(s: &str) -> Result<String, String> {
    AppError::new(s, "")
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

pub fn run(command: Hl7Command) -> Result<(), Failure> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = match command {
        Hl7Command::Get { file, paths } => get(&file, &paths, &mut out),
        Hl7Command::Check { file } => check(&file, &mut out),
        Hl7Command::Ack {
            file,
            code,
            errors,
            texts,
            control_id,
        } => ack(
            &file,
            code,
            &errors,
            &texts,
            control_id.as_deref(),
            &mut out,
        ),
        Hl7Command::Fmt { file, fields } => fmt(&file, fields, &mut out),
    };
    out.flush()?;
    result
}

/// The messages of FILE, each parsed or with the reason it could not be.
fn messages<'a>(file: &str, bytes: &'a [u8]) -> Result<Vec<Result<Message<'a>, String>>, Failure> {
    let parts = hl7::split_messages(bytes);
    if parts.is_empty() {
        // No MSH anywhere: let the parser say precisely what the input is.
        let why = match Message::parse(bytes) {
            Err(e) => e.to_string(),
            Ok(_) => "no message found".to_owned(),
        };
        return Err(Failure::Input(Some(format!(
            "{}: {why}",
            display_name(file)
        ))));
    }
    Ok(parts
        .into_iter()
        .map(|p| Message::parse(p).map_err(|e| e.to_string()))
        .collect())
}

fn display_name(file: &str) -> &str {
    if file == "-" { "standard input" } else { file }
}

/// Reads FILE and calls `each` with the parsed form of every
/// message in it. A message that does not parse is reported on standard error and the
/// others still run; the command then ends with exit 1.
fn each_message(
    file: &str,
    mut each: impl FnMut(&Message<'_>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let bytes = read_input(file)?;
    let messages = messages(file, &bytes)?;
    let total = messages.len();
    let mut bad = false;
    for (i, msg) in messages.iter().enumerate() {
        match msg {
            Ok(msg) => each(msg)?,
            Err(why) => {
                let which = if total > 1 {
                    format!(" (message {})", i + 1)
                } else {
                    String::new()
                };
                eprintln!("error: {}{which}: {why}", display_name(file));
                bad = true;
            }
        }
    }
    if bad {
        Err(Failure::Input(None))
    } else {
        Ok(())
    }
}

fn get(file: &str, paths: &[Path], out: &mut impl Write) -> Result<(), Failure> {
    each_message(file, |msg| {
        for path in paths {
            match msg.value(path) {
                Value::NotPresent => {}
                Value::Null => out.write_all(b"\"\"")?,
                Value::Data(data) => out.write_all(&data)?,
            }
            out.write_all(b"\n")?;
        }
        Ok(())
    })
}

fn check(file: &str, out: &mut impl Write) -> Result<(), Failure> {
    let bytes = read_input(file)?;
    let messages = messages(file, &bytes)?;
    let total = messages.len();
    let (mut errors, mut warnings) = (0, 0);
    for (i, msg) in messages.iter().enumerate() {
        let prefix = if total > 1 {
            format!("message {}: ", i + 1)
        } else {
            String::new()
        };
        let msg = match msg {
            Ok(m) => m,
            Err(why) => {
                writeln!(out, "{prefix}error: {why}")?;
                errors += 1;
                continue;
            }
        };
        for finding in hl7::check(msg) {
            writeln!(out, "{prefix}{finding}")?;
            match finding.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
            }
        }
    }
    out.flush()?;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    eprintln!(
        "{}: {} checked, {}, {}",
        display_name(file),
        plural(total, "message"),
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    if errors > 0 {
        Err(Failure::Input(None))
    } else {
        Ok(())
    }
}

fn ack(
    file: &str,
    code: AckCode,
    codes: &[String],
    texts: &[String],
    control_id: Option<&str>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if codes.len() != texts.len() {
        return Err(Failure::Usage(format!(
            "each --error needs one --text after it (got {} --error and {} --text)",
            codes.len(),
            texts.len()
        )));
    }
    let errors = codes
        .iter()
        .zip(texts)
        .map(|(c, t)| {
            AppError::new(c, t).map_err(|e| Failure::Usage(format!("--error {c} --text …: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut written = 0;
    each_message(file, |msg| {
        if written > 0 {
            out.write_all(b"\n")?;
        }
        written += 1;
        let id = control_id.map_or_else(hl7::new_control_id, str::to_owned);
        let answer = hl7::application_ack(msg, code, &errors, &id, &hl7::now_pacific());
        write_message(out, &answer.to_bytes())?;
        Ok(())
    })
}

fn fmt(file: &str, fields: bool, out: &mut impl Write) -> Result<(), Failure> {
    let mut written = 0;
    each_message(file, |msg| {
        if written > 0 {
            out.write_all(b"\n")?;
        }
        written += 1;
        let mut seen: Vec<&[u8]> = Vec::new();
        for segment in msg.segments() {
            if !fields {
                out.write_all(segment.as_bytes())?;
                out.write_all(b"\n")?;
                continue;
            }
            let id = segment.id();
            seen.push(id);
            let occurrence = seen.iter().filter(|s| **s == id).count();
            let name = String::from_utf8_lossy(id);
            let name = if occurrence > 1 {
                format!("{name}[{occurrence}]")
            } else {
                name.into_owned()
            };
            for (n, raw) in segment.fields().filter(|(_, raw)| !raw.is_empty()) {
                let label = format!("{name}-{n}");
                write!(out, "{label:<12} ")?;
                out.write_all(raw)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    })
}
