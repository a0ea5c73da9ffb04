//! `hnsecure send --config client.toml FILE...`: send message files through the client
//! core and print the answers.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use hnapi::client::{Answer, Client, Ticket};
use hnapi::hl7::{self, Message, Path};

use crate::output::{Failure, read_input};

#[derive(Args)]
#[command(
    after_help = "Each FILE may hold several messages, each starting with MSH; - reads standard input.\n\
Into a pipe or file, answers go to standard output exactly as received (CR segment ends), one LF\n\
between answers; on a terminal, one segment per line. --pretty shows them for people instead. Progress (on a terminal) and a summary go to standard error.\n\
Exit status: 0 when every message got an HL7 answer (the receiver's or a network ACK), 1 otherwise,\n\
2 on usage errors.\n\n\
Examples:\n  \
hnsecure send --config client.toml request.hl7\n  \
hnsecure send --config client.toml --pretty --concurrency 8 batch/*.hl7\n  \
printf 'MSH|^~\\\\&|...' | hnsecure send --config client.toml -"
)]
pub struct SendArgs {
    /// The client configuration (client.toml).
    #[arg(long)]
    config: PathBuf,
    /// Seconds each transaction may take (default: the configuration's timeout_secs).
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// Show each request's control id and its answer for people, one segment per line.
    #[arg(long)]
    pretty: bool,
    /// How many transactions may be in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Message files.
    #[arg(required = true)]
    files: Vec<String>,
}

/// One message to send: where it came from, and its bytes.
struct Item {
    label: String,
    bytes: Vec<u8>,
}

pub fn run(args: SendArgs) -> Result<(), Failure> {
    crate::daemon::init_log(log::LevelFilter::Warn);
    let mut items = Vec::new();
    for file in &args.files {
        let bytes = read_input(file)?;
        let name = if file == "-" { "stdin" } else { file.as_str() };
        let parts = hl7::split_messages(&bytes);
        if parts.is_empty() {
            return Err(Failure::Input(Some(format!(
                "{name}: no HL7 message (nothing starts with MSH)"
            ))));
        }
        let many = parts.len() > 1;
        for (i, part) in parts.into_iter().enumerate() {
            let label = if many {
                format!("{name} #{}", i + 1)
            } else {
                name.to_owned()
            };
            items.push(Item {
                label,
                bytes: part.to_vec(),
            });
        }
    }
    let client =
        Client::open_file(&args.config).map_err(|e| Failure::Input(Some(e.to_string())))?;
    let timeout = args.timeout_secs.map(|s| Duration::from_secs(s.max(1)));
    let started = Instant::now();
    let progress = Progress::new(items.len());

    // Keep up to `concurrency` in flight; print strictly in order.
    let mut queue: VecDeque<(usize, &Item)> = items.iter().enumerate().collect();
    let mut in_flight: VecDeque<(usize, Ticket)> = VecDeque::new();
    let mut done: BTreeMap<usize, Result<Answer, String>> = BTreeMap::new();
    let mut next_to_print = 0;
    let mut printed = 0;
    let mut stats = Stats::default();
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    while next_to_print < items.len() {
        while in_flight.len() < args.concurrency.max(1) {
            let Some((index, item)) = queue.pop_front() else {
                break;
            };
            match client.send(&item.bytes, timeout) {
                Ok(ticket) => in_flight.push_back((index, ticket)),
                Err(e) => {
                    // Refused here: nothing left the machine.
                    stats.not_sent += 1;
                    done.insert(index, Err(e.to_string()));
                }
            }
        }
        if let Some((index, ticket)) = in_flight.pop_front() {
            match client.receive(ticket, Duration::from_millis(u64::from(u32::MAX))) {
                Ok(Some(answer)) => {
                    done.insert(index, Ok(answer));
                }
                Ok(None) => in_flight.push_front((index, ticket)),
                Err(e) => {
                    done.insert(index, Err(e.to_string()));
                }
            }
        }
        while let Some(result) = done.remove(&next_to_print) {
            let item = &items[next_to_print];
            stats.count(&result);
            match result {
                Ok(answer) => {
                    if args.pretty {
                        write_pretty(&mut out, item, &answer)?;
                    } else {
                        out.write_all(&plain(&answer.bytes, terminal, printed == 0))?;
                    }
                    printed += 1;
                }
                Err(e) => {
                    progress.clear();
                    eprintln!("{}: {e}", item.label);
                }
            }
            out.flush()?;
            next_to_print += 1;
            progress.show(next_to_print);
        }
    }
    progress.clear();
    if items.len() > 1 || stats.failed > 0 {
        eprintln!("{}", stats.summary(items.len(), started.elapsed()));
    }
    if stats.failed > 0 {
        Err(Failure::Input(None))
    } else {
        Ok(())
    }
}

