//! `hnsecure client …`: the client side of a facility. `register` turns a one-time code
//! into a credential.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::output::Failure;

#[derive(Args)]
pub struct ClientArgs {
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register this facility with HNGard and write its credential.
    ///
    /// Makes a key pair and a certificate signing request, sends them with the one-time
    /// registration code to the gateway over TLS (the gateway must present a certificate
    /// from the CA in --ca), and writes the certificate, private key and envelope key to
    /// one file created with mode 0600.
    #[command(
        after_help = "The registration code works once and expires (7 days by default). To keep it off the\n\
command line and out of shell history, give --code - and type or pipe it on standard input.\n\n\
Example:\n  hnsecure client register --gate gate.example:7443 --facility BC00000098 --code - \\\n    --ca hngard-ca.pem --out credential.toml"
    )]
    Register(RegisterArgs),
}

#[derive(Args)]
struct RegisterArgs {
    /// The gateway, HOST:PORT.
    #[arg(long)]
    gate: String,
    /// This facility's id, as HNGard recorded it.
    #[arg(long)]
    facility: String,
    /// The one-time registration code, or - to read it from standard input.
    #[arg(long)]
    code: String,
    /// HNGard's CA certificate (PEM), from the gateway's operator.
    #[arg(long)]
    ca: PathBuf,
    /// Where to write the credential (created with mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Seconds to wait for the gateway.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

pub fn run(args: ClientArgs) -> Result<(), Failure> {
    match args.command {
        ClientCommand::Register(r) => register(r),
    }
}

fn register(args: RegisterArgs) -> Result<(), Failure> {
    let code = if args.code == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            Failure::Usage(format!("cannot read the code from standard input: {e}"))
        })?;
        text.trim().to_owned()
    } else {
        args.code.clone()
    };
    if code.is_empty() {
        return Err(Failure::Usage("the registration code is empty".into()));
    }
    if args.out.exists() && !args.force {
        return Err(Failure::Usage(format!(
            "{} exists; give --force to replace it (its old key stops working once HNGard issues the new one)",
            args.out.display()
        )));
    }
    let ca = std::fs::read_to_string(&args.ca)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.ca.display())))?;
    let runtime =
        crate::daemon::runtime().map_err(|e| Failure::Input(Some(format!("cannot start: {e}"))))?;
    let credential = runtime
        .block_on(hnapi::client::register(
            &args.gate,
            &args.facility,
            &code,
            &ca,
            Duration::from_secs(args.timeout_secs.max(1)),
        ))
        .map_err(|e| Failure::Input(Some(e.to_string())))?;
    credential
        .write(&args.out)
        .map_err(|e| Failure::Input(Some(format!("cannot write {}: {e}", args.out.display()))))?;
    eprintln!(
        "registered facility {} (envelope key id {}); credential written to {} (mode 0600)",
        credential.facility,
        credential.key.id(),
        args.out.display()
    );
    eprintln!("a client.toml for it:\n");
    println!(
        "facility = \"{}\"\ncredential = \"{}\"\ngateways = [\"{}\"]\ntimeout_secs = 70",
        credential.facility,
        args.out.display(),
        args.gate
    );
    Ok(())
}
