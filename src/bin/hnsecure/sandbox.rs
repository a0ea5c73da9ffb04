//! `hnsecure sandbox`: the whole system on loopback, for testing against the simulator.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use hnapi::sandbox::{DEFAULT_FACILITY, Sandbox, SandboxOptions};

use crate::daemon;
use crate::output::Failure;

#[derive(Args)]
#[command(
    after_help = "The first run creates DIR: HNGard's directory and CA, gate.toml (every route to the\n\
simulator), a registered facility with client.toml and its credential. Later runs reuse it.\n\
When it serves, it prints exactly one line on standard output, then serves until SIGINT or\n\
SIGTERM (on SIGHUP it reads DIR/gate.toml again, as hnsecure gate does):\n  \
ready gate=HOST:PORT client_config=PATH server_config=PATH\n\
client_config is the facility's client.toml, for hnsecure send and HNAPI programs; server_config\n\
is a server.toml for a demo server application (an HNAPI receiving system) serving HNAPI-DEMO.\n\
Requests to HNAPI-DEMO are answered HNPS007E (not connected) until one connects with it:\n\
--demo-server runs one in the sandbox (it answers AA), or run your own with server_config.\n\n\
Examples:\n  \
hnsecure sandbox --dir hnsecure-sandbox --port 0\n  \
hnsecure sandbox --demo-server\n  \
hnsecure send --config hnsecure-sandbox/client.toml examples/messages/*.hl7"
)]
pub struct SandboxArgs {
    /// The sandbox's folder.
    #[arg(long, default_value = "hnsecure-sandbox")]
    dir: PathBuf,
    /// The port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 7443)]
    port: u16,
    /// The facility to register and send as (MSH-4 of its messages).
    #[arg(long, default_value = DEFAULT_FACILITY)]
    facility: String,
    /// Also run the demo server application (with DIR/server.toml), so that requests to
    /// HNAPI-DEMO are answered AA; the ready line comes once the gateway has accepted it.
    #[arg(long)]
    demo_server: bool,
    /// Log level: error, warn, info, debug.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
}

pub fn run(args: SandboxArgs) -> Result<(), Failure> {
    daemon::init_log(args.log_level);
    let runtime =
        daemon::runtime().map_err(|e| Failure::Input(Some(format!("cannot start: {e}"))))?;
    runtime.block_on(async {
        let options = SandboxOptions {
            dir: args.dir,
            port: args.port,
            facility: args.facility,
            demo_server: args.demo_server,
        };
        let mut sandbox = Sandbox::start(&options)
            .await
            .map_err(|e| Failure::Input(Some(e.to_string())))?;
        // Both signals are watched before the ready line (see daemon::Hangups).
        let shutdown = daemon::shutdown_signal();
        let hangups = daemon::Hangups::watch();
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "ready gate={} client_config={} server_config={}",
            sandbox.addr(),
            sandbox.client_config().display(),
            sandbox.server_config().display()
        )?;
        out.flush()?;
        drop(out);
        let result = tokio::select! {
            () = shutdown => Ok(()),
            () = reload_on_sighup(hangups, sandbox.reloader()) => Ok(()),
            r = sandbox.wait() => r.map_err(|e| Failure::Input(Some(e.to_string()))),
        };
        sandbox.stop().await;
        result
    })
}

/// On every SIGHUP, reads the sandbox's gate.toml again and puts it in force, as
/// `hnsecure gate` does; a configuration with a mistake is refused, the running one kept.
/// Never returns (on other systems than unix, it only waits).
async fn reload_on_sighup(mut hangups: daemon::Hangups, sandbox: hnapi::sandbox::SandboxReloader) {
    loop {
        hangups.next().await;
        log::info!("SIGHUP: reading {} again", sandbox.gate_config().display());
        match sandbox.reload() {
            Ok(summary) => log::info!("configuration reloaded: {summary}"),
            Err(e) => {
                log::error!("configuration NOT reloaded, the running one stays in force: {e}")
            }
        }
    }
}
