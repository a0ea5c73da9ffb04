//! The C face's lifetimes (issue 14, section 6): when `hnapi_set_log_callback` returns,
//! the callback it replaced is not running; when `hnapi_client_close` or
//! `hnapi_server_close` returns, no log callback is running, however long the host's
//! callback takes — so the host may free the old `ctx`, or unload the library.
//!
//! The log callback is one per process, so these tests live in a binary of their own
//! and run one at a time.
#![allow(unsafe_code)]

mod common;

use std::ffi::{CString, c_char, c_void};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{System, request};
use hnapi::ffi::client::{hnapi_client_close, hnapi_client_open, hnapi_send};
use hnapi::ffi::log::hnapi_set_log_callback;
use hnapi::ffi::server::{hnapi_server_close, hnapi_server_open};

/// One test at a time: they share the process's one log callback.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a slow callback shares with its test, through `ctx`.
struct Slow {
    /// Calls running now.
    inside: AtomicUsize,
    /// Calls that ever started.
    started: AtomicUsize,
    /// Only calls on threads whose name starts with this are slow.
    threads: &'static str,
    pause: Duration,
    /// Set by the test once it no longer expects the callback (it would be a use of a
    /// freed `ctx` in C).
    released: AtomicBool,
    /// A call that ran after the release.
    late: AtomicBool,
}

impl Slow {
    const fn new(threads: &'static str, pause: Duration) -> Self {
        Self {
            inside: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            threads,
            pause,
            released: AtomicBool::new(false),
            late: AtomicBool::new(false),
        }
    }

    fn ctx(&'static self) -> *mut c_void {
        self as *const Self as *mut c_void
    }
}

extern "C" fn slow_callback(_level: i32, _line: *const c_char, ctx: *mut c_void) {
    // SAFETY: the tests pass a `&'static Slow`.
    let slow = unsafe { &*(ctx as *const Slow) };
    let name = std::thread::current().name().unwrap_or("").to_owned();
    if !name.starts_with(slow.threads) {
        return;
    }
    slow.inside.fetch_add(1, Ordering::SeqCst);
    slow.started.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(slow.pause);
    // Reading `ctx` after the pause, as the reported callback did.
    if slow.released.load(Ordering::SeqCst) {
        slow.late.store(true, Ordering::SeqCst);
    }
    slow.inside.fetch_sub(1, Ordering::SeqCst);
}

extern "C" fn quiet_callback(_level: i32, _line: *const c_char, _ctx: *mut c_void) {}

fn set(cb: Option<extern "C" fn(i32, *const c_char, *mut c_void)>, ctx: *mut c_void) {
    // SAFETY: the callbacks and contexts of these tests are 'static.
    unsafe { hnapi_set_log_callback(cb, ctx, 5) };
}

#[test]
fn replacing_the_log_callback_waits_for_calls_of_the_old_one() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    static SLOW: Slow = Slow::new("logger-", Duration::from_millis(400));
    set(Some(slow_callback), SLOW.ctx());
    // Threads of the host (or of the library) logging while the callback is replaced.
    let loggers: Vec<_> = (0..3)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("logger-{i}"))
                .spawn(|| log::info!(target: "hnapi::test", "a line from a library thread"))
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    while SLOW.started.load(Ordering::SeqCst) < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "no call came");
        std::thread::sleep(Duration::from_millis(5));
    }
    set(Some(quiet_callback), ptr::null_mut());
    let replaced_after = started.elapsed();
    // The host frees the old ctx now.
    SLOW.released.store(true, Ordering::SeqCst);
    assert_eq!(
        SLOW.inside.load(Ordering::SeqCst),
        0,
        "the replaced callback was still running when the replacement returned"
    );
    assert!(
        replaced_after >= Duration::from_millis(300),
        "it waited: {replaced_after:?}"
    );
    for logger in loggers {
        logger.join().unwrap();
    }
    // Lines after the replacement go to the new callback only.
    std::thread::Builder::new()
        .name("logger-late".into())
        .spawn(|| log::info!(target: "hnapi::test", "a later line"))
        .unwrap()
        .join()
        .unwrap();
    assert!(!SLOW.late.load(Ordering::SeqCst));
    assert_eq!(SLOW.started.load(Ordering::SeqCst), 3);
    set(None, ptr::null_mut());
}

extern "C" fn replacing_from_inside(_level: i32, _line: *const c_char, ctx: *mut c_void) {
    // SAFETY: the test passes a `&'static AtomicUsize`.
    let calls = unsafe { &*(ctx as *const AtomicUsize) };
    calls.fetch_add(1, Ordering::SeqCst);
    // From inside the callback: must neither deadlock nor wait for itself.
    set(Some(quiet_callback), ptr::null_mut());
}

#[test]
fn a_callback_may_replace_itself_without_waiting_for_itself() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    set(
        Some(replacing_from_inside),
        &CALLS as *const AtomicUsize as *mut c_void,
    );
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        log::info!(target: "hnapi::test", "one line");
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("no deadlock");
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    set(None, ptr::null_mut());
}

#[test]
fn closing_a_client_waits_for_a_library_thread_inside_the_log_callback() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    static SLOW: Slow = Slow::new("hnapi-client", Duration::from_millis(1500));
    let system = System::start("ffi-lifetime-client");
    set(Some(slow_callback), SLOW.ctx());
    let path = CString::new(system.client_config().to_str().unwrap()).unwrap();
    let mut client = ptr::null_mut();
    // SAFETY: valid string and out-pointer.
    assert_eq!(unsafe { hnapi_client_open(path.as_ptr(), &mut client) }, 0);
    let message = request("HNSIM-ECHO", "R03", "");
    let mut ticket = 0u64;
    // SAFETY: live client, valid message and out-pointer. A sent request runs on the library's own
    // threads, which log as they connect.
    let rc = unsafe { hnapi_send(client, message.as_ptr(), message.len(), 0, &mut ticket) };
    assert_eq!(rc, 0);
    let started = Instant::now();
    // Closed while a library thread is inside the callback.
    while SLOW.inside.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the library's threads logged nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: closed once; the host would unload the library after this.
    unsafe { hnapi_client_close(client) };
    SLOW.released.store(true, Ordering::SeqCst);
    assert_eq!(
        SLOW.inside.load(Ordering::SeqCst),
        0,
        "a library thread was still inside the callback after close returned"
    );
    // Nothing of the closed client calls the callback afterwards.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!SLOW.late.load(Ordering::SeqCst));
    set(None, ptr::null_mut());
}

#[test]
fn closing_a_server_application_waits_for_a_library_thread_inside_the_log_callback() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    static SLOW: Slow = Slow::new("hnapi-server", Duration::from_millis(1500));
    let system = System::start("ffi-lifetime-server");
    set(Some(slow_callback), SLOW.ctx());
    let path = CString::new(system.sandbox().server_config().to_str().unwrap()).unwrap();
    let mut server = ptr::null_mut();
    // SAFETY: valid string and out-pointer.
    assert_eq!(unsafe { hnapi_server_open(path.as_ptr(), &mut server) }, 0);
    let started = Instant::now();
    // It logs as it connects to the gateway, in its own threads: closed while one of
    // them is inside the callback.
    while SLOW.inside.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server's threads logged nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: closed once.
    unsafe { hnapi_server_close(server) };
    SLOW.released.store(true, Ordering::SeqCst);
    assert_eq!(SLOW.inside.load(Ordering::SeqCst), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!SLOW.late.load(Ordering::SeqCst));
    set(None, ptr::null_mut());
}
