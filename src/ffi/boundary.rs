//! What every exported function shares: the panic boundary, the thread's last error,
//! pointer checks, and copying answers into callers' buffers.
//!
//! Every exported function's body runs inside [`boundary`]: a panic becomes
//! `HNET_RTRN_INTERNALERROR` (it never unwinds into C and never aborts the host), a
//! failure sets this thread's last-error sentence, and success clears it.
//!
//! A panic's message may have been formatted from data, message text included; only a
//! fixed message (a string literal) is shown, in the last error and in the one log line
//! the library's panic hook writes (instead of Rust's default report on the host's
//! standard error) for panics inside an exported function or on the library's threads.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::sync::Once;

use super::codes::HnetRtrn;
use crate::client::ClientError;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
    /// Whether this thread is inside an exported function (see [`boundary`]).
    static IN_BOUNDARY: Cell<bool> = const { Cell::new(false) };
}

/// A panic's message when it is fixed text; a formatted one is withheld, since it may
/// hold message text.
fn fixed_message(payload: &(dyn std::any::Any + Send)) -> &'static str {
    match payload.downcast_ref::<&'static str>() {
        Some(text) => text,
        None => "(a formatted message, withheld: it may hold message text)",
    }
}

/// Installs, once, the panic hook that reports the library's panics as one log line
/// (`hnapi::panic`, error level: where, and the fixed message) rather than on the host's
/// standard error. Panics elsewhere in the process go to the hook that was there before.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let in_library = IN_BOUNDARY.try_with(Cell::get).unwrap_or(false)
                || std::thread::current()
                    .name()
                    .is_some_and(|n| n.starts_with("hnapi-"));
            if !in_library {
                return previous(info);
            }
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = fixed_message(info.payload());
            log::error!(target: "hnapi::panic", "the library panicked at {place}: {message}");
        }));
    });
}

/// Why a call failed: its code and one sentence for the thread's last error (no PHI).
pub(crate) struct Failure {
    pub(crate) code: HnetRtrn,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: HnetRtrn, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(HnetRtrn::HNET_RTRN_INVALIDPARAMETER, message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        use HnetRtrn::*;
        let code = match &e {
            ClientError::InvalidFormat(_) => HNET_RTRN_INVALIDFORMATERROR,
            ClientError::TooLarge { .. } => HNET_RTRN_TOOLARGE,
            ClientError::Encryption(_) => HNET_RTRN_ENCRYPTIONERROR,
            ClientError::DomainMismatch { .. } => HNET_RTRN_DOMAINMISMATCH,
            ClientError::Config(_) => HNET_RTRN_CONFIGERROR,
            ClientError::UnknownTicket => HNET_RTRN_UNKNOWNTICKET,
            ClientError::UnknownRequest => HNET_RTRN_UNKNOWNREQUEST,
            ClientError::Connection(_) => HNET_RTRN_CONNECTIONERROR,
            ClientError::ShutDown => HNET_RTRN_SHUTDOWN,
            _ => HNET_RTRN_INTERNALERROR,
        };
        Self::new(code, e.to_string())
    }
}

/// Runs `body` for the exported function `name`: catches panics, keeps the last error.
pub(crate) fn boundary(name: &str, body: impl FnOnce() -> Result<(), Failure>) -> i32 {
    install_panic_hook();
    // Restored after the call: a log callback may call into the library from inside it.
    let outer = IN_BOUNDARY.try_with(|b| b.replace(true)).unwrap_or(false);
    let result = catch_unwind(AssertUnwindSafe(|| {
        crate::test_panic(name);
        body()
    }));
    let _ = IN_BOUNDARY.try_with(|b| b.set(outer));
    match result {
        Ok(Ok(())) => {
            set_last_error(String::new());
            HnetRtrn::HNET_RTRN_SUCCESS as i32
        }
        Ok(Err(failure)) => {
            set_last_error(failure.message);
            failure.code as i32
        }
        Err(panic) => {
            set_last_error(format!(
                "internal error in {name}: {}",
                fixed_message(&*panic)
            ));
            HnetRtrn::HNET_RTRN_INTERNALERROR as i32
        }
    }
}

/// Runs `body` for a function that returns nothing (`*_close`, setters): a panic is
/// caught and becomes the last error.
pub(crate) fn boundary_void(name: &str, body: impl FnOnce()) {
    boundary(name, || {
        body();
        Ok(())
    });
}

/// Keeps `message` as this thread's last error. Never panics: while the thread is being
/// torn down (a C++ `thread_local` destructor closing a handle, say) its last error is
/// already gone, and the message is dropped.
pub(crate) fn set_last_error(message: String) {
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = message;
        }
    });
}

/// This thread's last error ("" when there is none, or the thread is being torn down).
pub(crate) fn last_error() -> String {
    LAST_ERROR
        .try_with(|e| e.try_borrow().map(|e| e.clone()).unwrap_or_default())
        .unwrap_or_default()
}

/// The text at `p`, which must be NUL-terminated UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string that outlives 'a.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// The `len` bytes at `p`.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes that live for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!("{what}'s length is impossible")));
    }
    // SAFETY: not NULL, the length fits an allocation, and the caller promises `len`
    // readable bytes that outlive 'a.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The object behind a handle.
///
/// # Safety
/// `p` is NULL or a handle returned by the matching `*_open` and not yet closed.
pub(crate) unsafe fn object<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises a live handle from `*_open`.
    Ok(unsafe { &*p })
}

