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
On SIGHUP it reads the configuration again and puts routes and limits in force without dropping\n\
connections; a configuration with a mistake is refused, the reason logged, and the old one kept.\n\
On SIGINT or SIGTERM it stops accepting, lets running transactions finish (shutdown_grace_secs), and exits 0.\n\
--check validates the configuration (and HNGard's directory, and the destinations' TLS files), prints\n\
a summary and exits: 0 when it is usable, 1 when not.\n\n\
Example, reloading this one gateway among several hnsecure processes:\n  \
hnsecure gate --config gate.toml --pid-file gate.pid &\n  \
kill -HUP \"$(cat gate.pid)\""
)]
pub struct GateArgs {
    /// The gateway's configuration file (gate.toml).
    #[arg(long)]
    config: PathBuf,
    /// Log level: error, warn, info, debug (debug with trace_messages shows message bodies).
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
    /// Check the configuration and exit, without serving.
    #[arg(long)]
    check: bool,
    /// Write the gateway's process id to this file once it serves (before the ready
    /// line), for `kill -HUP "$(cat FILE)"`; removed when the gateway stops cleanly.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
}

/// The pid file: written when the gateway serves, removed when it stops.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> Result<Self, Failure> {
        std::fs::write(&path, format!("{}\n", std::process::id())).map_err(|e| {
            Failure::Input(Some(format!(
                "cannot write the pid file {}: {e}",
                path.display()
            )))
        })?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(args: GateArgs) -> Result<(), Failure> {
    daemon::init_log(args.log_level);
    let config =
        GateConfig::from_file(&args.config).map_err(|e| Failure::Input(Some(e.to_string())))?;
    if args.check {
        let summary = Gate::check(&config).map_err(|e| Failure::Input(Some(e.to_string())))?;
        println!("{} is usable: {summary}", args.config.display());
        return Ok(());
    }
    let runtime = daemon::runtime_with(config.blocking_threads)
        .map_err(|e| Failure::Input(Some(format!("cannot start: {e}"))))?;
    let journal = match (config.audit, config.audit_sync) {
        (hnapi::gate::AuditMode::Required, sync) => format!(
            "journal required (answers wait for their rows; audit_sync {})",
            if sync == hnapi::gate::AuditSync::Full {
                "full"
            } else {
                "normal"
            }
        ),
        (hnapi::gate::AuditMode::BestEffort, _) => {
            "journal best-effort (rows may be lost if the store fails or the gateway dies)"
                .to_owned()
        }
    };
    runtime.block_on(async {
        let gate = Gate::bind(config)
            .await
            .map_err(|e| Failure::Input(Some(e.to_string())))?;
        let addr = gate.local_addr();
        log::info!("gateway listening on {addr}; {journal}");
        if let Some(metrics) = gate.metrics_addr() {
            log::info!("metrics at http://{metrics}/metrics");
        }
        // Both signals are watched before the ready line (see daemon::Hangups).
        let shutdown = daemon::shutdown_signal();
        let hangups = daemon::Hangups::watch();
        let _pid_file = args.pid_file.map(PidFile::write).transpose()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready gate={addr}")?;
        out.flush()?;
        drop(out);
        tokio::spawn(reload_on_sighup(
            hangups,
            gate.reloader(),
            args.config.clone(),
        ));
        gate.run(shutdown)
            .await
            .map_err(|e| Failure::Input(Some(e.to_string())))
    })
}

/// On every SIGHUP, reads `path` again and puts it in force; a configuration that
/// cannot be read or used is refused with its reason, and the running one stays.
async fn reload_on_sighup(
    mut hangups: daemon::Hangups,
    reloader: hnapi::gate::Reloader,
    path: PathBuf,
) {
    loop {
        hangups.next().await;
        log::info!("SIGHUP: reading {} again", path.display());
        let outcome = GateConfig::from_file(&path)
            .map_err(|e| e.to_string())
            .and_then(|config| reloader.reload(config).map_err(|e| e.to_string()));
        match outcome {
            Ok(summary) => log::info!("configuration reloaded: {summary}"),
            Err(e) => {
                log::error!("configuration NOT reloaded, the running one stays in force: {e}")
            }
        }
    }
}
