//! `hnsecure gate --config gate.toml`: run the gateway until SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use hnapi::gate::{Gate, GateConfig};

use crate::daemon;
use crate::output::Failure;

#[derive(Args)]
#[command(
    after_help = "The configuration's keys are described in the README (\"gate.toml\").\n\
Prints `ready gate=ADDR` on standard output when it serves; logs go to standard error.\n\
On SIGINT or SIGTERM it stops accepting, lets running transactions finish (shutdown_grace_secs), and exits 0."
)]
pub struct GateArgs {
    /// The gateway's configuration file (gate.toml).
    #[arg(long)]
    config: PathBuf,
    /// Log level: error, warn, info, debug (debug with trace_messages shows message bodies).
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
}

pub fn run(args: GateArgs) -> Result<(), Failure> {
    daemon::init_log(args.log_level);
    let config =
        GateConfig::from_file(&args.config).map_err(|e| Failure::Input(Some(e.to_string())))?;
    let runtime =
        daemon::runtime().map_err(|e| Failure::Input(Some(format!("cannot start: {e}"))))?;
    runtime.block_on(async {
        let gate = Gate::bind(config)
            .await
            .map_err(|e| Failure::Input(Some(e.to_string())))?;
        let addr = gate.local_addr();
        log::info!("gateway listening on {addr}");
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready gate={addr}")?;
        out.flush()?;
        drop(out);
        gate.run(daemon::shutdown_signal())
            .await
            .map_err(|e| Failure::Input(Some(e.to_string())))
    })
}