/// Checks an out-parameter pointer.
pub(crate) fn checked_out<T>(p: *mut T, what: &str) -> Result<*mut T, Failure> {
    if p.is_null() {
        Err(Failure::invalid(format!("{what} is NULL")))
    } else {
        Ok(p)
    }
}

/// Writes `value` to an out-parameter already checked by [`checked_out`].
///
/// # Safety
/// `p` is valid for writes of one `T`.
pub(crate) unsafe fn write<T>(p: *mut T, value: T) {
    // SAFETY: the caller checked `p` with `checked_out` and promises it is writable.
    unsafe { p.write(value) }
}

/// A caller's buffer, checked: `buf` may be NULL only when `cap` is 0.
pub(crate) struct Buffer {
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
}

impl Buffer {
    pub(crate) fn new(buf: *mut u8, cap: usize, len: *mut usize) -> Result<Self, Failure> {
        if buf.is_null() && cap > 0 {
            return Err(Failure::invalid("buf is NULL but cap is not 0"));
        }
        let len = checked_out(len, "len")?;
        Ok(Self { buf, cap, len })
    }

    /// True when `size` bytes fit.
    pub(crate) fn fits(&self, size: usize) -> bool {
        size <= self.cap
    }

    /// Tells the caller the size needed: `*len = size`, `HNET_RTRN_BUFFERTOOSMALL`.
    ///
    /// # Safety
    /// The pointers given to [`Buffer::new`] are valid.
    pub(crate) unsafe fn too_small(&self, size: usize) -> Failure {
        // SAFETY: `len` was checked non-NULL and the caller promises it is writable.
        unsafe { write(self.len, size) };
        Failure::new(
            HnetRtrn::HNET_RTRN_BUFFERTOOSMALL,
            format!(
                "the buffer holds {} bytes; {size} are needed (kept for the next call)",
                self.cap
            ),
        )
    }

    /// Copies `data` (which fits) into the buffer and sets `*len`.
    ///
    /// # Safety
    /// The pointers given to [`Buffer::new`] are valid: `buf` for `cap` bytes.
    pub(crate) unsafe fn fill(&self, data: &[u8]) {
        debug_assert!(self.fits(data.len()));
        if !data.is_empty() {
            // SAFETY: `buf` is non-NULL (cap >= len > 0), writable for `cap` bytes, and
            // cannot overlap our own `data`.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.buf, data.len()) };
        }
        // SAFETY: `len` was checked non-NULL.
        unsafe { write(self.len, data.len()) };
    }
}

/// A wait in milliseconds: 0 polls, `UINT32_MAX` waits until it comes.
pub(crate) fn wait(ms: u32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(ms))
}

/// A transaction timeout in milliseconds: 0 means the configured default.
pub(crate) fn timeout(ms: u32) -> Option<std::time::Duration> {
    (ms > 0).then(|| std::time::Duration::from_millis(u64::from(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_error_with_a_sentence() {
        let code = boundary("hnapi_test", || panic!("forced for the test"));
        assert_eq!(code, HnetRtrn::HNET_RTRN_INTERNALERROR as i32);
        assert_eq!(
            last_error(),
            "internal error in hnapi_test: forced for the test"
        );
        let code = boundary("hnapi_test", || Ok(()));
        assert_eq!(code, 0);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn a_formatted_panic_message_is_withheld_from_the_last_error() {
        let phn = "9029274643";
        let code = boundary("hnapi_test", || panic!("bad field {phn}"));
        assert_eq!(code, HnetRtrn::HNET_RTRN_INTERNALERROR as i32);
        let error = last_error();
        assert!(
            error.starts_with("internal error in hnapi_test: "),
            "{error}"
        );
        assert!(!error.contains(phn), "{error}");
    }

    #[test]
    fn failures_set_the_last_error_of_their_thread_only() {
        let code = boundary("x", || Err(Failure::invalid("msg is NULL")));
        assert_eq!(code, 1);
        assert_eq!(std::thread::spawn(last_error).join().unwrap(), "");
        assert_eq!(last_error(), "msg is NULL");
    }

    #[test]
    fn zero_means_the_default_timeout_and_a_poll() {
        assert_eq!(timeout(0), None, "0: the configured default (70 s)");
        assert_eq!(timeout(1000), Some(std::time::Duration::from_secs(1)));
        assert_eq!(wait(0), std::time::Duration::ZERO);
        assert_eq!(
            wait(u32::MAX),
            std::time::Duration::from_millis(u64::from(u32::MAX))
        );
    }

    #[test]
    fn null_pointers_are_invalid_parameters() {
        // SAFETY: NULL is always allowed by these helpers.
        unsafe {
            assert_eq!(
                text(std::ptr::null(), "config_path").err().map(|f| f.code),
                Some(HnetRtrn::HNET_RTRN_INVALIDPARAMETER)
            );
            assert!(bytes(std::ptr::null(), 0, "msg").is_err());
            assert!(object::<u8>(std::ptr::null(), "client").is_err());
        }
        assert!(Buffer::new(std::ptr::null_mut(), 10, &mut 0).is_err());
        assert!(Buffer::new(std::ptr::null_mut(), 0, std::ptr::null_mut()).is_err());
        assert!(Buffer::new(std::ptr::null_mut(), 0, &mut 0).is_ok());
    }
}
