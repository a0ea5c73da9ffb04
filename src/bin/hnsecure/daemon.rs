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
    runtime_with(hnapi::gate::DEFAULT_BLOCKING_THREADS)
}

/// The runtime for a daemon, with at most `blocking` threads for blocking work besides
/// the workers (tokio starts them as needed and ends them after 10 s idle).
pub fn runtime_with(blocking: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hnsecure")
        .max_blocking_threads(blocking.max(1))
        .build()
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // The handlers are installed now, not when the future is first polled: a caller makes
    // this before it prints its ready line, so a SIGTERM sent as soon as that line is read
    // stops the process cleanly instead of killing it (the default action).
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
    };
    async move {
        #[cfg(unix)]
        match signals {
            Ok((mut term, mut int)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        log::info!("shutdown signal received");
    }
}

/// SIGHUP, watched from the moment this is made. Daemons make it before they print their
/// ready line: SIGHUP's default action ends the process, so a reload asked for as soon as
/// that line is read must find the handler there.
pub struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangups {
    /// Starts watching (inside the runtime).
    pub fn watch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let watched = signal(SignalKind::hangup())
                .map_err(|e| log::warn!("SIGHUP cannot be watched ({e}): reload by restarting"))
                .ok();
            Self(watched)
        }
        #[cfg(not(unix))]
        Self()
    }

    /// The next SIGHUP; never, where none can be watched.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(hangups) = &mut self.0
            && hangups.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}
