//! `hnsecure`: one binary for every part of hnsecure. This file only parses the command
//! line and hands over; each subcommand lives in its own module.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "hnsecure/client.rs"]
mod client;
#[path = "hnsecure/daemon.rs"]
mod daemon;
#[path = "hnsecure/demo.rs"]
mod demo;
#[path = "hnsecure/gard.rs"]
mod gard;
#[path = "hnsecure/gate.rs"]
mod gate;
#[path = "hnsecure/hl7.rs"]
mod hl7;
#[path = "hnsecure/output.rs"]
mod output;
#[path = "hnsecure/sandbox.rs"]
mod sandbox;
#[path = "hnsecure/send.rs"]
mod send;

/// hnsecure — exchange healthnetBC HL7 v2 messages securely with BC Ministry of Health
/// applications.
#[derive(Parser)]
#[command(
    name = "hnsecure",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "New here? Start with the whole system on this machine, no setup:\n  \
hnsecure demo\n\
then keep a sandbox running and send your own messages to it:\n  \
hnsecure sandbox --dir hnsecure-sandbox --port 0\n  \
hnsecure send --config hnsecure-sandbox/client.toml examples/messages/*.hl7"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (HNGate): authenticate, route and answer.
    Gate(gate::GateArgs),
    /// Administer the HNGard directory: facilities, registration codes, revocation.
    #[command(
        after_help = "Exit status: 0 success, 1 a refused operation or unknown facility, 2 a usage error."
    )]
    Gard(gard::GardArgs),
    /// The client side of a facility: the client daemon (--config), register with HNGard, renew.
    Client(client::ClientArgs),
    /// Send message files through the client core and print the answers.
    Send(send::SendArgs),
    /// Bring up HNGard, a gateway and the simulator on loopback, with a registered facility.
    Sandbox(sandbox::SandboxArgs),
    /// Show the whole system at work: the Volume 5 sample transactions through a sandbox.
    Demo(demo::DemoArgs),
    /// Read, check and answer HL7 v2 message files (no network).
    #[command(
        subcommand,
        after_help = "A FILE may hold several messages, each starting with MSH; - reads standard input.\n\
                      Exit status: 0 success, 1 bad input or a failed check, 2 a usage error."
    )]
    Hl7(hl7::Hl7Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gate(args) => gate::run(args),
        Command::Gard(args) => gard::run(args),
        Command::Client(args) => client::run(args),
        Command::Send(args) => send::run(args),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Hl7(command) => hl7::run(command),
    };
    output::finish(result)
}
