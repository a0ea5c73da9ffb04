//! What the long-running subcommands share: the log, the runtime, the shutdown signal.

use std::io::Write;
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Log lines on standard error: `TIME LEVEL target: message`, the time in ISO 8601,
/// Pacific time (`2026-11-23T12:21:48.123-07:00`).
/// hnsecure's own lines at the chosen level; other crates' (rustls, tokio) at warn.
struct StderrLog {
    level: LevelFilter,
}

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let own =
            metadata.target().starts_with("hnapi") || metadata.target().starts_with("hnsecure");
        metadata.level()
            <= if own {
                self.level
            } else {
                self.level.min(LevelFilter::Warn)
            }
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        let target = target.strip_prefix("hnapi::").unwrap_or(target);
        let now = jiff::Timestamp::now()
            .to_zoned_datetime(hnapi::hl7::pacific().clone())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z");
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let line = format!("{now} {level} {target}: {}\n", record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the log at `level` (`error`, `warn`, `info`, `debug`, `trace`, `off`).
pub fn init_log(level: LevelFilter) {
    static LOG: OnceLock<StderrLog> = OnceLock::new();
    let log = LOG.get_or_init(|| StderrLog { level });
    if log::set_logger(log).is_ok() {
        log::set_max_level(level);
    }
}

/// The runtime for a daemon: one worker thread per core.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hnsecure")
        .build()
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    log::info!("shutdown signal received");
}
