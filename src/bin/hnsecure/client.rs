//! `hnsecure client …`: the client side of a facility. `--config` runs the client daemon
//! (the local HNCLIENT for HL7Xfer applications and MLLP engines); `register` turns a
//! one-time code into a credential.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::output::Failure;

#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Run the client daemon:\n  hnsecure client --config client.toml\n\n\
It listens for HL7Xfer (legacy HNCLIENT.EXE applications) and MLLP (integration engines) as\n\
client.toml's [listen] says (without [listen]: 127.0.0.1:19430 and 127.0.0.1:2575), carries each\n\
request through the secure transport, and answers. Prints `ready hl7xfer=ADDR mllp=ADDR` on standard\n\
output when it listens (`off` for a listener left out); logs go to standard error, one line per\n\
transaction, never a message body. On SIGINT or SIGTERM it stops accepting, lets running transactions\n\
finish (listen.shutdown_grace_secs), and exits 0. The keys are described in the README (\"client.toml\")."
)]
pub struct ClientArgs {
    #[command(subcommand)]
    command: Option<ClientCommand>,
    /// Run the client daemon with this configuration (client.toml).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Log level: error, warn, info (one line per transaction), debug.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
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
        after_help = "The registration code works once and expires (7 days by default). Keep it off the\n\
command line (where ps shows it) and out of shell history: give --code-file FILE, or --code-file -\n\
(or --code -) and type or pipe it on standard input. --code CODE still works.\n\n\
Examples:\n  hnsecure client register --gate gate.example:7443 --facility BC00000098 --code-file code.txt \\\n    --ca hngard-ca.pem --out credential.toml\n  \
hnsecure client register --gate gate.example:7443 --facility BC00000098 --code - \\\n    --ca hngard-ca.pem --out credential.toml"
    )]
    Register(RegisterArgs),
    /// Renew this facility's certificate before it expires, without a registration code.
    ///
    /// Makes a new key pair and a certificate signing request, sends it to the gateway over
    /// a connection authenticated with the current certificate, and rewrites the credential
    /// file named in client.toml (mode 0600) with the new certificate and key; the envelope
    /// key stays. Applications using the credential pick it up on their next connection.
    Renew(RenewArgs),
}

#[derive(Args)]
struct RenewArgs {
    /// The client configuration whose credential is renewed (client.toml).
    #[arg(long)]
    config: PathBuf,
    /// Seconds to wait for the gateway.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

#[derive(Args)]
struct RegisterArgs {
    /// The gateway, HOST:PORT.
    #[arg(long)]
    gate: String,
    /// This facility's id, as HNGard recorded it.
    #[arg(long)]
    facility: String,
    /// The one-time registration code, or - to read it from standard input. Prefer
    /// --code-file: a code given here is visible to other users (ps).
    #[arg(
        long,
        required_unless_present = "code_file",
        conflicts_with = "code_file"
    )]
    code: Option<String>,
    /// Read the one-time registration code from this file (- for standard input);
    /// surrounding whitespace is ignored.
    #[arg(long, value_name = "PATH")]
    code_file: Option<PathBuf>,
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
    match (args.command, args.config) {
        (Some(ClientCommand::Register(r)), _) => register(r),
        (Some(ClientCommand::Renew(r)), _) => renew(&r),
        (None, Some(config)) => relay(&config, args.log_level),
        (None, None) => Err(Failure::Usage(
            "give --config client.toml to run the client daemon, or a subcommand".into(),
        )),
    }
}

