//! `hnsecure`: one binary for every part of hnsecure. This file only parses the command
//! line and hands over; each subcommand lives in its own module.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "hnsecure/gard.rs"]
mod gard;
#[path = "hnsecure/hl7.rs"]
mod hl7;
#[path = "hnsecure/output.rs"]
mod output;

/// hnsecure — exchange healthnetBC HL7 v2 messages securely with BC Ministry of Health
/// applications.
#[derive(Parser)]
#[command(name = "hnsecure", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read, check and answer HL7 v2 message files (no network).
    #[command(
        subcommand,
        after_help = "A FILE may hold several messages, each starting with MSH; - reads standard input.\n\
                      Exit status: 0 success, 1 bad input or a failed check, 2 a usage error."
    )]
    Hl7(hl7::Hl7Command),
    /// Administer the HNGard directory: facilities, registration codes, revocation.
    #[command(
        after_help = "Exit status: 0 success, 1 a refused operation or unknown facility, 2 a usage error."
    )]
    Gard(gard::GardArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hl7(command) => hl7::run(command),
        Command::Gard(args) => gard::run(args),
    };
    output::finish(result)
}