/// An answer as plain `send` writes it. Into a pipe or file: exactly the bytes received,
/// after one LF unless it is the first answer. On a terminal, where a bare CR would write
/// each segment over the one before: one segment per line, the last one ending too.
fn plain(answer: &[u8], terminal: bool, first: bool) -> Vec<u8> {
    if !terminal {
        let mut out = Vec::with_capacity(answer.len() + 1);
        if !first {
            out.push(b'\n');
        }
        out.extend_from_slice(answer);
        return out;
    }
    let mut out = Vec::with_capacity(answer.len() + 1);
    for segment in answer
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|s| !s.is_empty())
    {
        out.extend_from_slice(segment);
        out.push(b'\n');
    }
    out
}

fn write_pretty(out: &mut impl Write, item: &Item, answer: &Answer) -> std::io::Result<()> {
    let request = Message::parse(&item.bytes).ok();
    let control = request
        .as_ref()
        .map(|m| m.msh(10).text().into_owned())
        .unwrap_or_default();
    let kind = request
        .as_ref()
        .map(|m| m.msh(9).text().into_owned())
        .unwrap_or_default();
    let origin = match answer.network_error {
        Some(code) => format!("network ACK from HNAPI, {}", code.code()),
        None => "answer".to_owned(),
    };
    writeln!(
        out,
        "── {} ({kind}, control id {control}) → {origin}",
        item.label
    )?;
    for segment in answer
        .bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|s| !s.is_empty())
    {
        out.write_all(b"   ")?;
        out.write_all(segment)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    by_code: BTreeMap<String, usize>,
    network: BTreeMap<String, usize>,
    failed: usize,
    /// Of `failed`, those the client refused before sending (nothing left the machine).
    not_sent: usize,
}

impl Stats {
    fn count(&mut self, result: &Result<Answer, String>) {
        match result {
            Ok(answer) => {
                if let Some(code) = answer.network_error {
                    *self.network.entry(code.code().to_owned()).or_default() += 1;
                    return;
                }
                let msa1 = Message::parse(&answer.bytes)
                    .map(|m| m.value(&Path::new(*b"MSA", 1)).text().into_owned())
                    .unwrap_or_default();
                let msa1 = if msa1.is_empty() {
                    "no MSA".to_owned()
                } else {
                    msa1
                };
                *self.by_code.entry(msa1).or_default() += 1;
            }
            Err(_) => self.failed += 1,
        }
    }

    fn summary(&self, total: usize, elapsed: Duration) -> String {
        let list = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let answered: usize = self.by_code.values().sum();
        let network: usize = self.network.values().sum();
        let sent = total - self.not_sent;
        let mut parts = vec![format!("{sent} sent in {:.1} s", elapsed.as_secs_f64())];
        if self.not_sent > 0 {
            parts.push(format!(
                "{} not sent (refused before leaving this machine)",
                self.not_sent
            ));
        }
        if answered > 0 {
            parts.push(format!("{answered} answered ({})", list(&self.by_code)));
        }
        if network > 0 {
            parts.push(format!("{network} network ACKs ({})", list(&self.network)));
        }
        if self.failed > self.not_sent {
            parts.push(format!("{} without an answer", self.failed - self.not_sent));
        }
        parts.join("; ")
    }
}

/// A one-line progress bar on standard error, only when that is a terminal.
struct Progress {
    total: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            on: total > 1 && std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, done: usize) {
        if self.on {
            let width = 30;
            let filled = done * width / self.total.max(1);
            eprint!(
                "\r[{}{}] {done}/{}",
                "#".repeat(filled),
                "-".repeat(width - filled),
                self.total
            );
        }
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r{}\r", " ".repeat(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] =
        b"MSH|^~\\&|HNAPI|BC00002041\rMSA|AA|1\rERR|^^^HJMB001I&SUCCESSFULLY COMPLETED\r";

    #[test]
    fn a_terminal_gets_one_segment_per_line_and_a_final_newline() {
        let shown = plain(ANSWER, true, true);
        assert_eq!(
            shown,
            b"MSH|^~\\&|HNAPI|BC00002041\nMSA|AA|1\nERR|^^^HJMB001I&SUCCESSFULLY COMPLETED\n"
        );
        assert!(!shown.contains(&b'\r'));
        // The second answer starts on its own line: no separator needed, none added.
        assert_eq!(plain(ANSWER, true, false), shown);
        // An answer without a last CR still ends its line.
        assert_eq!(plain(b"MSH|a\rMSA|AA", true, true), b"MSH|a\nMSA|AA\n");
    }

    #[test]
    fn a_pipe_gets_the_bytes_as_received() {
        assert_eq!(plain(ANSWER, false, true), ANSWER);
        assert_eq!(plain(ANSWER, false, false), [b"\n", ANSWER].concat());
    }

    #[test]
    fn pretty_ends_with_a_newline() {
        let item = Item {
            label: "a.hl7".to_owned(),
            bytes: b"MSH|^~\\&|X|BC00000098|||||R03|123|D|2.4\r".to_vec(),
        };
        let answer = Answer {
            bytes: b"MSH|^~\\&|HNAPI\rMSA|AA|123".to_vec(),
            network_error: None,
        };
        let mut out = Vec::new();
        write_pretty(&mut out, &item, &answer).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("   MSA|AA|123\n"), "{text:?}");
        assert!(
            text.starts_with("── a.hl7 (R03, control id 123) → answer\n"),
            "{text:?}"
        );
    }
}