fn renew(args: &RenewArgs) -> Result<(), Failure> {
    let config = hnapi::client::ClientConfig::from_file(&args.config)
        .map_err(|e| Failure::Input(Some(e.to_string())))?;
    let Some(path) = config.credential.clone() else {
        return Err(Failure::Usage(format!(
            "{} names no credential (legacy mode has none to renew)",
            args.config.display()
        )));
    };
    let current = hnapi::client::Credential::read_with(&path, config.credential_readable_by_others)
        .map_err(|e| Failure::Input(Some(e.to_string())))?;
    // Before renewing: once HNGard issues the new certificate, the old one is superseded.
    hnapi::client::credential::check_destination(&path)
        .map_err(|e| Failure::Input(Some(format!("cannot write {}: {e}", path.display()))))?;
    let runtime =
        crate::daemon::runtime().map_err(|e| Failure::Input(Some(format!("cannot start: {e}"))))?;
    let renewed = runtime
        .block_on(hnapi::client::renew(
            &current,
            &config.gateways,
            Duration::from_secs(args.timeout_secs.max(1)),
        ))
        .map_err(|e| Failure::Input(Some(format!("renewal failed: {e}"))))?;
    renewed
        .write(&path)
        .map_err(|e| Failure::Input(Some(format!("cannot write {}: {e}", path.display()))))?;
    eprintln!(
        "renewed the certificate of facility {}; credential {} rewritten (mode 0600)",
        renewed.facility,
        path.display()
    );
    Ok(())
}

/// `hnsecure client --config client.toml`: the client daemon, until SIGINT or SIGTERM.
fn relay(path: &std::path::Path, log_level: log::LevelFilter) -> Result<(), Failure> {
    crate::daemon::init_log(log_level);
    let config = hnapi::client::ClientConfig::from_file(path)
        .map_err(|e| Failure::Input(Some(e.to_string())))?;
    let runtime =
        crate::daemon::runtime().map_err(|e| Failure::Input(Some(format!("cannot start: {e}"))))?;
    runtime.block_on(async {
        let relay = hnapi::client::daemon::Relay::bind(config)
            .await
            .map_err(|e| Failure::Input(Some(e.to_string())))?;
        let ready = relay.ready_line();
        log::info!(
            "client daemon listening: {}",
            ready.trim_start_matches("ready ")
        );
        // Watched before the ready line, so a SIGTERM right after it stops cleanly.
        let shutdown = crate::daemon::shutdown_signal();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
        drop(out);
        relay.run(shutdown).await;
        Ok(())
    })
}

/// The registration code from `--code` or `--code-file`, trimmed; `-` reads standard input.
fn read_code(args: &RegisterArgs) -> Result<zeroize::Zeroizing<String>, Failure> {
    let stdin = std::path::Path::new("-");
    let from_file = match (&args.code, &args.code_file) {
        (Some(code), _) if code != "-" => {
            return Ok(zeroize::Zeroizing::new(code.trim().to_owned()));
        }
        (Some(_), _) => stdin,
        (None, Some(path)) => path.as_path(),
        (None, None) => {
            return Err(Failure::Usage(
                "give the registration code with --code-file FILE, --code-file - or --code".into(),
            ));
        }
    };
    // Room for any code and its line end up front: the buffer never grows, so no copy of
    // the code is left behind by a reallocation (a longer input may still grow it).
    let mut text = zeroize::Zeroizing::new(String::with_capacity(1024));
    if from_file == stdin {
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            Failure::Usage(format!("cannot read the code from standard input: {e}"))
        })?;
    } else {
        std::fs::File::open(from_file)
            .and_then(|mut file| file.read_to_string(&mut text))
            .map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the code from {}: {e}",
                    from_file.display()
                ))
            })?;
    }
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

fn register(args: RegisterArgs) -> Result<(), Failure> {
    let code = read_code(&args)?;
    if code.is_empty() {
        return Err(Failure::Usage("the registration code is empty".into()));
    }
    if args.out.exists() && !args.force {
        return Err(Failure::Usage(format!(
            "{} exists; give --force to replace it (its old key stops working once HNGard issues the new one)",
            args.out.display()
        )));
    }
    // Before the code is used (it works once): the credential could not be written there.
    hnapi::client::credential::check_destination(&args.out)
        .map_err(|e| Failure::Input(Some(format!("cannot write {}: {e}", args.out.display()))))?;
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
