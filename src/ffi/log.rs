//! The host's log: `hnapi_set_log_callback` routes the library's log lines to a function
//! of the host's. Lines name ids, codes and sizes, never message text.

use std::ffi::{CString, c_char, c_void};
use std::sync::RwLock;

use log::{LevelFilter, Log, Metadata, Record};

use super::boundary::boundary_void;

/// Receives one log line: `level` 1 error, 2 warn, 3 info, 4 debug, 5 trace; `line` is a
/// NUL-terminated UTF-8 string valid during the call; `ctx` is what the host gave.
/// It may be called from any thread, including the library's own. It must return
/// normally: a C++ exception or a `longjmp` out of it ends the process.
pub type HnapiLogCallback =
    Option<extern "C" fn(level: i32, line: *const c_char, ctx: *mut c_void)>;

#[derive(Clone, Copy)]
struct Sink {
    callback: extern "C" fn(i32, *const c_char, *mut c_void),
    ctx: usize,
    max: LevelFilter,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

struct CallbackLog;

impl Log for CallbackLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        SINK.read()
            .ok()
            .and_then(|s| {
                s.as_ref()
                    .map(|s| metadata.level() <= level_for(metadata.target(), s.max))
            })
            .unwrap_or(false)
    }

    fn log(&self, record: &Record<'_>) {
        // A copy, so no lock is held while the host's function runs (it may even set a
        // new callback).
        let Some(sink) = SINK.read().ok().and_then(|s| *s) else {
            return;
        };
        if record.level() > level_for(record.target(), sink.max) {
            return;
        }
        let target = record.target();
        let target = target.strip_prefix("hnapi::").unwrap_or(target);
        // One line per call: other crates' messages may span several.
        let text = format!("{target}: {}", record.args()).replace(['\0', '\r', '\n'], " ");
        if let Ok(line) = CString::new(text) {
            (sink.callback)(
                record.level() as i32,
                line.as_ptr(),
                sink.ctx as *mut c_void,
            );
        }
    }

    fn flush(&self) {}
}

static LOG: CallbackLog = CallbackLog;

/// The library's own lines at the host's level; other crates' (rustls, tokio) at warn
/// at most: their debug output is long, multi-line, and of no use to the host.
fn level_for(target: &str, max: LevelFilter) -> LevelFilter {
    if target.starts_with("hnapi") {
        max
    } else {
        max.min(LevelFilter::Warn)
    }
}

/// Sends the library's log lines up to `max_level` (1 error … 5 trace; 0 or a NULL
/// `cb` stops them) to `cb`, with `ctx` passed back. Replaces any earlier callback.
/// PHI is never logged.
///
/// # Safety
/// `cb`, when not NULL, may be called from any thread until it is replaced; `ctx` must
/// stay valid for it that long.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hnapi_set_log_callback(
    cb: HnapiLogCallback,
    ctx: *mut c_void,
    max_level: i32,
) {
    boundary_void("hnapi_set_log_callback", || {
        let max = match max_level {
            i32::MIN..=0 => LevelFilter::Off,
            1 => LevelFilter::Error,
            2 => LevelFilter::Warn,
            3 => LevelFilter::Info,
            4 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        };
        let sink = match cb {
            Some(callback) if max != LevelFilter::Off => Some(Sink {
                callback,
                ctx: ctx as usize,
                max,
            }),
            _ => None,
        };
        let level = sink.as_ref().map_or(LevelFilter::Off, |s| s.max);
        *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
        // Only the first logger of a process takes effect; in a host that is this one.
        let _ = log::set_logger(&LOG);
        log::set_max_level(level);
    });
}
