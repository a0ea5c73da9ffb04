//! The host's log: `hnapi_set_log_callback` routes the library's log lines to a function
//! of the host's. Lines name ids, codes and sizes, never message text.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

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
    ctx: HostContext,
    max: LevelFilter,
}

/// The host's `ctx`, kept as the pointer it is (a pointer turned into an integer and back
/// loses its provenance: Miri's strict-provenance check refused the earlier `usize`).
#[derive(Clone, Copy)]
struct HostContext(*mut c_void);

// SAFETY: the library never dereferences `ctx`; it only hands it back to the host's
// callback, which the host promises may be called from any thread with it
// (`hnapi_set_log_callback`'s contract).
unsafe impl Send for HostContext {}
// SAFETY: as for `Send`: shared references only copy the pointer.
unsafe impl Sync for HostContext {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

// Callbacks in flight, counted so that replacing the callback, and closing a handle,
// can wait for the calls that may still use the old one (a read-copy-update grace
// period in two slots): a call counts itself in the slot of the epoch it started in;
// a wait moves the epoch on and waits for the old slot to empty. Calls that start
// after the move see the new sink; a stream of new calls cannot keep a wait waiting.
static EPOCH: AtomicUsize = AtomicUsize::new(0);
static IN_FLIGHT: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// One wait at a time, so that the slot a wait moves to is empty.
static WAITING: Mutex<()> = Mutex::new(());

thread_local! {
    /// This thread's calls in flight, by slot (a callback may log, or set a callback).
    static OWN: [Cell<usize>; 2] = const { [Cell::new(0), Cell::new(0)] };
}

/// A callback call in flight, counted until dropped.
struct InFlight(usize);

impl InFlight {
    fn enter() -> Self {
        loop {
            let epoch = EPOCH.load(Ordering::SeqCst);
            let slot = epoch & 1;
            IN_FLIGHT[slot].fetch_add(1, Ordering::SeqCst);
            if EPOCH.load(Ordering::SeqCst) == epoch {
                OWN.with(|own| own[slot].set(own[slot].get() + 1));
                return Self(slot);
            }
            // The epoch moved while counting in: count in the new one.
            IN_FLIGHT[slot].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        OWN.with(|own| own[self.0].set(own[self.0].get() - 1));
        IN_FLIGHT[self.0].fetch_sub(1, Ordering::SeqCst);
    }
}

/// True while this thread is inside the host's log callback.
pub(crate) fn in_callback() -> bool {
    OWN.with(|own| own[0].get() + own[1].get() > 0)
}

/// Waits until every log callback call that started before this one has returned,
/// however long that takes. Called from inside a callback it does not wait (the
/// callback's own thread would wait for itself, and two such threads for each other).
pub(crate) fn wait_for_callbacks() {
    if in_callback() {
        return;
    }
    let _one = WAITING.lock().unwrap_or_else(|e| e.into_inner());
    let drain = |slot: usize| {
        let mut pause = Duration::from_micros(50);
        while IN_FLIGHT[slot].load(Ordering::SeqCst) != 0 {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    };
    let epoch = EPOCH.load(Ordering::SeqCst);
    // Calls still counted in the slot about to be reused started two epochs ago and
    // moved on (the retry in `enter`): wait for those few too.
    drain((epoch + 1) & 1);
    EPOCH.store(epoch.wrapping_add(1), Ordering::SeqCst);
    drain(epoch & 1);
}

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
        // Counted before the sink is read, so that a replacement waits for this call.
        let _in_flight = InFlight::enter();
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
            (sink.callback)(record.level() as i32, line.as_ptr(), sink.ctx.0);
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
/// `cb` stops them) to `cb`, with `ctx` passed back. Replaces any earlier callback:
/// when this returns, no call of the earlier callback is running or will start (it
/// waits for those in flight, however long they take), so the host may then free the
/// earlier `ctx`. Called from inside the callback itself it cannot wait for itself: it
/// replaces the callback and returns at once, and calls in other threads may still be
/// running the earlier one. PHI is never logged.
///
/// # Safety
/// `cb`, when not NULL, may be called from any thread until this function is called
/// again and returns; `ctx` must stay valid for it that long.
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
                ctx: HostContext(ctx),
                max,
            }),
            _ => None,
        };
        let level = sink.as_ref().map_or(LevelFilter::Off, |s| s.max);
        *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
        // Only the first logger of a process takes effect; in a host that is this one.
        let _ = log::set_logger(&LOG);
        log::set_max_level(level);
        wait_for_callbacks();
    });
}
